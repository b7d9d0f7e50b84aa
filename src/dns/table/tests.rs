use super::*;
use serde_json::json;

fn pod(uid: &str, name: &str, created: &str, ips: &[&str]) -> Pod {
    let pod_ips: Vec<_> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "ns", "uid": uid, "creationTimestamp": created },
        "spec": { "containers": [] },
        "status": { "phase": "Running", "podIP": ips.first(), "podIPs": pod_ips }
    }))
    .expect("pod fixture")
}

fn service(uid: &str, name: &str, ips: &[&str]) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "ns", "uid": uid,
                      "creationTimestamp": "2024-01-01T00:00:00Z" },
        "spec": { "clusterIP": ips.first(), "clusterIPs": ips }
    }))
    .expect("service fixture")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

fn answer(table: &NameTable, s: &str) -> Option<String> {
    table.lookup_ip(ip(s)).map(|n| n.to_ascii())
}

#[test]
fn pod_ips_v4_and_v6() {
    let table = NameTable::new("cluster.local");
    table.apply_pod(&pod(
        "u1",
        "web-0",
        "2024-01-01T00:00:00Z",
        &["10.1.2.3", "fd00::3"],
    ));
    assert_eq!(
        answer(&table, "10.1.2.3").as_deref(),
        Some("web-0.ns.pod.cluster.local.")
    );
    assert_eq!(
        answer(&table, "fd00::3").as_deref(),
        Some("web-0.ns.pod.cluster.local.")
    );
    assert_eq!(table.counts(), (1, 0));
}

#[test]
fn pod_ip_falls_back_to_status_pod_ip() {
    let table = NameTable::new("cluster.local");
    let mut p = pod("u1", "a", "2024-01-01T00:00:00Z", &["10.0.0.9"]);
    if let Some(status) = p.status.as_mut() {
        status.pod_ips = None;
    }
    table.apply_pod(&p);
    assert_eq!(
        answer(&table, "10.0.0.9").as_deref(),
        Some("a.ns.pod.cluster.local.")
    );
}

#[test]
fn ip_change_moves_the_record() {
    let table = NameTable::new("cluster.local");
    table.apply_pod(&pod("u1", "a", "2024-01-01T00:00:00Z", &["10.0.0.1"]));
    table.apply_pod(&pod("u1", "a", "2024-01-01T00:00:00Z", &["10.0.0.2"]));
    assert_eq!(answer(&table, "10.0.0.1"), None);
    assert_eq!(
        answer(&table, "10.0.0.2").as_deref(),
        Some("a.ns.pod.cluster.local.")
    );
}

#[test]
fn reused_ip_resolves_to_newest_and_old_delete_keeps_new() {
    let table = NameTable::new("cluster.local");
    let old = pod("u-old", "old", "2024-01-01T00:00:00Z", &["10.0.0.5"]);
    let new = pod("u-new", "new", "2024-01-02T00:00:00Z", &["10.0.0.5"]);
    // The new pod's event may arrive before the old pod's deletion.
    table.apply_pod(&new);
    table.apply_pod(&old);
    assert_eq!(
        answer(&table, "10.0.0.5").as_deref(),
        Some("new.ns.pod.cluster.local.")
    );
    table.delete_pod(&old);
    assert_eq!(
        answer(&table, "10.0.0.5").as_deref(),
        Some("new.ns.pod.cluster.local.")
    );
    assert_eq!(table.counts(), (1, 0));
    table.delete_pod(&new);
    assert_eq!(answer(&table, "10.0.0.5"), None);
    assert_eq!(table.counts(), (0, 0));
}

#[test]
fn deleting_newest_falls_back_to_remaining_claimant() {
    let table = NameTable::new("cluster.local");
    let old = pod("u-old", "old", "2024-01-01T00:00:00Z", &["10.0.0.5"]);
    let new = pod("u-new", "new", "2024-01-02T00:00:00Z", &["10.0.0.5"]);
    table.apply_pod(&old);
    table.apply_pod(&new);
    table.delete_pod(&new);
    assert_eq!(
        answer(&table, "10.0.0.5").as_deref(),
        Some("old.ns.pod.cluster.local.")
    );
}

