//! The DNS proxy over real sockets, queried by hickory's stub resolver (and by hand-built
//! messages where a test needs to see the wire: TC bit, garbage). Cluster state comes from a
//! real kube-apiserver (tests/support); the forwarding upstream is a real hickory-server.
//!
//! The proxy serves trusted sources only. Most tests ask from 127.0.0.1, trusted by CIDR; the
//! tests of source policy bind their client sockets to other loopback addresses (all of
//! 127.0.0.0/8 is loopback on Linux) and give pods those IPs, as a kubelet would.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
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
use support::dns::{query, raw_udp, udp_exchange};
use support::{metrics, poll_until, ControlPlane, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use whisperer_injector::config::DEFAULT_IMAGE;
use whisperer_injector::dns::reverse::reverse_name;
use whisperer_injector::dns::{watch_cluster, Cidr, DnsConfig, DnsServer, NameTable, RateLimit};

/// How long a test waits for one reply: the proxy runs in this process on a loaded machine.
const REPLY: Duration = Duration::from_secs(10);

/// A running proxy on 127.0.0.1; stops when dropped.
struct Proxy {
    addr: SocketAddr,
    registry: Registry,
    _stop: oneshot::Sender<()>,
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

impl Proxy {
    /// A proxy that trusts the tests' usual client address, 127.0.0.1.
    async fn start(table: Arc<NameTable>, upstreams: Vec<SocketAddr>, timeout: Duration) -> Proxy {
        let cfg = DnsConfig {
            upstreams,
            upstream_timeout: timeout,
            trusted_cidrs: vec![cidr("127.0.0.1/32")],
            ..DnsConfig::default()
        };
        Proxy::start_with(table, cfg).await
    }

    /// A proxy with `cfg`, listening on a free port of 127.0.0.1.
    async fn start_with(table: Arc<NameTable>, cfg: DnsConfig) -> Proxy {
        let mut registry = Registry::default();
        let cfg = DnsConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..cfg
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

    /// The value of the sample `series`, 0 if absent.
    fn metric(&self, series: &str) -> u64 {
        metrics::sample(&metrics::encode(&self.registry), series).map_or(0, |v| v as u64)
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
    opts.timeout = REPLY;
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
    let buf = tokio::time::timeout(REPLY, read)
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
    // The TCP port matching a free UDP port may be taken by another test: try a few.
    let mut bound = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind upstream udp");
        let addr = udp.local_addr().expect("addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            bound = Some((udp, addr, tcp));
            break;
        }
    }
    let (udp, addr, tcp) = bound.expect("a port free for both UDP and TCP");
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
    // The upstream runs in this process too; the resolver waits longer than this.
    let proxy = Proxy::start(table, vec![upstream], Duration::from_secs(5)).await;
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

// ---- source policy: who gets names, rates, quotas ----

fn lo(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn ptr_query(ip: &str) -> Message {
    let name = reverse_name(ip.parse().expect("ip")).to_ascii();
    query(&name, RecordType::PTR, false)
}

fn ptr_names(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect()
}

/// `msg` over UDP from loopback address `src`; the reply (which must come).
async fn ask_udp_from(src: Ipv4Addr, addr: SocketAddr, msg: &Message) -> Message {
    let socket = UdpSocket::bind((src, 0)).await.expect("bind client");
    socket
        .send_to(&msg.to_vec().expect("encode"), addr)
        .await
        .expect("send");
    recv_message(&socket).await
}

async fn recv_message(socket: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(REPLY, socket.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decode reply")
}

async fn tcp_from(src: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("tcp socket");
    socket.bind((src, 0).into()).expect("bind client");
    socket.connect(addr).await.expect("connect")
}

/// `msg` over a fresh TCP connection from `src`; the reply.
async fn ask_tcp_from(src: Ipv4Addr, addr: SocketAddr, msg: &Message) -> Message {
    let mut stream = tcp_from(src, addr).await;
    tcp_send(&mut stream, &msg.to_vec().expect("encode")).await;
    tcp_recv(&mut stream).await
}

fn assert_refused(m: &Message, what: &str) {
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{what}");
    assert!(m.answers.is_empty(), "{what}: {:?}", m.answers);
}

#[tokio::test]
async fn pod_names_only_for_whisperer_pods_and_trusted_cidrs() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let ns = cp.namespace(&[]).await;
    let table = Arc::new(NameTable::new("cluster.local"));
    // What `serve` takes from the profiles (the default profile's image).
    table.set_whisperer_images([DEFAULT_IMAGE]);
    table.set_host_aliases(&aliases(&[("192.0.2.10", "collector.example.com")]));
    let watch = tokio::spawn(watch_cluster(client.clone(), table.clone()));
    let cfg = DnsConfig {
        trusted_cidrs: vec![cidr("127.0.0.5/32")],
        ..DnsConfig::default()
    };
    let proxy = Proxy::start_with(table.clone(), cfg).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let create = |name: &str, containers: serde_json::Value, annotations: serde_json::Value| {
        let pods = pods.clone();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name, "annotations": annotations },
            "spec": { "containers": containers }
        }))
        .expect("pod json");
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
        }
    };
    let app = json!({ "name": "app", "image": "registry.k8s.io/pause:3.10" });
    create("web", json!([app]), json!({})).await;
    cp.mark_pod_running(&ns, "web", "node-a", "10.1.2.3").await;
    // A pod with the Whisperer sidecar, as the webhook injects it.
    let sidecar = json!({ "name": "whisperer", "image": DEFAULT_IMAGE });
    create("agent", json!([app, sidecar]), json!({})).await;
    cp.mark_pod_running(&ns, "agent", "node-a", "127.0.0.3")
        .await;
    // A pod that only claims to be injected (a pod owner may write any annotation).
    let claims =
        json!({ "whisperer.dev/inject": "true", "whisperer.dev/injected": "default/0123abcd" });
    let lookalike = json!({ "name": "whisperer", "image": "example.com/whisperer:v0.1.0" });
    create("faker", json!([app, lookalike]), claims).await;
    cp.mark_pod_running(&ns, "faker", "node-a", "127.0.0.4")
        .await;
    // A pod that gets a Whisperer attached at runtime later.
    create("late", json!([app]), json!({})).await;
    cp.mark_pod_running(&ns, "late", "node-a", "127.0.0.6")
        .await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "api" },
        "spec": { "clusterIP": "10.0.0.42", "ports": [{ "port": 80 }] }
    }))
    .expect("service json");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");

    // Every pod and the service are in the table before anyone else asks: the watch events
    // come in their own time, and an answer given before would say nothing about the policy
    // (a pod not seen yet is refused like any stranger, and counted as one).
    for (ip, name) in [
        ("10.1.2.3", format!("web.{ns}.pod.cluster.local.")),
        ("127.0.0.3", format!("agent.{ns}.pod.cluster.local.")),
        ("127.0.0.4", format!("faker.{ns}.pod.cluster.local.")),
        ("127.0.0.6", format!("late.{ns}.pod.cluster.local.")),
        ("10.0.0.42", format!("api.{ns}.svc.cluster.local.")),
    ] {
        let (q, want) = (ptr_query(ip), vec![name]);
        let addr = proxy.addr;
        poll_until(WAIT, &format!("the table to know {ip}"), || {
            let (q, want) = (q.clone(), want.clone());
            async move { (ptr_names(&ask_udp_from(lo(5), addr, &q).await) == want).then_some(()) }
        })
        .await;
    }

    let web = ptr_query("10.1.2.3");
    let web_name = vec![format!("web.{ns}.pod.cluster.local.")];
    let gets_web_name = |src: Ipv4Addr| {
        let (web, web_name) = (web.clone(), web_name.clone());
        let addr = proxy.addr;
        async move {
            poll_until(WAIT, &format!("{src} gets the pod's name"), || {
                let (web, web_name) = (web.clone(), web_name.clone());
                async move {
                    (ptr_names(&ask_udp_from(src, addr, &web).await) == web_name).then_some(())
                }
            })
            .await
        }
    };
    // A source in a trusted CIDR, and the IP of a pod carrying a Whisperer (UDP and TCP).
    gets_web_name(lo(5)).await;
    gets_web_name(lo(3)).await;
    assert_eq!(
        ptr_names(&ask_tcp_from(lo(3), proxy.addr, &web).await),
        web_name
    );
    let svc_ptr = ptr_query("10.0.0.42");
    assert_eq!(
        ptr_names(&ask_udp_from(lo(3), proxy.addr, &svc_ptr).await),
        vec![format!("api.{ns}.svc.cluster.local.")],
        "a Whisperer pod gets the service's name"
    );

    // Everyone else: REFUSED, whatever the name, over UDP and TCP.
    let questions = [
        ("a pod's PTR", web.clone()),
        ("a service's PTR", svc_ptr),
        (
            "a hostAliases name",
            query("collector.example.com.", RecordType::A, false),
        ),
        ("an unknown reverse name", ptr_query("10.9.9.9")),
    ];
    for (src, who) in [
        (lo(2), "no pod"),
        (lo(4), "the faker pod"),
        (lo(6), "a pod without Whisperer"),
    ] {
        for (what, q) in &questions {
            assert_refused(
                &ask_udp_from(src, proxy.addr, q).await,
                &format!("{who}: {what}"),
            );
        }
        assert_refused(
            &ask_tcp_from(src, proxy.addr, &web).await,
            &format!("{who} over TCP"),
        );
    }
    let refused_udp = "whisperer_dns_refused_total{reason=\"untrusted\",transport=\"udp\"}";
    assert_eq!(proxy.metric(refused_udp), 12);
    assert_eq!(
        proxy.metric("whisperer_dns_refused_total{reason=\"untrusted\",transport=\"tcp\"}"),
        3
    );

    // A Whisperer attached at runtime (ephemeral container, as the reconciler adds it): the pod
    // becomes a trusted source once the watch has seen it.
    let attach = json!({ "spec": { "ephemeralContainers": [
        { "name": "whisperer-debug", "image": DEFAULT_IMAGE }
    ]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        "late",
        &PatchParams::default(),
        &Patch::Strategic(&attach),
    )
    .await
    .expect("add ephemeral container");
    gets_web_name(lo(6)).await;

    // It terminates (detached, deadline passed): the ephemeral container stays in the spec
    // forever, its pod's access does not.
    let terminated = json!({ "status": { "ephemeralContainerStatuses": [{
        "name": "whisperer-debug", "image": DEFAULT_IMAGE, "imageID": "", "ready": false,
        "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } }
    }]}});
    pods.patch_status("late", &PatchParams::default(), &Patch::Merge(&terminated))
        .await
        .expect("mark the Whisperer terminated");
    poll_until(WAIT, "the detached pod refused again", || {
        let web = web.clone();
        let addr = proxy.addr;
        async move {
            let m = ask_udp_from(lo(6), addr, &web).await;
            (m.metadata.response_code == ResponseCode::Refused).then_some(())
        }
    })
    .await;
    assert!(!watch.is_finished(), "the watch keeps running");
    watch.abort();
}

#[tokio::test]
async fn a_source_over_its_rate_is_refused_and_counted_while_another_is_answered() {
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[("192.0.2.10", "db.example.com")]));
    let cfg = DnsConfig {
        trusted_cidrs: vec![cidr("127.0.0.0/8")],
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 5,
        }),
        ..DnsConfig::default()
    };
    let proxy = Proxy::start_with(table, cfg).await;
    let q = query("db.example.com.", RecordType::A, false);

    // Ten at once from one source: a burst of five passes, the rest is dropped (UDP) and counted.
    let noisy = UdpSocket::bind((lo(2), 0)).await.expect("bind");
    let sending = std::time::Instant::now();
    for id in 0..10u16 {
        let mut m = q.clone();
        m.metadata.id = id;
        noisy
            .send_to(&m.to_vec().expect("encode"), proxy.addr)
            .await
            .expect("send");
    }
    let answered_metric = "whisperer_dns_queries_total{type=\"A\",result=\"answered\"}";
    let limited_metric = "whisperer_dns_refused_total{reason=\"rate-limited\",transport=\"udp\"}";
    let limited = poll_until(WAIT, "all ten queries settled", || async {
        let (answered, limited) = (proxy.metric(answered_metric), proxy.metric(limited_metric));
        (answered + limited == 10).then_some(limited)
    })
    .await;
    // The burst, plus one token per second that passed while the ten were handled (none on a
    // quiet machine; a loaded one may take longer, and the bucket refills meanwhile).
    let refilled = sending.elapsed().as_secs() + 1;
    let answered = 10 - limited;
    assert!(
        (5..=5 + refilled).contains(&answered),
        "{answered} of 10 answered within {:?}",
        sending.elapsed()
    );
    for _ in 0..(10 - limited) {
        let reply = recv_message(&noisy).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
    }

    // The bucket is the address's, whatever the transport: over TCP the answer is REFUSED.
    poll_until(WAIT, "REFUSED over TCP for the noisy source", || {
        let q = q.clone();
        let addr = proxy.addr;
        async move {
            let m = ask_tcp_from(lo(2), addr, &q).await;
            (m.metadata.response_code == ResponseCode::Refused).then_some(())
        }
    })
    .await;
    assert!(
        proxy.metric("whisperer_dns_refused_total{reason=\"rate-limited\",transport=\"tcp\"}") >= 1
    );

    // Another client is answered all along.
    for reply in [
        ask_udp_from(lo(3), proxy.addr, &q).await,
        ask_tcp_from(lo(3), proxy.addr, &q).await,
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
    }
}

