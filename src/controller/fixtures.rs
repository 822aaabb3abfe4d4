//! Test fixtures for the controller: a target Deployment, its ReplicaSets
//! and the [`Observed`] view assembled from them, as the API would return them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::json;

use crate::k8s::target::{self, Observed};

/// Namespace of the fixture target.
pub const NAMESPACE: &str = "prod";
/// Name of the fixture target.
pub const NAME: &str = "web";
/// resourceVersion the fixture target was read at.
pub const RESOURCE_VERSION: &str = "417";
/// Pods the fixture target wants.
pub const REPLICAS: i32 = 4;

fn template(image: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// The target running `image` in its template, paused or not, read at
/// [`RESOURCE_VERSION`].
pub fn deployment(image: &str, paused: bool) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": NAME, "namespace": NAMESPACE, "uid": "u-1",
            "generation": 3, "resourceVersion": RESOURCE_VERSION
        },
        "spec": {
            "replicas": REPLICAS,
            "paused": paused,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(image)
        },
        "status": {"observedGeneration": 3, "replicas": REPLICAS}
    }))
    .unwrap()
}

/// A ReplicaSet of the target running `image` with `available` pods.
pub fn replica_set(image: &str, available: i32, revision: &str) -> ReplicaSet {
    let mut t = template(image);
    t["metadata"]["labels"]["pod-template-hash"] = json!(format!("rs{revision}"));
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("web-rs{revision}"),
            "namespace": NAMESPACE,
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME, "uid": "u-1"}]
        },
        "spec": {
            "replicas": available,
            "selector": {"matchLabels": {"app": "web"}},
            "template": t
        },
        "status": {"replicas": available, "availableReplicas": available}
    }))
    .unwrap()
}

/// canaryd's hash of the fixture template running `image`.
pub fn hash_of(image: &str) -> String {
    target::desired_hash(&deployment(image, false))
}

/// The engine's view of `d` with ReplicaSets `sets` (no canary, no baseline).
pub fn observed(d: Deployment, sets: &[ReplicaSet]) -> Observed {
    target::assemble(d, sets, None, None, None)
}

/// A rollout in flight: the target is paused at template `v2` while all its
/// pods run `v1` (one ReplicaSet).
pub fn in_flight() -> Observed {
    observed(deployment("v2", true), &[replica_set("v1", REPLICAS, "1")])
}

/// `o` with annotation `key` set to `value` on the target.
pub fn annotated(mut o: Observed, key: &str, value: &str) -> Observed {
    target::set_annotation(&mut o.deployment, key, Some(value.to_string()));
    o
}