#[test]
fn finished_and_host_network_pods_claim_nothing() {
    let table = NameTable::new("cluster.local");
    let mut done = pod("u1", "job", "2024-01-01T00:00:00Z", &["10.0.0.7"]);
    table.apply_pod(&done);
    if let Some(status) = done.status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    table.apply_pod(&done);
    assert_eq!(answer(&table, "10.0.0.7"), None);

    let mut host = pod(
        "u2",
        "node-agent",
        "2024-01-01T00:00:00Z",
        &["192.168.0.10"],
    );
    if let Some(spec) = host.spec.as_mut() {
        spec.host_network = Some(true);
    }
    table.apply_pod(&host);
    assert_eq!(answer(&table, "192.168.0.10"), None);
    assert_eq!(table.counts(), (0, 0));
}

#[test]
fn services_skip_none_and_count_separately() {
    let table = NameTable::new("example.org.");
    table.apply_service(&service("s1", "api", &["10.0.0.10", "fd00::10"]));
    table.apply_service(&service("s2", "headless", &["None"]));
    assert_eq!(
        answer(&table, "10.0.0.10").as_deref(),
        Some("api.ns.svc.example.org.")
    );
    assert_eq!(
        answer(&table, "fd00::10").as_deref(),
        Some("api.ns.svc.example.org.")
    );
    assert_eq!(table.counts(), (0, 1));
    table.delete_service(&service("s1", "api", &[]));
    assert_eq!(answer(&table, "10.0.0.10"), None);
}

#[test]
fn replace_kind_drops_stale_entries_only_of_that_kind() {
    let table = NameTable::new("cluster.local");
    let a = pod("ua", "a", "2024-01-01T00:00:00Z", &["10.0.0.1"]);
    let b = pod("ub", "b", "2024-01-01T00:00:00Z", &["10.0.0.2"]);
    table.apply_pod(&a);
    table.apply_pod(&b);
    table.apply_service(&service("s1", "api", &["10.0.0.10"]));
    let relisted: Vec<_> = [&b].iter().filter_map(|p| table.pod_record(p)).collect();
    table.replace_kind(Kind::Pod, relisted);
    assert_eq!(answer(&table, "10.0.0.1"), None);
    assert_eq!(
        answer(&table, "10.0.0.2").as_deref(),
        Some("b.ns.pod.cluster.local.")
    );
    assert_eq!(
        answer(&table, "10.0.0.10").as_deref(),
        Some("api.ns.svc.cluster.local.")
    );
    assert_eq!(table.counts(), (1, 1));
}

#[test]
fn host_aliases_merge_dedupe_and_replace() {
    let table = NameTable::new("cluster.local");
    let aliases: Vec<HostAlias> = serde_json::from_value(json!([
        { "ip": "192.0.2.1", "hostnames": ["db.example.com", "cache.example.com."] },
        { "ip": "192.0.2.2", "hostnames": ["DB.example.com"] },
        { "ip": "192.0.2.1", "hostnames": ["db.example.com"] },
        { "ip": "2001:db8::1", "hostnames": ["db.example.com"] },
        { "ip": "not-an-ip", "hostnames": ["bad.example.com"] },
        { "ip": "192.0.2.3", "hostnames": ["", "bad..name"] }
    ]))
    .expect("aliases fixture");
    table.set_host_aliases(&aliases);
    let db = Name::from_ascii("Db.Example.Com.").expect("name");
    let ips = table.lookup_alias(&db).expect("db alias");
    assert_eq!(
        &*ips,
        &[ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")]
    );
    assert!(table
        .lookup_alias(&Name::from_ascii("cache.example.com.").expect("name"))
        .is_some());
    assert_eq!(table.alias_count(), 2);
    table.set_host_aliases(&[]);
    assert!(table.lookup_alias(&db).is_none());
}

#[test]
fn invalid_cluster_domain() {
    assert!(NameTable::try_new("").is_err());
    assert!(NameTable::try_new("bad..domain").is_err());
    let table = NameTable::new("");
    table.apply_pod(&pod("u", "a", "2024-01-01T00:00:00Z", &["10.0.0.1"]));
    assert_eq!(
        answer(&table, "10.0.0.1").as_deref(),
        Some("a.ns.pod.cluster.local.")
    );
}
