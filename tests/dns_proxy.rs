//! The DNS proxy over real sockets, queried by hickory's stub resolver (and by hand-built
//! messages where a test needs to see the wire: TC bit, garbage). Cluster state comes from a
//! real kube-apiserver (tests/support); the forwarding upstream is a real hickory-server.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use k8s_openapi::api::core::v1::{HostAlias, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;
use support::{poll_until, ControlPlane};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use whisperer_injector::dns::reverse::reverse_name;
use whisperer_injector::dns::{watch_cluster, DnsConfig, DnsServer, NameTable};

const WAIT: Duration = Duration::from_secs(20);

/// A running proxy on 127.0.0.1; stops when dropped.
struct Proxy {
    addr: SocketAddr,
    registry: Registry,
    _stop: oneshot::Sender<()>,
}

impl Proxy {
    async fn start(table: Arc<NameTable>, upstreams: Vec<SocketAddr>, timeout: Duration) -> Proxy {
        let mut registry = Registry::default();
        let cfg = DnsConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cluster_domain: "cluster.local".into(),
            upstreams,
            upstream_timeout: timeout,
        };
        let server = DnsServer::bind(cfg, table, &mut registry)
            .await
            .expect("bind DNS proxy");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("DNS proxy runs");
        });
        Proxy {
            addr,
            registry,
            _stop: stop,
        }
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    /// The value of the sample line starting with `prefix`, 0 if absent.
    fn metric(&self, prefix: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// hickory's stub resolver pointed at `addr` only, no cache, no hosts file.
fn resolver(addr: SocketAddr, connections: Vec<ConnectionConfig>) -> TokioResolver {
    let connections = connections
        .into_iter()
        .map(|mut c| {
            c.port = addr.port();
            c
        })
        .collect();
    let ns = NameServerConfig::new(addr.ip(), true, connections);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(3);
    opts.use_hosts_file = ResolveHosts::Never;
    builder.build().expect("build resolver")
}

fn udp_resolver(addr: SocketAddr) -> TokioResolver {
    resolver(addr, vec![ConnectionConfig::udp()])
}

fn tcp_resolver(addr: SocketAddr) -> TokioResolver {
    resolver(addr, vec![ConnectionConfig::tcp()])
}

/// The PTR target for `ip`, or the resolver's error.
async fn ptr(
    resolver: &TokioResolver,
    ip: &str,
) -> Result<String, hickory_resolver::net::NetError> {
    let ip: IpAddr = ip.parse().expect("ip");
    let lookup = resolver.reverse_lookup(reverse_name(ip)).await?;
    Ok(lookup
        .answers()
        .iter()
        .find_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .unwrap_or_default())
}

async fn a_records(resolver: &TokioResolver, name: &str) -> Vec<Ipv4Addr> {
    let lookup = resolver.ipv4_lookup(name).await.expect("A lookup");
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn query(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        msg.set_edns(e);
    }
    msg
}

async fn raw_udp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.send_to(bytes, addr).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

async fn udp_exchange(addr: SocketAddr, msg: &Message) -> Message {
    let reply = raw_udp(addr, &msg.to_vec().expect("encode")).await;
    Message::from_vec(&reply).expect("decode reply")
}

async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("fits");
    stream
        .write_all(&len.to_be_bytes())
        .await
        .expect("write len");
    stream.write_all(bytes).await.expect("write msg");
}

async fn tcp_recv(stream: &mut TcpStream) -> Message {
    let read = async {
        let len = stream.read_u16().await.expect("read len");
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.expect("read msg");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .expect("TCP reply in time");
    Message::from_vec(&buf).expect("decode reply")
}

fn aliases(list: &[(&str, &str)]) -> Vec<HostAlias> {
    list.iter()
        .map(|(ip, host)| HostAlias {
            ip: (*ip).to_string(),
            hostnames: Some(vec![(*host).to_string()]),
        })
        .collect()
}

/// A real authoritative server for `test.` (hickory-server, UDP + TCP) on loopback:
/// `upstream.test. A 192.0.2.7`.
async fn start_upstream() -> SocketAddr {
    let origin = Name::from_str("test.").expect("origin");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        Name::from_str("ns.test.").expect("mname"),
        Name::from_str("admin.test.").expect("rname"),
        1,
        3600,
        600,
        86_400,
        60,
    );
    assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
    let a = Record::from_rdata(
        Name::from_str("upstream.test.").expect("name"),
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
    );
    assert!(zone.upsert_mut(a, 1));
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    let mut server = hickory_server::Server::new(catalog);
    let udp = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind upstream udp");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).await.expect("bind upstream tcp");
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    addr
}

