//! Reading `nft -j list ruleset` into the few facts the backend needs: our table, chain, sets
//! and rules (with handles, to delete them), and other chains whose drop would defeat ours.
//!
//! nft's JSON is parsed as a loose `serde_json::Value` rather than typed structs: the schema
//! has many object kinds we do not care about, and anything we do not recognise in *our* rules
//! must read as "altered", not as a parse error.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cf_allowlist_netfilter::NftParseError;
use ipnet::IpNet;
use serde_json::Value;

use crate::names;

/// One of our rules as read back, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleShape {
    /// The rule's comment (ours all start with [`names::OWNER_TAG`]).
    pub comment: String,
    /// `@set` the source address must be in, if any.
    pub source_set: Option<String>,
    /// The address family of the source match (`ip` or `ip6`).
    pub source_protocol: Option<String>,
    /// TCP destination ports matched.
    pub ports: Vec<u16>,
    /// Whether the rule excludes loopback (`iifname != "lo"`).
    pub not_loopback: bool,
    /// `accept` or `drop`.
    pub verdict: Option<String>,
    /// Whether the rule holds anything else we did not write.
    pub unrecognised: bool,
}

/// One of our rules in the live ruleset.
#[derive(Debug, Clone, Hash)]
pub struct LiveRule {
    /// nft's handle, to delete it by.
    pub handle: u64,
    /// What it does.
    pub shape: RuleShape,
}

/// A rule of somebody else's in our chain, reduced to what restrict's placement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRule {
    /// Where it sits in the chain, counting every rule from 0.
    pub position: usize,
    /// nft's handle, to place our drop after it.
    pub handle: u64,
    /// Whether its verdict is accept.
    pub accepts: bool,
    /// Whether it matches chosen source addresses (not negated, not everywhere).
    pub specific_source: bool,
    /// Whether it can match TCP (no other transport protocol named).
    pub tcp: bool,
    /// The TCP destination ports it matches; `None` when it names none (or we cannot read them).
    pub ports: Option<Vec<u16>>,
    /// Its comment, or its handle, to name it in messages.
    pub name: String,
}

/// One of our sets in the live ruleset.
#[derive(Debug, Clone, Hash)]
pub struct LiveSet {
    /// `ipv4_addr` or `ipv6_addr`.
    pub element_type: String,
    /// Whether it has the interval flag (needed for prefixes).
    pub interval: bool,
    /// Its elements as networks.
    pub elements: Vec<IpNet>,
    /// Elements that are not prefixes (ranges written by someone else).
    pub odd_elements: usize,
}

/// What the ruleset holds that concerns us.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Whether our table exists.
    pub table_exists: bool,
    /// Whether our chain exists.
    pub chain_exists: bool,
    /// Whether our chain is a base chain on the input hook.
    pub chain_is_input_base: bool,
    /// Whether a rule of our table jumps (or goes) to our chain, so that it acts although it
    /// is not a base chain (the shadowing analysis judges whether the path reaches it).
    pub chain_is_jumped_to: bool,
    /// Our sets, by name.
    pub sets: BTreeMap<String, LiveSet>,
    /// Our rules, in chain order.
    pub rules: Vec<LiveRule>,
    /// How many rules in our chain are not ours.
    pub foreign_rules_in_chain: usize,
    /// Where each of our rules (in [`Live::rules`]' order) sits in the chain, counting every
    /// rule from 0.
    pub our_positions: Vec<usize>,
    /// The rules of our chain that are not ours, in order: the ones restrict's drop is placed
    /// among (see `cf_allowlist_backend::restrict`).
    pub foreign_rules: Vec<ForeignRule>,
    /// Chains and sets in our table that are not ours.
    pub foreign_objects_in_table: usize,
    /// Other base chains on the input hook whose policy is drop, as `family table chain`.
    pub other_dropping_chains: Vec<String>,
    /// Parts of ours outside our table and chain, in any `inet` table: left behind when the
    /// configured table or chain changed, or written by a run whose state was lost.
    pub strays: Strays,
}

