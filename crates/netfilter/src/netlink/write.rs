//! Writing the element changes of interval sets of prefixes in one nf_tables transaction,
//! straight over netlink: one batch (`NFNL_MSG_BATCH_BEGIN` … `NFNL_MSG_BATCH_END`) of
//! `NFT_MSG_DELSETELEM` and `NFT_MSG_NEWSETELEM` messages.
//!
//! Why not `nft -f`: nft 1.0.6 deletes interval elements from a large set in userspace time
//! that grows with the set (deleting 1,000 of 100,000 in one batch still ran after ten
//! minutes, measured), so a replace had to flush and refill the whole set. The kernel itself
//! deletes and adds a few thousand elements in milliseconds.
//!
//! Each prefix is what nft writes for it in a set with `flags interval` (no auto-merge): a
//! start element at its first address and an end element, flagged
//! `NFT_SET_ELEM_INTERVAL_END`, at the first address past it. Neighbours keep both (one's end
//! and the other's start share a key), as the reader in the parent module expects; the
//! additions carry nft's leading zero end element, as nft's own do (the kernel ignores it when
//! present: no `NLM_F_EXCL`). A prefix starting at address zero or reaching the top of the
//! address space has no such pair: [`writable`] says so and the caller uses nft for it.
//!
//! The batch begin carries `NFNL_BATCH_GENID`, the ruleset generation the caller's reading is
//! exact at: the kernel compares it under its commit lock and refuses the whole batch
//! (`ERESTART`) if any transaction committed since, so nothing is ever written on a stale
//! reading. Every message asks for an ack; the kernel handles the batch synchronously while
//! we send it, so all answers are queued when `sendto` returns. Any error aborts the whole
//! batch (it is one transaction).

use ipnet::IpNet;
use rustix::net::{RecvFlags, SendFlags};

use super::{
    NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFT_SET_ELEM_INTERVAL_END, NFTA_DATA_VALUE, NFTA_LIST_ELEM,
    NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NetlinkError, ReceiveBuffer,
    Socket, messages, nul_terminated, push_attribute,
};

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
const AF_UNSPEC: u8 = 0;
/// Linux's `ERESTART`: the batch's generation is not the ruleset's.
const ERESTART: i32 = 85;
/// An attribute's length is 16 bits: the elements of one message stay well below.
pub(super) const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// The element changes of one interval set of prefixes in an `inet` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEdit {
    /// The table.
    pub table: String,
    /// The set.
    pub set: String,
    /// Prefixes the set holds and must lose.
    pub remove: Vec<IpNet>,
    /// Prefixes the set lacks and must gain.
    pub add: Vec<IpNet>,
}

/// Whether `net` can be written as a start and an end element: it neither starts at address
/// zero (nft's leading zero end element sits there) nor reaches the top of its address space.
pub fn writable(net: &IpNet) -> bool {
    let (first, last) = bounds(net);
    first != 0 && last != top(net)
}

/// Writes `edits` in one transaction, refused by the kernel unless the ruleset is still at
/// `generation`. `Err(NetlinkError::GenerationMoved)` means nothing was written.
pub fn edit_sets(generation: u32, edits: &[SetEdit]) -> Result<(), NetlinkError> {
    if let Some(net) = edits
        .iter()
        .flat_map(|edit| edit.remove.iter().chain(&edit.add))
        .find(|net| !writable(net))
    {
        return Err(NetlinkError::Unwritable(*net));
    }
    let mut socket = Socket::open()?;
    let first_sequence = socket.sequence + 1;
    let batch = Batch::of(generation, edits, first_sequence);
    let (answers, _) = send(&mut socket, &batch)?;
    batch.outcome(&answers)
}

