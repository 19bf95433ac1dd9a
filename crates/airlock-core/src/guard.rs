//! Host guards: rules that run before policy and that policy cannot loosen.
//!
//! Guards here are pure functions of their context. Today: kill switches, session state and the
//! `advisory` tier. Rate limits, budgets, loop detection and circuit breakers take their place in
//! [`check`] as they arrive; each returns the reason that denies, or nothing.

use globset::Glob;

use crate::model::{Agent, KillScope, KillSwitch, Reason, Session, SessionStatus, Tier};

/// Rule name of a denial by a kill switch.
pub const RULE_KILL_SWITCH: &str = "airlock.kill_switch";
/// Rule name of a denial because the session is paused or closed.
pub const RULE_SESSION_STATE: &str = "airlock.session_state";
/// Rule name of a denial because an `advisory` agent asked for a write.
pub const RULE_TIER: &str = "airlock.tier";
/// Rule name of a denial because the tool is outside the agent's allowlist.
pub const RULE_TOOL_ALLOWLIST: &str = "airlock.tool_allowlist";

/// What the guards look at.
#[derive(Debug, Clone, Copy)]
pub struct GuardContext<'a> {
    /// The calling agent.
    pub agent: &'a Agent,
    /// The session the action is in.
    pub session: &'a Session,
    /// Full tool name.
    pub tool: &'a str,
    /// Upstream serving the tool, if any.
    pub upstream: Option<&'a str>,
    /// Whether the tool is known to be read-only.
    pub read_only: bool,
    /// Whether the agent's tool allowlist covers the tool.
    pub tool_allowed: bool,
    /// Kill switches currently engaged.
    pub kill_switches: &'a [KillSwitch],
}

/// Runs the guards in order and returns the first reason to deny, if any.
pub fn check(ctx: &GuardContext<'_>) -> Option<Reason> {
    if let Some(ks) =
        ctx.kill_switches.iter().find(|ks| kill_switch_covers(ks, ctx.agent.id.as_str(), ctx.upstream, ctx.tool))
    {
        let what = match (&ks.scope, &ks.target) {
            (KillScope::All, _) => "all actions".to_string(),
            (scope, Some(t)) => format!("{} `{t}`", scope.as_str()),
            (scope, None) => scope.as_str().to_string(),
        };
        return Some(Reason::new(
            RULE_KILL_SWITCH,
            format!("kill switch {} on {what} is engaged: {}", ks.id, ks.reason),
        ));
    }
    if !ctx.tool_allowed {
        return Some(Reason::new(
            RULE_TOOL_ALLOWLIST,
            format!("tool `{}` is not in the allowlist of agent `{}`", ctx.tool, ctx.agent.id),
        ));
    }
    match ctx.session.status {
        SessionStatus::Active => {}
        SessionStatus::Paused => {
            let why = ctx.session.status_reason.as_deref().unwrap_or("no reason given");
            return Some(Reason::new(RULE_SESSION_STATE, format!("session is paused ({why}); a human must resume it")));
        }
        SessionStatus::Closed => {
            return Some(Reason::new(RULE_SESSION_STATE, "session is closed; open a new session"));
        }
    }
    if ctx.agent.tier == Tier::Advisory && !ctx.read_only {
        return Some(Reason::new(
            RULE_TIER,
            format!(
                "agent `{}` is advisory and may only run read-only tools; `{}` is not known to be read-only",
                ctx.agent.id, ctx.tool
            ),
        ));
    }
    None
}

/// Whether an engaged kill switch covers a call by `agent` to `tool` (served by `upstream`).
pub fn kill_switch_covers(ks: &KillSwitch, agent: &str, upstream: Option<&str>, tool: &str) -> bool {
    if !ks.is_active() {
        return false;
    }
    let target = ks.target.as_deref().unwrap_or("");
    match ks.scope {
        KillScope::All => true,
        KillScope::Agent => target == agent,
        KillScope::Upstream => upstream == Some(target),
        KillScope::Tool => {
            target == tool || Glob::new(target).map(|g| g.compile_matcher().is_match(tool)).unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::collections::BTreeMap;

    fn agent(tier: Tier) -> Agent {
        Agent { id: "bot".into(), owner: "platform".into(), oncall: None, tier, labels: BTreeMap::new() }
    }

    fn session(status: SessionStatus) -> Session {
        let now = Utc::now();
        Session { status, ..Session::opened("ses_1".into(), "bot".into(), "t".into(), now) }
    }

    fn ks(scope: KillScope, target: Option<&str>) -> KillSwitch {
        KillSwitch {
            id: "kill_1".into(),
            scope,
            target: target.map(String::from),
            reason: "incident 42".into(),
            engaged_by: "alice".into(),
            engaged_at: Utc::now(),
            released_by: None,
            released_at: None,
        }
    }

    #[test]
    fn kill_switch_scopes() {
        assert!(kill_switch_covers(&ks(KillScope::All, None), "a", None, "t"));
        assert!(kill_switch_covers(&ks(KillScope::Agent, Some("a")), "a", None, "t"));
        assert!(!kill_switch_covers(&ks(KillScope::Agent, Some("b")), "a", None, "t"));
        assert!(kill_switch_covers(&ks(KillScope::Upstream, Some("infra")), "a", Some("infra"), "infra__x"));
        assert!(!kill_switch_covers(&ks(KillScope::Upstream, Some("infra")), "a", None, "infra__x"));
        assert!(kill_switch_covers(&ks(KillScope::Tool, Some("infra__*")), "a", None, "infra__scale"));
        assert!(!kill_switch_covers(&ks(KillScope::Tool, Some("infra__*")), "a", None, "fs__read"));
        let mut released = ks(KillScope::All, None);
        released.released_at = Some(Utc::now());
        assert!(!kill_switch_covers(&released, "a", None, "t"));
    }

    #[test]
    fn guards_in_order() {
        let a = agent(Tier::Advisory);
        let s = session(SessionStatus::Active);
        let kills = [ks(KillScope::All, None)];
        let ctx = GuardContext {
            agent: &a,
            session: &s,
            tool: "x",
            upstream: None,
            read_only: false,
            tool_allowed: true,
            kill_switches: &kills,
        };
        let r = check(&ctx).unwrap();
        assert_eq!(r.rule, RULE_KILL_SWITCH);
        assert!(r.msg.contains("incident 42"));
        let ctx = GuardContext { kill_switches: &[], ..ctx };
        assert_eq!(check(&ctx).unwrap().rule, RULE_TIER);
        let ctx = GuardContext { read_only: true, ..ctx };
        assert!(check(&ctx).is_none());
        let paused = session(SessionStatus::Paused);
        let ctx = GuardContext { session: &paused, ..ctx };
        assert_eq!(check(&ctx).unwrap().rule, RULE_SESSION_STATE);
    }
}
