//! `/v1/approvals` (list, read, vote), `/v1/kill` (engage, list, release) and
//! `/v1/humans/{id}/unlock`: what humans decide.

use super::*;

#[derive(Deserialize)]
pub(super) struct ApprovalQuery {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct ApprovalSummary {
    #[serde(flatten)]
    approval: airlock_core::Approval,
    action: Option<airlock_core::Action>,
    /// For an approval that needs MFA: humans whose TOTP codes are locked now.
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_locks: Option<Vec<MfaLock>>,
}

/// A human whose TOTP codes are locked after too many failed ones.
#[derive(Serialize)]
pub(super) struct MfaLock {
    human: String,
    locked_until: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn list_approvals(
    State(state): State<AppState>,
    principal: Principal,
    Params(q): Params<ApprovalQuery>,
) -> Result<Json<Value>, Problem> {
    require_human(&principal)?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            Problem::bad_request(format!(
                "`status` must be pending, approved, denied, expired, cancelled or all, not `{s}`"
            ))
        })?),
    };
    let approvals = state.engine.approvals(status, q.limit.unwrap_or(100).min(1000)).await?;
    let mut out = Vec::with_capacity(approvals.len());
    for approval in approvals {
        let action = state.engine.store().action(&approval.action_id).await.map_err(engine::Error::from)?;
        out.push(ApprovalSummary { approval, action, mfa_locks: None });
    }
    Ok(Json(json!({ "approvals": out })))
}

pub(super) async fn get_approval(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<ApprovalSummary>, Problem> {
    require_human(&principal)?;
    let (approval, action) = state.engine.approval(&id).await?;
    let mfa_locks = approval.requirements.mfa.then(|| {
        state.engine.mfa_locks().into_iter().map(|(human, locked_until)| MfaLock { human, locked_until }).collect()
    });
    Ok(Json(ApprovalSummary { approval, action: Some(action), mfa_locks }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VoteBody {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    totp: Option<String>,
}

pub(super) async fn vote(
    state: AppState,
    principal: Principal,
    id: String,
    verdict: Verdict,
    body: VoteBody,
) -> Result<Response, Problem> {
    let human = require_human(&principal)?;
    let view = state.engine.vote(&human, &id, VoteRequest { verdict, comment: body.comment, totp: body.totp }).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Body(body): Body<VoteBody>,
) -> Result<Response, Problem> {
    vote(state, principal, id, Verdict::Approve, body).await
}

pub(super) async fn deny(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Body(body): Body<VoteBody>,
) -> Result<Response, Problem> {
    vote(state, principal, id, Verdict::Deny, body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KillBody {
    scope: KillScope,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    reason: String,
}

pub(super) async fn engage_kill(
    State(state): State<AppState>,
    principal: Principal,
    Body(body): Body<KillBody>,
) -> Result<Response, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let ks = state.engine.engage_kill(&human.human.id, body.scope, body.target, body.reason).await?;
    Ok((StatusCode::CREATED, Json(ks)).into_response())
}

#[derive(Deserialize)]
pub(super) struct KillQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list_kill(
    State(state): State<AppState>,
    principal: Principal,
    Params(q): Params<KillQuery>,
) -> Result<Json<Value>, Problem> {
    require_human(&principal)?;
    let list = state.engine.kill_switches(q.all).await?;
    Ok(Json(json!({ "kill_switches": list })))
}

/// `POST /v1/humans/{id}/unlock`: an admin lifts a human's TOTP lock.
pub(super) async fn unlock_mfa(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let guard = state.engine.unlock_mfa(&human, &id).await?;
    Ok(Json(json!({"human": guard.human, "failures": guard.failures, "locked_until": guard.locked_until})))
}

pub(super) async fn release_kill(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let ks = state.engine.release_kill(&human.human.id, &id).await?;
    Ok(Json(serde_json::to_value(ks).unwrap_or_default()))
}