/// Sends `batch` in one `sendto` and returns the kernel's answers: every (sequence, errno) of
/// its acks and errors, and every other message (echoes) as (sequence, type, payload after the
/// nfgenmsg header).
pub(super) fn send(socket: &mut Socket, batch: &Batch) -> Result<Answers, NetlinkError> {
    socket.sequence = batch.last_sequence;
    // One sendto is one socket buffer in the kernel, and the batch must arrive whole: make
    // room for it (CAP_NET_ADMIN, which writing needs anyway, lifts the system's cap).
    let room = batch.bytes.len() + (1 << 16);
    if rustix::net::sockopt::set_socket_send_buffer_size_force(&socket.fd, room).is_err() {
        rustix::net::sockopt::set_socket_send_buffer_size(&socket.fd, room)?;
    }
    let answers = (batch.acks.len() + 1) * 1024 + (1 << 20);
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket.fd, answers).is_err() {
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket.fd, answers)?;
    }
    rustix::net::sendto(
        &socket.fd,
        &batch.bytes,
        SendFlags::empty(),
        &rustix::net::netlink::SocketAddrNetlink::new(0, 0),
    )?;
    receive_answers(socket)
}

/// What the kernel answered a batch: (sequence, errno) of every ack and error, and the other
/// messages (echoes) as (sequence, type, payload after the nfgenmsg header).
pub(super) type Answers = (Vec<(u32, i32)>, Vec<(u32, u16, Vec<u8>)>);

/// Every answer the kernel gave, without waiting: it answered while we sent.
fn receive_answers(socket: &Socket) -> Result<Answers, NetlinkError> {
    let mut answers = Vec::new();
    let mut echoes = Vec::new();
    let mut buffer = ReceiveBuffer::take();
    loop {
        let received = match buffer.receive(&socket.fd, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
            Ok(received) => received,
            Err(NetlinkError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok((answers, echoes));
            }
            Err(error) => return Err(error),
        };
        for message in messages(received) {
            let message = message?;
            if message.kind == NLMSG_ERROR {
                let code = message
                    .body
                    .get(0..4)
                    .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
                    .ok_or(NetlinkError::Malformed("a short error message"))?;
                answers.push((message.sequence, -code));
            } else if let Some(payload) = message.body.get(4..) {
                echoes.push((message.sequence, message.kind, payload.to_vec()));
            }
        }
    }
}

/// An encoded batch and what its answers must be.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) bytes: Vec<u8>,
    /// The sequence number of the batch begin (the one a refused generation answers).
    pub(super) begin: u32,
    /// The messages that ask for an ack, by sequence number, with the object each one writes.
    pub(super) acks: Vec<(u32, String)>,
    pub(super) last_sequence: u32,
}

impl Batch {
    /// A batch holding only its begin, which carries `generation`.
    pub(super) fn begin(generation: u32, first_sequence: u32) -> Batch {
        let mut batch = Batch {
            bytes: Vec::new(),
            begin: first_sequence,
            acks: Vec::new(),
            last_sequence: first_sequence,
        };
        let mut genid = Vec::new();
        push_attribute(&mut genid, NFNL_BATCH_GENID, &generation.to_be_bytes());
        batch.message(
            NFNL_MSG_BATCH_BEGIN,
            0,
            AF_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &genid,
        );
        batch
    }

    /// Closes the batch.
    pub(super) fn end(&mut self) {
        self.message(NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
    }

    fn of(generation: u32, edits: &[SetEdit], first_sequence: u32) -> Batch {
        let mut batch = Batch::begin(generation, first_sequence);
        for edit in edits {
            for (kind, flags, elements) in [
                (NFT_MSG_DELSETELEM, 0, elements(&edit.remove, false)),
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements(&edit.add, true)),
            ] {
                for chunk in chunks(&elements) {
                    let mut attributes = Vec::new();
                    push_attribute(
                        &mut attributes,
                        NFTA_SET_ELEM_LIST_TABLE,
                        &nul_terminated(&edit.table),
                    );
                    push_attribute(
                        &mut attributes,
                        NFTA_SET_ELEM_LIST_SET,
                        &nul_terminated(&edit.set),
                    );
                    push_attribute(
                        &mut attributes,
                        NLA_F_NESTED | NFTA_SET_ELEM_LIST_ELEMENTS,
                        &chunk.concat(),
                    );
                    let sequence = batch.message(
                        (NFNL_SUBSYS_NFTABLES << 8) | kind,
                        flags | NLM_F_ACK,
                        NFPROTO_INET,
                        0,
                        &attributes,
                    );
                    batch.acks.push((sequence, edit.set.clone()));
                }
            }
        }
        batch.end();
        batch
    }

