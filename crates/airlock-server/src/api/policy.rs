//! `/v1/policy`: status, reload, rollback, promote, a candidate in shadow or canary, the shadow
//! report. Every route needs an admin.

use super::*;

pub(super) async fn policy_status(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require_role(&principal, airlock_core::Role::Admin)?;
    let policy = state.engine.policy();
    let history = state.engine.store().policy_history(crate::lifecycle::HISTORY).await.map_err(engine::Error::from)?;
    let shadow = state.engine.shadow_report();
    Ok(Json(json!({
        "active": {
            "revision": policy.revision(),
            "dir": policy.dir(),
            "files": policy.sources().iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        },
        "candidate": shadow.candidate.as_ref().map(|r| json!({"revision": r, "dir": shadow.dir, "canary_percent": shadow.canary_percent})),
        "history": history
            .iter()
            .map(|r| json!({"revision": r.revision, "activated_at": r.activated_at, "activated_by": r.activated_by}))
            .collect::<Vec<_>>(),
    })))
}

pub(super) async fn policy_reload(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let change = state.engine.reload_policy(&human.human.id).await?;
    Ok(Json(serde_json::to_value(change).unwrap_or_default()))
}

pub(super) async fn policy_rollback(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let change = state.engine.rollback_policy(&human.human.id).await?;
    Ok(Json(serde_json::to_value(change).unwrap_or_default()))
}

pub(super) async fn policy_promote(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let change = state.engine.promote_candidate(&human.human.id).await?;
    Ok(Json(serde_json::to_value(change).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CandidateBody {
    dir: String,
    /// Share of sessions (0 – 100) the candidate decides for; default 0 (shadow only).
    #[serde(default)]
    canary_percent: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CanaryBody {
    percent: u8,
}

pub(super) async fn policy_canary(
    State(state): State<AppState>,
    principal: Principal,
    Body(body): Body<CanaryBody>,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let revision = state.engine.set_canary(body.percent, &human.human.id).await?;
    Ok(Json(json!({"candidate": revision, "canary_percent": body.percent})))
}

pub(super) async fn policy_candidate(
    State(state): State<AppState>,
    principal: Principal,
    Body(body): Body<CandidateBody>,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    let dir = std::path::PathBuf::from(&body.dir);
    let dir =
        if dir.is_absolute() { dir } else { state.engine.config().file.parent().map(|p| p.join(&dir)).unwrap_or(dir) };
    let revision = state.engine.set_candidate(dir, body.canary_percent, &human.human.id).await?;
    let mode = if body.canary_percent > 0 { "canary" } else { "shadow" };
    Ok(Json(json!({"candidate": revision, "mode": mode, "canary_percent": body.canary_percent})))
}

pub(super) async fn policy_candidate_clear(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, Problem> {
    let human = require_role(&principal, airlock_core::Role::Admin)?;
    state.engine.discard_candidate(&human.human.id).await?;
    Ok(Json(json!({"candidate": null})))
}

pub(super) async fn policy_shadow(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require_role(&principal, airlock_core::Role::Admin)?;
    Ok(Json(serde_json::to_value(state.engine.shadow_report()).unwrap_or_default()))
}
