//! Reading `iptables-save -t filter` and `ipset save` into the facts the backend needs, and
//! the shapes of our rules so that what is live can be compared with what we would write.

use ipnet::IpNet;

use crate::names;

/// One rule of our chain reduced to what we compare, or the jump to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleShape {
    /// `-s`.
    pub source: Option<IpNet>,
    /// `-m set --match-set NAME src`.
    pub match_set: Option<String>,
    /// `-m multiport --dports` (or `--dport`).
    pub ports: Vec<u16>,
    /// `! -i lo`.
    pub not_loopback: bool,
    /// `-m comment --comment`.
    pub comment: Option<String>,
    /// `-j`.
    pub target: String,
    /// Anything else we did not write.
    pub unrecognised: bool,
}

impl RuleShape {
    /// The rule as an `-A`/`-D` argument list (after the chain name).
    pub fn render(&self) -> String {
        let mut parts = Vec::new();
        if let Some(source) = &self.source {
            parts.push(format!("-s {source}"));
        }
        if self.not_loopback {
            parts.push("! -i lo".to_owned());
        }
        parts.push("-p tcp".to_owned());
        if let Some(set) = &self.match_set {
            parts.push(format!("-m set --match-set {set} src"));
        }
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        parts.push(format!("-m multiport --dports {}", ports.join(",")));
        if let Some(comment) = &self.comment {
            parts.push(format!("-m comment --comment {}", quote(comment)));
        }
        parts.push(format!("-j {}", self.target));
        parts.join(" ")
    }
}

fn quote(text: &str) -> String {
    if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text.to_owned()
    }
}

/// What one family's filter table holds that concerns us.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Whether the filter table has anything at all (rules, user chains, a non-ACCEPT policy).
    pub in_use: bool,
    /// Whether it has anything besides our chains and jumps: then the kernel's evaluation of
    /// this variant depends on more than our parts.
    pub foreign: bool,
    /// Whether our chain exists.
    pub chain_exists: bool,
    /// The rules of our chain, in order.
    pub rules: Vec<RuleShape>,
    /// The INPUT rules that jump to our chain: their 1-based position in INPUT and their
    /// argument list after `-A INPUT`.
    pub jumps: Vec<(usize, String)>,
    /// INPUT's rules other than our jumps, with their 1-based position in INPUT, as argument
    /// lists after `-A INPUT`: where an admin's own allows are.
    pub input_rules: Vec<(usize, Vec<String>)>,
    /// Whether Docker's DOCKER-USER chain exists.
    pub docker_user_exists: bool,
    /// Whether our Docker chain exists.
    pub docker_chain_exists: bool,
    /// Our Docker chain's rules, as argument lists after `-A CHAIN`.
    pub docker_rules: Vec<String>,
    /// The DOCKER-USER rules that jump to our Docker chain, as argument lists.
    pub docker_jumps: Vec<String>,
}

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A line with an unterminated quote.
    #[error("unterminated quote in {0:?}")]
    Quote(String),
    /// An address that does not parse.
    #[error("unreadable address {0:?}")]
    Address(String),
}

/// A network as iptables and ipset print it: a bare address is a host.
fn parse_net(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        text.parse().ok()
    } else {
        text.parse::<std::net::IpAddr>().ok().map(IpNet::from)
    }
}

/// Splits a rule line into words, honouring double quotes; an unterminated quote is an error.
pub fn words(line: &str) -> Result<Vec<String>, ParseError> {
    match cf_allowlist_backend::tool::split_words(line) {
        (words, true) => Ok(words),
        (_, false) => Err(ParseError::Quote(line.to_owned())),
    }
}

