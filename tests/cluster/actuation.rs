//! Kubernetes actuation against a real control plane: `canaryd::k8s::target` and
//! `canaryd::k8s::router` driven directly (no daemon).
//!
//! Needs `CANARYD_KUBECONFIG` (`scripts/test` starts the sandbox). Pods run on
//! KWOK fake nodes, which mark them Ready without running containers.

use crate::support::cluster;

use std::path::Path;
use std::time::Duration;

use canaryd::k8s;
use canaryd::k8s::router::{self, httproute_resource, NGINX_CANARY, NGINX_CANARY_WEIGHT};
use canaryd::k8s::target::{self, Arm, ROLE_LABEL};
use canaryd::policy::{parse_str, Policy};
use cluster::{deployment, image, install_httproute_crd, wait_until, TestNamespace};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const V1: &str = "registry.invalid/canaryd/web:v1";
const V2: &str = "registry.invalid/canaryd/web:v2";

fn policy(ns: &str, deployment: &str, traffic: &str) -> Policy {
    let text = format!(
        "service: {deployment}\nnamespace: {ns}\ndeployment: {deployment}\nprogressDeadline: 60s\n\
         baseline: fresh\ntraffic: {traffic}\nstrategy:\n  canary:\n    steps:\n      - size: 1\n        \
         observe: 10s\nanalysis:\n  prometheus:\n    url: http://127.0.0.1:9\n  interval: 5s\n"
    );
    parse_str(&text, Path::new("actuation.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) -> Deployment {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
        })),
    )
    .await
    .expect("set image")
}

async fn wait_rolled_out(client: &Client, policy: &Policy, hash: &str) -> target::Observed {
    wait_until(
        TIMEOUT,
        &format!("{} rolled out to {hash}", policy.deployment),
        || async {
            let o = target::observe(client, policy)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no target")?;
            if o.rolled_out && o.target.stable_hash == hash {
                Ok(o)
            } else {
                Err(format!("{:?}", o.target))
            }
        },
    )
    .await
}

async fn create_rolled_out(
    ns: &TestNamespace,
    name: &str,
    replicas: i32,
) -> (Policy, target::Observed) {
    let api: Api<Deployment> = ns.api();
    let created = api
        .create(&PostParams::default(), &deployment(name, replicas, V1))
        .await
        .expect("create Deployment");
    let p = policy(ns.name(), name, "{type: replicas}");
    let hash = target::desired_hash(&created);
    let o = wait_rolled_out(&ns.client(), &p, &hash).await;
    (p, o)
}

/// Writes the target the way the daemon's commit does (`act::commit`): the
/// Deployment as observed, edited by `change`, in one update preconditioned
/// on its resourceVersion; a conflict starts over from a fresh read.
/// Returns whether `change` changed anything.
async fn commit<F>(client: &Client, policy: &Policy, mut change: F) -> bool
where
    F: FnMut(&mut Deployment, &target::Observed) -> bool,
{
    let name = format!("{}/{}", policy.namespace, policy.deployment);
    let mut retry = k8s::ConflictRetry::new(&name);
    loop {
        retry.attempt().expect("commit within the conflict retries");
        let o = target::observe(client, policy)
            .await
            .expect("observe")
            .expect("target exists");
        let mut d = o.deployment.clone();
        if !change(&mut d, &o) {
            return false;
        }
        match target::update_target(client, &d).await {
            Ok(_) => return true,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("update target: {e}"),
        }
    }
}

/// Pauses the target, as the commit does while a rollout is analysed.
async fn pause(client: &Client, policy: &Policy) {
    commit(client, policy, |d, _| target::set_paused(d, true)).await;
}

/// Rollback through the commit: the stable template goes back if the
/// template is still `replacing`; the target resumes only when its pods are
/// not all on the stable template already. Returns whether it restored.
async fn restore(client: &Client, policy: &Policy, stable: &str, replacing: &str) -> bool {
    let mut restored = false;
    commit(client, policy, |d, o| {
        let template = o.templates.get(stable).expect("stable template");
        restored = target::restore_template(d, template, replacing);
        let on_stable = o.pods_by_hash.keys().all(|h| h == stable);
        let resumed = restored && !on_stable && target::set_paused(d, false);
        restored || resumed
    })
    .await;
    restored
}

