//! The managed Deployment and its canary and baseline: observe them as the
//! engine's [`rollout::Target`], create, scale and delete the canary and
//! baseline, and write the target (its pause flag, template and annotations
//! change in the controller's commit).
//!
//! Every write to the target carries the resourceVersion it was read at (an
//! HTTP 409 becomes [`Error::Conflict`]); canary and baseline are written by
//! server-side apply with field manager [`FIELD_MANAGER`](crate::k8s::FIELD_MANAGER).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, Resource, ResourceExt};

use crate::k8s::{self, ApiFailure, MANAGED_BY};
use crate::policy::{Policy, Strategy};
use crate::rollout::{self, PodCounts};
use crate::{Error, Result};

/// Prefix of every canaryd label and annotation.
pub const CANARYD_PREFIX: &str = "canaryd.io/";
/// Annotation the Deployment controller numbers revisions with (read on ReplicaSets).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Label telling canary and baseline pods apart (`canary` or `baseline`).
pub const ROLE_LABEL: &str = "canaryd.io/role";
/// Annotation on the target holding the versioned [`rollout::RolloutState`] JSON.
pub const STATE_ANNOTATION: &str = "canaryd.io/state";
/// Annotation on the target holding actions committed but not yet carried out (JSON).
pub const PENDING_ANNOTATION: &str = "canaryd.io/pending";
/// Annotation on the target naming the template hash that was rolled back.
pub const FAILED_REVISION_ANNOTATION: &str = "canaryd.io/failed-revision";
/// Annotation a human sets on the target to pass a gate (`true` or the revision hash).
pub const APPROVE_ANNOTATION: &str = "canaryd.io/approve";
/// Annotation a human sets on the target to roll the current revision back (`true`).
pub const ABORT_ANNOTATION: &str = "canaryd.io/abort";
/// Annotation on canary and baseline Deployments: canaryd's hash of their template.
pub const TEMPLATE_HASH_ANNOTATION: &str = "canaryd.io/template-hash";
/// Label the Deployment controller adds to ReplicaSet templates.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Which copy of the target canaryd runs beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The new release: `<name>-canary`.
    Canary,
    /// A fresh copy of the stable release: `<name>-baseline`.
    Baseline,
}

impl Arm {
    /// The role label value and name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Canary => "canary",
            Arm::Baseline => "baseline",
        }
    }

    /// Name of this arm's Deployment for target `deployment`.
    pub fn name(self, deployment: &str) -> String {
        format!("{deployment}-{}", self.as_str())
    }
}

/// canaryd's deterministic hash of a pod template, ignoring the labels that
/// differ between copies of the same release (`pod-template-hash` and
/// [`ROLE_LABEL`]), so the Deployment, its ReplicaSets and the canary compare
/// like with like.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let mut t = template.clone();
    strip_copy_labels(&mut t);
    // Struct fields serialize in declaration order and maps are sorted, so
    // the bytes are stable across reads of the same template.
    let bytes = serde_json::to_vec(&t).unwrap_or_default();
    format!("{:016x}", crate::hash::fnv1a64(bytes))[..12].to_string()
}

fn strip_copy_labels(t: &mut PodTemplateSpec) {
    let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
    if let Some(labels) = meta.labels.as_mut() {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
        labels.remove(ROLE_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
}

/// `namespace/name` of an object, for messages.
pub fn full_name<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

/// The target Deployment and everything canaryd derives from it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The target as read (its resourceVersion is the write precondition).
    pub deployment: Deployment,
    /// What the engine is told.
    pub target: rollout::Target,
    /// Templates of the target's ReplicaSets by canaryd hash, `pod-template-hash` removed.
    pub templates: BTreeMap<String, PodTemplateSpec>,
    /// Whether the target finished rolling out its current template.
    pub rolled_out: bool,
    /// Pods per template hash among the target's ReplicaSets (only hashes with pods).
    pub pods_by_hash: BTreeMap<String, i32>,
}

impl Observed {
    /// The target's `spec.template` (empty when missing).
    pub fn desired_template(&self) -> PodTemplateSpec {
        self.deployment
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }
}

/// An annotation's value on an object.
pub fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Sets (`Some`) or removes (`None`) an annotation; true if it changed.
pub fn set_annotation<K: Resource>(obj: &mut K, key: &str, value: Option<String>) -> bool {
    let annotations = obj.meta_mut().annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => annotations.insert(key.to_string(), v.clone()) != Some(v),
        None => annotations.remove(key).is_some(),
    }
}