/// Parts of ours found elsewhere.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct Strays {
    /// Our rules in other chains: table, chain, handle, comment.
    pub rules: Vec<(String, String, u64, String)>,
    /// Our sets in other tables: table, set.
    pub sets: Vec<(String, String)>,
    /// Whether a rule of ours elsewhere in our own table refers to our sets (they must stay
    /// until that rule is gone).
    pub sets_referenced_elsewhere_in_table: bool,
}

impl Strays {
    /// Whether there is nothing of ours elsewhere.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.sets.is_empty()
    }

    /// The tables holding strays, each once.
    pub fn tables(&self) -> Vec<String> {
        let mut tables: Vec<String> = self
            .rules
            .iter()
            .map(|(table, ..)| table.clone())
            .chain(self.sets.iter().map(|(table, _)| table.clone()))
            .collect();
        tables.sort();
        tables.dedup();
        tables
    }
}

/// Why nft's output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all, or JSON without the `nftables` array.
    #[error(transparent)]
    Json(#[from] NftParseError),
    /// An element of one of our sets that is not an address.
    #[error("set {set} holds an element nft printed as {element}, which is not an address")]
    BadElement {
        /// The set.
        set: String,
        /// The element as JSON.
        element: String,
    },
}

/// Parses `nft -j list ruleset` for the table and chain we manage.
pub fn parse(json: &[u8], table: &str, chain: &str) -> Result<Live, ParseError> {
    let root: Value = serde_json::from_slice(json).map_err(NftParseError::NotJson)?;
    let list = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(NftParseError::NoList)?;
    let mut live = Live::default();
    let ours = |object: &Value| {
        object.get("family").and_then(Value::as_str) == Some(names::FAMILY)
            && object.get("table").and_then(Value::as_str) == Some(table)
    };
    for entry in list {
        if let Some(object) = entry.get("table") {
            if object.get("family").and_then(Value::as_str) == Some(names::FAMILY)
                && object.get("name").and_then(Value::as_str) == Some(table)
            {
                live.table_exists = true;
            }
        } else if let Some(object) = entry.get("chain") {
            let name = object.get("name").and_then(Value::as_str).unwrap_or("");
            let is_input_base = object.get("hook").and_then(Value::as_str) == Some("input");
            if ours(object) && name == chain {
                live.chain_exists = true;
                live.chain_is_input_base = is_input_base;
            } else {
                if ours(object) {
                    live.foreign_objects_in_table += 1;
                }
                if is_input_base && object.get("policy").and_then(Value::as_str) == Some("drop") {
                    live.other_dropping_chains.push(format!(
                        "{} {} {name}",
                        object.get("family").and_then(Value::as_str).unwrap_or("?"),
                        object.get("table").and_then(Value::as_str).unwrap_or("?"),
                    ));
                }
            }
        } else if let Some(object) = entry.get("set").or_else(|| entry.get("map")) {
            let name = object.get("name").and_then(Value::as_str).unwrap_or("");
            let in_inet = object.get("family").and_then(Value::as_str) == Some(names::FAMILY);
            if !ours(object) {
                if in_inet && entry.get("set").is_some() && names::SETS.contains(&name) {
                    let other = object.get("table").and_then(Value::as_str).unwrap_or("");
                    live.strays.sets.push((other.to_owned(), name.to_owned()));
                }
                continue;
            }
            if entry.get("set").is_some() && names::SETS.contains(&name) {
                live.sets.insert(name.to_owned(), parse_set(name, object)?);
            } else {
                live.foreign_objects_in_table += 1;
            }
        } else if let Some(object) = entry.get("rule") {
            let comment = object.get("comment").and_then(Value::as_str).unwrap_or("");
            let in_inet = object.get("family").and_then(Value::as_str) == Some(names::FAMILY);
            let rule_chain = object.get("chain").and_then(Value::as_str).unwrap_or("");
            if ours(object) && rule_chain != chain && jumps_to(object.get("expr"), chain) {
                live.chain_is_jumped_to = true;
            }
            if in_inet
                && comment.starts_with(names::OWNER_TAG)
                && !(ours(object) && rule_chain == chain)
            {
                // Only `inet` tables: iptables-nft writes our iptables backend's rules, with the
                // same tag, into `ip`/`ip6` tables, and those are not this backend's.
                live.strays.rules.push((
                    object
                        .get("table")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    rule_chain.to_owned(),
                    object.get("handle").and_then(Value::as_u64).unwrap_or(0),
                    comment.to_owned(),
                ));
                if ours(object) {
                    live.strays.sets_referenced_elsewhere_in_table = true;
                }
                continue;
            }
            if !ours(object) || rule_chain != chain {
                continue;
            }
            let position = live.rules.len() + live.foreign_rules_in_chain;
            let handle = object.get("handle").and_then(Value::as_u64).unwrap_or(0);
            if comment.starts_with(names::OWNER_TAG) {
                live.our_positions.push(position);
                live.rules.push(LiveRule {
                    handle,
                    shape: parse_rule(comment, object.get("expr")),
                });
            } else {
                live.foreign_rules_in_chain += 1;
                live.foreign_rules.push(parse_foreign(
                    position,
                    handle,
                    comment,
                    object.get("expr"),
                ));
            }
        } else if [
            "flowtable",
            "counter",
            "quota",
            "ct helper",
            "limit",
            "secmark",
        ]
        .iter()
        .any(|kind| entry.get(*kind).is_some_and(&ours))
        {
            live.foreign_objects_in_table += 1;
        }
    }
    Ok(live)
}

