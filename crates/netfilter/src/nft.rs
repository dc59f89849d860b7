//! `nft -j list ruleset` into the rule model. nft prints iptables-nft's rules here too, mostly
//! as native expressions; what iptables-nft could not translate appears as an `xt` object
//! without its options, which reads as "cannot read" (the reader replaces such tables with
//! `iptables-nft-save`'s listing when it can).
//!
//! The JSON is walked as a loose `serde_json::Value`: anything unrecognised becomes an
//! unreadable condition or an unfollowed statement, never an error.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cf_allowlist_backend::Family;
use ipnet::IpNet;
use serde_json::Value as Json;

use crate::model::{
    Action, Base, Chain, Condition, Field, Origin, Rule, Table, Value, Values, Verdict,
};

/// Why nft's JSON could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON.
    #[error("nft printed something that is not JSON")]
    NotJson(#[from] serde_json::Error),
    /// JSON without the `nftables` array.
    #[error("nft's JSON has no `nftables` array")]
    NoList,
}

/// Names iptables-nft gives its tables.
pub const XTABLES_TABLES: [&str; 5] = ["filter", "mangle", "raw", "security", "nat"];

/// A named set, by table family, table and name.
pub type SetKey = (String, String, String);

/// An address set as a terse listing (`nft -t`) declares it, without its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// The table's family, table and the set's name.
    pub key: SetKey,
    /// Which addresses it holds.
    pub family: Family,
    /// Whether it has the interval flag.
    pub interval: bool,
}

/// The named sets of a terse listing, when every one of them (and every map) holds addresses,
/// whose elements can be read from the kernel directly; `None` when one holds something else
/// (ports, interface names, concatenations, verdicts), which only nft's full listing shows.
pub fn address_sets(json: &str) -> Result<Option<Vec<AddressSet>>, ParseError> {
    let root: Json = serde_json::from_str(json)?;
    let list = root
        .get("nftables")
        .and_then(Json::as_array)
        .ok_or(ParseError::NoList)?;
    let mut sets = Vec::new();
    for entry in list {
        if entry.get("map").is_some() {
            return Ok(None);
        }
        let Some(object) = entry.get("set") else {
            continue;
        };
        let family = match object.get("type").and_then(Json::as_str) {
            Some("ipv4_addr") => Family::V4,
            Some("ipv6_addr") => Family::V6,
            _ => return Ok(None),
        };
        let interval = object
            .get("flags")
            .and_then(Json::as_array)
            .is_some_and(|flags| flags.iter().any(|flag| flag == "interval"));
        sets.push(AddressSet {
            key: (
                text(object, "family").to_owned(),
                text(object, "table").to_owned(),
                text(object, "name").to_owned(),
            ),
            family,
            interval,
        });
    }
    Ok(Some(sets))
}

