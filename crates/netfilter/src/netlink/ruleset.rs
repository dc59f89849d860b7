//! The ruleset's structure read straight from the kernel, rendered as nft 1.0.6's terse JSON
//! listing (`nft -t -j list ruleset`): the same `serde_json::Value`, `metainfo` aside.
//!
//! Running nft costs one to two milliseconds a process; the kernel answers four dumps in a
//! fraction of that. The renderer reproduces only what it is proven to render as nft does (the
//! differential test in `tests/e2e_netlink_listing.rs` compares it with real nft): tables of the
//! ip, ip6 and inet families without flags, regular and base chains (filter, nat and route
//! types on the five inet hooks), named sets of addresses or ports with no flag but `interval`,
//! and rules made of `ip`/`ip6` address, prefix and protocol matches, `tcp`/`udp` port matches
//! (one value, a named set or an anonymous set of ports), `meta` `iif`, `iifname`, `l4proto`
//! and `nfproto`, `ct state`, `counter`, and the verdicts `accept`, `drop`, `return`, `jump`
//! and `goto`, with comments. nft's implicit dependencies (`meta nfproto` before an address
//! match in an inet table, `meta l4proto` before a port match) are hidden as nft hides them.
//! Anything else anywhere in the ruleset (another expression, table flags, set flags or types,
//! stateful objects, flowtables, an unknown attribute) makes the whole reading `None`, and the
//! caller runs nft as before. (In a debug build, `CF_NETLINK_DEBUG=1` prints where a reading
//! stopped.)

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use super::{
    NFT_MSG_GETGEN, NFT_MSG_GETSETELEM, NLM_F_DUMP, NetlinkError, Socket, attributes,
    push_attribute,
};

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETOBJ: u16 = 19;
const NFT_MSG_GETFLOWTABLE: u16 = 23;
const NFPROTO_UNSPEC: u8 = 0;

/// How many times the dumps are repeated while transactions keep committing.
const ATTEMPTS: usize = 4;

/// A netlink answer that does not fit what is rendered: the reading is `None`.
struct Unrendered;

type Rendered<T> = Result<T, Unrendered>;

/// One answer of a dump: the generation's low 16 bits it was read at, and the family byte
/// followed by the attributes.
type Answer = (u16, Vec<u8>);

impl From<NetlinkError> for Unrendered {
    fn from(error: NetlinkError) -> Unrendered {
        if cfg!(debug_assertions) && std::env::var_os("CF_NETLINK_DEBUG").is_some() {
            eprintln!("netlink: {error}");
        }
        Unrendered
    }
}

impl Socket {
    /// Dumps `message_type` for `protocol_family` (with `attributes`): every answer's payload
    /// after nfgenmsg, with the nfgenmsg's resource id (the low 16 bits of the generation the
    /// dump was read at). `None` when the dump was interrupted by a commit.
    fn dump_with_ids(
        &mut self,
        message_type: u16,
        protocol_family: u8,
        attributes: &[u8],
    ) -> Result<Option<Vec<Answer>>, NetlinkError> {
        let (bodies, interrupted) = self.ask_whole(
            message_type,
            NLM_F_DUMP,
            protocol_family,
            attributes,
            "(ruleset)",
        )?;
        if interrupted {
            return Ok(None);
        }
        Ok(Some(
            bodies
                .into_iter()
                .map(|body| {
                    let id = u16::from_be_bytes([body[2], body[3]]);
                    // The family byte, then the attributes.
                    let mut payload = vec![body[0]];
                    payload.extend_from_slice(&body[4..]);
                    (id, payload)
                })
                .collect(),
        ))
    }
}

/// This namespace's `nft -t -j list ruleset`, read over netlink, with the generation it is
/// exact at; `None` when the ruleset holds anything not rendered exactly as nft would (see the
/// module's documentation), when the kernel cannot be asked, or when transactions kept
/// committing during every attempt.
pub fn terse_listing() -> Option<(u32, String)> {
    let mut socket = Socket::open().ok()?;
    for _ in 0..ATTEMPTS {
        match attempt(&mut socket) {
            Ok(Some(found)) => return Some(found),
            Ok(None) => continue,
            Err(Unrendered) => return None,
        }
    }
    None
}

fn generation(socket: &mut Socket) -> Rendered<u32> {
    let (payloads, _) = socket.ask(NFT_MSG_GETGEN, 0, NFPROTO_UNSPEC, &[], "(generation)")?;
    for payload in &payloads {
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            if kind == 1 && value.len() == 4 {
                return Ok(u32::from_be_bytes(value.try_into().expect("4 bytes")));
            }
        }
    }
    Err(unrendered(line!()))
}

