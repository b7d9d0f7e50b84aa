//! Upstream resolvers from `/etc/resolv.conf` text. Pure.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// glibc reads at most this many `nameserver` lines; so do we.
pub const MAX_NAMESERVERS: usize = 3;

/// The `nameserver` addresses in `text`, port 53, in file order, without duplicates, at most
/// [`MAX_NAMESERVERS`]. Comments (`#`, `;`), other options and unparsable addresses are
/// ignored. An IPv6 zone is kept when numeric (`fe80::1%2`), dropped otherwise.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_NAMESERVERS {
            break;
        }
    }
    out
}

fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    let (host, zone) = match word.split_once('%') {
        Some((host, zone)) => (host, Some(zone)),
        None => (word, None),
    };
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(SocketAddr::from((v4, 53))),
        IpAddr::V6(v6) => {
            let scope = zone.and_then(|z| z.parse::<u32>().ok()).unwrap_or(0);
            Some(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, scope)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_pod_resolv_conf() {
        let text = "search default.svc.cluster.local svc.cluster.local cluster.local\n\
                    nameserver 10.96.0.10\n\
                    options ndots:5\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec!["10.96.0.10:53".parse().expect("addr")]
        );
    }

    #[test]
    fn comments_v6_zones_duplicates_and_limit() {
        let text = "# comment\n\
                    ; nameserver 9.9.9.9\n\
                    nameserver 1.1.1.1 # trailing\n\
                    nameserver\tfe80::1%2\n\
                    nameserver fe80::2%eth0\n\
                    nameserver 1.1.1.1\n\
                    nameserver bogus\n\
                    nameserver 8.8.8.8\n\
                    nameserver 8.8.4.4\n";
        let got = upstreams_from_resolv_conf(text);
        let fe80_1 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().expect("ip"), 53, 0, 2));
        let fe80_2 = SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().expect("ip"), 53, 0, 0));
        assert_eq!(
            got,
            vec!["1.1.1.1:53".parse().expect("addr"), fe80_1, fe80_2]
        );
    }

    #[test]
    fn empty_and_garbage() {
        assert!(upstreams_from_resolv_conf("").is_empty());
        assert!(upstreams_from_resolv_conf("nameservers 1.1.1.1\n\0\u{fffd}").is_empty());
        assert!(upstreams_from_resolv_conf("  nameserver   ").is_empty());
    }
}
