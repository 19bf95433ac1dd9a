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
