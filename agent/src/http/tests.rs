use super::*;

/// Feeds `data` in pieces of `step` bytes, as TCP might deliver it.
fn run(p: &mut Parser, data: &[u8], step: usize, ctx: Ctx) -> Vec<Event> {
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = p.feed(rest, 7, ctx, &mut out);
            rest = &rest[n..];
        }
    }
    out
}

fn ends(events: &[Event]) -> Vec<(u64, Option<Issue>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::End { bytes, issue, .. } => Some((*bytes, *issue)),
            _ => None,
        })
        .collect()
}

fn methods(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Request(h) => Some(format!("{} {}", h.method, h.path)),
            _ => None,
        })
        .collect()
}

fn statuses(events: &[Event]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Response { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn pipelined_requests_at_every_split() {
    let data = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPUT /c?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for step in 1..data.len() {
        let mut p = Parser::new(Role::Request, 1024);
        let ev = run(&mut p, data, step, Ctx::default());
        assert_eq!(
            methods(&ev),
            ["GET /a", "POST /b", "PUT /c?q=1"],
            "step {step}"
        );
        assert_eq!(
            ends(&ev),
            [(28, None), (44, None), (64, None)],
            "step {step}"
        );
    }
}

#[test]
fn responses_chunked_length_and_no_body() {
    let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnopHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    for step in [1, 2, 3, 7, 1000] {
        let mut p = Parser::new(Role::Response, 1024);
        let ev = run(&mut p, data, step, Ctx::default());
        assert_eq!(statuses(&ev), [200, 404, 204, 304], "step {step}");
        assert!(ends(&ev).iter().all(|(_, i)| i.is_none()), "{ev:?}");
        assert_eq!(ends(&ev).len(), 4);
    }
}

#[test]
fn head_response_has_no_body_and_interim_is_skipped() {
    let mut p = Parser::new(Role::Response, 1024);
    let ctx = Ctx {
        request_is_head: true,
        ..Ctx::default()
    };
    let ev = run(
        &mut p,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        1000,
        ctx,
    );
    assert_eq!(statuses(&ev), [200]);
    assert_eq!(ends(&ev), [(39, None)]);
}

#[test]
fn until_close_body_ends_at_finish() {
    let mut p = Parser::new(Role::Response, 1024);
    let mut ev = run(
        &mut p,
        b"HTTP/1.0 200 OK\r\n\r\nsome body",
        4,
        Ctx::default(),
    );
    assert!(ends(&ev).is_empty());
    p.finish(9, Issue::Closed, &mut ev);
    assert_eq!(ends(&ev), [(28, None)]);
    let mut p = Parser::new(Role::Response, 1024);
    let mut ev = run(
        &mut p,
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
        4,
        Ctx::default(),
    );
    p.finish(9, Issue::Closed, &mut ev);
    assert_eq!(ends(&ev), [(44, Some(Issue::Closed))]);
}

#[test]
fn switching_protocols_stops_parsing() {
    let mut p = Parser::new(Role::Response, 1024);
    let ev = run(
        &mut p,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        3,
        Ctx::default(),
    );
    assert_eq!(statuses(&ev), [101]);
    assert!(ev.contains(&Event::Switched));
    assert!(p.is_done());
}

#[test]
fn not_http_is_said_once() {
    let mut p = Parser::new(Role::Request, 1024);
    let ev = run(
        &mut p,
        b"\x16\x03\x01\x02\x00 TLS hello and more",
        3,
        Ctx::default(),
    );
    assert_eq!(ev, [Event::NotHttp]);
}

#[test]
fn header_too_large_is_bounded_and_reported() {
    let mut p = Parser::new(Role::Request, 4096);
    let mut data = b"GET /big HTTP/1.1\r\nX-Big: ".to_vec();
    data.extend(std::iter::repeat_n(b'a', 10 << 20));
    data.extend_from_slice(b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    let mut out = Vec::new();
    let mut max_mem = 0;
    for piece in data.chunks(1460) {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = p.feed(rest, 1, Ctx::default(), &mut out);
            rest = &rest[n..];
            max_mem = max_mem.max(p.mem());
        }
    }
    assert!(max_mem <= 8192, "held {max_mem} bytes");
    assert_eq!(methods(&out), ["GET /big", "GET /next"]);
    assert_eq!(ends(&out)[0].1, Some(Issue::HeaderTooLarge));
    assert_eq!(ends(&out)[1], (22, None));
}

#[test]
fn gap_inside_a_body_keeps_sync() {
    let mut p = Parser::new(Role::Response, 1024);
    let mut out = run(
        &mut p,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        100,
        Ctx::default(),
    );
    p.gap(4, 2, &mut out);
    let more = run(
        &mut p,
        b"xyzHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        100,
        Ctx::default(),
    );
    out.extend(more);
    assert_eq!(statuses(&out), [200, 500]);
    assert_eq!(ends(&out), [(49, Some(Issue::Gap)), (40, None)]);
}

#[test]
fn gap_in_a_head_resyncs_at_the_next_start_line() {
    let mut p = Parser::new(Role::Request, 1024);
    let mut out = run(&mut p, b"GET /a HTTP/1.1\r\nHo", 100, Ctx::default());
    p.gap(100, 2, &mut out);
    out.extend(run(&mut p, b"garbage tail\r\n\r\n", 100, Ctx::default()));
    out.extend(run(&mut p, b"GET /b HTTP/1.1\r\n\r\n", 100, Ctx::default()));
    assert_eq!(methods(&out), ["GET /b"]);
}

#[test]
fn bad_chunk_size_is_unparsed_not_a_panic() {
    let mut p = Parser::new(Role::Response, 1024);
    let ev = run(
        &mut p,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        1,
        Ctx::default(),
    );
    assert_eq!(ends(&ev)[0].1, Some(Issue::Unparsed));
    let mut p = Parser::new(Role::Response, 1024);
    let ev = run(
        &mut p,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        5,
        Ctx::default(),
    );
    assert_eq!(ends(&ev)[0].1, Some(Issue::Unparsed));
}

#[test]
fn start_line_detection() {
    assert!(looks_like_start(Role::Request, b"GET / HTTP/1.1"));
    assert!(looks_like_start(Role::Request, b"OPTIONS * HTTP/1.1"));
    assert!(looks_like_start(Role::Request, b"GE"));
    assert!(!looks_like_start(Role::Request, b"get /"));
    assert!(!looks_like_start(Role::Request, b"AB /"));
    assert!(!looks_like_start(Role::Request, b"ABCDEFGHIJKL /"));
    assert!(looks_like_start(Role::Response, b"HTTP/1.1 200"));
    assert!(looks_like_start(Role::Response, b"HT"));
    assert!(!looks_like_start(Role::Response, b"HTTP/2 200"));
}
