//! Integration tests against the real `airlock` binary and a real SQLite journal (a real
//! PostgreSQL one in `postgres`).
//!
//! One test binary with a module per area, not one binary per file: each integration test binary
//! links the whole server, so a dozen of them cost a dozen slow links and as many copies on disk.
//! The shared harness is `common`; run one area with a filter on its module path, e.g.
//! `cargo nextest run -p airlock-cli -E 'test(/^guards::/)'` or
//! `cargo test -p airlock-cli --test it guards::`.

mod common;
mod raw_mcp;

mod attacks_approvals;
mod attacks_budgets;
mod attacks_floods;
mod attacks_identities;
mod attacks_integrity;
mod attacks_kill_race;
mod attacks_outputs;
mod attacks_reads;
mod attacks_requests;
mod audit;
mod audit_anchor;
mod cli;
mod conformance;
mod connection_limits;
mod forwarding;
mod guards;
mod http_api;
mod identity;
mod identity_humans;
mod identity_upstream;
mod interop;
mod latency;
mod mcp_gateway;
mod metrics;
mod notifications;
mod plan_handoffs;
mod plans;
mod plans_cli;
mod policy_lifecycle;
mod postgres;
mod replicas;
mod traces;
mod virtual_servers;
mod web_ui;
mod web_ui_plans;
