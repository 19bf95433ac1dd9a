//! Access tokens from an organisation's identity provider: which issuers airlock trusts, their
//! signing keys, and the checks a bearer token must pass before airlock believes what it says.
//!
//! airlock is the *protected resource* of the MCP authorization spec (OAuth 2.1, RFC 9728): an
//! agent brings an access token that an authorization server issued for airlock, and this crate
//! verifies it: the issuer is one configured, the signature verifies with a key the issuer
//! publishes (fetched from its JWKS, found by discovery or configured), the algorithm is on the
//! issuer's allowlist of asymmetric algorithms, the token is meant for airlock (`aud`) and is
//! current (`exp`, `nbf`, with a clock leeway). What it then establishes is a [`VerifiedToken`]:
//! its claims, read through [`claims`].
//!
//! It is also the OAuth *client* airlock is towards an upstream's authorization server: with an
//! upstream's client credentials it gets, caches and renews airlock's own access tokens for that
//! upstream ([`ClientCredentials`]).
//!
//! This crate is an HTTP *client* only (discovery documents, key sets, token requests); it never
//! serves HTTP, never maps a token to an agent (that is `airlock-server`'s configuration) and
//! never sends a token it checks anywhere: those stay in the process.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod claims;
mod client_credentials;
mod error;
mod keys;
mod options;
mod verify;

pub use client_credentials::{ClientCredentials, ClientCredentialsOptions, TokenEndpoint};
pub use error::Error;
pub use keys::provider_metadata;
pub use options::{ALLOWED_ALGORITHMS, Algorithm, IssuerOptions, fetchable, parse_algorithm};
pub use verify::{VerifiedToken, Verifier};
