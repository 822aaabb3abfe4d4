//! Test support for tests that need a real Kubernetes API server.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/cluster.rs"]
//! mod cluster;
//! ```
//!
//! The cluster is whatever `CANARYD_KUBECONFIG` points at: normally the
//! loopback sandbox that `scripts/test` starts (`scripts/kube-sandbox up`),
//! but any cluster works (see docs/sandbox.md). Everything a test creates goes
//! into a throw-away namespace (`TestNamespace`), so tests never touch
//! existing workloads and can run in parallel.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canaryd::k8s::router::httproute_resource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, PodSpec, Service, ServiceAccount, Toleration};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Kubeconfig of an identity with full access (group `system:masters`).
pub const KUBECONFIG_ENV: &str = "CANARYD_KUBECONFIG";
/// Kubeconfig of user `canaryd-restricted`, who has no grants until a test makes some.
pub const RESTRICTED_KUBECONFIG_ENV: &str = "CANARYD_RESTRICTED_KUBECONFIG";
/// Set to `1` to keep test namespaces after the test, for debugging.
pub const KEEP_NAMESPACES_ENV: &str = "CANARYD_KEEP_TEST_NAMESPACES";
/// Prefix of every namespace that `TestNamespace` creates.
pub const NAMESPACE_PREFIX: &str = "canaryd-test-";
/// Label on every namespace that `TestNamespace` creates.
pub const TEST_LABEL: &str = "canaryd.dev/test";

/// Label that the sandbox puts on its fake (KWOK) nodes.
pub const FAKE_NODE_LABEL: (&str, &str) = ("type", "kwok");
/// Taint that the sandbox puts on its fake nodes, so that only pods that ask
/// for them (see `place_on_fake_nodes`) land there.
pub const FAKE_NODE_TAINT: (&str, &str, &str) = ("kwok.x-k8s.io/node", "fake", "NoSchedule");

/// The kubeconfig path named by `var`; panics with instructions when unset.
pub fn kubeconfig_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{var} is not set: these tests need a Kubernetes API server. Run them through \
             `scripts/test`, which builds and starts a loopback sandbox \
             (scripts/kube-sandbox build && scripts/kube-sandbox up && \
             eval \"$(scripts/kube-sandbox env)\"), or point {var} at a kubeconfig of your own \
             cluster (see docs/sandbox.md)."
        ),
    }
}

/// Whether `CANARYD_KUBECONFIG` is the one `scripts/kube-sandbox up` wrote
/// (its current context is `canaryd-admin@canaryd-sandbox`). Tests use it to
/// check facts that only hold there, such as the restricted user's name.
pub fn is_sandbox() -> bool {
    let path = kubeconfig_path(KUBECONFIG_ENV);
    Kubeconfig::read_from(&path)
        .ok()
        .and_then(|k| k.current_context)
        .is_some_and(|c| c == "canaryd-admin@canaryd-sandbox")
}

/// A client for the kubeconfig file at `path` (its current context).
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load kubeconfig {}: {e}", path.display()));
    Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client from {}: {e}", path.display()))
}

/// The admin client (`CANARYD_KUBECONFIG`).
pub async fn client() -> Client {
    client_for(&kubeconfig_path(KUBECONFIG_ENV)).await
}

/// The client of user `canaryd-restricted` (`CANARYD_RESTRICTED_KUBECONFIG`).
pub async fn restricted_client() -> Client {
    client_for(&kubeconfig_path(RESTRICTED_KUBECONFIG_ENV)).await
}

/// Polls `probe` every 100 ms until it yields `Some`, panicking after `timeout`
/// with `what` and the last state that `probe` reported through `last`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes a pod spec schedulable only on the sandbox's fake nodes.
pub fn place_on_fake_nodes(spec: &mut PodSpec) {
    let (key, value) = FAKE_NODE_LABEL;
    spec.node_selector
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
    let (key, value, effect) = FAKE_NODE_TAINT;
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some(key.to_string()),
            operator: Some("Equal".to_string()),
            value: Some(value.to_string()),
            effect: Some(effect.to_string()),
            ..Toleration::default()
        });
}

/// Deployment `name` (pods labelled `app: name`, `version: v1`) of
/// `replicas` pods running `image` on the fake nodes, surging one at a time.
pub fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    let mut d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name, "version": "v1"}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
    .unwrap();
    place_on_fake_nodes(d.spec.as_mut().unwrap().template.spec.as_mut().unwrap());
    d
}

