//! Host guards: rules that run before policy and that policy cannot loosen.
//!
//! Guards here are pure functions of their context: kill switches, the tool allowlist, session
//! state and the `advisory` tier in [`check`], and the input schema in [`input_schema`] (the
//! server checks the arguments; this decides what the answer means). Rate limits, loop detection
//! and circuit breakers are in `limits`; `pipeline::screen` runs them all in order.

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
/// Rule name of a denial because the arguments do not match the tool's input schema, or the
/// schema can't be used to check them.
pub const RULE_INPUT_SCHEMA: &str = "airlock.input_schema";

/// At most this many of a call's schema violations become reasons; the last one says how many
/// more there were.
pub const MAX_INPUT_VIOLATIONS: usize = 10;

/// What checking a call's arguments against the `inputSchema` its upstream lists for the tool
/// found. The server checks (it holds the compiled schemas); the pipeline decides on the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InputCheck {
    /// There is nothing to check against: an agent-executed tool, an upstream with
    /// `validate_input = false`, or a tool its upstream does not list now (an upstream that is
    /// down or does not have the tool fails the call itself).
    #[default]
    Unchecked,
    /// The arguments match the schema.
    Valid,
    /// They don't: each violation says where and what.
    Invalid(Vec<InputViolation>),
    /// The schema does not compile, so the arguments can't be checked; `error` says why.
    Unusable {
        /// The compiler's complaint.
        error: String,
    },
}

/// One way the arguments miss the tool's input schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputViolation {
    /// Where, in the syntax of `redact` paths: `arguments.port`, `arguments.hosts.0`; the
    /// arguments as a whole are `arguments`.
    pub path: String,
    /// What is wrong, without the value itself (it may be a secret, and reasons are exported
    /// where arguments are not).
    pub problem: String,
}

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
    if let Some(reason) = session_state(ctx.session) {
        return Some(reason);
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

/// The input-schema guard: the reasons to deny a call to `tool` (served by `upstream`) after
/// `check`, one per violation (at most [`MAX_INPUT_VIOLATIONS`]); none when it may go on.
pub fn input_schema(tool: &str, upstream: Option<&str>, check: &InputCheck) -> Vec<Reason> {
    match check {
        InputCheck::Unchecked | InputCheck::Valid => Vec::new(),
        InputCheck::Unusable { error } => {
            let upstream = upstream.unwrap_or("?");
            vec![Reason::new(
                RULE_INPUT_SCHEMA,
                format!(
                    "the input schema of `{tool}` does not compile ({error}), so its arguments can't be checked and \
                     the call is not passed on; fix the schema at upstream `{upstream}`, or set \
                     `validate_input = false` on it"
                ),
            )]
        }
        InputCheck::Invalid(violations) => {
            let mut reasons: Vec<Reason> = violations
                .iter()
                .take(MAX_INPUT_VIOLATIONS)
                .map(|v| {
                    Reason::new(
                        RULE_INPUT_SCHEMA,
                        format!("`{}` does not match the input schema of `{tool}`: {}", v.path, v.problem),
                    )
                })
                .collect();
            let more = violations.len().saturating_sub(MAX_INPUT_VIOLATIONS);
            if more > 0
                && let Some(last) = reasons.last_mut()
            {
                last.msg.push_str(&format!(" (and {more} more)"));
            }
            if reasons.is_empty() {
                // A check that failed without saying where still fails.
                reasons.push(Reason::new(
                    RULE_INPUT_SCHEMA,
                    format!("the arguments do not match the input schema of `{tool}`"),
                ));
            }
            reasons
        }
    }
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

/// Why a session runs nothing now (`airlock.session_state`): it is paused until a human resumes
/// it, or closed. `None` while it is active. Applies to new calls, to calls that would join an
/// approved one, and to running an approved call.
pub fn session_state(session: &Session) -> Option<Reason> {
    match session.status {
        SessionStatus::Active => None,
        SessionStatus::Paused => {
            let why = session.status_reason.as_deref().unwrap_or("no reason given");
            Some(Reason::new(RULE_SESSION_STATE, format!("session is paused ({why}); a human must resume it")))
        }
        SessionStatus::Closed => Some(Reason::new(RULE_SESSION_STATE, "session is closed; open a new session")),
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

    #[test]
    fn the_input_schema_guard_gives_a_reason_per_violation_up_to_a_limit() {
        assert!(input_schema("fw__open", Some("fw"), &InputCheck::Unchecked).is_empty());
        assert!(input_schema("fw__open", Some("fw"), &InputCheck::Valid).is_empty());
        let violation = |i: usize| InputViolation { path: format!("arguments.p{i}"), problem: "value is wrong".into() };
        let two = input_schema("fw__open", Some("fw"), &InputCheck::Invalid(vec![violation(0), violation(1)]));
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].rule, RULE_INPUT_SCHEMA);
        assert_eq!(two[1].msg, "`arguments.p1` does not match the input schema of `fw__open`: value is wrong");
        let many = input_schema("fw__open", Some("fw"), &InputCheck::Invalid((0..25).map(violation).collect()));
        assert_eq!(many.len(), MAX_INPUT_VIOLATIONS);
        assert!(many[MAX_INPUT_VIOLATIONS - 1].msg.ends_with("(and 15 more)"), "{:?}", many.last());
        let none = input_schema("fw__open", Some("fw"), &InputCheck::Invalid(Vec::new()));
        assert_eq!(none.len(), 1, "a failed check always denies");
        let broken = input_schema("fw__open", Some("fw"), &InputCheck::Unusable { error: "bad `type`".into() });
        assert_eq!(broken.len(), 1);
        assert!(broken[0].msg.contains("does not compile (bad `type`)"), "{}", broken[0].msg);
        assert!(broken[0].msg.contains("`validate_input = false`"), "{}", broken[0].msg);
    }
}
