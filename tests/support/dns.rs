//! Asking a DNS server over UDP from a test: build a query, send it, read the answer.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// A recursive query for `name`/`rtype`, with a 4096-byte EDNS payload when `edns`.
pub fn query(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        msg.set_edns(e);
    }
    msg
}

/// Sends `bytes` from a fresh loopback socket and returns the reply (10 s at most: the
/// server runs on a loaded machine; loopback does not lose datagrams).
pub async fn raw_udp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.send_to(bytes, addr).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

pub async fn udp_exchange(addr: SocketAddr, msg: &Message) -> Message {
    let reply = raw_udp(addr, &msg.to_vec().expect("encode")).await;
    Message::from_vec(&reply).expect("decode reply")
}

/// One plain query over UDP.
pub async fn ask(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp_exchange(addr, &query(name, rtype, false)).await
}

/// The answers as text: addresses for A records, names for PTR.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::PTR(p) => p.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}
