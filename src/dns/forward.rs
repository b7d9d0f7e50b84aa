//! Relay a query to upstream resolvers, unchanged but for a fresh random id.
//!
//! Upstreams are tried in order; each gets `timeout` for its answer. A reply must come from
//! the upstream's address (connected socket), carry our id and repeat our question, or it is
//! ignored. A truncated UDP reply is retried over TCP when the client asked over TCP (a UDP
//! client gets the TC reply and retries over TCP itself).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// Forwarding settings.
#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstreams, timeout }
    }

    /// Whether there is anywhere to forward to.
    pub fn enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The first upstream reply to `query` (raw bytes of a decoded `request`), with the
    /// client's id restored; `None` when every upstream failed or timed out.
    #[tracing::instrument(
        name = "dns_forward",
        level = "debug",
        skip_all,
        fields(id = request.metadata.id, tcp = over_tcp)
    )]
    pub async fn forward(
        &self,
        query: &[u8],
        request: &Message,
        over_tcp: bool,
    ) -> Option<Vec<u8>> {
        let client_id = request.metadata.id;
        for upstream in &self.upstreams {
            let id: u16 = rand::random();
            let mut bytes = query.to_vec();
            bytes.get_mut(..2)?.copy_from_slice(&id.to_be_bytes());
            let deadline = Instant::now() + self.timeout;
            let reply = match exchange_udp(*upstream, &bytes, id, request, deadline).await {
                Some((reply, truncated)) if truncated && over_tcp => {
                    // Fall back to the truncated reply if TCP to this upstream fails.
                    exchange_tcp(*upstream, &bytes, id, request, deadline)
                        .await
                        .or(Some(reply))
                }
                Some((reply, _)) => Some(reply),
                None => None,
            };
            match reply {
                Some(mut reply) => {
                    reply
                        .get_mut(..2)?
                        .copy_from_slice(&client_id.to_be_bytes());
                    return Some(reply);
                }
                None => tracing::debug!(%upstream, "upstream gave no usable answer"),
            }
        }
        None
    }
}

/// `Some((reply, truncated))` for a reply that answers `request` under `id`.
async fn exchange_udp(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    request: &Message,
    deadline: Instant,
) -> Option<(Vec<u8>, bool)> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            // ICMP port unreachable and friends: this upstream is not there.
            Ok(Err(_)) | Err(_) => return None,
        };
        let reply = &buf[..n];
        if let Some(truncated) = matches_request(reply, id, request) {
            return Some((reply.to_vec(), truncated));
        }
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    request: &Message,
    deadline: Instant,
) -> Option<Vec<u8>> {
    let work = async {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.ok()?;
        let len = stream.read_u16().await.ok()?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.ok()?;
        matches_request(&reply, id, request).map(|_| reply)
    };
    timeout_at(deadline, work).await.ok().flatten()
}

/// `Some(truncated)` when `reply` is a response with `id` to the same question as `request`.
fn matches_request(reply: &[u8], id: u16, request: &Message) -> Option<bool> {
    let message = Message::from_vec(reply).ok()?;
    let ok = message.metadata.id == id
        && message.metadata.message_type == hickory_proto::op::MessageType::Response
        && message.queries == request.queries;
    ok.then_some(message.metadata.truncation)
}
