//! The validated list a verified sync recorded its proof with, kept beside the proof so that a
//! no-op at 100,000 ranges need not read a 2.5 MB body again that it read last time.
//!
//! Reading such a list (parsing, checking each range, sorting and dropping duplicates and
//! covered ranges) was most of a no-op sync at that size. The memo holds a digest of each
//! source's answer (its body's bytes), a digest of the rules it was read by (this program's
//! version and the configured limits), what the reading found (each source's count, the
//! covered ranges) and the validated ranges themselves, in a compact binary form with their own
//! digest. A fetch whose every answer has the memo's digest, read by the same rules, would read
//! exactly the memo's ranges: it takes them from the memo instead. Any difference, or a memo
//! that does not decode to the ranges its digest names, and the answers are read as always.
//!
//! Only lists worth it get a memo (bodies of [`WORTH_BYTES`] and more): decoding one costs more
//! than reading Cloudflare's own 22 ranges.

use cf_allowlist_backend::Ranges;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::validate::Limits;

/// The file's first line: what it is, and its format's version.
const MAGIC: &[u8] = b"cf-allowlist validated list 1\n";

/// Answers shorter than this in all get no memo.
pub const WORTH_BYTES: usize = 256 * 1024;

/// What a fetch's answers were and what reading them found, without the ranges: what a later
/// fetch compares, answer by answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Each source's answer, in the configured order.
    pub answers: Vec<Answered>,
    /// The ranges dropped because another range covers them, each with that range.
    pub covered: Vec<(IpNet, IpNet)>,
}

/// One source's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// The source, as configured.
    pub source: String,
    /// The digest of what it answered ([`crate::sources::Answer::digest`]).
    pub digest: String,
    /// How many ranges it listed.
    pub count: usize,
}

/// The rules a list is read by, as a digest: the reader (this program's version), the
/// broadest prefixes accepted, and whether JD Cloud's ranges are asked for.
pub fn rules(limits: &Limits, jdcloud: bool) -> String {
    crate::proof::sha256_bytes_hex(
        serde_json::json!({
            "program": env!("CARGO_PKG_VERSION"),
            "broadest_v4": limits.broadest_v4,
            "broadest_v6": limits.broadest_v6,
            "jdcloud": jdcloud,
        })
        .to_string()
        .as_bytes(),
    )
}

/// The file's header, before the ranges.
#[derive(Serialize, Deserialize)]
struct Header {
    /// A digest of the rules the answers were read by ([`rules`]).
    rules: String,
    listing: Listing,
    /// How many ranges follow.
    count: usize,
    /// Their digest ([`crate::proof::ranges_digest`]).
    ranges: String,
}

/// A memo as read: the listing, and the ranges still encoded (decoded only if the listing
/// matches the fetch: a changed list costs no decoding).
#[derive(Debug)]
pub struct Memo {
    /// A digest of the rules the answers were read by ([`rules`]).
    pub rules: String,
    /// What the recorded fetch answered and found.
    pub listing: Listing,
    count: usize,
    digest: String,
    encoded: Vec<u8>,
}

impl Memo {
    /// Reads a memo file's bytes; `None` if they are not one.
    pub fn read(mut bytes: Vec<u8>) -> Option<Memo> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let end = rest.iter().position(|&byte| byte == b'\n')?;
        let header: Header = serde_json::from_slice(&rest[..end]).ok()?;
        let start = MAGIC.len() + end + 1;
        bytes.drain(..start);
        Some(Memo {
            rules: header.rules,
            listing: header.listing,
            count: header.count,
            digest: header.ranges,
            encoded: bytes,
        })
    }

    /// The validated ranges and their digest ([`crate::proof::ranges_digest`]); `None` if the
    /// file does not decode to exactly the ranges its digest names (torn, or edited).
    pub fn ranges(&self) -> Option<(Ranges, String)> {
        // The records are what the digest hashes ([`crate::proof::range_record`]): checked on
        // another core while they are decoded and the set is built.
        std::thread::scope(|scope| {
            let intact =
                scope.spawn(|| crate::proof::sha256_bytes_hex(&self.encoded) == self.digest);
            self.decode(intact)
        })
    }

    /// The records decoded and checked (in order, as many as the header says) into the set,
    /// given only if `intact` says their digest matches.
    fn decode(&self, intact: std::thread::ScopedJoinHandle<'_, bool>) -> Option<(Ranges, String)> {
        let mut ranges = Vec::with_capacity(self.count);
        let mut rest = self.encoded.as_slice();
        while let Some((&family, tail)) = rest.split_first() {
            let (network, tail) = match family {
                4 => {
                    let (address, tail) = tail.split_first_chunk::<4>()?;
                    let (&prefix, tail) = tail.split_first()?;
                    (
                        IpNet::V4(Ipv4Net::new((*address).into(), prefix).ok()?),
                        tail,
                    )
                }
                6 => {
                    let (address, tail) = tail.split_first_chunk::<16>()?;
                    let (&prefix, tail) = tail.split_first()?;
                    (
                        IpNet::V6(Ipv6Net::new((*address).into(), prefix).ok()?),
                        tail,
                    )
                }
                _ => return None,
            };
            ranges.push(network);
            rest = tail;
        }
        // A set in its own order, without duplicates: as it was written.
        let ordered = ranges.windows(2).all(|pair| pair[0] < pair[1]);
        if !ordered || ranges.len() != self.count {
            return None;
        }
        let set: Ranges = ranges.into_iter().collect();
        (intact.join().unwrap_or(false)).then(|| (set, self.digest.clone()))
    }
}

