//! The policies in force: at most one per Deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Policy;

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

    /// The policies keyed by the Deployment they manage.
    pub fn by_target(&self) -> BTreeMap<Target, Arc<Policy>> {
        self.by_file
            .values()
            .map(|p| (target_of(p), p.clone()))
            .collect()
    }
}

pub(crate) fn target_of(p: &Policy) -> Target {
    (p.namespace.clone(), p.deployment.clone())
}
