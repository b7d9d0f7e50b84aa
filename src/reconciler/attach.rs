//! Adding one ephemeral container to one pod: a strategic-merge patch keyed by container
//! name on `pods/{name}/ephemeralcontainers` (no read-modify-write, no 409 retries, the same
//! body on every retry), a check that the container really is in the answer (the subresource
//! silently drops everything but `spec.ephemeralContainers`), and a typed reading of refusals
//! (Pod Security Admission checks the whole pod on every add).

use std::sync::Arc;

use k8s_openapi::api::core::v1::EphemeralContainer;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Semaphore;

use super::metrics::{PatchResult, ReconcilerMetrics};
use super::podview::PodView;
use super::ratelimit::TokenBucket;

pub const FIELD_MANAGER: &str = "whisperer-injector";

/// What the API server made of one patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
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

impl Outcome {
    pub fn result(&self) -> PatchResult {
        match self {
            Outcome::Attached => PatchResult::attached,
            Outcome::Refused {
                reason: REASON_POD_SECURITY,
                ..
            } => PatchResult::pod_security,
            Outcome::Refused {
                reason: REASON_INVALID,
                ..
            } => PatchResult::invalid,
            Outcome::Refused { .. } => PatchResult::refused,
            Outcome::Dropped => PatchResult::dropped,
            Outcome::Gone => PatchResult::gone,
            Outcome::Failed { .. } => PatchResult::error,
        }
    }
}

pub const REASON_POD_SECURITY: &str = "PodSecurity";
pub const REASON_ADMISSION: &str = "AdmissionRefused";
pub const REASON_INVALID: &str = "Invalid";

/// Reads an API error answer.
pub fn classify(status: &kube::core::Status) -> Outcome {
    let message = status.message.clone();
    match status.code {
        404 => Outcome::Gone,
        400 | 403 | 422 if message.contains("PodSecurity") => Outcome::Refused {
            reason: REASON_POD_SECURITY,
            message,
        },
        403 => Outcome::Refused {
            reason: REASON_ADMISSION,
            message,
        },
        400 | 422 => Outcome::Refused {
            reason: REASON_INVALID,
            message,
        },
        code => Outcome::Failed {
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
    ) -> Outcome {
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
                Ok(answer) if answer.has_ephemeral(&container.name) => Outcome::Attached,
                Ok(_) => Outcome::Dropped,
                Err(kube::Error::Api(status)) => classify(&status),
                Err(e) => Outcome::Failed {
                    message: e.to_string(),
                },
            }
        };
        self.metrics.patch(outcome.result(), dry_run);
        match &outcome {
            Outcome::Attached => tracing::debug!(
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
            Outcome::Refused { reason, message } => {
                assert_eq!(reason, REASON_POD_SECURITY);
                assert!(message.contains("baseline") && message.contains("NET_ADMIN"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&status(403, "Forbidden", "denied by webhook")),
            Outcome::Refused {
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
            Outcome::Refused {
                reason: REASON_INVALID,
                ..
            }
        ));
        assert_eq!(classify(&status(404, "NotFound", "gone")), Outcome::Gone);
        assert!(matches!(
            classify(&status(500, "InternalError", "etcd")),
            Outcome::Failed { .. }
        ));
        assert_eq!(Outcome::Dropped.result(), PatchResult::dropped);
    }
}
