//! What crosses airlock besides calls and lists: what an upstream asks of the client whose call
//! it is serving (`sampling/createMessage`, `elicitation/create`, `roots/list`), what it tells
//! clients (`notifications/message`, `notifications/resources/updated`), and the journal record
//! of each.
//!
//! An upstream connection is shared by every session, so airlock has to know which client a
//! message is for. A request that an HTTP upstream sends on the response stream of one of
//! airlock's `tools/call`s belongs to that call (rmcp marks it with the stream it came on). A
//! request without that mark (a stdio upstream, or the standalone stream) and a log message go
//! to the session whose calls are in flight at that upstream, but only when exactly one session
//! has calls there: with two, airlock cannot tell which one the message is for, so a request is
//! refused and a log message is kept from both (a hostile upstream must not be able to reach
//! another agent's client). A request is forwarded only when the client advertised the
//! capability; otherwise the upstream gets an error.
// rmcp marks logging, sampling, elicitation, roots and subscriptions deprecated (SEP-2577, for
// protocol 2026-07-28); they are current in every version airlock serves (up to 2025-11-25).
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rmcp::model::{LoggingLevel, RequestId, ServerRequest};
use rmcp::service::{InboundStreamOrigin, OriginatingRequestId, Peer};
use rmcp::{ErrorData, RoleServer};
use serde::Serialize;

use crate::Gateway;

/// The client whose call an upstream is serving: where that upstream's requests and messages
/// for it go.
#[derive(Clone)]
pub struct Caller {
    /// The client's MCP session.
    pub peer: Peer<RoleServer>,
    /// The client's request being served (its `tools/call`): requests for the client ride the
    /// response stream of that request.
    pub request: RequestId,
    /// The agent.
    pub agent_id: String,
    /// The airlock session.
    pub session_id: String,
    /// The least severe log level the client wants (`logging/setLevel`).
    pub level: LogLevel,
    /// Journals what is forwarded.
    pub gateway: Arc<dyn Gateway>,
    /// The action being run, once the gateway runs it.
    pub action: Option<ActionRef>,
}

/// The action a forwarded message belongs to.
#[derive(Debug, Clone)]
pub struct ActionRef {
    /// Its id.
    pub id: String,
    /// Whether its decision redacts anything: forwarded content is then left out of the journal.
    pub redacts: bool,
}

/// What a call carries back to its client: upstream progress, and the client itself for the
/// upstream's requests and messages. Empty for calls that have no MCP client (the HTTP API).
#[derive(Clone, Default)]
pub struct Backchannel {
    /// Relays the upstream's progress notifications; `None` when the client sent no token.
    pub progress: Option<crate::upstream::ProgressRelay>,
    /// The client, for sampling, elicitation, roots and log messages.
    pub caller: Option<Caller>,
}

/// One session's logging level, shared between its front and its calls. Unset, every message
/// is forwarded (the protocol leaves it to the server until the client sets a level).
#[derive(Debug, Clone, Default)]
pub struct LogLevel(Arc<AtomicU8>);

impl LogLevel {
    /// Sets the least severe level the client wants.
    pub fn set(&self, level: LoggingLevel) {
        self.0.store(rank(level) + 1, Ordering::SeqCst);
    }

    /// Whether a message of `level` is wanted.
    pub fn wants(&self, level: LoggingLevel) -> bool {
        let min = self.0.load(Ordering::SeqCst);
        min == 0 || rank(level) + 1 >= min
    }
}

/// Severity order: `debug` is the least severe.
pub fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// One message that crossed airlock between an upstream and a client (or was refused): what the
/// journal records as `mcp.forwarded`.
#[derive(Debug, Clone, Serialize)]
pub struct Forwarded {
    /// The MCP method, e.g. `sampling/createMessage` or `notifications/message`.
    pub method: String,
    /// The upstream on one end.
    pub upstream: String,
    /// The client's agent.
    pub agent_id: String,
    /// The client's airlock session.
    pub session_id: String,
    /// The action whose call caused it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// `delivered`, `refused` (airlock did not forward it) or `failed` (the client did not answer).
    pub outcome: &'static str,
    /// Why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The message's parameters and the answer, unless the action's decision redacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
    /// Set when content was left out because the action's decision redacts.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_withheld: bool,
}

impl Caller {
    /// A journal record of `method` forwarded for this caller.
    pub fn record(
        &self,
        method: &str,
        upstream: &str,
        outcome: &'static str,
        reason: Option<String>,
        content: serde_json::Value,
    ) {
        let redacts = self.action.as_ref().is_some_and(|a| a.redacts);
        self.gateway.forwarded(Forwarded {
            method: method.to_string(),
            upstream: upstream.to_string(),
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            action_id: self.action.as_ref().map(|a| a.id.clone()),
            outcome,
            reason,
            content: (!redacts).then_some(content),
            content_withheld: redacts,
        });
    }

