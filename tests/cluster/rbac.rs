//! Least privilege on the real API server (issue 15): each RBAC mode is bound
//! to a ServiceAccount of the test's own, which then (a) does everything
//! canaryd does — through the library's own functions, and as `canaryd run`
//! adopting targets, holding the Lease and writing the alert record — and
//! (b) gets 403 for Secrets, pods/exec, deletecollection of Deployments and,
//! in namespaced mode, Deployments outside the policies' namespaces.
//!
//! Cluster mode takes its rules from deploy/rbac.yaml, namespaced mode from
//! `canaryd rbac` applied with kubectl. Namespaces are `rbac-<random>`;
//! cluster-scoped objects are owned by one of them, so they go with it.

use crate::support::cluster::{self, wait_until, ServiceAccountIdentity, TestNamespace};
use crate::support::daemon::{Daemon, DaemonOptions};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use canaryd::alerts::{AlertStatus, WebhookAlert};
use canaryd::daemon::reload::PolicySet;
use canaryd::k8s::alert_record::{AlertRecordStore, RECORD_SUFFIX};
use canaryd::k8s::lease::{Elector, LeaseConfig, DEFAULT_LEASE_NAME};
use canaryd::k8s::rbac::{ROLE_NAME, STATE_ROLE_NAME};
use canaryd::k8s::router;
use canaryd::k8s::target::{self, Arm};
use canaryd::policy::{parse_str, Policy};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const V1: &str = "registry.invalid/canaryd/web:v1";
/// canaryd's ServiceAccount name in the test's system namespace.
const SERVICE_ACCOUNT: &str = "canaryd";
/// Bearer token of the daemon's alert webhook.
const TOKEN: &str = "rbac-test-alert-token-0123456789";
/// Deployment the library operations act on.
const LIBRARY_TARGET: &str = "web";
/// Deployment `canaryd run` adopts in every target namespace.
const DAEMON_TARGET: &str = "app";

fn policy_text(ns: &str, deployment: &str, traffic: &str) -> String {
    format!(
        "service: {deployment}-{ns}\nnamespace: {ns}\ndeployment: {deployment}\n\
         progressDeadline: 60s\nbaseline: fresh\ntraffic: {traffic}\nstrategy:\n  canary:\n    \
         steps:\n      - size: 1\n        observe: 10s\nanalysis:\n  prometheus:\n    \
         url: http://127.0.0.1:9\n  interval: 5s\nalerts:\n  matchers: ['service=\"{deployment}\"']\n"
    )
}

