//! Leader election with a `coordination.k8s.io/v1` Lease: create it if
//! absent, renew it while holding it, take it over once it expired, release it
//! on shutdown. Only the holder reconciles.
//!
//! Expiry is judged like client-go does: by how long the Lease record has not
//! changed on *this* instance's clock (not by the holder's `renewTime`), so
//! clock skew between instances does not matter.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::Api;
use kube::Client;
use tokio::sync::watch;

use crate::k8s::{post_params, ApiFailure};
use crate::{Error, Result};

/// Default name of the Lease (`--lease-name`); the alert record is named after it.
pub const DEFAULT_LEASE_NAME: &str = "canaryd";
/// Default namespace of the Lease and the alert record (`--lease-namespace`).
pub const DEFAULT_LEASE_NAMESPACE: &str = "canaryd-system";

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops acting (well before
/// others may take over at [`LEASE_DURATION`]).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between acquire or renew attempts.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Which Lease, and who this instance is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's holder identity (unique per instance).
    pub identity: String,
    /// Lease duration written into the Lease.
    pub duration: Duration,
    /// Pause between attempts.
    pub retry: Duration,
    /// Stop acting after failing to renew for this long.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// A config with the default timings.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration: LEASE_DURATION,
            retry: RETRY_PERIOD,
            renew_deadline: RENEW_DEADLINE,
        }
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Leadership as last determined, published on a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Leadership {
    /// The first attempt has not finished yet.
    #[default]
    Unknown,
    /// This instance holds the Lease and may act until `until`: the start of
    /// its last successful renewal plus the renew deadline. A leader whose
    /// renewals stall (a hung API server, a stopped process) stops acting
    /// then, on its own clock, before any other instance may take over at
    /// the lease duration.
    Leader {
        /// When acting stops unless a renewal succeeds first.
        until: Instant,
    },
    /// Another instance holds the Lease (or this one stopped acting).
    Follower,
}

impl Leadership {
    /// Whether this instance may act now.
    pub fn is_leader(self) -> bool {
        matches!(self, Leadership::Leader { until } if Instant::now() < until)
    }

    /// Whether this instance last won the Lease (whatever the deadline says).
    fn holds(self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }

    /// Whether the first attempt has finished (either answer).
    pub fn is_known(self) -> bool {
        self != Leadership::Unknown
    }
}

/// Acquires and renews one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease record last seen (holder, renewTime) and when it changed.
    observed: Option<(String, String, Instant)>,
}

fn spec_key(spec: &LeaseSpec) -> (String, String) {
    (
        spec.holder_identity.clone().unwrap_or_default(),
        spec.renew_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    )
}

