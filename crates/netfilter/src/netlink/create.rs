//! Creating a table with one input base chain, interval sets of prefixes and rules in one
//! nf_tables transaction over netlink: the messages nft 1.0.6 sends for the same text batch
//! (`add table … { comment … }`, `add chain … { type filter hook input priority filter;
//! comment … }`, `add set … { type ipv4_addr; flags interval; elements = { … } }`,
//! `insert rule …`), attribute for attribute, so that the kernel holds byte for byte what
//! `nft -f` of that batch makes and nft lists and parses it as its own (recorded with
//! `strace -e trace=sendmsg -e write=3 nft -f` in a namespace; the tests below hold the bytes).
//!
//! What differs from nft's messages is only what the kernel does not keep: every message asks
//! for an ack, the rules also for an echo (`NLM_F_ECHO`: the kernel sends each new rule back
//! with the handle it gave it), and the batch begin carries `NFNL_BATCH_GENID`, so the kernel
//! refuses the whole transaction if anything committed since the caller's reading.
//!
//! The rules are the few shapes a caller of [`Creation`] describes with [`NewRule`]: a source
//! address in one of the new sets (with nft's `meta nfproto` dependency), `iifname != "lo"`,
//! TCP destination ports (nft's `meta l4proto` dependency; one port is a `cmp`, several an
//! anonymous constant set `__set%d`), accept or drop, and a comment.

use ipnet::IpNet;

use cf_allowlist_backend::Family;

use super::write::{
    Batch, ELEMENTS_PER_MESSAGE_BYTES, NFT_MSG_NEWSETELEM, NLA_F_NESTED, NLM_F_CREATE, elements,
    send,
};
use super::{
    NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NLM_F_ACK,
    NetlinkError, Socket, attributes, nul_terminated, push_attribute, writable,
};

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NLM_F_ECHO: u16 = 0x8;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NF_INET_LOCAL_IN: u32 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const IPPROTO_TCP: u8 = 6;
const IFNAMSIZ: usize = 16;
/// nft's datatype numbers: `ipv4_addr`, `ipv6_addr`, `inet_service`.
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
/// nft's `BYTEORDER_BIG_ENDIAN`, in a set's `NFTNL_UDATA_SET_KEYBYTEORDER`.
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// libnftnl's longest comment, its NUL included.
const COMMENT_MAX: usize = 128;
/// The kernel's longest table, chain or set name, its NUL included.
const NAME_MAX: usize = 256;

/// Everything one fresh table gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creation {
    /// The `inet` table.
    pub table: String,
    /// The table's comment when the table is created; `None` when it exists (the host's own
    /// table: nft's batch then has no `add table`).
    pub table_comment: Option<String>,
    /// The chain our rules go to: when created, a base chain on the input hook (type filter,
    /// priority filter, no policy: accept).
    pub chain: String,
    /// The chain's comment when the chain is created; `None` when it exists (our rules are
    /// then inserted at its top, before the rules already in it, as nft's `insert rule`).
    pub chain_comment: Option<String>,
    /// The named interval sets, created in this order.
    pub sets: Vec<NewSet>,
    /// The rules, each inserted at the top of the chain as nft's `insert rule` does (so the
    /// last one given ends first), in this order.
    pub rules: Vec<NewRule>,
}

/// A named interval set of prefixes of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSet {
    /// Its name.
    pub name: String,
    /// `ipv4_addr` or `ipv6_addr`.
    pub family: Family,
    /// Its elements, in order, none overlapping.
    pub elements: Vec<IpNet>,
}

/// `accept` or `drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
}

/// `[ip|ip6 saddr @set] [iifname != "lo"] tcp dport { ports } verdict comment "…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    /// The set of [`Creation::sets`] the source address must be in, by name, and its family.
    pub source_set: Option<(Family, String)>,
    /// Whether the rule excludes loopback.
    pub not_loopback: bool,
    /// The TCP destination ports, ascending, at least one.
    pub ports: Vec<u16>,
    /// The verdict.
    pub verdict: Verdict,
    /// The comment.
    pub comment: String,
}

