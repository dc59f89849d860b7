use super::*;

/// What nft 1.0.6 sent for `nft -f nft-1.0.6-create.nft` (recorded in a fresh namespace with
/// `strace -e trace=sendmsg -e write=3`): the batch begin, 13 messages, the batch end.
const NFT_BATCH_HEX: &str = include_str!("nft-1.0.6-create.hex");

fn nft_batch() -> Vec<u8> {
    let hex: String = NFT_BATCH_HEX.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

fn nets(texts: &[&str]) -> Vec<IpNet> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

/// The creation `nft-1.0.6-create.nft` describes.
fn recorded() -> Creation {
    Creation {
        table: "filter".to_owned(),
        table_comment: Some("cf-allowlist".to_owned()),
        chain: "input".to_owned(),
        chain_comment: Some("cf-allowlist".to_owned()),
        sets: vec![
            NewSet {
                name: "cf_allowlist_v4".to_owned(),
                family: Family::V4,
                elements: nets(&["192.0.2.0/24", "198.51.100.0/25"]),
            },
            NewSet {
                name: "cf_allowlist_v6".to_owned(),
                family: Family::V6,
                elements: nets(&["2001:db8::/32"]),
            },
        ],
        rules: vec![
            NewRule {
                source_set: None,
                not_loopback: true,
                ports: vec![80, 443],
                verdict: Verdict::Drop,
                comment: "cf-allowlist restrict".to_owned(),
            },
            NewRule {
                source_set: Some((Family::V6, "cf_allowlist_v6".to_owned())),
                not_loopback: false,
                ports: vec![80, 443],
                verdict: Verdict::Accept,
                comment: "cf-allowlist ipv6".to_owned(),
            },
            NewRule {
                source_set: Some((Family::V4, "cf_allowlist_v4".to_owned())),
                not_loopback: false,
                ports: vec![22],
                verdict: Verdict::Accept,
                comment: "cf-allowlist ipv4".to_owned(),
            },
        ],
    }
}

/// The messages of a batch, each whole.
fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = bytes;
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let length = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        messages.push(rest[..length].to_vec());
        rest = &rest[super::super::align(length)..];
    }
    messages
}

#[test]
fn a_creation_is_the_batch_nft_sends_plus_acks_echoes_and_the_generation() {
    let (batch, rules) = encode(0x0a0b_0c0d, &recorded(), 100);
    let ours = messages(&batch.bytes);
    let nft = messages(&nft_batch());
    assert_eq!(ours.len(), nft.len());
    let last = nft.len() - 1;
    for (index, (ours, nft)) in ours.iter().zip(&nft).enumerate() {
        let mut ours = ours.clone();
        let flags = u16::from_ne_bytes([ours[6], ours[7]]);
        let sequence = u32::from_ne_bytes(ours[8..12].try_into().unwrap());
        assert_eq!(sequence, 100 + index as u32);
        if index == 0 {
            // The begin: NFNL_BATCH_GENID, which nft 1.0.6 leaves out.
            assert_eq!(&ours[20..], &[8, 0, 1, 0, 0x0a, 0x0b, 0x0c, 0x0d]);
            ours.truncate(20);
            ours[0..4].copy_from_slice(&20u32.to_ne_bytes());
        } else if index < last {
            assert_ne!(flags & NLM_F_ACK, 0, "message {index} asks for an ack");
        }
        let kind = u16::from_ne_bytes([ours[4], ours[5]]) & 0xff;
        let echo = index != 0 && index != last && kind == NFT_MSG_NEWRULE;
        assert_eq!(flags & NLM_F_ECHO != 0, echo, "message {index}");
        // nft numbers its messages from 0 and asks for neither acks nor echoes.
        ours[6..8].copy_from_slice(&(flags & !(NLM_F_ACK | NLM_F_ECHO)).to_ne_bytes());
        ours[8..12].copy_from_slice(&(index as u32).to_ne_bytes());
        assert_eq!(&ours, nft, "message {index}");
    }
    assert_eq!(rules, vec![109, 112, 113]);
    assert_eq!(batch.acks.len(), nft.len() - 2);
}

#[test]
fn the_ports_set_grows_with_the_ports() {
    let mut creation = recorded();
    creation.rules[0].ports = vec![22, 80, 81, 443];
    let (batch, _) = encode(1, &creation, 1);
    let ours = messages(&batch.bytes);
    // The anonymous set of the first rule (message 7) declares four elements, its elements
    // message lists them in order.
    let desc = [12u8, 0, 9, 0x80, 8, 0, 1, 0, 0, 0, 0, 4];
    assert!(ours[7].windows(desc.len()).any(|window| window == desc));
    for port in [22u16, 80, 81, 443] {
        let value = [6u8, 0, 1, 0, (port >> 8) as u8, port as u8];
        assert!(ours[8].windows(value.len()).any(|window| window == value));
    }
}

#[test]
fn what_nft_would_write_differently_is_not_creatable() {
    assert!(creatable(&recorded()));
    let mut unsorted = recorded();
    unsorted.rules[0].ports = vec![443, 80];
    assert!(!creatable(&unsorted));
    let mut none = recorded();
    none.rules[0].ports.clear();
    assert!(!creatable(&none));
    let mut long = recorded();
    long.rules[1].comment = "x".repeat(128);
    assert!(!creatable(&long));
    let mut edge = recorded();
    edge.sets[0].elements = nets(&["0.0.0.0/8"]);
    assert!(!creatable(&edge));
    let mut unknown = recorded();
    unknown.rules[2].source_set = Some((Family::V4, "cf_allowlist_v6".to_owned()));
    assert!(!creatable(&unknown));
    let mut overlapping = recorded();
    overlapping.sets[0].elements = nets(&["192.0.2.0/24", "192.0.2.0/25"]);
    assert!(!creatable(&overlapping));
}

#[test]
fn the_handle_of_an_echoed_rule_is_read() {
    let mut payload = Vec::new();
    push_attribute(&mut payload, NFTA_RULE_TABLE, b"filter\0");
    push_attribute(&mut payload, NFTA_RULE_CHAIN, b"input\0");
    push_attribute(&mut payload, NFTA_RULE_HANDLE, &7u64.to_be_bytes());
    assert_eq!(rule_handle(&payload), Some(7));
    assert_eq!(rule_handle(&payload[..28]), None);
}

#[test]
fn a_refusal_names_what_was_refused_and_a_moved_generation_is_told_apart() {
    let (batch, _) = encode(5, &recorded(), 1);
    let acks: Vec<(u32, i32)> = batch
        .acks
        .iter()
        .map(|(sequence, _)| (*sequence, 0))
        .collect();
    assert!(outcome(&batch, &acks).is_ok());
    // The chain (message 2) refused: EOPNOTSUPP.
    let mut refused = acks.clone();
    refused[1].1 = 95;
    let error = outcome(&batch, &refused).unwrap_err();
    assert!(
        matches!(&error, NetlinkError::CreationRefused { object, errno: 95 } if object == "chain input"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the kernel refused to create chain input: operation not supported (errno 95)"
    );
    assert!(matches!(
        outcome(&batch, &[(1, 85)]),
        Err(NetlinkError::GenerationMoved)
    ));
    assert!(matches!(
        outcome(&batch, &acks[1..]),
        Err(NetlinkError::Malformed(_))
    ));
}