#[tokio::test]
async fn ptr_follows_pods_and_services_in_a_real_apiserver() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let ns = cp.namespace(&[]).await;
    let table = Arc::new(NameTable::new("cluster.local"));
    let watch = tokio::spawn(watch_cluster(client.clone(), table.clone()));
    // No upstream: unknown reverse names get NXDOMAIN.
    let proxy = Proxy::start(table.clone(), vec![], Duration::from_secs(1)).await;
    let udp = udp_resolver(proxy.addr);
    let tcp = tcp_resolver(proxy.addr);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let create = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": name },
                "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
            }))
            .expect("pod json");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod")
        }
    };
    let set_ip = |name: &'static str, ip: &'static str| {
        let pods = pods.clone();
        async move {
            let status = json!({ "status": {
                "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }]
            }});
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("patch pod status");
        }
    };
    let expect_ptr = |resolver: &TokioResolver, ip: &'static str, want: String| {
        let resolver = resolver.clone();
        async move {
            poll_until(WAIT, &format!("PTR {ip} -> {want}"), || {
                let (resolver, want) = (resolver.clone(), want.clone());
                async move { (ptr(&resolver, ip).await.ok()? == want).then_some(()) }
            })
            .await
        }
    };
    let expect_nx = |ip: &'static str| {
        let resolver = udp.clone();
        async move {
            poll_until(WAIT, &format!("NXDOMAIN for PTR {ip}"), || {
                let resolver = resolver.clone();
                async move {
                    match ptr(&resolver, ip).await {
                        Err(e) if e.is_nx_domain() => Some(()),
                        _ => None,
                    }
                }
            })
            .await
        }
    };

    // A pod's IP resolves to its name, over UDP and TCP.
    let old = create("old").await;
    set_ip("old", "10.1.2.3").await;
    let old_name = format!("old.{ns}.pod.cluster.local.");
    expect_ptr(&udp, "10.1.2.3", old_name.clone()).await;
    expect_ptr(&tcp, "10.1.2.3", old_name).await;

    // A newer pod takes the IP while the old one still exists: the newest wins, and deleting
    // the old pod leaves the new owner's record alone. creationTimestamp has one-second
    // resolution, so wait until the clock has passed the old pod's second.
    let old_created = old.metadata.creation_timestamp.expect("timestamp").0;
    poll_until(
        WAIT,
        "the clock to pass the old pod's creation second",
        || async {
            (k8s_openapi::jiff::Timestamp::now().as_second() > old_created.as_second())
                .then_some(())
        },
    )
    .await;
    create("new").await;
    set_ip("new", "10.1.2.3").await;
    let new_name = format!("new.{ns}.pod.cluster.local.");
    expect_ptr(&udp, "10.1.2.3", new_name.clone()).await;
    pods.delete("old", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete old pod");
    poll_until(
        WAIT,
        "the old pod's deletion to reach the table",
        || async { (table.counts().0 == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        ptr(&udp, "10.1.2.3").await.expect("PTR after delete"),
        new_name
    );

    // Delete, then a pod created afterwards with the same IP: the answer changes.
    pods.delete("new", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete new pod");
    expect_nx("10.1.2.3").await;
    create("reuse").await;
    set_ip("reuse", "10.1.2.3").await;
    expect_ptr(&udp, "10.1.2.3", format!("reuse.{ns}.pod.cluster.local.")).await;

    // The pod's IP changes: the old IP is forgotten.
    set_ip("reuse", "10.1.2.4").await;
    expect_ptr(&udp, "10.1.2.4", format!("reuse.{ns}.pod.cluster.local.")).await;
    expect_nx("10.1.2.3").await;

    // A service's cluster IP.
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "api" },
        "spec": { "clusterIP": "10.0.0.42", "ports": [{ "port": 80 }] }
    }))
    .expect("service json");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    expect_ptr(&tcp, "10.0.0.42", format!("api.{ns}.svc.cluster.local.")).await;

    assert!(proxy.metric("whisperer_dns_queries_total{type=\"PTR\",result=\"answered\"}") > 0);
    assert!(proxy.metric("whisperer_dns_queries_total{type=\"PTR\",result=\"nxdomain\"}") > 0);
    assert!(!watch.is_finished(), "the watch keeps running");
    watch.abort();
}

