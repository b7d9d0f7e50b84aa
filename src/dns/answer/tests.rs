use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{HostAlias, Pod, Service};
use serde_json::json;
use std::net::IpAddr;

fn table() -> NameTable {
    let table = NameTable::new("cluster.local");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-0", "namespace": "shop", "uid": "u1",
                      "creationTimestamp": "2024-01-01T00:00:00Z" },
        "status": { "podIPs": [{ "ip": "10.1.2.3" }, { "ip": "fd00::3" }] }
    }))
    .expect("pod fixture");
    table.apply_pod(&pod);
    let aliases: Vec<HostAlias> = serde_json::from_value(json!([
        { "ip": "192.0.2.1", "hostnames": ["db.example.com"] },
        { "ip": "2001:db8::1", "hostnames": ["db.example.com"] },
        { "ip": "192.0.2.9", "hostnames": ["v4only.example.com"] }
    ]))
    .expect("aliases fixture");
    table.set_host_aliases(&aliases);
    table
}

fn request(name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    msg
}

/// The rule as a trusted source (a Whisperer) sees it.
fn trusted(request: &Message, table: &NameTable, can_forward: bool) -> Handling {
    handle(request, table, can_forward, Access::Trusted)
}

fn reply(h: Handling) -> (Message, QType, Outcome) {
    match h {
        Handling::Reply {
            reply,
            qtype,
            outcome,
        } => (reply, qtype, outcome),
        Handling::Forward { .. } => panic!("expected a reply, got forward"),
        Handling::Denied { reason, .. } => panic!("expected a reply, got denied ({reason:?})"),
    }
}

