//! airlock's server: configuration, the decision pipeline with its IO, and the HTTP API.
//!
//! This crate wires the pure layers (`airlock-core`, `airlock-policy`) to the journal
//! (`airlock-store`) and to the network. Only this crate and `airlock-mcp` know HTTP, JSON-RPC or
//! wire DTOs; the pipeline's decisions are made in `airlock-core` and `airlock-policy`.

pub mod access;
pub mod api;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod engine;
pub mod executor;
pub mod gateway;
pub mod gateway_status;
pub mod human_sign_in;
pub mod input_schema;
pub mod journal;
pub mod lifecycle;
pub mod mcp_sessions;
pub mod mfa;
pub mod notify;
pub mod otel;
pub mod serve;
pub mod servers;
pub mod telemetry;
pub mod timeline;
pub mod ui;

pub use config::Config;
pub use engine::Engine;