#[tokio::test]
async fn host_aliases_answer_a_and_aaaa_and_reload() {
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[
        ("192.0.2.10", "db.example.com"),
        ("2001:db8::10", "db.example.com"),
    ]));
    let proxy = Proxy::start(table.clone(), vec![], Duration::from_secs(1)).await;
    for r in [udp_resolver(proxy.addr), tcp_resolver(proxy.addr)] {
        assert_eq!(
            a_records(&r, "db.example.com.").await,
            vec![Ipv4Addr::new(192, 0, 2, 10)]
        );
        let v6 = r.ipv6_lookup("DB.Example.com.").await.expect("AAAA lookup");
        let got: Vec<String> = v6.answers().iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, vec!["2001:db8::10"]);
    }
    // Config reload replaces the list.
    table.set_host_aliases(&aliases(&[("192.0.2.11", "db.example.com")]));
    assert_eq!(
        a_records(&udp_resolver(proxy.addr), "db.example.com.").await,
        vec![Ipv4Addr::new(192, 0, 2, 11)]
    );
    assert_eq!(
        proxy.metric("whisperer_dns_queries_total{type=\"A\",result=\"answered\"}"),
        3
    );
}

#[tokio::test]
async fn no_upstream_nxdomain_for_reverse_refused_for_other_names() {
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[("192.0.2.10", "db.example.com")]));
    let proxy = Proxy::start(table, vec![], Duration::from_secs(1)).await;
    let err = ptr(&udp_resolver(proxy.addr), "10.9.9.9")
        .await
        .expect_err("unknown IP");
    assert!(err.is_nx_domain(), "{err:?}");
    let reply = udp_exchange(
        proxy.addr,
        &query("other.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn forwards_to_upstream_and_servfails_on_timeout() {
    let upstream = start_upstream().await;
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[("192.0.2.10", "db.example.com")]));
    let proxy = Proxy::start(table, vec![upstream], Duration::from_secs(2)).await;
    for r in [udp_resolver(proxy.addr), tcp_resolver(proxy.addr)] {
        assert_eq!(
            a_records(&r, "upstream.test.").await,
            vec![Ipv4Addr::new(192, 0, 2, 7)]
        );
        // a sibling of an alias name is forwarded, not NXDOMAIN'd by us
        let err = r
            .ipv4_lookup("nope.test.")
            .await
            .expect_err("upstream NXDOMAIN");
        assert!(err.is_nx_domain(), "{err:?}");
    }
    // unknown reverse names go upstream too (the test upstream refuses them)
    let reply = udp_exchange(
        proxy.addr,
        &query("9.9.9.10.in-addr.arpa.", RecordType::PTR, true),
    )
    .await;
    assert_ne!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        proxy.metric("whisperer_dns_queries_total{type=\"A\",result=\"forwarded\"}"),
        4
    );
    assert_eq!(
        proxy.metric("whisperer_dns_queries_total{type=\"PTR\",result=\"forwarded\"}"),
        1
    );

    // An upstream that never answers: SERVFAIL after the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind silent upstream");
    let table = Arc::new(NameTable::new("cluster.local"));
    let dead = Proxy::start(
        table,
        vec![silent.local_addr().expect("addr")],
        Duration::from_millis(300),
    )
    .await;
    let reply = udp_exchange(dead.addr, &query("upstream.test.", RecordType::A, false)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        dead.metric("whisperer_dns_queries_total{type=\"A\",result=\"servfail\"}"),
        1
    );
}

