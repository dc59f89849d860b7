//! Reading set elements straight from the kernel over netlink (the nftables backend's two
//! sets, and the address sets the shadowing analysis follows), and the ruleset's generation id.
//!
//! Why not `nft`: nft 1.0.6 fetches and rebuilds every interval of every set for any listing
//! that is not `nft -t list ruleset` (even `list chain` or `list tables`), which costs about
//! 0.8 s and 130 MiB at 100,000 elements (2–3 s on a loaded machine, measured). The kernel
//! dumps the same elements in a few milliseconds. So the backend reads the structure (tables,
//! chains, rules, set declarations) with the cheap terse listing and only the elements of our
//! own sets here. Writing is [`write`]'s: the element changes of our sets, in one batch.
//!
//! An interval set holds, per range, a start element and an end element (the first address
//! past the range, flagged `NFT_SET_ELEM_INTERVAL_END`), plus nft's leading zero end element.
//! Pairs are rebuilt after sorting by key; a range that is not exactly one prefix is counted as
//! an odd element, as the JSON reader did.
//!
//! The socket calls go through rustix's safe API (the workspace denies `unsafe`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

use cf_allowlist_backend::Family;

mod create;
mod ruleset;
mod write;
pub use create::{Creation, NewRule, NewSet, Verdict, creatable, create};
pub use ruleset::terse_listing;
pub use write::{SetEdit, edit_sets, writable};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_GETGEN: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const ENOENT: i32 = 2;

/// Why the kernel could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel answered with an error.
    #[error("the kernel refused to list set {set}: errno {errno}")]
    Kernel {
        /// The set asked for.
        set: String,
        /// The errno it answered.
        errno: i32,
    },
    /// An answer we could not read.
    #[error("unreadable netlink answer: {0}")]
    Malformed(&'static str),
    /// The set (or the ruleset) kept changing while it was read.
    #[error("{0} changed during every attempt to read it")]
    Interrupted(String),
    /// A write was refused because a transaction committed since the reading it was made
    /// from: nothing was written.
    #[error("the ruleset changed since it was read (its generation moved); nothing was written")]
    GenerationMoved,
    /// The kernel refused a write; the whole transaction was rolled back.
    #[error("the kernel refused the change to set {set}: {} (errno {errno})", errno_text(*errno))]
    Refused {
        /// The set the refused message edited.
        set: String,
        /// The errno it answered.
        errno: i32,
    },
    /// The kernel refused a creation ([`create`]); the whole transaction was rolled back.
    #[error("the kernel refused to create {object}: {} (errno {errno})", errno_text(*errno))]
    CreationRefused {
        /// What the refused message wrote (`table filter`, `set cf_allowlist_v4`, …).
        object: String,
        /// The errno it answered.
        errno: i32,
    },
    /// A prefix that has no start and end element pair (see [`writable`]).
    #[error("{0} cannot be written as a start and an end element")]
    Unwritable(IpNet),
}

/// An errno as a lowercase phrase (`no such file or directory`).
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

impl From<rustix::io::Errno> for NetlinkError {
    fn from(errno: rustix::io::Errno) -> NetlinkError {
        NetlinkError::Io(errno.into())
    }
}

/// The elements of one of our sets, as networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    /// The ranges that are exactly one prefix, in order.
    pub networks: Vec<IpNet>,
    /// Ranges that are not a prefix (written by someone else).
    pub odd: usize,
}

struct Socket {
    fd: rustix::fd::OwnedFd,
    sequence: u32,
}

