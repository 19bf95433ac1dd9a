//! MCP sessions: which agent opened each one, which airlock session backs it, and whether it is
//! still in use.
//!
//! An `Mcp-Session-Id` is a bearer secret for its session: whoever presents it speaks in that
//! session. So each id is bound to the agent that opened it as soon as it exists (the `initialize`
//! answer carries it), and `/mcp` answers any request that carries an id with `404`, as for an
//! unknown session, unless the request comes from that agent (see `serve`). It is bound to the
//! endpoint it was opened on as well (`/mcp`, or a virtual server's `/mcp/{name}`): a session
//! offers what its endpoint offers, and policy sees that endpoint, for as long as it lasts.
//!
//! A session is idle while none of its requests is in progress (a response still being sent,
//! an event stream still open) and none has arrived; after `[mcp] session_idle_seconds` of that,
//! it expires: it is forgotten here, rmcp closes it, and the airlock session behind it is closed
//! as if the client had sent `DELETE`. rmcp's own idle timeout is not used: it counts messages,
//! so it would cut off a `tools/call` that waits silently for an approval or a slow upstream.
//!
//! Time is an input (the engine's clock), so the rules are tested without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// What is known of one MCP session.
#[derive(Debug, Clone)]
struct Entry {
    /// The agent that opened it; the only one that may use it.
    agent_id: String,
    /// The virtual server it was opened on (`None`: `/mcp`); the only endpoint it works on.
    server: Option<String>,
    /// The airlock session behind it, once its first `tools/call` opened one.
    session_id: Option<String>,
    /// When its last request arrived or finished.
    last_active: DateTime<Utc>,
    /// Its requests in progress.
    in_progress: u32,
}

/// An MCP session that ended (its owner's `DELETE`, or idleness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The `Mcp-Session-Id`.
    pub mcp_session: String,
    /// The agent that opened it.
    pub agent_id: String,
    /// The airlock session to close, if a `tools/call` opened one.
    pub session_id: Option<String>,
}

/// Every live MCP session. Cheap operations under one lock.
#[derive(Debug)]
pub struct McpSessions {
    idle: Duration,
    map: Mutex<HashMap<String, Entry>>,
}

impl McpSessions {
    /// No sessions yet; each expires after `idle` without use.
    pub fn new(idle: Duration) -> McpSessions {
        McpSessions { idle, map: Mutex::new(HashMap::new()) }
    }