/// One consistent reading, `Ok(None)` when a commit interfered.
fn attempt(socket: &mut Socket) -> Rendered<Option<(u32, String)>> {
    let before = generation(socket)?;
    let id = (before & 0xffff) as u16;
    let mut dumps = Vec::new();
    for kind in [
        NFT_MSG_GETTABLE,
        NFT_MSG_GETCHAIN,
        NFT_MSG_GETSET,
        NFT_MSG_GETRULE,
        NFT_MSG_GETOBJ,
        NFT_MSG_GETFLOWTABLE,
    ] {
        let Some(payloads) = socket.dump_with_ids(kind, NFPROTO_UNSPEC, &[])? else {
            return Ok(None);
        };
        if payloads.iter().any(|(answer, _)| *answer != id) {
            return Ok(None);
        }
        dumps.push(payloads);
    }
    let [tables, chains, sets, rules, objects, flowtables]: [Vec<Answer>; 6] =
        dumps.try_into().map_err(|_| unrendered(line!()))?;
    // A dump of nothing carries no generation: a commit in between shows here (and is retried,
    // not taken for something unrendered when the parts do not fit together).
    if generation(socket)? != before {
        return Ok(None);
    }
    if !objects.is_empty() || !flowtables.is_empty() {
        return Err(unrendered(line!()));
    }
    let mut ruleset = Ruleset::default();
    for (_, payload) in &tables {
        ruleset.table(payload)?;
    }
    for (_, payload) in &chains {
        ruleset.chain(payload)?;
    }
    for (_, payload) in &sets {
        ruleset.set(payload)?;
    }
    for (_, payload) in &rules {
        ruleset.rule(payload)?;
    }
    // The elements of the anonymous sets rules use.
    let mut anonymous = BTreeMap::new();
    for table in &ruleset.tables {
        for set in &table.sets {
            if set.anonymous {
                let Some(elements) = elements(socket, table, set, id)? else {
                    return Ok(None);
                };
                anonymous.insert((table.index(), set.name.clone()), elements);
            }
        }
    }
    if generation(socket)? != before {
        return Ok(None);
    }
    let listing = ruleset.render(&anonymous)?;
    Ok(Some((before, listing.to_string())))
}

/// The family names nft prints, by nfproto number; only these are rendered.
fn family_name(family: u8) -> Rendered<&'static str> {
    match family {
        2 => Ok("ip"),
        10 => Ok("ip6"),
        1 => Ok("inet"),
        _ => Err(unrendered(line!())),
    }
}

#[derive(Default)]
struct Ruleset {
    tables: Vec<Table>,
}

struct Table {
    family: u8,
    name: String,
    handle: u64,
    sets: Vec<Set>,
    chains: Vec<Chain>,
    position: usize,
}

impl Table {
    fn index(&self) -> usize {
        self.position
    }
}

struct Chain {
    name: String,
    handle: u64,
    base: Option<(String, u32, i32, u32)>,
    rules: Vec<Rule>,
}

struct Set {
    name: String,
    handle: u64,
    anonymous: bool,
    interval: bool,
    key_type: u32,
    key_len: u32,
}

struct Rule {
    handle: u64,
    comment: Option<String>,
    expressions: Vec<Expression>,
}

fn strings(value: &[u8]) -> Rendered<String> {
    let text = value
        .strip_suffix(&[0])
        .ok_or_else(|| unrendered(line!()))?;
    String::from_utf8(text.to_vec()).map_err(|_| unrendered(line!()))
}

fn be32(value: &[u8]) -> Rendered<u32> {
    Ok(u32::from_be_bytes(
        value.try_into().map_err(|_| unrendered(line!()))?,
    ))
}

fn be64(value: &[u8]) -> Rendered<u64> {
    Ok(u64::from_be_bytes(
        value.try_into().map_err(|_| unrendered(line!()))?,
    ))
}

impl Ruleset {
    fn find(&mut self, family: u8, name: &str) -> Rendered<&mut Table> {
        self.tables
            .iter_mut()
            .find(|table| table.family == family && table.name == name)
            .ok_or_else(|| unrendered(line!()))
    }