impl Socket {
    fn open() -> Result<Socket, NetlinkError> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(netlink::NETFILTER),
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
        Ok(Socket { fd, sequence: 0 })
    }

    /// Sends one request and returns the payloads (after the nfgenmsg header) of every answer
    /// message up to `NLMSG_DONE` (dumps) or the ack; and whether the dump was interrupted.
    fn ask(
        &mut self,
        message_type: u16,
        flags: u16,
        protocol_family: u8,
        attributes: &[u8],
        set: &str,
    ) -> Result<(Vec<Vec<u8>>, bool), NetlinkError> {
        let (bodies, interrupted) =
            self.ask_whole(message_type, flags, protocol_family, attributes, set)?;
        let payloads = bodies
            .into_iter()
            .map(|mut body| {
                body.drain(..4);
                body
            })
            .collect();
        Ok((payloads, interrupted))
    }

    /// [`Socket::ask`], each answer whole: its nfgenmsg header (family, version, resource id:
    /// the generation a dump was read at) and then its attributes.
    fn ask_whole(
        &mut self,
        message_type: u16,
        flags: u16,
        protocol_family: u8,
        attributes: &[u8],
        set: &str,
    ) -> Result<(Vec<Vec<u8>>, bool), NetlinkError> {
        self.sequence += 1;
        let length = 16 + 4 + attributes.len();
        let mut request = Vec::with_capacity(length);
        request.extend_from_slice(&(length as u32).to_ne_bytes());
        request.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | message_type).to_ne_bytes());
        request.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        request.extend_from_slice(&self.sequence.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(&[protocol_family, 0, 0, 0]);
        request.extend_from_slice(attributes);
        rustix::net::sendto(
            &self.fd,
            &request,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        let mut payloads = Vec::new();
        let mut interrupted = false;
        let mut buffer = ReceiveBuffer::take();
        loop {
            let received = buffer.receive(&self.fd, RecvFlags::TRUNC)?;
            for message in messages(received) {
                let Message {
                    kind,
                    flags: message_flags,
                    sequence,
                    body,
                } = message?;
                if sequence != self.sequence {
                    continue;
                }
                interrupted |= message_flags & NLM_F_DUMP_INTR != 0;
                match kind {
                    NLMSG_DONE => return Ok((payloads, interrupted)),
                    NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
                            .ok_or(NetlinkError::Malformed("a short error message"))?;
                        if code == 0 {
                            return Ok((payloads, interrupted));
                        }
                        return Err(NetlinkError::Kernel {
                            set: set.to_owned(),
                            errno: -code,
                        });
                    }
                    _ => {
                        if body.len() < 4 {
                            return Err(NetlinkError::Malformed("a message without nfgenmsg"));
                        }
                        payloads.push(body.to_vec());
                        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                            return Ok((payloads, interrupted));
                        }
                    }
                }
            }
        }
    }
}

/// The calling thread's buffer for what the kernel answers, kept from one request to the next
/// (given back on drop): a fresh one per request cost its zeroing and page faults each time,
/// a tenth of a 22-range sync's CPU.
pub(crate) struct ReceiveBuffer(Vec<u8>);

thread_local! {
    static RECEIVE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl ReceiveBuffer {
    /// Room for one `recv`: an error echoes the refused message, up to 64 KiB of elements.
    const BYTES: usize = 1 << 18;

    /// The thread's buffer (a new one if it is in use or was never made).
    pub(crate) fn take() -> ReceiveBuffer {
        let buffer = RECEIVE_BUFFER.take();
        ReceiveBuffer(if buffer.len() == Self::BYTES {
            buffer
        } else {
            vec![0u8; Self::BYTES]
        })
    }

    /// One `recv` from `fd` (with `RecvFlags::TRUNC` among `flags`): what arrived; an error if
    /// a message did not fit.
    pub(crate) fn receive(
        &mut self,
        fd: &rustix::fd::OwnedFd,
        flags: RecvFlags,
    ) -> Result<&[u8], NetlinkError> {
        let (_, received) = rustix::net::recv(fd, &mut self.0[..], flags)?;
        if received > self.0.len() {
            return Err(NetlinkError::Malformed("a message larger than the buffer"));
        }
        Ok(&self.0[..received])
    }
}

impl Drop for ReceiveBuffer {
    fn drop(&mut self) {
        RECEIVE_BUFFER.set(std::mem::take(&mut self.0));
    }
}

fn align(length: usize) -> usize {
    (length + 3) & !3
}

/// One netlink message of a received buffer: its header's fields and what follows the header.
struct Message<'a> {
    kind: u16,
    flags: u16,
    sequence: u32,
    body: &'a [u8],
}

/// The messages in `received` (one `recv`), in order; a length out of bounds is an error.
fn messages(mut rest: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NetlinkError>> {
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let length = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if length < 16 || length > rest.len() {
            rest = &[];
            return Some(Err(NetlinkError::Malformed(
                "a message length out of bounds",
            )));
        }
        let message = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            sequence: u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes")),
            body: &rest[16..length],
        };
        rest = &rest[align(length).min(rest.len())..];
        Some(Ok(message))
    })
}

fn push_attribute(buffer: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = 4 + value.len();
    buffer.extend_from_slice(&(length as u16).to_ne_bytes());
    buffer.extend_from_slice(&kind.to_ne_bytes());
    buffer.extend_from_slice(value);
    buffer.resize(align(buffer.len()), 0);
}

