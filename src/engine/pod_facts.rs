//! The pod as the engine reads it: one trait, two providers, no copies.
//!
//! The webhook hands the engine the `Pod` it parsed from the admission request (the impl
//! below); the reconciler and the backstop hand it the compact `PodInfo` of their pod cache
//! (`reconciler/watch/pod_info.rs`). Neither builds a pod for the other's sake: a fact the
//! engine needs is a method here, and both providers answer it from what they hold.

use k8s_openapi::api::core::v1::{HostAlias, Pod, PodSecurityContext};

/// A container's name and image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerFacts<'a> {
    pub name: &'a str,
    pub image: Option<&'a str>,
}

/// Host namespaces the pod shares with its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
}

impl HostNamespaces {
    /// The shared ones, as the pod spec names them, in spec order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.network, "hostNetwork"),
            (self.pid, "hostPID"),
            (self.ipc, "hostIPC"),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| name)
        .collect()
    }
}

/// The memory a pod's containers may use together, when every container has a limit (then
/// the pod's cgroup is bounded by their sum), and what they request (a request defaults to
/// the limit). In bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBounds {
    pub limit: u64,
    pub requested: u64,
}

impl MemoryBounds {
    /// Sums `(limit, request)` quantities per container; `None` when one has no limit (the
    /// pod is unbounded) or a value does not parse.
    pub fn sum<'a>(
        containers: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> Option<MemoryBounds> {
        // Quantities are bytes here; fractions of a byte do not matter.
        let bytes = |q: &str| super::overrides::quantity_value(q).map(|v| v.max(0.0) as u64);
        let mut b = MemoryBounds {
            limit: 0,
            requested: 0,
        };
        let mut any = false;
        for (limit, request) in containers {
            let limit = bytes(limit?)?;
            let request = request.map_or(Some(limit), bytes)?;
            b.limit = b.limit.saturating_add(limit);
            b.requested = b.requested.saturating_add(request);
            any = true;
        }
        any.then_some(b)
    }
}

/// What the engine may ask about a pod.
pub trait PodFacts {
    /// `metadata.namespace` (on CREATE it may be missing: the request names it).
    fn namespace(&self) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;
    /// `metadata.deletionTimestamp` is set.
    fn terminating(&self) -> bool;
    /// `status.phase`.
    fn phase(&self) -> Option<&str>;
    /// The object has a pod spec at all (a malformed admission object may not).
    fn has_spec(&self) -> bool;
    fn containers(&self) -> impl Iterator<Item = ContainerFacts<'_>>;
    fn init_containers(&self) -> impl Iterator<Item = ContainerFacts<'_>>;
    fn ephemeral_names(&self) -> impl Iterator<Item = &str>;
    fn volume_names(&self) -> impl Iterator<Item = &str>;
    fn host_namespaces(&self) -> HostNamespaces;
    /// `(apiVersion, kind)` of the owner references.
    fn owners(&self) -> impl Iterator<Item = (&str, &str)>;
    /// `spec.hostAliases` (empty when the provider does not keep them).
    fn host_aliases(&self) -> &[HostAlias];
    /// `spec.securityContext` (`None` when the provider does not keep it).
    fn security_context(&self) -> Option<&PodSecurityContext>;
    /// Memory of the app containers (`None`: some container is unbounded, or not kept).
    fn memory_bounds(&self) -> Option<MemoryBounds>;
}

fn container_facts<'a>(name: &'a str, image: Option<&'a String>) -> ContainerFacts<'a> {
    ContainerFacts {
        name,
        image: image.map(String::as_str),
    }
}

impl PodFacts for Pod {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn phase(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.phase.as_deref())
    }

    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }

    fn containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        self.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| container_facts(&c.name, c.image.as_ref()))
    }

    fn init_containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        self.spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .map(|c| container_facts(&c.name, c.image.as_ref()))
    }

    fn ephemeral_names(&self) -> impl Iterator<Item = &str> {
        self.spec
            .iter()
            .flat_map(|s| s.ephemeral_containers.iter().flatten())
            .map(|c| c.name.as_str())
    }

    fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| v.name.as_str())
    }

    fn host_namespaces(&self) -> HostNamespaces {
        let Some(spec) = self.spec.as_ref() else {
            return HostNamespaces::default();
        };
        HostNamespaces {
            network: spec.host_network == Some(true),
            pid: spec.host_pid == Some(true),
            ipc: spec.host_ipc == Some(true),
        }
    }

    fn owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.api_version.as_str(), o.kind.as_str()))
    }

    fn host_aliases(&self) -> &[HostAlias] {
        self.spec
            .as_ref()
            .and_then(|s| s.host_aliases.as_deref())
            .unwrap_or_default()
    }

    fn security_context(&self) -> Option<&PodSecurityContext> {
        self.spec.as_ref().and_then(|s| s.security_context.as_ref())
    }

    fn memory_bounds(&self) -> Option<MemoryBounds> {
        fn memory(
            m: &Option<
                std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >,
        ) -> Option<&str> {
            m.as_ref()?.get("memory").map(|q| q.0.as_str())
        }
        MemoryBounds::sum(self.spec.as_ref()?.containers.iter().map(|c| {
            let r = c.resources.as_ref();
            (
                r.and_then(|r| memory(&r.limits)),
                r.and_then(|r| memory(&r.requests)),
            )
        }))
    }
}