/// Parses one rule's arguments (after `-A CHAIN`).
pub fn parse_rule(arguments: &[String]) -> Result<RuleShape, ParseError> {
    let mut shape = RuleShape {
        source: None,
        match_set: None,
        ports: Vec::new(),
        not_loopback: false,
        comment: None,
        target: String::new(),
        unrecognised: false,
    };
    let mut tcp = false;
    let mut index = 0;
    let next = |index: &mut usize| {
        *index += 1;
        arguments.get(*index).cloned().unwrap_or_default()
    };
    while index < arguments.len() {
        match arguments[index].as_str() {
            "-s" => {
                let text = next(&mut index);
                shape.source = Some(parse_net(&text).ok_or(ParseError::Address(text))?);
            }
            "!" if arguments.get(index + 1).map(String::as_str) == Some("-i")
                && arguments.get(index + 2).map(String::as_str) == Some("lo") =>
            {
                shape.not_loopback = true;
                index += 2;
            }
            "-p" => tcp = next(&mut index) == "tcp",
            "-m" => match next(&mut index).as_str() {
                "multiport" | "comment" | "set" | "tcp" => {}
                _ => shape.unrecognised = true,
            },
            "--dports" | "--dport" => {
                let text = next(&mut index);
                match text
                    .split(',')
                    .map(str::parse::<u16>)
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(mut ports) => {
                        ports.sort_unstable();
                        shape.ports = ports;
                    }
                    Err(_) => shape.unrecognised = true,
                }
            }
            "--comment" => shape.comment = Some(next(&mut index)),
            "--match-set" => {
                shape.match_set = Some(next(&mut index));
                if next(&mut index) != "src" {
                    shape.unrecognised = true;
                }
            }
            "-j" => shape.target = next(&mut index),
            _ => shape.unrecognised = true,
        }
        index += 1;
    }
    if !tcp && shape.target != names::CHAIN {
        shape.unrecognised = true;
    }
    Ok(shape)
}

/// Parses `iptables-save -t filter` (or ip6tables-save) output.
pub fn parse_save(text: &str) -> Result<Live, ParseError> {
    let mut live = Live::default();
    let mut in_filter = false;
    let mut input_position = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            continue;
        }
        if !in_filter || line == "COMMIT" {
            continue;
        }
        if let Some(chain) = line.strip_prefix(':') {
            let mut parts = chain.split_whitespace();
            let name = parts.next().unwrap_or("");
            let policy = parts.next().unwrap_or("-");
            if name == names::CHAIN {
                live.chain_exists = true;
            }
            if name == names::DOCKER_USER {
                live.docker_user_exists = true;
            }
            if name == names::DOCKER_CHAIN {
                live.docker_chain_exists = true;
            }
            if !matches!(name, "INPUT" | "FORWARD" | "OUTPUT") || policy != "ACCEPT" {
                live.in_use = true;
                live.foreign |= name != names::CHAIN && name != names::DOCKER_CHAIN;
            }
            continue;
        }
        let all = words(line)?;
        if all.len() < 2 || all[0] != "-A" {
            continue;
        }
        live.in_use = true;
        let arguments = &all[2..];
        if all[1] == names::INPUT {
            input_position += 1;
        }
        let rest = || line[format!("-A {} ", all[1]).len()..].to_owned();
        let jumps_to = |chain: &str| {
            arguments
                .windows(2)
                .any(|pair| pair[0] == "-j" && pair[1] == chain)
        };
        live.foreign |= !(all[1] == names::CHAIN
            || all[1] == names::DOCKER_CHAIN
            || (all[1] == names::INPUT && jumps_to(names::CHAIN))
            || (all[1] == names::DOCKER_USER && jumps_to(names::DOCKER_CHAIN)));
        if all[1] == names::DOCKER_CHAIN {
            live.docker_rules.push(rest());
        } else if all[1] == names::DOCKER_USER
            && arguments
                .windows(2)
                .any(|pair| pair[0] == "-j" && pair[1] == names::DOCKER_CHAIN)
        {
            live.docker_jumps.push(rest());
        } else if all[1] == names::CHAIN {
            live.rules.push(parse_rule(arguments)?);
        } else if all[1] == names::INPUT
            && arguments
                .windows(2)
                .any(|pair| pair[0] == "-j" && pair[1] == names::CHAIN)
        {
            live.jumps
                .push((input_position, line["-A INPUT ".len()..].to_owned()));
        } else if all[1] == names::INPUT {
            live.input_rules.push((input_position, arguments.to_vec()));
        }
    }
    Ok(live)
}

/// The TCP destination ports (`--dport N` or `--dport A:B`) of the DNAT rules in the nat
/// table of an `iptables-save -t nat` listing.
pub fn parse_published(text: &str) -> Vec<std::ops::RangeInclusive<u16>> {
    let mut in_nat = false;
    let mut ports = Vec::new();
    for line in text.lines() {
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == "nat";
            continue;
        }
        if !in_nat || !line.starts_with("-A ") {
            continue;
        }
        let Ok(words) = words(line) else { continue };
        let has = |pair: [&str; 2]| words.windows(2).any(|found| found == pair);
        if !has(["-j", "DNAT"]) || !has(["-p", "tcp"]) {
            continue;
        }
        let Some(at) = words.iter().position(|word| word == "--dport") else {
            continue;
        };
        let text = words.get(at + 1).map_or("", String::as_str);
        let range = match text.split_once(':') {
            Some((low, high)) => low.parse().ok().zip(high.parse().ok()),
            None => text.parse().ok().map(|port| (port, port)),
        };
        if let Some((low, high)) = range {
            ports.push(low..=high);
        }
    }
    ports
}