/// Promotion through the commit: resumed if the template is still
/// `template_hash`. Returns whether it was.
async fn promote(client: &Client, policy: &Policy, template_hash: &str) -> bool {
    let mut current = false;
    commit(client, policy, |d, _| {
        current = target::desired_hash(d) == template_hash;
        current && target::set_paused(d, false)
    })
    .await;
    current
}

async fn pods_with_prefix(ns: &TestNamespace, prefix: &str) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.name_any().starts_with(prefix) && p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test]
async fn canary_and_baseline_are_created_scaled_and_deleted() {
    let ns = TestNamespace::create().await;
    let client = ns.client();
    let api: Api<Deployment> = ns.api();
    let (p, before) = create_rolled_out(&ns, "web", 3).await;
    let stable = before.target.stable_hash.clone();

    pause(&client, &p).await;
    let changed = set_image(&api, "web", V2).await;
    let desired = target::desired_hash(&changed);
    assert_ne!(desired, stable);
    let o = target::observe(&client, &p).await.unwrap().unwrap();
    assert_eq!(
        o.target.stable_hash, stable,
        "paused: still on the stable ReplicaSet"
    );
    assert_eq!(o.target.desired_hash, desired);

    let canary = target::ensure_arm(
        &client,
        &o.deployment,
        Arm::Canary,
        &o.desired_template(),
        1,
    )
    .await
    .expect("create canary");
    let baseline_template = o.templates.get(&stable).expect("stable template").clone();
    let baseline = target::ensure_arm(&client, &o.deployment, Arm::Baseline, &baseline_template, 1)
        .await
        .expect("create baseline");
    for (d, role, img) in [(&canary, "canary", V2), (&baseline, "baseline", V1)] {
        assert_eq!(d.name_any(), format!("web-{role}"));
        assert_eq!(d.labels().get(ROLE_LABEL).map(String::as_str), Some(role));
        let owner = &d.owner_references()[0];
        assert_eq!(owner.uid, o.deployment.metadata.uid.clone().unwrap());
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Deployment", Some(true))
        );
        let sel = d
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone()
            .unwrap();
        assert_eq!(sel.get("app").map(String::as_str), Some("web"));
        assert_eq!(sel.get(ROLE_LABEL).map(String::as_str), Some(role));
        assert_eq!(image(d), img);
    }
    let o = wait_until(TIMEOUT, "canary and baseline ready", || async {
        let o = target::observe(&client, &p)
            .await
            .map_err(|e| e.to_string())?
            .unwrap();
        let t = &o.target;
        if t.canary.has_ready(1) && t.baseline.has_ready(1) {
            Ok(o)
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await;
    assert_eq!(
        o.target.canary_hash, desired,
        "canary runs the new template"
    );
    assert_eq!(o.target.stable_hash, stable);
    let canary_pods = pods_with_prefix(&ns, "web-canary-").await;
    assert_eq!(canary_pods.len(), 1);
    assert_eq!(
        canary_pods[0].labels().get(ROLE_LABEL).map(String::as_str),
        Some("canary")
    );
    assert_eq!(pods_with_prefix(&ns, "web-baseline-").await.len(), 1);
    let rss: Api<ReplicaSet> = ns.api();
    let target_sets = rss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| r.name == "web"))
        .count();
    assert_eq!(target_sets, 1, "the paused target made no new ReplicaSet");

    // Scaling changes the generation once; applying the same again does not.
    let scaled = target::ensure_arm(
        &client,
        &o.deployment,
        Arm::Canary,
        &o.desired_template(),
        2,
    )
    .await
    .expect("scale canary");
    assert_eq!(scaled.metadata.uid, canary.metadata.uid);
    assert_eq!(
        scaled.metadata.generation,
        canary.metadata.generation.map(|g| g + 1)
    );
    let again = target::ensure_arm(
        &client,
        &o.deployment,
        Arm::Canary,
        &o.desired_template(),
        2,
    )
    .await
    .expect("apply again");
    assert_eq!(again.metadata.generation, scaled.metadata.generation);
    wait_until(TIMEOUT, "2 canary pods", || async {
        let n = pods_with_prefix(&ns, "web-canary-").await.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;

    target::delete_arm(&client, ns.name(), "web", Arm::Baseline)
        .await
        .expect("delete");
    target::delete_arm(&client, ns.name(), "web", Arm::Baseline)
        .await
        .expect("deleting again (404) succeeds");
    assert!(api.get_opt("web-baseline").await.unwrap().is_none());

    // A same-named Deployment canaryd does not own is never touched.
    let mut foreign = deployment("web-baseline", 0, V1);
    foreign.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
    foreign.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    foreign
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some([("app".to_string(), "other".to_string())].into());
    api.create(&PostParams::default(), &foreign).await.unwrap();
    let refused =
        target::ensure_arm(&client, &o.deployment, Arm::Baseline, &baseline_template, 1).await;
    assert!(
        matches!(refused, Err(canaryd::Error::ForeignObject { .. })),
        "{refused:?}"
    );
    target::delete_arm(&client, ns.name(), "web", Arm::Baseline)
        .await
        .unwrap();
    assert!(
        api.get_opt("web-baseline").await.unwrap().is_some(),
        "foreign object kept"
    );

    // Deleting the target deletes its canary (ownerReferences).
    api.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(TIMEOUT, "canary garbage-collected", || async {
        match api.get_opt("web-canary").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|d| d.map(|d| d.name_any())))),
        }
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn restore_and_promote_move_the_target_between_templates() {
    let ns = TestNamespace::create().await;
    let client = ns.client();
    let api: Api<Deployment> = ns.api();
    let (p, before) = create_rolled_out(&ns, "app", 2).await;
    let v1 = before.target.stable_hash.clone();
    pause(&client, &p).await;
    let v2 = target::desired_hash(&set_image(&api, "app", V2).await);

    // Rollback during analysis: the template goes back, no pod moves.
    let uid_before: Vec<_> = pods_with_prefix(&ns, "app-")
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert!(restore(&client, &p, &v1, &v2).await);
    let d = api.get("app").await.unwrap();
    assert_eq!(image(&d), V1);
    assert_eq!(target::desired_hash(&d), v1);
    assert!(target::is_paused(&d), "restored without resuming");
    assert!(
        !restore(&client, &p, &v1, &v2).await,
        "nothing left to replace"
    );
    let uid_after: Vec<_> = pods_with_prefix(&ns, "app-")
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(uid_before, uid_after);

    // Promotion: resumed, rolls with its own surge settings.
    set_image(&api, "app", V2).await;
    assert!(!promote(&client, &p, "not-the-template").await);
    assert!(target::is_paused(&api.get("app").await.unwrap()));
    assert!(promote(&client, &p, &v2).await);
    assert!(!target::is_paused(&api.get("app").await.unwrap()));
    let o = wait_rolled_out(&client, &p, &v2).await;
    assert_eq!(image(&o.deployment), V2);
    for pod in pods_with_prefix(&ns, "app-").await {
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some(V2));
    }
    pause(&client, &p).await;

    // Rollback after promotion: like `kubectl rollout undo`.
    assert!(restore(&client, &p, &v1, &v2).await);
    let o = wait_rolled_out(&client, &p, &v1).await;
    assert_eq!(image(&o.deployment), V1);
    ns.cleanup().await;
}

