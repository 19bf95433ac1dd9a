//! The HTTP API under `/v1`, documented in `docs/api.md`.
//!
//! This module holds what every handler shares (state, principal, problems, body and query
//! extractors), the router, and the agent-facing routes (sessions, actions); `policy` holds the
//! policy lifecycle routes and `approvals` what humans decide (approvals, kill switches, TOTP
//! unlocks).
//!
//! Errors are `application/problem+json` (RFC 9457) with a stable `type`
//! (`urn:airlock:problem:<name>`). Request bodies are size-limited and parsed with the path of
//! any wrong field in the message. Handlers are thin: they authenticate, parse, call the
//! [`Engine`] and shape the answer.

mod approvals;
mod auth;
mod plans;
mod policy;

use approvals::*;
pub use auth::Principal;
pub(crate) use auth::{authenticate, require_human};
use auth::{require_agent, require_role, resource_metadata};
use policy::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{ActionStatus, ApprovalStatus, KillScope, SessionStatus, Verdict};
use airlock_store::SessionFilter;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::access::Access;
use crate::config::hash_token;
use crate::engine::{self, ActionRequest, ActionView, Engine, Outcome, VoteRequest};
use crate::executor;
use crate::gateway::McpGateway;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline.
    pub engine: Engine,
    principals: Arc<HashMap<[u8; 32], Principal>>,
    gateway: Option<Arc<McpGateway>>,
    access: Access,
}

impl AppState {
    /// Builds the state, indexing tokens from the engine's configuration.
    pub fn new(engine: Engine) -> AppState {
        let mut principals = HashMap::new();
        for a in &engine.config().agents {
            if let Some(hash) = a.token_hash {
                principals.insert(hash, Principal::Agent(Arc::new(a.clone())));
            }
        }
        for h in &engine.config().humans {
            if let Some(hash) = h.token_hash {
                principals.insert(hash, Principal::Human(Arc::new(h.clone())));
            }
        }
        let listen = format!("http://{}", engine.config().server.listen);
        let access = Access::new(engine.config().clone(), &listen);
        AppState { engine, principals: Arc::new(principals), gateway: None, access }
    }

    /// Takes `base` (`http://{address}`) as the base URL of resource identifiers and metadata
    /// when `[server] public_url` is not set: the address airlock really listens on.
    pub fn with_base_url(mut self, base: &str) -> AppState {
        self.access = Access::new(self.engine.config().clone(), base);
        self
    }

    /// Access tokens and the protected resource metadata.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Lets the HTTP API run upstream tools through the MCP gateway.
    pub fn with_gateway(mut self, gateway: Arc<McpGateway>) -> AppState {
        self.gateway = Some(gateway);
        self
    }

    /// The MCP gateway, when `/mcp` is served.
    pub(crate) fn gateway(&self) -> Option<&Arc<McpGateway>> {
        self.gateway.as_ref()
    }
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extra: serde_json::Map<String, Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of `kind` with HTTP `status`.
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, kind, title, detail: detail.into(), extra: serde_json::Map::new(), headers: Vec::new() }
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Problem {
        self.extra.insert(key.to_string(), value);
        self
    }

    fn unauthorized(detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        p.headers.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"airlock\"")));
        p
    }

    /// A `401` or `403` with the `WWW-Authenticate` challenge `challenge`.
    fn challenged(mut self, challenge: HeaderValue) -> Problem {
        self.headers.retain(|(k, _)| k != header::WWW_AUTHENTICATE);
        self.headers.push((header::WWW_AUTHENTICATE, challenge));
        self
    }

    /// A `403` naming the rule that refused the request.
    pub fn forbidden_public(rule: &str, detail: impl Into<String>) -> Problem {
        Problem::forbidden(rule, detail)
    }

    fn forbidden(rule: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail).with("rule", json!(rule))
    }

    fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", detail)
    }

    fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), json!(format!("urn:airlock:problem:{}", self.kind)));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        for (k, v) in self.headers {
            response.headers_mut().insert(k, v);
        }
        response
    }
}

