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
}

impl DnsMetrics {
    /// Fresh metrics registered in `registry` as `whisperer_dns_queries_total` and
    /// `whisperer_dns_malformed_packets_total`.
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
        metrics
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