fn annotations(i: &Ingress) -> (String, String) {
    let a = i.metadata.annotations.clone().unwrap_or_default();
    (
        a.get(NGINX_CANARY).cloned().unwrap_or_default(),
        a.get(NGINX_CANARY_WEIGHT).cloned().unwrap_or_default(),
    )
}

#[tokio::test]
async fn ingress_nginx_canary_weights() {
    let ns = TestNamespace::create().await;
    let client = ns.client();
    let (_, o) = create_rolled_out(&ns, "shop", 1).await;
    ns.create_service("shop", json!({"app": "shop"})).await;
    let primary: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "shop"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "shop", "port": {"number": 80}}}}
        ]}}]}
    }))
    .unwrap();
    let ingresses: Api<Ingress> = ns.api();
    ingresses
        .create(&PostParams::default(), &primary)
        .await
        .unwrap();
    let p = policy(ns.name(), "shop", "{type: ingress-nginx, ingress: shop}");

    for weight in [0u8, 10, 50, 100] {
        router::set_weight(&client, &p, &o.deployment, weight)
            .await
            .expect("set weight");
        let canary = ingresses.get("shop-canary").await.unwrap();
        assert_eq!(
            annotations(&canary),
            ("true".to_string(), weight.to_string())
        );
        let backend = canary.spec.unwrap().rules.unwrap()[0]
            .http
            .clone()
            .unwrap()
            .paths[0]
            .backend
            .service
            .clone()
            .unwrap();
        assert_eq!(backend.name, "shop-canary");
    }
    let canary_svc = ns.api::<Service>().get("shop-canary").await.unwrap();
    let sel = canary_svc.spec.unwrap().selector.unwrap();
    assert_eq!(sel.get("app").map(String::as_str), Some("shop"));
    assert_eq!(sel.get(ROLE_LABEL).map(String::as_str), Some("canary"));
    assert_eq!(
        canary_svc.metadata.owner_references.unwrap()[0].name,
        "shop"
    );
    let untouched = ingresses.get("shop").await.unwrap();
    assert!(untouched
        .metadata
        .annotations
        .unwrap_or_default()
        .is_empty());

    router::remove_canary_routes(&client, &p)
        .await
        .expect("remove");
    router::remove_canary_routes(&client, &p)
        .await
        .expect("remove again");
    assert!(ingresses.get_opt("shop-canary").await.unwrap().is_none());
    assert!(ns
        .api::<Service>()
        .get_opt("shop-canary")
        .await
        .unwrap()
        .is_none());
    assert!(ingresses.get_opt("shop").await.unwrap().is_some());
    ns.cleanup().await;
}

