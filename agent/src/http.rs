//! Incremental HTTP/1.x parser for one direction of a TCP stream.
//!
//! It is fed the stream in order (and told about gaps), finds message boundaries and reports
//! heads and ends; it never holds more than `max_header` bytes, and bodies are only counted,
//! never kept. A direction that stops making sense is marked lost and resynchronises at the
//! next chunk that starts with a start line; one that never made sense is not HTTP.

use crate::Ts;

/// Which side of the exchange this direction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Request,
    Response,
}

/// Why a message or a stream was not fully understood (a closed set: it labels metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// Bytes were missing from the capture (lost segments, eviction of buffered data).
    Gap,
    /// The head was larger than `--max-header`.
    HeaderTooLarge,
    /// The bytes at a message boundary were not HTTP/1.x.
    Unparsed,
    /// The stream ended inside a message.
    Closed,
    /// A request never got its response.
    NoResponse,
    /// A response whose request was not seen.
    NoRequest,
    /// The flow was evicted to keep memory bounded.
    Evicted,
}

impl Issue {
    pub fn as_str(self) -> &'static str {
        match self {
            Issue::Gap => "gap",
            Issue::HeaderTooLarge => "header_too_large",
            Issue::Unparsed => "unparsed",
            Issue::Closed => "closed",
            Issue::NoResponse => "no_response",
            Issue::NoRequest => "no_request",
            Issue::Evicted => "evicted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Box<str>,
    pub path: Box<str>,
    /// Minor version: 0 or 1.
    pub version: u8,
    pub ts: Ts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Request(RequestHead),
    Response {
        status: u16,
        version: u8,
        ts: Ts,
    },
    /// The message whose head was reported last is complete (or given up on).
    End {
        bytes: u64,
        ts: Ts,
        issue: Option<Issue>,
    },
    /// The first bytes of the stream were not HTTP/1.x: stop parsing this flow.
    NotHttp,
    /// 101 Switching Protocols or a CONNECT tunnel: the rest is not HTTP/1.x.
    Switched,
}

/// What the response parser must know about the request it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    pub request_is_head: bool,
    pub request_is_connect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `ext` once past `;` or whitespace.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk; `len` of the current line.
    Trailer {
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a message boundary.
    Start,
    /// Collecting a head in `buf`.
    Head,
    Body(Body),
    /// Out of sync: wait for a chunk that starts with a start line.
    Lost,
    /// Nothing more to parse in this direction.
    Done,
}

/// Most headers a message may have before it counts as unparsed.
const MAX_HEADERS: usize = 128;
/// Longest path kept in a record; longer ones are cut (the pcapng file has them whole).
pub const MAX_PATH: usize = 2048;

#[derive(Debug)]
pub struct Parser {
    role: Role,
    state: State,
    buf: Vec<u8>,
    max_header: usize,
    /// Bytes of the current message so far (head and body).
    msg_bytes: u64,
    msg_issue: Option<Issue>,
    /// A message head was parsed in this direction (the stream is HTTP).
    seen_message: bool,
}

fn looks_like_start(role: Role, data: &[u8]) -> bool {
    match role {
        Role::Response => {
            let n = data.len().min(7);
            data[..n] == b"HTTP/1."[..n]
        }
        Role::Request => {
            // A method token of 3-10 upper-case letters, then a space.
            let mut i = 0;
            while i < data.len() && i < 11 {
                let c = data[i];
                if c == b' ' {
                    return i >= 3;
                }
                if !c.is_ascii_uppercase() {
                    return false;
                }
                i += 1;
            }
            i == data.len() && i < 11
        }
    }
}

/// Where in `data` a start line begins (at the start or right after a newline), if anywhere.
fn resync_point(role: Role, data: &[u8]) -> Option<usize> {
    if looks_like_start(role, data) {
        return Some(0);
    }
    let marker: &[u8] = match role {
        Role::Request => b" HTTP/1.",
        Role::Response => b"\nHTTP/1.",
    };
    for hit in memchr::memmem::find_iter(data, marker) {
        let line = match role {
            Role::Request => data[..hit]
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |p| p + 1),
            Role::Response => hit + 1,
        };
        if line > 0 && looks_like_start(role, &data[line..]) {
            return Some(line);
        }
    }
    None
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    memchr::memmem::find(&buf[start..], b"\r\n\r\n").map(|p| start + p + 4)
}

