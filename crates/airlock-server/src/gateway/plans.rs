//! The tools airlock itself offers on `/mcp` (docs/plans.md): `airlock__propose_plan`, so that
//! an MCP agent can propose a plan, or amend one, in the airlock session behind its MCP session,
//! and `airlock__claim_step`, so that an executor can claim a step handed to it.

use std::sync::Arc;

use airlock_core::plan::{CLAIM_TOOL, PLAN_TOOL};
use airlock_mcp::front::{ToolCall, error_result};
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};

use crate::config::AgentConfig;
use crate::engine::{Engine, PlanProposal};

/// The tool as `tools/list` shows it.
pub(super) fn tool() -> Tool {
    let step = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Stable name of the step (default: its position)"},
            "tool": {"type": "string", "description": "The tool, by full name or glob"},
            "arguments": {"type": "object", "description": "A JSON Schema the call's arguments must satisfy"},
            "description": {"type": "string"},
            "expected_cost_usd": {"type": "number", "minimum": 0},
            "assignee": {"type": "string", "description": "Agent id or glob of the agents that run the step under a lease"},
            "lease_seconds": {"type": "integer", "minimum": 1, "description": "How long a claim of the step holds"},
            "max_attempts": {"type": "integer", "minimum": 1, "description": "How many claims the step allows"}
        },
        "required": ["tool"],
        "additionalProperties": false
    });
    let schema = json!({
        "type": "object",
        "properties": {
            "plan_id": {"type": "string", "description": "To amend a plan of this session: its id (pln_…)"},
            "goal": {"type": "string"},
            "steps": {"type": "array", "items": step, "minItems": 1},
            "budget_usd": {"type": "number", "minimum": 0},
            "deadline": {"type": "string", "format": "date-time"}
        },
        "required": ["goal", "steps"],
        "additionalProperties": false
    });
    let schema = match schema {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    Tool::new(
        PLAN_TOOL,
        "Propose a plan for this session (a goal and ordered steps, each a tool and a JSON Schema for its \
         arguments), or amend one with `plan_id`. Humans approve it once; calls that match a step then run \
         on that approval, and calls outside it need their own.",
        Arc::new(schema),
    )
}

/// `airlock__claim_step` as `tools/list` shows it.
pub(super) fn claim_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "session_id": {"type": "string", "description": "The plan's session (ses_…), as the planner handed it over"},
            "plan_id": {"type": "string", "description": "The plan (pln_…)"},
            "step": {"type": "string", "description": "The step's id"}
        },
        "required": ["session_id", "plan_id", "step"],
        "additionalProperties": false
    });
    let schema = match schema {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    Tool::new(
        CLAIM_TOOL,
        "Claim a step of another agent's plan that is assigned to you. You get a lease with a fencing token \
         and an expiry; make the step's call before it expires with `_meta[\"airlock/plan_lease\"]` = \
         {\"plan_id\", \"step\", \"token\"}. A lease admits one call; a stale token is refused.",
        Arc::new(schema),
    )
}

/// Claims a step for the caller's agent and answers with the lease as JSON.
pub(super) async fn claim(engine: &Engine, agent: &AgentConfig, call: &ToolCall) -> CallToolResult {
    let field = |k: &str| call.arguments.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(session), Some(plan), Some(step)) = (field("session_id"), field("plan_id"), field("step")) else {
        return error_result("airlock: `session_id`, `plan_id` and `step` are required strings");
    };
    let lease = match engine.claim_step(agent, &session, &plan, &step).await {
        Ok((lease, _)) => lease,
        Err(e) => return error_result(format!("airlock: step `{step}` of plan {plan} was not claimed: {e}")),
    };
    let lead = format!(
        "lease {} on step `{step}` of plan {plan} until {}: send the step's call with \
         _meta[\"airlock/plan_lease\"] = {}",
        lease.token,
        lease.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        json!({"plan_id": plan, "step": step, "token": lease.token})
    );
    let text = serde_json::to_string_pretty(&lease).unwrap_or_default();
    CallToolResult::success(vec![ContentBlock::text(lead), ContentBlock::text(text)])
}

/// Proposes (or amends) the plan in the call's session and answers with the plan as JSON.
pub(super) async fn propose(engine: &Engine, agent: &AgentConfig, call: &ToolCall) -> CallToolResult {
    let mut arguments = call.arguments.clone();
    let plan_id = match arguments.remove("plan_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return error_result("airlock: `plan_id` must be a string"),
    };
    let proposal: PlanProposal = match serde_json::from_value(Value::Object(arguments)) {
        Ok(p) => p,
        Err(e) => return error_result(format!("airlock: the plan is not valid: {e}")),
    };
    let view = match engine.propose_plan(agent, &call.session_id, plan_id.as_deref(), proposal).await {
        Ok(v) => v,
        Err(e) => return error_result(format!("airlock: the plan was not taken: {e}")),
    };
    let text = serde_json::to_string_pretty(&view).unwrap_or_default();
    let newest = view.versions.last();
    let status = newest.map(|v| v.status.as_str()).unwrap_or("pending");
    let lead = match (status, newest.and_then(|v| v.approval_id.as_deref())) {
        ("pending", Some(approval)) => format!(
            "plan {} version {} waits for approval {approval}; calls outside the plan in force need their own approval",
            view.id,
            newest.map_or(0, |v| v.version)
        ),
        ("approved", _) => format!("plan {} is in force: calls that match its steps run on its approval", view.id),
        (other, _) => format!("plan {} was {other}", view.id),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(lead), ContentBlock::text(text)]);
    if !matches!(status, "pending" | "approved") {
        result.is_error = Some(true);
    }
    result
}
