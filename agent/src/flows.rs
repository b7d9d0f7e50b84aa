//! The flow table: TCP connections by address pair, each reassembled in both directions and
//! parsed as HTTP/1.x, with requests and responses paired in order (pipelining included).
//!
//! Memory is bounded three ways: per direction (`flow_buffer` of out-of-order data and
//! `max_header` of head bytes), per table (`memory`, all flows together) and by flow count
//! (`max_flows`). Over a table cap the oldest flow is closed and reported as evicted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::decode::Segment;
use crate::http::{Ctx, Event, Issue, Parser, RequestHead, Role};
use crate::metrics::{Eviction, EvictionLabels, Metrics};
use crate::record::{Close, Exchange, FlowSummary, Record};
use crate::stream::{Piece, Stream};
use crate::Ts;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header: usize,
    pub flow_buffer: usize,
    pub memory: usize,
    pub max_flows: usize,
    pub idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: 64 << 10,
            flow_buffer: 256 << 10,
            memory: 16 << 20,
            max_flows: 16_384,
            idle_ns: 120_000_000_000,
        }
    }
}

/// Requests waiting for responses on one connection; more are answered as `no_response`.
const MAX_PENDING: usize = 64;

/// Fixed cost of one flow in the table, counted against `memory`.
const FLOW_OVERHEAD: usize = std::mem::size_of::<Flow>() + 64;

/// Where finished records go, and what counts them.
struct Out<'a> {
    m: &'a Metrics,
    records: &'a mut Vec<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(SocketAddr, SocketAddr);

impl Key {
    fn of(a: SocketAddr, b: SocketAddr) -> Key {
        if a <= b {
            Key(a, b)
        } else {
            Key(b, a)
        }
    }
}

#[derive(Debug)]
struct Pending {
    head: RequestHead,
    bytes: u64,
    done: bool,
    issue: Option<Issue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not decided yet.
    Unknown,
    Http,
    /// Not HTTP, or no longer (protocol switched): only counted.
    Plain,
}

#[derive(Debug)]
struct Http {
    addrs: [SocketAddr; 2],
    /// Index (into `addrs`) of the side that opens connections.
    client: Option<usize>,
    kind: Kind,
    parsers: [Option<Parser>; 2],
    pending: VecDeque<Pending>,
    response: Option<(u16, u8, Ts)>,
    /// Bytes of the response direction were lost since its last message: the next response
    /// may answer a later request than the oldest pending one.
    response_gap: bool,
    exchanges: u64,
    events: Vec<Event>,
}

#[derive(Debug)]
struct Flow {
    id: u64,
    streams: [Stream; 2],
    http: Http,
    first: Ts,
    last: Ts,
    mem: usize,
}

impl Http {
    fn mem(&self) -> usize {
        let parsers: usize = self.parsers.iter().flatten().map(Parser::mem).sum();
        parsers
            + self.pending.len() * (std::mem::size_of::<Pending>() + 32)
            + self
                .pending
                .iter()
                .map(|p| p.head.path.len() + p.head.method.len())
                .sum::<usize>()
    }

    fn ensure_parsers(&mut self, dir: usize, data: &[u8], syn_seen: bool, limits: &Limits) -> bool {
        if self.parsers[dir].is_some() {
            return true;
        }
        if self.client.is_none() {
            // Picked up mid-stream: the first start line tells who is who.
            if data.starts_with(b"HTTP/1.") {
                self.client = Some(1 - dir);
            } else if data.first().is_some_and(u8::is_ascii_uppercase) && data.contains(&b' ') {
                self.client = Some(dir);
            } else {
                return false;
            }
        }
        let client = self.client.unwrap_or(dir);
        for (i, slot) in self.parsers.iter_mut().enumerate() {
            let role = if i == client {
                Role::Request
            } else {
                Role::Response
            };
            *slot = Some(if syn_seen {
                Parser::new(role, limits.max_header)
            } else {
                Parser::midstream(role, limits.max_header)
            });
        }
        true
    }

