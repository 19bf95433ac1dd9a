//! Tells one client session when what it may see changes: `notifications/tools/list_changed`
//! when the tools offered to it (its endpoint's tools, filtered by its agent's allowlist, with
//! local overrides) differ from the last ones it could have read, and
//! `notifications/{prompts,resources}/list_changed` when an upstream says its prompts or
//! resources changed.
//!
//! Tools are compared rather than announced on every upstream change, so a virtual server's
//! clients hear of a change only when that server's offer to them changes, and a reconnect that
//! brings back the same tools is silent. Prompts and resources are not compared (listing them
//! means asking every upstream): every session hears of every such change and re-lists.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::service::Peer;

use crate::{CallerIdentity, Gateway};

/// How often a watcher with nothing to say checks whether its session has ended.
const CHECK_CLOSED: Duration = Duration::from_secs(30);

/// Watches for changes on behalf of one session until its transport closes, then ends the
/// session's resource subscriptions (`front` is its front's id).
pub(crate) fn watch(gateway: Arc<dyn Gateway>, caller: CallerIdentity, peer: Peer<RoleServer>, front: u64) {
    let mut tools_changed = gateway.upstreams().subscribe();
    let mut lists_changed = gateway.upstreams().subscribe_lists();
    let mut offered = gateway.tools_for(&caller);
    let mut lists = *lists_changed.borrow();
    tokio::spawn(async move {
        let upstreams = gateway.upstreams().clone();
        let watching = async move {
            loop {
                tokio::select! {
                    r = tools_changed.changed() => if r.is_err() { return },
                    r = lists_changed.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(CHECK_CLOSED) => {}
                }
                if peer.is_transport_closed() {
                    return;
                }
                let now = gateway.tools_for(&caller);
                if now != offered {
                    offered = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
                let counts = *lists_changed.borrow_and_update();
                if counts.prompts != lists.prompts && peer.notify_prompt_list_changed().await.is_err() {
                    return;
                }
                if counts.resources != lists.resources && peer.notify_resource_list_changed().await.is_err() {
                    return;
                }
                lists = counts;
            }
        };
        watching.await;
        upstreams.forget_session(front).await;
    });
}