fn policy(ns: &str, deployment: &str, traffic: &str) -> Policy {
    let text = policy_text(ns, deployment, traffic);
    parse_str(&text, Path::new("rbac.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn is_forbidden<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

/// `kubectl` as admin (`CANARYD_KUBECTL`, `CANARYD_KUBECONFIG`).
fn kubectl(args: &[&str], stdin: &[u8]) -> String {
    let kubectl =
        std::env::var("CANARYD_KUBECTL").expect("CANARYD_KUBECTL (scripts/kube-sandbox env)");
    let mut child = Command::new(kubectl)
        .args(args)
        .env(
            "KUBECONFIG",
            cluster::kubeconfig_path(cluster::KUBECONFIG_ENV),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// The test's namespaces and the ServiceAccount the mode is bound to.
struct Scene {
    /// canaryd's own namespace: ServiceAccount, Lease, alert record.
    system: TestNamespace,
    /// The namespaces policies name.
    targets: Vec<TestNamespace>,
    dir: tempfile::TempDir,
    identity: ServiceAccountIdentity,
}

impl Scene {
    async fn new(targets: usize) -> Scene {
        let system = TestNamespace::create_prefixed("rbac-").await;
        let mut namespaces = Vec::new();
        for _ in 0..targets {
            namespaces.push(TestNamespace::create_prefixed("rbac-").await);
        }
        let dir = tempfile::tempdir().unwrap();
        let identity =
            cluster::service_account_identity(system.name(), SERVICE_ACCOUNT, dir.path()).await;
        Scene {
            system,
            targets: namespaces,
            dir,
            identity,
        }
    }

    fn sa(&self) -> Client {
        self.identity.client.clone()
    }

    /// A policy directory naming [`DAEMON_TARGET`] in every target namespace.
    fn policies(&self) -> PathBuf {
        let dir = self.dir.path().join("policies");
        std::fs::create_dir_all(&dir).unwrap();
        for ns in &self.targets {
            let text = policy_text(ns.name(), DAEMON_TARGET, "{type: replicas}");
            std::fs::write(dir.join(format!("{}.yaml", ns.name())), text).unwrap();
        }
        dir
    }

    fn subject(&self) -> serde_json::Value {
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": self.system.name()}])
    }

    /// Cluster mode: deploy/rbac.yaml's ClusterRole and canaryd-system Role,
    /// renamed into the test's namespaces, bound to the ServiceAccount.
    async fn bind_cluster_mode(&self) {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml"))
                .unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).unwrap();
        let doc = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
        let admin = self.system.client();
        let name = format!("{}-{ROLE_NAME}", self.system.name());
        let owner = self.system.owner_reference().await;
        let mut role: ClusterRole = serde_json::from_value(doc("ClusterRole")).unwrap();
        role.metadata = ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        };
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .expect("create ClusterRole");
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [owner]},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": self.subject(),
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create ClusterRoleBinding");
        let mut state: Role = serde_json::from_value(doc("Role")).unwrap();
        state.metadata.namespace = None;
        self.system
            .api::<Role>()
            .create(&PostParams::default(), &state)
            .await
            .expect("create Role");
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": STATE_ROLE_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": STATE_ROLE_NAME},
            "subjects": self.subject(),
        }))
        .unwrap();
        self.system
            .api::<RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");
    }

    /// Namespaced mode: `canaryd rbac` for the policies, applied by kubectl.
    fn bind_namespaced_mode(&self, policies: &Path) {
        let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
            .arg("rbac")
            .arg("--policies")
            .arg(policies)
            .args([
                "--namespace",
                self.system.name(),
                "--service-account",
                SERVICE_ACCOUNT,
            ])
            .output()
            .expect("canaryd rbac");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        assert!(!yaml.contains("ClusterRole"), "{yaml}");
        kubectl(&["apply", "-f", "-"], yaml.as_bytes());
    }

    /// Waits until the grants reach the authorizer (the RBAC cache).
    async fn wait_granted(&self) {
        let api: Api<Deployment> = Api::namespaced(self.sa(), self.targets[0].name());
        let leases: Api<Lease> = Api::namespaced(self.sa(), self.system.name());
        wait_until(TIMEOUT, "the grants to take effect", || async {
            api.list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            leases
                .get_opt(DEFAULT_LEASE_NAME)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
    }
}

/// A rolled-out Deployment `name` in `ns` (created as admin).
async fn rolled_out(ns: &TestNamespace, name: &str) -> (Policy, target::Observed) {
    ns.api::<Deployment>()
        .create(&PostParams::default(), &cluster::deployment(name, 2, V1))
        .await
        .expect("create Deployment");
    let p = policy(ns.name(), name, "{type: ingress-nginx, ingress: web}");
    let client = ns.client();
    let o = wait_until(TIMEOUT, &format!("{name} rolled out"), || async {
        let o = target::observe(&client, &p)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no target")?;
        o.rolled_out
            .then_some(o.clone())
            .ok_or(format!("{:?}", o.target))
    })
    .await;
    (p, o)
}

/// The target's and the routers' operations, as the ServiceAccount.
async fn target_operations_work(sa: &Client, ns: &TestNamespace) {
    let (p, admin_view) = rolled_out(ns, LIBRARY_TARGET).await;
    let o = target::observe(sa, &p)
        .await
        .expect("observe")
        .expect("target");
    assert_eq!(o.target.desired_hash, admin_view.target.desired_hash);
    // Pause and resume as the commit writes them: one update of the target.
    let paused = target::modify_target(sa, ns.name(), LIBRARY_TARGET, |d| {
        Ok(target::set_paused(d, true))
    })
    .await
    .expect("pause");
    assert!(target::is_paused(&paused));
    let template = o.desired_template();
    target::ensure_arm(sa, &paused, Arm::Canary, &template, 1)
        .await
        .expect("create canary");
    let scaled = target::ensure_arm(sa, &paused, Arm::Canary, &template, 2)
        .await
        .expect("scale canary");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(2));
    target::delete_arm(sa, ns.name(), LIBRARY_TARGET, Arm::Canary)
        .await
        .expect("delete canary");
    let gone = ns
        .api::<Deployment>()
        .get_opt(&Arm::Canary.name(LIBRARY_TARGET))
        .await
        .unwrap();
    assert!(gone.is_none_or(|d| d.metadata.deletion_timestamp.is_some()));
    let resumed = target::modify_target(sa, ns.name(), LIBRARY_TARGET, |d| {
        Ok(target::desired_hash(d) == o.target.desired_hash && target::set_paused(d, false))
    })
    .await
    .expect("promote");
    assert!(!target::is_paused(&resumed));

    // ingress-nginx: canary Service and Ingress created, patched, deleted.
    ns.create_service(LIBRARY_TARGET, json!({"app": LIBRARY_TARGET}))
        .await;
    let primary: Ingress = serde_json::from_value(json!({
        "metadata": {"name": LIBRARY_TARGET},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": LIBRARY_TARGET, "port": {"number": 80}}}}
        ]}}]}
    }))
    .unwrap();
    ns.api::<Ingress>()
        .create(&PostParams::default(), &primary)
        .await
        .unwrap();
    for weight in [10, 50] {
        router::set_weight(sa, &p, &o.deployment, weight)
            .await
            .expect("set weight");
    }
    assert!(ns
        .api::<Ingress>()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_some());
    router::remove_canary_routes(sa, &p)
        .await
        .expect("remove canary routes");
    assert!(ns
        .api::<Service>()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_none_or(|s| s.metadata.deletion_timestamp.is_some()));
    // Blue-green: the selector switch.
    router::switch_selector(sa, ns.name(), LIBRARY_TARGET, "version", "v2")
        .await
        .expect("switch selector");
    // Gateway API: backend weights on an HTTPRoute.
    cluster::install_httproute_crd(&ns.client(), TIMEOUT).await;
    let route: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": LIBRARY_TARGET},
        "spec": {"rules": [{"backendRefs": [{"name": LIBRARY_TARGET, "port": 80}]}]}
    }))
    .unwrap();
    let routes: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client(), ns.name(), &router::httproute_resource());
    routes
        .create(&PostParams::default(), &route)
        .await
        .expect("create HTTPRoute");
    let gw = policy(
        ns.name(),
        LIBRARY_TARGET,
        "{type: gateway-api, httpRoute: web}",
    );
    router::set_weight(sa, &gw, &o.deployment, 20)
        .await
        .expect("route weight");
    router::remove_canary_routes(sa, &gw)
        .await
        .expect("route unweighted");

    // An Event as canaryd writes it (events.k8s.io/v1, created anew).
    let event: K8sEvent = serde_json::from_value(json!({
        "metadata": {"name": format!("{LIBRARY_TARGET}.rbac")},
        "action": "Rollout", "reason": "RbacProbe", "note": "rbac test",
        "reportingController": "canaryd", "reportingInstance": "rbac-test", "type": "Normal",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns.name(), "name": LIBRARY_TARGET},
    }))
    .unwrap();
    let event = K8sEvent {
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        ..event
    };
    Api::<K8sEvent>::namespaced(sa.clone(), ns.name())
        .create(&PostParams::default(), &event)
        .await
        .expect("create Event");
}

