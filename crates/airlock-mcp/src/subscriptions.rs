//! Resource subscriptions through airlock. A client's `resources/subscribe` is routed to the
//! upstream that offers the URI (as `resources/read` is); airlock holds one subscription per
//! upstream and URI, whoever asked, and forwards each `notifications/resources/updated` to
//! every session that subscribed to that URI at that upstream, and to no other. The upstream
//! subscription is dropped when its last subscriber unsubscribes or goes away, and made again
//! when the upstream reconnects.
// rmcp marks logging, sampling, elicitation, roots and subscriptions deprecated (SEP-2577, for
// protocol 2026-07-28); they are current in every version airlock serves (up to 2025-11-25).
#![allow(deprecated)]

use std::collections::HashMap;

use rmcp::model::ResourceUpdatedNotificationParam;

use crate::forward::Caller;
use airlock_core::sync::lock;

/// One session subscribed to a URI.
struct Subscriber {
    /// The front (MCP session) that subscribed.
    session: u64,
    caller: Caller,
}

/// The subscriptions held at one upstream, by URI.
#[derive(Default)]
pub(crate) struct Subscriptions {
    by_uri: std::sync::Mutex<HashMap<String, Vec<Subscriber>>>,
}

impl Subscriptions {
    /// Adds `session`'s subscription to `uri`; true when it is the first for that URI (airlock
    /// must then subscribe upstream).
    pub(crate) fn add(&self, uri: &str, session: u64, caller: Caller) -> bool {
        let mut by_uri = lock(&self.by_uri);
        let subscribers = by_uri.entry(uri.to_string()).or_default();
        let first = subscribers.is_empty();
        if !subscribers.iter().any(|s| s.session == session) {
            subscribers.push(Subscriber { session, caller });
        }
        first
    }

    /// Removes `session`'s subscription to `uri`: `None` when it had none, else whether the
    /// URI has no subscriber left (airlock must then unsubscribe upstream).
    pub(crate) fn remove(&self, uri: &str, session: u64) -> Option<bool> {
        let mut by_uri = lock(&self.by_uri);
        let subscribers = by_uri.get_mut(uri)?;
        let before = subscribers.len();
        subscribers.retain(|s| s.session != session);
        if subscribers.len() == before {
            return None;
        }
        let last = subscribers.is_empty();
        if last {
            by_uri.remove(uri);
        }
        Some(last)
    }

    /// Removes every subscription of `session`; returns the URIs left without subscribers.
    pub(crate) fn remove_session(&self, session: u64) -> Vec<String> {
        let mut by_uri = lock(&self.by_uri);
        let mut emptied = Vec::new();
        by_uri.retain(|uri, subscribers| {
            subscribers.retain(|s| s.session != session);
            if subscribers.is_empty() {
                emptied.push(uri.clone());
            }
            !subscribers.is_empty()
        });
        emptied
    }

    /// Every URI with subscribers, to subscribe again after a reconnect.
    pub(crate) fn uris(&self) -> Vec<String> {
        lock(&self.by_uri).keys().cloned().collect()
    }

    /// Forwards an update to the URI's subscribers and journals each delivery. Subscribers whose
    /// session has ended are dropped.
    pub(crate) async fn updated(&self, upstream: &str, params: ResourceUpdatedNotificationParam) {
        let callers: Vec<Caller> = {
            let mut by_uri = lock(&self.by_uri);
            let Some(subscribers) = by_uri.get_mut(&params.uri) else {
                tracing::debug!(%upstream, uri = %params.uri, "update for a URI nobody subscribed to");
                return;
            };
            subscribers.retain(|s| !s.caller.peer.is_transport_closed());
            subscribers.iter().map(|s| s.caller.clone()).collect()
        };
        let content = serde_json::json!({"uri": params.uri});
        for caller in callers {
            let (outcome, reason) = match caller.peer.notify_resource_updated(params.clone()).await {
                Ok(()) => ("delivered", None),
                Err(e) => ("failed", Some(e.to_string())),
            };
            caller.record("notifications/resources/updated", upstream, outcome, reason, content.clone());
        }
    }
}