/// The attributes in `data`, as (type without flags, payload).
fn attributes(mut data: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let length = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > data.len() {
            data = &[];
            return Some(Err(NetlinkError::Malformed(
                "an attribute length out of bounds",
            )));
        }
        let value = &data[4..length];
        data = &data[align(length).min(data.len())..];
        Some(Ok((kind, value)))
    })
}

/// The value inside a nested `NFTA_DATA_VALUE`.
fn data_value(nested: &[u8]) -> Result<Option<&[u8]>, NetlinkError> {
    for attribute in attributes(nested) {
        let (kind, value) = attribute?;
        if kind == NFTA_DATA_VALUE {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The ruleset's generation id: it changes with every committed transaction.
///
/// A run asks it a dozen times; each thread keeps one socket for it, with the inode of the
/// network namespace it was opened in, and opens another when the thread is in another
/// namespace. (The kept socket holds its namespace alive, so no other namespace can have its
/// inode number meanwhile.)
pub fn generation() -> Result<u32, NetlinkError> {
    thread_local! {
        static KEPT: std::cell::Cell<Option<(u64, Socket)>> = const { std::cell::Cell::new(None) };
    }
    use std::os::unix::fs::MetadataExt;
    let namespace = std::fs::metadata("/proc/thread-self/ns/net").map(|meta| meta.ino());
    let mut socket = match (KEPT.take(), &namespace) {
        (Some((kept, socket)), Ok(namespace)) if kept == *namespace => socket,
        _ => Socket::open()?,
    };
    let generation = read_generation(&mut socket);
    if let (Ok(_), Ok(namespace)) = (&generation, namespace) {
        KEPT.set(Some((namespace, socket)));
    }
    generation
}

fn read_generation(socket: &mut Socket) -> Result<u32, NetlinkError> {
    let (payloads, _) = socket.ask(NFT_MSG_GETGEN, 0, NFPROTO_INET, &[], "(generation)")?;
    for payload in &payloads {
        for attribute in attributes(payload) {
            let (kind, value) = attribute?;
            if kind == NFTA_GEN_ID && value.len() == 4 {
                return Ok(u32::from_be_bytes(value.try_into().expect("4 bytes")));
            }
        }
    }
    Err(NetlinkError::Malformed("no generation id"))
}

/// The elements of set `set` in `inet table`, `None` when there is no such set.
pub fn read_set(table: &str, set: &str, family: Family) -> Result<Option<Elements>, NetlinkError> {
    Ok(read_raw(NFPROTO_INET, table, set)?.map(|raw| intervals_to_elements(raw, family)))
}

/// The elements of an address set (`type ipv4_addr` or `ipv6_addr`) in any table, as inclusive
/// address ranges in order; `interval` says whether the set has the interval flag (its
/// elements are starts and ends) or holds single addresses. `None` when there is no such set
/// or the table's family is not one nf_tables knows.
pub fn read_address_set(
    table_family: &str,
    table: &str,
    set: &str,
    family: Family,
    interval: bool,
) -> Result<Option<Vec<(IpAddr, IpAddr)>>, NetlinkError> {
    let protocol_family = match table_family {
        "inet" => NFPROTO_INET,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => return Ok(None),
    };
    let Some(raw) = read_raw(protocol_family, table, set)? else {
        return Ok(None);
    };
    let bits = family_bits(family);
    // The highest address of the family, and a number capped at it.
    let highest: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1 << bits) - 1
    };
    let top = |number: u128| number.min(highest);
    let ranges: Vec<(u128, u128)> = if interval {
        intervals(raw, bits)
            .into_iter()
            .filter_map(|(start, end)| match end {
                Some(end) => end.checked_sub(1).map(|last| (start, last)),
                None => Some((start, highest)),
            })
            .collect()
    } else {
        let mut keys: Vec<(u128, u128)> = raw
            .into_iter()
            .map(|element| (element.key, element.key_end.unwrap_or(element.key)))
            .collect();
        keys.sort_unstable();
        keys
    };
    Ok(Some(
        ranges
            .into_iter()
            .map(|(first, last)| (address(first, bits), address(top(last), bits)))
            .collect(),
    ))
}

/// A set's elements as this process wrote them, valid at one ruleset generation.
struct Known {
    namespace: (std::thread::ThreadId, u64),
    generation: u32,
    set: (String, String, String),
    ranges: std::sync::Arc<Vec<(IpAddr, IpAddr)>>,
}

/// What this process knows sets hold without reading them: the elements of the sets its last
/// transaction wrote, at the generation that transaction produced (the nftables backend records
/// them when the generation moved by exactly its one transaction). Reading a set of 100,000
/// back from the kernel costs about a second (the dump is O(n²)); the generation proves the
/// set is what was written, so the shadowing analysis after a sync does not read it again.
static KNOWN: std::sync::Mutex<Vec<Known>> = std::sync::Mutex::new(Vec::new());

/// The identity of the calling thread's network namespace, with the thread: an inode number
/// is reused once its namespace is gone, a thread id never is, and a thread keeps its namespace.
pub fn namespace_id() -> Option<(std::thread::ThreadId, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|meta| (std::thread::current().id(), meta.ino()))
}

