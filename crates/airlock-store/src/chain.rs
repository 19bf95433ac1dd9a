//! The hash chain: each event's hash covers the previous event's hash and the event's own
//! stream, position, kind, time and payload bytes, so that any change, removal or reordering
//! breaks the chain from that point on.

use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// RFC 6962 Merkle tree hash over `leaves` (each leaf is an event's hash text).
pub fn merkle_root(leaves: &[String]) -> [u8; 32] {
    fn leaf(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }
    fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }
    fn mth(leaves: &[String]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf(leaves.first().map(|s| s.as_bytes()).unwrap_or_default()),
            n => {
                // The largest power of two smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                let (l, r) = leaves.split_at(k);
                node(&mth(l), &mth(r))
            }
        }
    }
    mth(leaves)
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
}
