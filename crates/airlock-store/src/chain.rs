//! The hash chain: each event's hash covers the previous event's hash and the event's own
//! stream, position, kind, time and payload bytes, so that any change, removal or reordering
//! breaks the chain from that point on.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::encoding::{fmt_time, parse};
use crate::{NewEvent, Result, StoredEvent};

/// `prev_hash` of the first event of a stream.
pub const GENESIS_HASH: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an event, `sha256:<hex>`.
pub fn event_hash(prev_hash: &str, stream: &str, seq: u64, kind: &str, at: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev_hash.as_bytes(), stream.as_bytes(), seq.to_string().as_bytes(), kind.as_bytes(), at.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Where each stream's chain ends: `stream → (seq, hash)` of its last event.
pub(crate) type Heads = HashMap<String, (u64, String)>;

/// An event as the journal keeps it, its payload as the canonical JSON text that was hashed.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    /// Global position in the journal (1-based).
    pub(crate) pos: i64,
    /// Stream.
    pub(crate) stream: String,
    /// 1-based position in the stream.
    pub(crate) seq: u64,
    /// Kind name.
    pub(crate) kind: String,
    /// Time text, as hashed.
    pub(crate) at: String,
    /// Canonical JSON text of the payload, as hashed.
    pub(crate) payload: String,
    /// Hash of the previous event of the stream.
    pub(crate) prev_hash: String,
    /// Hash of this event.
    pub(crate) hash: String,
}

impl EventRecord {
    /// Chains `event` (its payload already canonical JSON) to the end of its stream, whose last
    /// event is `head` (`None` for a new stream), at journal position `pos`.
    pub(crate) fn chained(head: Option<&(u64, String)>, event: &NewEvent, payload: String, pos: i64) -> EventRecord {
        let (seq, prev_hash) = match head {
            Some((seq, hash)) => (seq + 1, hash.clone()),
            None => (1, GENESIS_HASH.to_string()),
        };
        let at = fmt_time(&event.at);
        let kind = event.kind.as_str().to_string();
        let hash = event_hash(&prev_hash, &event.stream, seq, &kind, &at, &payload);
        EventRecord { pos, stream: event.stream.clone(), seq, kind, at, payload, prev_hash, hash }
    }

    /// The event as callers see it, its payload parsed.
    pub(crate) fn to_stored(&self) -> Result<StoredEvent> {
        Ok(StoredEvent {
            pos: self.pos,
            stream: self.stream.clone(),
            seq: self.seq,
            kind: self.kind.clone(),
            at: self.at.clone(),
            payload: parse(&format!("event {}", self.pos), &self.payload)?,
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        })
    }
}

/// Walks the hash chains of a journal: give it every event in stream order, then in `seq`
/// order within a stream, and it stops at the first problem.
#[derive(Debug)]
pub(crate) struct ChainWalk {
    report: VerifyReport,
    /// The last event checked: stream, seq, hash and position.
    last: Option<(String, u64, String, i64)>,
}

impl ChainWalk {
    /// A walk that has seen nothing yet.
    pub(crate) fn new() -> ChainWalk {
        ChainWalk { report: VerifyReport { events: 0, streams: 0, first_problem: None }, last: None }
    }

    /// Checks the next event; `false` when it is the first problem found (stop there).
    pub(crate) fn check(&mut self, e: &EventRecord) -> bool {
        let report = &mut self.report;
        report.events += 1;
        let (expected_seq, expected_prev, last_pos) = match &self.last {
            Some((s, n, h, p)) if *s == e.stream => (n + 1, h.clone(), Some(*p)),
            _ => {
                report.streams += 1;
                (1, GENESIS_HASH.to_string(), None)
            }
        };
        let problem = if e.seq != expected_seq {
            Some(format!(
                "expected event {expected_seq} but found {}: events {expected_seq}..{} were removed",
                e.seq,
                e.seq.saturating_sub(1)
            ))
        } else if e.prev_hash != expected_prev {
            Some(
                "its link to the previous event does not match: an event was removed, replaced or reordered"
                    .to_string(),
            )
        } else if last_pos.is_some_and(|p| p > e.pos) {
            Some("it was stored before the event that precedes it: events were reordered".to_string())
        } else if event_hash(&e.prev_hash, &e.stream, e.seq, &e.kind, &e.at, &e.payload) != e.hash {
            Some(format!("its content does not match its hash: the `{}` event was altered", e.kind))
        } else {
            None
        };
        if let Some(problem) = problem {
            report.first_problem = Some(VerifyProblem {
                stream: e.stream.clone(),
                seq: expected_seq.min(e.seq),
                pos: Some(e.pos),
                problem,
            });
            return false;
        }
        self.last = Some((e.stream.clone(), e.seq, e.hash.clone(), e.pos));
        true
    }