    fn ctx(&self) -> Ctx {
        let front = self.pending.front();
        Ctx {
            request_is_head: front.is_some_and(|p| &*p.head.method == "HEAD"),
            request_is_connect: front.is_some_and(|p| &*p.head.method == "CONNECT"),
        }
    }

    fn piece(
        &mut self,
        dir: usize,
        piece: Piece<'_>,
        syn_seen: bool,
        ts: Ts,
        limits: &Limits,
        out: &mut Out<'_>,
    ) {
        if self.kind == Kind::Plain {
            return;
        }
        match piece {
            Piece::Data(mut data) => {
                if !self.ensure_parsers(dir, data, syn_seen, limits) {
                    return;
                }
                while !data.is_empty() && self.kind != Kind::Plain {
                    let ctx = self.ctx();
                    let Some(p) = self.parsers[dir].as_mut() else {
                        return;
                    };
                    let n = p.feed(data, ts, ctx, &mut self.events);
                    data = &data[n..];
                    self.handle_events(dir, out);
                }
            }
            Piece::Gap(n) => {
                if self.role(dir) == Role::Response {
                    self.response_gap = true;
                }
                if let Some(p) = self.parsers[dir].as_mut() {
                    p.gap(n, ts, &mut self.events);
                    self.handle_events(dir, out);
                }
            }
        }
    }

    fn role(&self, dir: usize) -> Role {
        if self.client == Some(dir) {
            Role::Request
        } else {
            Role::Response
        }
    }

    fn exchange(
        &mut self,
        req: Option<Pending>,
        response: Option<(u16, u8, Ts)>,
        end: Ts,
        response_bytes: u64,
        issue: Option<Issue>,
        out: &mut Out<'_>,
    ) {
        let m = out.m;
        let client_i = self.client.unwrap_or(0);
        let issue = issue
            .or(req.as_ref().and_then(|r| r.issue))
            .or(req.is_none().then_some(Issue::NoRequest))
            .or(response.is_none().then_some(Issue::NoResponse));
        let start = req
            .as_ref()
            .map(|r| r.head.ts)
            .or(response.map(|r| r.2))
            .unwrap_or(end);
        self.exchanges += 1;
        m.exchanges.inc();
        if let Some(i) = issue {
            m.issue(i);
        }
        let (method, path, req_version, request_bytes) = match req {
            Some(r) => (
                Some(r.head.method),
                Some(r.head.path),
                r.head.version,
                r.bytes,
            ),
            None => (None, None, 1, 0),
        };
        out.records.push(Record::Http(Exchange {
            start,
            end,
            client: self.addrs[client_i],
            server: self.addrs[1 - client_i],
            method,
            path,
            version: response.map(|r| r.1).unwrap_or(req_version),
            status: response.map(|r| r.0),
            request_bytes,
            response_bytes,
            issue,
        }));
    }

    fn handle_events(&mut self, dir: usize, out: &mut Out<'_>) {
        let events = std::mem::take(&mut self.events);
        let role = self.role(dir);
        for ev in events.iter().cloned() {
            match ev {
                Event::Request(head) => {
                    self.kind = Kind::Http;
                    if self.pending.len() >= MAX_PENDING {
                        let old = self.pending.pop_front();
                        let ts = old.as_ref().map_or(0, |p| p.head.ts);
                        self.exchange(old, None, ts, 0, Some(Issue::NoResponse), out);
                    }
                    self.pending.push_back(Pending {
                        head,
                        bytes: 0,
                        done: false,
                        issue: None,
                    });
                }
                Event::Response {
                    status,
                    version,
                    ts,
                } => {
                    self.kind = Kind::Http;
                    if std::mem::take(&mut self.response_gap) {
                        // Whole responses may have been lost: without pipelining a response
                        // answers the latest request, so the older ones are given up as gaps
                        // rather than paired with the wrong answer.
                        while self.pending.len() > 1 {
                            let old = self.pending.pop_front();
                            let at = old.as_ref().map_or(ts, |p| p.head.ts);
                            self.exchange(old, None, at, 0, Some(Issue::Gap), out);
                        }
                    }
                    self.response = Some((status, version, ts));
                }
                Event::End { bytes, ts, issue } => match role {
                    Role::Request => {
                        if let Some(p) = self.pending.iter_mut().rev().find(|p| !p.done) {
                            p.bytes = bytes;
                            p.done = true;
                            p.issue = issue;
                        }
                    }
                    Role::Response => {
                        let req = self.pending.pop_front();
                        let resp = self.response.take();
                        self.exchange(req, resp, ts, bytes, issue, out);
                    }
                },
                Event::NotHttp => {
                    if self.kind == Kind::Unknown {
                        self.stop();
                    }
                }
                Event::Switched => self.stop(),
            }
        }
        let mut events = events;
        events.clear();
        self.events = events;
    }

