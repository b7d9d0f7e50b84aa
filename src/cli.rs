//! Command-line surface. Lives in the library so tests start the server with the same
//! flags a user types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "whisperer-injector",
    version,
    about = "Attach the Whisperer capture agent to Kubernetes pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `whisperer_injector=debug`.
    #[arg(long, global = true, env = "WHISPERER_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
// Added by the reconciler work (issue 5): ReconcilerArgs makes `Serve` much larger than
// `Status`; it is parsed once, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the injector: admission webhook (HTTPS), reconciler, DNS proxy.
    Serve(ServeArgs),
    /// Print what a running injector is doing (GET /status on the admin listener).
    Status(StatusArgs),
    /// Inject manifests on disk (Pods and workload pod templates) as the webhook would.
    Inject(InjectArgs),
    /// Why a pod is or is not injected, rule by rule, and the command that fixes it.
    Explain(crate::explain::ExplainArgs),
    /// Whether the API server really calls the webhook (dry-run pod), caBundle, endpoints.
    Check(crate::check::CheckArgs),
    /// The kubectl plugin (`kubectl whisper ...`; this binary named `kubectl-whisper`).
    Whisper(crate::plugin::WhisperArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// Multi-document YAML to inject; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Profiles file (as for `serve --config`); the built-in default profile without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Namespace of documents that do not name one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The injector's own namespace, never injected.
    #[arg(long, default_value = "whisperer-system")]
    pub injector_namespace: String,
    /// Inject documents with no `whisperer.dev/inject` annotation too.
    #[arg(long)]
    pub inject_by_default: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Base URL of the injector's admin listener (e.g. through `kubectl port-forward`);
    /// `https://` works for a TLS-terminating proxy in front of it.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub url: String,
    /// CA certificate (PEM) to verify the server with; without it any certificate is accepted.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Print the raw JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTPS server listens on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP admin address: `/metrics`, `/status` (and the probes again).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// PEM certificate chain. With neither --tls-cert, --tls-key nor --tls-secret, a
    /// self-signed certificate for localhost is generated in memory and its CA printed.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_secret")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", conflicts_with = "tls_secret")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub managed_tls: ManagedTlsArgs,
    /// Profiles and namespace policy (YAML). Without it the built-in default profile is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The injector's own namespace, never injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "whisperer-system")]
    pub namespace: String,
    /// Inject pods without a `whisperer.dev/inject` annotation too ("false" still opts out).
    #[arg(long)]
    pub inject_by_default: bool,
    /// DNS server address handed to Whisperers in WHISPERER_DNS_SERVER (e.g. the Service IP).
    #[arg(long)]
    pub dns_server_address: Option<String>,
    /// How often the config and certificate files are compared with what is loaded.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// Deadline for one admission request, body read included (keep under the webhook's
    /// timeoutSeconds).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 128)]
    pub h2_max_concurrent_streams: u32,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Base URL attached Whisperers use to reach this server's agent control API
    /// [default: https://whisperer-injector.<namespace>.svc:443].
    #[arg(long)]
    pub control_url: Option<String>,
    /// PEM CA that attached Whisperers verify the control API with (WHISPERER_CONTROL_CA);
    /// default: `ca.crt` beside --tls-cert, else the generated CA.
    #[arg(long)]
    pub control_ca: Option<PathBuf>,
    /// Directory holding the agent token keys: file `current` (at least 32 bytes; tokens are
    /// minted with it) and optionally `previous` (still accepted), e.g. the Secret
    /// `whisperer-agent-token-keys` mounted as a volume; reloaded when it changes. Every replica
    /// needs the same keys. Without it: a random key of this process.
    #[arg(long)]
    pub agent_token_keys: Option<PathBuf>,
    /// Run the reconciler (Attachments, backstop): auto = when cluster credentials are found
    /// (and, for the reconciler, the Attachment CRD is installed).
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    pub reconciler: Toggle,
    /// Run the DNS proxy: auto = when cluster credentials are found.
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    pub dns: Toggle,
    /// Skip injection where the namespace's Pod Security `enforce` level forbids the
    /// Whisperer (needs a namespace watch): auto = when cluster credentials are found.
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    pub pod_security_check: Toggle,
    /// Kubeconfig to reach the cluster with; default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub limits: crate::webhook::LimitArgs,
    #[command(flatten)]
    pub dns_opts: DnsArgs,
    #[command(flatten)]
    pub reconciler_opts: crate::reconciler::ReconcilerArgs,
}