/// Whether the Deployment is paused.
pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// Sets `spec.paused`; true if it changed.
pub fn set_paused(d: &mut Deployment, paused: bool) -> bool {
    if is_paused(d) == paused {
        return false;
    }
    d.spec.get_or_insert_with(DeploymentSpec::default).paused = Some(paused);
    true
}

/// canaryd hash of the Deployment's `spec.template`.
pub fn desired_hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .map(|s| template_hash(&s.template))
        .unwrap_or_default()
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == uid))
}

fn counts(d: Option<&Deployment>) -> PodCounts {
    let Some(d) = d else {
        return PodCounts::default();
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    // Only pods of the Deployment's current template count, and only once
    // the controller has seen that template.
    let current = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let ready = if current {
        st.updated_replicas
            .unwrap_or(0)
            .min(st.available_replicas.unwrap_or(0))
    } else {
        0
    };
    PodCounts {
        ready: ready.max(0) as u32,
        desired: desired.max(0) as u32,
    }
}

fn rs_revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rs_template(rs: &ReplicaSet) -> Option<PodTemplateSpec> {
    let mut t = rs.spec.as_ref()?.template.clone()?;
    strip_copy_labels(&mut t);
    Some(t)
}

fn version_of(template: Option<&PodTemplateSpec>, label: Option<&str>) -> Option<String> {
    let label = label?;
    template?
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get(label)
        .cloned()
}

/// Reads the target of `policy`, its ReplicaSets, canary and baseline.
/// `None` when the target does not exist (or is being deleted).
pub async fn observe(client: &Client, policy: &Policy) -> Result<Option<Observed>> {
    let ns = &policy.namespace;
    let name = &policy.deployment;
    let full = format!("{ns}/{name}");
    let err = |source: kube::Error| Error::ObserveTarget {
        name: full.clone(),
        source: Box::new(source),
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(deployment) = deployments.get_opt(name).await.map_err(err)? else {
        return Ok(None);
    };
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let sets: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(err)?
        .items
        .into_iter()
        .filter(|rs| owned_by(&rs.metadata, &uid))
        .collect();
    let mut arms = Vec::new();
    for arm in [Arm::Canary, Arm::Baseline] {
        let found = deployments.get_opt(&arm.name(name)).await.map_err(err)?;
        // A same-named Deployment canaryd did not create is not an arm.
        arms.push(found.filter(|d| owned_by(&d.metadata, &uid)));
    }
    let version_label = match &policy.strategy {
        Strategy::BlueGreen(bg) => Some(bg.version_label.as_str()),
        Strategy::Canary(_) => None,
    };
    let baseline = arms.pop().flatten();
    let canary = arms.pop().flatten();
    Ok(Some(assemble(
        deployment,
        &sets,
        canary.as_ref(),
        baseline.as_ref(),
        version_label,
    )))
}

/// Templates of the ReplicaSets by canaryd hash, and their pods per hash
/// (only hashes with pods).
fn index_sets(sets: &[ReplicaSet]) -> (BTreeMap<String, PodTemplateSpec>, BTreeMap<String, i32>) {
    let mut templates = BTreeMap::new();
    let mut pods_by_hash = BTreeMap::new();
    for rs in sets {
        if let Some(t) = rs_template(rs) {
            let hash = template_hash(&t);
            let spec_pods = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let pods = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
            if spec_pods.max(pods) > 0 {
                *pods_by_hash.entry(hash.clone()).or_insert(0) += spec_pods.max(pods);
            }
            templates.insert(hash, t);
        }
    }
    (templates, pods_by_hash)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The stable release: the ReplicaSet holding the most available pods (the
/// newest on a tie).
fn stable_set(sets: &[ReplicaSet]) -> Option<&ReplicaSet> {
    sets.iter()
        .filter(|rs| available(rs) > 0)
        .max_by_key(|rs| (available(rs), rs_revision(rs)))
}

/// Pods of the stable release. Pods beyond `spec.replicas` are a rollout
/// still in progress: they do not count as the stable release being fully
/// back or fully rolled. (Not gated on observedGeneration: canaryd's own
/// annotation writes bump the generation, and ReplicaSet status does not
/// depend on it.)
fn stable_counts(
    stable_rs: Option<&ReplicaSet>,
    status: &DeploymentStatus,
    replicas: u32,
) -> PodCounts {
    let surplus = status
        .replicas
        .unwrap_or(0)
        .saturating_sub(replicas as i32)
        .max(0);
    let ready = stable_rs
        .map(|rs| available(rs).saturating_sub(surplus).max(0) as u32)
        .unwrap_or(0);
    PodCounts {
        ready,
        desired: stable_rs
            .and_then(|rs| rs.spec.as_ref().and_then(|s| s.replicas))
            .unwrap_or(0)
            .max(0) as u32,
    }
}

/// Builds the engine's view from objects already read (pure).
pub fn assemble(
    deployment: Deployment,
    sets: &[ReplicaSet],
    canary: Option<&Deployment>,
    baseline: Option<&Deployment>,
    version_label: Option<&str>,
) -> Observed {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
    let status = deployment.status.clone().unwrap_or_default();
    let desired = template_hash(&spec.template);
    let (templates, pods_by_hash) = index_sets(sets);
    let stable_rs = stable_set(sets);
    let stable_template = stable_rs.and_then(rs_template);
    let stable_hash = stable_template
        .as_ref()
        .map(template_hash)
        .unwrap_or_default();
    let stable = stable_counts(stable_rs, &status, replicas);
    let rolled_out = !stable_hash.is_empty()
        && stable_hash == desired
        && stable.has_ready(replicas)
        && status.replicas.unwrap_or(0) == replicas as i32
        && pods_by_hash.keys().all(|h| *h == desired);
    let canary_hash = canary
        .and_then(|c| annotation(c, TEMPLATE_HASH_ANNOTATION))
        .unwrap_or_default()
        .to_string();
    let target = rollout::Target {
        generation: deployment.metadata.generation.unwrap_or(0),
        stable_hash,
        desired_hash: desired,
        replicas,
        stable_version: version_of(stable_template.as_ref(), version_label),
        desired_version: version_of(Some(&spec.template), version_label),
        canary_hash,
        canary: counts(canary),
        baseline: counts(baseline),
        stable,
    };
    Observed {
        deployment,
        target,
        templates,
        rolled_out,
        pods_by_hash,
    }
}

/// Writes the whole target back (PUT) with the resourceVersion it was read
/// at; a 409 becomes [`Error::Conflict`].
pub async fn update_target(client: &Client, d: &Deployment) -> Result<Deployment> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.replace(&d.name_any(), &k8s::post_params(), d)
        .await
        .map_err(|source| match ApiFailure::of(&source) {
            ApiFailure::Conflict => Error::Conflict { name: full_name(d) },
            _ => Error::UpdateTarget {
                name: full_name(d),
                source: Box::new(source),
            },
        })
}

/// Reads the target afresh, lets `change` modify it and writes it back if
/// `change` returned true; conflicts are retried from a fresh read (bounded).
/// Returns the Deployment as last read or written.
pub async fn modify_target<F>(
    client: &Client,
    ns: &str,
    name: &str,
    mut change: F,
) -> Result<Deployment>
where
    F: FnMut(&mut Deployment) -> Result<bool>,
{
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let full = format!("{ns}/{name}");
    let mut retry = k8s::ConflictRetry::new(&full);
    loop {
        retry.attempt()?;
        let mut d = api.get(name).await.map_err(|source| Error::ObserveTarget {
            name: full.clone(),
            source: Box::new(source),
        })?;
        if !change(&mut d)? {
            return Ok(d);
        }
        match update_target(client, &d).await {
            Err(e) if e.is_conflict() => continue,
            other => return other,
        }
    }
}

/// Puts `stable` back as the target's template if the template is still
/// `replacing` (a newer one is left alone); returns whether it did.
pub fn restore_template(d: &mut Deployment, stable: &PodTemplateSpec, replacing: &str) -> bool {
    if desired_hash(d) != replacing {
        return false;
    }
    let spec = d.spec.get_or_insert_with(DeploymentSpec::default);
    spec.template = stable.clone();
    true
}

/// An ownerReference to the target: deleting the target deletes the object.
pub fn owner_reference(target: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_string(),
        kind: "Deployment".to_string(),
        name: target.name_any(),
        uid: target.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// The canary or baseline Deployment for `target` running `template` (pure).
pub fn arm_deployment(
    target: &Deployment,
    arm: Arm,
    template: &PodTemplateSpec,
    replicas: u32,
) -> Deployment {
    let spec = target.spec.clone().unwrap_or_default();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ROLE_LABEL.to_string(), arm.as_str().to_string());
    let mut template = template.clone();
    strip_copy_labels(&mut template);
    let hash = template_hash(&template);
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ROLE_LABEL.to_string(), arm.as_str().to_string());
    Deployment {
        metadata: ObjectMeta {
            name: Some(arm.name(&target.name_any())),
            namespace: target.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (ROLE_LABEL.to_string(), arm.as_str().to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                TEMPLATE_HASH_ANNOTATION.to_string(),
                hash,
            )])),
            owner_references: Some(vec![owner_reference(target)]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas.min(i32::MAX as u32) as i32),
            selector,
            template,
            strategy: spec.strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            // Canary and baseline are throw-away; no rollback history needed.
            revision_history_limit: Some(1),
            paused: None,
        }),
        status: None,
    }
}