impl From<engine::Error> for Problem {
    fn from(e: engine::Error) -> Problem {
        match e {
            engine::Error::NotFound { .. } => Problem::not_found(e.to_string()),
            engine::Error::Forbidden { rule, msg } => Problem::forbidden(rule, msg),
            engine::Error::Conflict(msg) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", msg),
            engine::Error::Invalid(msg) => Problem::bad_request(msg),
            engine::Error::RateLimited { msg, retry_after_ms } => {
                let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", msg);
                if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).max(1).to_string()) {
                    problem.headers.push((header::RETRY_AFTER, v));
                }
                problem
            }
            engine::Error::InsufficientStorage(msg) => {
                Problem::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage", "Insufficient storage", msg)
            }
            engine::Error::Store(err) => {
                tracing::error!(error = %err, "journal error");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal-unavailable",
                    "Journal unavailable",
                    "the journal could not record the request, so nothing was decided; retry later",
                )
            }
        }
    }
}

/// A JSON body parsed with clear errors: what was wrong and where.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is parsed as JSON whatever `Content-Type` says (curl's `-d` sends a form
        // type); a wrong type is only mentioned when the body does not parse.
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|ct| !ct.contains("json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Body too large",
                    "the request body is larger than `server.max_body_bytes` allows",
                )
            } else if timed_out(&e) {
                Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "Request timeout",
                    "the request body did not arrive within `server.request_body_timeout_seconds`",
                )
            } else {
                Problem::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        let text = if bytes.is_empty() { &b"{}"[..] } else { &bytes[..] };
        let mut de = serde_json::Deserializer::from_slice(text);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => match de.end() {
                Ok(()) => Ok(Body(v)),
                Err(e) => Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "Invalid body",
                    format!("the body is not valid JSON: {e}"),
                )),
            },
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let syntax = inner.is_syntax() || inner.is_eof();
                let detail = if syntax {
                    let hint = content_type
                        .map(|ct| format!(" (it was sent as `{ct}`; send `Content-Type: application/json`)"))
                        .unwrap_or_default();
                    format!("the body is not valid JSON: {inner}{hint}")
                } else if path == "." || path.is_empty() {
                    format!("the body does not have the expected shape: {inner}")
                } else {
                    format!("`{path}`: {inner}")
                };
                let status = if syntax { StatusCode::BAD_REQUEST } else { StatusCode::UNPROCESSABLE_ENTITY };
                Err(Problem::new(status, "invalid-body", "Invalid body", detail))
            }
        }
    }
}

/// Query-string parameters, with errors as `problem+json` naming the parameter (axum's own
/// `Query` answers in plain text).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri).map(|Query(v)| Params(v)).map_err(|e| {
            let detail = e.body_text();
            let detail = detail.strip_prefix("Failed to deserialize query string: ").unwrap_or(&detail);
            Problem::bad_request(format!("invalid query string `?{}`: {detail}", parts.uri.query().unwrap_or("")))
        })
    }
}

/// An id in the request path (`/v1/actions/{id}`), with errors as `problem+json` (axum's own
/// `Path` answers in plain text, for example to an id that is not UTF-8 once decoded).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| PathId(id))
            .map_err(|e| Problem::bad_request(format!("invalid path `{}`: {}", parts.uri.path(), e.body_text())))
    }
}

