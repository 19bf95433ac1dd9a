//! `airlock__propose_plan`: the tool airlock itself offers on `/mcp` so that an MCP agent can
//! propose a plan, or amend one, in the airlock session behind its MCP session (docs/plans.md).

use std::sync::Arc;

use airlock_core::plan::PLAN_TOOL;
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
            "assignee": {"type": "string"}
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