/// What an admin's INPUT rule accepts from chosen sources, as restrict must keep it: the
/// source and the TCP destination ports it names (`None`: every port). `None` for any rule
/// that does not accept (`-j ACCEPT`) from one non-negated source that is not everywhere, or
/// that names another protocol than TCP.
pub fn accepted_from(arguments: &[String]) -> Option<(IpNet, Option<Vec<u16>>)> {
    let mut source = None;
    let mut ports = None;
    let mut accepts = false;
    let mut negated = false;
    let mut index = 0;
    while index < arguments.len() {
        let value = arguments.get(index + 1).map(String::as_str).unwrap_or("");
        match arguments[index].as_str() {
            "!" => {
                negated = true;
                index += 1;
                continue;
            }
            "-s" if negated => return None,
            "-s" => source = parse_net(value),
            "-p" if negated || !matches!(value, "tcp" | "6" | "all") => return None,
            "--dport" | "--dports" if !negated => {
                ports = value
                    .split(',')
                    .map(|part| match part.split_once(':') {
                        Some((low, high)) => {
                            let (low, high) = (low.parse::<u16>().ok()?, high.parse::<u16>().ok()?);
                            Some((low..=high).collect::<Vec<u16>>())
                        }
                        None => Some(vec![part.parse::<u16>().ok()?]),
                    })
                    .collect::<Option<Vec<Vec<u16>>>>()
                    .map(|groups| groups.concat());
            }
            "-j" => accepts = value == "ACCEPT",
            _ => {}
        }
        negated = false;
        index += 1;
    }
    let source = source.filter(|net| net.prefix_len() > 0)?;
    accepts.then_some((source, ports))
}