/// Whether reading a body failed because it did not arrive in time
/// ([`crate::connections::BodyTimedOut`] somewhere in the error's sources).
fn timed_out(e: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<crate::connections::BodyTimedOut>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let limit = state.engine.config().server.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/oauth-protected-resource", get(resource_metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(resource_metadata))
        .route("/.well-known/oauth-protected-resource/mcp/{server}", get(resource_metadata))
        .route("/metrics", get(metrics_text))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/sessions/{id}/events", get(session_events))
        .route("/v1/sessions/{id}/timeline", get(session_timeline))
        .route("/v1/sessions/{id}/actions", post(submit_action))
        .route("/v1/sessions/{id}/resume", post(resume_session))
        .route("/v1/sessions/{id}/close", post(close_session))
        .route("/v1/breakers", get(list_breakers))
        .route("/v1/upstreams", get(crate::gateway_status::list_upstreams))
        .route("/v1/servers", get(crate::gateway_status::list_servers))
        .route("/v1/policy", get(policy_status))
        .route("/v1/policy/reload", post(policy_reload))
        .route("/v1/policy/rollback", post(policy_rollback))
        .route("/v1/policy/promote", post(policy_promote))
        .route("/v1/policy/candidate", post(policy_candidate).delete(policy_candidate_clear))
        .route("/v1/policy/canary", post(policy_canary))
        .route("/v1/policy/shadow", get(policy_shadow))
        .route("/v1/actions/{id}", get(get_action))
        .route("/v1/actions/{id}/result", post(report_result))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/kill", post(engage_kill).get(list_kill))
        .route("/v1/kill/{id}", delete(release_kill))
        .route("/v1/humans/{id}/unlock", post(unlock_mfa))
        .merge(plans::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; see docs/api.md")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method",
    )
}

/// The bearer token of a request, if it sent `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then_some(token)
}

async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // With `[server] metrics_token`, only its holder reads the metrics: they name agents,
    // upstreams, tools and policy rules, and show what is being done how often.
    if let Some(expected) = state.engine.config().server.metrics_token_hash
        && bearer(&headers).map(hash_token) != Some(expected)
    {
        return Problem::unauthorized("`/metrics` needs `Authorization: Bearer <token>` with the metrics token")
            .into_response();
    }
    match crate::telemetry::metrics_handle() {
        Some(handle) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
        }
        None => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics-unavailable",
            "Metrics unavailable",
            "metrics are off in this process",
        )
        .into_response(),
    }
}

/// `200` while the journal answers, `503` while it does not (a load balancer then sends the
/// requests to another replica; this one recovers by itself when the database is back). What
/// went wrong is logged, not shown: anyone may ask.
async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.engine.store();
    let answered = match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the journal does not answer");
            false
        }
        Err(_) => {
            tracing::warn!("health check: the journal did not answer within 2 s");
            false
        }
    };
    let status = if answered { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({
        "status": if answered { "ok" } else { "unavailable" },
        "policy_revision": state.engine.policy().revision(),
        "database": {"backend": store.backend(), "ok": answered},
    });
    // With replicas on one database: whether this one does the periodic work.
    if store.leader().is_some() {
        body["leader"] = json!(state.engine.is_leader());
    }
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    #[serde(default)]
    task: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    on_behalf_of: Option<String>,
}

