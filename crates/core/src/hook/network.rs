//! Which addresses a hook may reach. Pure classification; the outbound client applies it
//! to every address it connects to, and the API to IP literals at create time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A CIDR block, `10.0.0.0/8` or `fd00::/8`.
pub type Network = ipnet::IpNet;

/// The deployment's outbound rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Whether plain `http` URLs are accepted (local stacks only, by default).
    pub allow_http: bool,
    /// Blocks that are reachable even though they are private (e.g. `127.0.0.0/8` locally).
    pub allowed_networks: Vec<Network>,
}

/// Whether an address may be connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressVerdict {
    /// Public, or in the allow-list.
    Allowed,
    /// In a block that must not be reached; the name of the block.
    Blocked(&'static str),
}

impl NetworkPolicy {
    /// The policy of `make run`: `http` and loopback allowed, so local receivers work.
    pub fn local() -> Self {
        Self {
            allow_http: true,
            allowed_networks: vec![
                Network::from_str("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
                Network::from_str("::1/128").unwrap_or_else(|_| unreachable!()),
            ],
        }
    }

    /// Classifies one resolved address. The clouds' metadata services are blocked even
    /// inside an allowed network: an operator who lets hooks reach `169.254.0.0/16` or
    /// `fc00::/7` for a service of theirs has not meant to hand every tenant the host's
    /// credentials.
    pub fn check(&self, ip: IpAddr) -> AddressVerdict {
        let ip = canonical(ip);
        if let Some(block) = metadata_service(ip) {
            return AddressVerdict::Blocked(block);
        }
        if self.allowed_networks.iter().any(|n| n.contains(&ip)) {
            return AddressVerdict::Allowed;
        }
        match special_block(ip) {
            Some(block) => AddressVerdict::Blocked(block),
            None => AddressVerdict::Allowed,
        }
    }
}

/// IPv6 forms that carry an IPv4 address are judged as that IPv4 address, so
/// `::ffff:169.254.169.254` is the metadata service, not a public v6 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            // IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765).
            if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
                return IpAddr::V4(embedded_v4(&v6, 12));
            }
            // IPv4-compatible (deprecated) ::a.b.c.d, but not :: or ::1.
            if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
                return IpAddr::V4(embedded_v4(&v6, 12));
            }
            // NAT64 well-known prefix 64:ff9b::/96.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return IpAddr::V4(embedded_v4(&v6, 12));
            }
            // 6to4 2002:a.b.c.d::/48.
            if s[0] == 0x2002 {
                return IpAddr::V4(embedded_v4(&v6, 2));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn embedded_v4(v6: &Ipv6Addr, at: usize) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
}

/// The addresses that hand out a machine's or a task's cloud credentials.
fn metadata_service(ip: IpAddr) -> Option<&'static str> {
    const EC2_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    const EKS_POD_IDENTITY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);
    const GCE_V6: Ipv6Addr = Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254);
    Some(match ip {
        // EC2, Azure, GCP and most others.
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 169, 254) => "instance metadata (169.254.169.254)",
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 170, 2) => "ECS task metadata (169.254.170.2)",
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 170, 23) => "EKS pod identity (169.254.170.23)",
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(100, 100, 100, 200) => "instance metadata (100.100.100.200)",
        IpAddr::V6(v6) if v6 == EC2_V6 => "instance metadata (fd00:ec2::254)",
        IpAddr::V6(v6) if v6 == EKS_POD_IDENTITY_V6 => "EKS pod identity (fd00:ec2::23)",
        IpAddr::V6(v6) if v6 == GCE_V6 => "instance metadata (fd20:ce::254)",
        _ => return None,
    })
}

