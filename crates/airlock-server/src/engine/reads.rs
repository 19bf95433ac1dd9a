//! Reads through the MCP gateway that are not tool calls: `resources/read`,
//! `resources/subscribe`, `prompts/get` and `completion/complete`. They pass the same gates as a
//! call, short of approval: the session must be active, no kill switch may cover them, they
//! count toward the agent's rate limit, and policy decides them with `input.kind` set to the
//! read's kind (reads match no rule written for calls, so existing policies allow them). A read
//! cannot wait for a human: a policy that asks for approval refuses it. Each is journaled as
//! `mcp.read`, allowed or not, before it is served.

use super::*;
use airlock_core::guard::{kill_switch_covers, session_state};

/// One read, as the gateway screens it.
#[derive(Debug, Clone, Serialize)]
pub struct Read {
    /// `resource.read`, `resource.subscribe`, `prompt.get` or `completion.complete`.
    pub kind: &'static str,
    /// The upstream that serves it.
    pub upstream: String,
    /// The resource URI, or the prompt's `{upstream}__{name}`, or what a completion refers to.
    pub target: String,
    /// The virtual server it came to, if any.
    pub server: Option<String>,
    /// The prompt's or completion's arguments.
    pub arguments: Value,
}

impl Engine {
    /// Screens a read of `agent` in `session_id`: `Ok(Err(why))` when it is refused. Journaled
    /// either way; an error means it could not be journaled (and must not be served).
    pub async fn screen_read(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        read: &Read,
    ) -> Result<std::result::Result<(), String>> {
        self.kill_switches_certain()?;
        let now = self.now();
        let session = self.session(session_id, Some(&agent.agent.id)).await?;
        let policy = self.policy();
        let refusal = self.read_refusal(agent, &session, read, &policy, now).await?;
        let payload = json!({
            "read": read,
            "allowed": refusal.is_none(),
            "reason": refusal,
            "policy_revision": policy.revision(),
        });
        let mut commit = Commit::default();
        commit.event(session_id, EventKind::McpRead, now, payload);
        self.commit(commit).await?;
        metrics::counter!(tm::MCP_READS, "kind" => read.kind, "outcome" => if refusal.is_none() { "allowed" } else { "refused" })
            .increment(1);
        Ok(refusal.map_or(Ok(()), Err))
    }

    async fn read_refusal(
        &self,
        agent: &AgentConfig,
        session: &Session,
        read: &Read,
        policy: &Arc<Policy>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        if let Some(reason) = session_state(session) {
            return Ok(Some(reason.msg));
        }
        let name = match read.kind {
            "prompt.get" => read.target.clone(),
            _ => format!("{}{}{}", read.upstream, airlock_mcp::front::TOOL_SEPARATOR, read.target),
        };
        let kills = self.kill_switch_list();
        if let Some(ks) = kills.iter().find(|ks| kill_switch_covers(ks, &agent.agent.id, Some(&read.upstream), &name)) {
            return Ok(Some(format!("kill switch {} is engaged: {}", ks.id, ks.reason)));
        }
        let per_minute = agent.limits.actions_per_minute;
        if per_minute > 0 {
            self.seed_bucket(agent, now).await?;
            let taken = lock(&self.inner.buckets).get_mut(&agent.agent.id).map(|b| b.take(per_minute, now));
            if let Some(Err(retry_after)) = taken {
                return Ok(Some(limits::rate_limited(&agent.agent.id, per_minute, retry_after).msg));
            }
        }
        let target = json!({
            "upstream": read.upstream,
            "target": read.target,
            "server": read.server,
            "arguments": read.arguments,
        });
        let input = pipeline::read_input(&agent.agent, agent.identity.as_ref(), session, read.kind, target, now);
        let (answer, _) = evaluator::evaluate(policy.clone(), input).await;
        let decision =
            airlock_core::decision::combine(answer.output, &self.inner.defaults, &answer.revision, answer.eval_us);
        let reasons =
            || decision.reasons.iter().map(|r| format!("[{}] {}", r.rule, r.msg)).collect::<Vec<_>>().join("; ");
        Ok(match decision.effect {
            airlock_core::Effect::Allow => None,
            airlock_core::Effect::Deny => Some(format!("policy denied it: {}", reasons())),
            airlock_core::Effect::RequireApproval => {
                Some(format!("policy asks for approval, and a read cannot wait for one: {}", reasons()))
            }
        })
    }
}