    /// How long a session may stay idle.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Sessions known.
    pub fn len(&self) -> usize {
        crate::engine::lock(&self.map).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// rmcp created `mcp_session` for `agent_id` on the endpoint of `server` (its `initialize`
    /// answer names it).
    pub fn opened(&self, mcp_session: &str, agent_id: &str, server: Option<&str>, now: DateTime<Utc>) {
        let entry = Entry {
            agent_id: agent_id.to_string(),
            server: server.map(str::to_string),
            session_id: None,
            last_active: now,
            in_progress: 0,
        };
        crate::engine::lock(&self.map).insert(mcp_session.to_string(), entry);
    }

    /// A request of `agent_id` on `mcp_session` arrives at the endpoint of `server`: `true`, and
    /// the request counts as in progress until [`McpSessions::finish`], when that agent opened
    /// it there; `false` (unknown, someone else's, or another endpoint's) otherwise.
    pub fn begin(&self, mcp_session: &str, agent_id: &str, server: Option<&str>, now: DateTime<Utc>) -> bool {
        match crate::engine::lock(&self.map).get_mut(mcp_session) {
            Some(entry) if entry.agent_id == agent_id && entry.server.as_deref() == server => {
                entry.in_progress = entry.in_progress.saturating_add(1);
                entry.last_active = entry.last_active.max(now);
                true
            }
            _ => false,
        }
    }

    /// A request that [`McpSessions::begin`] admitted is done (its response is sent or dropped).
    pub fn finish(&self, mcp_session: &str, now: DateTime<Utc>) {
        if let Some(entry) = crate::engine::lock(&self.map).get_mut(mcp_session) {
            entry.in_progress = entry.in_progress.saturating_sub(1);
            entry.last_active = entry.last_active.max(now);
        }
    }

    /// Records the airlock session that backs `mcp_session`, if `agent_id` opened it.
    pub fn bind(&self, mcp_session: &str, agent_id: &str, session_id: &str) -> bool {
        match crate::engine::lock(&self.map).get_mut(mcp_session) {
            Some(entry) if entry.agent_id == agent_id => {
                entry.session_id = Some(session_id.to_string());
                true
            }
            _ => false,
        }
    }

    /// The owner ends `mcp_session`; anyone else ends nothing.
    pub fn end(&self, mcp_session: &str, agent_id: &str) -> Option<Ended> {
        let mut map = crate::engine::lock(&self.map);
        match map.get(mcp_session) {
            Some(entry) if entry.agent_id == agent_id => {
                map.remove(mcp_session).map(|e| ended(mcp_session.to_string(), e))
            }
            _ => None,
        }
    }

    /// Removes and returns every session that has had no request in progress and none arriving
    /// for at least the idle time before `now`.
    pub fn expire(&self, now: DateTime<Utc>) -> Vec<Ended> {
        let idle = chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        let mut map = crate::engine::lock(&self.map);
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.in_progress == 0 && now.signed_duration_since(e.last_active) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<Ended> = expired.into_iter().filter_map(|id| map.remove(&id).map(|e| ended(id, e))).collect();
        out.sort_by(|a, b| a.mcp_session.cmp(&b.mcp_session));
        out
    }
}

fn ended(mcp_session: String, e: Entry) -> Ended {
    Ended { mcp_session, agent_id: e.agent_id, session_id: e.session_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn sessions() -> McpSessions {
        let s = McpSessions::new(Duration::from_secs(60));
        s.opened("m-a", "agent-a", None, at(0));
        s
    }

    #[test]
    fn only_the_agent_that_opened_a_session_may_use_bind_or_end_it() {
        let s = sessions();
        assert!(!s.begin("m-a", "agent-b", None, at(1)), "another agent");
        assert!(!s.begin("m-unknown", "agent-a", None, at(1)), "an unknown id");
        assert!(!s.bind("m-a", "agent-b", "ses_b"));
        assert_eq!(s.end("m-a", "agent-b"), None);
        assert!(s.begin("m-a", "agent-a", None, at(1)));
        s.finish("m-a", at(2));
        assert!(s.bind("m-a", "agent-a", "ses_a"));
        let ended = s.end("m-a", "agent-a");
        assert_eq!(
            ended,
            Some(Ended { mcp_session: "m-a".into(), agent_id: "agent-a".into(), session_id: Some("ses_a".into()) })
        );
        assert!(s.is_empty());
        assert!(!s.begin("m-a", "agent-a", None, at(3)), "an ended session is unknown");
    }

    /// A session opened on a virtual server works there only, and one of `/mcp` only there, even
    /// for the agent that opened it.
    #[test]
    fn a_session_works_only_on_the_endpoint_that_opened_it() {
        let s = sessions();
        s.opened("m-files", "agent-a", Some("files"), at(0));
        assert!(!s.begin("m-a", "agent-a", Some("files"), at(1)), "a /mcp session on /mcp/files");
        assert!(!s.begin("m-files", "agent-a", None, at(1)), "a /mcp/files session on /mcp");
        assert!(!s.begin("m-files", "agent-a", Some("other"), at(1)), "on another server");
        assert!(!s.begin("m-files", "agent-b", Some("files"), at(1)), "another agent, right endpoint");
        assert!(s.begin("m-files", "agent-a", Some("files"), at(1)));
        assert!(s.begin("m-a", "agent-a", None, at(1)));
    }

    #[test]
    fn a_session_expires_after_the_idle_time_without_requests() {
        let s = sessions();
        assert_eq!(s.expire(at(59)), vec![]);
        // A request resets the idle time, from when it finishes.
        assert!(s.begin("m-a", "agent-a", None, at(50)));
        s.finish("m-a", at(55));
        assert_eq!(s.expire(at(114)), vec![]);
        let expired = s.expire(at(115));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].session_id, None, "it never made a call");
        assert!(s.is_empty());
        assert_eq!(s.expire(at(1000)), vec![], "once");
    }

    #[test]
    fn a_request_in_progress_is_not_idleness() {
        let s = sessions();
        assert!(s.bind("m-a", "agent-a", "ses_a"));
        assert!(s.begin("m-a", "agent-a", None, at(1)));
        assert!(s.begin("m-a", "agent-a", None, at(2)), "an event stream and a call at once");
        assert_eq!(s.expire(at(3600)), vec![], "a long call, or an open stream");
        s.finish("m-a", at(3600));
        assert_eq!(s.expire(at(3659)), vec![], "the stream is still open");
        s.finish("m-a", at(3660));
        assert_eq!(s.expire(at(3719)), vec![]);
        let expired = s.expire(at(3720));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].session_id.as_deref(), Some("ses_a"));
    }

    #[test]
    fn many_sessions_expire_together_and_others_stay() {
        let s = McpSessions::new(Duration::from_secs(10));
        for i in 0..100 {
            s.opened(&format!("m-{i:03}"), "agent-a", None, at(i));
        }
        let expired = s.expire(at(60));
        assert_eq!(expired.len(), 51, "those opened at 0..=50");
        assert_eq!(expired[0].mcp_session, "m-000");
        assert_eq!(s.len(), 49);
    }
}
