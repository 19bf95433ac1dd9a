//! The text forms the journal keeps, the same for every backend: times, canonical event
//! payloads and the JSON documents of projections.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;

use crate::{Commit, Error, Projection, Result};

/// Formats a time the way the journal stores it (RFC 3339, microseconds, `Z`). Stored times
/// compare as text in time order.
pub(crate) fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A commit's JSON, made before it reaches the writer: canonical event payloads and projection
/// documents, in the commit's order.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) payloads: Vec<String>,
    pub(crate) documents: Vec<String>,
}

impl Prepared {
    /// Serialises `commit`'s payloads and documents.
    pub(crate) fn of(commit: &Commit) -> Result<Prepared> {
        let payloads = commit.events.iter().map(|e| airlock_core::canonical_json(&e.payload)).collect();
        let documents = commit.projections.iter().map(projection_json).collect::<Result<Vec<_>>>()?;
        Ok(Prepared { payloads, documents })
    }
}

/// The stored JSON document of a projection (empty for rows without one).
pub(crate) fn projection_json(p: &Projection) -> Result<String> {
    match p {
        Projection::Session(s) => to_json(s),
        Projection::Action(a) => to_json(a.as_ref()),
        Projection::Approval(a) => to_json(a),
        Projection::KillSwitch(k) => to_json(k),
        Projection::Breaker(b) => to_json(b),
        Projection::MfaGuard(g) => to_json(g),
        Projection::PolicyRevision(r) => to_json(r),
        Projection::IdempotencyKey { .. } => Ok(String::new()),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt { id: "new record".into(), message: e.to_string() })
}

/// Reads back a stored document (`id` names it in the error).
pub(crate) fn parse<T: DeserializeOwned>(id: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::Corrupt { id: id.to_string(), message: e.to_string() })
}

/// The API name of a status that serialises as a string (a session's).
pub(crate) fn status_name<T: serde::Serialize>(status: &T) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}