    fn stop(&mut self) {
        self.kind = Kind::Plain;
        for p in self.parsers.iter_mut().flatten() {
            p.stop();
        }
    }

    /// The connection is gone: report what is still open in it.
    fn close(&mut self, ts: Ts, issue: Issue, out: &mut Out<'_>) {
        if self.kind != Kind::Plain {
            let client = self.client.unwrap_or(0);
            // The request side first, so a request cut short is marked before it is paired.
            for dir in [client, 1 - client] {
                if let Some(p) = self.parsers[dir].as_mut() {
                    p.finish(ts, issue, &mut self.events);
                    self.handle_events(dir, out);
                }
            }
        }
        while let Some(req) = self.pending.pop_front() {
            let resp = self.response.take();
            let why = if resp.is_some() {
                issue
            } else {
                Issue::NoResponse
            };
            self.exchange(Some(req), resp, ts, 0, Some(why), out);
        }
    }
}

impl Flow {
    fn mem(&self) -> usize {
        FLOW_OVERHEAD + self.streams[0].mem() + self.streams[1].mem() + self.http.mem()
    }

    fn summary(&self, ts: Ts, close: Close) -> Record {
        let c = self.http.client.unwrap_or(0);
        let s = 1 - c;
        Record::Flow(FlowSummary {
            start: self.first,
            end: ts.max(self.last),
            client: self.http.addrs[c],
            server: self.http.addrs[s],
            packets: [self.streams[c].packets, self.streams[s].packets],
            bytes: [self.streams[c].bytes, self.streams[s].bytes],
            close,
        })
    }
}

pub struct FlowTable {
    flows: HashMap<Key, Flow>,
    /// Flows by age, for eviction; entries of flows already gone are skipped.
    order: VecDeque<(Key, u64)>,
    next_id: u64,
    mem: usize,
    limits: Limits,
    metrics: Metrics,
}

impl FlowTable {
    pub fn new(limits: Limits, metrics: Metrics) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            order: VecDeque::new(),
            next_id: 0,
            mem: 0,
            limits,
            metrics,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Memory the table accounts for.
    pub fn mem(&self) -> usize {
        self.mem
    }

