//! Domain types and the decision pipeline of airlock as pure logic.
//!
//! This crate holds what an action *is* (`Action`, `Decision`, `Approval`, `Session`, …), how a
//! call is canonicalised and digested, how policy output is combined into one decision, and the
//! host guards that run before and after policy. It never does IO, never spawns tasks and never
//! panics on input: the clock and the environment are arguments, so every decision it makes can be
//! reproduced from the journal.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod decision;
pub mod digest;
pub mod event;
pub mod guard;
pub mod identity;
pub mod limits;
pub mod model;
pub mod money;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod sync;
pub mod vote;

pub use decision::{ApprovalDefaults, PolicyFailure, PolicyOutput, apply_tier_floor, combine};
pub use digest::{action_digest, canonical_json};
pub use event::EventKind;
pub use identity::Identity;
pub use model::*;