/// Records that set `table_family table set` holds exactly `ranges` (inclusive, in order) at
/// `generation`, in the calling thread's network namespace. Replaces what was known before.
pub fn know_elements(
    generation: u32,
    table_family: &str,
    table: &str,
    set: &str,
    ranges: Vec<(IpAddr, IpAddr)>,
) {
    let Some(namespace) = namespace_id() else {
        return;
    };
    if let Ok(mut known) = KNOWN.lock() {
        let key = (table_family.to_owned(), table.to_owned(), set.to_owned());
        // Only this namespace's entries at this generation can still be true.
        known.retain(|entry| {
            entry.namespace != namespace || (entry.generation == generation && entry.set != key)
        });
        known.push(Known {
            namespace,
            generation,
            set: key,
            ranges: std::sync::Arc::new(ranges),
        });
    }
}

/// What [`know_elements`] recorded for this set at `generation`, in this namespace.
pub fn known_elements(
    generation: u32,
    table_family: &str,
    table: &str,
    set: &str,
) -> Option<std::sync::Arc<Vec<(IpAddr, IpAddr)>>> {
    let namespace = namespace_id()?;
    let known = KNOWN.lock().ok()?;
    known
        .iter()
        .find(|entry| {
            entry.namespace == namespace
                && entry.generation == generation
                && entry.set.0 == table_family
                && entry.set.1 == table
                && entry.set.2 == set
        })
        .map(|entry| entry.ranges.clone())
}

fn read_raw(
    protocol_family: u8,
    table: &str,
    set: &str,
) -> Result<Option<Vec<RawElement>>, NetlinkError> {
    let mut socket = Socket::open()?;
    let mut request = Vec::new();
    push_attribute(
        &mut request,
        NFTA_SET_ELEM_LIST_TABLE,
        &nul_terminated(table),
    );
    push_attribute(&mut request, NFTA_SET_ELEM_LIST_SET, &nul_terminated(set));
    for _ in 0..5 {
        let answer = socket.ask(
            NFT_MSG_GETSETELEM,
            NLM_F_DUMP,
            protocol_family,
            &request,
            set,
        );
        let (payloads, interrupted) = match answer {
            Err(NetlinkError::Kernel { errno: ENOENT, .. }) => return Ok(None),
            other => other?,
        };
        if interrupted {
            continue;
        }
        let mut raw = Vec::new();
        for payload in &payloads {
            collect_elements(payload, &mut raw)?;
        }
        return Ok(Some(raw));
    }
    Err(NetlinkError::Interrupted(format!("set {set}")))
}

fn family_bits(family: Family) -> u32 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

fn address(number: u128, bits: u32) -> IpAddr {
    match bits {
        32 => IpAddr::V4(Ipv4Addr::from(u32::try_from(number).unwrap_or(u32::MAX))),
        _ => IpAddr::V6(Ipv6Addr::from(number)),
    }
}

fn nul_terminated(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// One element as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawElement {
    key: u128,
    end: bool,
    key_end: Option<u128>,
}

fn collect_elements(payload: &[u8], raw: &mut Vec<RawElement>) -> Result<(), NetlinkError> {
    for attribute in attributes(payload) {
        let (kind, list) = attribute?;
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for element in attributes(list) {
            let (kind, element) = element?;
            if kind != NFTA_LIST_ELEM {
                continue;
            }
            let mut key = None;
            let mut key_end = None;
            let mut flags = 0;
            for field in attributes(element) {
                let (kind, value) = field?;
                match kind {
                    NFTA_SET_ELEM_KEY => key = data_value(value)?.map(as_number),
                    NFTA_SET_ELEM_KEY_END => key_end = data_value(value)?.map(as_number),
                    NFTA_SET_ELEM_FLAGS if value.len() == 4 => {
                        flags = u32::from_be_bytes(value.try_into().expect("4 bytes"))
                    }
                    _ => {}
                }
            }
            let key = key.ok_or(NetlinkError::Malformed("an element without a key"))?;
            raw.push(RawElement {
                key,
                end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
                key_end,
            });
        }
    }
    Ok(())
}