    /// Appends one message; returns its sequence number.
    pub(super) fn message(
        &mut self,
        kind: u16,
        flags: u16,
        protocol_family: u8,
        resource: u16,
        attributes: &[u8],
    ) -> u32 {
        let sequence = if self.bytes.is_empty() {
            self.begin
        } else {
            self.last_sequence + 1
        };
        self.last_sequence = sequence;
        let length = 16 + 4 + attributes.len();
        self.bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.bytes.extend_from_slice(&sequence.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(protocol_family);
        self.bytes.push(0); // NFNETLINK_V0
        self.bytes.extend_from_slice(&resource.to_be_bytes());
        self.bytes.extend_from_slice(attributes);
        sequence
    }

    /// What the kernel's answers say: no error, and every ack there.
    pub(super) fn outcome(&self, answers: &[(u32, i32)]) -> Result<(), NetlinkError> {
        if let Some((sequence, errno)) = answers.iter().find(|(_, errno)| *errno != 0) {
            if *sequence == self.begin && *errno == ERESTART {
                return Err(NetlinkError::GenerationMoved);
            }
            let set = self
                .acks
                .iter()
                .find(|(acked, _)| acked == sequence)
                .map_or("(the batch)", |(_, set)| set.as_str());
            return Err(NetlinkError::Refused {
                set: set.to_owned(),
                errno: *errno,
            });
        }
        if self
            .acks
            .iter()
            .any(|(sequence, _)| !answers.iter().any(|(answered, _)| answered == sequence))
        {
            return Err(NetlinkError::Malformed(
                "the kernel did not answer every message of the batch",
            ));
        }
        Ok(())
    }
}

/// The first and last address of `net` as numbers.
pub(super) fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(net) => (
            u128::from(u32::from(net.network())),
            u128::from(u32::from(net.broadcast())),
        ),
        IpNet::V6(net) => (u128::from(net.network()), u128::from(net.broadcast())),
    }
}

fn top(net: &IpNet) -> u128 {
    match net {
        IpNet::V4(_) => u128::from(u32::MAX),
        IpNet::V6(_) => u128::MAX,
    }
}

/// A key as the kernel reads it: big-endian, the family's width.
pub(super) fn key(net: &IpNet, number: u128) -> Vec<u8> {
    match net {
        IpNet::V4(_) => (number as u32).to_be_bytes().to_vec(),
        IpNet::V6(_) => number.to_be_bytes().to_vec(),
    }
}

