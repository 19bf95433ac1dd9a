//! What the HTTP API shows of the MCP gateway, to humans: `GET /v1/upstreams` (each upstream's
//! connection, and the tools whose input schema does not compile) and `GET /v1/servers` (each
//! virtual server, what it offers, and the names it withholds). See docs/api.md.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::{AppState, Principal, Problem, require_human};
use crate::gateway::McpGateway;

/// `GET /v1/upstreams`
pub(crate) async fn list_upstreams(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, Problem> {
    require_human(&principal)?;
    let upstreams = state.gateway().map(|g| upstream_status(g)).unwrap_or_default();
    Ok(Json(json!({ "upstreams": upstreams })))
}

/// `GET /v1/servers`
pub(crate) async fn list_servers(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require_human(&principal)?;
    let servers = state.gateway().map(|g| server_status(g)).unwrap_or_default();
    Ok(Json(json!({ "servers": servers })))
}

/// Each upstream's connection status, whether its tools' arguments are checked against their
/// input schemas (`validate_input`), and the tools whose schema does not compile
/// (`unusable_schemas`: calls to them are denied).
pub fn upstream_status(gateway: &McpGateway) -> Vec<Value> {
    let unusable = gateway.engine().input_schemas().unusable();
    let config = &gateway.engine().config().upstreams;
    gateway
        .upstreams()
        .status()
        .into_iter()
        .map(|status| {
            let name = status.name.clone();
            let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                let validate = config.iter().any(|u| u.name == name && u.validate_input);
                map.insert("validate_input".into(), Value::Bool(validate));
                let broken: Vec<Value> = unusable
                    .iter()
                    .filter(|u| validate && u.upstream == name)
                    .map(|u| json!({"tool": u.tool, "error": u.error}))
                    .collect();
                map.insert("unusable_schemas".into(), Value::Array(broken));
            }
            v
        })
        .collect()
}

/// Each virtual server as configured, how many tool names it offers now, and the names it
/// withholds because several tools have them.
pub fn server_status(gateway: &McpGateway) -> Vec<Value> {
    let offers = gateway.offers();
    gateway.servers().iter().enumerate().map(|(i, s)| crate::servers::status(s, offers.get(i).map(|o| &**o))).collect()
}