/// A big-endian key as a number (addresses are at most 16 bytes).
fn as_number(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take(16)
        .fold(0u128, |number, byte| (number << 8) | u128::from(*byte))
}

/// The ranges of an interval set's start and end elements, as (first address, first address
/// past the range; `None` for a range reaching the top of the address space).
fn intervals(mut raw: Vec<RawElement>, bits: u32) -> Vec<(u128, Option<u128>)> {
    // At one key an end (closing the range below) sorts before a start (opening the next).
    raw.sort_by_key(|element| (element.key, !element.end));
    let mut ranges: Vec<(u128, Option<u128>)> = Vec::new();
    let mut open: Option<u128> = None;
    for element in raw {
        if let Some(last) = element.key_end {
            // A set with both ends in one element (nft's concatenation sets).
            ranges.push((element.key, last.checked_add(1)));
            continue;
        }
        match (element.end, open.take()) {
            (true, Some(start)) => ranges.push((start, Some(element.key))),
            (true, None) => {} // nft's leading zero element
            (false, Some(start)) => {
                // Two starts in a row: the first range has no end; count it as odd.
                ranges.push((start, None));
                open = Some(element.key);
            }
            (false, None) => open = Some(element.key),
        }
    }
    if let Some(start) = open {
        // A range reaching the top of the address space has no end element.
        ranges.push((start, (bits < 128).then(|| 1u128 << bits)));
    }
    ranges
}

/// Rebuilds ranges from start and end elements and keeps those that are exactly one prefix.
fn intervals_to_elements(raw: Vec<RawElement>, family: Family) -> Elements {
    let bits = family_bits(family);
    let ranges = intervals(raw, bits);
    let mut elements = Elements::default();
    for (start, end) in ranges {
        let size = match end {
            Some(end) => end.wrapping_sub(start),
            None if start == 0 && bits == 128 => 0, // the whole space: 2^128, a /0
            None => (u128::MAX - start).wrapping_add(1),
        };
        match prefix(start, size, bits) {
            Some(net) => elements.networks.push(net),
            None => elements.odd += 1,
        }
    }
    elements.networks.sort();
    elements
}

/// The prefix covering exactly `size` addresses from `start` (`size` 0 means all 2^128).
fn prefix(start: u128, size: u128, bits: u32) -> Option<IpNet> {
    let host_bits = if size == 0 {
        128
    } else if size.is_power_of_two() {
        size.trailing_zeros()
    } else {
        return None;
    };
    if host_bits > bits || (host_bits < 128 && start & ((1u128 << host_bits) - 1) != 0) {
        return None;
    }
    let length = u8::try_from(bits - host_bits).ok()?;
    let address = match bits {
        32 => IpAddr::V4(Ipv4Addr::from(u32::try_from(start).ok()?)),
        _ => IpAddr::V6(Ipv6Addr::from(start)),
    };
    IpNet::new(address, length).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(key: u128) -> RawElement {
        RawElement {
            key,
            end: false,
            key_end: None,
        }
    }

    fn end(key: u128) -> RawElement {
        RawElement {
            key,
            end: true,
            key_end: None,
        }
    }

    #[test]
    fn intervals_become_prefixes_and_odd_ranges_are_counted() {
        let v4 = |text: &str| u128::from(u32::from(text.parse::<Ipv4Addr>().unwrap()));
        // 10.0.0.0/25 and 10.0.0.128/25 (adjacent), 192.0.2.1/32, 203.0.113.1-203.0.113.9,
        // nft's leading zero, in the kernel's reverse order.
        let raw = vec![
            end(v4("203.0.113.10")),
            start(v4("203.0.113.1")),
            end(v4("192.0.2.2")),
            start(v4("192.0.2.1")),
            end(v4("10.0.1.0")),
            start(v4("10.0.0.128")),
            end(v4("10.0.0.128")),
            start(v4("10.0.0.0")),
            end(0),
        ];
        let elements = intervals_to_elements(raw, Family::V4);
        let expected: Vec<IpNet> = ["10.0.0.0/25", "10.0.0.128/25", "192.0.2.1/32"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert_eq!(elements.networks, expected);
        assert_eq!(elements.odd, 1);
    }

    #[test]
    fn a_range_reaching_the_top_has_no_end_element() {
        let elements = intervals_to_elements(vec![end(0), start(0xF000_0000)], Family::V4);
        assert_eq!(elements.networks, vec!["240.0.0.0/4".parse().unwrap()]);
    }
}
