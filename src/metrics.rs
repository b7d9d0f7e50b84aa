//! Prometheus metrics of the webhook. Every label value comes from a closed set (skip
//! reasons, outcomes, error kinds), so cardinality is bounded whatever the traffic.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    injected,
    skipped,
    rejected,
    /// An Attachment review (src/webhook/requester.rs); `reason` says whether the requester
    /// was recorded.
    attachment,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub outcome: Outcome,
    /// Skip reason or error kind; `none` for injections. Always a `&'static str` from a
    /// closed list.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadKind {
    config,
    certificate,
    agent_token_keys,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    failure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub kind: ReloadKind,
    pub result: ReloadResult,
}

/// Why the server closed a connection on its own.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ConnClose {
    /// No request head within `--header-timeout` of connecting (TLS included) or of the
    /// first byte of a new HTTP/1.1 request.
    header_timeout,
    /// No request in flight for `--idle-timeout`.
    idle,
    /// Refused at accept: `--max-connections` were open.
    over_limit,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnCloseLabels {
    pub listener: Listener,
    pub reason: ConnClose,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Listener {
    webhook,
    admin,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: Listener,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histogram,
    pub in_flight: Gauge,
    /// Bytes of admission request bodies held in memory right now.
    pub body_bytes: Gauge,
    pub connections: Family<ListenerLabels, Gauge>,
    pub connections_closed: Family<ConnCloseLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub cert_expiry: Gauge,
}

impl WebhookMetrics {
    pub fn new(registry: &mut Registry) -> WebhookMetrics {
        let m = WebhookMetrics {
            requests: Family::default(),
            // 50µs .. ~0.4s
            latency: Histogram::new(exponential_buckets(0.00005, 2.0, 14)),
            in_flight: Gauge::default(),
            body_bytes: Gauge::default(),
            connections: Family::default(),
            connections_closed: Family::default(),
            reloads: Family::default(),
            cert_expiry: Gauge::default(),
        };
        registry.register(
            "whisperer_webhook_requests",
            "Admission requests by outcome and skip reason or error kind",
            m.requests.clone(),
        );
        registry.register(
            "whisperer_webhook_request_duration_seconds",
            "Time to answer an admission request, body read included",
            m.latency.clone(),
        );
        registry.register(
            "whisperer_webhook_requests_in_flight",
            "Admission requests being answered right now",
            m.in_flight.clone(),
        );
        registry.register(
            "whisperer_webhook_body_bytes_buffered",
            "Bytes of admission request bodies held in memory right now (bounded by --max-buffered-body-bytes)",
            m.body_bytes.clone(),
        );
        registry.register(
            "whisperer_connections",
            "Open connections by listener",
            m.connections.clone(),
        );
        registry.register(
            "whisperer_connections_closed",
            "Connections the server closed or refused on its own, by listener and reason",
            m.connections_closed.clone(),
        );
        registry.register(
            "whisperer_reloads",
            "Reloads of the config file and TLS certificate by result",
            m.reloads.clone(),
        );
        registry.register(
            "whisperer_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, as a Unix timestamp",
            m.cert_expiry.clone(),
        );
        m
    }

    pub fn reload(&self, kind: ReloadKind, ok: bool) {
        let result = if ok {
            ReloadResult::success
        } else {
            ReloadResult::failure
        };
        self.reloads
            .get_or_create(&ReloadLabels { kind, result })
            .inc();
    }
}

pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Counts one in-flight request for as long as it lives, even if a deadline drops it.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn start(g: &Gauge) -> InFlight {
        g.inc();
        InFlight(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
