//! Reading ufw's own rules files, `user.rules` and `user6.rules`, without running ufw.
//!
//! ufw keeps every rule added with `ufw allow`/`deny`/… as a `### tuple ###` line followed by the
//! iptables lines it generated, and rebuilds its rule list from the tuple lines alone (its
//! `_read_rules`): `ACTION PROTOCOL DPORT DST SPORT SRC DIRECTION`, or with the two application
//! names before the direction, then ` comment=HEX` where HEX is the comment's UTF-8 bytes in hex.
//! This module reads exactly that, in file order (which is ufw's rule order within a family), and
//! skips what ufw skips (tuples of a bad length). The fixtures in `fixtures/` were written by
//! ufw 0.36.2 itself in the test sandbox.

/// One rule of ufw, as its tuple line holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// `allow`, `deny`, `reject`, `limit`, with `_log`/`_log-all` or a `route:` prefix.
    pub action: String,
    /// `tcp`, `udp`, `any`, …
    pub protocol: String,
    /// Destination port(s): `80,443`, `22`, `any`.
    pub dport: String,
    /// Destination address: `0.0.0.0/0`, `::/0` or a network.
    pub dst: String,
    /// Source port(s).
    pub sport: String,
    /// Source address: a network, or a bare address for a host.
    pub src: String,
    /// Application profile names (destination, source), `-` for none, when the tuple has them.
    pub apps: Option<(String, String)>,
    /// `in`, `out`, or with an interface (`in_eth0`).
    pub direction: String,
    /// The comment, decoded; `None` when the tuple has none.
    pub comment: Option<String>,
}

/// A rules file we could not read as one ufw wrote.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file lacks the markers ufw always writes.
    #[error("no `### RULES ###` section (not a ufw user rules file)")]
    NotARulesFile,
}

const TUPLE_PREFIX: &str = "### tuple ###";

/// The rules of one rules file, in order; tuples ufw itself would skip are left out.
pub fn parse_rules(text: &str) -> Result<Vec<Tuple>, ParseError> {
    if !text.lines().any(|line| line.trim_end() == "### RULES ###") {
        return Err(ParseError::NotARulesFile);
    }
    Ok(text.lines().filter_map(parse_tuple_line).collect())
}

