//! The agent's own metrics, served on `--metrics-listen` in Prometheus text format. Every
//! label is a closed set.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Drop {
    /// The kernel dropped packets before the agent read them (ring buffer full).
    kernel,
    /// Packets not written to pcapng: the output directory is missing, read-only or full.
    pcap_unwritable,
    /// Records not emitted: the queue to the writer was full.
    record_queue,
    /// Record batches the collector did not take.
    collector,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub what: Drop,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Eviction {
    /// The reassembly memory cap was reached.
    memory,
    /// The flow count cap was reached.
    flows,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub reason: Eviction,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum IssueLabel {
    gap,
    header_too_large,
    unparsed,
    closed,
    no_response,
    no_request,
    evicted,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssueLabels {
    pub issue: IssueLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PollResult {
    run,
    stop,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub result: PollResult,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LookupResult {
    hit,
    resolved,
    not_found,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub result: LookupResult,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub packets: Counter,
    pub bytes: Counter,
    pub undecoded: Counter,
    pub drops: Family<DropLabels, Counter>,
    pub kernel_dropped: Gauge<u64, AtomicU64>,
    pub pcap_bytes: Counter,
    pub pcap_files: Counter,
    pub exchanges: Counter,
    pub issues: Family<IssueLabels, Counter>,
    pub flows_closed: Counter,
    pub flows_open: Gauge,
    pub reassembly_bytes: Gauge,
    pub evictions: Family<EvictionLabels, Counter>,
    pub records: Counter,
    pub polls: Family<PollLabels, Counter>,
    pub lookups: Family<LookupLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("whisperer");
        r.register(
            "packets",
            "Frames read from the capture",
            self.packets.clone(),
        );
        r.register(
            "bytes",
            "Bytes of the frames read (as on the wire)",
            self.bytes.clone(),
        );
        r.register(
            "undecoded_packets",
            "Frames that were not TCP over IPv4/IPv6",
            self.undecoded.clone(),
        );
        r.register(
            "dropped",
            "Things dropped instead of blocking or growing",
            self.drops.clone(),
        );
        r.register(
            "kernel_dropped_packets",
            "Packets the kernel dropped (libpcap ps_drop)",
            self.kernel_dropped.clone(),
        );
        r.register(
            "pcap_written_bytes",
            "Bytes written to pcapng files",
            self.pcap_bytes.clone(),
        );
        r.register("pcap_files", "pcapng files opened", self.pcap_files.clone());
        r.register(
            "http_exchanges",
            "HTTP/1.x exchanges reported",
            self.exchanges.clone(),
        );
        r.register(
            "http_issues",
            "Exchanges reported truncated or unparsed, by issue",
            self.issues.clone(),
        );
        r.register(
            "flows_closed",
            "TCP flows closed (any reason)",
            self.flows_closed.clone(),
        );
        r.register(
            "flows_open",
            "TCP flows being tracked",
            self.flows_open.clone(),
        );
        r.register(
            "reassembly_bytes",
            "Memory held by the flow table",
            self.reassembly_bytes.clone(),
        );
        r.register(
            "flow_evictions",
            "Flows evicted to keep memory bounded",
            self.evictions.clone(),
        );
        r.register("records", "JSON lines written", self.records.clone());
        r.register(
            "control_polls",
            "Control API polls by result",
            self.polls.clone(),
        );
        r.register(
            "name_lookups",
            "Name lookups by result",
            self.lookups.clone(),
        );
    }

    pub fn drop(&self, what: Drop, n: u64) {
        self.drops.get_or_create(&DropLabels { what }).inc_by(n);
    }

    pub fn issue(&self, issue: crate::http::Issue) {
        use crate::http::Issue as I;
        let label = match issue {
            I::Gap => IssueLabel::gap,
            I::HeaderTooLarge => IssueLabel::header_too_large,
            I::Unparsed => IssueLabel::unparsed,
            I::Closed => IssueLabel::closed,
            I::NoResponse => IssueLabel::no_response,
            I::NoRequest => IssueLabel::no_request,
            I::Evicted => IssueLabel::evicted,
        };
        self.issues
            .get_or_create(&IssueLabels { issue: label })
            .inc();
    }

    /// The value of one sample, for tests and the final log line.
    pub fn dropped(&self, what: Drop) -> u64 {
        self.drops.get_or_create(&DropLabels { what }).get()
    }
}