    fn table(&mut self, payload: &[u8]) -> Rendered<()> {
        let (family, payload) = split_family(payload)?;
        family_name(family)?;
        let (mut name, mut handle) = (None, None);
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            match kind {
                1 => name = Some(strings(value)?),
                2 if be32(value)? == 0 => {}
                3 | 5 => {}
                4 => handle = Some(be64(value)?),
                // nft 1.0.6 prints no table comment.
                6 => {}
                _ => return Err(unrendered(line!())),
            }
        }
        let position = self.tables.len();
        self.tables.push(Table {
            family,
            name: name.ok_or_else(|| unrendered(line!()))?,
            handle: handle.ok_or_else(|| unrendered(line!()))?,
            sets: Vec::new(),
            chains: Vec::new(),
            position,
        });
        Ok(())
    }

    fn chain(&mut self, payload: &[u8]) -> Rendered<()> {
        let (family, payload) = split_family(payload)?;
        let (mut table, mut name, mut handle) = (None, None, None);
        let (mut hook, mut policy, mut kind_name) = (None, None, None);
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            match kind {
                1 => table = Some(strings(value)?),
                2 => handle = Some(be64(value)?),
                3 => name = Some(strings(value)?),
                4 => {
                    let (mut number, mut priority) = (None, None);
                    for field in attributes(value) {
                        let (kind, value) = field?;
                        match kind {
                            1 => number = Some(be32(value)?),
                            2 => priority = Some(be32(value)? as i32),
                            _ => return Err(unrendered(line!())),
                        }
                    }
                    hook = Some((
                        number.ok_or_else(|| unrendered(line!()))?,
                        priority.ok_or_else(|| unrendered(line!()))?,
                    ));
                }
                5 => policy = Some(be32(value)?),
                6 | 8 | 9 | 11 => {}
                7 => kind_name = Some(strings(value)?),
                10 if be32(value)? & !1 == 0 => {} // NFT_CHAIN_BASE only
                // nft 1.0.6 prints no chain comment.
                12 => {}
                _ => return Err(unrendered(line!())),
            }
        }
        let base = match (hook, kind_name) {
            (Some((number, priority)), Some(kind_name)) => {
                if number > 4 || !matches!(kind_name.as_str(), "filter" | "nat" | "route") {
                    return Err(unrendered(line!()));
                }
                Some((
                    kind_name,
                    number,
                    priority,
                    policy.ok_or_else(|| unrendered(line!()))?,
                ))
            }
            (None, None) => None,
            _ => return Err(unrendered(line!())),
        };
        let table = self.find(family, &table.ok_or_else(|| unrendered(line!()))?)?;
        table.chains.push(Chain {
            name: name.ok_or_else(|| unrendered(line!()))?,
            handle: handle.ok_or_else(|| unrendered(line!()))?,
            base,
            rules: Vec::new(),
        });
        Ok(())
    }

    fn set(&mut self, payload: &[u8]) -> Rendered<()> {
        let (family, payload) = split_family(payload)?;
        let (mut table, mut name, mut handle, mut flags) = (None, None, None, 0);
        let (mut key_type, mut key_len, mut described, mut typed) = (None, None, false, false);
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            match kind {
                1 => table = Some(strings(value)?),
                2 => name = Some(strings(value)?),
                3 => flags = be32(value)?,
                4 => key_type = Some(be32(value)?),
                5 => key_len = Some(be32(value)?),
                // The size of an anonymous set (nft prints none for it); a named set's is not rendered.
                9 => described |= !value.is_empty(),
                // Its id, padding, the kernel's backend type and element count (nft prints none).
                10 | 14 | 19 | 20 => {}
                13 => typed = userdata(value)?,
                16 => handle = Some(be64(value)?),
                _ => return Err(unrendered(line!())),
            }
        }
        let anonymous = flags & 1 != 0;
        let name = name.ok_or_else(|| unrendered(line!()))?;
        // Anonymous: constant, maybe interval; named: no flag but interval.
        let allowed = if anonymous { 0x7 } else { 0x4 };
        if flags & !allowed != 0
            || (anonymous && (flags & 0x2 == 0 || flags & 0x4 != 0))
            || (!anonymous && (described || typed))
        {
            return Err(unrendered(line!()));
        }
        let (key_type, key_len) = (
            key_type.ok_or_else(|| unrendered(line!()))?,
            key_len.ok_or_else(|| unrendered(line!()))?,
        );
        if !matches!((key_type, key_len), (7, 4) | (8, 16) | (13, 2)) {
            return Err(unrendered(line!()));
        }
        let table = self.find(family, &table.ok_or_else(|| unrendered(line!()))?)?;
        table.sets.push(Set {
            name,
            handle: handle.ok_or_else(|| unrendered(line!()))?,
            anonymous,
            interval: flags & 0x4 != 0,
            key_type,
            key_len,
        });
        Ok(())
    }

    fn rule(&mut self, payload: &[u8]) -> Rendered<()> {
        let (family, payload) = split_family(payload)?;
        let (mut table, mut chain, mut handle) = (None, None, None);
        let (mut comment, mut expressions) = (None, None);
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            match kind {
                1 => table = Some(strings(value)?),
                2 => chain = Some(strings(value)?),
                3 => handle = Some(be64(value)?),
                4 => expressions = Some(decode_expressions(value)?),
                7 => comment = rule_comment(value)?,
                // The previous rule's handle; padding.
                6 | 8 => {}
                _ => return Err(unrendered(line!())),
            }
        }
        let table = self.find(family, &table.ok_or_else(|| unrendered(line!()))?)?;
        let chain_name = chain.ok_or_else(|| unrendered(line!()))?;
        let chain = table
            .chains
            .iter_mut()
            .find(|chain| chain.name == chain_name)
            .ok_or_else(|| unrendered(line!()))?;
        chain.rules.push(Rule {
            handle: handle.ok_or_else(|| unrendered(line!()))?,
            comment,
            expressions: expressions.unwrap_or_default(),
        });
        Ok(())
    }

    fn render(&self, anonymous: &BTreeMap<(usize, String), Vec<Vec<u8>>>) -> Rendered<Value> {
        let protocols = &Protocols;
        let mut items = vec![json!({"metainfo": {
            "version": "1.0.6",
            "release_name": "Lester Gooch #5",
            "json_schema_version": 1,
        }})];
        for table in &self.tables {
            let family = family_name(table.family)?;
            items.push(json!({"table": {
                "family": family, "name": table.name, "handle": table.handle,
            }}));
            for set in table.sets.iter().filter(|set| !set.anonymous) {
                let mut object = json!({
                    "family": family,
                    "name": set.name,
                    "table": table.name,
                    "type": type_name(set.key_type)?,
                    "handle": set.handle,
                });
                if set.interval {
                    object["flags"] = json!(["interval"]);
                }
                items.push(json!({ "set": object }));
            }
            for chain in &table.chains {
                let mut object = json!({
                    "family": family,
                    "table": table.name,
                    "name": chain.name,
                    "handle": chain.handle,
                });
                if let Some((kind, hook, priority, policy)) = &chain.base {
                    object["type"] = json!(kind);
                    object["hook"] = json!(
                        ["prerouting", "input", "forward", "output", "postrouting"][*hook as usize]
                    );
                    object["prio"] = json!(priority);
                    object["policy"] = json!(match policy {
                        0 => "drop",
                        1 => "accept",
                        _ => return Err(unrendered(line!())),
                    });
                }
                items.push(json!({ "chain": object }));
            }
            for chain in &table.chains {
                for rule in &chain.rules {
                    let context = Context {
                        family: table.family,
                        table,
                        anonymous,
                        protocols,
                    };
                    let mut object = json!({
                        "family": family,
                        "table": table.name,
                        "chain": chain.name,
                        "handle": rule.handle,
                    });
                    if let Some(comment) = &rule.comment {
                        object["comment"] = json!(comment);
                    }
                    object["expr"] = Value::Array(context.statements(&rule.expressions)?);
                    items.push(json!({ "rule": object }));
                }
            }
        }
        Ok(json!({ "nftables": items }))
    }
}