/// Whether [`create`] can write `creation` as nft would: names and comments nft accepts, ports
/// ascending and not empty, sources naming a set of the creation of their family, and every
/// prefix one with a start and an end element ([`writable`]). Otherwise the caller uses nft.
pub fn creatable(creation: &Creation) -> bool {
    let name_ok = |name: &str| !name.is_empty() && name.len() < NAME_MAX && !name.contains('\0');
    let comment_ok = |comment: &str| comment.len() < COMMENT_MAX && !comment.contains('\0');
    name_ok(&creation.table)
        && name_ok(&creation.chain)
        && creation.table_comment.as_deref().is_none_or(comment_ok)
        && creation.chain_comment.as_deref().is_none_or(comment_ok)
        // A table cannot exist inside a chain that is created: nft's batch would differ.
        && (creation.table_comment.is_none() || creation.chain_comment.is_some())
        && creation.sets.iter().all(|set| {
            name_ok(&set.name)
                && !set.name.starts_with("__")
                && set.elements.iter().all(|net| {
                    writable(net)
                        && matches!(
                            (net, set.family),
                            (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
                        )
                })
                && set
                    .elements
                    .windows(2)
                    .all(|pair| pair[0].broadcast() < pair[1].network())
        })
        && creation.rules.iter().all(|rule| {
            comment_ok(&rule.comment)
                && !rule.ports.is_empty()
                && rule.ports.windows(2).all(|pair| pair[0] < pair[1])
                && rule.source_set.as_ref().is_none_or(|(family, name)| {
                    creation
                        .sets
                        .iter()
                        .any(|set| set.name == *name && set.family == *family)
                })
        })
}

/// Writes `creation` in one transaction, refused by the kernel unless the ruleset is still at
/// `generation` (`Err(NetlinkError::GenerationMoved)`: nothing was written). Returns the
/// handles the kernel gave the rules, in [`Creation::rules`]' order.
pub fn create(generation: u32, creation: &Creation) -> Result<Vec<u64>, NetlinkError> {
    if !creatable(creation) {
        return Err(NetlinkError::Malformed(
            "a creation nft would write differently",
        ));
    }
    let mut socket = Socket::open()?;
    let (batch, rules) = encode(generation, creation, socket.sequence + 1);
    let (answers, echoes) = send(&mut socket, &batch)?;
    outcome(&batch, &answers)?;
    rules
        .iter()
        .map(|sequence| {
            echoes
                .iter()
                .filter(|(echoed, kind, _)| {
                    echoed == sequence && *kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
                })
                .find_map(|(_, _, payload)| rule_handle(payload))
                .ok_or(NetlinkError::Malformed(
                    "the kernel did not echo a new rule",
                ))
        })
        .collect()
}

/// What the kernel's answers say, a refusal naming the object refused.
fn outcome(batch: &Batch, answers: &[(u32, i32)]) -> Result<(), NetlinkError> {
    batch.outcome(answers).map_err(|error| match error {
        NetlinkError::Refused { set, errno } => NetlinkError::CreationRefused {
            object: if set == "(the batch)" {
                "the batch".to_owned()
            } else {
                set
            },
            errno,
        },
        other => other,
    })
}

/// `NFTA_RULE_HANDLE` of an echoed rule.
fn rule_handle(payload: &[u8]) -> Option<u64> {
    attributes(payload)
        .filter_map(Result::ok)
        .find(|(kind, value)| *kind == NFTA_RULE_HANDLE && value.len() == 8)
        .map(|(_, value)| u64::from_be_bytes(value.try_into().expect("8 bytes")))
}

/// The batch, and the sequence numbers of the rules' messages in [`Creation::rules`]' order.
fn encode(generation: u32, creation: &Creation, first_sequence: u32) -> (Batch, Vec<u32>) {
    let mut encoder = Encoder {
        batch: Batch::begin(generation, first_sequence),
        table: nul_terminated(&creation.table),
        set_ids: 0,
    };
    if let Some(table_comment) = &creation.table_comment {
        let mut table = Vec::new();
        push_attribute(&mut table, NFTA_TABLE_NAME, &encoder.table);
        push_attribute(&mut table, NFTA_TABLE_FLAGS, &0u32.to_be_bytes());
        push_attribute(
            &mut table,
            NFTA_TABLE_USERDATA,
            &comment_userdata(table_comment),
        );
        // nft's `add table` asks for no NLM_F_CREATE.
        encoder.message(
            NFT_MSG_NEWTABLE,
            0,
            &table,
            format!("table {}", creation.table),
        );
    }

    if let Some(chain_comment) = &creation.chain_comment {
        let mut chain = Vec::new();
        push_attribute(&mut chain, NFTA_CHAIN_TABLE, &encoder.table);
        push_attribute(
            &mut chain,
            NFTA_CHAIN_NAME,
            &nul_terminated(&creation.chain),
        );
        push_attribute(&mut chain, NFTA_CHAIN_TYPE, b"filter\0");
        let mut hook = Vec::new();
        push_attribute(
            &mut hook,
            NFTA_HOOK_HOOKNUM,
            &NF_INET_LOCAL_IN.to_be_bytes(),
        );
        push_attribute(&mut hook, NFTA_HOOK_PRIORITY, &0u32.to_be_bytes());
        push_attribute(&mut chain, NLA_F_NESTED | NFTA_CHAIN_HOOK, &hook);
        push_attribute(
            &mut chain,
            NFTA_CHAIN_USERDATA,
            &comment_userdata(chain_comment),
        );
        encoder.message(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            &chain,
            format!("chain {}", creation.chain),
        );
    }

    let mut named_ids = Vec::new();
    for set in &creation.sets {
        let (key_type, key_len) = match set.family {
            Family::V4 => (TYPE_IPV4_ADDR, 4u32),
            Family::V6 => (TYPE_IPV6_ADDR, 16u32),
        };
        let mut userdata = Vec::new();
        push_userdata(&mut userdata, 0, &BYTEORDER_BIG_ENDIAN.to_ne_bytes());
        let id = encoder.new_set(
            &nul_terminated(&set.name),
            NFT_SET_INTERVAL,
            key_type,
            key_len,
            None,
            &userdata,
        );
        named_ids.push((set.name.clone(), id));
        let listed = elements(&set.elements, true);
        encoder.elements(
            &nul_terminated(&set.name),
            id,
            &listed,
            &format!("the elements of set {}", set.name),
        );
    }

    let mut rules = Vec::new();
    for rule in &creation.rules {
        let mut expressions = Vec::new();
        if let Some((family, name)) = &rule.source_set {
            let (nfproto, offset, length) = match family {
                Family::V4 => (2u8, 12u32, 4u32),
                Family::V6 => (10u8, 8, 16),
            };
            expressions.push(meta(NFT_META_NFPROTO));
            expressions.push(cmp(NFT_CMP_EQ, &[nfproto]));
            expressions.push(payload(NFT_PAYLOAD_NETWORK_HEADER, offset, length));
            let id = named_ids
                .iter()
                .find(|(named, _)| named == name)
                .map_or(0, |(_, id)| *id);
            expressions.push(lookup(&nul_terminated(name), id));
        }
        if rule.not_loopback {
            let mut name = [0u8; IFNAMSIZ];
            name[..2].copy_from_slice(b"lo");
            expressions.push(meta(NFT_META_IIFNAME));
            expressions.push(cmp(NFT_CMP_NEQ, &name));
        }
        expressions.push(meta(NFT_META_L4PROTO));
        expressions.push(cmp(NFT_CMP_EQ, &[IPPROTO_TCP]));
        expressions.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
        if let [port] = rule.ports[..] {
            expressions.push(cmp(NFT_CMP_EQ, &port.to_be_bytes()));
        } else {
            // The anonymous set of the ports, as nft declares it for `tcp dport { … }`: its
            // key's byte order and its `typeof tcp dport` in the userdata.
            let mut typeof_data = Vec::new();
            push_userdata(&mut typeof_data, 0, &8u32.to_ne_bytes());
            push_userdata(&mut typeof_data, 1, &2u32.to_ne_bytes());
            let mut typeof_ = Vec::new();
            push_userdata(&mut typeof_, 0, &7u32.to_ne_bytes());
            push_userdata(&mut typeof_, 1, &typeof_data);
            let mut userdata = Vec::new();
            push_userdata(&mut userdata, 0, &BYTEORDER_BIG_ENDIAN.to_ne_bytes());
            push_userdata(&mut userdata, 3, &typeof_);
            let id = encoder.new_set(
                b"__set%d\0",
                NFT_SET_ANONYMOUS | NFT_SET_CONSTANT,
                TYPE_INET_SERVICE,
                2,
                Some(rule.ports.len() as u32),
                &userdata,
            );
            let listed: Vec<Vec<u8>> = rule
                .ports
                .iter()
                .map(|port| {
                    let mut value = Vec::new();
                    push_attribute(&mut value, NFTA_DATA_VALUE, &port.to_be_bytes());
                    let mut key = Vec::new();
                    push_attribute(&mut key, NLA_F_NESTED | NFTA_SET_ELEM_KEY, &value);
                    let mut element = Vec::new();
                    push_attribute(&mut element, NLA_F_NESTED | NFTA_LIST_ELEM, &key);
                    element
                })
                .collect();
            encoder.elements(
                b"__set%d\0",
                id,
                &listed,
                &format!("the ports of rule {:?}", rule.comment),
            );
            expressions.push(lookup(b"__set%d\0", id));
        }
        let code = match rule.verdict {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        expressions.push(immediate_verdict(code));
        let mut attributes = Vec::new();
        push_attribute(&mut attributes, NFTA_RULE_TABLE, &encoder.table);
        push_attribute(
            &mut attributes,
            NFTA_RULE_CHAIN,
            &nul_terminated(&creation.chain),
        );
        push_attribute(
            &mut attributes,
            // Unlike set elements, libnftnl leaves expressions unnumbered (all `NFTA_LIST_ELEM`).
            NLA_F_NESTED | NFTA_RULE_EXPRESSIONS,
            &expressions.concat(),
        );
        push_attribute(
            &mut attributes,
            NFTA_RULE_USERDATA,
            &comment_userdata(&rule.comment),
        );
        rules.push(encoder.message(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_ECHO,
            &attributes,
            format!("rule {:?}", rule.comment),
        ));
    }
    encoder.batch.end();
    (encoder.batch, rules)
}

struct Encoder {
    batch: Batch,
    table: Vec<u8>,
    /// The last set id given (nft numbers the sets of a batch from 1).
    set_ids: u32,
}

impl Encoder {
    fn message(&mut self, kind: u16, flags: u16, attributes: &[u8], what: String) -> u32 {
        let sequence = self.batch.message(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags | NLM_F_ACK,
            NFPROTO_INET,
            0,
            attributes,
        );
        self.batch.acks.push((sequence, what));
        sequence
    }

    /// A `NFT_MSG_NEWSET`; returns the set's id in this batch.
    fn new_set(
        &mut self,
        name: &[u8],
        flags: u32,
        key_type: u32,
        key_len: u32,
        size: Option<u32>,
        userdata: &[u8],
    ) -> u32 {
        self.set_ids += 1;
        let id = self.set_ids;
        let mut attributes = Vec::new();
        push_attribute(&mut attributes, NFTA_SET_TABLE, &self.table);
        push_attribute(&mut attributes, NFTA_SET_NAME, name);
        push_attribute(&mut attributes, NFTA_SET_FLAGS, &flags.to_be_bytes());
        push_attribute(&mut attributes, NFTA_SET_KEY_TYPE, &key_type.to_be_bytes());
        push_attribute(&mut attributes, NFTA_SET_KEY_LEN, &key_len.to_be_bytes());
        push_attribute(&mut attributes, NFTA_SET_ID, &id.to_be_bytes());
        if let Some(size) = size {
            let mut desc = Vec::new();
            push_attribute(&mut desc, NFTA_SET_DESC_SIZE, &size.to_be_bytes());
            push_attribute(&mut attributes, NLA_F_NESTED | NFTA_SET_DESC, &desc);
        }
        push_attribute(&mut attributes, NFTA_SET_USERDATA, userdata);
        let what = format!(
            "set {}",
            String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name))
        );
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, &attributes, what);
        id
    }

    /// The `NFT_MSG_NEWSETELEM` messages of a new set's elements (none when it has none),
    /// split to fit the 16-bit attribute length, each list numbered from 1 as nft numbers it.
    fn elements(&mut self, set: &[u8], id: u32, listed: &[Vec<u8>], what: &str) {
        let mut start = 0;
        while start < listed.len() {
            let mut size = 0;
            let mut end = start;
            while end < listed.len()
                && (end == start || size + listed[end].len() <= ELEMENTS_PER_MESSAGE_BYTES)
            {
                size += listed[end].len();
                end += 1;
            }
            let mut attributes = Vec::new();
            push_attribute(&mut attributes, NFTA_SET_ELEM_LIST_TABLE, &self.table);
            push_attribute(&mut attributes, NFTA_SET_ELEM_LIST_SET, set);
            push_attribute(
                &mut attributes,
                NFTA_SET_ELEM_LIST_SET_ID,
                &id.to_be_bytes(),
            );
            push_attribute(
                &mut attributes,
                NLA_F_NESTED | NFTA_SET_ELEM_LIST_ELEMENTS,
                &numbered(&listed[start..end]),
            );
            self.message(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                &attributes,
                what.to_owned(),
            );
            start = end;
        }
    }
}