#[tokio::test]
async fn large_answer_truncated_over_udp_and_full_over_tcp() {
    let table = Arc::new(NameTable::new("cluster.local"));
    let many: Vec<String> = (0..100).map(|i| format!("198.51.100.{i}")).collect();
    let list: Vec<(&str, &str)> = many
        .iter()
        .map(|ip| (ip.as_str(), "many.example.com"))
        .collect();
    table.set_host_aliases(&aliases(&list));
    let proxy = Proxy::start(table, vec![], Duration::from_secs(1)).await;

    for edns in [false, true] {
        let q = query("many.example.com.", RecordType::A, edns);
        let bytes = raw_udp(proxy.addr, &q.to_vec().expect("encode")).await;
        let limit = if edns { 1232 } else { 512 };
        assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
        let reply = Message::from_vec(&bytes).expect("decode");
        assert!(reply.metadata.truncation, "TC set (edns={edns})");
        assert!(reply.answers.is_empty());
        assert_eq!(reply.metadata.id, q.metadata.id);

        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        tcp_send(&mut stream, &q.to_vec().expect("encode")).await;
        let reply = tcp_recv(&mut stream).await;
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 100);
    }
    // hickory's stub resolver, UDP first, retries over TCP on TC and gets all 100.
    let both = resolver(
        proxy.addr,
        vec![ConnectionConfig::udp(), ConnectionConfig::tcp()],
    );
    assert_eq!(a_records(&both, "many.example.com.").await.len(), 100);
}

#[tokio::test]
async fn garbage_is_dropped_and_counted() {
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[("192.0.2.10", "db.example.com")]));
    let proxy = Proxy::start(table, vec![], Duration::from_secs(1)).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");

    let mut random: Vec<u8> = (0..200).map(|_| rand::random::<u8>()).collect();
    random[4] = 0xff; // at least 65,280 questions announced: can never decode
    let header_only = &query("db.example.com.", RecordType::A, false)
        .to_vec()
        .expect("encode")[..7];
    // qdcount=1, then a 63-byte label announced but 10 bytes sent
    let mut short_label = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63];
    short_label.extend_from_slice(&[b'a'; 10]);
    // a name of 5 x 63-byte labels (> 255 bytes)
    let mut huge_name = vec![0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        huge_name.push(63);
        huge_name.extend_from_slice(&[b'x'; 63]);
    }
    huge_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    // a label length with the reserved 0b01 prefix
    let mut bad_label_type = vec![0x12, 0x36, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x7f];
    bad_label_type.extend_from_slice(&[b'y'; 40]);
    let garbage: Vec<&[u8]> = vec![
        &random,
        header_only,
        &short_label,
        &huge_name,
        &bad_label_type,
        &[],
    ];
    let sent_malformed = garbage.len() as u64;
    for g in &garbage {
        socket.send_to(g, proxy.addr).await.expect("send garbage");
    }
    // The same over TCP on one connection, followed by a real query there.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp_send(&mut stream, &short_label).await;
    tcp_send(
        &mut stream,
        &query("db.example.com.", RecordType::A, false)
            .to_vec()
            .expect("encode"),
    )
    .await;
    let reply = tcp_recv(&mut stream).await;
    assert_eq!(reply.answers.len(), 1);

    let expected_malformed = sent_malformed + 1; // + the one over TCP
    poll_until(WAIT, "malformed packets counted", || async {
        let n = proxy.metric("whisperer_dns_malformed_packets_total");
        (n >= expected_malformed).then_some(n)
    })
    .await;
    // Still answering.
    let r = udp_resolver(proxy.addr);
    assert_eq!(
        a_records(&r, "db.example.com.").await,
        vec![Ipv4Addr::new(192, 0, 2, 10)]
    );
}