/// A memo file's bytes: the rules' digest ([`rules`]), the listing, and `ranges` (the
/// validated list it read to, whose [`crate::proof::ranges_digest`] is `digest`).
pub fn write(rules: String, listing: &Listing, ranges: &Ranges, digest: &str) -> Vec<u8> {
    let header = Header {
        rules,
        listing: listing.clone(),
        count: ranges.len(),
        ranges: digest.to_owned(),
    };
    let mut bytes = MAGIC.to_vec();
    serde_json::to_writer(&mut bytes, &header).expect("a memo header serialises");
    bytes.push(b'\n');
    bytes.reserve(ranges.len() * 18);
    for range in ranges {
        let (record, length) = crate::proof::range_record(range);
        bytes.extend_from_slice(&record[..length]);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing {
            answers: vec![Answered {
                source: "/etc/list".to_owned(),
                digest: "ab".repeat(32),
                count: 4,
            }],
            covered: vec![(
                "192.0.2.128/25".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
            )],
        }
    }

    fn ranges() -> Ranges {
        [
            "192.0.2.0/24",
            "198.51.100.7/32",
            "2001:db8::/48",
            "2001:db8:1::/64",
        ]
        .iter()
        .map(|text| text.parse::<IpNet>().unwrap())
        .collect()
    }

    /// A memo of `ranges` under [`listing`], read by the default rules.
    fn bytes_of(ranges: &Ranges) -> Vec<u8> {
        let digest = crate::proof::ranges_digest(ranges);
        write(
            rules(&Limits::default(), false),
            &listing(),
            ranges,
            &digest,
        )
    }

    #[test]
    fn a_memo_reads_back_as_written() {
        let memo = Memo::read(bytes_of(&ranges())).unwrap();
        assert_eq!(memo.listing, listing());
        let (read, digest) = memo.ranges().unwrap();
        assert_eq!(read, ranges());
        assert_eq!(digest, crate::proof::ranges_digest(&ranges()));
    }

    #[test]
    fn a_torn_or_edited_memo_gives_no_ranges() {
        let bytes = bytes_of(&ranges());
        // Torn anywhere: no memo, or no ranges.
        for cut in 0..bytes.len() {
            let torn = Memo::read(bytes[..cut].to_vec());
            assert!(
                torn.is_none_or(|memo| memo.ranges().is_none()),
                "cut at {cut}"
            );
        }
        // One range's address edited (the last byte before its prefix length): the digest no
        // longer matches.
        let mut edited = bytes.clone();
        let at = edited.len() - 2;
        edited[at] ^= 1;
        assert_eq!(Memo::read(edited).unwrap().ranges(), None);
        // Another memo's ranges under this header.
        let other: Ranges = ["192.0.2.0/24".parse::<IpNet>().unwrap()]
            .into_iter()
            .collect();
        let mut swapped = bytes_of(&ranges());
        let header_end = swapped.len() - 2 * 6 - 2 * 18;
        swapped.truncate(header_end);
        swapped.extend_from_slice(&bytes_of(&other)[header_end..]);
        assert_eq!(Memo::read(swapped).unwrap().ranges(), None);
        assert!(Memo::read(b"{}".to_vec()).is_none());
    }

    #[test]
    fn the_rules_name_the_limits_and_jdcloud() {
        let default = rules(&Limits::default(), false);
        assert_ne!(default, rules(&Limits::default(), true));
        let narrower = Limits {
            broadest_v4: 16,
            ..Limits::default()
        };
        assert_ne!(default, rules(&narrower, false));
        assert_eq!(default, rules(&Limits::default(), false));
    }
}