/// One `NFTA_LIST_ELEM` attribute.
pub(super) fn element(key: &[u8], end: bool) -> Vec<u8> {
    let mut value = Vec::new();
    push_attribute(&mut value, NFTA_DATA_VALUE, key);
    let mut fields = Vec::new();
    if end {
        push_attribute(
            &mut fields,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    push_attribute(&mut fields, NLA_F_NESTED | NFTA_SET_ELEM_KEY, &value);
    let mut element = Vec::new();
    push_attribute(&mut element, NLA_F_NESTED | NFTA_LIST_ELEM, &fields);
    element
}

/// The start and end elements of `nets`, in order; additions lead with nft's zero end element.
pub(super) fn elements(nets: &[IpNet], adding: bool) -> Vec<Vec<u8>> {
    let mut encoded = Vec::with_capacity(nets.len() * 2 + 1);
    if adding && let Some(first) = nets.first() {
        encoded.push(element(&key(first, 0), true));
    }
    for net in nets {
        let (first, last) = bounds(net);
        encoded.push(element(&key(net, first), false));
        encoded.push(element(&key(net, last + 1), true));
    }
    encoded
}

/// `elements` split so that each message's element list fits a 16-bit attribute length.
pub(super) fn chunks(elements: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut size = 0;
    for element in elements {
        if chunks.is_empty() || size + element.len() > ELEMENTS_PER_MESSAGE_BYTES {
            chunks.push(Vec::new());
            size = 0;
        }
        size += element.len();
        chunks
            .last_mut()
            .expect("pushed above")
            .push(element.clone());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::align;

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    /// The attributes of one message after its nlmsghdr and nfgenmsg.
    fn body(message: &[u8]) -> &[u8] {
        &message[20..]
    }

    /// The messages of a batch, each whole.
    fn messages(bytes: &[u8]) -> Vec<&[u8]> {
        let mut rest = bytes;
        let mut messages = Vec::new();
        while !rest.is_empty() {
            let length = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            messages.push(&rest[..length]);
            rest = &rest[align(length)..];
        }
        messages
    }

    // The element list nft 1.0.6 sent for `delete element inet filter cf_allowlist_v4
    // { 192.0.2.128/25 }` and for `add element inet filter cf_allowlist_v6 { 2001:db8::/64 }`
    // (recorded with `strace -e sendmsg -xx`; attributes are little-endian on this machine).
    const NFT_DELETE_V4: &[u8] = b"\x10\x00\x01\x80\x0c\x00\x01\x80\x08\x00\x01\x00\xc0\x00\x02\x80\x18\x00\x02\x80\x08\x00\x03\x00\x00\x00\x00\x01\x0c\x00\x01\x80\x08\x00\x01\x00\xc0\x00\x03\x00";
    const NFT_ADD_V6: &[u8] = b"\x24\x00\x01\x80\x08\x00\x03\x00\x00\x00\x00\x01\x18\x00\x01\x80\x14\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1c\x00\x02\x80\x18\x00\x01\x80\x14\x00\x01\x00\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x24\x00\x03\x80\x08\x00\x03\x00\x00\x00\x00\x01\x18\x00\x01\x80\x14\x00\x01\x00\x20\x01\x0d\xb8\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00";

    /// nft numbers the elements of a list from 1 (the kernel ignores the number); ours are all
    /// `NFTA_LIST_ELEM` (1). The rest must be byte for byte what nft sends.
    fn numbered_as_nft(list: &[u8]) -> Vec<u8> {
        let mut out = list.to_vec();
        let mut offset = 0;
        let mut number = 1u16;
        while offset < out.len() {
            let length = u16::from_ne_bytes([out[offset], out[offset + 1]]) as usize;
            out[offset + 2..offset + 4].copy_from_slice(&(NLA_F_NESTED | number).to_ne_bytes());
            number += 1;
            offset += align(length);
        }
        out
    }

    #[test]
    fn elements_are_encoded_as_nft_encodes_them() {
        let delete = elements(&nets(&["192.0.2.128/25"]), false);
        assert_eq!(numbered_as_nft(&delete.concat()), NFT_DELETE_V4);
        let add = elements(&nets(&["2001:db8::/64"]), true);
        assert_eq!(numbered_as_nft(&add.concat()), NFT_ADD_V6);
    }

    #[test]
    fn a_batch_carries_the_generation_and_asks_for_every_ack() {
        let edits = [SetEdit {
            table: "filter".to_owned(),
            set: "cf_allowlist_v4".to_owned(),
            remove: nets(&["192.0.2.128/25"]),
            add: nets(&["198.51.100.0/24"]),
        }];
        let batch = Batch::of(0x0102_0304, &edits, 7);
        let messages = messages(&batch.bytes);
        assert_eq!(messages.len(), 4);
        // Batch begin: type 0x10, request, sequence 7, AF_UNSPEC, res_id NFTABLES (big-endian),
        // NFNL_BATCH_GENID as a big-endian u32.
        let mut begin = Vec::new();
        begin.extend_from_slice(&28u32.to_ne_bytes());
        begin.extend_from_slice(&0x10u16.to_ne_bytes());
        begin.extend_from_slice(&1u16.to_ne_bytes());
        begin.extend_from_slice(&7u32.to_ne_bytes());
        begin.extend_from_slice(&0u32.to_ne_bytes());
        begin.extend_from_slice(&[0, 0, 0, 10]);
        begin.extend_from_slice(&8u16.to_ne_bytes());
        begin.extend_from_slice(&1u16.to_ne_bytes());
        begin.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(messages[0], &begin[..]);
        // The delete: NFT_MSG_DELSETELEM, request and ack, inet; table, set, the elements.
        let delete = messages[1];
        assert_eq!(u16::from_ne_bytes([delete[4], delete[5]]), (10 << 8) | 14);
        assert_eq!(u16::from_ne_bytes([delete[6], delete[7]]), 0x1 | 0x4);
        assert_eq!(&delete[16..20], &[1, 0, 0, 0]);
        let mut expected = Vec::new();
        push_attribute(&mut expected, 1, b"filter\0");
        push_attribute(&mut expected, 2, b"cf_allowlist_v4\0");
        push_attribute(
            &mut expected,
            0x8003,
            &elements(&edits[0].remove, false).concat(),
        );
        assert_eq!(body(delete), &expected[..]);
        let add = messages[2];
        assert_eq!(u16::from_ne_bytes([add[4], add[5]]), (10 << 8) | 12);
        assert_eq!(u16::from_ne_bytes([add[6], add[7]]), 0x1 | 0x4 | 0x400);
        let end = messages[3];
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), 0x11);
        assert_eq!(&end[16..20], &[0, 0, 0, 10]);
        assert_eq!(
            batch.acks,
            vec![
                (8, "cf_allowlist_v4".to_owned()),
                (9, "cf_allowlist_v4".to_owned())
            ]
        );
        assert_eq!(batch.last_sequence, 10);
    }

    #[test]
    fn large_edits_are_split_into_messages_of_one_transaction() {
        let many: Vec<IpNet> = (0..5_000u32)
            .map(|index| {
                format!("2001:db8:{:x}:{:x}::/64", index >> 16, index & 0xffff)
                    .parse()
                    .unwrap()
            })
            .collect();
        let edits = [SetEdit {
            table: "filter".to_owned(),
            set: "cf_allowlist_v6".to_owned(),
            remove: many.clone(),
            add: Vec::new(),
        }];
        let batch = Batch::of(1, &edits, 1);
        let messages = messages(&batch.bytes);
        assert!(messages.len() > 3, "{} messages", messages.len());
        assert!(messages.iter().all(|message| message.len() < 65_536));
        let begins = messages.iter().filter(|message| message[4] == 0x10).count();
        assert_eq!(begins, 1, "one batch, one transaction");
    }

    #[test]
    fn answers_decide_the_outcome() {
        let edits = [SetEdit {
            table: "filter".to_owned(),
            set: "cf_allowlist_v4".to_owned(),
            remove: Vec::new(),
            add: nets(&["198.51.100.0/24"]),
        }];
        let batch = Batch::of(5, &edits, 1);
        // Nothing to delete: one message, the addition.
        assert_eq!(batch.acks.len(), 1);
        let acks: Vec<(u32, i32)> = batch
            .acks
            .iter()
            .map(|(sequence, _)| (*sequence, 0))
            .collect();
        assert!(batch.outcome(&acks).is_ok());
        assert!(matches!(
            batch.outcome(&[(1, ERESTART)]),
            Err(NetlinkError::GenerationMoved)
        ));
        let mut refused = acks.clone();
        refused[0].1 = 2;
        assert!(matches!(
            batch.outcome(&refused),
            Err(NetlinkError::Refused { errno: 2, .. })
        ));
        assert!(matches!(
            batch.outcome(&[]),
            Err(NetlinkError::Malformed(_))
        ));
    }

    #[test]
    fn prefixes_at_the_edges_of_the_space_are_left_to_nft() {
        assert!(writable(&"192.0.2.0/24".parse().unwrap()));
        assert!(!writable(&"0.0.0.0/8".parse().unwrap()));
        assert!(!writable(&"255.255.255.0/24".parse().unwrap()));
        assert!(!writable(&"ffff::/16".parse().unwrap()));
    }
}