/// The nfgenmsg family byte: `dump_with_ids` keeps it as the payload's first byte.
fn split_family(payload: &[u8]) -> Rendered<(u8, &[u8])> {
    let (family, rest) = payload.split_first().ok_or_else(|| unrendered(line!()))?;
    Ok((*family, rest))
}

/// A set's userdata: only the key byte order and nft's merge flag are rendered as nothing,
/// and the key's `typeof` (returned: nft prints it for a named set, not for an anonymous one);
/// a comment or anything else is not rendered.
fn userdata(mut value: &[u8]) -> Rendered<bool> {
    let mut typed = false;
    while !value.is_empty() {
        let (&kind, rest) = value.split_first().ok_or_else(|| unrendered(line!()))?;
        let (&length, rest) = rest.split_first().ok_or_else(|| unrendered(line!()))?;
        if rest.len() < length as usize || !matches!(kind, 0 | 2 | 3) {
            return Err(unrendered(line!()));
        }
        typed |= kind == 3;
        value = &rest[length as usize..];
    }
    Ok(typed)
}

/// A rule's comment from its userdata (the only userdata rendered).
fn rule_comment(mut value: &[u8]) -> Rendered<Option<String>> {
    let mut comment = None;
    while !value.is_empty() {
        let (&kind, rest) = value.split_first().ok_or_else(|| unrendered(line!()))?;
        let (&length, rest) = rest.split_first().ok_or_else(|| unrendered(line!()))?;
        let field = rest
            .get(..length as usize)
            .ok_or_else(|| unrendered(line!()))?;
        if kind != 0 || comment.is_some() {
            return Err(unrendered(line!()));
        }
        comment = Some(strings(field)?);
        value = &rest[length as usize..];
    }
    Ok(comment)
}

fn type_name(key_type: u32) -> Rendered<&'static str> {
    match key_type {
        7 => Ok("ipv4_addr"),
        8 => Ok("ipv6_addr"),
        13 => Ok("inet_service"),
        _ => Err(unrendered(line!())),
    }
}

/// The elements of an anonymous set (non-interval: each one key), as key bytes.
fn elements(
    socket: &mut Socket,
    table: &Table,
    set: &Set,
    id: u16,
) -> Rendered<Option<Vec<Vec<u8>>>> {
    let mut request = Vec::new();
    push_attribute(&mut request, 1, &super::nul_terminated(&table.name));
    push_attribute(&mut request, 2, &super::nul_terminated(&set.name));
    let Some(payloads) = socket.dump_with_ids(NFT_MSG_GETSETELEM, table.family, &request)? else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for (answer, payload) in &payloads {
        if *answer != id {
            return Ok(None);
        }
        let (_, payload) = split_family(payload)?;
        for attribute in attributes(payload) {
            let (kind, list) = attribute?;
            match kind {
                1 | 2 => continue,
                3 => {}
                _ => return Err(unrendered(line!())),
            }
            for element in attributes(list) {
                let (kind, element) = element?;
                if kind != 1 {
                    return Err(unrendered(line!()));
                }
                let mut key = None;
                for field in attributes(element) {
                    let (kind, value) = field?;
                    match kind {
                        1 => key = super::data_value(value)?.map(<[u8]>::to_vec),
                        3 if be32(value)? == 0 => {}
                        _ => return Err(unrendered(line!())),
                    }
                }
                let key = key.ok_or_else(|| unrendered(line!()))?;
                if key.len() != set.key_len as usize {
                    return Err(unrendered(line!()));
                }
                keys.push(key);
            }
        }
    }
    // nft sorts a set's elements by value before printing them.
    keys.sort();
    Ok(Some(keys))
}

