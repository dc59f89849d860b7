//! The rules a range must pass before it may open a firewall: it must be something a CDN edge
//! could be. Default routes, private, loopback, link-local, multicast and reserved space, and
//! prefixes broader than a bound, are refused; documentation ranges are allowed so that tests
//! (and labs) can use them.
//!
//! Exact duplicates are dropped. Neighbours are not merged, so that rules match the published
//! list one for one; but a range inside another listed range is dropped (with a note), because
//! it adds nothing and nftables refuses overlapping intervals in one set.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use cf_allowlist_backend::{Family, Ranges};

/// How broad a range may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The shortest IPv4 prefix length accepted (Cloudflare's broadest is /13).
    pub broadest_v4: u8,
    /// The shortest IPv6 prefix length accepted (Cloudflare's broadest is /29).
    pub broadest_v6: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            broadest_v4: 12,
            broadest_v6: 24,
        }
    }
}

/// A range that failed a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{range} is refused: {reason}")]
pub struct Refused {
    /// The range.
    pub range: IpNet,
    /// Which rule it broke.
    pub reason: String,
}

/// The validated ranges and notes about what was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    /// The ranges to allow.
    pub ranges: Ranges,
    /// Ranges dropped because another listed range covers them.
    pub covered: Vec<(IpNet, IpNet)>,
}

const FORBIDDEN_V4: [(&str, &str); 9] = [
    ("0.0.0.0/8", "\"this network\" and unspecified addresses"),
    ("10.0.0.0/8", "private (RFC 1918) space"),
    ("100.64.0.0/10", "shared carrier-grade NAT space"),
    ("127.0.0.0/8", "loopback space"),
    ("169.254.0.0/16", "link-local space"),
    ("172.16.0.0/12", "private (RFC 1918) space"),
    ("192.168.0.0/16", "private (RFC 1918) space"),
    ("224.0.0.0/4", "multicast space"),
    ("240.0.0.0/4", "reserved and broadcast space"),
];

