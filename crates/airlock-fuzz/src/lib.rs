//! Fuzz targets for airlock.
//!
//! Each target takes arbitrary bytes, feeds them to the real code the way an attacker could, and
//! checks a property that must hold for every input. A panic, or an `Err(Finding)`, is a bug:
//!
//! | target | what the bytes become | property |
//! |---|---|---|
//! | [`config`] | an `airlock.toml` | parsing and validation answer `Ok` or a clear error; never a panic |
//! | [`http`] | a request to one of the HTTP API's endpoints, as an agent, an approver, an admin or nobody | every request is answered, never with a 500 or a dropped connection, and the server stays healthy |
//! | [`policy_input`] | the arguments of a tool call, under a policy that takes its whole decision from them | the call is answered with a decision (allow, deny or held), the policy input builder and the decision contract never fail open or crash |
//! | [`mcp`] | a JSON-RPC message posted to `/mcp` in an initialised session, in front of a real MCP server (tools, a resource) | answered, never a 500 or a dropped connection, and the server stays healthy |
//! | [`journal`] | corruption of a real journal file: raw bytes, or rows changed, reordered or deleted | verification answers without a panic; any change to an event's stored fields is reported |
//!
//! The servers are the real airlock ([`airlock_server::serve::start`]) in this process, each on
//! its own port of 127.0.0.1 with its own data directory, started on first use. `fuzz/` holds the
//! libFuzzer harness (`scripts/fuzz.sh` runs it); `tests/corpus.rs` replays the committed corpus
//! and random inputs through the same functions in the normal test suite.

mod journal;
mod server;
mod targets;
mod upstream;

pub use journal::journal;
pub use targets::{config, http, mcp, policy_input};

/// A property a target checks did not hold.
#[derive(Debug)]
pub struct Finding(pub String);

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fuzz target: `Ok` when every property held for the input.
pub type Target = fn(&[u8]) -> Result<(), Finding>;

/// The targets by name, as `fuzz/fuzz_targets/` and the corpus folders name them.
pub const TARGETS: &[(&str, Target)] =
    &[("config", config), ("http", http), ("policy_input", policy_input), ("mcp", mcp), ("journal", journal)];