fn special_block(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(match o {
                [0, ..] => "unspecified (0.0.0.0/8)",
                [10, ..] => "private (10.0.0.0/8)",
                [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
                [127, ..] => "loopback (127.0.0.0/8)",
                [169, 254, ..] => "link-local (169.254.0.0/16)",
                [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
                [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
                [192, 88, 99, _] => "6to4 relay anycast (192.88.99.0/24)",
                [192, 168, ..] => "private (192.168.0.0/16)",
                [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
                [a, ..] if a >= 224 => "multicast or reserved (224.0.0.0/3)",
                _ => return None,
            })
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(if v6.is_unspecified() {
                "unspecified (::)"
            } else if v6.is_loopback() {
                "loopback (::1)"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "unique-local (fc00::/7)"
            } else if s[0] & 0xffc0 == 0xfe80 {
                "link-local (fe80::/10)"
            } else if s[0] & 0xffc0 == 0xfec0 {
                "site-local (fec0::/10)"
            } else if s[..3] == [0x64, 0xff9b, 0x0001] {
                // A local-use NAT64 prefix translates to whatever IPv4 the operator's
                // network chooses, private addresses included.
                "local-use NAT64 (64:ff9b:1::/48)"
            } else if s[0] & 0xff00 == 0xff00 {
                "multicast (ff00::/8)"
            } else if s[0] == 0x2001 && s[1] == 0 {
                // Teredo tunnels to an IPv4 client address, obfuscated in the last 32 bits:
                // not a receiver anyone runs, and a way round the IPv4 blocks.
                "Teredo (2001::/32)"
            } else if s[0] == 0x2001 && s[1] < 0x0200 {
                // Benchmarking (2001:2::/48), ORCHID and the rest: the equivalent of
                // 192.0.0.0/24, blocked whole as that is.
                "IETF protocol assignments (2001::/23)"
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                "documentation (2001:db8::/32)"
            } else if s[0] == 0x3fff && s[1] & 0xf000 == 0 {
                "documentation (3fff::/20)"
            } else if s[0] == 0x5f00 {
                "segment routing (5f00::/16)"
            } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
                "discard-only (100::/64)"
            } else {
                return None;
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(p: &NetworkPolicy, ip: &str) -> bool {
        matches!(p.check(ip.parse().unwrap()), AddressVerdict::Blocked(_))
    }

    #[test]
    fn default_policy_blocks_every_private_block() {
        let p = NetworkPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::8.8.8.8",
            "::ffff:0:10.0.0.1",
            "::ffff:0:169.254.169.254",
            "fec0::1",
            "feff::1",
            "192.88.99.1",
            "2002:c058:6301::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:20::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(blocked(&p, ip), "{ip} should be blocked");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "2001:4860::8888",
            "2001:200::1",
            "3fff:1000::1",
        ] {
            assert!(!blocked(&p, ip), "{ip} should be allowed");
        }
    }

    /// An allow-list that covers a cloud's metadata service does not open it: every
    /// form of its address stays blocked, and the rest of the allowed block is reachable.
    #[test]
    fn metadata_services_stay_blocked_inside_an_allowed_network() {
        let p = NetworkPolicy {
            allow_http: false,
            allowed_networks: ["169.254.0.0/16", "fc00::/7", "100.64.0.0/10", "0.0.0.0/0"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
        };
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "169.254.170.2",
            "169.254.170.23",
            "100.100.100.200",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "fd20:ce::254",
        ] {
            assert!(blocked(&p, ip), "{ip} should be blocked");
        }
        for ip in ["169.254.1.1", "169.254.169.253", "fd00:ec2::1", "100.64.0.1", "10.0.0.1"] {
            assert!(!blocked(&p, ip), "{ip} is in an allowed network");
        }
    }

    #[test]
    fn local_policy_allows_loopback_only() {
        let p = NetworkPolicy::local();
        assert!(!blocked(&p, "127.0.0.1"));
        assert!(!blocked(&p, "127.5.5.5"));
        assert!(!blocked(&p, "::ffff:127.0.0.1"));
        assert!(!blocked(&p, "::1"));
        assert!(blocked(&p, "10.0.0.1"));
        assert!(blocked(&p, "169.254.169.254"));
    }
}