fn rdata_strings(msg: &Message) -> Vec<String> {
    msg.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn ptr_for_known_pod_ip_v4_and_v6() {
    let t = table();
    for ip in ["10.1.2.3", "fd00::3"] {
        let rev = super::super::reverse::reverse_name(ip.parse().expect("ip"));
        let req = request(&rev.to_ascii(), RecordType::PTR);
        let (msg, qtype, outcome) = reply(trusted(&req, &t, true));
        assert_eq!((qtype, outcome), (QType::Ptr, Outcome::Answered));
        assert_eq!(msg.metadata.id, req.metadata.id);
        assert!(msg.metadata.authoritative);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert_eq!(msg.queries, req.queries);
        assert_eq!(rdata_strings(&msg), vec!["web-0.shop.pod.cluster.local."]);
        assert_eq!(msg.answers[0].ttl, ANSWER_TTL);
    }
}

#[test]
fn known_reverse_name_other_type_is_nodata() {
    let (msg, qtype, outcome) = reply(trusted(
        &request("3.2.1.10.in-addr.arpa.", RecordType::TXT),
        &table(),
        true,
    ));
    assert_eq!((qtype, outcome), (QType::Other, Outcome::Answered));
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
}

#[test]
fn unknown_reverse_name_forwards_or_nxdomain_without_upstream() {
    let t = table();
    let req = request("9.9.9.10.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(
        trusted(&req, &t, true),
        Handling::Forward { qtype: QType::Ptr }
    ));
    let (msg, _, outcome) = reply(trusted(&req, &t, false));
    assert_eq!(outcome, Outcome::NxDomain);
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    // partial reverse names follow the same rule
    let partial = request("10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(reply(trusted(&partial, &t, false)).2, Outcome::NxDomain);
}

#[test]
fn host_alias_a_aaaa_any_and_nodata() {
    let t = table();
    let (msg, qtype, outcome) = reply(trusted(
        &request("DB.example.com.", RecordType::A),
        &t,
        true,
    ));
    assert_eq!((qtype, outcome), (QType::A, Outcome::Answered));
    assert_eq!(rdata_strings(&msg), vec!["192.0.2.1"]);
    // the owner name echoes the question's case
    assert_eq!(msg.answers[0].name.to_ascii(), "DB.example.com.");

    let (msg, _, _) = reply(trusted(
        &request("db.example.com.", RecordType::AAAA),
        &t,
        true,
    ));
    assert_eq!(rdata_strings(&msg), vec!["2001:db8::1"]);
    let (msg, _, _) = reply(trusted(
        &request("db.example.com.", RecordType::ANY),
        &t,
        true,
    ));
    assert_eq!(msg.answers.len(), 2);
    let (msg, _, outcome) = reply(trusted(
        &request("v4only.example.com.", RecordType::AAAA),
        &t,
        true,
    ));
    assert_eq!(outcome, Outcome::Answered);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
}

#[test]
fn other_names_forward_or_refused_without_upstream() {
    let t = table();
    // a sibling of an alias name is not ours: forward, never NXDOMAIN
    let req = request("other.example.com.", RecordType::A);
    assert!(matches!(
        trusted(&req, &t, true),
        Handling::Forward { qtype: QType::A }
    ));
    let (msg, _, outcome) = reply(trusted(&req, &t, false));
    assert_eq!(outcome, Outcome::Rejected);
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn not_a_single_question_query() {
    let t = table();
    let mut none = request("x.", RecordType::A);
    none.queries.clear();
    let (msg, _, outcome) = reply(trusted(&none, &t, true));
    assert_eq!(outcome, Outcome::Rejected);
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);

    let mut two = request("x.", RecordType::A);
    two.add_query(Query::query(Name::root(), RecordType::A));
    assert_eq!(
        reply(trusted(&two, &t, true)).0.metadata.response_code,
        ResponseCode::FormErr
    );

    let mut status = request("x.", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(
        reply(trusted(&status, &t, true)).0.metadata.response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn edns_echo_and_udp_limit() {
    let mut req = request("db.example.com.", RecordType::A);
    assert_eq!(udp_limit(&req), 512);
    let (msg, _, _) = reply(trusted(&req, &table(), true));
    assert!(msg.edns.is_none());

    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    req.set_edns(edns);
    assert_eq!(udp_limit(&req), usize::from(MAX_UDP_PAYLOAD));
    let (msg, _, _) = reply(trusted(&req, &table(), true));
    assert_eq!(
        msg.edns.as_ref().map(Edns::max_payload),
        Some(MAX_UDP_PAYLOAD)
    );
}

#[test]
fn oversized_reply_is_truncated_to_question() {
    let t = NameTable::new("cluster.local");
    let aliases: Vec<HostAlias> = (0..100)
        .map(|i| HostAlias {
            ip: format!("192.0.2.{i}"),
            hostnames: Some(vec!["many.example.com".into()]),
        })
        .collect();
    t.set_host_aliases(&aliases);
    let req = request("many.example.com.", RecordType::A);
    let (msg, _, _) = reply(trusted(&req, &t, true));
    let full = encode_within(&msg, MAX_TCP_MESSAGE).expect("encodes");
    assert!(full.len() > 512);
    assert_eq!(
        Message::from_vec(&full).expect("decodes").answers.len(),
        100
    );

    let small = encode_within(&msg, udp_limit(&req)).expect("encodes");
    assert!(small.len() <= 512);
    let small = Message::from_vec(&small).expect("decodes");
    assert!(small.metadata.truncation);
    assert!(small.answers.is_empty());
    assert_eq!(small.queries, req.queries);
    assert_eq!(small.metadata.id, req.metadata.id);
}

const WHISPERER: &str = "ghcr.io/whisperer-dev/whisperer:v0.1.0";

/// `table()` plus a Whisperer-carrying pod at 10.9.0.1, a pod only annotated as injected at
/// 10.9.0.2, a service at 10.96.0.10, and the profile image configured.
fn table_with_sources() -> NameTable {
    let t = table();
    for (uid, ip, image, annotations) in [
        ("w", "10.9.0.1", WHISPERER, json!({})),
        (
            "fake",
            "10.9.0.2",
            "busybox",
            json!({ "whisperer.dev/injected": "default/abc" }),
        ),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": uid, "namespace": "shop", "uid": uid, "annotations": annotations },
            "spec": { "containers": [{ "name": "whisperer", "image": image }] },
            "status": { "podIP": ip }
        }))
        .expect("pod");
        t.apply_pod(&pod);
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "api", "namespace": "shop", "uid": "s1" },
        "spec": { "clusterIP": "10.96.0.10" }
    }))
    .expect("service");
    t.apply_service(&svc);
    t.set_whisperer_images([WHISPERER]);
    t
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn trusted_are_whisperer_pods_and_cidrs_only() {
    let t = table_with_sources();
    let cidrs: Vec<Cidr> = vec![
        "192.168.0.0/16".parse().expect("cidr"),
        "fd00:1::/64".parse().expect("cidr"),
    ];
    assert_eq!(access(ip("10.9.0.1"), &[], &t), Access::Trusted);
    assert_eq!(
        access(ip("10.9.0.2"), &[], &t),
        Access::Untrusted,
        "annotation is not trust"
    );
    // a pod IP without a Whisperer, a service IP, an unknown IP
    assert_eq!(access(ip("10.1.2.3"), &[], &t), Access::Untrusted);
    assert_eq!(access(ip("10.96.0.10"), &[], &t), Access::Untrusted);
    assert_eq!(access(ip("192.168.3.4"), &[], &t), Access::Untrusted);
    assert_eq!(access(ip("192.168.3.4"), &cidrs, &t), Access::Trusted);
    assert_eq!(access(ip("fd00:1::9"), &cidrs, &t), Access::Trusted);
    assert_eq!(access(ip("fd00:2::9"), &cidrs, &t), Access::Untrusted);
    // the profile image changes (config reload): the old image no longer counts
    t.set_whisperer_images(["ghcr.io/whisperer-dev/whisperer:v0.2.0"]);
    assert_eq!(access(ip("10.9.0.1"), &[], &t), Access::Untrusted);
}

