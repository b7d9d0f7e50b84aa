//! An IP network (`10.0.0.0/8`, `fd00::/64`, or a bare address as a host route), for
//! `--dns-trusted-cidr`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network. Host bits are never set (parsing refuses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR did not parse. clap prints it after the flag and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("prefix length {0:?} is not a number from 0 to {1}")]
    Prefix(String, u8),
    // A typo like 10.1.2.3/8 would silently trust all of 10/8; make the user say so.
    #[error("host bits are set; the network is {0}")]
    HostBits(Cidr),
}

impl Cidr {
    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what
    /// a dual-stack socket reports for IPv4 peers) are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(p.to_owned(), max))?,
        };
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::from((u32::from(v4) & mask32(prefix)).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from((u128::from(v6) & mask128(prefix)).to_be_bytes()),
        };
        let cidr = Cidr { network, prefix };
        if network != ip {
            return Err(CidrError::HostBits(cidr));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn v4_networks_contain_their_addresses_only() {
        let net = cidr("10.244.0.0/16");
        assert!(net.contains(ip("10.244.0.1")));
        assert!(net.contains(ip("10.244.255.255")));
        assert!(!net.contains(ip("10.245.0.0")));
        assert!(!net.contains(ip("fd00::1")));
        // a dual-stack socket reports IPv4 peers as mapped IPv6
        assert!(net.contains(ip("::ffff:10.244.3.4")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    }

    #[test]
    fn v6_networks_and_host_routes() {
        let net = cidr("fd00:10::/64");
        assert!(net.contains(ip("fd00:10::abcd")));
        assert!(!net.contains(ip("fd00:11::1")));
        assert!(!net.contains(ip("10.0.0.1")));
        let host = cidr("127.0.0.5");
        assert_eq!(host.to_string(), "127.0.0.5/32");
        assert!(host.contains(ip("127.0.0.5")));
        assert!(!host.contains(ip("127.0.0.6")));
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address("10.0.0".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix("33".into(), 32))
        );
        assert_eq!(
            "fd00::/x".parse::<Cidr>(),
            Err(CidrError::Prefix("x".into(), 128))
        );
        let err = "10.1.2.3/8".parse::<Cidr>().expect_err("host bits");
        assert_eq!(
            err.to_string(),
            "host bits are set; the network is 10.0.0.0/8"
        );
    }
}
