//! A session's timeline: its journal events in order, each with a one-line summary and links to
//! the action and approval it concerns — what an on-call engineer reads at 3 a.m.

use airlock_store::StoredEvent;
use serde_json::{Value, json};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn rules(decision: &Value) -> String {
    decision
        .get("reasons")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(|x| format!("[{}] {}", s(x, "rule"), s(x, "msg"))).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

/// One timeline entry for a journal event.
pub fn entry(e: &StoredEvent) -> Value {
    let p = &e.payload;
    let action_id = p
        .get("action_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| (e.kind == "approval.requested").then(|| s(p, "action_id").to_string()));
    let approval_id = p
        .get("approval_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| (e.kind == "approval.requested").then(|| s(p, "id").to_string()));
    let summary = match e.kind.as_str() {
        "session.opened" => format!("session opened by {}: {}", s(p, "agent_id"), s(p, "task")),
        "action.requested" => format!(
            "#{} {} requested{}",
            p.get("seq").and_then(Value::as_u64).unwrap_or(0),
            s(p, "tool"),
            if s(p, "justification").is_empty() { String::new() } else { format!(" — {}", s(p, "justification")) }
        ),
        "action.decided" => {
            let d = &p["decision"];
            let r = rules(d);
            format!(
                "{} by {} (policy {}){}",
                s(d, "effect"),
                s(d, "decided_by"),
                s(d, "policy_revision").get(..19).unwrap_or(""),
                if r.is_empty() { String::new() } else { format!(": {r}") }
            )
        }
        "action.joined" => format!("an identical call joined the waiting action ({})", s(p, "status")),
        "approval.requested" => {
            let req = &p["requirements"];
            format!(
                "approval requested: {} approver(s){}{}, expires {}",
                req.get("quorum").and_then(Value::as_u64).unwrap_or(1),
                req.get("groups")
                    .and_then(Value::as_array)
                    .filter(|g| !g.is_empty())
                    .map(|g| format!(" from {}", g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("/")))
                    .unwrap_or_default(),
                if req.get("mfa") == Some(&Value::Bool(true)) { " with MFA" } else { "" },
                s(p, "expires_at")
            )
        }
        "approval.vote_cast" => {
            let v = &p["vote"];
            format!("{} voted {}: {}", s(v, "human"), s(v, "verdict"), s(v, "comment"))
        }
        "approval.vote_refused" => {
            format!("vote by {} refused by rule `{}`: {}", s(p, "human"), s(p, "rule"), s(p, "reason"))
        }
        "approval.resolved" => format!("approval {}; action {}", s(p, "status"), s(p, "action_status")),
        "approval.expired" => "approval expired; the action will not run".to_string(),
        "action.executing" => "execution started".to_string(),
        "action.completed" => {
            let r = &p["result"];
            let outcome = match r.get("error").and_then(Value::as_str) {
                Some(err) => format!("{}: {err}", s(p, "status")),
                None => format!(
                    "{}{}",
                    s(p, "status"),
                    r.get("duration_ms").and_then(Value::as_u64).map(|d| format!(" in {d} ms")).unwrap_or_default()
                ),
            };
            let counted = p.get("cost_counted_usd").and_then(Value::as_f64).unwrap_or(0.0);
            match r.get("cost_usd").and_then(Value::as_f64) {
                Some(reported) if counted > 0.0 => format!("{outcome} (reported cost ${reported:.2}, counted)"),
                Some(reported) if reported > 0.0 => {
                    format!("{outcome} (reported cost ${reported:.2}, not counted: the action was priced)")
                }
                Some(reported) => format!("{outcome} (reported cost ${reported:.2})"),
                None => outcome,
            }
        }
        "action.cancelled" => format!("cancelled: {}", s(&p["reason"], "msg")),
        "action.expired" => format!("expired: {}", s(&p["reason"], "msg")),
        "session.status_changed" => match s(p, "status") {
            "paused" => format!("session paused by {} [{}]: {}", s(p, "by"), s(p, "rule"), s(p, "reason")),
            other => format!("session {other} by {}: {}", s(p, "by"), s(p, "comment")),
        },
        "plan.proposed" => format!(
            "plan {} version {} proposed ({}): {}",
            s(p, "plan_id"),
            p.get("version").and_then(Value::as_u64).unwrap_or(0),
            s(p, "effect"),
            s(&p["plan"], "goal")
        ),
        "plan.approved" => format!(
            "plan {} version {} approved{}",
            s(p, "plan_id"),
            p.get("version").and_then(Value::as_u64).unwrap_or(0),
            p.get("votes")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .map(|v| format!(" by {}", v.iter().map(|x| s(x, "human")).collect::<Vec<_>>().join(", ")))
                .unwrap_or_else(|| " by policy".to_string())
        ),
        "plan.step_matched" => match p.get("token").and_then(Value::as_u64) {
            Some(token) => format!(
                "{} by {} matched step `{}` of plan {} under lease {token}",
                s(p, "tool"),
                s(p, "agent_id"),
                s(p, "step"),
                s(p, "plan_id")
            ),
            None => format!("{} matched step `{}` of plan {}", s(p, "tool"), s(p, "step"), s(p, "plan_id")),
        },
        "plan.step_claimed" => format!(
            "{} claimed step `{}` of plan {} (lease {}, attempt {} of {}, until {})",
            s(p, "agent_id"),
            s(p, "step"),
            s(p, "plan_id"),
            p.get("token").and_then(Value::as_u64).unwrap_or(0),
            p.get("attempt").and_then(Value::as_u64).unwrap_or(0),
            p.get("max_attempts").and_then(Value::as_u64).unwrap_or(0),
            s(p, "expires_at")
        ),
        "plan.lease_released" => format!(
            "{} gave back lease {} of step `{}` of plan {}",
            s(p, "agent_id"),
            p.get("token").and_then(Value::as_u64).unwrap_or(0),
            s(p, "step"),
            s(p, "plan_id")
        ),
        "plan.drift" => format!("drift: {} matches no step of plan {}", s(p, "tool"), s(p, "plan_id")),
        "plan.stuck" => format!(
            "plan {} stuck: no step progress for {} s since {}",
            s(p, "plan_id"),
            p.get("stuck_after_seconds").and_then(Value::as_u64).unwrap_or(0),
            s(p, "since")
        ),
        "plan.cascade" => format!("plan {} paused the session: {}", s(p, "plan_id"), s(p, "reason")),
        "policy.shadow_disagreement" => {
            format!("shadow candidate would {} instead of {}", s(&p["candidate"], "effect"), s(&p["active"], "effect"))
        }
        other => other.to_string(),
    };
    json!({
        "seq": e.seq,
        "stream": e.stream,
        "at": e.at,
        "kind": e.kind,
        "summary": summary,
        "action_id": action_id,
        "approval_id": approval_id,
        "links": {
            "action": action_id.as_ref().map(|a| format!("/v1/actions/{a}")),
            "approval": approval_id.as_ref().map(|a| format!("/v1/approvals/{a}")),
        },
        "hash": e.hash,
        "payload": e.payload,
    })
}

/// Merges the hand-off streams of a session's plans (claims, and calls made under their leases
/// in other sessions) into the session's own events, in journal order.
pub fn with_handoffs(mut events: Vec<StoredEvent>, handoffs: Vec<StoredEvent>) -> Vec<StoredEvent> {
    events.extend(handoffs);
    events.sort_by_key(|e| e.pos);
    events
}

/// The plans proposed in a session's events whose steps are handed off (any step has an
/// assignee): their own streams hold the claims.
pub fn handoff_plans(events: &[StoredEvent]) -> Vec<String> {
    let mut plans: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "plan.proposed")
        .filter(|e| {
            e.payload["plan"]["steps"]
                .as_array()
                .is_some_and(|steps| steps.iter().any(|step| step.get("assignee").is_some_and(|a| !a.is_null())))
        })
        .map(|e| s(&e.payload, "plan_id").to_string())
        .collect();
    plans.sort();
    plans.dedup();
    plans
}
