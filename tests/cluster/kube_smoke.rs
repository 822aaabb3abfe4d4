//! Smoke tests against a real Kubernetes control plane: the behaviour of
//! Deployments, ReplicaSets and RBAC that canaryd relies on.
//!
//! Needs `CANARYD_KUBECONFIG` and `CANARYD_RESTRICTED_KUBECONFIG`
//! (`scripts/test` sets them up; see docs/sandbox.md). Pods run on KWOK fake
//! nodes: they never start a container, KWOK marks them Ready.

use crate::support::cluster;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::{wait_until, TestNamespace};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const IMAGE_V1: &str = "registry.invalid/canaryd/smoke:v1";
const IMAGE_V2: &str = "registry.invalid/canaryd/smoke:v2";

/// A Deployment of `replicas` pods of `app`, placed on the fake nodes.
fn deployment(app: &str, replicas: i32, max_surge: i32, max_unavailable: i32) -> Deployment {
    let mut d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": app, "labels": { "app": app } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": app } },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": max_surge, "maxUnavailable": max_unavailable }
            },
            "template": {
                "metadata": { "labels": { "app": app } },
                "spec": {
                    "containers": [{ "name": "app", "image": IMAGE_V1 }]
                }
            }
        }
    }))
    .expect("valid Deployment");
    let pod_spec = d
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod spec");
    cluster::place_on_fake_nodes(pod_spec);
    d
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image_of(pod_spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Option<String> {
    pod_spec
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
}

fn rs_image(rs: &ReplicaSet) -> Option<String> {
    image_of(
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref()),
    )
}

fn rs_spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Pods of `app` that are not being deleted.
async fn live_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn replica_sets(rss: &Api<ReplicaSet>, app: &str) -> Vec<ReplicaSet> {
    rss.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list replicasets")
        .items
}

