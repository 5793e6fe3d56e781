//! Whether two addresses come from the same network, as the phone is told
//! (a hint, never a refusal): the same IPv4 /24 or the same IPv6 /64.
//! IPv4-mapped IPv6 addresses count as IPv4.

use std::net::IpAddr;

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (canonical(a), canonical(b)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets()[..8] == b.octets()[..8],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        same_network(a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn ipv4_slash_24_and_ipv6_slash_64() {
        assert!(same("198.51.100.4", "198.51.100.250"));
        assert!(!same("198.51.100.4", "198.51.101.4"));
        assert!(same("2001:db8:0:aa::1", "2001:db8:0:aa:ffff::9"));
        assert!(!same("2001:db8:0:aa::1", "2001:db8:0:ab::1"));
        assert!(same("::ffff:198.51.100.4", "198.51.100.9"));
        assert!(!same("198.51.100.4", "2001:db8::1"));
    }
}
