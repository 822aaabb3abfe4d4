//! The Kubernetes-facing shell: the managed Deployment and its canary and
//! baseline ([`target`]), traffic routing ([`router`]) and leader election
//! ([`lease`]), the cluster-wide alert record ([`alert_record`]) and the
//! client with its timeouts ([`client`]) and rate limit ([`rate_limit`]).
//! Everything here talks to the API server; the decisions come from the
//! pure [`crate::rollout`] engine.
//!
//! This module holds what every write shares: the field manager, the
//! classification of API failures, the one bounded retry on conflicts and
//! the preconditioned server-side apply.

pub mod alert_record;
pub mod client;
pub mod lease;
pub mod rate_limit;
pub mod rbac;
pub mod router;
pub mod target;

use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::{Error, Result};

/// Field manager of every canaryd write.
pub const FIELD_MANAGER: &str = "canaryd";
/// `app.kubernetes.io/managed-by` value on objects canaryd creates.
pub const MANAGED_BY: &str = "canaryd";
/// Attempts of a read-modify-write (and of a reconcile pass) before a
/// conflict is reported. Each attempt starts from a fresh read, so a few
/// suffice unless someone rewrites the object continuously.
pub const MAX_CONFLICT_RETRIES: usize = 5;

/// Why an API call failed, as far as canaryd treats failures differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFailure {
    /// HTTP 409: the object changed since it was read, or already exists.
    Conflict,
    /// HTTP 404: the object does not exist.
    NotFound,
    /// HTTP 403: RBAC refuses the call; retrying cannot fix it.
    Forbidden,
    /// Anything else (other statuses, transport errors).
    Other,
}

impl ApiFailure {
    /// Classifies a failed call by its HTTP status.
    pub fn of(error: &kube::Error) -> Self {
        let kube::Error::Api(status) = error else {
            return ApiFailure::Other;
        };
        match status.code {
            409 => ApiFailure::Conflict,
            404 => ApiFailure::NotFound,
            403 => ApiFailure::Forbidden,
            _ => ApiFailure::Other,
        }
    }
}

/// Create/replace options naming canaryd's field manager.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Patch options naming canaryd's field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Server-side apply options: canaryd's field manager, taking over conflicting fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The bounded retry of a read-modify-write: each attempt starts from a
/// fresh read and a conflict starts over, at most [`MAX_CONFLICT_RETRIES`]
/// times. (A loop rather than a closure-taking helper: the retried bodies
/// borrow their surroundings mutably, and must stay `Send`.)
///
/// ```text
/// let mut retry = ConflictRetry::new(&name);
/// loop {
///     retry.attempt()?;
///     match write(read().await?).await {
///         Err(e) if e.is_conflict() => continue,
///         other => return other,
///     }
/// }
/// ```
#[derive(Debug)]
pub struct ConflictRetry<'a> {
    name: &'a str,
    started: usize,
}

impl<'a> ConflictRetry<'a> {
    /// A retry of writes to `name` (`namespace/name`, for the error).
    pub fn new(name: &'a str) -> Self {
        ConflictRetry { name, started: 0 }
    }

    /// Starts the next attempt, or reports the conflict once all were used.
    pub fn attempt(&mut self) -> Result<()> {
        if self.started == MAX_CONFLICT_RETRIES {
            return Err(Error::Conflict {
                name: self.name.to_string(),
            });
        }
        self.started += 1;
        Ok(())
    }
}

/// Server-side applies `desired` (named `full` in errors) preconditioned on
/// the resourceVersion just read: a write by anyone in between (another
/// leader, another controller) makes it fail with 409 instead of being
/// overwritten, and it is redone from a fresh read, at most
/// [`MAX_CONFLICT_RETRIES`] times. `check` refuses an existing object that
/// is not canaryd's to change.
pub async fn apply_preconditioned<K>(
    api: &Api<K>,
    full: &str,
    desired: &K,
    check: impl Fn(&K) -> Result<()>,
    err: impl Fn(kube::Error) -> Error,
) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let mut retry = ConflictRetry::new(full);
    loop {
        retry.attempt()?;
        let mut desired = desired.clone();
        if let Some(existing) = api.get_opt(&name).await.map_err(&err)? {
            check(&existing)?;
            desired.meta_mut().resource_version = existing.meta().resource_version.clone();
        }
        match api
            .patch(&name, &apply_params(), &Patch::Apply(&desired))
            .await
        {
            Ok(applied) => return Ok(applied),
            Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => continue,
            Err(e) => return Err(err(e)),
        }
    }
}
