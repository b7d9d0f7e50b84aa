//! UDP and TCP listeners on one port; wire format via `hickory-proto`.
//!
//! Why not `hickory_server::Server`: its UDP/TCP loops drop a packet whose header does not
//! decode, and answer FORMERR for a body that does not decode, before any handler sees it,
//! so malformed packets cannot be counted; it also spawns a task and logs at INFO per
//! request. These loops answer table hits inline (no task, no allocation beyond the
//! message) and spawn only for forwarded queries.
//!
//! Every message is first charged to its source's rate (over the rate: dropped on UDP, REFUSED
//! on TCP); a forwarded query takes one of its source's forwarding slots before a task is
//! spawned, so tasks never outnumber slots.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::answer::{self, Handling, MAX_TCP_MESSAGE};
use super::cidr::Cidr;
use super::forward::Forwarder;
use super::limits::{Slot, SlotDenied, SlotPool, SourceLimiter};
use super::metrics::{DnsMetrics, Outcome, QType, Reason, Transport};
use super::table::NameTable;
use super::{DnsConfig, DnsError};

/// TCP connections served at once; beyond this, new connections are closed.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// TCP connections one source may hold (a resolver needs one or two, after a truncated reply).
pub const MAX_TCP_CONNECTIONS_PER_SOURCE: usize = 8;
/// A TCP connection idle this long (or a message/write this slow) is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to find a port free for both UDP and TCP when the configured port is 0.
const BIND_ATTEMPTS: usize = 20;

/// A bound, not yet running DNS proxy.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    ctx: Arc<Ctx>,
}

struct Ctx {
    table: Arc<NameTable>,
    metrics: DnsMetrics,
    forwarder: Forwarder,
    trusted: Vec<Cidr>,
    limiter: Option<SourceLimiter>,
    forward_slots: Arc<SlotPool>,
}

/// The first step on a received message.
enum Step {
    /// Nothing to send (malformed, not a query, or a UDP source over its rate).
    Drop,
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Ask an upstream, holding `Slot` until done.
    Forward(Box<Message>, QType, Slot),
}

impl DnsServer {
    /// Bind UDP and TCP on `cfg.listen` (port 0: one free port for both) and register the
    /// `whisperer_dns_*` metrics in `registry`.
    pub async fn bind(
        cfg: DnsConfig,
        table: Arc<NameTable>,
        registry: &mut Registry,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_pair(cfg.listen).await?;
        let local = udp.local_addr().map_err(|source| DnsError::Bind {
            transport: "udp",
            addr: cfg.listen,
            source,
        })?;
        let ctx = Ctx {
            table,
            metrics: DnsMetrics::register(registry),
            forwarder: Forwarder::new(cfg.upstreams, cfg.upstream_timeout),
            trusted: cfg.trusted_cidrs,
            limiter: cfg.rate_limit.map(SourceLimiter::new),
            forward_slots: SlotPool::new(cfg.max_forwards, cfg.forward_quota),
        };
        Ok(DnsServer {
            udp: Arc::new(udp),
            tcp,
            local,
            ctx: Arc::new(ctx),
        })
    }

    /// The bound address (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve until `shutdown` completes (then `Ok`) or a listening socket fails (`Err`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DnsError> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(udp_loop(self.udp.clone(), self.ctx.clone()));
        }
        tasks.spawn(tcp_loop(self.tcp, self.ctx.clone()));
        tracing::info!(addr = %self.local, workers, "DNS proxy serving");
        tokio::select! {
            () = shutdown => Ok(()),
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(DnsError::Task(e.to_string())),
            },
        }
        // Dropping `tasks` aborts the loops and their connections.
    }
}

async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_err = |transport, addr, source| DnsError::Bind {
        transport,
        addr,
        source,
    };
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| bind_err("udp", listen, e))?;
        let addr = udp.local_addr().map_err(|e| bind_err("udp", listen, e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(bind_err("tcp", addr, e)),
        }
    }
    let source = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
    Err(bind_err("tcp", listen, source))
}

impl Ctx {
    /// Whether `source` is within its rate (charging it one query).
    fn within_rate(&self, source: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let verdict = limiter.check(source, Instant::now());
        if verdict.evicted {
            self.metrics.source_evictions.inc();
        }
        verdict.allowed
    }

    fn step(&self, bytes: &[u8], transport: Transport, source: IpAddr) -> Step {
        // Charged before decoding: a flood of garbage costs its sender tokens too.
        let within_rate = self.within_rate(source);
        if !within_rate && transport == Transport::Udp {
            // No reply: answering a UDP flood (whose source may be spoofed) would reflect it
            // at whoever owns the address. A real resolver retries after its timeout.
            self.metrics.refused(Reason::RateLimited, transport);
            return Step::Drop;
        }
        let Ok(request) = Message::from_vec(bytes) else {
            self.metrics.malformed.inc();
            return Step::Drop;
        };
        if request.metadata.message_type != MessageType::Query {
            self.metrics.malformed.inc();
            return Step::Drop;
        }
        if !within_rate {
            // TCP: the peer's address is real (handshake) and its next message waits for this
            // answer, so say no rather than stall the connection.
            return self.deny(&request, Reason::RateLimited, transport);
        }
        let access = answer::access(source, &self.trusted, &self.table);
        match answer::handle(&request, &self.table, self.forwarder.enabled(), access) {
            Handling::Reply {
                reply,
                qtype,
                outcome,
            } => {
                self.metrics.query(qtype, outcome);
                encode(&reply, &request, transport).map_or(Step::Drop, Step::Reply)
            }
            Handling::Denied { reply, reason } => {
                self.metrics.refused(reason, transport);
                encode(&reply, &request, transport).map_or(Step::Drop, Step::Reply)
            }
            Handling::Forward { qtype } => match self.forward_slots.try_acquire(source) {
                Ok(slot) => Step::Forward(Box::new(request), qtype, slot),
                Err(SlotDenied::Source) => self.deny(&request, Reason::ForwardQuota, transport),
                Err(SlotDenied::Exhausted) => {
                    self.metrics.query(qtype, Outcome::ServFail);
                    let reply = encode(&answer::servfail(&request), &request, transport);
                    reply.map_or(Step::Drop, Step::Reply)
                }
            },
        }
    }