/// Whether a rule's expressions hold a `jump` or `goto` to `chain` (verdict maps included).
fn jumps_to(expr: Option<&Value>, chain: &str) -> bool {
    match expr {
        Some(Value::Object(map)) => map.iter().any(|(key, value)| {
            ((key == "jump" || key == "goto")
                && value.get("target").and_then(Value::as_str) == Some(chain))
                || jumps_to(Some(value), chain)
        }),
        Some(Value::Array(items)) => items.iter().any(|item| jumps_to(Some(item), chain)),
        _ => false,
    }
}

fn parse_set(name: &str, object: &Value) -> Result<LiveSet, ParseError> {
    let element_type = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let interval = object
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|flags| flags.iter().any(|flag| flag.as_str() == Some("interval")));
    let mut elements = Vec::new();
    let mut odd_elements = 0;
    for element in object
        .get("elem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // An element may be wrapped as {"elem": {"val": …}} when it carries a comment or timeout.
        let value = element
            .get("elem")
            .and_then(|inner| inner.get("val"))
            .unwrap_or(element);
        let bad = || ParseError::BadElement {
            set: name.to_owned(),
            element: value.to_string(),
        };
        if let Some(address) = value.as_str() {
            let address: IpAddr = address.parse().map_err(|_| bad())?;
            elements.push(IpNet::from(address));
        } else if let Some(prefix) = value.get("prefix") {
            let address: IpAddr = prefix
                .get("addr")
                .and_then(Value::as_str)
                .and_then(|text| text.parse().ok())
                .ok_or_else(bad)?;
            let length = prefix
                .get("len")
                .and_then(Value::as_u64)
                .and_then(|length| u8::try_from(length).ok())
                .ok_or_else(bad)?;
            elements.push(IpNet::new(address, length).map_err(|_| bad())?);
        } else {
            odd_elements += 1;
        }
    }
    Ok(LiveSet {
        element_type,
        interval,
        elements,
        odd_elements,
    })
}

/// The parts of one `match` expression that the readers below look at.
struct Match<'a> {
    operator: Option<&'a str>,
    /// `ip`, `ip6`, `tcp`, … for a payload match.
    protocol: Option<&'a str>,
    /// `saddr`, `dport`, … for a payload match.
    field: Option<&'a str>,
    /// `iifname`, `l4proto`, … for a meta match.
    meta_key: Option<&'a str>,
    right: Option<&'a Value>,
}