async fn create_session(
    State(state): State<AppState>,
    principal: Principal,
    Body(body): Body<CreateSession>,
) -> Result<Response, Problem> {
    let agent = require_agent(&principal)?;
    if body.task.len() > 10_000 {
        return Err(Problem::bad_request("`task` must be at most 10000 characters"));
    }
    let session = state.engine.open_session(&agent, body.task, body.labels, body.on_behalf_of).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

#[derive(Deserialize)]
struct SessionQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    Params(q): Params<SessionQuery>,
) -> Result<Json<Value>, Problem> {
    let status = match q.status.as_deref() {
        None => None,
        Some("active") => Some(SessionStatus::Active),
        Some("paused") => Some(SessionStatus::Paused),
        Some("closed") => Some(SessionStatus::Closed),
        Some(other) => {
            return Err(Problem::bad_request(format!("`status` must be active, paused or closed, not `{other}`")));
        }
    };
    let filter = SessionFilter {
        agent_id: principal.agent_filter().map(String::from),
        status,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let sessions = state.engine.sessions(filter).await?;
    Ok(Json(json!({ "sessions": sessions })))
}

async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Value>, Problem> {
    let session = state.engine.session(&id, principal.agent_filter()).await?;
    let actions = state.engine.store().session_actions(&id).await.map_err(engine::Error::from)?;
    let mut body = serde_json::to_value(&session).unwrap_or_default();
    if let Value::Object(map) = &mut body {
        map.insert("actions".into(), serde_json::to_value(actions).unwrap_or_default());
    }
    Ok(Json(body))
}

async fn session_events(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Value>, Problem> {
    state.engine.session(&id, principal.agent_filter()).await?;
    let events = state.engine.store().events(&id).await.map_err(engine::Error::from)?;
    Ok(Json(json!({ "session_id": id, "events": events })))
}

async fn session_timeline(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Value>, Problem> {
    let session = state.engine.session(&id, principal.agent_filter()).await?;
    let mut events = state.engine.store().events(&id).await.map_err(engine::Error::from)?;
    // A plan's hand-offs (claims, calls under its leases in executors' sessions) are its own
    // stream's; its session's timeline shows them in place.
    for plan in crate::timeline::handoff_plans(&events) {
        let handoffs = state.engine.store().events(&plan).await.map_err(engine::Error::from)?;
        events = crate::timeline::with_handoffs(events, handoffs);
    }
    let entries: Vec<Value> = events.iter().map(crate::timeline::entry).collect();
    Ok(Json(json!({ "session": session, "timeline": entries })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitAction {
    tool: String,
    #[serde(default = "empty_object")]
    arguments: Value,
    #[serde(default)]
    justification: String,
    /// The lease of a plan step handed to this agent (`docs/plans.md#hand-offs`).
    #[serde(default)]
    plan_lease: Option<crate::engine::LeaseRef>,
}

fn empty_object() -> Value {
    json!({})
}

/// The status code that goes with an action's state.
fn action_status_code(status: ActionStatus) -> StatusCode {
    match status {
        ActionStatus::PendingApproval => StatusCode::ACCEPTED,
        ActionStatus::Denied | ActionStatus::Expired | ActionStatus::Cancelled => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    }
}

fn action_response(view: ActionView, outcome: Option<Outcome>) -> Response {
    let mut code = action_status_code(view.action.status);
    let retry_after = view.action.decision.retry_after_ms;
    let rate_limited = view.action.status == ActionStatus::Denied
        && view.action.decision.reasons.first().is_some_and(|r| r.rule == airlock_core::limits::RULE_RATE_LIMIT);
    if rate_limited {
        code = StatusCode::TOO_MANY_REQUESTS;
    }
    let mut response = (code, Json(view)).into_response();
    if let (true, Some(ms)) = (rate_limited, retry_after) {
        let secs = ms.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    match outcome {
        Some(Outcome::Replayed) => {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Some(Outcome::Joined) => {
            response.headers_mut().insert("airlock-joined", HeaderValue::from_static("true"));
        }
        _ => {}
    }
    response
}

async fn submit_action(
    State(state): State<AppState>,
    principal: Principal,
    PathId(session_id): PathId,
    headers: HeaderMap,
    Body(body): Body<SubmitAction>,
) -> Result<Response, Problem> {
    let agent = require_agent(&principal)?;
    if !body.arguments.is_object() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid body",
            "`arguments` must be a JSON object",
        ));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Problem::bad_request("`Idempotency-Key` must be visible ASCII"))?
                .trim_matches('"')
                .to_string(),
        ),
    };
    // Upstream tools carry what their server reported, as over MCP, so tiers agree.
    let reported_annotations = state.gateway.as_ref().and_then(|g| g.reported_annotations(&body.tool));
    let request = ActionRequest {
        tool: body.tool,
        arguments: body.arguments,
        justification: body.justification,
        reported_annotations,
        idempotency_key,
        traceparent: headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string),
        mcp_session: None,
        server: None,
        plan_lease: body.plan_lease,
    };
    let submission = state.engine.submit(&agent, &session_id, request).await?;
    let outcome = submission.outcome;
    // What runs now is the executor's decision, the same as over MCP: a new allowed upstream
    // call runs here; an approved one runs once, for whoever claims it; others wait for it. It
    // runs detached from this request, so a client that disconnects mid-call does not leave the
    // action `executing`: the call finishes and its outcome is recorded.
    let carried = executor::carry_out_detached(state.engine.clone(), state.gateway.clone(), submission).await?;
    Ok(action_response(carried.view, Some(outcome)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    #[serde(default)]
    comment: String,
}

async fn resume_session(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Body(body): Body<ResumeBody>,
) -> Result<Json<airlock_core::Session>, Problem> {
    let human = require_human(&principal)?;
    Ok(Json(state.engine.resume_session(&human, &id, &body.comment).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    reason: String,
}

async fn close_session(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Body(body): Body<CloseBody>,
) -> Result<Json<airlock_core::Session>, Problem> {
    let closer = match &principal {
        Principal::Agent(a) => engine::SessionCloser::Agent(a),
        Principal::Human(h) => engine::SessionCloser::Human(h),
    };
    Ok(Json(state.engine.close_session(closer, &id, &body.reason).await?))
}

async fn list_breakers(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require_human(&principal)?;
    Ok(Json(json!({ "breakers": state.engine.breakers() })))
}

// Policy status and the shadow report are admin-only: they show the policy's files, where it
// lives on the server and how a candidate would decide, which is how the rules could be probed
// for gaps. Approvers see what they need on each approval.
#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<f64>,
}

/// How long a long-poll asked to wait `wait` seconds waits: at most `max`. The number comes from
/// the query string, so anything a float parses to may arrive; it is capped before it becomes a
/// `Duration`, which can't hold `1e20` seconds (and panics when asked to).
fn wait_limit(wait: Option<f64>, max: Duration) -> Result<Duration, String> {
    match wait {
        None => Ok(Duration::ZERO),
        Some(w) if w.is_finite() && w >= 0.0 => Ok(Duration::from_secs_f64(w.min(max.as_secs_f64()))),
        Some(w) => Err(format!(
            "`wait` must be a finite, non-negative number of seconds (at most {} are waited), got `{w}`",
            max.as_secs()
        )),
    }
}

async fn get_action(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Params(q): Params<WaitQuery>,
) -> Result<Json<ActionView>, Problem> {
    let wait = wait_limit(q.wait, state.engine.config().server.max_wait).map_err(Problem::bad_request)?;
    let view = state.engine.wait_for_change(&id, principal.agent_filter(), wait).await?;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportResult {
    ok: bool,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    cost_usd: Option<f64>,
}

async fn report_result(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Body(body): Body<ReportResult>,
) -> Result<Json<ActionView>, Problem> {
    let agent = require_agent(&principal)?;
    if let Some(Err(e)) = body.cost_usd.map(airlock_core::money::Usd::new) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid body",
            format!("`cost_usd`: {e}"),
        ));
    }
    let report = engine::ResultReport { ok: body.ok, output: body.output, error: body.error, cost_usd: body.cost_usd };
    let view = state.engine.report_result(&agent, &id, report).await?;
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_poll_waits_at_most_the_limit_and_refuses_what_is_not_a_duration() {
        let max = Duration::from_secs(60);
        assert_eq!(wait_limit(None, max), Ok(Duration::ZERO));
        assert_eq!(wait_limit(Some(2.5), max), Ok(Duration::from_millis(2500)));
        assert_eq!(wait_limit(Some(-0.0), max), Ok(Duration::ZERO));
        assert_eq!(wait_limit(Some(f64::MIN_POSITIVE), max), Ok(Duration::ZERO));
        for huge in [61.0, 1e20, f64::MAX] {
            assert_eq!(wait_limit(Some(huge), max), Ok(max), "{huge}");
        }
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let message = wait_limit(Some(bad), max).expect_err("refused");
            assert!(message.starts_with("`wait` must be a finite, non-negative number of seconds"), "{message}");
            assert!(message.contains(&format!("got `{bad}`")), "{message}");
        }
    }
}