/// One kernel expression, as far as it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expression {
    Meta {
        key: u32,
        register: u32,
    },
    Ct {
        register: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        register: u32,
    },
    Bitwise {
        register: u32,
        mask: Vec<u8>,
    },
    Cmp {
        register: u32,
        op: u32,
        data: Vec<u8>,
    },
    Lookup {
        register: u32,
        set: String,
        invert: bool,
    },
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
}

fn decode_expressions(list: &[u8]) -> Rendered<Vec<Expression>> {
    let mut expressions = Vec::new();
    for element in attributes(list) {
        let (kind, element) = element?;
        if kind != 1 {
            return Err(unrendered(line!()));
        }
        let (mut name, mut data) = (None, None);
        for field in attributes(element) {
            let (kind, value) = field?;
            match kind {
                1 => name = Some(strings(value)?),
                2 => data = Some(value),
                _ => return Err(unrendered(line!())),
            }
        }
        let fields = by_type(data.unwrap_or_default())?;
        let get = |kind: u16| {
            fields
                .get(&kind)
                .copied()
                .ok_or_else(|| unrendered(line!()))
        };
        let only = |allowed: &[u16]| {
            if fields.keys().all(|kind| allowed.contains(kind)) {
                Ok(())
            } else {
                Err(unrendered(line!()))
            }
        };
        let expression = match name.as_deref().ok_or_else(|| unrendered(line!()))? {
            "meta" => {
                only(&[1, 2])?;
                Expression::Meta {
                    register: be32(get(1)?)?,
                    key: be32(get(2)?)?,
                }
            }
            "ct" => {
                only(&[1, 2])?;
                if be32(get(2)?)? != 0 {
                    return Err(unrendered(line!()));
                }
                Expression::Ct {
                    register: be32(get(1)?)?,
                }
            }
            "payload" => {
                only(&[1, 2, 3, 4])?;
                Expression::Payload {
                    register: be32(get(1)?)?,
                    base: be32(get(2)?)?,
                    offset: be32(get(3)?)?,
                    len: be32(get(4)?)?,
                }
            }
            "bitwise" => {
                only(&[1, 2, 3, 4, 5, 6])?;
                let register = be32(get(1)?)?;
                let len = be32(get(3)?)? as usize;
                let mask = super::data_value(get(4)?)?
                    .ok_or_else(|| unrendered(line!()))?
                    .to_vec();
                let xor = super::data_value(get(5)?)?.ok_or_else(|| unrendered(line!()))?;
                let boolean = fields.get(&6).map(|op| be32(op)).transpose()?.unwrap_or(0) == 0;
                if be32(get(2)?)? != register
                    || !boolean
                    || mask.len() != len
                    || xor.len() != len
                    || xor.iter().any(|byte| *byte != 0)
                {
                    return Err(unrendered(line!()));
                }
                Expression::Bitwise { register, mask }
            }
            "cmp" => {
                only(&[1, 2, 3])?;
                Expression::Cmp {
                    register: be32(get(1)?)?,
                    op: be32(get(2)?)?,
                    data: super::data_value(get(3)?)?
                        .ok_or_else(|| unrendered(line!()))?
                        .to_vec(),
                }
            }
            "lookup" => {
                only(&[1, 2, 4, 5])?;
                let flags = fields.get(&5).map(|op| be32(op)).transpose()?.unwrap_or(0);
                if flags & !1 != 0 {
                    return Err(unrendered(line!()));
                }
                Expression::Lookup {
                    set: strings(get(1)?)?,
                    register: be32(get(2)?)?,
                    invert: flags & 1 != 0,
                }
            }
            "immediate" => {
                only(&[1, 2])?;
                if be32(get(1)?)? != 0 {
                    return Err(unrendered(line!()));
                }
                let data = by_type(get(2)?)?;
                if data.len() != 1 {
                    return Err(unrendered(line!()));
                }
                let verdict = by_type(data.get(&2).ok_or_else(|| unrendered(line!()))?)?;
                let code = be32(verdict.get(&1).ok_or_else(|| unrendered(line!()))?)? as i32;
                let chain = verdict.get(&2).map(|chain| strings(chain)).transpose()?;
                if verdict.keys().any(|kind| !matches!(kind, 1 | 2)) {
                    return Err(unrendered(line!()));
                }
                Expression::Verdict { code, chain }
            }
            "counter" => {
                only(&[1, 2, 3])?;
                Expression::Counter {
                    bytes: be64(get(1)?)?,
                    packets: be64(get(2)?)?,
                }
            }
            _ => return Err(unrendered(line!())),
        };
        expressions.push(expression);
    }
    Ok(expressions)
}

