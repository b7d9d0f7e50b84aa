//! Outdated Whisperers: a pod carries the marker of what was injected (profile and hash); after
//! a profile changes, the plan the engine makes today for the same pod has another hash. The
//! pod is judged as the webhook saw it at CREATE, without what injection added.

use k8s_openapi::api::core::v1::{HostAlias, PodSecurityContext};

use super::plan::marker_profile;
use super::pod_facts::{ContainerFacts, HostNamespaces, PodFacts};
use super::{decide_sidecar, Decision, Settings, ANNOTATION_INJECTED};
use crate::config::Profile;

/// The pod minus our sidecar, its volumes and the marker.
struct BeforeInjection<'a, P> {
    pod: &'a P,
    profile: &'a Profile,
}

impl<P: PodFacts> PodFacts for BeforeInjection<'_, P> {
    fn namespace(&self) -> Option<&str> {
        self.pod.namespace()
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        (key != ANNOTATION_INJECTED)
            .then(|| self.pod.annotation(key))
            .flatten()
    }
    fn terminating(&self) -> bool {
        self.pod.terminating()
    }
    fn phase(&self) -> Option<&str> {
        self.pod.phase()
    }
    fn has_spec(&self) -> bool {
        self.pod.has_spec()
    }
    fn containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        let ours = self.profile.container_name();
        self.pod.containers().filter(move |c| c.name != ours)
    }
    fn init_containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        let ours = self.profile.container_name();
        self.pod.init_containers().filter(move |c| c.name != ours)
    }
    fn ephemeral_names(&self) -> impl Iterator<Item = &str> {
        self.pod.ephemeral_names()
    }
    fn volume_names(&self) -> impl Iterator<Item = &str> {
        let added = &self.profile.volumes;
        self.pod
            .volume_names()
            .filter(move |n| !added.iter().any(|v| v.name == *n))
    }
    fn host_namespaces(&self) -> HostNamespaces {
        self.pod.host_namespaces()
    }
    fn owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pod.owners()
    }
    fn host_aliases(&self) -> &[HostAlias] {
        self.pod.host_aliases()
    }
    fn security_context(&self) -> Option<&PodSecurityContext> {
        self.pod.security_context()
    }

    fn memory_bounds(&self) -> Option<super::MemoryBounds> {
        self.pod.memory_bounds()
    }
}

/// How an injected pod compares with what its profile injects today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Not injected by the webhook (no marker): nothing to compare.
    NotInjected,
    Current,
    /// Injected `old`; today's plan marks `new`, or `None` when the config would not inject
    /// the pod at all any more (profile removed, namespace denied ...).
    Outdated {
        old: String,
        new: Option<String>,
    },
}

pub fn freshness(pod: &impl PodFacts, namespace: &str, settings: &Settings) -> Freshness {
    let Some(old) = pod.annotation(ANNOTATION_INJECTED) else {
        return Freshness::NotInjected;
    };
    let Some(profile) = marker_profile(old).and_then(|n| settings.config.profiles.get(n)) else {
        return Freshness::Outdated {
            old: old.to_string(),
            new: None,
        };
    };
    let before = BeforeInjection { pod, profile };
    match decide_sidecar(&before, namespace, None, settings) {
        Decision::Inject(plan) if plan.marker == old => Freshness::Current,
        Decision::Inject(plan) => Freshness::Outdated {
            old: old.to_string(),
            new: Some(plan.marker),
        },
        Decision::Skip { .. } => Freshness::Outdated {
            old: old.to_string(),
            new: None,
        },
    }
}
