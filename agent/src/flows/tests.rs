use super::*;

/// method, path, status, issue of one exchange.
type Seen = (
    Option<String>,
    Option<String>,
    Option<u16>,
    Option<&'static str>,
);

const C: &str = "10.0.0.1:40000";
const S: &str = "10.0.0.2:80";

struct Conn {
    table: FlowTable,
    out: Vec<Record>,
    seq: [u32; 2],
    ts: Ts,
}

impl Conn {
    fn new(limits: Limits) -> Conn {
        Conn {
            table: FlowTable::new(limits, Metrics::default()),
            out: Vec::new(),
            seq: [1000, 5000],
            ts: 1_000_000_000,
        }
    }

    fn send(&mut self, from_client: bool, flags: &str, payload: &[u8]) {
        let d = usize::from(!from_client);
        let (src, dst) = if from_client { (C, S) } else { (S, C) };
        self.send_at(d, src, dst, self.seq[d], flags, payload);
        self.seq[d] = self.seq[d].wrapping_add(
            payload.len() as u32 + u32::from(flags.contains('S') || flags.contains('F')),
        );
    }

    fn send_at(&mut self, _d: usize, src: &str, dst: &str, seq: u32, flags: &str, payload: &[u8]) {
        self.ts += 1_000_000;
        let seg = Segment {
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload,
        };
        self.table
            .segment(&seg, payload.len() as u32 + 54, self.ts, &mut self.out);
    }

    fn handshake(&mut self) {
        self.send(true, "S", b"");
        self.send(false, "SA", b"");
        self.send(true, "A", b"");
    }

    fn fin(&mut self) {
        self.send(true, "FA", b"");
        self.send(false, "FA", b"");
    }

    fn http(&self) -> Vec<Seen> {
        self.out
            .iter()
            .filter_map(|r| match r {
                Record::Http(e) => Some((
                    e.method.as_deref().map(str::to_string),
                    e.path.as_deref().map(str::to_string),
                    e.status,
                    e.issue.map(Issue::as_str),
                )),
                _ => None,
            })
            .collect()
    }
}

fn ex(
    m: &str,
    p: &str,
    s: u16,
) -> (
    Option<String>,
    Option<String>,
    Option<u16>,
    Option<&'static str>,
) {
    (Some(m.into()), Some(p.into()), Some(s), None)
}

#[test]
fn one_exchange_with_sizes_and_names_of_ends() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    c.send(true, "PA", b"GET /hello HTTP/1.1\r\nHost: s\r\n\r\n");
    c.send(
        false,
        "PA",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    );
    c.fin();
    assert_eq!(c.http(), [ex("GET", "/hello", 200)]);
    let Record::Http(e) = &c.out[0] else { panic!() };
    assert_eq!(e.client, C.parse().expect("addr"));
    assert_eq!(e.server, S.parse().expect("addr"));
    assert_eq!((e.request_bytes, e.response_bytes), (32, 43));
    assert!(e.end > e.start);
    assert_eq!(c.table.len(), 0);
    assert_eq!(c.table.mem(), 0);
}

#[test]
fn pipelined_and_keep_alive_pair_in_order() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    c.send(
        true,
        "PA",
        b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    c.send(false, "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    c.send(
        false,
        "PA",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    c.send(
        true,
        "PA",
        b"POST /d HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    c.send(
        false,
        "PA",
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        c.http(),
        [
            ex("GET", "/a", 200),
            ex("HEAD", "/b", 200),
            ex("GET", "/c", 404),
            ex("POST", "/d", 201)
        ]
    );
}

#[test]
fn reordered_segments_and_a_reset_mid_response() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    let req = b"GET /slow HTTP/1.1\r\n\r\n";
    // The second half of the request arrives first.
    let s0 = c.seq[0];
    c.send_at(0, C, S, s0 + 10, "PA", &req[10..]);
    c.send_at(0, C, S, s0, "PA", &req[..10]);
    c.seq[0] += req.len() as u32;
    c.send(
        false,
        "PA",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial",
    );
    c.send(false, "R", b"");
    assert_eq!(
        c.http(),
        [(
            Some("GET".into()),
            Some("/slow".into()),
            Some(200),
            Some("closed")
        )]
    );
}