/// The Lease and the alert record, as the ServiceAccount.
async fn state_operations_work(sa: &Client, system: &str, p: Policy) {
    let mut elector = Elector::new(
        sa.clone(),
        LeaseConfig::new(system, DEFAULT_LEASE_NAME, "rbac-test"),
    );
    assert!(elector.try_acquire_or_renew().await.expect("create Lease"));
    assert!(elector.try_acquire_or_renew().await.expect("renew Lease"));
    elector.release().await.expect("release Lease");

    let record_name = format!("{DEFAULT_LEASE_NAME}{RECORD_SUFFIX}");
    let (_tx, policies) = tokio::sync::watch::channel(Arc::new(PolicySet::from_policies([p])));
    let store = AlertRecordStore::new(sa.clone(), system, &record_name, policies);
    let alert = |status| WebhookAlert {
        status,
        labels: BTreeMap::from([
            ("alertname".to_string(), "RbacProbe".to_string()),
            ("service".to_string(), LIBRARY_TARGET.to_string()),
        ]),
        annotations: BTreeMap::new(),
        fingerprint: None,
        ends_at_ms: None,
    };
    let now = canaryd::controller::now_ms() as i64;
    let (record, created) = store
        .apply(&[alert(AlertStatus::Firing)], now)
        .await
        .expect("create record");
    assert!(created.dirty, "{created:?} {record:?}");
    let (record, updated) = store
        .apply(&[alert(AlertStatus::Resolved)], now + 1)
        .await
        .expect("update record");
    assert!(updated.dirty, "{updated:?} {record:?}");
    // The record's watch: list and watch by name, as AlertRecordStore::watch does.
    let config = watcher::Config::default().fields(&format!("metadata.name={record_name}"));
    let api: Api<ConfigMap> = Api::namespaced(sa.clone(), system);
    let mut events = Box::pin(watcher::watcher(api, config));
    let first = tokio::time::timeout(TIMEOUT, events.next())
        .await
        .expect("watch event");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
}