/// The attributes of `data` by type (each at most once).
fn by_type(data: &[u8]) -> Rendered<BTreeMap<u16, &[u8]>> {
    let mut fields = BTreeMap::new();
    for attribute in attributes(data) {
        let (kind, value) = attribute?;
        if fields.insert(kind, value).is_some() {
            return Err(unrendered(line!()));
        }
    }
    Ok(fields)
}

/// The protocol names nft prints (glibc's `getprotobynumber` on /etc/protocols), for the
/// numbers rendered: a protocol missing or named otherwise there is not rendered.
/// The protocol names of `/etc/protocols`, read when a rule first needs one, once a process
/// (nft itself reads the file at every run, but it changes only with the netbase package).
struct Protocols;

impl Protocols {
    fn names() -> &'static BTreeMap<u8, String> {
        static NAMES: std::sync::OnceLock<BTreeMap<u8, String>> = std::sync::OnceLock::new();
        NAMES.get_or_init(Protocols::read)
    }

    fn read() -> BTreeMap<u8, String> {
        let mut names = BTreeMap::new();
        let text = std::fs::read_to_string("/etc/protocols").unwrap_or_default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            if let (Some(name), Some(Ok(number))) = (words.next(), words.next().map(str::parse)) {
                names.entry(number).or_insert_with(|| name.to_owned());
            }
        }
        names
    }

    fn name(&self, number: u8) -> Rendered<Value> {
        let expected = match number {
            1 => "icmp",
            6 => "tcp",
            17 => "udp",
            58 => "ipv6-icmp",
            _ => return Err(unrendered(line!())),
        };
        if Protocols::names().get(&number).map(String::as_str) != Some(expected) {
            return Err(unrendered(line!()));
        }
        Ok(json!(expected))
    }
}

struct Context<'a> {
    family: u8,
    table: &'a Table,
    anonymous: &'a BTreeMap<(usize, String), Vec<Vec<u8>>>,
    protocols: &'a Protocols,
}

/// What a register was loaded with, as nft names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Meta(u32),
    CtState,
    /// A network or transport header field: (protocol, field, full length in bytes).
    Field(&'static str, &'static str, u32),
}

