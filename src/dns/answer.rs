//! The answering rule, pure: a decoded request + the table -> a reply or "forward it".
//!
//! * PTR for a reverse name of an IP a pod or service claims -> that object's name.
//! * A/AAAA for a hostAliases name -> its addresses (NOERROR without records for another
//!   type or family: the alias owns the name).
//! * Any other name, including unknown reverse names -> forwarded upstream; with no upstream
//!   configured, unknown reverse names get NXDOMAIN and other names REFUSED (we are neither
//!   authoritative for them nor able to recurse).
//! * Not a single-question QUERY -> FORMERR / NOTIMP.
//! * A source that is not trusted (see [`access`]) -> REFUSED for every question, whatever
//!   the name: pod and service PTRs, hostAliases names, unknown reverse names and names we
//!   would forward. A uniform refusal tells a scanner nothing (a REFUSED only for pod IPs would
//!   reveal which IPs are pods), and the proxy is no open resolver for pods it does not serve.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::cidr::Cidr;
use super::metrics::{Outcome, QType, Reason};
use super::reverse::{ip_from_reverse_name, is_reverse_name};
use super::table::NameTable;

/// TTL of answers from the table: short, because pod IPs are reused.
pub const ANSWER_TTL: u32 = 5;

/// The UDP payload size we advertise and never exceed, whatever a client advertises
/// (the DNS flag day 2020 value: no IP fragmentation on common MTUs).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Largest DNS message over TCP (two-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// What to do with a request.
#[derive(Debug)]
pub enum Handling {
    /// Send this reply.
    Reply {
        reply: Message,
        qtype: QType,
        outcome: Outcome,
    },
    /// Relay the request to an upstream.
    Forward { qtype: QType },
    /// Refuse it because of who asked (counted apart from the answers).
    Denied { reply: Message, reason: Reason },
}

/// Whether a source may read names from the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A pod carrying a Whisperer, or an address in a trusted CIDR.
    Trusted,
    Untrusted,
}

/// A source is trusted when it lies in one of `trusted` or is the IP of a pod with a live
/// Whisperer container (the table knows). Nothing the source says about itself counts.
pub fn access(source: IpAddr, trusted: &[Cidr], table: &NameTable) -> Access {
    if trusted.iter().any(|c| c.contains(source)) || table.is_whisperer_ip(source) {
        Access::Trusted
    } else {
        Access::Untrusted
    }
}

/// The metrics label for a record type.
pub fn qtype_label(rtype: RecordType) -> QType {
    match rtype {
        RecordType::PTR => QType::Ptr,
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        _ => QType::Other,
    }
}

/// Decide how to settle `request` (already known to be a query, not a response) from a
/// source with `access`.
pub fn handle(request: &Message, table: &NameTable, can_forward: bool, access: Access) -> Handling {
    // The shape of the message first: these answers carry nothing from the table.
    if request.metadata.op_code != OpCode::Query {
        return reject(request, ResponseCode::NotImp, QType::Other);
    }
    let [query] = request.queries.as_slice() else {
        return reject(request, ResponseCode::FormErr, QType::Other);
    };
    if access == Access::Untrusted {
        return Handling::Denied {
            reply: refused(request),
            reason: Reason::Untrusted,
        };
    }
    let qtype = qtype_label(query.query_type());
    if query.query_class() != DNSClass::IN {
        return unknown(request, qtype, can_forward, false);
    }
    let name = query.name();
    if let Some(owner) = ip_from_reverse_name(name).and_then(|ip| table.lookup_ip(ip)) {
        let mut records = Vec::new();
        if matches!(query.query_type(), RecordType::PTR | RecordType::ANY) {
            records.push(Record::from_rdata(
                name.clone(),
                ANSWER_TTL,
                RData::PTR(PTR(owner)),
            ));
        }
        return answered(request, records, qtype, can_forward);
    }
    if let Some(ips) = table.lookup_alias(name) {
        let want_v4 = matches!(query.query_type(), RecordType::A | RecordType::ANY);
        let want_v6 = matches!(query.query_type(), RecordType::AAAA | RecordType::ANY);
        let records = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if want_v4 => Some(RData::A(A(*v4))),
                IpAddr::V6(v6) if want_v6 => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(name.clone(), ANSWER_TTL, rdata))
            .collect();
        return answered(request, records, qtype, can_forward);
    }
    unknown(request, qtype, can_forward, is_reverse_name(name))
}

fn unknown(request: &Message, qtype: QType, can_forward: bool, reverse: bool) -> Handling {
    if can_forward {
        Handling::Forward { qtype }
    } else if reverse {
        let mut reply = reply_to(request, ResponseCode::NXDomain, false);
        reply.metadata.authoritative = true;
        Handling::Reply {
            reply,
            qtype,
            outcome: Outcome::NxDomain,
        }
    } else {
        reject(request, ResponseCode::Refused, qtype)
    }
}

fn answered(request: &Message, records: Vec<Record>, qtype: QType, can_forward: bool) -> Handling {
    let mut reply = reply_to(request, ResponseCode::NoError, can_forward);
    reply.metadata.authoritative = true;
    reply.answers = records;
    Handling::Reply {
        reply,
        qtype,
        outcome: Outcome::Answered,
    }
}

fn reject(request: &Message, code: ResponseCode, qtype: QType) -> Handling {
    Handling::Reply {
        reply: reply_to(request, code, false),
        qtype,
        outcome: Outcome::Rejected,
    }
}

/// An empty reply echoing the request's id, opcode, RD, CD and questions (not for FORMERR),
/// with an OPT record if the request had one.
pub fn reply_to(request: &Message, code: ResponseCode, recursion_available: bool) -> Message {
    let mut reply = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    reply.metadata.response_code = code;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.metadata.recursion_available = recursion_available;
    if code != ResponseCode::FormErr {
        reply.queries.clone_from(&request.queries);
    }
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// REFUSED for `request` (source policy: untrusted, over its rate or quota).
pub fn refused(request: &Message) -> Message {
    reply_to(request, ResponseCode::Refused, false)
}

/// SERVFAIL for `request` (upstream failure or overload).
pub fn servfail(request: &Message) -> Message {
    reply_to(request, ResponseCode::ServFail, true)
}

/// The largest reply `request` may get over UDP: 512 without EDNS, else the advertised size
/// capped at [`MAX_UDP_PAYLOAD`].
pub fn udp_limit(request: &Message) -> usize {
    usize::from(request.max_payload().min(MAX_UDP_PAYLOAD))
}

/// Encode `reply`; when it exceeds `limit` bytes, send the header, question and OPT only,
/// with TC set, so the client retries over TCP.
pub fn encode_within(reply: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    reply.truncate().to_vec().ok()
}

#[cfg(test)]
mod tests;