/// `canaryd run` with the ServiceAccount's kubeconfig: it adopts a target
/// in every namespace (one watch each), holds the Lease and writes a webhook
/// alert into the record.
async fn daemon_works(scene: &Scene, policies: &Path) {
    for ns in &scene.targets {
        ns.api::<Deployment>()
            .create(
                &PostParams::default(),
                &cluster::deployment(DAEMON_TARGET, 1, V1),
            )
            .await
            .expect("create app");
    }
    let token = scene.dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let daemon = Daemon::start(&DaemonOptions {
        policies,
        kubeconfig: scene.identity.kubeconfig.clone(),
        lease_namespace: scene.system.name(),
        lease_name: None,
        identity: "rbac-daemon",
        token_file: Some(&token),
        json_log: true,
        log_dir: scene.dir.path(),
    });
    for ns in &scene.targets {
        let api: Api<Deployment> = ns.api();
        wait_until(TIMEOUT, &format!("{}/app adopted", ns.name()), || async {
            let d = api.get(DAEMON_TARGET).await.map_err(|e| e.to_string())?;
            let adopted =
                target::is_paused(&d) && target::annotation(&d, target::STATE_ANNOTATION).is_some();
            adopted.then_some(()).ok_or_else(|| daemon.tail())
        })
        .await;
    }
    let lease = scene
        .system
        .api::<Lease>()
        .get(DEFAULT_LEASE_NAME)
        .await
        .expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-daemon")
    );
    let body = json!({"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "RbacDaemonProbe", "service": DAEMON_TARGET}
    }]});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/alerts", daemon.url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST /v1/alerts");
    assert!(
        resp.status().is_success(),
        "{}: {}",
        resp.status(),
        daemon.tail()
    );
    let records: Api<ConfigMap> = scene.system.api();
    let record_name = format!("{DEFAULT_LEASE_NAME}{RECORD_SUFFIX}");
    wait_until(TIMEOUT, "the webhook alert in the record", || async {
        let cm = records
            .get_opt(&record_name)
            .await
            .map_err(|e| e.to_string())?;
        let text = format!("{:?}", cm.and_then(|c| c.data));
        text.contains("RbacDaemonProbe").then_some(()).ok_or(text)
    })
    .await;
    let log = daemon.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

/// Whether the ServiceAccount may `verb` `resource` (`sub`resource) in `ns`.
async fn allowed(sa: &Client, ns: &str, verb: &str, resource: &str, sub: Option<&str>) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                verb: Some(verb.to_string()),
                resource: Some(resource.to_string()),
                subresource: sub.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// 403 for Secrets, pods/exec and deletecollection of Deployments in `ns`.
