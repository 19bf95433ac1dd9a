//! `/v1/sessions/{id}/plans`: an agent proposes a plan (and amends it); the session's agent and
//! humans read it, with the difference a pending amendment makes. Votes on a plan go through
//! `/v1/approvals` like any other approval. Agents a step is assigned to claim it (a lease with
//! a fencing token) and give it back under `…/steps/{step}/claim|release`.

use super::*;
use crate::engine::{LeaseView, PlanProposal, PlanView};
use airlock_core::plan::PlanStatus;

/// The plan routes, merged into [`router`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/plans", post(propose).get(list))
        .route("/v1/sessions/{id}/plans/{plan}", get(show))
        .route("/v1/sessions/{id}/plans/{plan}/amend", post(amend))
        .route("/v1/sessions/{id}/plans/{plan}/steps/{step}/claim", post(claim))
        .route("/v1/sessions/{id}/plans/{plan}/steps/{step}/release", post(release))
}

/// A session id, a plan id and a step id in the path.
struct StepPath(String, String, String);

impl<S: Send + Sync> FromRequestParts<S> for StepPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String, String)>::from_request_parts(parts, state)
            .await
            .map(|Path((session, plan, step))| StepPath(session, plan, step))
            .map_err(|e| Problem::bad_request(format!("invalid path `{}`: {}", parts.uri.path(), e.body_text())))
    }
}

/// `201` with a new lease; `200` with the caller's own live lease, unchanged.
async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    StepPath(session_id, plan_id, step): StepPath,
) -> Result<Response, Problem> {
    let agent = require_agent(&principal)?;
    let (lease, new) = state.engine.claim_step(&agent, &session_id, &plan_id, &step).await?;
    let code = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(lease)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    token: u64,
}

async fn release(
    State(state): State<AppState>,
    principal: Principal,
    StepPath(session_id, plan_id, step): StepPath,
    Body(body): Body<ReleaseBody>,
) -> Result<Json<LeaseView>, Problem> {
    let agent = require_agent(&principal)?;
    Ok(Json(state.engine.release_step(&agent, &session_id, &plan_id, &step, body.token).await?))
}

/// A session id and a plan id in the path, with errors as `problem+json` like [`PathId`].
struct PlanPath(String, String);

impl<S: Send + Sync> FromRequestParts<S> for PlanPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|Path((session, plan))| PlanPath(session, plan))
            .map_err(|e| Problem::bad_request(format!("invalid path `{}`: {}", parts.uri.path(), e.body_text())))
    }
}

/// `201` for a plan in force at once (policy allowed it), `202` for one waiting for approval,
/// `403` for one refused.
fn plan_response(view: PlanView) -> Response {
    let newest = view.versions.last().map(|v| v.status);
    let code = match newest {
        Some(PlanStatus::Pending) => StatusCode::ACCEPTED,
        Some(PlanStatus::Approved) => StatusCode::CREATED,
        _ => StatusCode::FORBIDDEN,
    };
    (code, Json(view)).into_response()
}

async fn propose(
    State(state): State<AppState>,
    principal: Principal,
    PathId(session_id): PathId,
    Body(body): Body<PlanProposal>,
) -> Result<Response, Problem> {
    let agent = require_agent(&principal)?;
    let view = state.engine.propose_plan(&agent, &session_id, None, body).await?;
    Ok(plan_response(view))
}

async fn amend(
    State(state): State<AppState>,
    principal: Principal,
    PlanPath(session_id, plan_id): PlanPath,
    Body(body): Body<PlanProposal>,
) -> Result<Response, Problem> {
    let agent = require_agent(&principal)?;
    let view = state.engine.propose_plan(&agent, &session_id, Some(&plan_id), body).await?;
    Ok(plan_response(view))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathId(session_id): PathId,
) -> Result<Json<Value>, Problem> {
    let plans = state.engine.plans(&session_id, principal.agent_filter()).await?;
    Ok(Json(json!({ "session_id": session_id, "plans": plans })))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    PlanPath(session_id, plan_id): PlanPath,
) -> Result<Json<PlanView>, Problem> {
    Ok(Json(state.engine.plan(&session_id, &plan_id, principal.agent_filter()).await?))
}