    /// What the walk found.
    pub(crate) fn report(self) -> VerifyReport {
        self.report
    }
}

/// The first thing wrong in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// Stream of the bad event.
    pub stream: String,
    /// Position in the stream where the chain breaks.
    pub seq: u64,
    /// Global position of the bad event, when it exists.
    pub pos: Option<i64>,
    /// What is wrong.
    pub problem: String,
}

/// What `audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Streams checked.
    pub streams: u64,
    /// The first problem, in stream order; `None` when every chain is intact.
    pub first_problem: Option<VerifyProblem>,
}

impl VerifyReport {
    /// Whether every chain is intact.
    pub fn ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

/// RFC 6962 leaf hash of an event's hash text.
fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node hash.
fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash over `leaves` (each leaf is an event's hash text).
pub fn merkle_root(leaves: &[String]) -> [u8; 32] {
    fn mth(leaves: &[String]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(leaves.first().map(|s| s.as_bytes()).unwrap_or_default()),
            n => {
                // The largest power of two smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                let (l, r) = leaves.split_at(k);
                node_hash(&mth(l), &mth(r))
            }
        }
    }
    mth(leaves)
}

/// The same RFC 6962 tree as [`merkle_root`], grown one leaf at a time. It keeps only the roots
/// of its perfect subtrees, one per bit set in its size (largest first), so adding a leaf costs
/// about two hashes and the root a few dozen, whatever the size. A store keeps one so that the
/// tree head of a journal of millions of events does not re-hash all of them each checkpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct MerkleFrontier {
    size: u64,
    peaks: Vec<[u8; 32]>,
}

impl MerkleFrontier {
    /// Adds the next leaf (an event's hash text).
    pub(crate) fn push(&mut self, leaf: &str) {
        let mut hash = leaf_hash(leaf.as_bytes());
        // Like adding one to a binary counter: each trailing one bit of the size is a perfect
        // subtree of the new leaf's size, which the two merge into.
        let mut size = self.size;
        while size & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// Leaves added.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle tree hash over every leaf added, equal to [`merkle_root`] over them.
    pub(crate) fn root(&self) -> [u8; 32] {
        let mut peaks = self.peaks.iter().rev();
        let Some(smallest) = peaks.next() else { return Sha256::digest([]).into() };
        peaks.fold(*smallest, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_follows_rfc_6962_shape() {
        let leaves: Vec<String> = (0..7).map(|i| format!("e{i}")).collect();
        // Changing any leaf or dropping the last one changes the root.
        let root = merkle_root(&leaves);
        let mut altered = leaves.clone();
        altered[3] = "x".into();
        assert_ne!(root, merkle_root(&altered));
        assert_ne!(root, merkle_root(&leaves[..6]));
        // Known small trees.
        assert_eq!(merkle_root(&[]), <[u8; 32]>::from(Sha256::digest([])));
        let one = merkle_root(&leaves[..1]);
        let two = merkle_root(&leaves[..2]);
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(one);
        h.update(merkle_root(&leaves[1..2]));
        assert_eq!(two, <[u8; 32]>::from(h.finalize()));
    }

    #[test]
    fn the_frontier_grows_the_same_tree() {
        let leaves: Vec<String> = (0..130).map(|i| format!("sha256:{i:064x}")).collect();
        let mut frontier = MerkleFrontier::default();
        assert_eq!(frontier.root(), merkle_root(&[]));
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(leaf);
            assert_eq!(frontier.size(), i as u64 + 1);
            assert_eq!(frontier.root(), merkle_root(&leaves[..=i]), "{} leaves", i + 1);
        }
    }
}