/// A match before it is rendered: what is compared, how, and with what.
enum Right<'a> {
    Value(&'a [u8]),
    Masked(&'a [u8], &'a [u8]),
    Set(&'a str),
}

const META_IIF: u32 = 4;
const META_IIFNAME: u32 = 6;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;

impl Context<'_> {
    fn statements(&self, expressions: &[Expression]) -> Rendered<Vec<Value>> {
        let mut statements = Vec::new();
        // The network protocol (inet: from a hidden `meta nfproto`) and the transport protocol
        // (a hidden `meta l4proto`) header fields are read as.
        let mut network: Option<&'static str> = match self.family {
            2 => Some("ip"),
            10 => Some("ip6"),
            _ => None,
        };
        let mut transport: Option<&'static str> = None;
        let mut index = 0;
        while index < expressions.len() {
            match &expressions[index] {
                Expression::Counter { packets, bytes } => {
                    statements.push(json!({"counter": {"packets": packets, "bytes": bytes}}));
                    index += 1;
                }
                Expression::Verdict { code, chain } => {
                    statements.push(match (code, chain) {
                        (1, None) => json!({"accept": null}),
                        (0, None) => json!({"drop": null}),
                        (-5, None) => json!({"return": null}),
                        (-3, Some(chain)) => json!({"jump": {"target": chain}}),
                        (-4, Some(chain)) => json!({"goto": {"target": chain}}),
                        _ => return Err(unrendered(line!())),
                    });
                    index += 1;
                }
                load => {
                    let (left, register) = match load {
                        Expression::Meta { key, register } => (Left::Meta(*key), *register),
                        Expression::Ct { register } => (Left::CtState, *register),
                        Expression::Payload {
                            base,
                            offset,
                            len,
                            register,
                        } => (
                            self.field(*base, *offset, *len, network, transport)?,
                            *register,
                        ),
                        _ => return Err(unrendered(line!())),
                    };
                    let (right, op, used) = match &expressions[index + 1..] {
                        [
                            Expression::Bitwise {
                                register: masked,
                                mask,
                            },
                            Expression::Cmp {
                                register: compared,
                                op,
                                data,
                            },
                            ..,
                        ] if *masked == register && *compared == register => {
                            (Right::Masked(mask, data), *op, 3)
                        }
                        [
                            Expression::Cmp {
                                register: compared,
                                op,
                                data,
                            },
                            ..,
                        ] if *compared == register => (Right::Value(data), *op, 2),
                        [
                            Expression::Lookup {
                                register: looked,
                                set,
                                invert,
                            },
                            ..,
                        ] if *looked == register => (Right::Set(set), u32::from(*invert), 2),
                        _ => return Err(unrendered(line!())),
                    };
                    index += used;
                    // The dependencies nft hides: followed by the header match they allow.
                    if let (Left::Meta(key), Right::Value(data), 0) = (left, &right, op) {
                        let next = expressions.get(index);
                        let next_base = match next {
                            Some(Expression::Payload { base, .. }) => Some(*base),
                            _ => None,
                        };
                        if key == META_NFPROTO && self.family == 1 && next_base == Some(1) {
                            network = Some(match data {
                                [2] => "ip",
                                [10] => "ip6",
                                _ => return Err(unrendered(line!())),
                            });
                            continue;
                        }
                        if key == META_L4PROTO && next_base == Some(2) {
                            transport = Some(match data {
                                [6] => "tcp",
                                [17] => "udp",
                                _ => return Err(unrendered(line!())),
                            });
                            continue;
                        }
                    }
                    statements.push(self.comparison(left, right, op)?);
                }
            }
        }
        Ok(statements)
    }

    /// The header field a payload load reads.
    fn field(
        &self,
        base: u32,
        offset: u32,
        len: u32,
        network: Option<&'static str>,
        transport: Option<&'static str>,
    ) -> Rendered<Left> {
        // A byte-aligned prefix loads fewer bytes than the field (`ip saddr 192.0.2.0/24`
        // loads three); the comparison renders it as a prefix.
        let (protocol, field, full) = match (base, network, transport, offset) {
            (1, Some("ip"), _, 9) => ("ip", "protocol", 1),
            (1, Some("ip"), _, 12) => ("ip", "saddr", 4),
            (1, Some("ip"), _, 16) => ("ip", "daddr", 4),
            (1, Some("ip6"), _, 6) => ("ip6", "nexthdr", 1),
            (1, Some("ip6"), _, 8) => ("ip6", "saddr", 16),
            (1, Some("ip6"), _, 24) => ("ip6", "daddr", 16),
            (2, _, Some(protocol), 0) => (protocol, "sport", 2),
            (2, _, Some(protocol), 2) => (protocol, "dport", 2),
            _ => return Err(unrendered(line!())),
        };
        let address = matches!(field, "saddr" | "daddr");
        if len == full || (address && len > 0 && len < full) {
            Ok(Left::Field(protocol, field, len))
        } else {
            Err(unrendered(line!()))
        }
    }

    fn comparison(&self, left: Left, right: Right<'_>, op: u32) -> Rendered<Value> {
        let left_json = match left {
            Left::Meta(key) => json!({"meta": {"key": match key {
                META_IIF => "iif",
                META_IIFNAME => "iifname",
                META_NFPROTO => "nfproto",
                META_L4PROTO => "l4proto",
                _ => return Err(unrendered(line!())),
            }}}),
            Left::CtState => json!({"ct": {"key": "state"}}),
            Left::Field(protocol, field, _) => {
                json!({"payload": {"protocol": protocol, "field": field}})
            }
        };
        let op_text = match op {
            0 => "==",
            1 => "!=",
            _ => return Err(unrendered(line!())),
        };
        let (op_text, right_json) = match (left, right) {
            // `ct state established,related`: a mask tested for any bit.
            (Left::CtState, Right::Masked(mask, data)) => {
                if op != 1 || data.iter().any(|byte| *byte != 0) {
                    return Err(unrendered(line!()));
                }
                let bits = u32::from_ne_bytes(mask.try_into().map_err(|_| unrendered(line!()))?);
                let names: Vec<&str> = [
                    (1, "invalid"),
                    (2, "established"),
                    (4, "related"),
                    (8, "new"),
                    (64, "untracked"),
                ]
                .iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, name)| *name)
                .collect();
                if bits & !(1 | 2 | 4 | 8 | 64) != 0 || names.is_empty() {
                    return Err(unrendered(line!()));
                }
                let right = if names.len() == 1 {
                    json!(names[0])
                } else {
                    json!(names)
                };
                ("in", right)
            }
            (Left::Meta(key), Right::Value(data)) => (op_text, self.meta_value(key, data)?),
            (Left::Field(protocol, field, len), Right::Value(data)) => {
                (op_text, self.field_value(protocol, field, len, data)?)
            }
            (Left::Field(protocol, field, full), Right::Masked(mask, data)) => {
                // An address prefix that is not byte-aligned.
                if !matches!(field, "saddr" | "daddr") || mask.len() != data.len() {
                    return Err(unrendered(line!()));
                }
                let length = prefix_length(mask).ok_or_else(|| unrendered(line!()))?;
                let expected = if protocol == "ip" { 4 } else { 16 };
                if full != expected || length == 0 || length as usize >= mask.len() * 8 {
                    return Err(unrendered(line!()));
                }
                (
                    op_text,
                    json!({"prefix": {"addr": address(data)?, "len": length}}),
                )
            }
            (Left::Field(protocol, field, len), Right::Set(set)) => {
                (op_text, self.set_value(protocol, field, len, set)?)
            }
            _ => return Err(unrendered(line!())),
        };
        Ok(json!({"match": {"op": op_text, "left": left_json, "right": right_json}}))
    }

    fn meta_value(&self, key: u32, data: &[u8]) -> Rendered<Value> {
        match (key, data) {
            (META_IIF, [1, 0, 0, 0]) if cfg!(target_endian = "little") => Ok(json!("lo")),
            (META_IIFNAME, name) if name.len() == 16 => {
                let end = name
                    .iter()
                    .position(|byte| *byte == 0)
                    .ok_or_else(|| unrendered(line!()))?;
                let (text, rest) = name.split_at(end);
                if end == 0
                    || rest.iter().any(|byte| *byte != 0)
                    || !text
                        .iter()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(byte))
                {
                    return Err(unrendered(line!()));
                }
                Ok(json!(String::from_utf8_lossy(text)))
            }
            (META_NFPROTO, [2]) => Ok(json!("ipv4")),
            (META_NFPROTO, [10]) => Ok(json!("ipv6")),
            (META_L4PROTO, [number]) => self.protocols.name(*number),
            _ => Err(unrendered(line!())),
        }
    }

    fn field_value(&self, protocol: &str, field: &str, len: u32, data: &[u8]) -> Rendered<Value> {
        if data.len() != len as usize {
            return Err(unrendered(line!()));
        }
        match field {
            "protocol" | "nexthdr" => self.protocols.name(data[0]),
            "sport" | "dport" => Ok(json!(u16::from_be_bytes([data[0], data[1]]))),
            _ => {
                let full = if protocol == "ip" { 4 } else { 16 };
                if len == full {
                    return address(data);
                }
                // A byte-aligned prefix.
                let mut padded = data.to_vec();
                padded.resize(full as usize, 0);
                Ok(json!({"prefix": {"addr": address(&padded)?, "len": len * 8}}))
            }
        }
    }

    fn set_value(&self, protocol: &str, field: &str, len: u32, set: &str) -> Rendered<Value> {
        let declared = self
            .table
            .sets
            .iter()
            .find(|declared| declared.name == set)
            .ok_or_else(|| unrendered(line!()))?;
        let expected_type = match (protocol, field, len) {
            ("tcp" | "udp", "sport" | "dport", 2) => 13,
            ("ip", "saddr" | "daddr", 4) => 7,
            ("ip6", "saddr" | "daddr", 16) => 8,
            _ => return Err(unrendered(line!())),
        };
        if declared.key_type != expected_type {
            return Err(unrendered(line!()));
        }
        if !declared.anonymous {
            return Ok(json!(format!("@{set}")));
        }
        // Anonymous sets of ports only (an address set's elements are intervals).
        if expected_type != 13 || declared.interval {
            return Err(unrendered(line!()));
        }
        let elements = self
            .anonymous
            .get(&(self.table.index(), set.to_owned()))
            .ok_or_else(|| unrendered(line!()))?;
        if elements.len() < 2 {
            return Err(unrendered(line!()));
        }
        let ports: Vec<u16> = elements
            .iter()
            .map(|key| u16::from_be_bytes([key[0], key[1]]))
            .collect();
        Ok(json!({ "set": ports }))
    }
}

