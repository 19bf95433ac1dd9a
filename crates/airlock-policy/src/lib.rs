//! Rego policy for airlock, run in-process by `regorus`.
//!
//! Loads a policy directory (`.rego` files plus optional `data.json`), names it by a content hash
//! (the *revision*), evaluates the host contract of package `airlock` (`deny`, `require_approval`,
//! `warn`, `cost_usd`, `redact`) under a time limit, and runs `test_*` rules from `*_test.rego` files. Evaluation
//! never fails open: an error or time-out is reported as such, and the caller turns it into a
//! deny. This crate does no network IO and never panics on a policy or an input.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod bundle;
mod testing;

pub use bundle::{Evaluation, Options, Policy};
pub use testing::{FileCoverage, TestCase, TestOutcome, TestReport};

use std::path::PathBuf;

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory holds no `.rego` file.
    #[error("no `.rego` files in `{dir}`; point `[policy] dir` at a directory of Rego policies")]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// A Rego file does not compile.
    #[error("policy `{path}` does not compile:{message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// regorus's message, with line, column and a snippet.
        message: String,
    },
    /// `data.json` is not valid JSON or can't be merged.
    #[error("policy data `{path}` is invalid: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The policy parses but fails when its entry points are evaluated (an unknown function, a
    /// conflict, a recursion).
    #[error("policy does not evaluate: {message}")]
    Evaluate {
        /// What was wrong.
        message: String,
    },
}
