//! Egress policy: which destinations a sandbox may reach through the vault.
//!
//! Two questions, asked in order for every connection:
//! 1. By name: `deny_out` wins over everything; a non-empty `allow_out` admits only what it lists.
//!    Entries are a domain (`pypi.org`), a suffix (`*.pypi.org`: subdomains only), an IPv4 address or
//!    a CIDR block (`10.0.0.0/8`), matched against the host the sandbox asked for.
//! 2. By address, after DNS resolution: loopback, private, link-local (cloud metadata lives there),
//!    CGNAT, unique-local, multicast and unspecified addresses are refused unless explicitly allowed —
//!    by an `allow_out` IP/CIDR entry covering them, or by an operator's `--vault-resolve` override.
//!    Checking the resolved address, not the name, is what stops DNS rebinding to internal services.
//!
//! An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, 6to4 `2002:aabb:ccdd::/48`, NAT64 `64:ff9b::/96`, Teredo `2001::/32`) reaches that IPv4
//! address through a gateway or the host's own stack, so it is judged by the IPv4 address it embeds:
//! by the internal-address check and by IPv4 `allow_out`/`deny_out` entries alike ([`embedded_v4`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One `allow_out`/`deny_out` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Host(String),
    Suffix(String),
    Net { addr: IpAddr, prefix: u8 },
}

impl Rule {
    /// Parses an entry as the API validated it; unknown shapes are treated as host names.
    pub fn parse(entry: &str) -> Self {
        let entry = entry.trim().to_ascii_lowercase();
        if let Some(suffix) = entry.strip_prefix("*.") {
            return Self::Suffix(suffix.to_owned());
        }
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u8>().ok()),
            None => (entry.as_str(), None),
        };
        match addr.parse::<IpAddr>() {
            Ok(addr) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                Self::Net {
                    addr,
                    prefix: prefix.unwrap_or(max).min(max),
                }
            }
            Err(_) => Self::Host(entry),
        }
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Self::Host(name) => name == host,
            Self::Suffix(suffix) => {
                host.len() > suffix.len() + 1 && host.ends_with(suffix.as_str()) && {
                    host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
            }
            Self::Net { .. } => host.parse::<IpAddr>().is_ok_and(|ip| self.matches_addr(ip)),
        }
    }

    fn matches_addr(&self, ip: IpAddr) -> bool {
        let Self::Net { addr, prefix } = self else { return false };
        let in_v4 = |net: &Ipv4Addr, ip: Ipv4Addr| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(*net) & mask == u32::from(ip) & mask
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(net, ip),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            // An IPv4 entry covers the IPv6 forms that reach the same IPv4 address.
            (IpAddr::V4(net), IpAddr::V6(ip)) => embedded_v4(ip).iter().any(|v4| in_v4(net, *v4)),
            _ => false,
        }
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Denied { rule: String },
    NotAllowed,
    DeniedByDefault,
    InternalAddress { addr: IpAddr },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied { rule } => write!(f, "denied by deny_out entry `{rule}`"),
            Self::NotAllowed => f.write_str("not in the agent's allow_out list"),
            Self::DeniedByDefault => f.write_str(
                "egress is denied by default (`lap serve --egress-default deny`) and the agent has no allow_out",
            ),
            Self::InternalAddress { addr } => write!(f, "resolves to internal address {addr}"),
        }
    }
}

/// An agent's egress policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<(String, Rule)>,
    deny: Vec<(String, Rule)>,
    /// With no `allow_out`, refuse every destination instead of admitting every public one.
    default_deny: bool,
}

impl Policy {
    pub fn new(allow_out: &[String], deny_out: &[String]) -> Self {
        let parse = |entries: &[String]| entries.iter().map(|e| (e.clone(), Rule::parse(e))).collect();
        Self {
            allow: parse(allow_out),
            deny: parse(deny_out),
            default_deny: false,
        }
    }

    /// The same policy, denying everything its `allow_out` does not list when `deny` is set.
    pub fn default_deny(mut self, deny: bool) -> Self {
        self.default_deny = deny;
        self
    }

    /// Step 1: may the sandbox ask for `host` at all?
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some((entry, _)) = self.deny.iter().find(|(_, rule)| rule.matches_host(&host)) {
            return Err(Refusal::Denied { rule: entry.clone() });
        }
        if self.allow.is_empty() && self.default_deny {
            return Err(Refusal::DeniedByDefault);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|(_, rule)| rule.matches_host(&host)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }

    /// Step 2: may the vault connect to `addr`, resolved for the host? `overridden` is true when the
    /// operator pinned the address with `--vault-resolve`.
    pub fn check_addr(&self, addr: IpAddr, overridden: bool) -> Result<(), Refusal> {
        if let Some((entry, _)) = self.deny.iter().find(|(_, rule)| rule.matches_addr(addr)) {
            return Err(Refusal::Denied { rule: entry.clone() });
        }
        if overridden || !is_internal(addr) || self.allow.iter().any(|(_, rule)| rule.matches_addr(addr)) {
            Ok(())
        } else {
            Err(Refusal::InternalAddress { addr })
        }
    }
}

/// Addresses that are never a public internet destination. An IPv6 address that embeds IPv4
/// addresses is internal when any of them is.
pub fn is_internal(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(ip) => internal_v4(ip),
        IpAddr::V6(ip) => {
            let embedded = embedded_v4(ip);
            if embedded.is_empty() {
                internal_v6(ip)
            } else {
                embedded.into_iter().any(internal_v4)
            }
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to, by the transition mechanism its prefix names:
/// IPv4-mapped (`::ffff:0:0/96`) and IPv4-compatible (`::/96`, deprecated but still routed by some
/// stacks): the low 32 bits; 6to4 (`2002::/16`): bits 16..48; NAT64 (`64:ff9b::/96`, RFC 6052): the
/// low 32 bits; Teredo (`2001::/32`, RFC 4380): the server (bits 32..64) and the client (the low 32
/// bits, inverted). Empty for every other address.
pub fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        // `::` and `::1` land here as 0.0.0.0 and 0.0.0.1, both internal, as they should be.
        vec![v4(s[6], s[7])]
    } else if s[0] == 0x2002 {
        vec![v4(s[1], s[2])]
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        vec![v4(s[6], s[7])]
    } else if s[0] == 0x2001 && s[1] == 0 {
        vec![v4(s[2], s[3]), v4(!s[6], !s[7])]
    } else {
        Vec::new()
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254 metadata)
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0xdb8) // documentation
        // NAT64 with a local-use prefix (64:ff9b:1::/48, RFC 8215): the operator's own translator,
        // whose IPv4 side and embedding are not ours to know. The well-known /96 is judged by the
        // IPv4 address it embeds (see `embedded_v4`).
        || (first == 0x64 && ip.segments()[1] == 0xff9b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let policy = Policy::new(&["*.github.com".into(), "pypi.org".into()], &["gist.github.com".into()]);
        assert!(policy.check_host("api.github.com").is_ok());
        assert!(policy.check_host("PyPI.org.").is_ok());
        assert_eq!(
            policy.check_host("gist.github.com"),
            Err(Refusal::Denied {
                rule: "gist.github.com".into()
            })
        );
        assert_eq!(policy.check_host("github.com"), Err(Refusal::NotAllowed));
        assert_eq!(policy.check_host("evil.com"), Err(Refusal::NotAllowed));
        assert_eq!(policy.check_host("notgithub.com"), Err(Refusal::NotAllowed));
    }

    #[test]
    fn an_empty_allow_list_admits_every_public_host() {
        let policy = Policy::new(&[], &["*.tracker.test".into()]);
        assert!(policy.check_host("example.com").is_ok());
        assert!(policy.check_host("a.tracker.test").is_err());
    }

    #[test]
    fn default_deny_refuses_everything_an_allow_list_does_not_name() {
        let closed = Policy::new(&[], &[]).default_deny(true);
        assert_eq!(closed.check_host("example.com"), Err(Refusal::DeniedByDefault));
        let listed = Policy::new(&["pypi.org".into()], &[]).default_deny(true);
        assert!(listed.check_host("pypi.org").is_ok());
        assert_eq!(listed.check_host("example.com"), Err(Refusal::NotAllowed));
    }

    #[test]
    fn internal_addresses_are_refused_after_resolution() {
        let policy = Policy::default();
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "224.0.0.1",
        ] {
            assert!(
                matches!(policy.check_addr(ip(addr), false), Err(Refusal::InternalAddress { .. })),
                "{addr}"
            );
        }
        for addr in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(policy.check_addr(ip(addr), false).is_ok(), "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_that_embed_an_internal_ipv4_address_are_internal() {
        let policy = Policy::default();
        for addr in [
            "::7f00:1",                             // IPv4-compatible 127.0.0.1
            "::127.0.0.1",                          // the same, dotted
            "::a9fe:a9fe",                          // IPv4-compatible 169.254.169.254 (metadata)
            "::ffff:7f00:1",                        // IPv4-mapped
            "::ffff:10.1.2.3",                      // IPv4-mapped private
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "2002:c0a8:101:5::9",                   // 6to4 of 192.168.1.1, with a subnet and host
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b::169.254.169.254",             // NAT64 of the metadata address
            "64:ff9b:1::a00:1",                     // local-use NAT64: the operator's own
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1 (inverted)
            "2001:0:a00:1:8000:63bf:fefe:fefe",     // Teredo via a private server 10.0.0.1
        ] {
            assert!(
                matches!(policy.check_addr(ip(addr), false), Err(Refusal::InternalAddress { .. })),
                "{addr} embeds an internal IPv4 address"
            );
        }
        for addr in [
            "::ffff:1.1.1.1",
            "::101:101",
            "2002:101:101::1",
            "64:ff9b::1.1.1.1",
            "2001:0:4136:e378:8000:63bf:fefe:fefe", // Teredo, public server, client 1.1.1.1
        ] {
            assert!(
                policy.check_addr(ip(addr), false).is_ok(),
                "{addr} embeds a public IPv4 address"
            );
        }
    }

    #[test]
    fn embedded_addresses_are_extracted_by_their_prefix() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(embedded_v4(v6("::7f00:1")), vec![v4("127.0.0.1")]);
        assert_eq!(embedded_v4(v6("::ffff:7f00:1")), vec![v4("127.0.0.1")]);
        assert_eq!(embedded_v4(v6("2002:7f00:1::")), vec![v4("127.0.0.1")]);
        assert_eq!(embedded_v4(v6("64:ff9b::7f00:1")), vec![v4("127.0.0.1")]);
        assert_eq!(
            embedded_v4(v6("2001:0:4136:e378:8000:63bf:80ff:fffe")),
            vec![v4("65.54.227.120"), v4("127.0.0.1")]
        );
        for plain in ["2606:4700::1111", "2001:db8::1", "fe80::1", "2002::"] {
            let expected = if plain == "2002::" {
                vec![v4("0.0.0.0")]
            } else {
                Vec::new()
            };
            assert_eq!(embedded_v4(v6(plain)), expected, "{plain}");
        }
    }

    #[test]
    fn ipv4_entries_cover_the_ipv6_forms_of_their_addresses() {
        // A deny entry cannot be walked around by writing its address as IPv6, even when pinned.
        let deny = Policy::new(&[], &["203.0.113.0/24".into()]);
        for addr in [
            "::ffff:203.0.113.9",
            "::cb00:7109",
            "2002:cb00:7109::",
            "64:ff9b::203.0.113.9",
        ] {
            assert!(
                matches!(deny.check_addr(ip(addr), true), Err(Refusal::Denied { .. })),
                "{addr}"
            );
        }
        // An allow entry admits the same internal address in each form.
        let allow = Policy::new(&["10.0.0.0/8".into()], &[]);
        assert!(allow.check_addr(ip("2002:a01:203::"), false).is_ok());
        assert!(allow.check_addr(ip("2002:c0a8:101::"), false).is_err());
    }

    #[test]
    fn explicit_allows_and_operator_overrides_admit_internal_addresses() {
        let policy = Policy::new(&["10.0.0.0/8".into()], &[]);
        assert!(policy.check_addr(ip("10.9.8.7"), false).is_ok());
        assert!(policy.check_addr(ip("192.168.0.1"), false).is_err());
        assert!(policy.check_host("10.9.8.7").is_ok());
        assert!(Policy::default().check_addr(ip("127.0.0.1"), true).is_ok());
        let deny = Policy::new(&[], &["203.0.113.0/24".into()]);
        assert!(matches!(
            deny.check_addr(ip("203.0.113.9"), true),
            Err(Refusal::Denied { .. })
        ));
    }

    #[test]
    fn rules_parse_every_documented_shape() {
        assert_eq!(Rule::parse("*.Example.com"), Rule::Suffix("example.com".into()));
        assert_eq!(
            Rule::parse("1.2.3.4"),
            Rule::Net {
                addr: ip("1.2.3.4"),
                prefix: 32
            }
        );
        assert_eq!(
            Rule::parse("10.0.0.0/8"),
            Rule::Net {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            Rule::parse("0.0.0.0/0"),
            Rule::Net {
                addr: ip("0.0.0.0"),
                prefix: 0
            }
        );
        assert_eq!(Rule::parse("host.test"), Rule::Host("host.test".into()));
        assert!(Rule::parse("0.0.0.0/0").matches_addr(ip("8.8.8.8")));
    }
}
