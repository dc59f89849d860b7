//! Reading a body into networks, strictly: one line that is not a CIDR rejects the whole
//! answer, because a half-read list is how the scripts this tool replaces wiped firewalls (an
//! HTML challenge page, two lines glued into one, a truncated download).
//!
//! Tolerated, because real lists have them: a UTF-8 byte order mark, CRLF line ends, spaces
//! around a line, blank lines, `#` comment lines, and no final newline. A body whose first
//! character is `{` is read as Cloudflare's JSON API answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::Value;

/// Why a body is not a list of ranges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not UTF-8 text.
    #[error("the answer is not UTF-8 text")]
    NotText,
    /// No ranges at all.
    #[error("the answer holds no ranges")]
    Empty,
    /// A line that is not a CIDR.
    #[error("line {line} is not a CIDR range: {text}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line, quoted and shortened.
        text: String,
    },
    /// A CIDR whose address has bits set beyond the prefix.
    #[error("line {line}: {text} has host bits set (the network is {network})")]
    HostBits {
        /// 1-based line number, or 0 in JSON.
        line: usize,
        /// The range as written.
        text: String,
        /// What it would be with the host bits cleared.
        network: IpNet,
    },
    /// The body looks like JSON but is not the API's answer.
    #[error("the JSON answer is unusable: {0}")]
    Json(String),
}

/// Parses a text list or a JSON API answer.
pub fn parse_body(body: &[u8]) -> Result<Vec<IpNet>, ParseError> {
    parse_body_with(body, false)
}

/// Parses a text list or a JSON API answer; with `jdcloud`, a JSON answer must also carry
/// Cloudflare's China Network ranges (`jdcloud_cidrs`), which are taken too.
pub fn parse_body_with(body: &[u8], jdcloud: bool) -> Result<Vec<IpNet>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        parse_json_with(text, jdcloud)
    } else {
        parse_list(text)
    }
}

/// Parses a text list, one CIDR per line.
///
/// A long list (100,000 ranges is 2.5 MB) is cut at line ends into one piece per core, parsed
/// side by side: parsing is most of a no-op sync at that size. The first bad line in the text's
/// own order is the one reported, as a single pass would.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, ParseError> {
    parse_in_pieces(text, PARALLEL_ABOVE_BYTES)
}

/// [`parse_list`] with pieces of at least `smallest` bytes.
fn parse_in_pieces(text: &str, smallest: usize) -> Result<Vec<IpNet>, ParseError> {
    let pieces = pieces(text, smallest);
    let networks = if pieces.len() == 1 {
        parse_lines(text, 0)?
    } else {
        let parsed = crate::parallel::map(&pieces, |&(piece, lines_before)| {
            parse_lines(piece, lines_before)
        });
        let mut networks = Vec::new();
        for piece in parsed {
            networks.extend(piece?);
        }
        networks
    };
    if networks.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(networks)
}

/// Below this a list is parsed on the calling thread (Cloudflare's own lists are ~400 bytes).
const PARALLEL_ABOVE_BYTES: usize = 256 * 1024;

/// `text` cut at line ends into at most one piece per core, each at least `smallest` bytes,
/// with the number of lines before each piece.
fn pieces(text: &str, smallest: usize) -> Vec<(&str, usize)> {
    let count = match text.len() / smallest.max(1) {
        0 | 1 => 1,
        many => many.min(crate::parallel::cores(8)),
    };
    let mut pieces = Vec::with_capacity(count);
    let mut rest = text;
    let mut lines_before = 0;
    for remaining in (1..=count).rev() {
        let cut = if remaining == 1 {
            rest.len()
        } else {
            let target = rest.len() / remaining;
            match rest.as_bytes()[target..]
                .iter()
                .position(|&byte| byte == b'\n')
            {
                Some(offset) => target + offset + 1,
                None => rest.len(),
            }
        };
        let (piece, after) = rest.split_at(cut);
        pieces.push((piece, lines_before));
        lines_before += piece.bytes().filter(|&byte| byte == b'\n').count();
        rest = after;
        if rest.is_empty() {
            break;
        }
    }
    pieces
}

