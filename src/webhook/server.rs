//! Listeners: the webhook's TLS port (rustls handshake, then HTTP/1.1 or h2 by ALPN) and the
//! plain-HTTP admin port, both through hyper-util, with graceful shutdown that lets
//! in-flight requests finish.
//!
//! Nothing a client does holds resources without limit:
//! - at most `max_connections` open; one more is closed right after accept (no TLS work),
//!   which keeps the kernel's accept queue empty and tells the client at once, instead of
//!   leaving it in a backlog where a kube-apiserver call would wait out its timeout;
//! - the TLS handshake and the first request head must arrive within `header_timeout` of
//!   the accept; on HTTP/1.1 a later request head within `header_timeout` of its first byte
//!   (hyper's own header timer is off: it also runs between keep-alive requests and would
//!   cut kube-apiserver's idle pool, whose 90 s idle timeout must expire before ours);
//! - a connection with no request in flight for `idle_timeout` is closed (h2: GOAWAY, then
//!   closed when no stream is left); h2 pings detect dead peers sooner;
//! - h2 limits against Rapid Reset (streams reset before being answered) and against
//!   provoked local resets, small flow-control windows so a connection never buffers much.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::WebhookState;
use crate::metrics::{ConnClose, ConnCloseLabels, Listener, ListenerLabels};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Per-connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 2500,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub h2_max_concurrent_streams: u32,
    pub limits: ConnLimits,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            h2_max_concurrent_streams: 128,
            limits: ConnLimits::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Streams a client may reset before the server accepted them; more and the connection gets
/// GOAWAY (CVE-2023-44487, "Rapid Reset").
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server resets because of client errors; more and the connection gets GOAWAY
/// (CVE-2025-8671, "MadeYouReset").
const H2_MAX_LOCAL_ERROR_RESETS: usize = 64;
/// Flow-control windows: the most a peer may send before we read it. A 3 MiB review over h2
/// then needs a few window updates, which on the paths we serve costs nothing measurable.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONN_WINDOW: u32 = 512 * 1024;
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// HTTP/1.1 read buffer cap, which bounds a request head.
const H1_MAX_BUF: usize = 64 * 1024;
/// After an idle close starts, how long a peer that does not read gets before the socket
/// is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

struct Builders {
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
    /// Plain HTTP (admin): HTTP/1.1 or h2 prior knowledge, sniffed.
    plain: Builder<TokioExecutor>,
}

impl Builders {
    fn new(opts: &ServerOptions) -> Builders {
        let l = opts.limits;
        let mut b = Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(H1_MAX_BUF)
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(opts.h2_max_concurrent_streams)
            .keep_alive_interval(l.h2_keepalive_interval)
            .keep_alive_timeout(l.h2_keepalive_timeout)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .max_send_buf_size(H2_MAX_SEND_BUF);
        let mut plain = b.clone();
        // No ALPN to tell the protocol: hyper's header timer guards HTTP/1.1 heads here.
        plain.http1().header_read_timeout(l.header_timeout);
        Builders {
            // ALPN decides the protocol, so no connection sits in a "which protocol?" state
            // that a shutdown would cancel.
            h1: b.clone().http1_only(),
            h2: b.http2_only(),
            plain,
        }
    }
}

/// Counters of one listener, resolved once.
#[derive(Clone)]
struct ConnMetrics {
    open: Gauge,
    over_limit: Counter,
    header_timeout: Counter,
    idle: Counter,
}

impl ConnMetrics {
    fn new(state: &WebhookState, listener: Listener) -> ConnMetrics {
        let m = &state.metrics;
        let closed = |reason| {
            m.connections_closed
                .get_or_create(&ConnCloseLabels { listener, reason })
                .clone()
        };
        ConnMetrics {
            open: m
                .connections
                .get_or_create(&ListenerLabels { listener })
                .clone(),
            over_limit: closed(ConnClose::over_limit),
            header_timeout: closed(ConnClose::header_timeout),
            idle: closed(ConnClose::idle),
        }
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given, else plain HTTP) until
/// `shutdown` resolves, then drains. The webhook listener also drives `/readyz`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    state: Arc<WebhookState>,
    kind: Listener,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let builders = Arc::new(Builders::new(&opts));
    let service = TowerToHyperService::new(router);
    let metrics = ConnMetrics::new(&state, kind);
    let slots = Arc::new(Semaphore::new(opts.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    let mut at_limit = false;
    if kind == Listener::webhook {
        state.ready.store(true, Ordering::Relaxed);
    }
    tokio::pin!(shutdown);

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.over_limit.inc();
            if !at_limit {
                tracing::warn!(
                    ?kind,
                    limit = opts.limits.max_connections,
                    "connection limit reached: closing new connections"
                );
                at_limit = true;
            }
            drop(tcp);
            continue;
        };
        at_limit = false;
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(
            Accepted {
                tcp,
                peer,
                at: Instant::now(),
                _permit: permit,
            },
            acceptor.clone(),
            builders.clone(),
            service.clone(),
            opts.limits,
            stop_rx.clone(),
            metrics.clone(),
        ));
    }

    if kind == Listener::webhook {
        state.ready.store(false, Ordering::Relaxed);
    }
    drop(listener);
    let _ = stop_tx.send(());
    tracing::info!(
        ?kind,
        connections = conns.len(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            ?kind,
            "drain timeout reached; closing remaining connections"
        );
        conns.abort_all();
    }
}

struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    at: Instant,
    /// The connection's place under `max_connections`, given back when it ends.
    _permit: OwnedSemaphorePermit,
}

async fn connection(
    accepted: Accepted,
    acceptor: Option<TlsAcceptor>,
    builders: Arc<Builders>,
    service: TowerToHyperService<Router>,
    limits: ConnLimits,
    stop: watch::Receiver<()>,
    metrics: ConnMetrics,
) {
    metrics.open.inc();
    let _open = DecOnDrop(metrics.open.clone());
    let peer = accepted.peer;
    let activity = Arc::new(Activity::new(accepted.at));
    let (stream, builder, track_heads) = match acceptor {
        Some(acceptor) => {
            let deadline = tokio::time::Instant::from_std(accepted.at + limits.header_timeout);
            let tls = match tokio::time::timeout_at(deadline, acceptor.accept(accepted.tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.header_timeout.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                (Stream::Tls(Box::new(tls)), &builders.h2, false)
            } else {
                (Stream::Tls(Box::new(tls)), &builders.h1, true)
            }
        }
        None => (Stream::Plain(accepted.tcp), &builders.plain, false),
    };
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
        track_heads,
    };
    let tracked = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let request = tracked.begin();
        let answer = hyper::service::Service::call(&service, req);
        async move {
            let out = answer.await;
            drop(request);
            out
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // The loop below closes the connection when a limit says so or the server shuts down.
    let mut stop = stop;
    let every = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut closing = false;
    let mut give_up: Option<Instant> = None;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if give_up.is_some_and(|t| now >= t) {
                    tracing::debug!(%peer, "peer did not let the idle connection close; dropped");
                    return;
                }
                match activity.check(now, &limits) {
                    Check::Fine => {}
                    Check::HeadTimeout => {
                        metrics.header_timeout.inc();
                        tracing::debug!(%peer, "no complete request head in time; closed");
                        return;
                    }
                    Check::Idle => {
                        if !closing {
                            closing = true;
                            metrics.idle.inc();
                            tracing::debug!(%peer, "idle; closing");
                            conn.as_mut().graceful_shutdown();
                            give_up = Some(now + IDLE_CLOSE_GRACE);
                        }
                    }
                }
            }
        }
    }
}

struct DecOnDrop(Gauge);

impl Drop for DecOnDrop {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a connection has been doing, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// Last time a request began or ended.
    last_ms: AtomicU64,
    /// First byte of a request head not yet complete (HTTP/1.1), or `NO_HEAD`.
    head_ms: AtomicU64,
}

const NO_HEAD: u64 = u64::MAX;

enum Check {
    Fine,
    HeadTimeout,
    Idle,
}

impl Activity {
    fn new(start: Instant) -> Activity {
        Activity {
            start,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(NO_HEAD),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> InRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_ms.store(NO_HEAD, Ordering::Relaxed);
        self.last_ms
            .store(self.ms(Instant::now()), Ordering::Relaxed);
        InRequest(self.clone())
    }

    /// Bytes arrived: with no request in flight they start a new request head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let now = self.ms(Instant::now());
            let _ =
                self.head_ms
                    .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn check(&self, now: Instant, limits: &ConnLimits) -> Check {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Check::Fine;
        }
        let now = self.ms(now);
        let header = u64::try_from(limits.header_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let head = self.head_ms.load(Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0 && now >= header {
            return Check::HeadTimeout;
        }
        if head != NO_HEAD && now.saturating_sub(head) >= header {
            return Check::HeadTimeout;
        }
        if now.saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= idle {
            return Check::Idle;
        }
        Check::Fine
    }
}

struct InRequest(Arc<Activity>);

impl Drop for InRequest {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms.store(a.ms(Instant::now()), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Stream {
    // Boxed: a rustls connection is a few KB, a TcpStream a few bytes.
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// The connection's byte stream, telling [`Activity`] when request bytes arrive.
struct Watched {
    inner: Stream,
    activity: Arc<Activity>,
    track_heads: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = match &mut this.inner {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
        };
        if this.track_heads && matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.inner {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.inner {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.inner {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.inner {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
