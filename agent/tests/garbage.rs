//! Garbage and fragments through the whole packet path (decode, reassembly, HTTP, records),
//! as the capture thread drives it: nothing panics and memory stays within the caps.
//! A proptest corpus stands in for `cargo fuzz` (no nightly toolchain needed in CI).

use etherparse::PacketBuilder;
use proptest::prelude::*;
use whisperer::decode::{decode, Decoded, Link};
use whisperer::flows::{FlowTable, Limits};
use whisperer::metrics::Metrics;
use whisperer::record::{write_line, Record};

fn limits() -> Limits {
    Limits {
        max_header: 4096,
        flow_buffer: 16 << 10,
        memory: 256 << 10,
        max_flows: 64,
        idle_ns: 1_000_000_000,
    }
}

/// A well-formed Ethernet/IPv4/TCP frame.
fn frame(src_port: u16, dst_port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    // Clients 10.0.0.1-3 (by port), the server 10.0.0.9:80.
    let client = |port: u16| [10, 0, 0, (port % 3) as u8 + 1];
    let (src, dst) = if dst_port == 80 {
        (client(src_port), [10, 0, 0, 9])
    } else {
        ([10, 0, 0, 9], client(dst_port))
    };
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .tcp(src_port, dst_port, seq, 65535);
    if flags & 1 != 0 {
        b = b.syn();
    }
    if flags & 2 != 0 {
        b = b.fin();
    }
    if flags & 4 != 0 {
        b = b.rst();
    }
    if flags & 8 != 0 {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("build");
    out
}

/// Feeds frames as the capture thread does and checks the bounds after each one.
fn drive(frames: &[Vec<u8>], link: Link) -> Vec<Record> {
    let l = limits();
    let mut table = FlowTable::new(l, Metrics::default());
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if let Decoded::Tcp(seg) = decode(link, f) {
            table.segment(&seg, f.len() as u32, i as u64 * 1_000, &mut out);
        }
        assert!(
            table.mem() <= l.memory,
            "reassembly memory {} over {}",
            table.mem(),
            l.memory
        );
        assert!(table.len() <= l.max_flows);
    }
    table.sweep(u64::MAX / 2, &mut out);
    table.close_all(u64::MAX / 2, &mut out);
    assert!(table.is_empty());
    // Every record serializes to one JSON line.
    let mut line = Vec::new();
    for r in &out {
        line.clear();
        write_line(r, [None, None], &mut line);
        assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
    }
    out
}

const HTTP_BITS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"Content-Length: 18446744073709551615\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffffff\r\n",
    b"\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
    b"\x00\xff\x16\x03\x01",
];