/// Waits until the Deployment has rolled out its current generation completely:
/// all `replicas` pods updated, ready and available, no old pods left.
async fn wait_rolled_out(deploys: &Api<Deployment>, name: &str, timeout: Duration) -> Deployment {
    let what = format!("Deployment {name} to finish rolling out");
    wait_until(timeout, &what, || async {
        let d = deploys.get(name).await.map_err(|e| e.to_string())?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.clone().unwrap_or_default();
        let done = st.observed_generation.unwrap_or(0) >= generation
            && st.updated_replicas.unwrap_or(0) == want
            && st.ready_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want;
        if done {
            Ok(d)
        } else {
            Err(format!("generation {generation}, status {st:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn deployment_of_three_gets_three_ready_pods_on_fake_nodes() {
    let ns = TestNamespace::create().await;
    let deploys: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();

    deploys
        .create(&PostParams::default(), &deployment("web", 3, 1, 0))
        .await
        .expect("create Deployment");

    let ready = wait_until(Duration::from_secs(60), "3 Ready pods of web", || async {
        let live = live_pods(&pods, "web").await;
        let ready: Vec<Pod> = live.iter().filter(|p| is_ready(p)).cloned().collect();
        if live.len() == 3 && ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{} pods, {} Ready", live.len(), ready.len()))
        }
    })
    .await;

    let nodes: Api<Node> = Api::all(ns.client());
    let (key, value) = cluster::FAKE_NODE_LABEL;
    let fake_nodes: BTreeSet<String> = nodes
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for pod in &ready {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_ref().is_some_and(|n| fake_nodes.contains(n)),
            "pod {:?} runs on {node:?}, not on a fake node {fake_nodes:?}",
            pod.metadata.name
        );
    }
    let d = wait_rolled_out(&deploys, "web", Duration::from_secs(30)).await;
    assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(3));

    ns.cleanup().await;
}

#[tokio::test]
async fn image_change_rolls_out_a_new_replicaset_within_surge_bounds() {
    const REPLICAS: i32 = 4;
    const MAX_SURGE: i32 = 1;
    const MAX_UNAVAILABLE: i32 = 1;

    let ns = TestNamespace::create().await;
    let deploys: Api<Deployment> = ns.api();
    let rss: Api<ReplicaSet> = ns.api();
    let pods: Api<Pod> = ns.api();

    let mut d = deployment("roll", REPLICAS, MAX_SURGE, MAX_UNAVAILABLE);
    // Pods count as available only 2 s after Ready, so the rollout takes
    // several steps that the sampling below can see.
    d.spec.as_mut().unwrap().min_ready_seconds = Some(2);
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
    wait_rolled_out(&deploys, "roll", Duration::from_secs(60)).await;

    let old = replica_sets(&rss, "roll").await;
    assert_eq!(old.len(), 1, "one ReplicaSet before the change");
    let old_name = old[0].metadata.name.clone().unwrap();

    deploys
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": IMAGE_V2 }] } } }
            })),
        )
        .await
        .expect("change image");

    // Sample while it rolls: the ReplicaSets' desired replicas never exceed
    // replicas + maxSurge, and Ready pods never drop below replicas - maxUnavailable.
    let mut samples = 0;
    let mut saw_both = false;
    let (mut max_desired, mut min_ready) = (0, i32::MAX);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let sets = replica_sets(&rss, "roll").await;
        let desired: i32 = sets.iter().map(rs_spec_replicas).sum();
        let live = live_pods(&pods, "roll").await;
        let ready = live.iter().filter(|p| is_ready(p)).count() as i32;
        samples += 1;
        max_desired = max_desired.max(desired);
        min_ready = min_ready.min(ready);
        assert!(
            desired <= REPLICAS + MAX_SURGE,
            "ReplicaSets want {desired} pods, more than {REPLICAS} + maxSurge {MAX_SURGE}"
        );
        assert!(
            ready >= REPLICAS - MAX_UNAVAILABLE,
            "only {ready} Ready pods, fewer than {REPLICAS} - maxUnavailable {MAX_UNAVAILABLE}"
        );
        let active = sets.iter().filter(|rs| rs_spec_replicas(rs) > 0).count();
        saw_both |= active >= 2;

        let dep = deploys.get("roll").await.expect("get Deployment");
        let st = dep.status.clone().unwrap_or_default();
        let done = st.observed_generation.unwrap_or(0) >= dep.metadata.generation.unwrap_or(0)
            && st.updated_replicas == Some(REPLICAS)
            && st.available_replicas == Some(REPLICAS)
            && st.replicas == Some(REPLICAS);
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout did not finish in 90 s; status {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "rollout: {samples} samples, ReplicaSets wanted at most {max_desired} pods, \
         at least {min_ready} pods were Ready"
    );
    assert!(
        saw_both,
        "never saw old and new ReplicaSet active together in {samples} samples"
    );

    let sets = replica_sets(&rss, "roll").await;
    assert_eq!(sets.len(), 2, "old and new ReplicaSet");
    let new = sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() != Some(old_name.as_str()))
        .expect("a new ReplicaSet");
    assert_eq!(rs_image(new).as_deref(), Some(IMAGE_V2));
    assert_eq!(rs_spec_replicas(new), REPLICAS);
    let old = sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(old_name.as_str()))
        .expect("the old ReplicaSet is kept for rollback");
    assert_eq!(rs_spec_replicas(old), 0, "old ReplicaSet scaled to zero");
    let live = live_pods(&pods, "roll").await;
    assert!(
        live.iter()
            .all(|p| image_of(p.spec.as_ref()).as_deref() == Some(IMAGE_V2)),
        "all live pods run the new image"
    );

    ns.cleanup().await;
}