/// Creates or scales the canary or baseline of `target` by server-side apply
/// (a different template replaces its pods). Refuses to take over a
/// same-named Deployment that the target does not own.
pub async fn ensure_arm(
    client: &Client,
    target: &Deployment,
    arm: Arm,
    template: &PodTemplateSpec,
    replicas: u32,
) -> Result<Deployment> {
    let ns = target.metadata.namespace.clone().unwrap_or_default();
    let name = arm.name(&target.name_any());
    let full = format!("{ns}/{name}");
    let wrap = |source: kube::Error| match arm {
        Arm::Canary => Error::ApplyCanary {
            name: full.clone(),
            source: Box::new(source),
        },
        Arm::Baseline => Error::ApplyBaseline {
            name: full.clone(),
            source: Box::new(source),
        },
    };
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let uid = target.metadata.uid.clone().unwrap_or_default();
    let desired = arm_deployment(target, arm, template, replicas);
    let check = |existing: &Deployment| {
        if owned_by(&existing.metadata, &uid) {
            Ok(())
        } else {
            Err(Error::ForeignObject {
                kind: "Deployment",
                name: full.clone(),
            })
        }
    };
    k8s::apply_preconditioned(&api, &full, &desired, check, wrap).await
}

/// Deletes the canary or baseline of target `deployment` (404 counts as
/// success). Only a Deployment carrying canaryd's role label is deleted.
pub async fn delete_arm(client: &Client, ns: &str, deployment: &str, arm: Arm) -> Result<()> {
    let name = arm.name(deployment);
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let err = |source: kube::Error| Error::DeleteObject {
        kind: "Deployment",
        name: format!("{ns}/{name}"),
        source: Box::new(source),
    };
    let Some(existing) = api.get_opt(&name).await.map_err(err)? else {
        return Ok(());
    };
    let ours = existing
        .labels()
        .get(ROLE_LABEL)
        .is_some_and(|r| r == arm.as_str());
    if !ours {
        return Ok(());
    }
    let dp = DeleteParams::background().preconditions(Preconditions {
        uid: existing.metadata.uid.clone(),
        resource_version: None,
    });
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) => match ApiFailure::of(&e) {
            // Gone already, or replaced by a new object of that name (uid precondition).
            ApiFailure::NotFound | ApiFailure::Conflict => Ok(()),
            _ => Err(err(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "generation": 3},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            },
            "status": {"observedGeneration": 3, "replicas": 4}
        }))
        .unwrap()
    }

    fn replica_set(image: &str, hash: &str, available: i32, revision: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("web-{hash}"),
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-1"}]
            },
            "spec": {
                "replicas": available,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            },
            "status": {"replicas": available, "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn hash_ignores_pod_template_hash_and_role_labels() {
        let d = deployment("v1");
        let rs = replica_set("v1", "abc", 4, "1");
        let from_rs = rs_template(&rs).unwrap();
        assert_eq!(desired_hash(&d), template_hash(&from_rs));
        let canary = arm_deployment(&d, Arm::Canary, &from_rs, 1);
        let canary_template = canary.spec.unwrap().template;
        assert_eq!(template_hash(&canary_template), desired_hash(&d));
        assert_ne!(desired_hash(&d), desired_hash(&deployment("v2")));
        assert_eq!(desired_hash(&d).len(), 12);
    }

    #[test]
    fn paused_new_template_is_observed_against_the_stable_replicaset() {
        let d = deployment("v2");
        let sets = [replica_set("v1", "abc", 4, "1")];
        let o = assemble(d, &sets, None, None, None);
        let t = &o.target;
        assert_ne!(t.stable_hash, t.desired_hash);
        assert_eq!(
            t.stable,
            PodCounts {
                ready: 4,
                desired: 4
            }
        );
        assert_eq!(t.replicas, 4);
        assert!(t.canary.is_gone() && t.baseline.is_gone());
        assert!(!o.rolled_out);
        assert!(o.templates.contains_key(&t.stable_hash));
    }

    #[test]
    fn stable_is_the_replicaset_with_most_available_pods() {
        let d = deployment("v2");
        let sets = [
            replica_set("v1", "abc", 1, "1"),
            replica_set("v2", "def", 3, "2"),
        ];
        let o = assemble(d.clone(), &sets, None, None, None);
        assert_eq!(o.target.stable_hash, o.target.desired_hash);
        assert_eq!(o.target.stable.ready, 3);
        assert!(!o.rolled_out, "3 of 4 pods is not rolled out");
        let sets = [
            replica_set("v1", "abc", 0, "1"),
            replica_set("v2", "def", 4, "2"),
        ];
        assert!(assemble(d, &sets, None, None, None).rolled_out);
    }

    #[test]
    fn surplus_pods_hold_back_the_stable_count() {
        let mut d = deployment("v1");
        d.status.as_mut().unwrap().replicas = Some(5);
        let sets = [replica_set("v1", "abc", 4, "1")];
        let o = assemble(d, &sets, None, None, None);
        assert_eq!(o.target.stable.ready, 3);
        assert!(!o.rolled_out);
    }

    #[test]
    fn arm_counts_only_current_pods() {
        let d = deployment("v2");
        let mut canary = arm_deployment(&d, Arm::Canary, &d.spec.clone().unwrap().template, 2);
        canary.metadata.generation = Some(2);
        canary.status = Some(
            serde_json::from_value(
                json!({"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}),
            )
            .unwrap(),
        );
        let o = assemble(d.clone(), &[], Some(&canary), None, None);
        assert_eq!(
            o.target.canary,
            PodCounts {
                ready: 0,
                desired: 2
            }
        );
        assert_eq!(o.target.canary_hash, desired_hash(&d));
        canary.status.as_mut().unwrap().observed_generation = Some(2);
        canary.status.as_mut().unwrap().updated_replicas = Some(1);
        let o = assemble(d, &[], Some(&canary), None, None);
        assert_eq!(
            o.target.canary,
            PodCounts {
                ready: 1,
                desired: 2
            }
        );
    }

    #[test]
    fn arm_selects_target_pods_plus_role_and_is_owned() {
        let d = deployment("v2");
        let a = arm_deployment(&d, Arm::Baseline, &d.spec.clone().unwrap().template, 3);
        assert_eq!(a.metadata.name.as_deref(), Some("web-baseline"));
        let spec = a.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        assert_eq!(sel.get("app").map(String::as_str), Some("web"));
        assert_eq!(sel.get(ROLE_LABEL).map(String::as_str), Some("baseline"));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels.get(ROLE_LABEL).map(String::as_str), Some("baseline"));
        let owner = &a.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
        assert_eq!(spec.replicas, Some(3));
    }

    #[test]
    fn restore_leaves_a_newer_template_alone() {
        let mut d = deployment("v2");
        let stable = rs_template(&replica_set("v1", "abc", 4, "1")).unwrap();
        let v2 = desired_hash(&d);
        assert!(!restore_template(&mut d, &stable, "somethingelse"));
        assert!(restore_template(&mut d, &stable, &v2));
        assert_eq!(desired_hash(&d), template_hash(&stable));
    }

    #[test]
    fn versions_come_from_the_label() {
        let label = |t: &mut PodTemplateSpec, version: &str| {
            let labels = t.metadata.as_mut().unwrap().labels.as_mut().unwrap();
            labels.insert("version".into(), version.into());
        };
        let mut d = deployment("v2");
        label(&mut d.spec.as_mut().unwrap().template, "v2");
        let mut rs = replica_set("v1", "abc", 4, "1");
        label(rs.spec.as_mut().unwrap().template.as_mut().unwrap(), "v1");
        let o = assemble(d, &[rs], None, None, Some("version"));
        assert_eq!(o.target.desired_version.as_deref(), Some("v2"));
        assert_eq!(o.target.stable_version.as_deref(), Some("v1"));
    }
}