/// Nested attributes of type `NFTA_LIST_ELEM`, renumbered 1, 2, … as libnftnl numbers a list.
fn numbered(list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.iter().map(Vec::len).sum());
    for (index, item) in list.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(item);
        let number = ((index + 1) as u16) & 0x3fff;
        out[start + 2..start + 4].copy_from_slice(&(NLA_F_NESTED | number).to_ne_bytes());
    }
    out
}

/// libnftnl's userdata TLV: a one-byte type, a one-byte length, the value.
fn push_userdata(buffer: &mut Vec<u8>, kind: u8, value: &[u8]) {
    buffer.push(kind);
    buffer.push(value.len() as u8);
    buffer.extend_from_slice(value);
}

/// A table's, chain's or rule's userdata holding only its comment (type 0, NUL-terminated).
fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut userdata = Vec::new();
    push_userdata(&mut userdata, 0, &nul_terminated(comment));
    userdata
}

fn expression(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut fields = Vec::new();
    push_attribute(&mut fields, NFTA_EXPR_NAME, name);
    push_attribute(&mut fields, NLA_F_NESTED | NFTA_EXPR_DATA, data);
    let mut element = Vec::new();
    push_attribute(&mut element, NLA_F_NESTED | NFTA_LIST_ELEM, &fields);
    element
}