/// Self-managed TLS: the injector keeps its own CA and serving certificate in a Secret.
#[derive(Debug, Clone, Args)]
pub struct ManagedTlsArgs {
    /// Secret (in --namespace, type kubernetes.io/tls) holding the self-managed CA and serving
    /// certificate: the leader creates and renews it and keeps --webhook-config's caBundle
    /// equal to its `ca.crt`; every replica serves what it holds. Needs cluster credentials.
    #[arg(long, value_name = "NAME")]
    pub tls_secret: Option<String>,
    /// MutatingWebhookConfiguration whose caBundle the leader keeps (with --tls-secret).
    #[arg(long, value_name = "NAME", default_value = "whisperer-injector")]
    pub webhook_config: String,
    /// Service the serving certificate is for (its in-cluster DNS names become SANs).
    #[arg(long, value_name = "NAME", default_value = "whisperer-injector")]
    pub tls_service: String,
    /// Extra DNS name or IP address for the self-managed serving certificate, repeatable.
    #[arg(long = "tls-extra-san", value_name = "NAME|IP")]
    pub tls_extra_sans: Vec<String>,
    /// Lifetime of the self-managed serving certificate; renewed at two-thirds.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub tls_cert_lifetime: Duration,
    /// Lifetime of the self-managed CA; rolled at two-thirds, old and new trusted together.
    #[arg(long, default_value = "1825d", value_parser = humantime::parse_duration)]
    pub tls_ca_lifetime: Duration,
    /// During a CA roll: how long the new CA is in the caBundle before the serving
    /// certificate moves to it, and how long the old CA stays after.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub tls_roll_overlap: Duration,
    /// With --tls-secret: the keeper also creates this Secret (key `current`, random) when it
    /// is missing, for --agent-token-keys to mount; an existing one is never changed.
    #[arg(long, value_name = "NAME", requires = "tls_secret")]
    pub agent_token_keys_secret: Option<String>,
}

/// Whether a component that needs the Kubernetes API runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// Run when a kubeconfig or in-cluster service account is found; otherwise skip with a warning.
    Auto,
    /// Run; fail to start without cluster credentials.
    On,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    /// UDP and TCP address of the DNS proxy.
    #[arg(long, default_value = crate::dns::DEFAULT_LISTEN)]
    pub dns_listen: SocketAddr,
    /// Cluster domain used in PTR answers.
    #[arg(long, default_value = crate::dns::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Upstream resolver (ip:port), repeatable; default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream")]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Time one upstream gets to answer a forwarded query.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub dns_upstream_timeout: Duration,
    /// Network (CIDR, IPv4 or IPv6; a bare IP is one host) whose sources are served besides
    /// pods carrying a Whisperer, repeatable. Everyone else gets REFUSED.
    #[arg(long = "dns-trusted-cidr", value_name = "CIDR")]
    pub dns_trusted_cidrs: Vec<crate::dns::Cidr>,
    /// Queries per second one source IP may send (token bucket); 0 turns the limit off.
    #[arg(long, value_name = "QPS", default_value_t = crate::dns::DEFAULT_RATE_LIMIT.per_second)]
    pub dns_rate_limit: u32,
    /// Queries one source IP may send at once after being idle (the bucket's size).
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::dns::DEFAULT_RATE_LIMIT.burst,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub dns_rate_burst: u32,
    /// Forwarded queries one source IP may have in flight; beyond, REFUSED.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::dns::DEFAULT_FORWARD_QUOTA as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub dns_forward_quota: u32,
    /// Forwarded queries in flight at once, all sources together; beyond, SERVFAIL.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::dns::DEFAULT_MAX_FORWARDS as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub dns_max_forwards: u32,
}

#[derive(Debug, Parser)]
#[command(name = "serve")]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// Parses `serve` flags exactly as the CLI does (for tests and embedding).
    pub fn from_flags<I, T>(flags: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("serve"))
            .chain(flags.into_iter().map(Into::into));
        ServeOnly::try_parse_from(argv).map(|s| s.args)
    }
}
