//! The rule model both readers produce: base chains and regular chains of rules, each rule a
//! list of conditions and one action. It holds only what a verdict for our one kind of packet
//! (a TCP SYN, conntrack state new, on a non-loopback interface) can depend on; anything else a
//! rule matches on is kept as an [`Condition::Unreadable`] with the reason, so a rule the
//! analysis does not understand reads as "may match", never as "does not match".

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use cf_allowlist_backend::Family;
use ipnet::IpNet;

/// Where a table came from, which decides who owns it and which backend can write into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A native nftables table (`nft`), read from `nft -j list ruleset`.
    Nft,
    /// An iptables table in the nf_tables variant (`iptables-nft`).
    IptablesNft,
    /// An iptables table in the legacy variant (`iptables-legacy`).
    IptablesLegacy,
}

/// The three-valued answer to "does this match our packet".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tri {
    /// Certainly matches.
    Yes,
    /// Certainly does not.
    No,
    /// Cannot tell, and why.
    Maybe(String),
}

impl Tri {
    fn negate(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            maybe => maybe,
        }
    }

    /// Logical or over alternatives: any yes wins, then any maybe.
    fn any(answers: impl IntoIterator<Item = Tri>) -> Tri {
        let mut result = Tri::No;
        for answer in answers {
            match answer {
                Tri::Yes => return Tri::Yes,
                Tri::Maybe(why) if result == Tri::No => result = Tri::Maybe(why),
                _ => {}
            }
        }
        result
    }
}

/// The packet the analysis follows: a TCP SYN of a new connection arriving on a non-loopback
/// interface.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// Its source address.
    pub source: IpAddr,
    /// Its destination port.
    pub port: u16,
}

impl Packet {
    /// The packet's address family.
    pub fn family(&self) -> Family {
        match self.source {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A packet field a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The source address (`ip saddr`, `ip6 saddr`, `-s`).
    Source,
    /// The TCP destination port (`tcp dport`, `th dport`, `--dport`).
    DestinationPort,
    /// The layer-4 protocol (`meta l4proto`, `ip protocol`, `ip6 nexthdr`, `-p`).
    Protocol,
    /// The layer-3 family (`meta nfproto`): `ipv4` or `ipv6`.
    NetfilterFamily,
    /// The input interface's name (`iif`, `iifname`, `-i`).
    InputInterface,
    /// The conntrack state (`ct state`, `--ctstate`, `--state`).
    ConntrackState,
    /// The conntrack status bits (`ct status`): a new connection's first packet carries none
    /// of the bits nft matches on (`dnat`, `snat`, `assured`, `confirmed`, `seen-reply`,
    /// `expected`), assuming no NAT rule rewrote it (NAT statements make the analysis unsure).
    ConntrackStatus,
    /// The routing type of the destination address (`fib daddr type`, `-m addrtype
    /// --dst-type`): a packet on the input path to a listening TCP port is addressed to one
    /// of the host's own addresses, so `local` holds and `broadcast`, `multicast`, `unicast`
    /// (someone else's address) and the rest do not.
    DestinationType,
    /// The link-layer packet type (`meta pkttype`): `host` for a unicast SYN to us.
    PacketType,
}

/// One value a field is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A network (an address is a full-length network).
    Net(IpNet),
    /// An address range, inclusive.
    AddressRange(IpAddr, IpAddr),
    /// A port range, inclusive (a single port is `n..=n`).
    Ports(u16, u16),
    /// A word: a protocol, an interface, a conntrack state, a family.
    Word(String),
    /// Something the analysis cannot compare, and what it was.
    Unknown(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            Value::Net(net) => write!(f, "{net}"),
            Value::AddressRange(first, last) => write!(f, "{first}-{last}"),
            Value::Ports(first, last) if first == last => write!(f, "{first}"),
            Value::Ports(first, last) => write!(f, "{first}-{last}"),
            Value::Word(word) => f.write_str(word),
            Value::Unknown(what) => write!(f, "<{what}>"),
        }
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `field` is (or with `negate`, is not) one of `values`.
    Compare {
        /// The field.
        field: Field,
        /// `!=` / `!`.
        negate: bool,
        /// Any of these.
        values: Values,
        /// The match only applies to packets of this family (an `ip saddr` match never
        /// matches an IPv6 packet, negated or not: nft adds the dependency implicitly).
        family: Option<Family>,
        /// How the condition reads, for messages.
        text: String,
    },
    /// A condition that can never hold for a TCP SYN (a match on a UDP or ICMP header).
    Never(String),
    /// A condition that always holds for a TCP SYN (`tcp flags syn`, `--syn`).
    Always(String),
    /// A condition the analysis cannot evaluate, as the firewall prints it.
    Unreadable(String),
}

impl Condition {
    /// Whether the condition holds for `packet`.
    pub fn matches(&self, packet: &Packet) -> Tri {
        match self {
            Condition::Never(_) => Tri::No,
            Condition::Always(_) => Tri::Yes,
            Condition::Unreadable(text) => Tri::Maybe(format!("cannot read `{text}`")),
            Condition::Compare {
                field,
                negate,
                values,
                family,
                ..
            } => {
                if family.is_some_and(|family| family != packet.family()) {
                    return Tri::No;
                }
                let answer = match field {
                    Field::Source => values.source_matches(packet),
                    _ => Tri::any(values.iter().map(|value| compare(field, value, packet))),
                };
                let answer = if *negate { answer.negate() } else { answer };
                match answer {
                    Tri::Maybe(why) => {
                        Tri::Maybe(format!("cannot decide `{}`: {why}", self.text()))
                    }
                    answer => answer,
                }
            }
        }
    }

