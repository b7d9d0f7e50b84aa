//! `whisperer_dns_*` metrics. Every label has a fixed, small set of values.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Query type label: everything but PTR/A/AAAA is `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum QType {
    Ptr,
    A,
    Aaaa,
    Other,
}

impl QType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ptr => "PTR",
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Other => "other",
        }
    }
}

/// How a query was settled.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the table (including NOERROR without records for a name we own).
    Answered,
    /// NXDOMAIN from us (unknown reverse name and no upstream configured).
    NxDomain,
    /// An upstream's answer was relayed (whatever its rcode).
    Forwarded,
    /// Every upstream failed or timed out, or too many forwards were in flight.
    ServFail,
    /// FORMERR / NOTIMP / REFUSED: not a question we take (no question, several questions,
    /// an opcode other than QUERY, a forward name with no upstream configured).
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NxDomain => "nxdomain",
            Self::Forwarded => "forwarded",
            Self::ServFail => "servfail",
            Self::Rejected => "rejected",
        }
    }
}

/// Why a query was refused (or, for a UDP flood, dropped) before it was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Reason {
    /// The source is neither a Whisperer's pod nor in a trusted CIDR.
    Untrusted,
    /// The source is over its query rate.
    RateLimited,
    /// The source already has its share of forwarded queries in flight.
    ForwardQuota,
    /// The source already has its share of TCP connections (the connection is closed).
    ConnectionQuota,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::RateLimited => "rate-limited",
            Self::ForwardQuota => "forward-quota",
            Self::ConnectionQuota => "connection-quota",
        }
    }
}

/// The transport a query came over.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: Reason,
    pub transport: Transport,
}

impl EncodeLabelValue for QType {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub r#type: QType,
    pub result: Outcome,
}

/// Handles to the proxy's metrics (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub malformed: Counter,
    pub refused: Family<RefusedLabels, Counter>,
    pub source_evictions: Counter,
}

impl DnsMetrics {
    /// Fresh metrics registered in `registry` as `whisperer_dns_queries_total`,
    /// `whisperer_dns_malformed_packets_total`, `whisperer_dns_refused_total` and
    /// `whisperer_dns_source_evictions_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "whisperer_dns_queries",
            "DNS queries answered by the proxy, by query type and result",
            metrics.queries.clone(),
        );
        registry.register(
            "whisperer_dns_malformed_packets",
            "DNS packets dropped because they could not be decoded as a query",
            metrics.malformed.clone(),
        );
        registry.register(
            "whisperer_dns_refused",
            "DNS queries refused by source policy (rate-limited UDP queries are dropped, not \
             answered), by reason and transport",
            metrics.refused.clone(),
        );
        registry.register(
            "whisperer_dns_source_evictions",
            "Sources whose partly spent rate-limit bucket was dropped to make room for another \
             (the fixed-size source table is under pressure)",
            metrics.source_evictions.clone(),
        );
        metrics
    }

    pub fn refused(&self, reason: Reason, transport: Transport) {
        self.refused
            .get_or_create(&RefusedLabels { reason, transport })
            .inc();
    }

    pub fn query(&self, qtype: QType, result: Outcome) {
        self.queries
            .get_or_create(&QueryLabels {
                r#type: qtype,
                result,
            })
            .inc();
    }
}
