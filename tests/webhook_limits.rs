//! What one client can hold, over real TLS on loopback: body size, concurrent reviews, the
//! body byte budget, connections, idle and slow connections, and HTTP/2 Rapid Reset. In
//! every case the server stays alive and answers the next request.

use support::https;
mod support;

use std::time::{Duration, Instant};

use support::{poll_until, WAIT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use whisperer_injector::webhook::MAX_BODY_BYTES;

const OPTIN: &str = "review-pod-optin.json";

/// Reads until the server closes; panics if it has not within `limit`. Returns how long it
/// took and what was read.
async fn closed_within(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "server kept the connection open for {limit:?}; read: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn head(len: usize) -> String {
    format!("POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n")
}

/// The server is alive and answers a real review.
async fn still_answers(running: &whisperer_injector::app::Running, ca: &str) {
    let mut conn = https::connect(running.addr, ca, true)
        .await
        .expect("handshake");
    let ans = conn
        .post("/mutate", "application/json", https::fixture(OPTIN))
        .await;
    assert_eq!(ans.status, 200, "{:?}", String::from_utf8_lossy(&ans.body));
    assert_eq!(ans.json()["response"]["allowed"], true);
}

async fn sample(running: &whisperer_injector::app::Running, series: &str) -> f64 {
    https::sample(&https::metrics(running.admin_addr).await, series).unwrap_or(0.0)
}

#[tokio::test]
async fn oversized_reviews_get_413_whether_declared_or_streamed() {
    let (running, ca) = https::started(&[]).await;

    // Declared too large: refused from the head alone, nothing of the body is sent.
    let mut tls = https::raw_tls(running.addr, &ca, "http/1.1").await;
    let started = Instant::now();
    tls.write_all(head(MAX_BODY_BYTES + 1).as_bytes())
        .await
        .expect("write");
    let (_, answer) = closed_within(&mut tls, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""error":"too-large""#), "{text}");
    assert!(text.contains("3145728 byte limit"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Streamed without a length (chunked): refused once it passes the cap.
    let mut tls = https::raw_tls(running.addr, &ca, "http/1.1").await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    for _ in 0..(MAX_BODY_BYTES / 0x10000 + 2) {
        if tls.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server answered and closed
        }
    }
    let (_, answer) = closed_within(&mut tls, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""error":"too-large""#), "{text}");

    assert_eq!(
        sample(
            &running,
            r#"whisperer_webhook_requests_total{outcome="rejected",reason="too-large"}"#
        )
        .await,
        2.0
    );
    still_answers(&running, &ca).await;
    running.shutdown().await;
}

#[tokio::test]
async fn reviews_beyond_the_concurrency_limit_get_503_at_once() {
    let (running, ca) =
        https::started(&["--max-concurrent-reviews", "2", "--request-timeout", "20s"]).await;
    let body = https::fixture(OPTIN);
    let (first, rest) = body.split_at(100);

    // Two reviews whose bodies are still coming hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tls = https::raw_tls(running.addr, &ca, "http/1.1").await;
        tls.write_all(head(body.len()).as_bytes())
            .await
            .expect("write");
        tls.write_all(first.as_bytes()).await.expect("write");
        tls.flush().await.expect("flush");
        held.push(tls);
    }
    poll_until(WAIT, "two reviews in flight", || async {
        (sample(&running, "whisperer_webhook_requests_in_flight").await == 2.0).then_some(())
    })
    .await;

    let mut conn = https::connect(running.addr, &ca, true)
        .await
        .expect("handshake");
    let started = Instant::now();
    let ans = conn.post("/mutate", "application/json", body.clone()).await;
    assert_eq!(ans.status, 503, "{:?}", String::from_utf8_lossy(&ans.body));
    let err = ans.json();
    assert_eq!(err["error"], "overloaded");
    assert!(err["message"]
        .as_str()
        .expect("message")
        .contains("2 admission requests"));
    // At once: a queued review would wait for a slot, i.e. for the held ones' 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after {:?}",
        started.elapsed()
    );
    // Probes are not admission requests: they still answer.
    assert_eq!(conn.get("/readyz").await.status, 200);
    assert_eq!(
        sample(
            &running,
            r#"whisperer_webhook_requests_total{outcome="rejected",reason="overloaded"}"#
        )
        .await,
        1.0
    );

    // The held reviews finish normally, and the slots are free again.
    for mut tls in held {
        tls.write_all(rest.as_bytes()).await.expect("write rest");
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let ans = conn.post("/mutate", "application/json", body).await;
    assert_eq!(ans.status, 200);
    running.shutdown().await;
}

#[tokio::test]
async fn the_body_byte_budget_sheds_load_before_memory_is_used() {
    let (running, ca) = https::started(&[
        "--max-buffered-body-bytes",
        "64KiB",
        "--request-timeout",
        "20s",
    ])
    .await;
    // One slow upload declares 60,000 bytes: the budget is charged for all of it at once.
    let mut slow = https::raw_tls(running.addr, &ca, "http/1.1").await;
    slow.write_all(head(60_000).as_bytes())
        .await
        .expect("write");
    slow.write_all(b"{\"apiVersion\":").await.expect("write");
    slow.flush().await.expect("flush");
    poll_until(WAIT, "the budget to be charged", || async {
        (sample(&running, "whisperer_webhook_body_bytes_buffered").await == 60_000.0).then_some(())
    })
    .await;

    // 5,536 bytes are left; a 9,790-byte review does not fit.
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let ans = conn
        .post("/mutate", "application/json", https::fixture(OPTIN))
        .await;
    assert_eq!(ans.status, 503, "{:?}", String::from_utf8_lossy(&ans.body));
    assert_eq!(ans.json()["error"], "body-budget");
    // A small review still fits beside it.
    let small = https::fixture("review-configmap.json");
    assert!(small.len() < 5_536);
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    assert_eq!(
        conn.post("/mutate", "application/json", small).await.status,
        200
    );

    // The slow client goes away: its bytes are given back.
    drop(slow);
    poll_until(WAIT, "the budget to be released", || async {
        (sample(&running, "whisperer_webhook_body_bytes_buffered").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        sample(
            &running,
            r#"whisperer_webhook_requests_total{outcome="rejected",reason="body-budget"}"#
        )
        .await,
        1.0
    );
    still_answers(&running, &ca).await;
    running.shutdown().await;
}

#[tokio::test]
async fn connections_that_send_nothing_or_go_idle_are_closed() {
    let (running, ca) =
        https::started(&["--header-timeout", "300ms", "--idle-timeout", "600ms"]).await;
    // Upper bounds only: the timeouts are 300 and 600 ms.
    let limit = Duration::from_secs(20);

    // TCP only, no TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("tcp");
    let (took, _) = closed_within(&mut tcp, limit).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");

    // TLS done, HTTP/1.1 agreed, not one byte of a request. The header timeout runs from the
    // accept, so it is measured from before the connect (a handshake on a loaded machine takes
    // its time too).
    let connecting = Instant::now();
    let mut tls = https::raw_tls(running.addr, &ca, "http/1.1").await;
    let (_, read) = closed_within(&mut tls, limit).await;
    let took = connecting.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(read.is_empty(), "{:?}", String::from_utf8_lossy(&read));

    // HTTP/2 preface and settings, never a stream.
    let conn = https::connect(running.addr, &ca, true)
        .await
        .expect("handshake");
    tokio::time::timeout(limit, conn.driver)
        .await
        .expect("h2 connection without streams closed")
        .expect("driver");

    let header_timeouts = sample(
        &running,
        r#"whisperer_connections_closed_total{listener="webhook",reason="header_timeout"}"#,
    )
    .await;
    assert_eq!(header_timeouts, 3.0);

    // After a request, HTTP/1.1 keep-alive and HTTP/2 connections close once idle.
    for h2 in [false, true] {
        let mut conn = https::connect(running.addr, &ca, h2)
            .await
            .expect("handshake");
        // Idle from the end of the request, which is after this instant: the answer may reach
        // this task late on a loaded machine, the close cannot come early.
        let asking = Instant::now();
        assert_eq!(conn.get("/healthz").await.status, 200);
        tokio::time::timeout(limit, conn.driver)
            .await
            .unwrap_or_else(|_| panic!("idle connection (h2: {h2}) closed"))
            .expect("driver");
        assert!(
            asking.elapsed() >= Duration::from_millis(550),
            "closed {:?} after the request",
            asking.elapsed()
        );
    }
    assert_eq!(
        sample(
            &running,
            r#"whisperer_connections_closed_total{listener="webhook",reason="idle"}"#
        )
        .await,
        2.0
    );

    // A connection in use is not idle, however long it lives.
    let mut busy = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(busy.get("/healthz").await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!busy.driver.is_finished());
    still_answers(&running, &ca).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_client_trickling_a_request_head_is_cut_off() {
    let (running, ca) = https::started(&["--header-timeout", "500ms"]).await;
    let mut tls = https::raw_tls(running.addr, &ca, "http/1.1").await;
    // A first request as normal, so the trickle is on a kept-alive connection.
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // Then one byte of a header every 50 ms: bytes keep coming, the head never ends.
    tls.write_all(b"POST /mutate HTTP/1.1\r\nx-slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut cut = false;
    // The idle timeout (120 s) is far away: a cut is the header timeout's.
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
        // A closed socket shows on read sooner than on write.
        let mut one = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut one)).await {
            if matches!(r, Ok(0) | Err(_)) {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "server kept reading a trickled head for 20 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    still_answers(&running, &ca).await;
    running.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let (running, ca) = https::started(&["--max-connections", "3"]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = https::connect(running.addr, &ca, false)
            .await
            .expect("handshake");
        assert_eq!(c.get("/healthz").await.status, 200);
        open.push(c);
    }
    let started = Instant::now();
    let refused = https::connect(running.addr, &ca, false).await;
    assert!(refused.is_err(), "a 4th connection must be refused");
    // At once: a connection left in the backlog would hang in the handshake.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after {:?}",
        started.elapsed()
    );
    let m = https::metrics(running.admin_addr).await;
    assert_eq!(
        https::sample(&m, r#"whisperer_connections{listener="webhook"}"#),
        Some(3.0)
    );
    assert!(
        https::sample(
            &m,
            r#"whisperer_connections_closed_total{listener="webhook",reason="over_limit"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    // Connections already open keep working, and a freed place is taken again.
    for c in &mut open {
        assert_eq!(c.get("/healthz").await.status, 200);
    }
    open.pop();
    let mut again = poll_until(WAIT, "a free connection slot", || {
        let ca = ca.clone();
        let addr = running.addr;
        async move { https::connect(addr, &ca, true).await.ok() }
    })
    .await;
    let ans = again
        .post("/mutate", "application/json", https::fixture(OPTIN))
        .await;
    assert_eq!(ans.status, 200);
    running.shutdown().await;
}

/// HTTP/2 frames written by hand: a client that opens streams and resets them at once, or
/// that never answers a PING.
mod h2_raw {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Preface, empty SETTINGS and one `GET /healthz` on stream 1.
    pub fn one_request() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frame(&mut out, 0x4, 0, 0, &[]);
        frame(&mut out, 0x1, 0x4 | 0x1, 1, &healthz());
        out
    }

    /// HPACK: :method GET (static 2), :scheme https (7), :path and :authority literals.
    fn healthz() -> Vec<u8> {
        let mut block = vec![0x82, 0x87, 0x04, 8];
        block.extend_from_slice(b"/healthz");
        block.extend_from_slice(&[0x01, 9]);
        block.extend_from_slice(b"localhost");
        block
    }

    /// Preface, empty SETTINGS, then `streams` pairs of HEADERS (GET /healthz) + RST_STREAM.
    pub fn burst(streams: u32) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frame(&mut out, 0x4, 0, 0, &[]);
        let block = healthz();
        for i in 0..streams {
            let id = 1 + 2 * i;
            frame(&mut out, 0x1, 0x4 | 0x1, id, &block); // END_HEADERS | END_STREAM
            frame(&mut out, 0x3, 0, id, &8u32.to_be_bytes()); // RST_STREAM CANCEL
        }
        out
    }

    /// Whether `bytes` hold a PING from the server (not an ACK).
    pub fn has_ping(bytes: &[u8]) -> bool {
        frames(bytes).any(|(kind, flags, _)| kind == 0x6 && flags & 0x1 == 0)
    }

    fn frames(bytes: &[u8]) -> impl Iterator<Item = (u8, u8, &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let h = bytes.get(at..at + 9)?;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let body = bytes.get(at + 9..at + 9 + len)?;
            at += 9 + len;
            Some((h[3], h[4], body))
        })
    }

    /// The error code of the first GOAWAY in `bytes` (server frames after its preface).
    pub fn goaway(bytes: &[u8]) -> Option<u32> {
        frames(bytes).find_map(|(kind, _, body)| {
            (kind == 0x7 && body.len() >= 8)
                .then(|| u32::from_be_bytes([body[4], body[5], body[6], body[7]]))
        })
    }
}

#[tokio::test]
async fn http2_rapid_reset_is_cut_off_and_others_are_served() {
    let (running, ca) = https::started(&[]).await;
    let addr = running.addr;

    // A healthy API server's connection keeps sending reviews throughout.
    let healthy = {
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut conn = https::connect(addr, &ca, true).await.expect("handshake");
            let body = https::fixture(OPTIN);
            let mut worst = Duration::ZERO;
            for _ in 0..100 {
                let t = Instant::now();
                let ans = conn.post("/mutate", "application/json", body.clone()).await;
                assert_eq!(ans.status, 200);
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };

    let mut attackers = Vec::new();
    for _ in 0..8 {
        let ca = ca.clone();
        attackers.push(tokio::spawn(async move {
            let mut tls = https::raw_tls(addr, &ca, "h2").await;
            // Written without reading; the server may close before all of it is taken.
            let burst = h2_raw::burst(5_000);
            let _ = tls.write_all(&burst).await;
            let _ = tls.flush().await;
            let (_, read) = closed_within(&mut tls, Duration::from_secs(20)).await;
            h2_raw::goaway(&read)
        }));
    }
    for a in attackers {
        let code = a.await.expect("attacker");
        // 0xb: ENHANCE_YOUR_CALM, h2's answer to too many streams reset before being accepted.
        assert_eq!(code, Some(0xb), "the attacking connection gets GOAWAY");
    }
    let worst = healthy.await.expect("healthy client");
    assert!(
        worst < Duration::from_secs(1),
        "healthy reviews answered during the attack; slowest {worst:?}"
    );
    still_answers(&running, &ca).await;
    running.shutdown().await;
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    let (running, ca) = https::started(&[
        "--h2-keepalive-interval",
        "200ms",
        "--h2-keepalive-timeout",
        "300ms",
        "--idle-timeout",
        "60s",
    ])
    .await;
    // Speaks HTTP/2 by hand, gets its answer, then never acknowledges a PING: only the
    // keep-alive can find it out (the idle timeout is a minute away).
    let mut tls = https::raw_tls(running.addr, &ca, "h2").await;
    tls.write_all(&h2_raw::one_request()).await.expect("write");
    // Half the idle timeout: only the keep-alive can have closed it by then.
    let (_, read) = closed_within(&mut tls, Duration::from_secs(30)).await;
    assert!(h2_raw::has_ping(&read), "the server pinged");
    still_answers(&running, &ca).await;
    running.shutdown().await;
}