/// Parses the whole ruleset. Tables are keyed by `(family, name)`. A set listed without
/// elements takes them from `elements` when it is there (a terse listing's address sets, read
/// from the kernel).
pub fn parse(
    json: &str,
    elements: &BTreeMap<SetKey, Vec<Value>>,
) -> Result<BTreeMap<(String, String), Table>, ParseError> {
    let root: Json = serde_json::from_str(json)?;
    let list = root
        .get("nftables")
        .and_then(Json::as_array)
        .ok_or(ParseError::NoList)?;
    let key = |object: &Json, name_field: &str| {
        (
            text(object, "family").to_owned(),
            text(object, name_field).to_owned(),
        )
    };
    let mut tables = BTreeMap::new();
    let mut sets: BTreeMap<(String, String, String), Values> = BTreeMap::new();
    for entry in list {
        if let Some(object) = entry.get("table") {
            let (family, name) = key(object, "name");
            let origin =
                if (family == "ip" || family == "ip6") && XTABLES_TABLES.contains(&name.as_str()) {
                    Origin::IptablesNft
                } else {
                    Origin::Nft
                };
            tables.insert(
                (family.clone(), name.clone()),
                Table {
                    family,
                    name,
                    origin,
                    chains: BTreeMap::new(),
                },
            );
        } else if let Some(object) = entry.get("set").or_else(|| entry.get("map")) {
            let (family, table) = key(object, "table");
            let set_key = (family, table, text(object, "name").to_owned());
            let listed: Vec<Value> = match object.get("elem").and_then(Json::as_array) {
                Some(listed) => listed.iter().map(element_value).collect(),
                None => elements.get(&set_key).cloned().unwrap_or_default(),
            };
            sets.insert(set_key, Values::new(listed));
        } else if let Some(object) = entry.get("chain") {
            let (family, table) = key(object, "table");
            let name = text(object, "name").to_owned();
            let base = object.get("hook").and_then(Json::as_str).map(|hook| Base {
                hook: hook.to_owned(),
                priority: object.get("prio").and_then(Json::as_i64).unwrap_or(0),
                policy_drop: object.get("policy").and_then(Json::as_str) == Some("drop"),
                // An ingress chain is bound to a device, which nft 1.0.6 does not print.
                device: object
                    .get("dev")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
                    .or_else(|| (hook == "ingress").then(|| "its device".to_owned())),
            });
            if let Some(table) = tables.get_mut(&(family, table)) {
                table.chains.insert(name.clone(), Chain::new(name, base));
            }
        } else if let Some(object) = entry.get("rule") {
            let (family, table_name) = key(object, "table");
            let table_family = family.clone();
            let lookup = |set: &str| {
                sets.get(&(table_family.clone(), table_name.clone(), set.to_owned()))
                    .cloned()
            };
            let rule = parse_rule(object, &family, &lookup);
            if let Some(chain) = tables
                .get_mut(&(family.clone(), table_name.clone()))
                .and_then(|table| table.chains.get_mut(text(object, "chain")))
            {
                chain.rules.push(rule);
            }
        }
    }
    // An ip/ip6 table with an xtables name is iptables-nft's only if its chains carry
    // iptables' built-in names; otherwise an admin wrote it with nft.
    for table in tables.values_mut() {
        if table.origin == Origin::IptablesNft
            && !table.chains.keys().any(|name| {
                ["INPUT", "PREROUTING", "FORWARD", "OUTPUT", "POSTROUTING"].contains(&name.as_str())
            })
        {
            table.origin = Origin::Nft;
        }
    }
    Ok(tables)
}

fn text<'a>(object: &'a Json, field: &str) -> &'a str {
    object.get(field).and_then(Json::as_str).unwrap_or("")
}