/// An upstream that reads every query, answers those for names under `answer.test.`
/// (`A 192.0.2.8`) and never answers the others. Returns its address and how many queries it
/// has left unanswered.
async fn selective_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = socket.local_addr().expect("addr");
    let silent = Arc::new(AtomicUsize::new(0));
    let counter = silent.clone();
    let zone = Name::from_str("answer.test.").expect("zone");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = request.queries.first() else {
                continue;
            };
            if !zone.zone_of(q.name()) {
                counter.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
            reply.queries.clone_from(&request.queries);
            reply.answers.push(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 8))),
            ));
            let _ = socket.send_to(&reply.to_vec().expect("encode"), peer).await;
        }
    });
    (addr, silent)
}

#[tokio::test]
async fn a_source_holding_its_forward_quota_does_not_stop_others() {
    let (upstream, unanswered) = selective_upstream().await;
    let cfg = DnsConfig {
        upstreams: vec![upstream],
        // Far longer than the test: the hanging forwards hold their slots throughout.
        upstream_timeout: Duration::from_secs(60),
        trusted_cidrs: vec![cidr("127.0.0.0/8")],
        forward_quota: 4,
        max_forwards: 8,
        ..DnsConfig::default()
    };
    let proxy = Proxy::start_with(Arc::new(NameTable::new("cluster.local")), cfg).await;
    let addr = proxy.addr;
    let hang = |src: Ipv4Addr, count: u16| async move {
        let socket = UdpSocket::bind((src, 0)).await.expect("bind");
        for i in 0..count {
            let mut m = query(&format!("hang-{i}.silent.test."), RecordType::A, false);
            m.metadata.id = i;
            socket
                .send_to(&m.to_vec().expect("encode"), addr)
                .await
                .expect("send");
        }
        socket
    };

    // Twelve from one source: four go upstream and hang there, eight are refused at once.
    let greedy = hang(lo(2), 12).await;
    for _ in 0..8 {
        assert_refused(&recv_message(&greedy).await, "over the forward quota");
    }
    poll_until(WAIT, "four forwards hanging upstream", || async {
        (unanswered.load(Ordering::SeqCst) == 4).then_some(())
    })
    .await;
    assert_eq!(
        proxy.metric("whisperer_dns_refused_total{reason=\"forward-quota\",transport=\"udp\"}"),
        8
    );

    // Another client's forwarded queries still get through and are answered.
    let b = query("b.answer.test.", RecordType::A, false);
    for reply in [
        ask_udp_from(lo(3), proxy.addr, &b).await,
        ask_tcp_from(lo(3), proxy.addr, &b).await,
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
    }

    // What the first source alone would have done without its quota: when two sources hold
    // four each, all eight slots are taken and a third gets SERVFAIL at once.
    let _greedy2 = hang(lo(4), 4).await;
    poll_until(WAIT, "eight forwards hanging upstream", || async {
        (unanswered.load(Ordering::SeqCst) == 8).then_some(())
    })
    .await;
    let reply = ask_udp_from(lo(5), proxy.addr, &b).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn one_source_cannot_hold_every_tcp_connection() {
    use whisperer_injector::dns::server::MAX_TCP_CONNECTIONS_PER_SOURCE;
    let table = Arc::new(NameTable::new("cluster.local"));
    table.set_host_aliases(&aliases(&[("192.0.2.10", "db.example.com")]));
    let cfg = DnsConfig {
        trusted_cidrs: vec![cidr("127.0.0.0/8")],
        ..DnsConfig::default()
    };
    let proxy = Proxy::start_with(table, cfg).await;
    let q = query("db.example.com.", RecordType::A, false)
        .to_vec()
        .expect("encode");
    let mut held = Vec::new();
    for _ in 0..MAX_TCP_CONNECTIONS_PER_SOURCE {
        let mut stream = tcp_from(lo(2), proxy.addr).await;
        tcp_send(&mut stream, &q).await;
        assert_eq!(tcp_recv(&mut stream).await.answers.len(), 1);
        held.push(stream);
    }
    // One more from the same source is closed at once, and counted.
    let mut extra = tcp_from(lo(2), proxy.addr).await;
    let mut byte = [0u8; 1];
    // Shorter than the server's idle timeout, so a served connection cannot pass for a closed one.
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        proxy.metric("whisperer_dns_refused_total{reason=\"connection-quota\",transport=\"tcp\"}"),
        1
    );
    // Another source is served.
    let reply = ask_tcp_from(
        lo(3),
        proxy.addr,
        &query("db.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.answers.len(), 1);
}