fn http_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(HTTP_BITS).prop_map(|b| b.to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes on every link type.
    #[test]
    fn random_frames(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..60)) {
        for link in [Link::Ethernet, Link::RawIp, Link::LinuxSll, Link::LinuxSll2, Link::Null] {
            drive(&frames, link);
        }
    }

    /// Well-formed frames cut short or with bytes flipped.
    #[test]
    fn truncated_and_garbled(
        segs in prop::collection::vec((0u16..4, any::<u32>(), 0u8..16, http_soup()), 1..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 40),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..20),
    ) {
        let mut frames: Vec<Vec<u8>> = segs
            .iter()
            .map(|(p, seq, flags, payload)| {
                let (s, d) = if p % 2 == 0 { (40000 + p, 80) } else { (80, 40000 + p - 1) };
                frame(s, d, *seq, *flags, payload)
            })
            .collect();
        for (f, cut) in frames.iter_mut().zip(&cuts) {
            if !f.is_empty() && cut.index(4) == 0 {
                let at = cut.index(f.len());
                f.truncate(at);
            }
        }
        for (at, byte) in &flips {
            let n = frames.len().max(1);
            if let Some(f) = frames.get_mut(at.index(n)) {
                if !f.is_empty() {
                    let i = at.index(f.len());
                    f[i] ^= byte;
                }
            }
        }
        drive(&frames, Link::Ethernet);
    }

    /// One connection whose segments arrive overlapping, duplicated and out of order:
    /// with no byte lost, every request is paired with its response.
    #[test]
    fn overlapping_out_of_order_segments(
        n in 1usize..6,
        cuts in prop::collection::vec(1usize..50, 1..30),
        order in prop::collection::vec(any::<u16>(), 0..30),
    ) {
        let mut req = Vec::new();
        let mut resp = Vec::new();
        for i in 0..n {
            req.extend_from_slice(format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            resp.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        }
        let mut frames = vec![
            frame(40000, 80, 100, 1, b""),
            frame(80, 40000, 900, 1 | 8, b""),
        ];
        let pieces = |data: &[u8], src: u16, dst: u16, isn: u32| {
            let mut v = Vec::new();
            let mut at = 0;
            let mut k = 0;
            while at < data.len() {
                let len = cuts[k % cuts.len()];
                k += 1;
                // Overlap the previous piece by a few bytes now and then.
                let start = at.saturating_sub(len % 3);
                let end = (at + len).min(data.len());
                v.push(frame(src, dst, isn + 1 + start as u32, 8, &data[start..end]));
                at = end;
            }
            v
        };
        let mut req_frames = pieces(&req, 40000, 80, 100);
        let resp_frames = pieces(&resp, 80, 40000, 900);
        // Shuffle the request's segments (keeping the first in place), add duplicates.
        let m = req_frames.len();
        for (i, o) in order.iter().enumerate() {
            if m > 2 {
                let a = 1 + i % (m - 1);
                let b = 1 + (*o as usize) % (m - 1);
                req_frames.swap(a, b);
            }
        }
        let dup: Vec<Vec<u8>> = req_frames.iter().take(2).cloned().collect();
        frames.extend(req_frames);
        frames.extend(dup);
        frames.extend(resp_frames);
        frames.push(frame(40000, 80, 100 + 1 + req.len() as u32, 2 | 8, b""));
        frames.push(frame(80, 40000, 900 + 1 + resp.len() as u32, 2 | 8, b""));
        let l = Limits { flow_buffer: 1 << 20, memory: 8 << 20, ..limits() };
        let mut table = FlowTable::new(l, Metrics::default());
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if let Decoded::Tcp(seg) = decode(Link::Ethernet, f) {
                table.segment(&seg, f.len() as u32, i as u64, &mut out);
            }
        }
        let paths: Vec<String> = out
            .iter()
            .filter_map(|r| match r {
                Record::Http(e) if e.status == Some(200) && e.issue.is_none() => e.path.as_deref().map(String::from),
                _ => None,
            })
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("/r{i}")).collect();
        prop_assert_eq!(paths, want);
    }
}

/// A 10 MB header in 1460-byte segments: bounded, reported, and the next request parsed.
#[test]
fn ten_megabyte_header() {
    let mut req = b"GET /huge HTTP/1.1\r\nX-Huge: ".to_vec();
    req.extend(std::iter::repeat_n(b'h', 10 << 20));
    req.extend_from_slice(b"\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    let mut frames = vec![
        frame(40000, 80, 100, 1, b""),
        frame(80, 40000, 900, 1 | 8, b""),
    ];
    for (i, chunk) in req.chunks(1460).enumerate() {
        frames.push(frame(40000, 80, 101 + (i * 1460) as u32, 8, chunk));
    }
    frames.push(frame(80, 40000, 901, 8, b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let out = drive(&frames, Link::Ethernet);
    let got: Vec<(Option<&str>, Option<u16>, Option<&str>)> = out
        .iter()
        .filter_map(|r| match r {
            Record::Http(e) => Some((e.path.as_deref(), e.status, e.issue.map(|i| i.as_str()))),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("/huge"), Some(431), Some("header_too_large")),
            (Some("/after"), Some(200), None)
        ]
    );
}

/// A half-open flow at the deadline: the request is reported, nothing is left behind.
#[test]
fn half_open_at_deadline() {
    let frames = vec![
        frame(40000, 80, 100, 1, b""),
        frame(80, 40000, 900, 1 | 8, b""),
        frame(40000, 80, 101, 8, b"GET /never HTTP/1.1\r\n\r\n"),
        frame(
            80,
            40000,
            901,
            8,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart",
        ),
    ];
    let out = drive(&frames, Link::Ethernet);
    assert!(
        matches!(
            &out[..],
            [Record::Http(e)] if e.path.as_deref() == Some("/never") && e.status == Some(200) && e.issue.is_some()
        ),
        "{out:?}"
    );
}
