//! Following the other replicas on a shared journal.
//!
//! The journal says what the other replicas changed ([`Store::changes`]); this process then
//! reads the state again: an action's status wakes its waiters (long-polls, held MCP calls),
//! kill switches and policy revisions are read and take effect here too. The notifications are
//! hints; the kill switches are also read every half second, and a replica that has not been
//! able to read them for [`KILL_SWITCHES_STALE`] (or whose listening connection is down, so it
//! may have missed one) decides nothing: it answers `503` rather than let a call through that a
//! kill switch engaged elsewhere would deny.

use std::sync::atomic::Ordering;

use airlock_store::Change;
use tokio::sync::broadcast::error::RecvError;

use super::*;

/// How long kill switches read from the journal are trusted.
pub(super) const KILL_SWITCHES_STALE: Duration = Duration::from_secs(3);

/// How often the kill switches are read again whatever the notifications say.
const REFRESH: Duration = Duration::from_millis(500);

impl Engine {
    /// Follows the other replicas until `shutdown` changes; returns at once when no other
    /// process writes the journal.
    pub async fn follow_replicas(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(mut changes) = self.inner.store.changes() else { return };
        self.inner.following.store(true, Ordering::SeqCst);
        // A candidate another replica loaded before this one started.
        self.follow_candidate_logged().await;
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => self.apply_change(change).await,
                    Err(RecvError::Lagged(_)) => self.apply_change(Change::Resync).await,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => self.refresh_kill_switches().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn apply_change(&self, change: Change) {
        match change {
            Change::Action(id) => {
                self.notify(&id);
                if self.is_leader() {
                    self.note_plan_action(&id).await;
                }
            }
            Change::Approvals => self.bump_approvals(),
            Change::KillSwitches => self.refresh_kill_switches().await,
            Change::Policy => self.follow_policy_logged().await,
            Change::Candidate => self.follow_candidate_logged().await,
            Change::Outbox => self.inner.outbox_wake.notify_one(),
            Change::Resync => {
                self.reseed_plans();
                self.refresh_kill_switches().await;
                self.follow_policy_logged().await;
                self.follow_candidate_logged().await;
                // Whatever waits may have missed its change: it looks again.
                let watchers: Vec<_> = lock(&self.inner.watchers).drain().map(|(_, n)| n).collect();
                for n in watchers {
                    n.notify_waiters();
                }
                self.bump_approvals();
                self.inner.outbox_wake.notify_one();
            }
        }
    }

    async fn follow_policy_logged(&self) {
        if let Err(e) = self.follow_policy().await {
            tracing::error!(error = %e, "cannot take the policy another replica activated");
        }
    }

    async fn follow_candidate_logged(&self) {
        if let Err(e) = self.follow_candidate().await {
            tracing::error!(error = %e, "cannot take the policy candidate another replica loaded");
        }
    }

    /// Reads the kill switches from the journal and publishes them here; calls in flight that
    /// a newly engaged one covers are cancelled, as on the replica that engaged it.
    pub(super) async fn refresh_kill_switches(&self) {
        let generation = self.inner.kill_generation.load(Ordering::SeqCst);
        let following = self.inner.store.following();
        let list = match self.inner.store.kill_switches(true).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kill switches; this replica decides nothing until it can");
                return;
            }
        };
        let mut inflight = lock(&self.inner.inflight);
        // Changed here meanwhile: what was read may predate it. The next reading counts.
        if self.inner.kill_generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let current = self.kill_switch_list();
        let engaged: Vec<KillSwitch> = list.iter().filter(|k| !current.iter().any(|c| c.id == k.id)).cloned().collect();
        let released = current.iter().any(|c| !list.iter().any(|k| k.id == c.id));
        if !engaged.is_empty() || released {
            self.set_kill_switches(list);
            for ks in &engaged {
                tracing::warn!(kill_switch = %ks.id, reason = %ks.reason, "kill switch engaged by another replica");
                for f in inflight.values_mut() {
                    f.kill_if_covered(ks);
                }
            }
        }
        drop(inflight);
        if following {
            *lock(&self.inner.kills_checked) = std::time::Instant::now();
        }
    }

    /// Refuses to decide when other replicas may have engaged a kill switch this one has not
    /// read: its listening connection is down, or the kill switches were not read recently.
    pub(super) fn kill_switches_certain(&self) -> Result<()> {
        if !self.inner.store.shared() {
            return Ok(());
        }
        let age = lock(&self.inner.kills_checked).elapsed();
        // Their age counts once they are being read again ([`Engine::follow_replicas`]).
        let stale = self.inner.following.load(Ordering::SeqCst) && age > KILL_SWITCHES_STALE;
        if !self.inner.store.following() || stale {
            return Err(Error::Store(airlock_store::Error::Unavailable(format!(
                "this replica cannot be sure which kill switches are engaged (last read from the journal {:.1}s ago); \
                 it decides nothing until it can read them again",
                age.as_secs_f64()
            ))));
        }
        Ok(())
    }
}
