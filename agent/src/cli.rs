//! Command-line flags. The injector's default profile passes `--interface any`; everything
//! else has a default that suits a sidecar with a `/captures` emptyDir of 256Mi.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn size(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "whisperer",
    version,
    // A flag given twice takes the last value, so an operator can append to a profile's args.
    args_override_self = true,
    about = "Capture a pod's traffic: rotated pcapng files and one JSON line per HTTP/1.x exchange"
)]
pub struct Args {
    /// Interface to capture on (`any` for all of the pod's interfaces).
    #[arg(short, long, default_value = "any")]
    pub interface: String,
    /// pcap-filter expression, as for tcpdump (e.g. "tcp port 80").
    #[arg(short, long)]
    pub filter: Option<String>,
    /// Bytes kept of each frame.
    #[arg(long, default_value_t = 262_144)]
    pub snaplen: u32,
    /// Kernel ring buffer for the capture (absorbs bursts; counts towards the agent's memory).
    #[arg(long, default_value = "4MiB", value_parser = size)]
    pub buffer_size: u64,
    /// Directory for pcapng files. Missing or not writable: logged once, JSON lines go on.
    #[arg(long, default_value = "/captures")]
    pub out_dir: PathBuf,
    /// Do not write pcapng files at all.
    #[arg(long)]
    pub no_pcap: bool,
    /// Start a new file when the current one reaches this size.
    #[arg(long, default_value = "32MiB", value_parser = size)]
    pub rotate_size: u64,
    /// Start a new file when the current one is this old.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub rotate_every: Duration,
    /// Files kept in --out-dir (the current one included); the oldest is deleted first.
    #[arg(long, default_value_t = 8)]
    pub keep: usize,
    /// Most bytes of pcapng kept in --out-dir (below the default profile's 256Mi sizeLimit).
    #[arg(long, default_value = "240MiB", value_parser = size)]
    pub max_total: u64,
    /// POST batches of JSON lines (application/x-ndjson) to this URL as well as stdout.
    #[arg(long)]
    pub collector: Option<String>,
    /// How often the control API is asked whether to keep running (jittered by ±20%).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub control_interval: Duration,
    /// PEM file of the CA that signs the control API's certificate [env WHISPERER_CONTROL_CA
    /// holds the PEM itself]; without either the system roots are used.
    #[arg(long)]
    pub control_ca: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9090).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest HTTP head (request or status line plus headers) that is parsed.
    #[arg(long, default_value = "64KiB", value_parser = size)]
    pub max_header: u64,
    /// Out-of-order bytes buffered per TCP direction before the missing range is skipped.
    #[arg(long, default_value = "128KiB", value_parser = size)]
    pub flow_buffer: u64,
    /// Memory for all flows together; over it the oldest flow is evicted.
    #[arg(long, default_value = "8MiB", value_parser = size)]
    pub reassembly_memory: u64,
    /// Most TCP flows tracked at once.
    #[arg(long, default_value_t = 16_384)]
    pub max_flows: usize,
    /// A flow with no packet for this long is closed.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub flow_timeout: Duration,
    /// DNS server for PTR lookups [default: env WHISPERER_DNS_SERVER].
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// Hosts file whose entries name addresses the DNS server does not (hostAliases).
    #[arg(long, default_value = "/etc/hosts")]
    pub hosts_file: PathBuf,
    /// Do not look names up at all.
    #[arg(long)]
    pub no_names: bool,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Exit 0 once the agent in this pod captures (startupProbe / postStart of the injector's
    /// holdApplicationUntilReady), 1 if it does not within --wait.
    Ready {
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}