async fn forbidden_beyond_the_rules(sa: &Client, ns: &str, system: &str) {
    for at in [ns, system] {
        let secrets: Api<Secret> = Api::namespaced(sa.clone(), at);
        assert!(
            is_forbidden(&secrets.list(&ListParams::default()).await),
            "list Secrets in {at}"
        );
        assert!(
            is_forbidden(&secrets.get("any").await),
            "get Secret in {at}"
        );
    }
    // pods/exec: authorization comes before the pod is looked up.
    let exec = axum::http::Request::post(format!(
        "/api/v1/namespaces/{ns}/pods/{LIBRARY_TARGET}/exec?command=true&stdout=true"
    ))
    .body(Vec::new())
    .unwrap();
    let exec = sa.request::<serde_json::Value>(exec).await;
    assert!(is_forbidden(&exec), "pods/exec: {exec:?}");
    assert!(!allowed(sa, ns, "create", "pods", Some("exec")).await);
    assert!(!allowed(sa, ns, "get", "pods", Some("exec")).await);
    let deployments: Api<Deployment> = Api::namespaced(sa.clone(), ns);
    let none = ListParams::default().labels("canaryd.io/rbac-test=matches-nothing");
    let collection = deployments
        .delete_collection(&DeleteParams::default(), &none)
        .await;
    assert!(
        is_forbidden(&collection),
        "deletecollection: {collection:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_rbac_lets_canaryd_work_and_forbids_the_rest() {
    let scene = Scene::new(1).await;
    scene.bind_cluster_mode().await;
    scene.wait_granted().await;
    let sa = scene.sa();
    let target_ns = &scene.targets[0];
    target_operations_work(&sa, target_ns).await;
    let p = policy(target_ns.name(), LIBRARY_TARGET, "{type: replicas}");
    state_operations_work(&sa, scene.system.name(), p).await;
    let policies = scene.policies();
    daemon_works(&scene, &policies).await;
    forbidden_beyond_the_rules(&sa, target_ns.name(), scene.system.name()).await;
    // Cluster mode reads Deployments everywhere, as documented.
    let everywhere: Api<Deployment> = Api::all(sa.clone());
    everywhere
        .list(&ListParams::default().limit(1))
        .await
        .expect("list across the cluster");
    for ns in scene.targets {
        ns.cleanup().await;
    }
    scene.system.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_mode_rbac_lets_canaryd_work_and_forbids_the_rest() {
    let scene = Scene::new(2).await;
    let outside = TestNamespace::create_prefixed("rbac-").await;
    let policies = scene.policies();
    scene.bind_namespaced_mode(&policies);
    scene.wait_granted().await;
    let sa = scene.sa();
    let target_ns = &scene.targets[0];
    target_operations_work(&sa, target_ns).await;
    let p = policy(target_ns.name(), LIBRARY_TARGET, "{type: replicas}");
    state_operations_work(&sa, scene.system.name(), p).await;
    daemon_works(&scene, &policies).await;
    forbidden_beyond_the_rules(&sa, target_ns.name(), scene.system.name()).await;
    // Outside the policies' namespaces: nothing, not even reading.
    outside
        .api::<Deployment>()
        .create(
            &PostParams::default(),
            &cluster::deployment(LIBRARY_TARGET, 1, V1),
        )
        .await
        .expect("create outside");
    let elsewhere: Api<Deployment> = Api::namespaced(sa.clone(), outside.name());
    assert!(
        is_forbidden(&elsewhere.get(LIBRARY_TARGET).await),
        "get outside"
    );
    assert!(
        is_forbidden(&elsewhere.list(&ListParams::default()).await),
        "list outside"
    );
    let p_out = policy(outside.name(), LIBRARY_TARGET, "{type: replicas}");
    assert!(
        target::observe(&sa, &p_out).await.is_err(),
        "observe outside"
    );
    assert!(
        target::modify_target(&sa, outside.name(), LIBRARY_TARGET, |d| {
            Ok(target::set_paused(d, true))
        })
        .await
        .is_err(),
        "pause outside"
    );
    let everywhere: Api<Deployment> = Api::all(sa.clone());
    assert!(
        is_forbidden(&everywhere.list(&ListParams::default()).await),
        "list across the cluster"
    );
    assert!(!allowed(&sa, outside.name(), "create", "deployments", None).await);
    outside.cleanup().await;
    for ns in scene.targets {
        ns.cleanup().await;
    }
    scene.system.cleanup().await;
}

/// `path` relative to the directory `from` (both absolute): kustomize
/// refuses absolute paths in `resources` and `components`.
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let (path, from): (Vec<_>, Vec<_>) = (path.components().collect(), from.components().collect());
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut relative: PathBuf = from[common..].iter().map(|_| "..").collect();
    relative.extend(&path[common..]);
    relative
}

#[test]
fn namespaced_component_renders_without_cluster_wide_rbac() {
    let overlay = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let base = relative_to(&deploy, overlay.path());
    let kustomization = format!(
        "resources: [{}]\ncomponents: [{}]\n",
        base.display(),
        base.join("namespaced").display()
    );
    std::fs::write(overlay.path().join("kustomization.yaml"), kustomization).unwrap();
    let dir = overlay.path().to_str().unwrap();
    let rendered = kubectl(
        &["kustomize", "--load-restrictor=LoadRestrictionsNone", dir],
        b"",
    );
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&rendered).unwrap();
    let of = |kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| {
                format!(
                    "{}/{}",
                    d["metadata"]["namespace"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert!(
        of("ClusterRole").is_empty() && of("ClusterRoleBinding").is_empty(),
        "{rendered}"
    );
    let expected = [
        "blue-green/canaryd",
        "canaryd-system/canaryd-leader-election",
        "shop/canaryd",
        "test/canaryd",
    ];
    assert_eq!(of("Role"), expected);
    assert_eq!(of("RoleBinding"), expected);
    for kind in ["ServiceAccount", "Deployment", "Service", "NetworkPolicy"] {
        assert_eq!(of(kind), ["canaryd-system/canaryd"], "{kind}");
    }
}