fn header_value<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .any(|h| {
            std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            })
        })
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<u64> {
    let v = header_value(headers, "content-length")?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn cut(s: &str, max: usize) -> Box<str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// A head as far as it could be read.
enum Head {
    Complete(Event, Body),
    /// The start line was read but the head is cut or malformed.
    Partial(Option<Event>),
}

impl Parser {
    pub fn new(role: Role, max_header: usize) -> Parser {
        Parser {
            role,
            state: State::Start,
            buf: Vec::new(),
            max_header: max_header.max(64),
            msg_bytes: 0,
            msg_issue: None,
            seen_message: false,
        }
    }

    /// A parser for a stream picked up in the middle (no SYN seen): it waits for a start line
    /// instead of calling the stream not HTTP.
    pub fn midstream(role: Role, max_header: usize) -> Parser {
        let mut p = Parser::new(role, max_header);
        p.state = State::Lost;
        p
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Memory this parser holds.
    pub fn mem(&self) -> usize {
        self.buf.capacity()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn stop(&mut self) {
        self.state = State::Done;
        self.release();
    }

    fn release(&mut self) {
        if self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    fn end(&mut self, ts: Ts, issue: Option<Issue>) -> Event {
        let e = Event::End {
            bytes: self.msg_bytes,
            ts,
            issue: issue.or(self.msg_issue),
        };
        self.msg_bytes = 0;
        self.msg_issue = None;
        e
    }

    fn parse_head(&self, head: &[u8], ts: Ts, ctx: Ctx) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match self.role {
            Role::Request => {
                let mut req = httparse::Request::new(&mut headers);
                let status = req.parse(head);
                let ev = match (req.method, req.path, req.version) {
                    (Some(m), Some(p), Some(v)) => Some(Event::Request(RequestHead {
                        method: cut(m, 16),
                        path: cut(p, MAX_PATH),
                        version: v,
                        ts,
                    })),
                    _ => None,
                };
                match (status, ev) {
                    (Ok(httparse::Status::Complete(_)), Some(ev)) => {
                        let body = if is_chunked(req.headers) {
                            Body::Chunked(Chunk::Size {
                                size: 0,
                                digits: 0,
                                ext: false,
                            })
                        } else {
                            Body::Length(content_length(req.headers).unwrap_or(0))
                        };
                        Head::Complete(ev, body)
                    }
                    (_, ev) => Head::Partial(ev),
                }
            }
            Role::Response => {
                let mut resp = httparse::Response::new(&mut headers);
                let status = resp.parse(head);
                let ev = match (resp.code, resp.version) {
                    (Some(code), Some(v)) => Some(Event::Response {
                        status: code,
                        version: v,
                        ts,
                    }),
                    _ => None,
                };
                match (status, ev) {
                    (Ok(httparse::Status::Complete(_)), Some(ev)) => {
                        let code = resp.code.unwrap_or(0);
                        let body = if ctx.request_is_head
                            || (100..200).contains(&code)
                            || code == 204
                            || code == 304
                        {
                            Body::Length(0)
                        } else if is_chunked(resp.headers) {
                            Body::Chunked(Chunk::Size {
                                size: 0,
                                digits: 0,
                                ext: false,
                            })
                        } else if let Some(n) = content_length(resp.headers) {
                            Body::Length(n)
                        } else {
                            Body::UntilClose
                        };
                        Head::Complete(ev, body)
                    }
                    (_, ev) => Head::Partial(ev),
                }
            }
        }
    }

    /// Consumes a prefix of `data` and returns how much, pushing the events of at most one
    /// message boundary to `out`. Call again with the rest until everything is consumed (the
    /// caller may update `ctx` in between, as pipelined responses answer different requests).
    pub fn feed(&mut self, data: &[u8], ts: Ts, ctx: Ctx, out: &mut Vec<Event>) -> usize {
        if data.is_empty() {
            return 0;
        }
        match self.state {
            State::Done => data.len(),
            State::Lost => match resync_point(self.role, data) {
                Some(at) => {
                    self.state = State::Start;
                    at
                }
                None => data.len(),
            },
            State::Start => {
                if !looks_like_start(self.role, data) {
                    self.unparsed(out);
                    return data.len();
                }
                self.state = State::Head;
                self.buf.clear();
                0
            }
            State::Head => self.feed_head(data, ts, ctx, out),
            State::Body(body) => self.feed_body(body, data, ts, out),
        }
    }

    /// Bytes at a message boundary that are not HTTP.
    fn unparsed(&mut self, out: &mut Vec<Event>) {
        self.msg_bytes = 0;
        self.msg_issue = None;
        self.release();
        if self.seen_message {
            self.state = State::Lost;
        } else {
            self.state = State::Done;
            out.push(Event::NotHttp);
        }
    }

    fn feed_head(&mut self, data: &[u8], ts: Ts, ctx: Ctx, out: &mut Vec<Event>) -> usize {
        // Fast path: the whole head is in this chunk and nothing is buffered.
        if self.buf.is_empty() {
            if let Some(end) = find_head_end(data, 0).filter(|&e| e <= self.max_header) {
                self.finish_head(&data[..end], ts, ctx, out);
                return end;
            }
        }
        let room = self.max_header.saturating_sub(self.buf.len());
        let take = data.len().min(room);
        let scanned = self.buf.len();
        self.buf.extend_from_slice(&data[..take]);
        if let Some(end) = find_head_end(&self.buf, scanned) {
            let head = std::mem::take(&mut self.buf);
            self.finish_head(&head[..end], ts, ctx, out);
            self.buf = head;
            self.release();
            return end - scanned;
        }
        if self.buf.len() >= self.max_header {
            // Too large to delimit: report what the start line says, then give up on it.
            let partial = match self.parse_head(&self.buf, ts, ctx) {
                Head::Partial(ev) => ev,
                Head::Complete(ev, _) => Some(ev),
            };
            let bytes = self.buf.len() as u64;
            match partial {
                Some(ev) => {
                    self.seen_message = true;
                    out.push(ev);
                    self.msg_bytes = bytes;
                    out.push(self.end(ts, Some(Issue::HeaderTooLarge)));
                    self.release();
                    self.state = State::Lost;
                }
                None => self.unparsed(out),
            }
        }
        take
    }

    fn finish_head(&mut self, head: &[u8], ts: Ts, ctx: Ctx, out: &mut Vec<Event>) {
        match self.parse_head(head, ts, ctx) {
            Head::Complete(ev, body) => {
                self.seen_message = true;
                self.msg_bytes = head.len() as u64;
                let switched = match &ev {
                    Event::Response { status, .. } => {
                        *status == 101 || (ctx.request_is_connect && (200..300).contains(status))
                    }
                    _ => false,
                };
                let interim = matches!(&ev, Event::Response { status, .. } if (100..200).contains(status) && *status != 101);
                if interim {
                    // 100 Continue and friends: the final response follows.
                    self.msg_bytes = 0;
                    self.state = State::Start;
                    return;
                }
                out.push(ev);
                if switched {
                    out.push(self.end(ts, None));
                    out.push(Event::Switched);
                    self.stop();
                    return;
                }
                match body {
                    Body::Length(0) => {
                        out.push(self.end(ts, None));
                        self.state = State::Start;
                    }
                    other => self.state = State::Body(other),
                }
            }
            Head::Partial(Some(ev)) => {
                self.seen_message = true;
                out.push(ev);
                self.msg_bytes = head.len() as u64;
                out.push(self.end(ts, Some(Issue::Unparsed)));
                self.state = State::Lost;
            }
            Head::Partial(None) => self.unparsed(out),
        }
    }

    fn feed_body(&mut self, body: Body, data: &[u8], ts: Ts, out: &mut Vec<Event>) -> usize {
        match body {
            Body::UntilClose => {
                self.msg_bytes += data.len() as u64;
                data.len()
            }
            Body::Length(left) => {
                let take = (data.len() as u64).min(left);
                self.msg_bytes += take;
                if take == left {
                    out.push(self.end(ts, None));
                    self.state = State::Start;
                } else {
                    self.state = State::Body(Body::Length(left - take));
                }
                take as usize
            }
            Body::Chunked(chunk) => self.feed_chunked(chunk, data, ts, out),
        }
    }

    fn feed_chunked(
        &mut self,
        mut chunk: Chunk,
        data: &[u8],
        ts: Ts,
        out: &mut Vec<Event>,
    ) -> usize {
        let mut i = 0;
        while i < data.len() {
            match chunk {
                Chunk::Data(left) => {
                    let take = ((data.len() - i) as u64).min(left);
                    i += take as usize;
                    chunk = if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                    continue;
                }
                Chunk::DataEnd => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\r' => {}
                        b'\n' => {
                            chunk = Chunk::Size {
                                size: 0,
                                digits: 0,
                                ext: false,
                            }
                        }
                        _ => return self.chunk_error(i, ts, out),
                    }
                }
                Chunk::Size { size, digits, ext } => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\n' if digits == 0 => return self.chunk_error(i, ts, out),
                        b'\n' if size == 0 => chunk = Chunk::Trailer { len: 0 },
                        b'\n' => chunk = Chunk::Data(size),
                        b'\r' => {}
                        _ if ext => {}
                        b';' | b' ' | b'\t' => {
                            chunk = Chunk::Size {
                                size,
                                digits,
                                ext: true,
                            }
                        }
                        _ => {
                            let Some(d) = (c as char).to_digit(16) else {
                                return self.chunk_error(i, ts, out);
                            };
                            if digits >= 15 {
                                return self.chunk_error(i, ts, out);
                            }
                            chunk = Chunk::Size {
                                size: size * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                            };
                        }
                    }
                }
                Chunk::Trailer { len } => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\n' if len == 0 => {
                            self.msg_bytes += i as u64;
                            out.push(self.end(ts, None));
                            self.state = State::Start;
                            return i;
                        }
                        b'\n' => chunk = Chunk::Trailer { len: 0 },
                        b'\r' => {}
                        _ if len >= self.max_header => return self.chunk_error(i, ts, out),
                        _ => chunk = Chunk::Trailer { len: len + 1 },
                    }
                }
            }
        }
        self.msg_bytes += i as u64;
        self.state = State::Body(Body::Chunked(chunk));
        i
    }

    fn chunk_error(&mut self, consumed: usize, ts: Ts, out: &mut Vec<Event>) -> usize {
        self.msg_bytes += consumed as u64;
        out.push(self.end(ts, Some(Issue::Unparsed)));
        self.state = State::Lost;
        consumed
    }

    /// `len` bytes of the stream are missing. Inside a body of known length the message
    /// stays in sync (and is marked); anywhere else the direction is lost until a start line.
    pub fn gap(&mut self, len: u64, ts: Ts, out: &mut Vec<Event>) {
        match self.state {
            State::Body(Body::Length(left)) if left > len => {
                self.msg_bytes += len;
                self.msg_issue = Some(Issue::Gap);
                self.state = State::Body(Body::Length(left - len));
            }
            State::Body(Body::Length(left)) if left == len => {
                self.msg_bytes += len;
                out.push(self.end(ts, Some(Issue::Gap)));
                self.state = State::Start;
            }
            State::Body(Body::Chunked(Chunk::Data(left))) if left >= len => {
                self.msg_bytes += len;
                self.msg_issue = Some(Issue::Gap);
                let next = if left == len {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - len)
                };
                self.state = State::Body(Body::Chunked(next));
            }
            State::Body(Body::UntilClose) => {
                self.msg_bytes += len;
                self.msg_issue = Some(Issue::Gap);
            }
            State::Body(_) => {
                out.push(self.end(ts, Some(Issue::Gap)));
                self.release();
                self.state = State::Lost;
            }
            // No head was reported for a message still in its head: nothing to end.
            State::Head => {
                self.msg_bytes = 0;
                self.msg_issue = None;
                self.release();
                self.state = State::Lost;
            }
            State::Start => self.state = State::Lost,
            State::Lost | State::Done => {}
        }
    }

    /// The stream ended (FIN, RST, eviction, shutdown): report a message in progress.
    pub fn finish(&mut self, ts: Ts, issue: Issue, out: &mut Vec<Event>) {
        match self.state {
            State::Body(Body::UntilClose) if issue == Issue::Closed => {
                out.push(self.end(ts, None));
            }
            State::Body(_) => out.push(self.end(ts, Some(issue))),
            State::Head if self.seen_message && !self.buf.is_empty() => {
                self.release();
            }
            _ => {}
        }
        self.state = State::Done;
        self.release();
    }
}

#[cfg(test)]
mod tests;
