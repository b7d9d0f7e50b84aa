//! Prometheus metrics of the reconciler. Label values come from closed sets.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::crd::Phase;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PhaseLabel {
    Pending,
    Attached,
    Expired,
    Detached,
    Failed,
}

impl From<Phase> for PhaseLabel {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Pending => PhaseLabel::Pending,
            Phase::Attached => PhaseLabel::Attached,
            Phase::Expired => PhaseLabel::Expired,
            Phase::Detached => PhaseLabel::Detached,
            Phase::Failed => PhaseLabel::Failed,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: PhaseLabel,
}

/// Result of one ephemeral-container patch.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PatchResult {
    /// The answer holds the container (a dry run that would succeed counts here too).
    attached,
    /// Pod Security Admission refused the pod with the container.
    pod_security,
    /// Another admission plugin or webhook refused it (403).
    refused,
    /// Validation refused it (422).
    invalid,
    /// Accepted, but the container is not in the answer.
    dropped,
    /// The pod is gone.
    gone,
    /// Transport error, 5xx, conflict ...
    error,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PatchKind {
    real,
    dry_run,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatchLabels {
    pub result: PatchResult,
    pub mode: PatchKind,
}

/// What went wrong, bounded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorKind {
    /// Any other Kubernetes API call of a reconcile failed.
    attachment_api,
    /// Writing an Attachment's status failed.
    status,
    /// Adding or removing the detach finalizer failed.
    finalizer,
    /// The Attachment object itself is unusable (no name or namespace).
    invalid_object,
    /// Publishing an Event failed.
    event,
    /// A watch failed (it is retried with back-off).
    watch,
    /// Reading or writing the leader Lease failed.
    lease,
}

/// Which pass of a reconcile ran.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileKind {
    /// The Attachment exists: attach, conclude, write status.
    apply,
    /// The Attachment is being deleted.
    detach,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    ok,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: ReconcileKind,
    pub result: ReconcileResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileKindLabels {
    pub kind: ReconcileKind,
}

/// Buckets of a reconcile pass: a pass with many pods waits for the patch rate limit.
const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WatchedKind {
    pods,
    attachments,
    replicasets,
    jobs,
    namespaces,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchedLabels {
    pub kind: WatchedKind,
}

#[derive(Clone)]
pub struct ReconcilerMetrics {
    pub attachments: Family<PhaseLabels, Gauge>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileKindLabels, Histogram>,
    pub patches: Family<PatchLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub watched: Family<WatchedLabels, Gauge>,
    pub backstop_uninjected: Gauge,
    /// Injected pods whose marker differs from what their profile injects today.
    pub outdated_agents: Gauge,
    pub leader: Gauge,
}

impl Default for ReconcilerMetrics {
    fn default() -> Self {
        ReconcilerMetrics {
            attachments: Family::default(),
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
            patches: Family::default(),
            errors: Family::default(),
            watched: Family::default(),
            backstop_uninjected: Gauge::default(),
            outdated_agents: Gauge::default(),
            leader: Gauge::default(),
        }
    }
}

impl ReconcilerMetrics {
    pub fn new(registry: &mut Registry) -> ReconcilerMetrics {
        let m = ReconcilerMetrics::default();
        registry.register(
            "whisperer_reconciles",
            "Attachment reconcile passes by kind (apply, detach) and result",
            m.reconciles.clone(),
        );
        registry.register(
            "whisperer_reconcile_duration_seconds",
            "Duration of one Attachment reconcile pass, patches included, by kind",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "whisperer_attachments",
            "Attachments by phase (as last written to their status by this replica)",
            m.attachments.clone(),
        );
        registry.register(
            "whisperer_ephemeral_patches",
            "pods/ephemeralcontainers patches by result and mode (real or dry run)",
            m.patches.clone(),
        );
        registry.register(
            "whisperer_reconciler_errors",
            "Reconciler errors by kind",
            m.errors.clone(),
        );
        registry.register(
            "whisperer_watched_objects",
            "Objects held in the reconciler's watch caches, by kind",
            m.watched.clone(),
        );
        registry.register(
            "whisperer_backstop_uninjected_pods",
            "Opted-in pods in injection-enabled namespaces that lack the webhook's marker",
            m.backstop_uninjected.clone(),
        );
        registry.register(
            "whisperer_outdated_agents",
            "Injected pods whose Whisperer differs from what their profile injects now (roll them)",
            m.outdated_agents.clone(),
        );
        registry.register(
            "whisperer_reconciler_leader",
            "1 while this replica holds the leader Lease and reconciles",
            m.leader.clone(),
        );
        m
    }

    pub fn patch(&self, result: PatchResult, dry_run: bool) {
        let mode = if dry_run {
            PatchKind::dry_run
        } else {
            PatchKind::real
        };
        self.patches
            .get_or_create(&PatchLabels { result, mode })
            .inc();
    }

    pub fn reconciled(&self, kind: ReconcileKind, ok: bool, took: std::time::Duration) {
        let result = if ok {
            ReconcileResult::ok
        } else {
            ReconcileResult::error
        };
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ReconcileKindLabels { kind })
            .observe(took.as_secs_f64());
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn watched(&self, kind: WatchedKind, n: usize) {
        self.watched
            .get_or_create(&WatchedLabels { kind })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn phases(&self, counts: &[(Phase, usize)]) {
        for (phase, n) in counts {
            self.attachments
                .get_or_create(&PhaseLabels {
                    phase: (*phase).into(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_render() {
        let mut r = Registry::default();
        let m = ReconcilerMetrics::new(&mut r);
        m.patch(PatchResult::pod_security, true);
        m.phases(&[(Phase::Attached, 2)]);
        m.backstop_uninjected.set(1);
        m.reconciled(
            ReconcileKind::apply,
            false,
            std::time::Duration::from_millis(20),
        );
        m.error(ErrorKind::status);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(out.contains(
            "whisperer_ephemeral_patches_total{result=\"pod_security\",mode=\"dry_run\"} 1"
        ));
        assert!(out.contains("whisperer_attachments{phase=\"Attached\"} 2"));
        assert!(out.contains("whisperer_backstop_uninjected_pods 1"));
        assert!(out.contains("whisperer_reconciles_total{kind=\"apply\",result=\"error\"} 1"));
        assert!(out.contains(
            "whisperer_reconcile_duration_seconds_bucket{le=\"0.025\",kind=\"apply\"} 1"
        ));
        assert!(out.contains("whisperer_reconciler_errors_total{kind=\"status\"} 1"));
    }
}