/// Parses the lines of `text`, the first being line `lines_before + 1` of the list.
fn parse_lines(text: &str, lines_before: usize) -> Result<Vec<IpNet>, ParseError> {
    let mut networks = Vec::with_capacity(text.len() / 16);
    for (index, line) in text.split('\n').enumerate() {
        let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        networks.push(parse_cidr(line, lines_before + index + 1)?);
    }
    Ok(networks)
}

/// Parses one CIDR. A bare address is not a CIDR; neither is one with host bits set.
pub fn parse_cidr(text: &str, line: usize) -> Result<IpNet, ParseError> {
    let bad = || ParseError::BadLine {
        line,
        text: quote(text),
    };
    let (address, length) = text.split_once('/').ok_or_else(bad)?;
    if length.is_empty()
        || length.len() > 3
        || (length.len() > 1 && length.starts_with('0'))
        || !length.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // The family is known from the text: std's `IpAddr` parser would try IPv4 first on every
    // IPv6 address.
    let address = if address.contains(':') {
        IpAddr::V6(parse_ipv6(address).ok_or_else(bad)?)
    } else {
        IpAddr::V4(address.parse::<Ipv4Addr>().map_err(|_| bad())?)
    };
    let length: u8 = length.parse().map_err(|_| bad())?;
    let network = IpNet::new(address, length).map_err(|_| bad())?;
    if network.trunc() != network {
        return Err(ParseError::HostBits {
            line,
            text: text.to_owned(),
            network: network.trunc(),
        });
    }
    Ok(network)
}

/// An IPv6 address, exactly as std's parser reads it: hex groups without the std parser's
/// per-character closures (its parsing was the largest part of a no-op sync at 100,000
/// ranges). Only hex groups and one `::` are read here; text with anything else (an embedded
/// IPv4 part, a stray character) is left to std, so the answer is always std's.
fn parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    let fallback = || text.parse::<Ipv6Addr>().ok();
    let bytes = text.as_bytes();
    if bytes.len() > 39
        || bytes
            .iter()
            .any(|byte| !(byte.is_ascii_hexdigit() || *byte == b':'))
    {
        return fallback();
    }
    // Split at the one `::`, if any: groups before it, groups after it.
    let (head, tail) = match text.find("::") {
        Some(at) => (&text[..at], Some(&text[at + 2..])),
        None => (text, None),
    };
    let groups = |part: &str, into: &mut [u16; 8], count: &mut usize| -> Option<()> {
        if part.is_empty() {
            return Some(());
        }
        for group in part.split(':') {
            if group.is_empty() || group.len() > 4 || *count == 8 {
                return None;
            }
            into[*count] = u16::from_str_radix(group, 16).ok()?;
            *count += 1;
        }
        Some(())
    };
    let (mut first, mut first_count) = ([0u16; 8], 0);
    groups(head, &mut first, &mut first_count)?;
    let mut words = first;
    match tail {
        None if first_count == 8 => {}
        None => return None,
        Some(tail) => {
            if tail.contains("::") {
                return None;
            }
            let (mut last, mut last_count) = ([0u16; 8], 0);
            groups(tail, &mut last, &mut last_count)?;
            // `::` stands for at least one zero group.
            if first_count + last_count > 7 {
                return None;
            }
            words[8 - last_count..].copy_from_slice(&last[..last_count]);
        }
    }
    Some(Ipv6Addr::from(words))
}

/// Quotes a line for an error message: escaped, and cut at 60 characters.
fn quote(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    let mut short: String = escaped.chars().take(60).collect();
    if escaped.chars().count() > 60 {
        short.push('…');
    }
    format!("\"{short}\"")
}

