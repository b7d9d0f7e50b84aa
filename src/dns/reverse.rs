//! Reverse names (`in-addr.arpa`, `ip6.arpa`) <-> IP addresses. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// True when `name` lies under `in-addr.arpa.` or `ip6.arpa.` (any case).
pub fn is_reverse_name(name: &Name) -> bool {
    let labels: Vec<&[u8]> = name.iter().collect();
    match labels.as_slice() {
        [.., a, b] => {
            b.eq_ignore_ascii_case(b"arpa")
                && (a.eq_ignore_ascii_case(b"in-addr") || a.eq_ignore_ascii_case(b"ip6"))
        }
        _ => false,
    }
}

/// The single host address a reverse name stands for: exactly four decimal octets under
/// `in-addr.arpa.` or exactly 32 hex nibbles under `ip6.arpa.`. Partial (network) names and
/// anything malformed give `None`.
pub fn ip_from_reverse_name(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let (suffix_ok_v4, suffix_ok_v6) = match labels.as_slice() {
        [.., a, b] if b.eq_ignore_ascii_case(b"arpa") => (
            a.eq_ignore_ascii_case(b"in-addr"),
            a.eq_ignore_ascii_case(b"ip6"),
        ),
        _ => return None,
    };
    let body = &labels[..labels.len() - 2];
    if suffix_ok_v4 && body.len() == 4 {
        let mut octets = [0u8; 4];
        for (slot, label) in octets.iter_mut().rev().zip(body) {
            *slot = parse_octet(label)?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if suffix_ok_v6 && body.len() == 32 {
        let mut value: u128 = 0;
        for label in body.iter().rev() {
            let [digit] = label else { return None };
            let nibble = (*digit as char).to_digit(16)?;
            value = (value << 4) | u128::from(nibble);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// Decimal 0..=255, 1 to 3 ASCII digits.
fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || !label.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = label
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(value).ok()
}

/// The reverse name for `ip`, as a fully qualified [`Name`].
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let value = u128::from(v6);
            let mut text = String::with_capacity(72);
            for shift in (0..32).map(|i| i * 4) {
                let nibble = ((value >> shift) & 0xf) as u32;
                text.push(char::from_digit(nibble, 16).unwrap_or('0'));
                text.push('.');
            }
            text.push_str("ip6.arpa.");
            text
        }
    };
    // Always valid: short numeric labels and a fixed suffix.
    Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name parses")
    }

    #[test]
    fn ipv4_round_trip() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let rev = reverse_name(ip);
        assert_eq!(rev.to_ascii(), "3.2.1.10.in-addr.arpa.");
        assert_eq!(ip_from_reverse_name(&rev), Some(ip));
    }

    #[test]
    fn ipv6_round_trip() {
        let ip: IpAddr = "fd00:10:244::1a".parse().expect("ip");
        let rev = reverse_name(ip);
        assert!(rev.to_ascii().starts_with("a.1.0.0."));
        assert!(rev.to_ascii().ends_with(".0.1.0.0.0.0.d.f.ip6.arpa."));
        assert_eq!(ip_from_reverse_name(&rev), Some(ip));
    }

    #[test]
    fn case_insensitive_and_uppercase_hex() {
        let ip: IpAddr = "2001:db8::abcd".parse().expect("ip");
        let upper = reverse_name(ip).to_ascii().to_ascii_uppercase();
        assert_eq!(ip_from_reverse_name(&name(&upper)), Some(ip));
        assert_eq!(
            ip_from_reverse_name(&name("4.3.2.1.IN-ADDR.ARPA.")),
            Some("1.2.3.4".parse().expect("ip"))
        );
    }

    #[test]
    fn partial_and_malformed_names_are_not_hosts() {
        for bad in [
            "2.1.10.in-addr.arpa.",
            "5.4.3.2.1.in-addr.arpa.",
            "256.2.1.10.in-addr.arpa.",
            "1a.2.1.10.in-addr.arpa.",
            "0001.2.1.10.in-addr.arpa.",
            "3.2.1.10.in-addr.example.",
            "1.0.ip6.arpa.",
            "in-addr.arpa.",
            "arpa.",
            ".",
            "www.example.com.",
        ] {
            assert_eq!(ip_from_reverse_name(&name(bad)), None, "{bad}");
        }
        // 32 labels but one has two characters
        let mut v6 = reverse_name("::1".parse().expect("ip")).to_ascii();
        v6.replace_range(0..1, "11");
        assert_eq!(ip_from_reverse_name(&name(&v6)), None);
    }

    #[test]
    fn leading_zeros_within_three_digits_are_accepted() {
        assert_eq!(
            ip_from_reverse_name(&name("003.2.1.10.in-addr.arpa.")),
            Some("10.1.2.3".parse().expect("ip"))
        );
    }

    #[test]
    fn reverse_zone_detection() {
        assert!(is_reverse_name(&name("3.2.1.10.in-addr.arpa.")));
        assert!(is_reverse_name(&name("10.IN-ADDR.ARPA.")));
        assert!(is_reverse_name(&name("1.ip6.arpa.")));
        assert!(!is_reverse_name(&name("in-addr.arpa.example.")));
        assert!(!is_reverse_name(&name("arpa.")));
    }
}