/// [`FORBIDDEN_V4`] parsed once, not once per range checked (100,000-range lists).
static FORBIDDEN_V4_NETS: std::sync::LazyLock<Vec<(Ipv4Net, &'static str)>> =
    std::sync::LazyLock::new(|| {
        FORBIDDEN_V4
            .iter()
            .map(|(space, what)| (space.parse().expect("constant ranges are valid"), *what))
            .collect()
    });

/// Checks one range against the rules.
pub fn check(range: &IpNet, limits: &Limits) -> Result<(), Refused> {
    let refuse = |reason: String| Refused {
        range: *range,
        reason,
    };
    if range.prefix_len() == 0 {
        return Err(refuse("it is a default route".to_owned()));
    }
    match range {
        IpNet::V4(net) => {
            for (space, what) in FORBIDDEN_V4_NETS.iter() {
                if space.contains(net) || net.contains(space) {
                    return Err(refuse(format!("it overlaps {what} ({space})")));
                }
            }
            if net.prefix_len() < limits.broadest_v4 {
                return Err(refuse(format!(
                    "it is broader than /{} (the configured limit for IPv4)",
                    limits.broadest_v4
                )));
            }
        }
        IpNet::V6(net) => {
            let global =
                Ipv6Net::new_assert(std::net::Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
            if !global.contains(net) {
                let what = describe_v6(net);
                return Err(refuse(format!(
                    "it is {what}, outside global unicast space (2000::/3)"
                )));
            }
            if net.prefix_len() < limits.broadest_v6 {
                return Err(refuse(format!(
                    "it is broader than /{} (the configured limit for IPv6)",
                    limits.broadest_v6
                )));
            }
        }
    }
    Ok(())
}

fn describe_v6(net: &Ipv6Net) -> &'static str {
    let within = |space: &str| {
        space
            .parse::<Ipv6Net>()
            .is_ok_and(|space| space.contains(net))
    };
    if within("::/128") {
        "the unspecified address"
    } else if within("::1/128") {
        "loopback"
    } else if within("::ffff:0:0/96") {
        "IPv4-mapped space"
    } else if within("fc00::/7") {
        "unique local (ULA) space"
    } else if within("fe80::/10") {
        "link-local space"
    } else if within("ff00::/8") {
        "multicast space"
    } else {
        "reserved space"
    }
}

/// Checks every range, then drops duplicates and covered ranges.
pub fn validate(networks: &[IpNet], limits: &Limits) -> Result<Validated, Refused> {
    for network in networks {
        check(network, limits)?;
    }
    Ok(deduplicate(networks))
}

/// Drops duplicates and covered ranges from ranges already [`check`]ed.
pub fn deduplicate(networks: &[IpNet]) -> Validated {
    // Sorted and deduplicated as a vector, then built into the set in one go: a set built
    // from sorted ranges costs a fraction of 100,000 single inserts (the no-op's budget).
    let mut unique = networks.to_vec();
    sort(&mut unique);
    unique.dedup();
    let mut covered = Vec::new();
    let mut kept = Vec::with_capacity(unique.len());
    // In address order a covering prefix comes before everything it covers, and kept prefixes
    // are disjoint, so only the last kept one can cover the next: one linear pass.
    let mut last_kept: Option<IpNet> = None;
    for network in unique {
        match last_kept {
            Some(cover) if cover.contains(&network) => covered.push((network, cover)),
            _ => {
                kept.push(network);
                last_kept = Some(network);
            }
        }
    }
    Validated {
        ranges: kept.into_iter().collect(),
        covered,
    }
}

/// Sorts in IpNet's own order (family, address, prefix length), by integer keys: a list
/// already in order (Cloudflare's are) is only checked; a long one is sorted in pieces on the
/// cores and merged (sorting was a quarter of a no-op sync at 100,000 scattered ranges).
fn sort(networks: &mut Vec<IpNet>) {
    if networks.is_sorted_by_key(key) {
        return;
    }
    let cores = if networks.len() < 20_000 {
        1
    } else {
        crate::parallel::cores(8)
    };
    if cores < 2 {
        networks.sort_unstable_by_key(key);
        return;
    }
    let chunks: Vec<&[IpNet]> = networks.chunks(networks.len().div_ceil(cores)).collect();
    let mut pieces = crate::parallel::map(&chunks, |chunk| {
        let mut piece = chunk.to_vec();
        piece.sort_unstable_by_key(key);
        piece
    });
    while pieces.len() > 1 {
        let mut merged = Vec::with_capacity(pieces.len().div_ceil(2));
        let mut rest = pieces.into_iter();
        while let Some(first) = rest.next() {
            merged.push(match rest.next() {
                Some(second) => merge(first, second),
                None => first,
            });
        }
        pieces = merged;
    }
    *networks = pieces.pop().unwrap_or_default();
}

/// IpNet's own order as integers.
fn key(network: &IpNet) -> (u8, u128, u8) {
    match network {
        IpNet::V4(net) => (0, u128::from(u32::from(net.addr())), net.prefix_len()),
        IpNet::V6(net) => (1, u128::from(net.addr()), net.prefix_len()),
    }
}

/// Two sorted vectors as one.
fn merge(first: Vec<IpNet>, second: Vec<IpNet>) -> Vec<IpNet> {
    let mut merged = Vec::with_capacity(first.len() + second.len());
    let (mut first, mut second) = (first.into_iter().peekable(), second.into_iter().peekable());
    while let (Some(a), Some(b)) = (first.peek(), second.peek()) {
        if key(a) <= key(b) {
            merged.extend(first.next());
        } else {
            merged.extend(second.next());
        }
    }
    merged.extend(first);
    merged.extend(second);
    merged
}

/// Counts per family, for messages: "15 IPv4, 7 IPv6".
pub fn counts(ranges: &Ranges) -> String {
    format!(
        "{} {}, {} {}",
        ranges.count(Family::V4),
        Family::V4,
        ranges.count(Family::V6),
        Family::V6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integer_sort_is_ipnets_own_order() {
        let mut networks: Vec<IpNet> = [
            "2001:db8::/32",
            "198.51.100.0/24",
            "2001:db8::/48",
            "192.0.2.0/25",
            "192.0.2.0/24",
            "2001:db8:ffff::/48",
            "203.0.113.128/25",
            "2001:db8:1::/64",
            "198.51.100.7/32",
        ]
        .iter()
        .map(|text| net(text))
        .collect();
        let mut expected = networks.clone();
        expected.sort();
        sort(&mut networks);
        assert_eq!(networks, expected);
        // Long enough to be sorted in pieces and merged; and already sorted.
        let mut many: Vec<IpNet> = (0..50_000u32)
            .map(|index| {
                let scattered = index.wrapping_mul(40_503) % 65_536;
                format!("2001:db8:{scattered:x}::/{}", 48 + index % 3 * 8)
                    .parse::<IpNet>()
                    .unwrap()
                    .trunc()
            })
            .chain((0..5_000u32).map(|index| {
                IpNet::V4(ipnet::Ipv4Net::new((0xC612_0000 + index).into(), 32).unwrap())
            }))
            .collect();
        let mut expected = many.clone();
        expected.sort();
        sort(&mut many);
        assert_eq!(many, expected);
        sort(&mut many);
        assert_eq!(many, expected);
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn documentation_and_cloudflare_ranges_pass() {
        for text in [
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/32",
            "104.16.0.0/13",
            "2a06:98c0::/29",
            "198.51.100.7/32",
        ] {
            check(&net(text), &Limits::default()).unwrap();
        }
    }

    #[test]
    fn ranges_that_cannot_be_an_edge_are_refused() {
        for (text, reason) in [
            ("0.0.0.0/0", "default route"),
            ("::/0", "default route"),
            ("10.1.0.0/16", "private"),
            ("172.20.0.0/16", "private"),
            ("192.168.1.0/24", "private"),
            ("127.0.0.1/32", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/8", "multicast"),
            ("255.255.255.255/32", "broadcast"),
            ("0.0.0.0/32", "unspecified"),
            ("::/128", "unspecified"),
            ("::1/128", "loopback"),
            ("fd00::/8", "unique local"),
            ("fe80::/64", "link-local"),
            ("ff02::/16", "multicast"),
            ("::ffff:192.0.2.0/120", "IPv4-mapped"),
            ("8.0.0.0/6", "private"),
            ("64.0.0.0/8", "broader than /12"),
            ("2001::/16", "broader than /24"),
        ] {
            let error = check(&net(text), &Limits::default()).unwrap_err();
            assert!(error.to_string().contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn duplicates_and_covered_ranges_are_dropped_but_neighbours_kept() {
        let validated = validate(
            &[
                net("198.51.100.0/25"),
                net("198.51.100.128/25"),
                net("198.51.100.0/25"),
                net("203.0.113.0/24"),
                net("203.0.113.64/26"),
            ],
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            validated.ranges.to_strings(),
            vec!["198.51.100.0/25", "198.51.100.128/25", "203.0.113.0/24"]
        );
        assert_eq!(
            validated.covered,
            vec![(net("203.0.113.64/26"), net("203.0.113.0/24"))]
        );
    }
}
