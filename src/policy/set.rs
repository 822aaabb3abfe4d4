//! The policies in force, and the rule that a Deployment has at most one
//! policy: [`Claims`] decides it for `load_paths` and for the daemon's reload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Location;

use super::validate::located;
use super::{Policy, PolicyError};

/// `(namespace, deployment)` a policy manages.
pub type Target = (String, String);

/// The valid policies in force, keyed by the file each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    pub(crate) by_file: BTreeMap<PathBuf, Arc<Policy>>,
}

impl PolicySet {
    /// A set of already validated policies, keyed by their `source`. A second
    /// policy for the same file or Deployment is dropped (first one wins).
    pub fn from_policies(policies: impl IntoIterator<Item = Policy>) -> Self {
        let mut set = PolicySet::default();
        let mut targets = BTreeSet::new();
        for p in policies {
            if !set.by_file.contains_key(&p.source) && targets.insert(target_of(&p)) {
                set.by_file.insert(p.source.clone(), Arc::new(p));
            }
        }
        set
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    /// Whether no policy is in force.
    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }

    /// The policies, in file name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_file.values()
    }

    /// The policy loaded from `file`.
    pub fn in_file(&self, file: &Path) -> Option<&Arc<Policy>> {
        self.by_file.get(file)
    }

    /// The policy managing `namespace/deployment`.
    pub fn get(&self, namespace: &str, deployment: &str) -> Option<&Arc<Policy>> {
        self.by_file
            .values()
            .find(|p| p.namespace == namespace && p.deployment == deployment)
    }

    /// The order in which the files of `proposed` claim their Deployments
    /// when they replace this set: the files already holding their
    /// Deployment here first, so a new file cannot take over a rollout in
    /// progress, then the others by path.
    pub(crate) fn claim_order<'a>(
        &self,
        proposed: &'a BTreeMap<PathBuf, Arc<Policy>>,
    ) -> Vec<(&'a PathBuf, &'a Arc<Policy>)> {
        let (holding, others): (Vec<_>, Vec<_>) = proposed.iter().partition(|(file, p)| {
            self.by_file
                .get(*file)
                .is_some_and(|held| target_of(held) == target_of(p))
        });
        holding.into_iter().chain(others).collect()
    }

    /// The policies keyed by the Deployment they manage.
    pub fn by_target(&self) -> BTreeMap<Target, Arc<Policy>> {
        self.by_file
            .values()
            .map(|p| (target_of(p), p.clone()))
            .collect()
    }
}

/// The one-policy-per-Deployment rule. Claims are granted in the order they
/// are made, so the caller's order decides which file keeps a Deployment:
/// the first by path order (on a reload, after the files already holding
/// theirs, see [`PolicySet::claim_order`]). A later claim is refused with an
/// error at its `deployment` value naming the file that holds it.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    holders: BTreeMap<Target, PathBuf>,
}

impl Claims {
    /// Grants `file`'s claim on `policy`'s Deployment, or refuses it with the
    /// error at `deployment_at` when another file holds it.
    pub(crate) fn claim(
        &mut self,
        file: &Path,
        policy: &Policy,
        deployment_at: Location,
    ) -> Result<(), PolicyError> {
        let target = target_of(policy);
        match self.holders.get(&target) {
            None => {
                self.holders.insert(target, file.to_path_buf());
                Ok(())
            }
            Some(holder) => Err(located(
                file,
                deployment_at,
                "deployment",
                format!(
                    "Deployment {}/{} already has a policy in {}; expected one policy per Deployment",
                    target.0,
                    target.1,
                    holder.display()
                ),
            )),
        }
    }
}

pub(crate) fn target_of(p: &Policy) -> Target {
    (p.namespace.clone(), p.deployment.clone())
}