/// One `### tuple ###` line, or `None` for any other line and for tuples ufw skips.
pub fn parse_tuple_line(line: &str) -> Option<Tuple> {
    let rest = line.strip_prefix(TUPLE_PREFIX)?;
    // As ufw does: "comment= should always be last, so just strip it out".
    let (rest, comment) = match rest.split_once(" comment=") {
        Some((rest, hex)) => (rest, Some(decode_hex(hex.trim())?)),
        None => (rest, None),
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let owned = |index: usize| fields[index].to_owned();
    let (apps, direction) = match fields.len() {
        7 => (None, owned(6)),
        9 => (Some((owned(6), owned(7))), owned(8)),
        // ufw reads the old 6- and 8-field forms (direction "in"), which it no longer writes.
        6 => (None, "in".to_owned()),
        8 => (Some((owned(6), owned(7))), "in".to_owned()),
        _ => return None,
    };
    Some(Tuple {
        action: owned(0),
        protocol: owned(1),
        dport: owned(2),
        dst: owned(3),
        sport: owned(4),
        src: owned(5),
        apps,
        direction,
        comment,
    })
}

/// The tuple line ufw writes for `tuple`.
pub fn render_tuple_line(tuple: &Tuple) -> String {
    let mut line = format!(
        "{TUPLE_PREFIX} {} {} {} {} {} {}",
        tuple.action, tuple.protocol, tuple.dport, tuple.dst, tuple.sport, tuple.src
    );
    if let Some((dapp, sapp)) = &tuple.apps {
        line.push_str(&format!(" {dapp} {sapp}"));
    }
    line.push(' ');
    line.push_str(&tuple.direction);
    if let Some(comment) = &tuple.comment {
        line.push_str(" comment=");
        line.push_str(&encode_hex(comment));
    }
    line
}

/// ufw's comment encoding: the UTF-8 bytes in lowercase hex.
pub fn encode_hex(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Whether a tuple's port field (`80,443`, `8000:8100`, `any`) includes `port`.
pub fn port_in(field: &str, port: u16) -> bool {
    field == "any"
        || field.split(',').any(|part| match part.split_once(':') {
            Some((low, high)) => low
                .parse::<u16>()
                .ok()
                .zip(high.parse::<u16>().ok())
                .is_some_and(|(low, high)| (low..=high).contains(&port)),
            None => part.parse::<u16>().ok() == Some(port),
        })
}

/// `ENABLED=yes` in `ufw.conf`: whether ufw is enabled (what `ufw status` reports as active).
pub fn conf_enabled(text: &str) -> bool {
    shell_value(text, "ENABLED").is_some_and(|value| value.eq_ignore_ascii_case("yes"))
}

/// The value of `KEY=value` (optionally quoted) in one of ufw's shell-style files.
pub fn shell_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().rev().find_map(|line| {
        let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim().trim_matches('"').trim_matches('\''))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USER_RULES: &str = include_str!("fixtures/user.rules");
    const USER6_RULES: &str = include_str!("fixtures/user6.rules");

    #[test]
    fn reads_the_rules_ufw_wrote() {
        let rules = parse_rules(USER_RULES).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0],
            Tuple {
                action: "deny".into(),
                protocol: "tcp".into(),
                dport: "80,443".into(),
                dst: "0.0.0.0/0".into(),
                sport: "any".into(),
                src: "0.0.0.0/0".into(),
                apps: None,
                direction: "in".into(),
                comment: Some("cf-allowlist restrict".into()),
            }
        );
        assert_eq!(rules[1].comment.as_deref(), Some("admin ssh"));
        assert_eq!(rules[1].src, "192.0.2.0/24");
        assert_eq!(rules[2].comment, None);
        assert_eq!(rules[2].dport, "443");
        let rules6 = parse_rules(USER6_RULES).unwrap();
        assert_eq!(rules6.len(), 2);
        assert_eq!(rules6[0].src, "2001:db8:cf::/48");
        assert_eq!(rules6[0].comment.as_deref(), Some("cf-allowlist"));
        // Every tuple line renders back to exactly what ufw wrote.
        for line in USER_RULES.lines().chain(USER6_RULES.lines()) {
            if let Some(tuple) = parse_tuple_line(line) {
                assert_eq!(render_tuple_line(&tuple), line);
            }
        }
    }

    #[test]
    fn ports_and_port_ranges_are_read() {
        assert!(port_in("80,443", 443));
        assert!(port_in("8000:8100,443", 8080));
        assert!(port_in("any", 22));
        assert!(!port_in("80,8443", 443));
        assert!(!port_in("nonsense", 443));
    }

    #[test]
    fn a_file_without_ufw_markers_is_refused() {
        assert!(parse_rules("").is_err());
        assert!(parse_rules("<html>").is_err());
    }

    #[test]
    fn tuples_ufw_skips_are_skipped() {
        assert_eq!(parse_tuple_line("### tuple ### allow tcp 22"), None);
        assert_eq!(
            parse_tuple_line("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=zz"),
            None
        );
    }

    #[test]
    fn reads_the_switch_and_defaults_files() {
        assert!(conf_enabled("# comment\nENABLED=yes\nLOGLEVEL=low\n"));
        assert!(!conf_enabled("ENABLED=no\n"));
        assert!(!conf_enabled(""));
        assert_eq!(
            shell_value("DEFAULT_INPUT_POLICY=\"DROP\"\n", "DEFAULT_INPUT_POLICY"),
            Some("DROP")
        );
    }

    fn field() -> impl Strategy<Value = String> {
        "[a-z0-9:./,_-]{1,12}"
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        (
            prop::array::uniform6(field()),
            proptest::option::of((field(), field())),
            field(),
            proptest::option::of("\\PC{0,30}"),
        )
            .prop_map(|(fields, apps, direction, comment)| {
                let [action, protocol, dport, dst, sport, src] = fields;
                Tuple {
                    action,
                    protocol,
                    dport,
                    dst,
                    sport,
                    src,
                    apps,
                    direction,
                    comment,
                }
            })
    }

    proptest! {
        #[test]
        fn every_tuple_reads_back_as_written(tuple in tuple()) {
            let line = render_tuple_line(&tuple);
            prop_assert_eq!(parse_tuple_line(&line), Some(tuple));
        }

        #[test]
        fn rules_read_back_in_order(tuples in proptest::collection::vec(tuple(), 0..20)) {
            let mut text = String::from("*filter\n### RULES ###\n");
            for tuple in &tuples {
                text.push('\n');
                text.push_str(&render_tuple_line(tuple));
                text.push_str("\n-A ufw-user-input -j ACCEPT\n");
            }
            text.push_str("\n### END RULES ###\nCOMMIT\n");
            prop_assert_eq!(parse_rules(&text).unwrap(), tuples);
        }

        #[test]
        fn any_text_is_read_or_refused_never_a_panic(text in "(### RULES ###\n)?((### tuple ### )?[ -~]{0,80}\n){0,8}") {
            let _ = parse_rules(&text);
        }

        #[test]
        fn any_characters_are_read_or_refused_never_a_panic(text in "\\PC{0,300}") {
            let _ = parse_rules(&text);
            let _ = parse_tuple_line(&format!("### tuple ### {text}"));
        }
    }
}