    pub fn segment(&mut self, seg: &Segment<'_>, wire_len: u32, ts: Ts, out: &mut Vec<Record>) {
        let key = Key::of(seg.src, seg.dst);
        if !self.flows.contains_key(&key) {
            if seg.rst || (seg.payload.is_empty() && !seg.syn) {
                // A reset or bare ACK/FIN of a connection not seen (or just closed: the last
                // ACK after both FINs) opens nothing.
                return;
            }
            while self.flows.len() >= self.limits.max_flows.max(1) {
                self.evict_oldest(Eviction::flows, ts, out);
            }
            let id = self.next_id;
            self.next_id += 1;
            let flow = Flow {
                id,
                streams: [Stream::default(), Stream::default()],
                http: Http {
                    addrs: [seg.src, seg.dst],
                    client: None,
                    kind: Kind::Unknown,
                    parsers: [None, None],
                    pending: VecDeque::new(),
                    response: None,
                    response_gap: false,
                    exchanges: 0,
                    events: Vec::new(),
                },
                first: ts,
                last: ts,
                mem: FLOW_OVERHEAD,
            };
            self.mem += FLOW_OVERHEAD;
            self.flows.insert(key, flow);
            self.order.push_back((key, id));
            if self.order.len() > 2 * self.flows.len() + 1024 {
                let flows = &self.flows;
                self.order
                    .retain(|(k, id)| flows.get(k).is_some_and(|f| f.id == *id));
            }
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let dir = usize::from(flow.http.addrs[0] != seg.src);
        flow.last = ts;
        let stream = &mut flow.streams[dir];
        stream.packets += 1;
        stream.bytes += u64::from(wire_len);
        if seg.syn {
            stream.syn(seg.seq);
            if flow.http.client.is_none() {
                flow.http.client = Some(if seg.ack { 1 - dir } else { dir });
            }
        }
        if !seg.payload.is_empty() {
            let syn_seen = flow.streams[dir].syn;
            let limits = self.limits;
            let mut sink = Out {
                m: &self.metrics,
                records: out,
            };
            let Flow { streams, http, .. } = flow;
            streams[dir].segment(seg.seq, seg.payload, limits.flow_buffer, &mut |piece| {
                http.piece(dir, piece, syn_seen, ts, &limits, &mut sink)
            });
        }
        if seg.fin {
            flow.streams[dir].fin = true;
        }
        let close = if seg.rst {
            Some(Close::Rst)
        } else if flow.streams[0].fin && flow.streams[1].fin {
            Some(Close::Fin)
        } else {
            None
        };
        let new_mem = flow.mem();
        self.mem = self.mem + new_mem - flow.mem;
        flow.mem = new_mem;
        if let Some(close) = close {
            self.close(&key, close, ts, out);
        }
        while self.mem > self.limits.memory && !self.flows.is_empty() {
            self.evict_oldest(Eviction::memory, ts, out);
        }
        self.metrics.reassembly_bytes.set(self.mem as i64);
        self.metrics.flows_open.set(self.flows.len() as i64);
    }

    fn evict_oldest(&mut self, reason: Eviction, ts: Ts, out: &mut Vec<Record>) {
        while let Some((key, id)) = self.order.pop_front() {
            if self.flows.get(&key).is_some_and(|f| f.id == id) {
                self.metrics
                    .evictions
                    .get_or_create(&EvictionLabels { reason })
                    .inc();
                self.close(&key, Close::Evicted, ts, out);
                return;
            }
        }
    }

    fn close(&mut self, key: &Key, close: Close, ts: Ts, out: &mut Vec<Record>) {
        let Some(mut flow) = self.flows.remove(key) else {
            return;
        };
        self.mem -= flow.mem;
        let issue = match close {
            Close::Evicted => Issue::Evicted,
            _ => Issue::Closed,
        };
        let limits = self.limits;
        let mut sink = Out {
            m: &self.metrics,
            records: out,
        };
        let Flow { streams, http, .. } = &mut flow;
        for (dir, stream) in streams.iter_mut().enumerate() {
            let syn_seen = stream.syn;
            stream.flush(&mut |piece| http.piece(dir, piece, syn_seen, ts, &limits, &mut sink));
        }
        http.close(ts, issue, &mut sink);
        self.metrics.flows_closed.inc();
        if flow.http.exchanges == 0 {
            out.push(flow.summary(ts, close));
        }
    }

    /// Closes flows idle for longer than the limit (`now` in capture time).
    pub fn sweep(&mut self, now: Ts, out: &mut Vec<Record>) {
        let idle = self.limits.idle_ns;
        let stale: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last) > idle)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.close(&k, Close::Idle, now, out);
        }
        self.metrics.reassembly_bytes.set(self.mem as i64);
        self.metrics.flows_open.set(self.flows.len() as i64);
    }

    /// Closes every flow (the agent is stopping).
    pub fn close_all(&mut self, now: Ts, out: &mut Vec<Record>) {
        let keys: Vec<Key> = self.flows.keys().copied().collect();
        for k in keys {
            self.close(&k, Close::Shutdown, now, out);
        }
        self.order.clear();
        self.metrics.reassembly_bytes.set(self.mem as i64);
        self.metrics.flows_open.set(0);
    }
}

#[cfg(test)]
mod tests;