fn weights(route: &DynamicObject) -> Vec<(String, i64)> {
    route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn gateway_api_backend_weights() {
    let ns = TestNamespace::create().await;
    let client = ns.client();
    install_httproute_crd(&client, TIMEOUT).await;
    let (_, o) = create_rolled_out(&ns, "shop", 1).await;
    ns.create_service("shop", json!({"app": "shop"})).await;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &httproute_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}
    }))
    .unwrap();
    routes
        .create(&PostParams::default(), &route)
        .await
        .expect("create HTTPRoute");
    let p = policy(ns.name(), "shop", "{type: gateway-api, httpRoute: shop}");

    for (weight, primary) in [(0u8, 100), (20, 80), (60, 40), (100, 0)] {
        router::set_weight(&client, &p, &o.deployment, weight)
            .await
            .expect("set weight");
        let got = weights(&routes.get("shop").await.unwrap());
        assert_eq!(
            got,
            vec![
                ("shop".to_string(), primary),
                ("shop-canary".to_string(), i64::from(weight))
            ]
        );
    }
    assert!(ns
        .api::<Service>()
        .get_opt("shop-canary")
        .await
        .unwrap()
        .is_some());
    router::remove_canary_routes(&client, &p)
        .await
        .expect("remove");
    assert_eq!(
        weights(&routes.get("shop").await.unwrap()),
        vec![("shop".to_string(), 100)]
    );
    assert!(ns
        .api::<Service>()
        .get_opt("shop-canary")
        .await
        .unwrap()
        .is_none());
    ns.cleanup().await;
}

#[tokio::test]
async fn blue_green_selector_switch_and_back() {
    let ns = TestNamespace::create().await;
    let client = ns.client();
    let services: Api<Service> = ns.api();
    ns.create_service("active", json!({"app": "web", "version": "v1"}))
        .await;
    let selector = |s: Service| s.spec.unwrap().selector.unwrap();
    for version in ["v2", "v2", "v1"] {
        router::switch_selector(&client, ns.name(), "active", "version", version)
            .await
            .expect("switch");
        let sel = selector(services.get("active").await.unwrap());
        assert_eq!(sel.get("version").map(String::as_str), Some(version));
        assert_eq!(
            sel.get("app").map(String::as_str),
            Some("web"),
            "other keys kept"
        );
    }
    let missing = router::switch_selector(&client, ns.name(), "absent", "version", "v2").await;
    assert!(
        matches!(missing, Err(canaryd::Error::SwitchSelector { .. })),
        "{missing:?}"
    );
    ns.cleanup().await;
}
