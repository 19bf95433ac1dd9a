//! What clients send to upstreams besides calls and lists: `logging/setLevel`,
//! `resources/subscribe` and `resources/unsubscribe`, `notifications/roots/list_changed`; and
//! what airlock advertises to clients, from what the connected upstreams support.
// rmcp marks logging, sampling, elicitation, roots and subscriptions deprecated (SEP-2577, for
// protocol 2026-07-28); they are current in every version airlock serves (up to 2025-11-25).
#![allow(deprecated)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::RoleClient;
use rmcp::model::{
    LoggingLevel, ServerCapabilities, SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::Peer;

use super::{LIST_TIMEOUT, Upstream, UpstreamError, Upstreams, failed, read_conn};
use crate::forward::{Caller, rank};

/// Every level, least severe first, to turn a rank back into a level.
const LEVELS: [LoggingLevel; 8] = [
    LoggingLevel::Debug,
    LoggingLevel::Info,
    LoggingLevel::Notice,
    LoggingLevel::Warning,
    LoggingLevel::Error,
    LoggingLevel::Critical,
    LoggingLevel::Alert,
    LoggingLevel::Emergency,
];

/// What the connected upstreams support, together: what airlock may advertise to clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// Some upstream offers prompts.
    pub prompts: bool,
    /// Some upstream offers resources.
    pub resources: bool,
    /// Some upstream lets clients subscribe to resources.
    pub subscribe: bool,
    /// Some upstream sends log messages (`logging`).
    pub logging: bool,
    /// Some upstream completes arguments.
    pub completions: bool,
}

async fn set_level(peer: &Peer<RoleClient>, level: LoggingLevel) -> Result<(), rmcp::ServiceError> {
    peer.set_level(SetLevelRequestParams::new(level)).await
}

async fn subscribe(peer: &Peer<RoleClient>, uri: &str) -> Result<(), rmcp::ServiceError> {
    peer.subscribe(SubscribeRequestParams::new(uri)).await
}

async fn unsubscribe(peer: &Peer<RoleClient>, uri: &str) -> Result<(), rmcp::ServiceError> {
    peer.unsubscribe(UnsubscribeRequestParams::new(uri)).await
}

impl Upstreams {
    /// What the connected upstreams support, together.
    pub fn offered(&self) -> Offered {
        let mut offered = Offered::default();
        for u in self.inner.iter() {
            let Some(info) = read_conn(u).and_then(|c| c.peer.peer_info()) else { continue };
            let caps: &ServerCapabilities = &info.capabilities;
            offered.prompts |= caps.prompts.is_some();
            offered.resources |= caps.resources.is_some();
            offered.subscribe |= caps.resources.as_ref().is_some_and(|r| r.subscribe == Some(true));
            offered.logging |= caps.logging.is_some();
            offered.completions |= caps.completions.is_some();
        }
        offered
    }

    /// A client asked for log messages of `level` and above: every upstream that logs is asked
    /// for them, unless a client already asked for more (airlock filters per session, so the
    /// upstream sends the most verbose level any session wants). Failures are logged, not
    /// returned: one upstream must not fail another's session.
    pub async fn set_level(&self, level: LoggingLevel) {
        let wanted = rank(level) + 1;
        let asks = self.inner.iter().filter_map(|u| {
            let before = u.log_level.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (current == 0 || wanted < current).then_some(wanted)
            });
            let conn = read_conn(u)?;
            let logs = conn.peer.peer_info().is_some_and(|i| i.capabilities.logging.is_some());
            (before.is_ok() && logs).then_some(async move {
                match tokio::time::timeout(LIST_TIMEOUT, set_level(&conn.peer, level)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(upstream = %u.spec.name, error = %e, "logging/setLevel failed"),
                    Err(_) => tracing::warn!(upstream = %u.spec.name, "logging/setLevel timed out"),
                }
            })
        });
        futures::future::join_all(asks).await;
    }

    /// Subscribes `session` (a front's id) to `uri` at `upstream`.
    pub async fn subscribe_resource(
        &self,
        upstream: &str,
        uri: &str,
        session: u64,
        caller: Caller,
    ) -> Result<(), UpstreamError> {
        let (up, conn) = self.connected(upstream)?;
        let supports = conn
            .peer
            .peer_info()
            .is_some_and(|i| i.capabilities.resources.as_ref().is_some_and(|r| r.subscribe == Some(true)));
        if !supports {
            return Err(UpstreamError::Failed {
                name: upstream.to_string(),
                message: "does not support resource subscriptions".into(),
            });
        }
        if up.subscriptions.add(uri, session, caller) {
            let answer = tokio::time::timeout(LIST_TIMEOUT, subscribe(&conn.peer, uri)).await;
            let error = match answer {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => failed(up, e),
                Err(_) => UpstreamError::Timeout { name: upstream.to_string(), seconds: LIST_TIMEOUT.as_secs_f64() },
            };
            up.subscriptions.remove(uri, session);
            return Err(error);
        }
        Ok(())
    }

    /// Ends `session`'s subscription to `uri`, wherever it is held; false when it had none.
    pub async fn unsubscribe_resource(&self, uri: &str, session: u64) -> bool {
        let mut had = false;
        for up in self.inner.iter() {
            match up.subscriptions.remove(uri, session) {
                None => {}
                Some(last) => {
                    had = true;
                    if last {
                        drop_upstream_subscription(up, uri).await;
                    }
                }
            }
        }
        had
    }

    /// Ends every subscription of a session that has gone.
    pub async fn forget_session(&self, session: u64) {
        for up in self.inner.iter() {
            for uri in up.subscriptions.remove_session(session) {
                drop_upstream_subscription(up, &uri).await;
            }
        }
    }

    /// Tells every connected upstream that a client's roots changed. Upstreams ask for roots
    /// per call, so the next call's `roots/list` reaches the right client either way; this lets
    /// an upstream that caches roots drop them.
    pub async fn roots_changed(&self) {
        let notices = self.inner.iter().filter_map(|u| read_conn(u)).map(|conn| async move {
            let _ = tokio::time::timeout(LIST_TIMEOUT, conn.peer.notify_roots_list_changed()).await;
        });
        futures::future::join_all(notices).await;
    }
}

async fn drop_upstream_subscription(up: &Upstream, uri: &str) {
    let Some(conn) = read_conn(up) else { return };
    if let Ok(Err(e)) = tokio::time::timeout(LIST_TIMEOUT, unsubscribe(&conn.peer, uri)).await {
        tracing::debug!(upstream = %up.spec.name, %uri, error = %e, "resources/unsubscribe failed");
    }
}

/// After a (re)connect: asks the upstream again for the log level and subscriptions clients
/// hold, which a new connection does not have.
pub(super) async fn restore(up: Arc<Upstream>, peer: Peer<RoleClient>) {
    let Some(info) = peer.peer_info() else { return };
    let level = up.log_level.load(Ordering::SeqCst);
    if level > 0
        && info.capabilities.logging.is_some()
        && let Some(level) = LEVELS.get(usize::from(level - 1))
        && let Err(e) = set_level(&peer, *level).await
    {
        tracing::warn!(upstream = %up.spec.name, error = %e, "logging/setLevel after reconnect failed");
    }
    for uri in up.subscriptions.uris() {
        if let Err(e) = subscribe(&peer, &uri).await {
            tracing::warn!(upstream = %up.spec.name, %uri, error = %e, "resources/subscribe after reconnect failed");
        }
    }
}