    /// The condition as the firewall would print it, more or less.
    pub fn text(&self) -> &str {
        match self {
            Condition::Compare { text, .. } => text,
            Condition::Never(text) | Condition::Always(text) | Condition::Unreadable(text) => text,
        }
    }
}

/// The values of one comparison, shared (a named set is read once and used by every rule that
/// refers to it) and with its networks and address ranges indexed: a set of 100,000 ranges
/// answers "does it hold this source" by binary search, so judging every listed range against
/// it costs n log n, not n².
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    all: Arc<[Value]>,
    addresses: Arc<AddressIndex>,
}

impl Values {
    /// Indexes `values`.
    pub fn new(values: Vec<Value>) -> Values {
        let addresses = AddressIndex::of(&values);
        Values {
            all: values.into(),
            addresses: Arc::new(addresses),
        }
    }

    /// The values in the order they were read.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.all.iter()
    }

    /// The values as a slice.
    pub fn as_slice(&self) -> &[Value] {
        &self.all
    }

    /// Whether a source address matches any value: the answer [`Tri::any`] over
    /// [`compare`] would give, found without a scan. Networks and address ranges answer yes
    /// or no; any other value (a word, an unreadable value) may match, and the first of them
    /// names the doubt when no network holds the address.
    fn source_matches(&self, packet: &Packet) -> Tri {
        if self.addresses.contains(packet.source) {
            return Tri::Yes;
        }
        match self.addresses.first_other {
            Some(index) => compare(&Field::Source, &self.all[index], packet),
            None => Tri::No,
        }
    }
}

impl From<Vec<Value>> for Values {
    fn from(values: Vec<Value>) -> Values {
        Values::new(values)
    }
}

/// The networks and address ranges of a list of values as disjoint, sorted intervals per
/// family, for binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AddressIndex {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
    /// Where the first value that is neither a network nor an address range is.
    first_other: Option<usize>,
}

impl AddressIndex {
    fn of(values: &[Value]) -> AddressIndex {
        let mut index = AddressIndex::default();
        for (position, value) in values.iter().enumerate() {
            let (first, last) = match value {
                Value::Net(net) => (net.network(), net.broadcast()),
                Value::AddressRange(first, last) => (*first, *last),
                _ => {
                    index.first_other.get_or_insert(position);
                    continue;
                }
            };
            match (first, last) {
                (IpAddr::V4(first), IpAddr::V4(last)) => {
                    index
                        .v4
                        .push((u32::from(first).into(), u32::from(last).into()));
                }
                (IpAddr::V6(first), IpAddr::V6(last)) => {
                    index.v6.push((u128::from(first), u128::from(last)));
                }
                // A range across families holds nothing.
                _ => {}
            }
        }
        merge(&mut index.v4);
        merge(&mut index.v6);
        index
    }

    fn contains(&self, address: IpAddr) -> bool {
        work::count(1);
        let (intervals, number) = match address {
            IpAddr::V4(address) => (&self.v4, u128::from(u32::from(address))),
            IpAddr::V6(address) => (&self.v6, u128::from(address)),
        };
        // The last interval starting at or before the address is the only one that can hold it.
        let after = intervals.partition_point(|(first, _)| *first <= number);
        after > 0 && intervals[after - 1].1 >= number
    }
}

