//! The moment an upstream call leaves airlock, and how it ends.
//!
//! A kill switch must stop every call it covers that has not been sent, and cancel every call it
//! covers that has. Checking the switches at the decision or the claim is not enough: a switch
//! engaged between that check and the send (while a slow policy runs, say) would see no call in
//! flight and stop nothing. So the last check happens here, at the moment of sending, under the
//! same lock under which [`Engine::engage_kill`] publishes a switch and cancels the calls in
//! flight: a switch is either seen by the sender, or sees the call.

use super::*;

/// How an upstream call airlock sent ended, for [`Engine::record_execution`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// The upstream answered: `succeeded` or `failed`, by the result's `ok`.
    Answered,
    /// airlock stopped waiting before an answer came (a time-out, a kill switch, the caller
    /// cancelling or going away): the upstream may have acted, so the action becomes `unknown`.
    Unanswered,
}

/// The answer to [`Engine::begin_send`].
#[derive(Debug)]
pub enum Gate {
    /// Send it: the call is registered in flight until the [`Sending`] is finished or dropped.
    Open(Sending),
    /// A kill switch covers the call: it was not sent, and the action is now `cancelled`.
    Closed {
        /// The action as it stands now.
        action: Box<Action>,
        /// Which kill switch, and its reason.
        reason: Reason,
    },
}

/// An upstream call in flight, cancellable by a kill switch.
pub(super) struct InFlight {
    agent: String,
    upstream: Option<String>,
    tool: String,
    cancel: CancellationToken,
    /// Why a kill switch cancelled it, if one did.
    killed: Option<Reason>,
}

impl InFlight {
    /// Cancels the call if `ks` covers it, and remembers why.
    pub(super) fn kill_if_covered(&mut self, ks: &KillSwitch) {
        if guard::kill_switch_covers(ks, &self.agent, self.upstream.as_deref(), &self.tool) {
            self.killed.get_or_insert_with(|| kill_reason(ks));
            self.cancel.cancel();
        }
    }
}

/// An upstream call that is out: registered in flight, so that a kill switch engaged from now on
/// cancels it. Finish it with its outcome; dropped unfinished (the task that ran it went away),
/// it records the action `unknown`, since the call may have reached the upstream.
pub struct Sending {
    engine: Engine,
    action_id: String,
    finished: bool,
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending").field("action_id", &self.action_id).finish_non_exhaustive()
    }
}

impl Sending {
    /// Why a kill switch cancelled this call, if one did.
    pub fn killed(&self) -> Option<Reason> {
        lock(&self.engine.inner.inflight).get(&self.action_id).and_then(|f| f.killed.clone())
    }

    /// Records how the call ended ([`Engine::record_execution`]) and forgets it.
    pub async fn finish(mut self, result: ActionResult, end: CallEnd) -> Result<Action> {
        self.engine.forget_inflight(&self.action_id);
        let recorded = self.engine.record_execution(&self.action_id, result, end).await;
        self.finished = true;
        recorded
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.engine.forget_inflight(&self.action_id);
        if self.finished {
            return;
        }
        // Dropped while the call was out: nobody will record its answer, and it must not stay
        // `executing`. Without a runtime (the process is stopping), the next start marks it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (engine, action_id) = (self.engine.clone(), std::mem::take(&mut self.action_id));
        runtime.spawn(async move {
            let result = ActionResult {
                ok: false,
                output: Value::Null,
                error: Some(
                    "airlock stopped waiting for the call when the caller that ran it went away; its outcome is unknown"
                        .into(),
                ),
                reported_by: Reporter::Airlock,
                duration_ms: None,
                cost_usd: None,
                at: engine.now(),
            };
            if let Err(e) = engine.record_execution(&action_id, result, CallEnd::Unanswered).await {
                tracing::warn!(action = %action_id, error = %e, "an abandoned upstream call was not recorded `unknown`");
            }
        });
    }
}

impl Engine {
    /// The last check before an `executing` upstream action is sent: refused when a kill switch
    /// covers it (the action is recorded `cancelled` with that switch's reason), otherwise the
    /// call is registered in flight, so that a kill switch engaged later cancels it. See the
    /// module documentation for why this happens under the kill switches' lock.
    pub async fn begin_send(&self, action: &Action, cancel: CancellationToken) -> Result<Gate> {
        self.kill_switches_certain()?;
        let covering = {
            let mut inflight = lock(&self.inner.inflight);
            let kills = self.kill_switch_list();
            let covering = kills
                .iter()
                .find(|k| guard::kill_switch_covers(k, &action.agent_id, action.upstream.as_deref(), &action.tool))
                .cloned();
            if covering.is_none() {
                inflight.insert(
                    action.id.clone(),
                    InFlight {
                        agent: action.agent_id.clone(),
                        upstream: action.upstream.clone(),
                        tool: action.tool.clone(),
                        cancel,
                        killed: None,
                    },
                );
            }
            covering
        };
        match covering {
            None => Ok(Gate::Open(Sending { engine: self.clone(), action_id: action.id.clone(), finished: false })),
            Some(ks) => {
                let action = Box::new(self.withdraw_unsent(&action.id, &ks).await?);
                Ok(Gate::Closed { action, reason: kill_reason(&ks) })
            }
        }
    }

    /// `executing → cancelled` for an upstream call a kill switch stopped before it was sent.
    async fn withdraw_unsent(&self, action_id: &str, ks: &KillSwitch) -> Result<Action> {
        let action = self.stored_action(action_id).await?;
        let mut guard = self.lock_session(&action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        let mut action = self.stored_action(action_id).await?;
        if action.status != ActionStatus::Executing {
            return Ok(action);
        }
        self.cancel_unrun_locked(state, &mut action, ks).await?;
        drop(guard);
        self.notify(&action.id);
        Ok(action)
    }

    /// Publishes a new list of kill switches and cancels the calls in flight that `engaged`
    /// covers, under the lock [`Engine::begin_send`] checks them under.
    pub(super) fn publish_kill_switches(
        &self,
        change: impl FnOnce(&[KillSwitch]) -> Vec<KillSwitch>,
        engaged: Option<&KillSwitch>,
    ) {
        let mut inflight = lock(&self.inner.inflight);
        let list = change(&self.kill_switch_list());
        self.set_kill_switches(list);
        if let Some(ks) = engaged {
            for f in inflight.values_mut() {
                f.kill_if_covered(ks);
            }
        }
    }

    fn forget_inflight(&self, action_id: &str) {
        lock(&self.inner.inflight).remove(action_id);
    }
}

/// Why a kill switch cancelled an action.
pub(super) fn kill_reason(ks: &KillSwitch) -> Reason {
    Reason::new(guard::RULE_KILL_SWITCH, format!("kill switch {} engaged: {}", ks.id, ks.reason))
}