/// The length of a contiguous prefix mask.
fn prefix_length(mask: &[u8]) -> Option<u32> {
    let bits: u32 = mask.iter().map(|byte| byte.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |bit| byte >> bit & 1))
        .enumerate()
        .all(|(index, bit)| (bit == 1) == ((index as u32) < bits));
    contiguous.then_some(bits)
}

/// An address as nft prints it; IPv6 addresses glibc prints with an embedded IPv4 part (the
/// first 80 bits zero) are not rendered.
fn address(data: &[u8]) -> Rendered<Value> {
    match data.len() {
        4 => Ok(json!(
            Ipv4Addr::from(<[u8; 4]>::try_from(data).map_err(|_| unrendered(line!()))?).to_string()
        )),
        16 => {
            let address =
                Ipv6Addr::from(<[u8; 16]>::try_from(data).map_err(|_| unrendered(line!()))?);
            if address.segments()[..5].iter().all(|segment| *segment == 0) {
                return Err(unrendered(line!()));
            }
            Ok(json!(address.to_string()))
        }
        _ => Err(unrendered(line!())),
    }
}

/// Not rendered (at this line of the source).
fn unrendered(line: u32) -> Unrendered {
    if cfg!(debug_assertions) && std::env::var_os("CF_NETLINK_DEBUG").is_some() {
        eprintln!("unrendered at ruleset.rs:{line}");
    }
    Unrendered
}