/// The members of `set` from `ipset save SET` output; `None` if the listing has no such set.
pub fn parse_ipset(text: &str, set: &str) -> Result<Option<Vec<IpNet>>, ParseError> {
    let mut found = false;
    let mut members = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["create", name, ..] if *name == set => found = true,
            ["add", name, member, ..] if *name == set => {
                members.push(
                    parse_net(member).ok_or_else(|| ParseError::Address((*member).to_owned()))?,
                );
            }
            _ => {}
        }
    }
    Ok(found.then_some(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 20:10:20 2026
*filter
:INPUT DROP [10:600]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CF-ALLOWLIST - [0:0]
-A INPUT -m comment --comment cf-allowlist -j CF-ALLOWLIST
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -m comment --comment \"admin ssh\" -j ACCEPT
-A CF-ALLOWLIST -s 198.51.100.0/25 -p tcp -m multiport --dports 80,443 -m comment --comment cf-allowlist -j ACCEPT
-A CF-ALLOWLIST -s 198.51.100.7/32 -p tcp -m multiport --dports 443,80 -m comment --comment cf-allowlist -j ACCEPT
-A CF-ALLOWLIST ! -i lo -p tcp -m multiport --dports 80,443 -m comment --comment \"cf-allowlist restrict\" -j DROP
COMMIT
";

    #[test]
    fn a_table_with_only_our_parts_is_not_foreign() {
        assert!(
            parse_save(SAVE).unwrap().foreign,
            "the admin's rule and policy"
        );
        let ours: String = SAVE
            .lines()
            .filter(|line| !line.contains("admin ssh"))
            .map(|line| line.replace(":INPUT DROP", ":INPUT ACCEPT") + "\n")
            .collect();
        let live = parse_save(&ours).unwrap();
        assert!(live.in_use && live.chain_exists && !live.foreign, "{ours}");
    }

    #[test]
    fn published_ports_are_the_dnat_rules_destination_ports() {
        let nat = "*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.17.0.2:443
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 9000:9002 -j DNAT --to-destination 172.17.0.3:9000-9002
-A DOCKER ! -i docker0 -p udp -m udp --dport 53 -j DNAT --to-destination 172.17.0.4:53
-A POSTROUTING -p tcp -m tcp --dport 25 -j MASQUERADE
COMMIT
";
        assert_eq!(parse_published(nat), vec![8443..=8443, 9000..=9002]);
    }

    #[test]
    fn reads_our_chain_and_the_jump() {
        let live = parse_save(SAVE).unwrap();
        assert!(live.in_use && live.chain_exists);
        assert_eq!(live.jumps, vec![(1, names::jump_spec(names::COMMENT))]);
        assert_eq!(live.rules.len(), 3);
        assert_eq!(
            live.rules[1].source,
            Some("198.51.100.7/32".parse().unwrap())
        );
        assert_eq!(live.rules[1].ports, vec![80, 443]);
        assert!(live.rules[2].not_loopback);
        assert_eq!(
            live.rules[2].comment.as_deref(),
            Some("cf-allowlist restrict")
        );
        assert!(live.rules.iter().all(|rule| !rule.unrecognised));
    }

    #[test]
    fn rendered_rules_read_back_the_same() {
        let live = parse_save(SAVE).unwrap();
        for rule in &live.rules {
            let again = parse_rule(&words(&rule.render()).unwrap()).unwrap();
            assert_eq!(&again, rule);
        }
    }

    #[test]
    fn an_empty_table_is_not_in_use() {
        let text =
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(!parse_save(text).unwrap().in_use);
        assert!(!parse_save("").unwrap().in_use);
    }

    #[test]
    fn ipset_members_are_read() {
        let text = "create cf-allowlist-v4 hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\nadd cf-allowlist-v4 198.51.100.7\nadd cf-allowlist-v4 203.0.113.0/24\n";
        assert_eq!(
            parse_ipset(text, "cf-allowlist-v4").unwrap(),
            Some(vec![
                "198.51.100.7/32".parse().unwrap(),
                "203.0.113.0/24".parse().unwrap()
            ])
        );
        assert_eq!(parse_ipset(text, "other").unwrap(), None);
    }

    #[test]
    fn odd_input_is_an_error_or_unrecognised_never_a_panic() {
        assert!(words("-A X --comment \"open").is_err());
        assert!(parse_save("*filter\n-A CF-ALLOWLIST -s nonsense -j ACCEPT\n").is_err());
        let live = parse_save(
            "*filter\n-A CF-ALLOWLIST -s 198.51.100.0/24 -p udp -j ACCEPT\n-A CF-ALLOWLIST\n",
        )
        .unwrap();
        assert!(live.rules[0].unrecognised);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn network() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 1u8..=32).prop_map(|(bits, length)| {
                IpNet::new(Ipv4Addr::from(bits).into(), length)
                    .unwrap()
                    .trunc()
            }),
            (any::<u128>(), 1u8..=128).prop_map(|(bits, length)| {
                IpNet::new(Ipv6Addr::from(bits).into(), length)
                    .unwrap()
                    .trunc()
            }),
        ]
    }

    fn rule() -> impl Strategy<Value = RuleShape> {
        (
            proptest::option::of(network()),
            proptest::option::of("[a-z][a-z0-9-]{0,20}"),
            proptest::collection::btree_set(1u16.., 1..6),
            any::<bool>(),
            proptest::option::of("[a-z][a-z0-9 -]{0,20}[a-z]"),
            prop_oneof![Just("ACCEPT"), Just("DROP")],
        )
            .prop_map(
                |(source, match_set, ports, not_loopback, comment, target)| RuleShape {
                    source,
                    match_set,
                    ports: ports.into_iter().collect(),
                    not_loopback,
                    comment,
                    target: target.to_owned(),
                    unrecognised: false,
                },
            )
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_never_a_panic(text in "(\\*filter\n)?([-:!A-Za-z0-9 ./\"]{0,60}\n){0,8}") {
            let _ = parse_save(&text);
            let _ = parse_ipset(&text, "cf-allowlist-v4");
        }

        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(text in "\\PC{0,300}") {
            let _ = parse_save(&text);
            let _ = parse_ipset(&text, "cf-allowlist-v4");
        }

        #[test]
        fn rendered_rules_read_back(rules in proptest::collection::vec(rule(), 0..10)) {
            let mut save = String::from("*filter\n:INPUT DROP [0:0]\n:CF-ALLOWLIST - [0:0]\n");
            for rule in &rules {
                save.push_str(&format!("-A CF-ALLOWLIST {}\n", rule.render()));
            }
            save.push_str("COMMIT\n");
            let live = parse_save(&save).unwrap();
            prop_assert_eq!(live.rules, rules);
        }
    }
}
