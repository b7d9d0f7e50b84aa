//! From a captured frame to the TCP facts the flow table needs. Never panics: anything that
//! is not a well-formed IPv4/IPv6 TCP segment is reported as [`Decoded::Other`].

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

/// The link-layer header types the agent understands (libpcap DLT numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// DLT_EN10MB (1).
    Ethernet,
    /// DLT_RAW (12 on most systems, 101 as LINKTYPE_RAW).
    RawIp,
    /// DLT_LINUX_SLL (113), what libpcap gives on `any`.
    LinuxSll,
    /// DLT_LINUX_SLL2 (276).
    LinuxSll2,
    /// DLT_NULL / loopback of BSDs (0), rarely on Linux.
    Null,
    /// Anything else: frames are written to pcapng but not parsed.
    Unknown(i32),
}

impl Link {
    pub fn from_dlt(dlt: i32) -> Link {
        match dlt {
            1 => Link::Ethernet,
            12 | 14 | 101 => Link::RawIp,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            0 => Link::Null,
            other => Link::Unknown(other),
        }
    }

    /// The LINKTYPE_ value written into the pcapng interface block.
    pub fn linktype(self) -> u16 {
        match self {
            Link::Ethernet => 1,
            Link::RawIp => 101,
            Link::LinuxSll => 113,
            Link::LinuxSll2 => 276,
            Link::Null => 0,
            Link::Unknown(d) => u16::try_from(d).unwrap_or(u16::MAX),
        }
    }
}

/// One TCP segment, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Tcp(Segment<'a>),
    /// Not TCP over IP (ARP, UDP, ICMP, fragments, garbage ...).
    Other,
}

/// Decodes a frame of the given link type.
pub fn decode(link: Link, frame: &[u8]) -> Decoded<'_> {
    let sliced = match link {
        Link::Ethernet => SlicedPacket::from_ethernet(frame),
        Link::RawIp => SlicedPacket::from_ip(frame),
        Link::LinuxSll => match frame.get(14..16).zip(frame.get(16..)) {
            Some((proto, rest)) => SlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                rest,
            ),
            None => return Decoded::Other,
        },
        Link::LinuxSll2 => match frame.get(0..2).zip(frame.get(20..)) {
            Some((proto, rest)) => SlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                rest,
            ),
            None => return Decoded::Other,
        },
        // Host byte order family word, then the IP packet.
        Link::Null => match frame.get(4..) {
            Some(rest) => SlicedPacket::from_ip(rest),
            None => return Decoded::Other,
        },
        Link::Unknown(_) => return Decoded::Other,
    };
    let Ok(p) = sliced else {
        return Decoded::Other;
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return Decoded::Other,
    };
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        return Decoded::Other;
    };
    Decoded::Tcp(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .ack(1)
            .psh();
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("build");
        out
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let f = tcp_frame(b"GET / HTTP/1.1\r\n\r\n");
        let Decoded::Tcp(s) = decode(Link::Ethernet, &f) else {
            panic!("not tcp")
        };
        assert_eq!(s.src, "10.0.0.1:40000".parse().expect("addr"));
        assert_eq!(s.dst, "10.0.0.2:80".parse().expect("addr"));
        assert_eq!(s.seq, 1000);
        assert_eq!(s.payload, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn linux_sll_any() {
        let eth = tcp_frame(b"x");
        // SLL: packet type, ARPHRD, addr len, 8 address bytes, protocol; then the IP packet.
        let mut sll = vec![0u8, 0, 0, 1, 0, 6, 1, 1, 1, 1, 1, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&eth[14..]);
        assert!(matches!(decode(Link::LinuxSll, &sll), Decoded::Tcp(s) if s.payload == b"x"));
        let mut sll2 = vec![
            0x08u8, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 1, 1, 1, 1, 1, 0, 0,
        ];
        sll2.extend_from_slice(&eth[14..]);
        assert!(matches!(decode(Link::LinuxSll2, &sll2), Decoded::Tcp(s) if s.payload == b"x"));
    }

    #[test]
    fn short_and_garbage_frames_are_other() {
        for link in [
            Link::Ethernet,
            Link::RawIp,
            Link::LinuxSll,
            Link::LinuxSll2,
            Link::Null,
        ] {
            assert_eq!(decode(link, &[]), Decoded::Other);
            assert_eq!(decode(link, &[0x45; 7]), Decoded::Other);
        }
        let f = tcp_frame(b"hello");
        assert_eq!(decode(Link::Ethernet, &f[..30]), Decoded::Other);
        assert_eq!(decode(Link::Unknown(999), &f), Decoded::Other);
    }
}