#[tokio::test]
async fn paused_deployment_holds_the_rollout_until_resumed() {
    let ns = TestNamespace::create().await;
    let deploys: Api<Deployment> = ns.api();
    let rss: Api<ReplicaSet> = ns.api();
    let pods: Api<Pod> = ns.api();

    deploys
        .create(&PostParams::default(), &deployment("held", 2, 1, 0))
        .await
        .expect("create Deployment");
    wait_rolled_out(&deploys, "held", Duration::from_secs(60)).await;

    let pp = PatchParams::default();
    deploys
        .patch(
            "held",
            &pp,
            &Patch::Merge(json!({ "spec": { "paused": true } })),
        )
        .await
        .expect("pause");
    let changed = deploys
        .patch(
            "held",
            &pp,
            &Patch::Strategic(json!({
                "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": IMAGE_V2 }] } } }
            })),
        )
        .await
        .expect("change image while paused");
    let generation = changed.metadata.generation.unwrap_or(0);

    // The controller sees the new generation but makes no new ReplicaSet.
    wait_until(
        Duration::from_secs(30),
        "controller to observe the paused change",
        || async {
            let d = deploys.get("held").await.map_err(|e| e.to_string())?;
            let st = d.status.unwrap_or_default();
            let paused = st.conditions.unwrap_or_default().into_iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
            if st.observed_generation.unwrap_or(0) >= generation && paused {
                Ok(())
            } else {
                Err(format!(
                    "observedGeneration {:?}, paused condition {paused}",
                    st.observed_generation
                ))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sets = replica_sets(&rss, "held").await;
    assert_eq!(
        sets.len(),
        1,
        "no new ReplicaSet while paused: {:?}",
        sets.iter().map(|r| &r.metadata.name).collect::<Vec<_>>()
    );
    assert_eq!(rs_image(&sets[0]).as_deref(), Some(IMAGE_V1));
    let live = live_pods(&pods, "held").await;
    assert_eq!(live.len(), 2);
    assert!(live
        .iter()
        .all(|p| image_of(p.spec.as_ref()).as_deref() == Some(IMAGE_V1)));

    deploys
        .patch(
            "held",
            &pp,
            &Patch::Merge(json!({ "spec": { "paused": false } })),
        )
        .await
        .expect("resume");
    wait_rolled_out(&deploys, "held", Duration::from_secs(60)).await;
    let sets = replica_sets(&rss, "held").await;
    let active: Vec<&ReplicaSet> = sets.iter().filter(|rs| rs_spec_replicas(rs) > 0).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(rs_image(active[0]).as_deref(), Some(IMAGE_V2));
    let live = live_pods(&pods, "held").await;
    assert!(live
        .iter()
        .all(|p| image_of(p.spec.as_ref()).as_deref() == Some(IMAGE_V2)));

    ns.cleanup().await;
}

fn is_forbidden<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden")
}

#[tokio::test]
async fn restricted_identity_is_forbidden_outside_its_grant() {
    let granted = TestNamespace::create().await;
    let other = TestNamespace::create().await;
    let restricted = cluster::restricted_client().await;

    // Who the restricted kubeconfig is. In the sandbox: user canaryd-restricted
    // with no group but system:authenticated. On another cluster it may be any
    // identity without grants (e.g. a fresh ServiceAccount), so the grant below
    // names whatever user the server reports.
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    }))
    .unwrap();
    let me = Api::<SelfSubjectReview>::all(restricted.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectReview as the restricted user");
    let user = me.status.and_then(|s| s.user_info).expect("user info");
    let username = user.username.clone().expect("a user name");
    let groups = user.groups.unwrap_or_default();
    assert!(
        !groups.iter().any(|g| g == "system:masters"),
        "the restricted identity {username} is in system:masters"
    );
    if cluster::is_sandbox() {
        assert_eq!(username, "canaryd-restricted");
        assert_eq!(groups, vec!["system:authenticated".to_string()]);
    }

    // Grant: read Deployments in `granted` only.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "deployment-reader" },
        "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"] }]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "deployment-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployment-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": username }]
    }))
    .unwrap();
    granted
        .api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    granted
        .api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    granted
        .api::<Deployment>()
        .create(&PostParams::default(), &deployment("visible", 1, 1, 0))
        .await
        .expect("create Deployment");

    // Inside the grant: allowed (the authorizer's cache may lag a moment).
    let in_grant: Api<Deployment> = Api::namespaced(restricted.clone(), granted.name());
    let listed = wait_until(
        Duration::from_secs(15),
        "the RoleBinding to take effect",
        || async {
            in_grant
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["visible".to_string()]);
    in_grant
        .get("visible")
        .await
        .expect("get granted Deployment");

    // Outside the grant: Forbidden.
    let secrets: Api<Secret> = Api::namespaced(restricted.clone(), granted.name());
    let r = secrets.list(&ListParams::default()).await;
    assert!(is_forbidden(&r), "secrets in the granted namespace: {r:?}");

    let elsewhere: Api<Deployment> = Api::namespaced(restricted.clone(), other.name());
    let r = elsewhere.list(&ListParams::default()).await;
    assert!(is_forbidden(&r), "deployments in another namespace: {r:?}");

    let r = in_grant
        .create(&PostParams::default(), &deployment("sneaky", 1, 1, 0))
        .await;
    assert!(
        is_forbidden(&r),
        "creating a Deployment with a read-only grant: {r:?}"
    );

    let r = in_grant
        .patch(
            "visible",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "paused": true } })),
        )
        .await;
    assert!(
        is_forbidden(&r),
        "patching a Deployment with a read-only grant: {r:?}"
    );

    let all_deploys: Api<Deployment> = Api::all(restricted.clone());
    let r = all_deploys.list(&ListParams::default()).await;
    assert!(is_forbidden(&r), "deployments across all namespaces: {r:?}");

    granted.cleanup().await;
    other.cleanup().await;
}