#[test]
fn non_http_flow_gets_a_summary() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    c.send(true, "PA", b"\x16\x03\x01 client hello");
    c.send(false, "PA", b"\x16\x03\x03 server hello");
    c.fin();
    assert!(c.http().is_empty());
    let Some(Record::Flow(f)) = c.out.first() else {
        panic!("{:?}", c.out)
    };
    assert_eq!(f.client, C.parse().expect("addr"));
    assert_eq!(f.packets, [4, 3]);
    assert_eq!(f.close, Close::Fin);
}

#[test]
fn a_request_without_response_is_reported_at_shutdown() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    c.send(true, "PA", b"GET /pending HTTP/1.1\r\n\r\n");
    let ts = c.ts + 1;
    c.table.close_all(ts, &mut c.out);
    assert_eq!(
        c.http(),
        [(
            Some("GET".into()),
            Some("/pending".into()),
            None,
            Some("no_response")
        )]
    );
}

#[test]
fn midstream_pickup_resyncs_on_a_start_line() {
    let mut c = Conn::new(Limits::default());
    // No handshake: the capture started while a response body was flowing.
    c.send(false, "PA", b"tail of an old body");
    c.send(true, "PA", b"GET /next HTTP/1.1\r\n\r\n");
    c.send(false, "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.http(), [ex("GET", "/next", 200)]);
}

#[test]
fn idle_flows_are_swept() {
    let mut c = Conn::new(Limits {
        idle_ns: 1_000,
        ..Limits::default()
    });
    c.handshake();
    let later = c.ts + 10_000;
    c.table.sweep(later, &mut c.out);
    assert_eq!(c.table.len(), 0);
    assert!(matches!(
        c.out[..],
        [Record::Flow(FlowSummary {
            close: Close::Idle,
            ..
        })]
    ));
}

#[test]
fn memory_cap_evicts_oldest_flows() {
    let limits = Limits {
        memory: 256 << 10,
        flow_buffer: 64 << 10,
        ..Limits::default()
    };
    let m = Metrics::default();
    let mut t = FlowTable::new(limits, m.clone());
    let mut out = Vec::new();
    let chunk = vec![b'x'; 1400];
    for i in 0..200u16 {
        let src: SocketAddr = format!("10.0.1.{}:{}", i % 250, 1000 + i)
            .parse()
            .expect("addr");
        let dst: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        // Out-of-order data only: every byte waits in the buffer.
        for k in 1..40u32 {
            let seg = Segment {
                src,
                dst,
                seq: 100 + k * 2000,
                syn: false,
                ack: true,
                fin: false,
                rst: false,
                payload: &chunk,
            };
            t.segment(&seg, 1454, u64::from(i) * 1000 + u64::from(k), &mut out);
            assert!(t.mem() <= limits.memory, "mem {} over cap", t.mem());
        }
    }
    assert!(
        m.evictions
            .get_or_create(&EvictionLabels {
                reason: Eviction::memory
            })
            .get()
            > 0
    );
    assert!(out
        .iter()
        .any(|r| matches!(r, Record::Flow(f) if f.close == Close::Evicted)));
}

#[test]
fn flow_count_cap() {
    let limits = Limits {
        max_flows: 10,
        ..Limits::default()
    };
    let mut t = FlowTable::new(limits, Metrics::default());
    let mut out = Vec::new();
    for i in 0..100u16 {
        let seg = Segment {
            src: format!("10.0.0.1:{}", 2000 + i).parse().expect("addr"),
            dst: "10.0.0.2:80".parse().expect("addr"),
            seq: 1,
            syn: true,
            ack: false,
            fin: false,
            rst: false,
            payload: b"",
        };
        t.segment(&seg, 60, u64::from(i), &mut out);
        assert!(t.len() <= 10);
    }
    assert_eq!(out.len(), 90);
}

#[test]
fn a_lost_response_is_a_gap_not_a_wrong_pair() {
    let mut c = Conn::new(Limits::default());
    c.handshake();
    c.send(true, "PA", b"GET /first HTTP/1.1\r\n\r\n");
    // The whole answer to /first is lost from the capture (its bytes never arrive)...
    let lost = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    c.seq[1] = c.seq[1].wrapping_add(lost.len() as u32);
    c.send(true, "PA", b"GET /second HTTP/1.1\r\n\r\n");
    // ... and the next segment is past the hole; the stream skips it when it closes.
    c.send(false, "PA", b"HTTP/1.1 204 No Content\r\n\r\n");
    c.fin();
    assert_eq!(
        c.http(),
        [
            (Some("GET".into()), Some("/first".into()), None, Some("gap")),
            ex("GET", "/second", 204),
        ]
    );
}