fn meta(key: u32) -> Vec<u8> {
    let mut data = Vec::new();
    push_attribute(&mut data, 2, &key.to_be_bytes()); // NFTA_META_KEY
    push_attribute(&mut data, 1, &NFT_REG_1.to_be_bytes()); // NFTA_META_DREG
    expression(b"meta\0", &data)
}

fn cmp(op: u32, value: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    push_attribute(&mut data, 1, &NFT_REG_1.to_be_bytes()); // NFTA_CMP_SREG
    push_attribute(&mut data, 2, &op.to_be_bytes()); // NFTA_CMP_OP
    let mut nested = Vec::new();
    push_attribute(&mut nested, NFTA_DATA_VALUE, value);
    push_attribute(&mut data, NLA_F_NESTED | 3, &nested); // NFTA_CMP_DATA
    expression(b"cmp\0", &data)
}

fn payload(base: u32, offset: u32, length: u32) -> Vec<u8> {
    let mut data = Vec::new();
    push_attribute(&mut data, 1, &NFT_REG_1.to_be_bytes()); // NFTA_PAYLOAD_DREG
    push_attribute(&mut data, 2, &base.to_be_bytes()); // NFTA_PAYLOAD_BASE
    push_attribute(&mut data, 3, &offset.to_be_bytes()); // NFTA_PAYLOAD_OFFSET
    push_attribute(&mut data, 4, &length.to_be_bytes()); // NFTA_PAYLOAD_LEN
    expression(b"payload\0", &data)
}

fn lookup(set: &[u8], id: u32) -> Vec<u8> {
    let mut data = Vec::new();
    push_attribute(&mut data, 2, &NFT_REG_1.to_be_bytes()); // NFTA_LOOKUP_SREG
    push_attribute(&mut data, 1, set); // NFTA_LOOKUP_SET
    push_attribute(&mut data, 4, &id.to_be_bytes()); // NFTA_LOOKUP_SET_ID
    expression(b"lookup\0", &data)
}

fn immediate_verdict(code: u32) -> Vec<u8> {
    let mut verdict = Vec::new();
    push_attribute(&mut verdict, 1, &code.to_be_bytes()); // NFTA_VERDICT_CODE
    let mut value = Vec::new();
    push_attribute(&mut value, NLA_F_NESTED | 2, &verdict); // NFTA_DATA_VERDICT
    let mut data = Vec::new();
    push_attribute(&mut data, 1, &NFT_REG_VERDICT.to_be_bytes()); // NFTA_IMMEDIATE_DREG
    push_attribute(&mut data, NLA_F_NESTED | 2, &value); // NFTA_IMMEDIATE_DATA
    expression(b"immediate\0", &data)
}

#[cfg(test)]
mod tests;