/// The largest rollout state a valid policy allows fits in the
/// `canaryd.io/state` annotation of a real Deployment (and of the
/// ReplicaSet the Deployment controller copies it to), and reads back equal.
#[tokio::test]
async fn worst_case_state_annotation_round_trips_through_the_apiserver() {
    use canaryd::k8s::target::STATE_ANNOTATION;
    use canaryd::rollout::worst_case::{largest_metrics, worst_case_state};
    use canaryd::rollout::{RolloutState, MAX_STATE_BYTES};

    let ns = TestNamespace::create().await;
    let deploys: Api<Deployment> = ns.api();
    deploys
        .create(&PostParams::default(), &deployment("big-state", 1, 1, 0))
        .await
        .expect("create Deployment");

    let state = worst_case_state(&largest_metrics());
    let text = state.to_json();
    assert!(text.len() <= MAX_STATE_BYTES, "{} bytes", text.len());
    let patch = json!({"metadata": {"annotations": {STATE_ANNOTATION: text}}});
    deploys
        .patch("big-state", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the apiserver accepts the worst-case state annotation");

    let stored = deploys.get("big-state").await.expect("get Deployment");
    let back = stored
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATE_ANNOTATION))
        .expect("state annotation present");
    assert_eq!(back.len(), text.len());
    assert_eq!(RolloutState::from_json(back).expect("parses"), state);

    let rss: Api<ReplicaSet> = ns.api();
    wait_until(Duration::from_secs(30), "the ReplicaSet's copy", || async {
        let copies = replica_sets(&rss, "big-state").await;
        let copy = copies.iter().find_map(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STATE_ANNOTATION).cloned())
        });
        match copy {
            Some(c) if c == text => Ok(()),
            Some(c) => Err(format!("copy has {} bytes", c.len())),
            None => Err(format!("{} ReplicaSets, none with the state", copies.len())),
        }
    })
    .await;
    println!(
        "stored a {}-byte state annotation on a Deployment and its ReplicaSet",
        text.len()
    );
    ns.cleanup().await;
}

/// canaryd's writes of canary, baseline and routing objects are server-side
/// applies carrying the resourceVersion just read: the API server must refuse
/// one whose version is outdated (a stale leader's write), and
/// `apply_preconditioned` must redo a refused one from a fresh read.
#[tokio::test]
async fn an_apply_with_an_outdated_resource_version_is_refused() {
    let ns = TestNamespace::create().await;
    let api: Api<Deployment> = ns.api();
    let created = api
        .create(
            &PostParams::default(),
            &cluster::deployment("fenced", 1, "registry.invalid/x:v1"),
        )
        .await
        .expect("create");
    let stale = created.metadata.resource_version.clone();
    let patch = json!({"metadata": {"annotations": {"someone/else": "wrote"}}});
    api.patch("fenced", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("a write in between");
    let mut desired = cluster::deployment("fenced", 2, "registry.invalid/x:v1");
    desired.metadata.resource_version = stale;
    let refused = api
        .patch(
            "fenced",
            &canaryd::k8s::apply_params(),
            &Patch::Apply(&desired),
        )
        .await
        .expect_err("an outdated resourceVersion must be refused");
    assert_eq!(
        canaryd::k8s::ApiFailure::of(&refused),
        canaryd::k8s::ApiFailure::Conflict,
        "{refused}"
    );
    // Through canaryd's helper: read, precondition, apply.
    let mut desired = cluster::deployment("fenced", 2, "registry.invalid/x:v1");
    desired.metadata.resource_version = None;
    let applied = canaryd::k8s::apply_preconditioned(
        &api,
        "fenced",
        &desired,
        |_| Ok(()),
        |e| canaryd::Error::ApplyCanary {
            name: "fenced".into(),
            source: Box::new(e),
        },
    )
    .await
    .expect("applied from a fresh read");
    assert_eq!(applied.spec.and_then(|s| s.replicas), Some(2));
    ns.cleanup().await;
}
