//! The patcher: adds one ephemeral container to one pod, under the shared rate limit.
//!
//! The patch: a strategic-merge patch keyed by container
//! name on `pods/{name}/ephemeralcontainers` (no read-modify-write, no 409 retries, the same
//! body on every retry), a check that the container really is in the answer (the subresource
//! silently drops everything but `spec.ephemeralContainers`), and a typed reading of refusals
//! (Pod Security Admission checks the whole pod on every add).
//!
//! A 429 (API Priority and Fairness, or the API server's in-flight limit) never reaches
//! [`classify`] unless it persists: the client's retry layer (kube's default, on for every
//! `kube::Config`) waits out the answer's `Retry-After` and retries, while this request keeps
//! its slot, so throttling slows the patches down instead of multiplying them. Tested against
//! a real priority level in `tests/scale_kwok.rs`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::EphemeralContainer;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Semaphore;

use super::ratelimit::TokenBucket;
use crate::reconciler::metrics::{PatchResult, ReconcilerMetrics};
use crate::reconciler::watch::PodView;

pub const FIELD_MANAGER: &str = "whisperer-injector";

/// What the API server made of one patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchAnswer {
    /// The container is in the answer (for a dry run: would be).
    Attached,
    /// Refused by admission or validation; `reason` is `PodSecurity`, `AdmissionRefused` or
    /// `Invalid`, `message` the API server's words (naming the level and the capability for
    /// Pod Security).
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Accepted but the container is not in the answer.
    Dropped,
    /// The pod no longer exists.
    Gone,
    /// Anything else (transport, 5xx, conflict): retried with back-off.
    Failed { message: String },
}

impl PatchAnswer {
    pub fn result(&self) -> PatchResult {
        match self {
            PatchAnswer::Attached => PatchResult::attached,
            PatchAnswer::Refused {
                reason: REASON_POD_SECURITY,
                ..
            } => PatchResult::pod_security,
            PatchAnswer::Refused {
                reason: REASON_INVALID,
                ..
            } => PatchResult::invalid,
            PatchAnswer::Refused { .. } => PatchResult::refused,
            PatchAnswer::Dropped => PatchResult::dropped,
            PatchAnswer::Gone => PatchResult::gone,
            PatchAnswer::Failed { .. } => PatchResult::error,
        }
    }
}

pub const REASON_POD_SECURITY: &str = "PodSecurity";
pub const REASON_ADMISSION: &str = "AdmissionRefused";
pub const REASON_INVALID: &str = "Invalid";

/// Reads an API error answer.
pub fn classify(status: &kube::core::Status) -> PatchAnswer {
    let message = status.message.clone();
    match status.code {
        404 => PatchAnswer::Gone,
        400 | 403 | 422 if message.contains("PodSecurity") => PatchAnswer::Refused {
            reason: REASON_POD_SECURITY,
            message,
        },
        403 => PatchAnswer::Refused {
            reason: REASON_ADMISSION,
            message,
        },
        400 | 422 => PatchAnswer::Refused {
            reason: REASON_INVALID,
            message,
        },
        code => PatchAnswer::Failed {
            message: format!("{code} {}: {message}", status.reason),
        },
    }
}

/// Sends patches under the shared rate limit and concurrency bound.
#[derive(Clone)]
pub struct Patcher {
    client: Client,
    limiter: Arc<TokenBucket>,
    slots: Arc<Semaphore>,
    metrics: ReconcilerMetrics,
}

impl Patcher {
    pub fn new(
        client: Client,
        limiter: Arc<TokenBucket>,
        slots: Arc<Semaphore>,
        metrics: ReconcilerMetrics,
    ) -> Patcher {
        Patcher {
            client,
            limiter,
            slots,
            metrics,
        }
    }

    /// Adds `container` to pod `namespace/pod`; with `dry_run`, only asks whether the API
    /// server (admission included) would accept it.
    pub async fn add(
        &self,
        namespace: &str,
        pod: &str,
        container: &EphemeralContainer,
        dry_run: bool,
    ) -> PatchAnswer {
        let outcome = {
            // A closed semaphore only happens at shutdown; proceed without a slot then.
            let _slot = self.slots.acquire().await.ok();
            self.limiter.acquire().await;
            let api: Api<PodView> = Api::namespaced(self.client.clone(), namespace);
            let params = PatchParams {
                dry_run,
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            let body = json!({ "spec": { "ephemeralContainers": [container] } });
            match api
                .patch_subresource(
                    "ephemeralcontainers",
                    pod,
                    &params,
                    &Patch::Strategic(&body),
                )
                .await
            {
                Ok(answer) if answer.has_ephemeral(&container.name) => PatchAnswer::Attached,
                Ok(_) => PatchAnswer::Dropped,
                Err(kube::Error::Api(status)) => classify(&status),
                Err(e) => PatchAnswer::Failed {
                    message: e.to_string(),
                },
            }
        };
        self.metrics.patch(outcome.result(), dry_run);
        match &outcome {
            PatchAnswer::Attached => tracing::debug!(
                namespace,
                pod,
                container = %container.name,
                dry_run,
                "ephemeral container accepted"
            ),
            other => tracing::info!(
                namespace,
                pod,
                container = %container.name,
                dry_run,
                outcome = ?other,
                "ephemeral container not added"
            ),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::core::Status {
        kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refusals_are_typed() {
        let psa = status(
            403,
            "Forbidden",
            "pods \"web\" is forbidden: violates PodSecurity \"baseline:latest\": non-default capabilities (container \"whisperer-a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
        );
        match classify(&psa) {
            PatchAnswer::Refused { reason, message } => {
                assert_eq!(reason, REASON_POD_SECURITY);
                assert!(message.contains("baseline") && message.contains("NET_ADMIN"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&status(403, "Forbidden", "denied by webhook")),
            PatchAnswer::Refused {
                reason: REASON_ADMISSION,
                ..
            }
        ));
        assert!(matches!(
            classify(&status(
                422,
                "Invalid",
                "spec.ephemeralContainers[0].resources: Forbidden"
            )),
            PatchAnswer::Refused {
                reason: REASON_INVALID,
                ..
            }
        ));
        assert_eq!(
            classify(&status(404, "NotFound", "gone")),
            PatchAnswer::Gone
        );
        assert!(matches!(
            classify(&status(500, "InternalError", "etcd")),
            PatchAnswer::Failed { .. }
        ));
        assert_eq!(PatchAnswer::Dropped.result(), PatchResult::dropped);
    }
}
