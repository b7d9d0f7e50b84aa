//! The one decision engine. PURE: no client, no socket, no clock.
//!
//! Both front-ends ask it the same question — should this pod get a Whisperer, and exactly
//! which one — and get back either a [`Plan`] or a named [`SkipReason`]. The webhook renders a
//! plan as a JSON patch, the reconciler as an `EphemeralContainer` (see `crate::render`).
//!
//! The engine reads pods through one trait, [`PodFacts`]: the webhook passes the `Pod` it
//! parsed from the request, the reconciler and the backstop the `PodInfo` of their cache. The
//! backstop asks [`decide_sidecar`], the webhook's question without the admission request.

mod admission;
mod attach;
pub mod ours;
pub mod overrides;
mod plan;
mod pod_facts;
pub mod pod_security;
pub mod policy;
pub mod reinvocation;
mod skip;
pub mod stale;
pub mod trace;

pub use admission::{
    decide_admission, decide_admission_planned, decide_admission_traced, decide_sidecar,
    decide_sidecar_traced, AdmissionSubject, Planned,
};
pub use attach::{decide_attach, ephemeral_container_name, AttachSubject};
pub use plan::{
    base_marker, base_sidecar_container, host_alias_changes, HostAliasChange, Placement, Plan,
    SidecarChoice,
};
pub use pod_facts::{ContainerFacts, HostNamespaces, MemoryBounds, PodFacts};
pub use skip::SkipReason;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, NamespaceRules};

/// Pod annotation that opts a pod in (`"true"`) or out (`"false"`).
pub const ANNOTATION_INJECT: &str = "whisperer.dev/inject";
/// Pod annotation choosing a profile by name.
pub const ANNOTATION_PROFILE: &str = "whisperer.dev/profile";
/// Marker written by injection: `profile=<name>,hash=<16 hex>`.
pub const ANNOTATION_INJECTED: &str = "whisperer.dev/injected";

/// Env vars every Whisperer gets.
pub const ENV_POD_NAME: &str = "WHISPERER_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "WHISPERER_POD_NAMESPACE";
pub const ENV_PROFILE: &str = "WHISPERER_PROFILE";
pub const ENV_DNS_SERVER: &str = "WHISPERER_DNS_SERVER";
pub const ENV_ATTACHMENT: &str = "WHISPERER_ATTACHMENT";
pub const ENV_DEADLINE: &str = "WHISPERER_DEADLINE";
/// The attachment's uid: a found ephemeral Whisperer counts only when it carries this.
pub const ENV_ATTACHMENT_UID: &str = "WHISPERER_ATTACHMENT_UID";
/// The profile's memory limit, for an attached agent to bound itself by (its container
/// cannot carry resources).
pub const ENV_MEMORY_LIMIT: &str = "WHISPERER_MEMORY_LIMIT";
/// The profile's `maxCaptureBytes`: the most capture bytes the agent keeps.
pub const ENV_MAX_CAPTURE_BYTES: &str = "WHISPERER_MAX_CAPTURE_BYTES";

/// Everything the engine needs besides the pod, prepared once per config load so the hot
/// path does no allocation for policy.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Arc<Config>,
    pub namespaces: NamespaceRules,
    /// Inject pods that carry no `whisperer.dev/inject` annotation (`"false"` still opts out).
    pub inject_by_default: bool,
    /// Address of the injector's DNS proxy, handed to Whisperers in [`ENV_DNS_SERVER`].
    pub dns_server: Option<String>,
    /// The API server's `major.minor`, read once at start; `None` (offline, no credentials)
    /// is taken to support native sidecars.
    pub server_version: Option<(u32, u32)>,
}

/// Native sidecars (`restartPolicy: Always` init containers) are on by default from 1.29;
/// an older API server drops the field and the pod's init never ends.
pub const NATIVE_SIDECARS_SINCE: (u32, u32) = (1, 29);

impl Settings {
    pub fn native_sidecars(&self) -> bool {
        self.server_version
            .is_none_or(|v| v >= NATIVE_SIDECARS_SINCE)
    }
}

impl Settings {
    pub fn new(config: Arc<Config>, own_namespace: &str) -> Settings {
        let namespaces = NamespaceRules::new(&config.namespaces, own_namespace);
        Settings {
            config,
            namespaces,
            inject_by_default: false,
            dns_server: None,
            server_version: None,
        }
    }
}

/// The settings every component reads, swapped whole when the config file changes (the
/// webhook, the reconciler and the DNS proxy hold the same one).
pub type SharedSettings = Arc<ArcSwap<Settings>>;

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Inject(Box<Plan>),
    Skip {
        reason: SkipReason,
        /// Said to the user (admission `warnings`, Attachment status) when the skip is a problem.
        detail: Option<String>,
    },
}

impl Decision {
    pub(crate) fn skip(reason: SkipReason) -> Decision {
        Decision::Skip {
            reason,
            detail: None,
        }
    }

    pub(crate) fn problem(reason: SkipReason, detail: String) -> Decision {
        Decision::Skip {
            reason,
            detail: Some(detail),
        }
    }
}

#[cfg(test)]
mod tests;