/// Parses Cloudflare's `/client/v4/ips` answer: `success` must be true and the CIDR arrays must
/// hold strings of their own family.
pub fn parse_json(text: &str) -> Result<Vec<IpNet>, ParseError> {
    parse_json_with(text, false)
}

/// [`parse_json`], and with `jdcloud` the `jdcloud_cidrs` array too (both families mixed, as
/// `?networks=jdcloud` answers): required then, so that a URL without that query fails
/// instead of silently leaving JD Cloud's ranges out.
pub fn parse_json_with(text: &str, jdcloud: bool) -> Result<Vec<IpNet>, ParseError> {
    let json = |reason: &str| ParseError::Json(reason.to_owned());
    let root: Value = serde_json::from_str(text)
        .map_err(|error| ParseError::Json(format!("not valid JSON ({error})")))?;
    match root.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let errors = root.get("errors").map(Value::to_string).unwrap_or_default();
            return Err(ParseError::Json(
                format!("success is false {errors}").trim_end().to_owned(),
            ));
        }
        _ => return Err(json("no boolean `success`")),
    }
    let result = root
        .get("result")
        .and_then(Value::as_object)
        .ok_or_else(|| json("no `result` object"))?;
    let mut networks = Vec::new();
    let mut any_array = false;
    for (key, want_v4) in [("ipv4_cidrs", true), ("ipv6_cidrs", false)] {
        let Some(value) = result.get(key) else {
            continue;
        };
        let array = value
            .as_array()
            .ok_or_else(|| ParseError::Json(format!("`{key}` is not an array")))?;
        any_array = true;
        for (index, item) in array.iter().enumerate() {
            let text = item
                .as_str()
                .ok_or_else(|| ParseError::Json(format!("`{key}[{index}]` is not a string")))?;
            let network = parse_cidr(text.trim(), 0)
                .map_err(|error| ParseError::Json(format!("`{key}[{index}]`: {error}")))?;
            if matches!(network, IpNet::V4(_)) != want_v4 {
                return Err(ParseError::Json(format!(
                    "`{key}[{index}]` is {network}, of the other address family"
                )));
            }
            networks.push(network);
        }
    }
    if !any_array {
        return Err(json("no `ipv4_cidrs` or `ipv6_cidrs` array"));
    }
    if jdcloud {
        let array = result
            .get("jdcloud_cidrs")
            .ok_or_else(|| {
                json("no `jdcloud_cidrs` array (jdcloud is on: ask the API with `?networks=jdcloud`)")
            })?
            .as_array()
            .ok_or_else(|| json("`jdcloud_cidrs` is not an array"))?;
        for (index, item) in array.iter().enumerate() {
            let text = item.as_str().ok_or_else(|| {
                ParseError::Json(format!("`jdcloud_cidrs[{index}]` is not a string"))
            })?;
            let network = parse_cidr(text.trim(), 0)
                .map_err(|error| ParseError::Json(format!("`jdcloud_cidrs[{index}]`: {error}")))?;
            networks.push(network);
        }
    }
    if networks.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_edge_cases_read_as_std_reads_them() {
        for text in [
            "",
            ":",
            "::",
            ":::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:::2",
            ":1::",
            "1::2:",
            ":1:2:3:4:5:6:7",
            "12345::",
            "0000:0000::",
            "00000::",
            "::ffff:192.0.2.1",
            "2001:DB8::1",
            "2001:db8::g",
            "1::2::3",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:0db8:0000::0001",
        ] {
            assert_eq!(parse_ipv6(text), text.parse::<Ipv6Addr>().ok(), "{text:?}");
        }
    }

    #[test]
    fn a_list_parsed_in_pieces_is_the_list_parsed_whole() {
        let mut lines: Vec<String> = (0..500)
            .map(|index| format!("2001:db8:{index:x}::/48"))
            .collect();
        lines.insert(3, "# a comment".to_owned());
        lines.insert(250, String::new());
        let text = lines.join("\r\n");
        let whole = parse_lines(&text, 0).unwrap();
        assert_eq!(parse_in_pieces(&text, 64).unwrap(), whole);
        assert_eq!(whole.len(), 500);
        // Every byte lands in exactly one piece, at line ends, with the lines before counted.
        let cut = pieces(&text, 64);
        assert_eq!(
            cut.iter().map(|(piece, _)| *piece).collect::<String>(),
            text
        );
        for (piece, lines_before) in &cut {
            let offset = piece.as_ptr() as usize - text.as_ptr() as usize;
            assert_eq!(*lines_before, text[..offset].matches('\n').count());
        }
        // The first bad line in the list's order is reported, with its number in the list.
        lines[400] = "2001:db8::zz/48".to_owned();
        lines[450] = "not a range".to_owned();
        let text = lines.join("\n");
        assert_eq!(
            parse_in_pieces(&text, 64).unwrap_err(),
            ParseError::BadLine {
                line: 401,
                text: "\"2001:db8::zz/48\"".to_owned()
            }
        );
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn benign_quirks_are_accepted() {
        let body = "\u{feff}  198.51.100.0/24 \r\n\r\n# comment\n\t2001:db8::/32";
        assert_eq!(
            parse_body(body.as_bytes()).unwrap(),
            nets(&["198.51.100.0/24", "2001:db8::/32"])
        );
    }

    #[test]
    fn merged_lines_are_rejected() {
        let error = parse_body(b"103.21.244.0/22\n131.0.72.0/222400:cb00::/32").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 2 is not a CIDR range: \"131.0.72.0/222400:cb00::/32\""
        );
    }

    #[test]
    fn html_is_rejected() {
        let error =
            parse_body(b"<!DOCTYPE html>\n<html><title>Just a moment...</title>").unwrap_err();
        assert!(
            matches!(error, ParseError::BadLine { line: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_and_blank_bodies_are_rejected() {
        assert_eq!(parse_body(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(parse_body(b" \n\r\n ").unwrap_err(), ParseError::Empty);
    }

    #[test]
    fn truncated_and_odd_lines_are_rejected() {
        for body in [
            "198.51.100.0/2x",
            "198.51.100.0/",
            "198.51.100",
            "198.51.100.0",
            "198.51.100.0/33",
            "2001:db8::/129",
            "198.51.100.0/24 extra",
            "198.51.100.0/024",
            "198.51.100.0/24\0",
        ] {
            assert!(
                parse_body(body.as_bytes()).is_err(),
                "{body:?} was accepted"
            );
        }
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_named() {
        let error = parse_body(b"198.51.100.7/24").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1: 198.51.100.7/24 has host bits set (the network is 198.51.100.0/24)"
        );
    }

    #[test]
    fn not_utf8_is_rejected() {
        assert_eq!(
            parse_body(&[0xff, 0xfe, 0x00]).unwrap_err(),
            ParseError::NotText
        );
    }

    #[test]
    fn the_json_api_is_read() {
        let body = r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":["2001:db8::/32"],"etag":"x"},"success":true,"errors":[],"messages":[]}"#;
        assert_eq!(
            parse_body(body.as_bytes()).unwrap(),
            nets(&["198.51.100.0/24", "2001:db8::/32"])
        );
    }

    #[test]
    fn jd_clouds_ranges_are_read_only_when_asked_for_and_then_required() {
        let body = r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":["2001:db8::/32"],"jdcloud_cidrs":["203.0.113.0/24","2001:db8:ff::/48"],"etag":"x"},"success":true,"errors":[],"messages":[]}"#;
        assert_eq!(
            parse_body(body.as_bytes()).unwrap(),
            nets(&["198.51.100.0/24", "2001:db8::/32"])
        );
        assert_eq!(
            parse_body_with(body.as_bytes(), true).unwrap(),
            nets(&[
                "198.51.100.0/24",
                "2001:db8::/32",
                "203.0.113.0/24",
                "2001:db8:ff::/48"
            ])
        );
        let without =
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":[]},"success":true}"#;
        let error = parse_body_with(without.as_bytes(), true).unwrap_err();
        assert!(error.to_string().contains("?networks=jdcloud"), "{error}");
        for bad in [
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"jdcloud_cidrs":"203.0.113.0/24"},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"jdcloud_cidrs":[7]},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"jdcloud_cidrs":["203.0.113.7/24"]},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"jdcloud_cidrs":["<html>"]},"success":true}"#,
        ] {
            assert!(
                parse_body_with(bad.as_bytes(), true).is_err(),
                "{bad} was accepted"
            );
        }
        // A text list cannot carry them; it is read as it is.
        assert_eq!(
            parse_body_with(b"198.51.100.0/24", true).unwrap(),
            nets(&["198.51.100.0/24"])
        );
    }

    #[test]
    fn broken_json_answers_are_rejected() {
        for body in [
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"]},"success":false,"errors":[{"code":10000}]}"#,
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"]}}"#,
            r#"{"result":{"ipv4_cidrs":[],"ipv6_cidrs":[]},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":"198.51.100.0/24"},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":[24]},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":["2001:db8::/32"]},"success":true}"#,
            r#"{"result":{},"success":true}"#,
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"#,
            r#"{"success":"true","result":{"ipv4_cidrs":["198.51.100.0/24"]}}"#,
        ] {
            assert!(parse_body(body.as_bytes()).is_err(), "{body} was accepted");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    use cf_allowlist_testkit::strategies::network;

    proptest! {
        #[test]
        fn any_bytes_are_parsed_or_refused_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_body(&body);
        }

        #[test]
        fn any_text_is_parsed_or_refused_never_a_panic(body in "\\PC{0,300}") {
            let _ = parse_body(body.as_bytes());
            let _ = parse_json(&body);
        }

        #[test]
        fn ipv6_addresses_read_as_std_reads_them(
            text in "[0-9a-fA-F:.]{0,45}",
            bits in any::<u128>(),
            zeros in 0usize..8,
            upper in any::<bool>(),
        ) {
            prop_assert_eq!(parse_ipv6(&text), text.parse::<Ipv6Addr>().ok(), "{}", text);
            // Real addresses, compressed by std, with a run of zero groups, and spelled out.
            let mut words = Ipv6Addr::from(bits).segments();
            for word in words.iter_mut().skip(zeros % 8).take(zeros) {
                *word = 0;
            }
            let address = Ipv6Addr::from(words);
            let full = words.iter().map(|word| format!("{word:04x}")).collect::<Vec<_>>().join(":");
            for text in [address.to_string(), full] {
                let text = if upper { text.to_uppercase() } else { text };
                prop_assert_eq!(parse_ipv6(&text), Some(address), "{}", text);
            }
        }

        #[test]
        fn a_rendered_list_parses_back(networks in proptest::collection::vec(network(0), 1..40), crlf in any::<bool>(), final_newline in any::<bool>()) {
            let separator = if crlf { "\r\n" } else { "\n" };
            let mut body: String = networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(separator);
            if final_newline {
                body.push_str(separator);
            }
            prop_assert_eq!(parse_body(body.as_bytes()).unwrap(), networks);
        }

        #[test]
        fn a_rendered_json_answer_parses_back(networks in proptest::collection::vec(network(0), 1..40)) {
            let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = networks.iter().partition(|net| matches!(net, IpNet::V4(_)));
            let strings = |list: &[IpNet]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
            let body = serde_json::json!({
                "result": {"ipv4_cidrs": strings(&v4), "ipv6_cidrs": strings(&v6), "etag": "x"},
                "success": true, "errors": [], "messages": []
            }).to_string();
            let mut expected = v4.clone();
            expected.extend(v6);
            prop_assert_eq!(parse_body(body.as_bytes()).unwrap(), expected);
        }
    }
}