impl<'a> Match<'a> {
    fn of(matched: &'a Value) -> Match<'a> {
        let left = matched.get("left");
        let payload = left.and_then(|left| left.get("payload"));
        Match {
            operator: matched.get("op").and_then(Value::as_str),
            protocol: payload
                .and_then(|p| p.get("protocol"))
                .and_then(Value::as_str),
            field: payload.and_then(|p| p.get("field")).and_then(Value::as_str),
            meta_key: left
                .and_then(|left| left.get("meta"))
                .and_then(|meta| meta.get("key"))
                .and_then(Value::as_str),
            right: matched.get("right"),
        }
    }
}

fn parse_rule(comment: &str, expressions: Option<&Value>) -> RuleShape {
    let mut shape = RuleShape {
        comment: comment.to_owned(),
        source_set: None,
        source_protocol: None,
        ports: Vec::new(),
        not_loopback: false,
        verdict: None,
        unrecognised: false,
    };
    for expression in expressions.and_then(Value::as_array).into_iter().flatten() {
        if let Some(matched) = expression.get("match") {
            let Match {
                operator,
                protocol,
                field,
                meta_key,
                right,
            } = Match::of(matched);
            match (operator, protocol, field, meta_key) {
                (Some("=="), Some(family @ ("ip" | "ip6")), Some("saddr"), None) => {
                    match right
                        .and_then(Value::as_str)
                        .and_then(|r| r.strip_prefix('@'))
                    {
                        Some(set) => {
                            shape.source_set = Some(set.to_owned());
                            shape.source_protocol = Some(family.to_owned());
                        }
                        None => shape.unrecognised = true,
                    }
                }
                (Some("=="), Some("tcp"), Some("dport"), None) => match parse_ports(right) {
                    Some(ports) => shape.ports = ports,
                    None => shape.unrecognised = true,
                },
                (Some("!="), None, None, Some("iifname"))
                    if right.and_then(Value::as_str) == Some("lo") =>
                {
                    shape.not_loopback = true;
                }
                _ => shape.unrecognised = true,
            }
        } else if expression.get("accept").is_some() {
            shape.verdict = Some("accept".to_owned());
        } else if expression.get("drop").is_some() {
            shape.verdict = Some("drop".to_owned());
        } else {
            shape.unrecognised = true;
        }
    }
    shape
}

/// What a rule of somebody else's accepts, as far as restrict's placement cares.
fn parse_foreign(
    position: usize,
    handle: u64,
    comment: &str,
    expressions: Option<&Value>,
) -> ForeignRule {
    let mut rule = ForeignRule {
        position,
        handle,
        accepts: false,
        specific_source: false,
        tcp: true,
        ports: None,
        name: if comment.is_empty() {
            format!("handle {handle}")
        } else {
            format!("handle {handle} ({comment:?})")
        },
    };
    for expression in expressions.and_then(Value::as_array).into_iter().flatten() {
        if expression.get("accept").is_some() {
            rule.accepts = true;
        }
        let Some(matched) = expression.get("match").map(Match::of) else {
            continue;
        };
        match (matched.protocol, matched.field, matched.meta_key) {
            (Some("ip" | "ip6"), Some("saddr"), None) => {
                let everywhere = matches!(
                    matched.right.and_then(|r| r.get("prefix")).and_then(|p| p.get("len")),
                    Some(len) if len.as_u64() == Some(0)
                );
                rule.specific_source = matched.operator == Some("==") && !everywhere;
            }
            (Some("tcp"), Some("dport"), None) if matched.operator == Some("==") => {
                rule.ports = parse_ports(matched.right);
            }
            (Some(other), Some("dport" | "sport"), None) if other != "tcp" => rule.tcp = false,
            (None, None, Some("l4proto")) | (Some("ip"), Some("protocol"), None)
                if matched
                    .right
                    .and_then(Value::as_str)
                    .is_some_and(|name| name != "tcp") =>
            {
                rule.tcp = false;
            }
            _ => {}
        }
    }
    rule
}

fn parse_ports(right: Option<&Value>) -> Option<Vec<u16>> {
    let port = |value: &Value| value.as_u64().and_then(|port| u16::try_from(port).ok());
    let right = right?;
    let mut ports = match right.get("set") {
        Some(set) => set
            .as_array()?
            .iter()
            .map(port)
            .collect::<Option<Vec<_>>>()?,
        None => vec![port(right)?],
    };
    ports.sort_unstable();
    Some(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "filter", "handle": 1}},
      {"table": {"family": "ip", "name": "other", "handle": 2}},
      {"set": {"family": "inet", "name": "cf_allowlist_v4", "table": "filter", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
        "elem": ["192.0.2.1", {"prefix": {"addr": "198.51.100.0", "len": 24}}, {"range": ["203.0.113.1", "203.0.113.9"]}]}},
      {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "ip", "table": "other", "name": "INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 6, "comment": "cf-allowlist ipv4",
        "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@cf_allowlist_v4"}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [443, 80]}}},
                 {"accept": null}]}},
      {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "comment": "ssh",
        "expr": [{"accept": null}]}}]}"#;

    #[test]
    fn reads_our_parts_and_counts_the_rest() {
        let live = parse(SAMPLE.as_bytes(), "filter", "input").unwrap();
        assert!(live.table_exists && live.chain_exists && live.chain_is_input_base);
        let set = &live.sets["cf_allowlist_v4"];
        assert_eq!(
            set.elements,
            vec![
                "192.0.2.1/32".parse::<IpNet>().unwrap(),
                "198.51.100.0/24".parse().unwrap()
            ]
        );
        assert_eq!(set.odd_elements, 1);
        assert_eq!(live.rules.len(), 1);
        let shape = &live.rules[0].shape;
        assert_eq!(shape.ports, vec![80, 443]);
        assert_eq!(shape.source_set.as_deref(), Some("cf_allowlist_v4"));
        assert_eq!(shape.verdict.as_deref(), Some("accept"));
        assert!(!shape.unrecognised);
        assert_eq!(live.foreign_rules_in_chain, 1);
        assert_eq!(live.other_dropping_chains, vec!["ip other INPUT"]);
    }

    #[test]
    fn an_empty_ruleset_has_nothing_of_ours() {
        let live = parse(br#"{"nftables": [{"metainfo": {}}]}"#, "filter", "input").unwrap();
        assert!(!live.table_exists && !live.chain_exists && live.rules.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"<html>", "filter", "input").is_err());
        assert!(parse(b"{}", "filter", "input").is_err());
        let bad = br#"{"nftables": [{"set": {"family": "inet", "table": "filter", "name": "cf_allowlist_v4", "elem": ["nonsense"]}}]}"#;
        assert!(matches!(
            parse(bad, "filter", "input"),
            Err(ParseError::BadElement { .. })
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body, "filter", "input");
        }

        #[test]
        fn odd_but_valid_json_never_panics(body in "\\{\"nftables\": \\[(\\{\"(set|rule|chain|table)\": \\{[a-z\":, 0-9\\[\\]{}@]{0,80}\\}\\},? ?){0,4}\\]\\}") {
            let _ = parse(body.as_bytes(), "filter", "input");
        }

        #[test]
        fn set_elements_as_nft_prints_them_read_back(raw in proptest::collection::btree_set((any::<u32>(), 8u8..=32), 0..30)) {
            let networks: Vec<IpNet> = raw
                .iter()
                .map(|(bits, length)| IpNet::new(Ipv4Addr::from(*bits).into(), *length).unwrap().trunc())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            // nft prints a /32 as a bare address and anything else as a prefix object.
            let elements: Vec<serde_json::Value> = networks
                .iter()
                .map(|net| if net.prefix_len() == 32 {
                    serde_json::json!(net.addr().to_string())
                } else {
                    serde_json::json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix_len()}})
                })
                .collect();
            let json = serde_json::json!({"nftables": [
                {"set": {"family": "inet", "name": "cf_allowlist_v4", "table": "filter", "type": "ipv4_addr", "flags": ["interval"], "elem": elements}}
            ]});
            let live = parse(json.to_string().as_bytes(), "filter", "input").unwrap();
            prop_assert_eq!(&live.sets["cf_allowlist_v4"].elements, &networks);
        }
    }
}