/// Sorts intervals and joins those that overlap, so that at most one can hold an address.
fn merge(intervals: &mut Vec<(u128, u128)>) {
    intervals.retain(|(first, last)| first <= last);
    intervals.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
    for &(first, last) in intervals.iter() {
        match merged.last_mut() {
            Some(previous) if first <= previous.1.saturating_add(1) => {
                previous.1 = previous.1.max(last);
            }
            _ => merged.push((first, last)),
        }
    }
    merged.shrink_to_fit();
    *intervals = merged;
}

fn compare(field: &Field, value: &Value, packet: &Packet) -> Tri {
    work::count(1);
    if let Value::Unknown(what) = value {
        return Tri::Maybe(format!("unreadable value {what}"));
    }
    match field {
        Field::Source => match value {
            Value::Net(net) => yes_if(net.contains(&packet.source)),
            Value::AddressRange(first, last) => {
                yes_if(*first <= packet.source && packet.source <= *last)
            }
            // A word in an address set would be a host name; nft resolves those at load time.
            _ => Tri::Maybe(format!("{value} is not an address")),
        },
        Field::DestinationPort => match value {
            Value::Ports(first, last) => yes_if(*first <= packet.port && packet.port <= *last),
            Value::Word(word) => match service_port(word) {
                Some(port) => yes_if(port == packet.port),
                None => Tri::Maybe(format!("unknown service {word}")),
            },
            _ => Tri::Maybe(format!("{value} is not a port")),
        },
        Field::Protocol => match value {
            Value::Word(word) => match word.to_ascii_lowercase().as_str() {
                "tcp" | "6" => Tri::Yes,
                // `-p all` / protocol 0 matches every protocol.
                "all" | "0" => Tri::Yes,
                _ => Tri::No,
            },
            Value::Ports(first, last) => yes_if(*first <= 6 && 6 <= *last),
            _ => Tri::Maybe(format!("{value} is not a protocol")),
        },
        Field::NetfilterFamily => match value {
            Value::Word(word) => yes_if(match packet.family() {
                Family::V4 => word == "ipv4" || word == "2",
                Family::V6 => word == "ipv6" || word == "10",
            }),
            _ => Tri::Maybe(format!("{value} is not a family")),
        },
        Field::InputInterface => match value {
            // We only know the interface is not loopback.
            Value::Word(word) if word == "lo" => Tri::No,
            Value::Word(word) => Tri::Maybe(format!(
                "the packet may or may not arrive on interface {word}"
            )),
            _ => Tri::Maybe(format!("{value} is not an interface")),
        },
        Field::ConntrackState => match value {
            Value::Word(word) => match word.to_ascii_lowercase().as_str() {
                "new" => Tri::Yes,
                "established" | "related" | "invalid" | "untracked" | "snat" | "dnat" => Tri::No,
                other => Tri::Maybe(format!("unknown conntrack state {other}")),
            },
            _ => Tri::Maybe(format!("{value} is not a conntrack state")),
        },
        Field::DestinationType => match value {
            Value::Word(word) => yes_if(word.eq_ignore_ascii_case("local")),
            _ => Tri::Maybe(format!("{value} is not an address type")),
        },
        Field::PacketType => match value {
            Value::Word(word) => yes_if(matches!(word.as_str(), "host" | "unicast" | "0")),
            Value::Ports(0, _) => Tri::Yes,
            Value::Ports(..) => Tri::No,
            _ => Tri::Maybe(format!("{value} is not a packet type")),
        },
        Field::ConntrackStatus => match value {
            Value::Word(_) => Tri::No,
            _ => Tri::Maybe(format!("{value} is not a conntrack status")),
        },
    }
}

fn yes_if(condition: bool) -> Tri {
    if condition { Tri::Yes } else { Tri::No }
}

/// The ports of the few services nft or iptables may print by name.
pub fn service_port(name: &str) -> Option<u16> {
    if let Ok(port) = name.parse() {
        return Some(port);
    }
    Some(match name {
        "ssh" => 22,
        "http" | "www" => 80,
        "https" => 443,
        "http-alt" | "webcache" => 8080,
        _ => return None,
    })
}