/// The image of `d`'s first container.
pub fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// Installs the test HTTPRoute CRD (once per cluster) and waits up to
/// `timeout` until it serves.
pub async fn install_httproute_crd(client: &Client, timeout: Duration) {
    let text = std::fs::read_to_string("tests/fixtures/k8s/httproute-crd.yaml").unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    let routes: Api<DynamicObject> = Api::all_with(client.clone(), &httproute_resource());
    wait_until(timeout, "HTTPRoute CRD to serve", || async {
        routes
            .list(&ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

/// A namespace `canaryd-test-<random>` that is deleted at the end: by
/// `cleanup().await`, or when dropped (also when the test panics).
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    client: Client,
    deleted: bool,
}

impl TestNamespace {
    /// Creates a namespace as the admin identity and waits until its default
    /// ServiceAccount exists (pods cannot be created before that).
    pub async fn create() -> Self {
        Self::create_with(&kubeconfig_path(KUBECONFIG_ENV)).await
    }

    /// Same as `create`, with an explicit kubeconfig.
    pub async fn create_with(kubeconfig: &Path) -> Self {
        let name = format!("{NAMESPACE_PREFIX}{:08x}", rand::random::<u32>());
        Self::create_named(kubeconfig, name).await
    }

    /// Same as `create`, named `<prefix><random>` (for tests whose objects
    /// must be told apart by name, e.g. `rbac-`).
    pub async fn create_prefixed(prefix: &str) -> Self {
        let name = format!("{prefix}{:08x}", rand::random::<u32>());
        Self::create_named(&kubeconfig_path(KUBECONFIG_ENV), name).await
    }

    async fn create_named(kubeconfig: &Path, name: String) -> Self {
        let client = client_for(kubeconfig).await;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        let this = TestNamespace {
            name,
            kubeconfig: kubeconfig.to_path_buf(),
            client,
            deleted: false,
        };
        let sas: Api<ServiceAccount> = Api::namespaced(this.client.clone(), &this.name);
        wait_until(
            Duration::from_secs(30),
            &format!("ServiceAccount default in {}", this.name),
            || {
                let sas = sas.clone();
                async move {
                    match sas.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not created yet".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        this
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Namespace object, as an owner: cluster-scoped objects a test makes
    /// (ClusterRoles) are garbage-collected with the namespace.
    pub async fn owner_reference(&self) -> OwnerReference {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get(&self.name)
            .await
            .expect("get own namespace");
        OwnerReference {
            api_version: "v1".to_string(),
            kind: "Namespace".to_string(),
            name: self.name.clone(),
            uid: ns.metadata.uid.unwrap_or_default(),
            ..OwnerReference::default()
        }
    }

    /// The admin client this namespace was created with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A namespaced API of kind `K` in this namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates Service `name` with `selector`, port 80 to the pods' 8080.
    pub async fn create_service(&self, name: &str, selector: serde_json::Value) -> Service {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        self.api::<Service>()
            .create(&PostParams::default(), &svc)
            .await
            .expect("create Service")
    }

    /// Deletes the namespace (without waiting for its finalization).
    pub async fn cleanup(mut self) {
        self.deleted = true;
        if keep_namespaces() {
            eprintln!(
                "keeping namespace {} ({KEEP_NAMESPACES_ENV} is set)",
                self.name
            );
            return;
        }
        delete_namespace(self.client.clone(), &self.name).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if keep_namespaces() {
            eprintln!(
                "keeping namespace {} ({KEEP_NAMESPACES_ENV} is set)",
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be single-threaded and
        // busy unwinding: delete from a fresh thread with its own runtime and
        // its own client (the test's client is bound to the test's runtime).
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for namespace cleanup");
            rt.block_on(async {
                let client = client_for(&kubeconfig).await;
                delete_namespace(client, &name).await;
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("warning: could not delete namespace {}", self.name);
        }
    }
}

fn keep_namespaces() -> bool {
    std::env::var(KEEP_NAMESPACES_ENV).is_ok_and(|v| v == "1")
}

async fn delete_namespace(client: Client, name: &str) {
    let api = Api::<Namespace>::all(client);
    let deleting = tokio::time::timeout(
        Duration::from_secs(10),
        api.delete(name, &DeleteParams::background()),
    )
    .await;
    match deleting {
        Ok(Ok(_)) => {}
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
        Ok(Err(e)) => eprintln!("warning: could not delete namespace {name}: {e}"),
        Err(_) => eprintln!("warning: deleting namespace {name} timed out"),
    }
}

/// Lifetime of the tokens `service_account_identity` requests.
pub const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

/// A ServiceAccount as a client identity: a bearer token from the
/// TokenRequest API (what `kubectl create token` does).
pub struct ServiceAccountIdentity {
    /// A client authenticating as the ServiceAccount.
    pub client: Client,
    /// A kubeconfig file for child processes (`canaryd run`).
    pub kubeconfig: PathBuf,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub username: String,
}

/// Creates ServiceAccount `name` in `namespace` (as admin) and a kubeconfig
/// in `dir` that reaches the admin kubeconfig's cluster with its token.
pub async fn service_account_identity(
    namespace: &str,
    name: &str,
    dir: &Path,
) -> ServiceAccountIdentity {
    let admin_path = kubeconfig_path(KUBECONFIG_ENV);
    let admin = client_for(&admin_path).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create ServiceAccount {namespace}/{name}: {e}"),
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for {namespace}/{name}: {e}"))
        .status
        .expect("TokenRequest status")
        .token;
    let kubeconfig = dir.join(format!("kubeconfig-{namespace}-{name}.json"));
    std::fs::write(
        &kubeconfig,
        token_kubeconfig(&admin_path, &token).to_string(),
    )
    .unwrap();
    ServiceAccountIdentity {
        client: client_for(&kubeconfig).await,
        kubeconfig,
        username: format!("system:serviceaccount:{namespace}:{name}"),
    }
}

/// The admin kubeconfig's current cluster with `token` as the only user.
fn token_kubeconfig(admin_path: &Path, token: &str) -> serde_json::Value {
    let admin = Kubeconfig::read_from(admin_path).expect("read admin kubeconfig");
    let current = admin.current_context.clone().expect("current context");
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("current context's cluster");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .expect("current cluster");
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [serde_json::to_value(cluster).unwrap()],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": cluster_name, "user": "token"}}],
        "current-context": "token",
    })
}