/// Whether any rule of the table in `json` holds an `xt` expression (a match or target nft
/// could not print natively), so that the iptables listing is worth reading.
pub fn tables_with_xt(json: &str) -> Vec<(String, String)> {
    let Ok(root) = serde_json::from_str::<Json>(json) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in array(&root, "nftables") {
        if let Some(rule) = entry.get("rule") {
            let has_xt = rule
                .get("expr")
                .and_then(Json::as_array)
                .is_some_and(|expressions| expressions.iter().any(|e| e.get("xt").is_some()));
            let key = (
                text(rule, "family").to_owned(),
                text(rule, "table").to_owned(),
            );
            if has_xt && !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

fn element_value(element: &Json) -> Value {
    // An element with a comment or timeout is wrapped as {"elem": {"val": …}}.
    let element = element
        .get("elem")
        .and_then(|inner| inner.get("val"))
        .unwrap_or(element);
    value(element)
}

fn value(json: &Json) -> Value {
    if let Some(number) = json.as_u64() {
        return match u16::try_from(number) {
            Ok(port) => Value::Ports(port, port),
            Err(_) => Value::Unknown(number.to_string()),
        };
    }
    if let Some(word) = json.as_str() {
        if let Ok(address) = word.parse::<IpAddr>() {
            return Value::Net(IpNet::from(address));
        }
        return Value::Word(word.to_owned());
    }
    if let Some(prefix) = json.get("prefix") {
        let address = prefix
            .get("addr")
            .and_then(Json::as_str)
            .and_then(|text| text.parse::<IpAddr>().ok());
        let length = prefix
            .get("len")
            .and_then(Json::as_u64)
            .and_then(|length| u8::try_from(length).ok());
        if let (Some(address), Some(length)) = (address, length)
            && let Ok(net) = IpNet::new(address, length)
        {
            return Value::Net(net.trunc());
        }
    }
    if let Some([first, last]) = json
        .get("range")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
    {
        match (value(first), value(last)) {
            (Value::Ports(first, _), Value::Ports(last, _)) => return Value::Ports(first, last),
            (Value::Net(first), Value::Net(last)) => {
                return Value::AddressRange(first.addr(), last.addr());
            }
            _ => {}
        }
    }
    Value::Unknown(json.to_string())
}

/// The values on the right of a match: one value, an anonymous set, a list of flags, or a
/// named set (`@name`).
fn values(right: &Json, lookup: &dyn Fn(&str) -> Option<Values>) -> Values {
    if let Some(name) = right.as_str().and_then(|text| text.strip_prefix('@')) {
        return lookup(name)
            .unwrap_or_else(|| Values::new(vec![Value::Unknown(format!("@{name}"))]));
    }
    if let Some(list) = right.get("set").and_then(Json::as_array) {
        return Values::new(list.iter().map(element_value).collect());
    }
    if let Some(list) = right.as_array() {
        return Values::new(list.iter().map(value).collect());
    }
    Values::new(vec![value(right)])
}

fn render_values(values: &[Value]) -> String {
    match values {
        [one] => one.to_string(),
        many => format!(
            "{{ {} }}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Which field a match's left side reads, if one we model; the family it implies; and how it
/// reads.
fn field(left: &Json, table_family: &str) -> Result<(Field, Option<Family>, String), Condition> {
    let implied = |family: Family| match table_family {
        // In an ip or ip6 table the family is already given.
        "inet" | "netdev" => Some(family),
        _ => None,
    };
    if let Some(payload) = left.get("payload") {
        let protocol = text(payload, "protocol");
        let name = text(payload, "field");
        let shown = format!("{protocol} {name}");
        return match (protocol, name) {
            ("ip", "saddr") => Ok((Field::Source, implied(Family::V4), shown)),
            ("ip6", "saddr") => Ok((Field::Source, implied(Family::V6), shown)),
            ("ip", "protocol") => Ok((Field::Protocol, implied(Family::V4), shown)),
            ("ip6", "nexthdr") => Ok((Field::Protocol, implied(Family::V6), shown)),
            ("tcp" | "th", "dport") => Ok((Field::DestinationPort, None, shown)),
            // A match on another layer-4 header implies that protocol: never our TCP packet.
            (
                "udp" | "udplite" | "icmp" | "icmpv6" | "sctp" | "dccp" | "esp" | "ah" | "comp"
                | "igmp" | "gre",
                _,
            ) => Err(Condition::Never(shown)),
            _ => Err(Condition::Unreadable(shown)),
        };
    }
    if let Some(meta) = left.get("meta") {
        let key = text(meta, "key");
        let shown = format!("meta {key}");
        return match key {
            "l4proto" => Ok((Field::Protocol, None, shown)),
            "nfproto" => Ok((Field::NetfilterFamily, None, shown)),
            "iif" | "iifname" => Ok((Field::InputInterface, None, key.to_owned())),
            "pkttype" => Ok((Field::PacketType, None, shown)),
            _ => Err(Condition::Unreadable(shown)),
        };
    }
    if let Some(ct) = left.get("ct") {
        let key = text(ct, "key");
        return match key {
            "state" => Ok((Field::ConntrackState, None, "ct state".to_owned())),
            "status" => Ok((Field::ConntrackStatus, None, "ct status".to_owned())),
            _ => Err(Condition::Unreadable(format!("ct {key}"))),
        };
    }
    if let Some(fib) = left.get("fib") {
        let flags: Vec<&str> = fib
            .get("flags")
            .and_then(Json::as_array)
            .map(|flags| flags.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let shown = format!("fib {} {}", flags.join(" . "), text(fib, "result"));
        // `fib daddr type` (optionally `. iif`): the type of the address the packet is for.
        if text(fib, "result") == "type" && flags.contains(&"daddr") && !flags.contains(&"saddr") {
            return Ok((Field::DestinationType, None, shown));
        }
        return Err(Condition::Unreadable(shown));
    }
    Err(Condition::Unreadable(compact(left)))
}

fn compact(json: &Json) -> String {
    let mut shown = json.to_string();
    if shown.len() > 80 {
        shown.truncate(77);
        shown.push_str("...");
    }
    shown
}

fn is_tcp_flags(json: &Json) -> bool {
    json.get("payload").is_some_and(|payload| {
        text(payload, "protocol") == "tcp" && text(payload, "field") == "flags"
    })
}

/// Flags as nft prints them: a name, a number, or a list of names.
fn flag_bits(json: &Json) -> Option<u8> {
    if let Some(number) = json.as_u64() {
        return u8::try_from(number).ok();
    }
    if let Some(name) = json.as_str() {
        return crate::model::tcp_flag(name);
    }
    json.as_array()?
        .iter()
        .try_fold(0u8, |bits, flag| Some(bits | flag_bits(flag)?))
}

/// `tcp flags …` matches, decided for a SYN: `tcp flags & MASK ==/!= VALUE`, `tcp flags ==/!=
/// VALUE`, and `tcp flags VALUE` (any of them set).
fn tcp_decided(operator: &str, left: &Json, right: &Json) -> Option<Condition> {
    let (flags, masked) = match left.get("&").and_then(Json::as_array).map(Vec::as_slice) {
        Some([payload, mask]) if is_tcp_flags(payload) => {
            (crate::model::SYN_FLAGS & flag_bits(mask)?, true)
        }
        _ if is_tcp_flags(left) => (crate::model::SYN_FLAGS, false),
        _ => return None,
    };
    let value = flag_bits(right)?;
    let holds = match operator {
        "==" => flags == value,
        "!=" => flags != value,
        "in" if !masked => flags & value != 0,
        _ => return None,
    };
    let text = format!("tcp flags {operator} {}", compact(right));
    Some(crate::model::decided(holds, text))
}

/// firewalld's (and many rulesets') reverse-path filter, `fib saddr [. mark] . iif oif missing
/// drop`: the route back to the source leaves by another interface, or there is none. Routing
/// is outside the analysis (see the crate documentation): the packet is taken to arrive on
/// the interface its source is routed through, so the check passes it, as it passes any
/// packet whose path is symmetric.
fn reverse_path_decided(operator: &str, left: &Json, right: &Json) -> Option<Condition> {
    let fib = left.get("fib")?;
    let flags: Vec<&str> = fib
        .get("flags")
        .and_then(Json::as_array)
        .map(|flags| flags.iter().filter_map(Json::as_str).collect())?;
    if text(fib, "result") != "oif" || !flags.contains(&"saddr") || !flags.contains(&"iif") {
        return None;
    }
    // nft prints `missing` as `false` (or 0) in JSON.
    let missing = right.as_bool() == Some(false) || right.as_u64() == Some(0);
    let holds = match (operator, missing) {
        ("==", true) => false,
        ("!=", true) => true,
        _ => return None,
    };
    let text = format!(
        "fib {} oif {operator} missing (reverse-path check, taken to pass: routing is symmetric)",
        flags.join(" . ")
    );
    Some(crate::model::decided(holds, text))
}

fn condition(
    matched: &Json,
    table_family: &str,
    lookup: &dyn Fn(&str) -> Option<Values>,
) -> Condition {
    let operator = text(matched, "op");
    let (Some(left), Some(right)) = (matched.get("left"), matched.get("right")) else {
        return Condition::Unreadable(compact(matched));
    };
    if let Some(condition) =
        tcp_decided(operator, left, right).or_else(|| reverse_path_decided(operator, left, right))
    {
        return condition;
    }
    let (field, family, shown) = match field(left, table_family) {
        Ok(found) => found,
        Err(condition) => {
            return match condition {
                Condition::Unreadable(shown) => {
                    Condition::Unreadable(format!("{shown} {operator} {}", compact(right)))
                }
                other => other,
            };
        }
    };
    let negate = match operator {
        "==" | "in" => false,
        "!=" => true,
        other => {
            return Condition::Unreadable(format!("{shown} {other} {}", compact(right)));
        }
    };
    let values = values(right, lookup);
    let rendered = match right.as_str() {
        Some(name) if name.starts_with('@') => name.to_owned(),
        _ => render_values(values.as_slice()),
    };
    let text = format!("{shown} {}{rendered}", if negate { "!= " } else { "" });
    Condition::Compare {
        field,
        negate,
        values,
        family,
        text,
    }
}

fn verdict(expression: &Json) -> Option<Verdict> {
    let object = expression.as_object()?;
    let (kind, body) = object.iter().next()?;
    let target = || text(body, "target").to_owned();
    Some(match kind.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "jump" => Verdict::Jump(target()),
        "goto" => Verdict::Goto(target()),
        "return" => Verdict::Return,
        "continue" => Verdict::Continue,
        "queue" => Verdict::Unfollowed("queue".to_owned()),
        _ => return None,
    })
}

/// The elements of `object`'s array `key`; none when it has no such array.
fn array<'a>(object: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> {
    object
        .get(key)
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
}

fn parse_rule(object: &Json, table_family: &str, lookup: &dyn Fn(&str) -> Option<Values>) -> Rule {
    let mut conditions = Vec::new();
    let mut action = Action::Verdict(Verdict::Continue);
    let mut shown = Vec::new();
    let mut opaque = false;
    for expression in array(object, "expr") {
        if let Some(matched) = expression.get("match") {
            let condition = condition(matched, table_family, lookup);
            shown.push(condition.text().to_owned());
            conditions.push(condition);
        } else if let Some(found) = verdict(expression) {
            shown.push(match (&found, expression.get("reject")) {
                (Verdict::Reject, Some(how)) if how.is_object() => {
                    format!("reject with {} {}", text(how, "type"), text(how, "expr"))
                        .trim()
                        .to_owned()
                }
                _ => found.to_string(),
            });
            action = Action::Verdict(found);
        } else if let Some(map) = expression.get("vmap") {
            let (action_found, text) = vmap(map, table_family, lookup);
            shown.push(text);
            action = action_found;
        } else if let Some(xt) = expression.get("xt") {
            opaque = true;
            let name = text(xt, "name");
            if text(xt, "type") == "target" {
                let found = match name {
                    "REJECT" => Verdict::Reject,
                    "LOG" | "NFLOG" | "MARK" | "CONNMARK" | "TRACE" => Verdict::Continue,
                    other => Verdict::Unfollowed(format!("iptables target {other}")),
                };
                shown.push(format!("xt target {name}"));
                action = Action::Verdict(found);
            } else {
                let condition = Condition::Unreadable(format!("xt match {name}"));
                shown.push(condition.text().to_owned());
                conditions.push(condition);
            }
        } else if let Some((kind, _)) = expression.as_object().and_then(|o| o.iter().next()) {
            match kind.as_str() {
                // Statements with no bearing on the verdict.
                "counter" | "log" | "mangle" | "set" => {}
                // Statements that only let some packets through: a condition we cannot decide.
                "limit" | "quota" | "meter" | "ct count" | "connlimit" => {
                    let condition = Condition::Unreadable(kind.clone());
                    shown.push(kind.clone());
                    conditions.push(condition);
                }
                // NAT, notrack, tproxy and the like change the packet or its conntrack state:
                // what follows cannot be judged on the packet we model.
                other => {
                    shown.push(other.to_owned());
                    action = Action::Verdict(Verdict::Unfollowed(other.to_owned()));
                }
            }
        }
    }
    let mut text = shown
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(comment) = object.get("comment").and_then(Json::as_str) {
        text.push_str(&format!(" comment \"{comment}\""));
    }
    if let Some(handle) = object.get("handle").and_then(Json::as_u64) {
        text.push_str(&format!(" # handle {handle}"));
    }
    Rule {
        conditions,
        action,
        text: text.trim().to_owned(),
        opaque,
    }
}

fn vmap(
    map: &Json,
    table_family: &str,
    lookup: &dyn Fn(&str) -> Option<Values>,
) -> (Action, String) {
    let Some(key) = map.get("key") else {
        return (
            Action::Verdict(Verdict::Unfollowed("vmap".to_owned())),
            "vmap".to_owned(),
        );
    };
    let entries: Vec<(Values, Option<Verdict>)> = match map.get("data") {
        Some(data) if data.get("set").is_some() => data["set"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.as_array())
            .filter_map(|pair| match pair.as_slice() {
                [key, verdict_json] => Some((values(key, lookup), verdict(verdict_json))),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let field = field(key, table_family);
    let shown_key = match &field {
        Ok((_, _, shown)) => shown.clone(),
        Err(condition) => condition.text().to_owned(),
    };
    let text = format!("{shown_key} vmap {{ … }}");
    if entries.is_empty() {
        // A named map (`vmap @name`): nft lists it separately; not followed.
        return (Action::Verdict(Verdict::Unfollowed(text.clone())), text);
    }
    let mut arms = Vec::new();
    for (values, verdict) in entries {
        let condition = match &field {
            Ok((field, family, shown)) => Condition::Compare {
                field: field.clone(),
                negate: false,
                text: format!("{shown} {}", render_values(values.as_slice())),
                values,
                family: *family,
            },
            Err(condition) => condition.clone(),
        };
        arms.push((
            condition,
            verdict.unwrap_or_else(|| Verdict::Unfollowed("a vmap verdict".to_owned())),
        ));
    }
    (Action::Map(arms), text)
}
