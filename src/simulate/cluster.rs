//! A tiny simulated cluster: the managed Deployment, the canary and baseline
//! Deployments, the router weight and the blue-green selector. It carries out
//! the engine's actions and reports what the engine would observe.

use rand::Rng;

use crate::rollout::{Action, PodCounts, Target};

/// Fastest a new pod becomes ready, in seconds.
pub const POD_READY_MIN_SECS: u64 = 5;
/// Slowest a new pod becomes ready, in seconds.
pub const POD_READY_MAX_SECS: u64 = 15;
/// Seconds one rolling-update batch of the managed Deployment takes.
pub const ROLLING_BATCH_SECS: u64 = 10;
/// Share of the Deployment replaced per rolling-update batch (maxSurge 25%).
const ROLLING_BATCH_SHARE: f64 = 0.25;

/// Template hash of the stable release in simulations.
pub const STABLE_HASH: &str = "5f8b3a0c9d";
/// Version label value of the stable release.
pub const STABLE_VERSION: &str = "v1";
/// Template hash of the new release in simulations.
pub const NEW_HASH: &str = "7c9d2f1e4b";
/// Version label value of the new release.
pub const NEW_VERSION: &str = "v2";

/// One Deployment's pods: the template they run and when each is ready.
#[derive(Debug, Clone, Default)]
pub struct Pods {
    /// Template hash (empty when the Deployment does not exist).
    pub hash: String,
    ready_at: Vec<u64>,
}

impl Pods {
    fn new(hash: &str, count: u32, ready_at: u64) -> Self {
        Pods {
            hash: hash.to_owned(),
            ready_at: vec![ready_at; count as usize],
        }
    }

    /// Pods ready at `now`.
    pub fn ready(&self, now: u64) -> u32 {
        self.ready_at.iter().filter(|&&t| t <= now).count() as u32
    }

    fn counts(&self, now: u64) -> PodCounts {
        PodCounts {
            ready: self.ready(now),
            desired: self.ready_at.len() as u32,
        }
    }

    /// Creates, scales or replaces the pods; new pods start after a random delay.
    fn ensure<R: Rng>(&mut self, hash: &str, replicas: u32, now: u64, rng: &mut R) {
        if self.hash != hash {
            self.hash = hash.to_owned();
            self.ready_at.clear();
        }
        self.ready_at.truncate(replicas as usize);
        while self.ready_at.len() < replicas as usize {
            let delay = rng.random_range(POD_READY_MIN_SECS..=POD_READY_MAX_SECS);
            self.ready_at.push(now + delay);
        }
    }

    fn delete(&mut self) {
        self.hash.clear();
        self.ready_at.clear();
    }
}

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The Deployment's `spec.replicas`.
    pub replicas: u32,
    generation: i64,
    /// The Deployment's `spec.template` hash.
    pub template: String,
    /// The managed Deployment's pods (all of one template between rollouts).
    pub stable: Pods,
    /// A rolling update in progress: target hash and when it completes.
    rolling: Option<(String, u64)>,
    /// The canary Deployment.
    pub canary: Pods,
    /// The baseline Deployment.
    pub baseline: Pods,
    /// The router's canary weight in percent.
    pub weight: u8,
    /// Blue-green: the Service whose selector carries production traffic.
    active_service: String,
    /// Version the blue-green active Service selects.
    pub active_version: String,
}

/// The version label value of a simulated template.
pub fn version_of(hash: &str) -> &'static str {
    if hash == NEW_HASH {
        NEW_VERSION
    } else {
        STABLE_VERSION
    }
}

impl Cluster {
    /// A Deployment of `replicas` ready pods of the stable release;
    /// `active_service` is the blue-green Service (empty for canaries).
    pub fn new(replicas: u32, active_service: &str) -> Self {
        Cluster {
            replicas,
            generation: 1,
            template: STABLE_HASH.to_owned(),
            stable: Pods::new(STABLE_HASH, replicas, 0),
            rolling: None,
            canary: Pods::default(),
            baseline: Pods::default(),
            weight: 0,
            active_service: active_service.to_owned(),
            active_version: STABLE_VERSION.to_owned(),
        }
    }

    /// Someone changes the Deployment's pod template (e.g. `kubectl set image`).
    pub fn set_template(&mut self, hash: &str) {
        self.template = hash.to_owned();
        self.generation += 1;
    }

    /// Finishes a rolling update whose time has come.
    pub fn advance(&mut self, now: u64) {
        if let Some((hash, done_at)) = &self.rolling {
            if now >= *done_at {
                self.stable = Pods::new(hash, self.replicas, *done_at);
                self.rolling = None;
            }
        }
    }

    /// What the engine observes.
    pub fn target(&self, now: u64) -> Target {
        Target {
            generation: self.generation,
            stable_hash: self.stable.hash.clone(),
            desired_hash: self.template.clone(),
            replicas: self.replicas,
            stable_version: Some(version_of(&self.stable.hash).to_owned()),
            desired_version: Some(version_of(&self.template).to_owned()),
            canary_hash: self.canary.hash.clone(),
            canary: self.canary.counts(now),
            baseline: self.baseline.counts(now),
            stable: self.stable.counts(now),
        }
    }

    /// Carries out one engine action.
    pub fn apply<R: Rng>(&mut self, action: &Action, now: u64, rng: &mut R) {
        match action {
            Action::EnsureCanary {
                template_hash,
                replicas,
            } => self.canary.ensure(template_hash, *replicas, now, rng),
            Action::EnsureBaseline {
                template_hash,
                replicas,
            } => self.baseline.ensure(template_hash, *replicas, now, rng),
            Action::DeleteCanary => self.canary.delete(),
            Action::DeleteBaseline => self.baseline.delete(),
            Action::SetWeight { percent } => self.weight = *percent,
            Action::SwitchSelector {
                service,
                to_version,
            } => {
                // The preview Service carries no production traffic.
                if *service == self.active_service {
                    self.active_version = to_version.clone();
                }
            }
            Action::Promote { template_hash } => self.roll_to(template_hash, now),
            Action::RestoreStable {
                template_hash,
                replacing,
            } => {
                if self.template == *replacing {
                    self.template = template_hash.clone();
                    self.generation += 1;
                }
                self.roll_to(template_hash, now);
            }
            Action::MarkFailedRevision { .. }
            | Action::ClearApproval
            | Action::ClearAbort
            | Action::Event { .. } => {}
        }
    }

    /// Starts a rolling update of the managed Deployment (or cancels one).
    fn roll_to(&mut self, hash: &str, now: u64) {
        if self.stable.hash == hash {
            self.rolling = None;
            return;
        }
        let per_batch = (f64::from(self.replicas) * ROLLING_BATCH_SHARE)
            .ceil()
            .max(1.0);
        let batches = (f64::from(self.replicas) / per_batch).ceil() as u64;
        self.rolling = Some((hash.to_owned(), now + batches.max(1) * ROLLING_BATCH_SECS));
    }
}