    /// Sends `request` to the client on the response stream of the call it belongs to, and waits
    /// for the answer at most `limit`.
    pub(crate) async fn ask(
        &self,
        mut request: ServerRequest,
        limit: Duration,
    ) -> Result<rmcp::model::ClientResult, ErrorData> {
        use rmcp::model::GetExtensions;
        request.extensions_mut().insert(OriginatingRequestId(self.request.clone()));
        let peer = self.peer.clone();
        // A task of its own: rmcp marks a request sent from inside a handler with that
        // handler's request (here the upstream's), which would send it to the wrong stream.
        let sent = tokio::spawn(async move { tokio::time::timeout(limit, peer.send_request(request)).await });
        match sent.await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(rmcp::ServiceError::McpError(e)))) => Err(e),
            Ok(Ok(Err(e))) => Err(ErrorData::internal_error(format!("the client did not answer: {e}"), None)),
            Ok(Err(_)) => Err(ErrorData::internal_error(
                format!("the client did not answer within {:.0}s", limit.as_secs_f64()),
                None,
            )),
            Err(e) => Err(ErrorData::internal_error(format!("forwarding to the client failed: {e}"), None)),
        }
    }
}

/// Calls in flight at one upstream, by the id of airlock's request upstream, with their client
/// (`None` for calls without an MCP client, such as the HTTP API's); and the calls that ended
/// within [`GRACE`], because rmcp hands each notification to a task of its own, which may run
/// after the call's answer has been delivered.
#[derive(Default)]
pub(crate) struct InFlight {
    calls: std::sync::Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    running: HashMap<RequestId, Option<Caller>>,
    ended: std::collections::VecDeque<(std::time::Instant, Option<Caller>)>,
}

/// How long a call that ended still receives its upstream's log messages.
const GRACE: Duration = Duration::from_millis(250);

/// Why an upstream's message could not be given to a client.
pub(crate) const NO_CALL: &str = "no call with an MCP client is in flight at this upstream";
pub(crate) const NO_CLIENT: &str = "the call this belongs to has no MCP client (it came through the HTTP API)";
pub(crate) const AMBIGUOUS: &str =
    "calls from several sessions are in flight at this upstream, so airlock cannot tell which client this is for";

impl InFlight {
    pub(crate) fn insert(&self, id: RequestId, caller: Option<Caller>) {
        airlock_core::sync::lock(&self.calls).running.insert(id, caller);
    }

    pub(crate) fn remove(&self, id: &RequestId) {
        let mut calls = airlock_core::sync::lock(&self.calls);
        if let Some(caller) = calls.running.remove(id) {
            calls.ended.push_back((std::time::Instant::now(), caller));
        }
    }

    /// The caller a message from the upstream is for: the call whose response stream it came
    /// on; without that mark, the one session with calls in flight or just ended (a call
    /// without a client counts as a session of its own).
    pub(crate) fn route(&self, origin: Option<&InboundStreamOrigin>) -> Result<Caller, &'static str> {
        let mut calls = airlock_core::sync::lock(&self.calls);
        if let Some(InboundStreamOrigin::OutboundRequest(id)) = origin
            && let Some(call) = calls.running.get(id)
        {
            return call.clone().ok_or(NO_CLIENT);
        }
        let now = std::time::Instant::now();
        while calls.ended.front().is_some_and(|(at, _)| now.duration_since(*at) > GRACE) {
            calls.ended.pop_front();
        }
        // A call that ended counts only while its client can still hear: a session that closed
        // (as a client does after its last call) receives nothing, so it makes nothing ambiguous.
        let open = |c: &&Option<Caller>| c.as_ref().is_none_or(|c| !c.peer.is_transport_closed());
        let mut callers = calls.running.values().chain(calls.ended.iter().map(|(_, c)| c).filter(open));
        let first = callers.next().ok_or(NO_CALL)?;
        if callers.any(|c| match (c, first) {
            (Some(c), Some(first)) => c.session_id != first.session_id,
            _ => true,
        }) {
            return Err(AMBIGUOUS);
        }
        first.clone().ok_or(NO_CLIENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_level_keeps_messages_at_least_as_severe() {
        let level = LogLevel::default();
        assert!(level.wants(LoggingLevel::Debug), "unset: everything is forwarded");
        level.set(LoggingLevel::Warning);
        assert!(!level.wants(LoggingLevel::Info));
        assert!(level.wants(LoggingLevel::Warning));
        assert!(level.wants(LoggingLevel::Emergency));
        level.set(LoggingLevel::Debug);
        assert!(level.wants(LoggingLevel::Debug));
    }
}
