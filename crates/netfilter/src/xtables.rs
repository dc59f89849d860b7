//! `iptables-save -t TABLE` (either variant) and `ipset save` into the rule model.
//!
//! Options are read per match module; an option the analysis does not model makes the rule
//! "may match" with the option named, and an unknown target makes it "unfollowed". Base
//! chains get the priorities iptables registers them at (raw -300, mangle -150, filter 0,
//! security 50), which is where the kernel runs them among nft's own chains.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    Action, Base, Chain, Condition, Field, Origin, Rule, Table, Value, Values, Verdict,
};

/// An ipset's members, as far as the analysis can use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// The set's type (`hash:net`, `hash:ip`, …).
    pub kind: String,
    /// Its members, when the type holds plain addresses or networks.
    pub members: Vec<IpNet>,
    /// Why membership cannot be decided from the members alone (another type, `nomatch`
    /// entries), if so.
    pub unreadable: Option<String>,
}

/// Parses `ipset save` (every set, or one).
pub fn parse_ipsets(text: &str) -> BTreeMap<String, IpSet> {
    let mut sets = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, kind, ..] => {
                let readable = matches!(*kind, "hash:net" | "hash:ip");
                sets.insert(
                    (*name).to_owned(),
                    IpSet {
                        kind: (*kind).to_owned(),
                        members: Vec::new(),
                        unreadable: (!readable).then(|| format!("ipset {name} is a {kind}")),
                    },
                );
            }
            ["add", name, member, rest @ ..] => {
                let Some(set) = sets.get_mut(*name) else {
                    continue;
                };
                if rest.contains(&"nomatch") && set.unreadable.is_none() {
                    set.unreadable = Some(format!("ipset {name} has nomatch entries"));
                }
                match parse_net(member) {
                    Some(net) => set.members.push(net),
                    None if set.unreadable.is_none() => {
                        set.unreadable = Some(format!("ipset {name} holds {member}"));
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    sets
}

fn parse_net(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        text.parse::<IpNet>().ok().map(|net| net.trunc())
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// The comma-separated words of `list` (`RELATED,ESTABLISHED`), each made a value by `word`.
fn word_list(list: &str, word: fn(&str) -> String) -> Vec<Value> {
    list.split(',')
        .map(|part| Value::Word(word(part)))
        .collect()
}

/// Splits a rule line into words, honouring double quotes (as iptables-save writes them); an
/// unterminated quote keeps what was read.
pub fn words(line: &str) -> Vec<String> {
    cf_allowlist_backend::tool::split_words(line).0
}

/// The hooks and priority iptables registers a table's built-in chains at.
fn builtin(table: &str, chain: &str) -> Option<(&'static str, i64)> {
    let priority = match table {
        "raw" => -300,
        "mangle" => -150,
        "filter" => 0,
        "security" => 50,
        "nat" => -100,
        _ => return None,
    };
    match chain {
        "PREROUTING" => Some(("prerouting", priority)),
        "INPUT" => Some(("input", if table == "nat" { 100 } else { priority })),
        "FORWARD" => Some(("forward", priority)),
        "OUTPUT" => Some(("output", priority)),
        "POSTROUTING" => Some(("postrouting", priority)),
        _ => None,
    }
}

/// Parses one table of `iptables-save` / `ip6tables-save` output (`family` is `ip` or `ip6`).
/// Lines of other tables in the text are ignored.
pub fn parse_save(
    text: &str,
    family: &str,
    table_name: &str,
    origin: Origin,
    ipsets: Option<&BTreeMap<String, IpSet>>,
) -> Table {
    let mut table = Table {
        family: family.to_owned(),
        name: table_name.to_owned(),
        origin,
        chains: BTreeMap::new(),
    };
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            in_table = name == table_name;
        } else if !in_table {
            continue;
        } else if let Some(declaration) = line.strip_prefix(':') {
            let mut parts = declaration.split_whitespace();
            let name = parts.next().unwrap_or("").to_owned();
            let policy = parts.next().unwrap_or("-");
            let base = builtin(table_name, &name).map(|(hook, priority)| Base {
                hook: hook.to_owned(),
                priority,
                policy_drop: policy == "DROP",
                device: None,
            });
            table.chains.insert(name.clone(), Chain::new(name, base));
        } else if line.starts_with("-A ") {
            let words = words(line);
            let chain = words.get(1).cloned().unwrap_or_default();
            let declared: Vec<&str> = table.chains.keys().map(String::as_str).collect();
            let rule = parse_rule(&words[2.min(words.len())..], line, &declared, ipsets);
            if let Some(chain) = table.chains.get_mut(&chain) {
                chain.rules.push(rule);
            }
        }
    }
    table
}

/// Parses a rule's words after `-A CHAIN`.
fn parse_rule(
    words: &[String],
    line: &str,
    chains: &[&str],
    ipsets: Option<&BTreeMap<String, IpSet>>,
) -> Rule {
    let mut conditions = Vec::new();
    let mut verdict = Verdict::Continue;
    let mut module = String::new();
    let mut negate = false;
    let mut index = 0;
    // The arguments of the option at `index`: every word up to the next option or `!`.
    let arguments = |index: usize| -> Vec<String> {
        words[index + 1..]
            .iter()
            .take_while(|word| !word.starts_with('-') && *word != "!")
            .cloned()
            .collect()
    };
    let compare =
        |field: Field, negate: bool, values: Vec<Value>, text: String| Condition::Compare {
            field,
            negate,
            values: Values::new(values),
            family: None,
            text,
        };
    while index < words.len() {
        let word = words[index].as_str();
        if word == "!" {
            negate = true;
            index += 1;
            continue;
        }
        // A comment or prefix is one (quoted) word, whatever it starts with.
        let args = if matches!(word, "--comment" | "--log-prefix") {
            words.get(index + 1).cloned().into_iter().collect()
        } else {
            arguments(index)
        };
        let first = args.first().cloned().unwrap_or_default();
        let shown = format!(
            "{}{word} {}",
            if negate { "! " } else { "" },
            args.join(" ")
        )
        .trim()
        .to_owned();
        let mut consumed = args.len();
        match (module.as_str(), word) {
            (_, "-m") => {
                module = first.clone();
                if !matches!(
                    first.as_str(),
                    "tcp"
                        | "multiport"
                        | "conntrack"
                        | "state"
                        | "comment"
                        | "set"
                        | "addrtype"
                        | "pkttype"
                        | "rt"
                        | "frag"
                        | "hbh"
                        | "dst"
                ) {
                    // A module whose options we do not model: its options will say so; a
                    // module without options (rare) still matches something we cannot see.
                    if !words
                        .get(index + 2)
                        .is_some_and(|next| next.starts_with("--") || next == "!")
                    {
                        conditions.push(Condition::Unreadable(format!("-m {first}")));
                    }
                }
            }
            (_, "-s" | "--source") => {
                let values = first
                    .split(',')
                    .map(|part| parse_net(part).map_or(Value::Unknown(part.to_owned()), Value::Net))
                    .collect();
                conditions.push(compare(Field::Source, negate, values, shown));
            }
            (_, "-p" | "--protocol") => {
                let protocol = vec![Value::Word(first.clone())];
                conditions.push(compare(Field::Protocol, negate, protocol, shown));
            }
            (_, "-i" | "--in-interface") => {
                // A wildcard (`eth+`) is just another name that is not `lo`: "may match".
                let interface = vec![Value::Word(first.clone())];
                conditions.push(compare(Field::InputInterface, negate, interface, shown));
            }
            (
                "" | "tcp" | "multiport",
                "--dport" | "--dports" | "--destination-port" | "--destination-ports",
            ) => {
                let values = first
                    .split(',')
                    .map(|part| {
                        let mut bounds = part.splitn(2, ':');
                        let low = bounds.next().unwrap_or("");
                        let high = bounds.next();
                        // `:b` means from 0, `a:` to 65535.
                        let low = if low.is_empty() {
                            Some(0)
                        } else {
                            crate::model::service_port(low)
                        };
                        let high = match high {
                            None => low,
                            Some("") => Some(u16::MAX),
                            Some(high) => crate::model::service_port(high),
                        };
                        match (low, high) {
                            (Some(low), Some(high)) => Value::Ports(low, high),
                            _ => Value::Unknown(part.to_owned()),
                        }
                    })
                    .collect();
                conditions.push(compare(Field::DestinationPort, negate, values, shown));
            }
            // The SYN is not a fragment.
            (_, "-f" | "--fragment") => {
                conditions.push(crate::model::decided(negate, shown));
            }
            ("" | "tcp", "--syn") => {
                // A SYN: `--syn` holds, `! --syn` does not.
                conditions.push(crate::model::decided(!negate, shown));
            }
            ("" | "tcp", "--tcp-flags") => {
                let bits = |list: Option<&String>| {
                    list?
                        .split(',')
                        .try_fold(0u8, |bits, flag| Some(bits | crate::model::tcp_flag(flag)?))
                };
                conditions.push(match (bits(args.first()), bits(args.get(1))) {
                    (Some(mask), Some(compare)) => {
                        let holds = crate::model::SYN_FLAGS & mask == compare;
                        crate::model::decided(holds != negate, shown)
                    }
                    _ => Condition::Unreadable(shown),
                });
            }
            ("conntrack", "--ctstate") | ("state", "--state") => {
                let states = word_list(&first, str::to_ascii_lowercase);
                conditions.push(compare(Field::ConntrackState, negate, states, shown));
            }
            ("comment", "--comment") => {}
            ("addrtype", "--dst-type") => {
                let kinds = word_list(&first, str::to_owned);
                conditions.push(compare(Field::DestinationType, negate, kinds, shown));
            }
            ("addrtype", "--limit-iface-in") => {}
            // IPv6 extension-header matches (`-m rt --rt-type 0`, ufw6's first DROP) never
            // match a packet without that header, whatever the options or their `!`; the SYN
            // the analysis follows carries none.
            ("rt" | "frag" | "hbh" | "dst", _) => {
                conditions.push(Condition::Never(format!("-m {module} {shown}")));
            }
            ("pkttype", "--pkt-type") => {
                conditions.push(compare(
                    Field::PacketType,
                    negate,
                    vec![Value::Word(first.to_ascii_lowercase())],
                    shown,
                ));
            }
            ("set", "--match-set") => {
                let name = first.clone();
                let direction = args.get(1).cloned().unwrap_or_default();
                let set = ipsets.and_then(|sets| sets.get(&name));
                let condition = match set {
                    _ if direction != "src" => Condition::Unreadable(shown.clone()),
                    None if ipsets.is_none() => Condition::Unreadable(format!(
                        "{shown} (the set's members were not read: is ipset installed?)"
                    )),
                    None => Condition::Unreadable(format!("{shown} (no such ipset)")),
                    Some(IpSet {
                        unreadable: Some(why),
                        ..
                    }) => Condition::Unreadable(format!("{shown} ({why})")),
                    Some(set) => compare(
                        Field::Source,
                        negate,
                        set.members.iter().copied().map(Value::Net).collect(),
                        shown.clone(),
                    ),
                };
                conditions.push(condition);
            }
            (_, "-j" | "-g" | "--jump" | "--goto") => {
                verdict = match first.as_str() {
                    "ACCEPT" => Verdict::Accept,
                    "DROP" => Verdict::Drop,
                    "REJECT" => Verdict::Reject,
                    "RETURN" => Verdict::Return,
                    "LOG" | "NFLOG" | "MARK" | "CONNMARK" | "TRACE" | "ULOG" => Verdict::Continue,
                    chain if chains.contains(&chain) && (word == "-g" || word == "--goto") => {
                        Verdict::Goto(chain.to_owned())
                    }
                    chain if chains.contains(&chain) => Verdict::Jump(chain.to_owned()),
                    target => Verdict::Unfollowed(format!("target {target}")),
                };
                // Whatever follows belongs to the target (`--reject-with …`, `--log-prefix …`).
                consumed = words.len() - index;
            }
            (module, _) => {
                let prefix = if module.is_empty() {
                    String::new()
                } else {
                    format!("-m {module} ")
                };
                conditions.push(Condition::Unreadable(format!("{prefix}{shown}")));
            }
        }
        negate = false;
        index += 1 + consumed;
    }
    Rule {
        conditions,
        action: Action::Verdict(verdict),
        text: line.to_owned(),
        opaque: false,
    }
}