#[test]
fn untrusted_sources_are_refused_every_name() {
    let t = table_with_sources();
    let names = [
        ("3.2.1.10.in-addr.arpa.", RecordType::PTR),   // a pod
        ("10.0.96.10.in-addr.arpa.", RecordType::PTR), // a service
        ("9.9.9.10.in-addr.arpa.", RecordType::PTR),   // unknown reverse name
        ("db.example.com.", RecordType::A),            // a hostAliases name
        ("db.example.com.", RecordType::AAAA),
        ("other.example.com.", RecordType::A), // would be forwarded
    ];
    for (name, rtype) in names {
        let req = request(name, rtype);
        for can_forward in [true, false] {
            match handle(&req, &t, can_forward, Access::Untrusted) {
                Handling::Denied { reply, reason } => {
                    assert_eq!(reason, Reason::Untrusted);
                    assert_eq!(
                        reply.metadata.response_code,
                        ResponseCode::Refused,
                        "{name}"
                    );
                    assert!(reply.answers.is_empty());
                    assert!(!reply.metadata.authoritative);
                    assert_eq!(reply.queries, req.queries);
                    assert_eq!(reply.metadata.id, req.metadata.id);
                }
                other => panic!("{name}: expected REFUSED, got {other:?}"),
            }
        }
        // the same question from a trusted source is not refused
        assert!(!matches!(trusted(&req, &t, true), Handling::Denied { .. }));
    }
    // a malformed message is judged on its shape first (FORMERR carries nothing of ours)
    let mut none = request("x.", RecordType::A);
    none.queries.clear();
    let (msg, _, _) = reply(handle(&none, &t, true, Access::Untrusted));
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn trusted_sources_get_pod_and_service_names() {
    let t = table_with_sources();
    let (msg, _, _) = reply(trusted(
        &request("10.0.96.10.in-addr.arpa.", RecordType::PTR),
        &t,
        true,
    ));
    assert_eq!(rdata_strings(&msg), vec!["api.shop.svc.cluster.local."]);
}