impl Elector {
    /// An elector for `config`'s Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Elector {
            api,
            config,
            observed: None,
        }
    }

    /// The config this elector runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn error(&self, e: kube::Error) -> Error {
        let name = self.config.full_name();
        match ApiFailure::of(&e) {
            ApiFailure::Forbidden => Error::LeaseForbidden {
                name,
                source: Box::new(e),
            },
            _ => Error::Lease {
                name,
                source: Box::new(e),
            },
        }
    }

    /// The Lease, if it exists.
    async fn get(&self) -> Result<Option<Lease>> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))
    }

    /// Writes `lease` back; its resourceVersion is the precondition.
    async fn replace(&self, lease: &Lease) -> kube::Result<Lease> {
        self.api
            .replace(&self.config.name, &post_params(), lease)
            .await
    }

    fn duration_secs(&self) -> i32 {
        self.config.duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    /// One attempt; true when this instance holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let id = self.config.identity.clone();
        let Some(mut lease) = self.get().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(id),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&post_params(), &lease).await {
                Ok(_) => Ok(true),
                // Another instance created it first.
                Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let (holder, renewed) = spec_key(&spec);
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| *h != holder || *r != renewed);
        if changed {
            self.observed = Some((holder.clone(), renewed, Instant::now()));
        }
        let held = holder == id;
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.config.duration);
        let expired = holder.is_empty()
            || self
                .observed
                .as_ref()
                .is_some_and(|(_, _, at)| at.elapsed() > duration);
        if !held && !expired {
            return Ok(false);
        }
        let mut next = spec.clone();
        next.holder_identity = Some(id);
        next.lease_duration_seconds = Some(self.duration_secs());
        next.renew_time = Some(now.clone());
        if !held {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        // The resourceVersion read above is the precondition: two instances
        // taking over at once cannot both win.
        match self.replace(&lease).await {
            Ok(written) => {
                let key = spec_key(&written.spec.unwrap_or_default());
                self.observed = Some((key.0, key.1, Instant::now()));
                Ok(true)
            }
            Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up (if held) so another instance takes over at once.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.get().await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self.replace(&lease).await {
            Ok(_) => Ok(()),
            // Someone else took it in the meantime: nothing left to release.
            Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Runs the election until `shutdown` turns true, publishing leadership on
/// `leader`; then releases the Lease if held. Returns an error only when the
/// Lease cannot be used at all (RBAC forbids it): the process should end.
pub async fn run(
    mut elector: Elector,
    leader: watch::Sender<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let config = elector.config().clone();
    let mut last_renewal: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let was_leader = leader.borrow().holds();
        let started = Instant::now();
        // A hung request counts as a failed attempt once the deadline passes.
        let attempt =
            tokio::time::timeout(config.renew_deadline, elector.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(true)) => {
                last_renewal = Some(started);
                if !was_leader {
                    tracing::info!(lease = %config.full_name(), identity = %config.identity, "Acquired leadership.");
                }
                let until = started + config.renew_deadline;
                leader.send_replace(Leadership::Leader { until });
            }
            Ok(Ok(false)) => {
                if was_leader {
                    tracing::warn!(lease = %config.full_name(), identity = %config.identity, "Lost leadership.");
                }
                last_renewal = None;
                leader.send_replace(Leadership::Follower);
            }
            // RBAC refuses the Lease: retrying cannot fix it.
            Ok(Err(e @ Error::LeaseForbidden { .. })) => {
                leader.send_replace(Leadership::Follower);
                return Err(e);
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", config.renew_deadline),
                };
                let overdue = last_renewal.is_none_or(|t| t.elapsed() > config.renew_deadline);
                tracing::warn!(lease = %config.full_name(), error = %error, overdue, "Lease attempt failed.");
                if overdue {
                    // Acting already stopped at the deadline (see `Leadership::Leader`).
                    if was_leader {
                        tracing::warn!(lease = %config.full_name(), "Renew deadline passed; stopping.");
                    }
                    leader.send_replace(Leadership::Follower);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry) => {}
            _ = shutdown.changed() => {}
        }
    }
    let held = leader.borrow().holds();
    leader.send_replace(Leadership::Follower);
    if held {
        elector.release().await?;
        tracing::info!(lease = %config.full_name(), identity = %config.identity, "Released leadership.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_acting_at_its_deadline_without_being_told() {
        let now = Instant::now();
        let acting = Leadership::Leader {
            until: now + Duration::from_secs(60),
        };
        assert!(acting.is_leader() && acting.is_known());
        // Renewals stalled (hung API server, stopped process): past the
        // deadline it no longer acts, though nothing else changed.
        let stalled = Leadership::Leader {
            until: now - Duration::from_millis(1),
        };
        assert!(!stalled.is_leader());
        assert!(stalled.holds(), "it still believes it holds the Lease");
        assert!(!Leadership::Follower.is_leader());
        assert!(!Leadership::Unknown.is_known());
    }

    #[test]
    fn the_deadlines_order_as_client_go_s() {
        // A leader stops acting before another instance may take over.
        assert!(RENEW_DEADLINE < LEASE_DURATION);
        assert!(RETRY_PERIOD < RENEW_DEADLINE);
        assert_eq!(
            (LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
    }
}
