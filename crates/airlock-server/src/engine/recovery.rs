//! Upstream calls whose outcome no process will learn: left `executing` by a process that
//! stopped (a journal of its own) or by a replica that is gone (a shared one).

use std::sync::Arc;

use airlock_core::event::EventKind;
use airlock_core::model::{ActionResult, ActionStatus, Reporter};
use airlock_store::{Commit, Projection, Store};
use serde_json::{Value, json};

use super::{Clock, Result};

/// Marks `unknown` the upstream calls left `executing` by a process that stopped: on a journal
/// of its own, every such call at start (this process has sent nothing yet); on a shared one,
/// the calls of replicas that are gone (their lock can be taken), at start and on the leader
/// from time to time. Calls recorded before replicas were named are left as they are: whose they
/// are can't be known. They are never retried (DESIGN.md: at most once). How many it marked.
pub(super) async fn mark_lost_calls(store: &Arc<dyn Store>, clock: &dyn Clock) -> Result<usize> {
    let mut marked = 0;
    let in_flight = store.actions_in_status(ActionStatus::Executing).await?;
    for mut action in in_flight {
        if action.upstream.is_none() {
            continue;
        }
        let _gone = if store.shared() {
            let Some(owner) = action.replica.clone() else { continue };
            let Some(gone) = store.try_lock(airlock_store::LockScope::Replica(&owner)).await? else { continue };
            let Some(session) = store.lock(airlock_store::LockScope::Session(&action.session_id)).await? else {
                continue;
            };
            // Re-read under the session's lock: the call may have finished meanwhile.
            match store.action(&action.id).await? {
                Some(now) if now.status == ActionStatus::Executing => action = now,
                _ => continue,
            }
            Some((gone, session))
        } else {
            None
        };
        let now = clock.now();
        action.status = ActionStatus::Unknown;
        action.updated_at = now;
        action.result = Some(ActionResult {
            ok: false,
            output: Value::Null,
            error: Some("airlock stopped while the call was in flight; its outcome is unknown".into()),
            reported_by: Reporter::Airlock,
            duration_ms: None,
            cost_usd: None,
            at: now,
        });
        let mut commit = Commit::default();
        commit
            .event(
                &action.session_id,
                EventKind::ActionCompleted,
                now,
                json!({"action_id": action.id, "status": action.status, "result": action.result}),
            )
            .project(Projection::Action(Box::new(action)));
        store.commit(commit).await?;
        marked += 1;
    }
    Ok(marked)
}
