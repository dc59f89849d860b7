//! Listening sockets (`/proc/thread-self/net/tcp`, `tcp6`), listen-queue overflows
//! (`/proc/thread-self/net/netstat`) and conntrack table usage (`/proc/sys/net/netfilter`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The TCP state `LISTEN` as the kernel prints it in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Every listening TCP socket in a `/proc/net/tcp` or `/proc/net/tcp6` listing.
pub fn parse_listeners(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let (address, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(SocketAddr::new(parse_address(address)?, port))
        })
        .collect()
}

/// An address as the kernel prints it: the raw network-order bytes as 32-bit words in host
/// order, each `%08X`.
fn parse_address(hex: &str) -> Option<IpAddr> {
    let words = (0..hex.len() / 8)
        .map(|index| {
            u32::from_str_radix(hex.get(index * 8..index * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect::<Option<Vec<[u8; 4]>>>()?;
    match words.as_slice() {
        [word] => Some(IpAddr::V4(Ipv4Addr::from(*word))),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(word);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a listener on `address` can take connections from outside (not loopback only).
pub fn reachable_from_outside(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && v6.to_ipv4_mapped().is_none_or(|v4| !v4.is_loopback())
        }
    }
}

/// The listening TCP sockets of this network namespace, IPv4 and IPv6.
pub fn read_listeners() -> std::io::Result<Vec<SocketAddr>> {
    let mut listeners = parse_listeners(&std::fs::read_to_string("/proc/thread-self/net/tcp")?);
    // IPv6 may be disabled: then there is no tcp6 table, and no IPv6 listener.
    match std::fs::read_to_string("/proc/thread-self/net/tcp6") {
        Ok(text) => listeners.extend(parse_listeners(&text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    Ok(listeners)
}

/// The `TcpExt` counters of a `/proc/net/netstat` listing, by name.
pub fn parse_tcp_ext(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines();
    let mut counters = BTreeMap::new();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse() {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    counters
}

/// Listen-queue overflows and drops since boot (or since the namespace was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// `ListenOverflows`: a connection arrived when the accept queue was full.
    pub overflows: u64,
    /// `ListenDrops`: connections dropped at a listener, overflows included.
    pub drops: u64,
}

/// Reads [`ListenQueue`] from this namespace's `netstat`.
pub fn read_listen_queue() -> std::io::Result<ListenQueue> {
    let counters = parse_tcp_ext(&std::fs::read_to_string("/proc/thread-self/net/netstat")?);
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    Ok(ListenQueue {
        overflows: get("ListenOverflows"),
        drops: get("ListenDrops"),
    })
}

/// The conntrack table: entries in use and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// `nf_conntrack_count`.
    pub count: u64,
    /// `nf_conntrack_max`.
    pub max: u64,
}

impl Conntrack {
    /// Usage in percent of the limit.
    pub fn percent(self) -> f64 {
        if self.max == 0 {
            return 0.0;
        }
        self.count as f64 * 100.0 / self.max as f64
    }
}

/// Reads the conntrack table's usage; `None` when conntrack is not loaded here.
pub fn read_conntrack() -> std::io::Result<Option<Conntrack>> {
    let read = |name: &str| -> std::io::Result<Option<u64>> {
        match std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}")) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    };
    Ok(
        match (read("nf_conntrack_count")?, read("nf_conntrack_max")?) {
            (Some(count), Some(max)) => Some(Conntrack { count, max }),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 0100007F:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0 0 10 0
   2: 010200C0:0016 020200C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0 100 0 0 10 0
   2: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_are_read_with_their_addresses_and_established_sockets_are_not() {
        if cfg!(target_endian = "big") {
            return;
        }
        let listeners: Vec<String> = parse_listeners(TCP)
            .into_iter()
            .chain(parse_listeners(TCP6))
            .map(|address| address.to_string())
            .collect();
        assert_eq!(
            listeners,
            [
                "0.0.0.0:80",
                "127.0.0.1:443",
                "[::]:443",
                "[::1]:8080",
                "[2001:db8::1]:80"
            ]
        );
    }

    #[test]
    fn loopback_listeners_are_not_reachable_from_outside() {
        for (address, reachable) in [
            ("0.0.0.0", true),
            ("192.0.2.1", true),
            ("127.0.0.1", false),
            ("::", true),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("2001:db8::1", true),
        ] {
            assert_eq!(
                reachable_from_outside(address.parse().unwrap()),
                reachable,
                "{address}"
            );
        }
    }

    #[test]
    fn tcp_ext_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 7 9\nIpExt: InNoRoutes\nIpExt: 3\n";
        let counters = parse_tcp_ext(text);
        assert_eq!(counters["ListenOverflows"], 7);
        assert_eq!(counters["ListenDrops"], 9);
        assert!(!counters.contains_key("InNoRoutes"));
    }

    #[test]
    fn conntrack_usage_is_a_percentage_of_the_limit() {
        assert_eq!(
            Conntrack {
                count: 96,
                max: 100
            }
            .percent(),
            96.0
        );
        assert_eq!(Conntrack { count: 5, max: 0 }.percent(), 0.0);
    }
}