/// The TCP flags of the packet the analysis follows: SYN alone.
pub const SYN_FLAGS: u8 = 0x02;

/// A TCP flag by name (nft's lowercase or iptables' uppercase), as its bit.
pub fn tcp_flag(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "fin" => 0x01,
        "syn" => 0x02,
        "rst" => 0x04,
        "psh" => 0x08,
        "ack" => 0x10,
        "urg" => 0x20,
        "ecn" | "ece" => 0x40,
        "cwr" => 0x80,
        "all" => 0xff,
        "none" => 0,
        _ => return None,
    })
}

/// A condition decided from what the packet is (its TCP flags are [`SYN_FLAGS`], it is not a
/// fragment): always or never.
pub fn decided(holds: bool, text: String) -> Condition {
    if holds {
        Condition::Always(text)
    } else {
        Condition::Never(text)
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept: ends this base chain only.
    Accept,
    /// Drop: final for the packet.
    Drop,
    /// Reject: final for the packet (with an answer to the sender).
    Reject,
    /// Evaluate that chain, then come back.
    Jump(String),
    /// Evaluate that chain instead; its end returns from the caller.
    Goto(String),
    /// Back to the calling chain (in a base chain: the policy).
    Return,
    /// No verdict: the next rule follows (counters, logs, marks).
    Continue,
    /// A verdict or statement the analysis does not follow (`queue`, `dnat`, an unknown
    /// iptables target), as printed.
    Unfollowed(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Continue => Ok(()),
            Verdict::Unfollowed(what) => f.write_str(what),
        }
    }
}

/// What a matching rule does: one verdict, or a verdict map keyed by a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One verdict.
    Verdict(Verdict),
    /// `FIELD vmap { value : verdict, … }`: one condition per entry.
    Map(Vec<(Condition, Verdict)>),
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// All must hold for the action to apply.
    pub conditions: Vec<Condition>,
    /// What it does.
    pub action: Action,
    /// How an admin would recognise it: the iptables-save line, or the nft rule rendered with
    /// its handle and comment.
    pub text: String,
    /// Whether nft printed part of it as an opaque `xt` object (iptables-nft's listing of the
    /// same rule can replace it).
    pub opaque: bool,
}

/// A base chain's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `ingress`, `prerouting` or `input`.
    pub hook: String,
    /// Its priority; lower runs first.
    pub priority: i64,
    /// Whether the policy is drop.
    pub policy_drop: bool,
    /// The device of a netdev/inet ingress chain.
    pub device: Option<String>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// Set when it is a base chain.
    pub base: Option<Base>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// A chain with no rules yet.
    pub fn new(name: String, base: Option<Base>) -> Chain {
        Chain {
            name,
            base,
            rules: Vec::new(),
        }
    }
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `ip`, `ip6`, `inet` or `netdev`.
    pub family: String,
    /// Its name.
    pub name: String,
    /// Who wrote it.
    pub origin: Origin,
    /// Its chains, by name.
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    /// Whether packets of `family` traverse this table.
    pub fn sees(&self, family: Family) -> bool {
        match self.family.as_str() {
            "ip" => family == Family::V4,
            "ip6" => family == Family::V6,
            "inet" | "netdev" => true,
            _ => false,
        }
    }

    /// Whether any chain has a name that starts with one of `prefixes`.
    pub fn has_chain_starting(&self, prefixes: &[&str]) -> bool {
        self.chains
            .keys()
            .any(|name| prefixes.iter().any(|prefix| name.starts_with(prefix)))
    }
}

/// The order hooks see an arriving packet in.
pub fn hook_rank(hook: &str) -> Option<u8> {
    match hook {
        "ingress" => Some(0),
        "prerouting" => Some(1),
        "input" => Some(2),
        _ => None,
    }
}

/// A count of the comparisons the analysis makes (one per value compared, one per set
/// lookup), so that a test can tell linear from quadratic growth without a clock.
#[cfg(test)]
pub mod work {
    use std::cell::Cell;

    thread_local! {
        static DONE: Cell<u64> = const { Cell::new(0) };
    }

    /// Adds `units` of work.
    pub fn count(units: u64) {
        DONE.with(|done| done.set(done.get() + units));
    }

    /// The work counted on this thread so far.
    pub fn done() -> u64 {
        DONE.with(Cell::get)
    }
}

#[cfg(not(test))]
mod work {
    #[inline(always)]
    pub fn count(_units: u64) {}
}