    fn deny(&self, request: &Message, reason: Reason, transport: Transport) -> Step {
        self.metrics.refused(reason, transport);
        encode(&answer::refused(request), request, transport).map_or(Step::Drop, Step::Reply)
    }

    /// Forward (holding a forwarding slot) and return the bytes to send back (the upstream's
    /// reply or SERVFAIL).
    async fn forward(
        &self,
        raw: &[u8],
        request: &Message,
        qtype: QType,
        transport: Transport,
        _slot: Slot,
    ) -> Option<Vec<u8>> {
        let relayed = self
            .forwarder
            .forward(raw, request, transport == Transport::Tcp)
            .await;
        let Some(reply) = relayed else {
            self.metrics.query(qtype, Outcome::ServFail);
            return encode(&answer::servfail(request), request, transport);
        };
        self.metrics.query(qtype, Outcome::Forwarded);
        let limit = limit(request, transport);
        if reply.len() <= limit {
            return Some(reply);
        }
        // Larger than this client may receive: truncate (the client retries over TCP).
        match Message::from_vec(&reply) {
            Ok(message) => answer::encode_within(&message, limit),
            Err(_) => encode(&answer::servfail(request), request, transport),
        }
    }
}

fn limit(request: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Udp => answer::udp_limit(request),
        Transport::Tcp => MAX_TCP_MESSAGE,
    }
}

fn encode(reply: &Message, request: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = answer::encode_within(reply, limit(request, transport));
    if bytes.is_none() {
        tracing::warn!(id = request.metadata.id, "could not encode a DNS reply");
    }
    bytes
}

async fn udp_loop(socket: Arc<UdpSocket>, ctx: Arc<Ctx>) -> Result<(), DnsError> {
    let mut buf = vec![0u8; 65_535];
    let mut consecutive_errors = 0u32;
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => {
                consecutive_errors = 0;
                received
            }
            Err(source) => {
                // Transient on UDP (e.g. an ICMP error for an earlier reply); give up only
                // if the socket keeps failing.
                consecutive_errors += 1;
                tracing::debug!(error = %source, "DNS UDP receive error");
                if consecutive_errors >= 1000 {
                    return Err(DnsError::Io {
                        transport: "udp",
                        source,
                    });
                }
                continue;
            }
        };
        let raw = &buf[..len];
        match ctx.step(raw, Transport::Udp, peer.ip()) {
            Step::Drop => {}
            Step::Reply(bytes) => send_udp(&socket, &bytes, peer).await,
            Step::Forward(request, qtype, slot) => {
                let (socket, ctx, raw) = (socket.clone(), ctx.clone(), raw.to_vec());
                tokio::spawn(async move {
                    let reply = ctx
                        .forward(&raw, &request, qtype, Transport::Udp, slot)
                        .await;
                    if let Some(bytes) = reply {
                        send_udp(&socket, &bytes, peer).await;
                    }
                });
            }
        }
    }
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, %error, "DNS UDP send failed");
    }
}

async fn tcp_loop(listener: TcpListener, ctx: Arc<Ctx>) -> Result<(), DnsError> {
    let slots = SlotPool::new(MAX_TCP_CONNECTIONS, MAX_TCP_CONNECTIONS_PER_SOURCE);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection failures (reset before accept, fd limits) are not fatal.
                tracing::debug!(%error, "DNS TCP accept error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(denied) => {
                if denied == SlotDenied::Source {
                    ctx.metrics.refused(Reason::ConnectionQuota, Transport::Tcp);
                }
                tracing::debug!(%peer, ?denied, "too many DNS TCP connections; closing");
                continue;
            }
        };
        let ctx = ctx.clone();
        connections.spawn(async move {
            serve_tcp(stream, peer.ip(), &ctx).await;
            drop(slot);
        });
    }
}

/// Length-prefixed messages, answered in order, until EOF, error or idle timeout.
async fn serve_tcp(mut stream: TcpStream, source: IpAddr, ctx: &Ctx) {
    let mut buf = Vec::new();
    loop {
        let Ok(Ok(len)) = timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await else {
            return;
        };
        buf.resize(usize::from(len), 0);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let reply = match ctx.step(&buf, Transport::Tcp, source) {
            Step::Drop => continue,
            Step::Reply(bytes) => Some(bytes),
            Step::Forward(request, qtype, slot) => {
                ctx.forward(&buf, &request, qtype, Transport::Tcp, slot)
                    .await
            }
        };
        let Some(reply) = reply else { continue };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
