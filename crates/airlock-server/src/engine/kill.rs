use super::send::kill_reason;
use super::*;

impl Engine {
    pub async fn engage_kill(
        &self,
        by: &str,
        scope: KillScope,
        target: Option<String>,
        reason: String,
    ) -> Result<KillSwitch> {
        let target = target.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        match (scope, &target) {
            (KillScope::All, Some(_)) => return Err(Error::Invalid("scope `all` takes no `target`".into())),
            (KillScope::Agent | KillScope::Upstream | KillScope::Tool, None) => {
                return Err(Error::Invalid(format!("scope `{}` needs a `target`", scope.as_str())));
            }
            _ => {}
        }
        if reason.trim().is_empty() {
            return Err(Error::Invalid("a kill switch needs a `reason`; it is quoted in every denial".into()));
        }
        let now = self.now();
        let ks = KillSwitch {
            id: new_id("kill"),
            scope,
            target,
            reason: reason.trim().to_string(),
            engaged_by: by.to_string(),
            engaged_at: now,
            released_by: None,
            released_at: None,
        };
        let mut commit = Commit::default();
        commit
            .event(SYSTEM_STREAM, EventKind::KillEngaged, now, to_value(&ks))
            .project(Projection::KillSwitch(ks.clone()));
        self.commit(commit).await?;
        // From here on no call it covers is sent, and those already out are cancelled (the
        // upstream hears `notifications/cancelled`): both under the lock the sender checks under.
        self.publish_kill_switches(|list| std::iter::once(ks.clone()).chain(list.iter().cloned()).collect(), Some(&ks));
        self.cancel_covered(&ks).await?;
        self.cancel_covered_approved(&ks).await?;
        Ok(ks)
    }

    /// Approved actions that have not run yet are cancelled by a kill switch that covers them:
    /// an approval given before the switch must not let the action through after it.
    pub(super) async fn cancel_covered_approved(&self, ks: &KillSwitch) -> Result<()> {
        let approved = self.inner.store.actions_in_status(ActionStatus::Approved).await?;
        for action in approved {
            if !guard::kill_switch_covers(ks, &action.agent_id, action.upstream.as_deref(), &action.tool) {
                continue;
            }
            let mut guard = self.lock_session(&action.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let Some(mut action) = self.inner.store.action(&action.id).await? else { continue };
            if action.status != ActionStatus::Approved {
                continue;
            }
            self.cancel_unrun_locked(state, &mut action, ks).await?;
            drop(guard);
            self.notify(&action.id);
        }
        Ok(())
    }

    /// `approved | executing → cancelled` by a kill switch, for an action that has not been sent;
    /// journaled. The caller holds the session's lock and notifies the action's watchers after
    /// releasing it.
    pub(super) async fn cancel_unrun_locked(
        &self,
        state: &mut SessionCell,
        action: &mut Action,
        ks: &KillSwitch,
    ) -> Result<()> {
        let now = self.now();
        action.status = ActionStatus::Cancelled;
        action.updated_at = now;
        let reason = kill_reason(ks);
        let mut commit = Commit::default();
        commit
            .event(
                &action.session_id,
                EventKind::ActionCancelled,
                now,
                json!({"action_id": action.id, "reason": reason}),
            )
            .project(Projection::Action(Box::new(action.clone())));
        self.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        Ok(())
    }

    pub(super) async fn cancel_covered(&self, ks: &KillSwitch) -> Result<()> {
        let pending = self.inner.store.approvals(Some(ApprovalStatus::Pending), 100_000).await?;
        for p in pending {
            let Ok((_, action)) = self.approval(&p.id).await else { continue };
            if !guard::kill_switch_covers(ks, &action.agent_id, action.upstream.as_deref(), &action.tool) {
                continue;
            }
            let mut guard = self.lock_session(&p.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let (mut approval, mut action) = self.approval(&p.id).await?;
            if approval.status != ApprovalStatus::Pending {
                continue;
            }
            let now = self.now();
            self.approval_closed(&approval, action.trace.as_ref(), ApprovalStatus::Cancelled, now);
            approval.status = ApprovalStatus::Cancelled;
            approval.resolved_at = Some(now);
            action.status = ActionStatus::Cancelled;
            action.updated_at = now;
            let reason = kill_reason(ks);
            let mut commit = Commit::default();
            commit
                .event(
                    &p.session_id,
                    EventKind::ActionCancelled,
                    now,
                    json!({"action_id": action.id, "approval_id": approval.id, "reason": reason}),
                )
                .project(Projection::Approval(approval.clone()))
                .project(Projection::Action(Box::new(action.clone())));
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", &approval, &action, now);
            self.commit(commit).await?;
            state.waiting.retain(|_, id| id != &action.id);
            self.notify(&action.id);
        }
        self.bump_approvals();
        Ok(())
    }

    /// Releases a kill switch.
    pub async fn release_kill(&self, by: &str, id: &str) -> Result<KillSwitch> {
        let list = self.kill_switch_list();
        let Some(mut ks) = list.iter().find(|k| k.id == id).cloned() else {
            return Err(Error::NotFound { what: "engaged kill switch", id: id.to_string() });
        };
        let now = self.now();
        ks.released_by = Some(by.to_string());
        ks.released_at = Some(now);
        let mut commit = Commit::default();
        commit
            .event(SYSTEM_STREAM, EventKind::KillReleased, now, json!({"id": ks.id, "released_by": by}))
            .project(Projection::KillSwitch(ks.clone()));
        self.commit(commit).await?;
        self.publish_kill_switches(|list| list.iter().filter(|k| k.id != id).cloned().collect(), None);
        Ok(ks)
    }

    /// Kill switches: engaged ones, or all including released.
    pub async fn kill_switches(&self, include_released: bool) -> Result<Vec<KillSwitch>> {
        if include_released {
            Ok(self.inner.store.kill_switches(false).await?)
        } else {
            Ok((*self.kill_switch_list()).clone())
        }
    }
}
