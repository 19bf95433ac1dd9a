//! After a decision: what runs now, and what the caller gets back.
//!
//! The HTTP API (`POST /v1/sessions/{id}/actions`) and the MCP gateway (`tools/call`, also after
//! a held call's approval arrives) both hand their submission to [`carry_out`], so they agree by
//! construction:
//!
//! - an action an agent runs itself (no upstream) is returned as decided: the agent runs an
//!   `executing` action and reports its result;
//! - a newly allowed upstream action is run now, by this caller;
//! - an approved upstream action is claimed; the one caller that wins the claim runs it, any
//!   other caller (a retry, a joined call, an idempotent replay) waits for that run to finish
//!   and gets its outcome;
//! - an upstream action already `executing` under someone else is waited for the same way;
//! - anything else (pending, denied, finished) is returned as it is.
//!
//! A run is not tied to its caller: over HTTP it runs on a task of its own
//! ([`carry_out_detached`]), and a run dropped anyway records its action `unknown`
//! ([`crate::engine::Sending`]), so no action stays `executing` because its caller went away.

use std::sync::Arc;
use std::time::Duration;

use airlock_core::ActionStatus;
use rmcp::model::CallToolResult;
use tokio_util::sync::CancellationToken;

use crate::engine::{ActionView, Claim, Engine, Error, Outcome, Result, Submission};
use crate::gateway::McpGateway;

/// How long a caller waits for a run that another caller holds. The run itself is bounded by
/// the upstream's time limit; this only bounds the wait for its record.
pub const RUNNING_WAIT: Duration = Duration::from_secs(3600);

/// What the caller gets back.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The action as it stands now, with its approval.
    pub view: ActionView,
    /// What the upstream returned, when this caller ran the call.
    pub returned: Option<CallToolResult>,
}

/// How the caller's own run is wired: its cancellation, and where upstream progress goes.
#[derive(Default)]
pub struct Run {
    /// Cancels this caller's run (a client that went away, an MCP `notifications/cancelled`).
    pub cancel: CancellationToken,
    /// What goes back to an MCP caller while the upstream runs: progress, requests, log messages.
    pub back: airlock_mcp::Backchannel,
}

/// [`carry_out`] on a task of its own, for a caller that may go away mid-call (an HTTP client
/// that disconnects drops its request handler): the run goes on without it, and its outcome is
/// recorded although nobody waits for it, instead of the action staying `executing`.
pub async fn carry_out_detached(
    engine: Engine,
    gateway: Option<Arc<McpGateway>>,
    submission: Submission,
) -> Result<Carried> {
    let task = tokio::spawn(async move { carry_out(&engine, gateway.as_deref(), submission, Run::default()).await });
    match task.await {
        Ok(carried) => carried,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Conflict("airlock is stopping; the call was not carried out to the end".into())),
    }
}

/// Takes a decided submission as far as it goes now (see the module documentation).
pub async fn carry_out(
    engine: &Engine,
    gateway: Option<&McpGateway>,
    submission: Submission,
    run: Run,
) -> Result<Carried> {
    let Submission { view, outcome } = submission;
    let unchanged = |view: ActionView| Ok(Carried { view, returned: None });
    let Some(gateway) = gateway.filter(|_| view.action.upstream.is_some()) else {
        return unchanged(view);
    };
    let approval = view.approval.clone();
    match (view.action.status, outcome) {
        (ActionStatus::Executing, Outcome::New) => {
            let (action, returned) = gateway.execute(&view.action, run.cancel, run.back).await;
            Ok(Carried { view: ActionView { action, approval }, returned: Some(returned) })
        }
        (ActionStatus::Executing, _) => {
            let view = engine.wait_for_change(&view.action.id, None, RUNNING_WAIT).await?;
            unchanged(view)
        }
        (ActionStatus::Approved, _) => match engine.claim_execution(&view.action.id).await? {
            Claim::Run(action) => {
                let (action, returned) = gateway.execute(&action, run.cancel, run.back).await;
                Ok(Carried { view: ActionView { action, approval }, returned: Some(returned) })
            }
            Claim::Running(action) => {
                let view = engine.wait_for_change(&action.id, None, RUNNING_WAIT).await?;
                unchanged(view)
            }
            Claim::Finished(action) | Claim::NotRunnable(action) => unchanged(ActionView { action: *action, approval }),
        },
        _ => unchanged(view),
    }
}
