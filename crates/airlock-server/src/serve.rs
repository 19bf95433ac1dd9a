//! `airlock serve`: open the journal, load the policy, start the engine and the HTTP listener,
//! and shut down cleanly on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_policy::{Options as PolicyOptions, Policy};
use anyhow::Context;
use tokio::net::TcpListener;

use airlock_mcp::front::{CallerIdentity, Front, Gateway};
use airlock_mcp::{Transport, UpstreamSpec, Upstreams};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::access::Endpoint;
use crate::api::{AppState, Principal, Problem, router};
use crate::config::{Config, UpstreamTransport};
use crate::engine::Engine;
use crate::gateway::McpGateway;

pub use crate::journal::JOURNAL_FILE;

/// Loads the policy named by the configuration.
pub fn load_policy(config: &Config) -> Result<Policy, airlock_policy::Error> {
    Policy::load(&config.policy.dir, &PolicyOptions { timeout: config.policy.timeout, coverage: false })
}

/// A running server.
pub struct Running {
    /// The address it listens on (with the real port when the config said 0).
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Asks the server to stop and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    /// A handle that stops the server when `true` is sent.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts airlock with `config`. A policy that does not compile is an error: the server refuses
/// to start rather than run without policy.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    // Install the metrics recorder before anything records.
    let _ = crate::telemetry::metrics_handle();
    let policy = load_policy(&config).context("the policy does not load, so airlock will not start")?;
    let store = crate::journal::open(&config).await?;
    let canary_key = crate::lifecycle::CanaryKey::load_or_create(&config).context("cannot load the canary key")?;
    let config = Arc::new(config);
    let engine = Engine::start(config.clone(), policy, store).await.context("cannot restore state from the journal")?;
    engine.set_canary_key(canary_key);
    engine.restore_policy().await.context("cannot restore the active policy revision")?;
    let upstreams = Upstreams::start(upstream_specs(&config));
    // Give upstreams a moment so the first tools/list is complete; slow ones join later.
    upstreams.wait_ready(std::time::Duration::from_secs(20)).await;
    let gateway = Arc::new(McpGateway::new(engine.clone(), upstreams.clone()));
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if let Some(warning) = open_metrics_warning(addr, &config) {
        tracing::warn!("{warning}");
    }
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(engine.clone().run_background(rx.clone()));
    let replicas = tokio::spawn(engine.clone().follow_replicas(rx.clone()));
    #[cfg(unix)]
    let reloader = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                match engine.reload_policy("SIGHUP").await {
                    Ok(change) => {
                        tracing::info!(active = %change.active, changed = change.changed, "policy reloaded on SIGHUP")
                    }
                    Err(e) => tracing::error!(error = %e, "policy reload on SIGHUP refused"),
                }
            }
        })
    };
    let deliveries = tokio::spawn(crate::notify::run_deliveries(engine.clone(), rx.clone()));
    let signer =
        crate::audit::CheckpointSigner::load_or_create(&config).context("cannot load the audit signing key")?;
    let checkpoints = tokio::spawn(crate::audit::run_checkpoints(engine.clone(), signer, rx.clone()));
    let state = AppState::new(engine.clone()).with_gateway(gateway.clone()).with_base_url(&format!("http://{addr}"));
    let (mcp, mcp_sessions) = mcp_service(&config, gateway.clone(), addr);
    let expiry = tokio::spawn(expire_idle_mcp_sessions(gateway.clone(), mcp_sessions, rx.clone()));
    let schemas = tokio::spawn(refresh_input_schemas(engine.clone(), upstreams.clone(), rx.clone()));
    let collisions = tokio::spawn(crate::servers::log_collisions(gateway.clone(), rx.clone()));
    // `/mcp` offers every upstream; `/mcp/{server}` a virtual server. One rmcp service serves
    // both: the endpoint travels with each request (`CallerIdentity::server`), and an MCP
    // session works only on the endpoint that opened it.
    let mcp_router = axum::Router::new()
        .route_service("/mcp", mcp.clone())
        .route_service("/mcp/{server}", mcp)
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate_agent));
    let app = router(state.clone())
        .merge(crate::ui::router(state))
        .merge(mcp_router)
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let rx_http = rx.clone();
    let limits = config.server.connections.clone();
    let task = tokio::spawn(async move {
        // Timeouts, the connection cap and its reserve, and TCP_NODELAY: see `connections`.
        crate::connections::serve(listener, app, limits, rx_http).await;
        background.abort();
        replicas.abort();
        deliveries.abort();
        expiry.abort();
        schemas.abort();
        collisions.abort();
        #[cfg(unix)]
        reloader.abort();
        // The checkpointer signs a last checkpoint on shutdown; give it a moment.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), checkpoints).await;
        upstreams.shutdown().await;
        // Flush the spans still buffered.
        let tracing_engine = engine.clone();
        let _ = tokio::task::spawn_blocking(move || tracing_engine.tracing().shutdown()).await;
        drop(engine);
        Ok(())
    });
    Ok(Running { addr, shutdown, task })
}

/// What `serve` warns about when `/metrics` is open to other machines: a listen address that is
/// not loopback and no `[server] metrics_token`.
pub fn open_metrics_warning(addr: SocketAddr, config: &Config) -> Option<String> {
    (!addr.ip().is_loopback() && config.server.metrics_token_hash.is_none()).then(|| {
        format!("/metrics on {addr} answers anyone who can reach it; set `[server] metrics_token` to require a token")
    })
}

/// Upstream specs from configuration. Stdio children run in the config file's directory with
/// only the environment the configuration gives them: what they inherit (a few variables such as
/// `PATH` and `HOME`, never one that holds a secret) and their own `env` table over it.
pub fn upstream_specs(config: &Config) -> Vec<UpstreamSpec> {
    let cwd = config
        .file
        .parent()
        .map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p })
        .map(Into::into);
    config
        .upstreams
        .iter()
        .map(|u| UpstreamSpec {
            name: u.name.clone(),
            transport: match &u.transport {
                UpstreamTransport::Stdio { command, args, env, inherited } => Transport::Stdio {
                    command: command.clone(),
                    args: args.clone(),
                    env: inherited.iter().chain(env).map(|(k, v)| (k.clone(), v.clone())).collect(),
                    cwd: cwd.clone(),
                },
                UpstreamTransport::Http { url, headers, client_credentials } => Transport::Http {
                    url: url.clone(),
                    headers: headers.clone(),
                    client_credentials: client_credentials.clone(),
                },
            },
            call_timeout: u.timeout,
        })
        .collect()
}

/// The `/mcp` service, and its session manager (for closing idle sessions).
fn mcp_service(
    config: &Config,
    gateway: Arc<McpGateway>,
    addr: SocketAddr,
) -> (StreamableHttpService<Front, LocalSessionManager>, Arc<LocalSessionManager>) {
    let mut http = StreamableHttpServerConfig::default().with_max_request_body_bytes(config.server.max_body_bytes);
    if addr.ip().is_loopback() {
        // Loopback: keep rmcp's DNS-rebinding protection (Host must be localhost/127.0.0.1/::1).
        http = http.with_allowed_hosts(["localhost", "127.0.0.1", "::1"]);
    } else {
        // Reached through real host names we can't know here; bearer auth protects the endpoint.
        http = http.disable_allowed_hosts();
    }
    let gateway: Arc<dyn Gateway> = gateway;
    // rmcp's idle timeout counts messages: it would end a session whose `tools/call` waits in
    // silence for an approval or a slow upstream. Idle sessions are expired by
    // `expire_idle_mcp_sessions` instead, which counts requests in progress.
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = None;
    let sessions = Arc::new(sessions);
    let service = StreamableHttpService::new(move || Ok(Front::new(gateway.clone())), sessions.clone(), http);
    (service, sessions)
}

/// Every so often, forgets the MCP sessions idle for `[mcp] session_idle_seconds`, closes them at
/// rmcp (an open event stream ends) and the airlock sessions behind them (see
/// [`McpGateway::expire_idle_mcp_sessions`]).
async fn expire_idle_mcp_sessions(
    gateway: Arc<McpGateway>,
    sessions: Arc<LocalSessionManager>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use rmcp::transport::streamable_http_server::session::SessionManager;
    let every = (gateway.engine().config().mcp.session_idle / 4)
        .clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for id in gateway.expire_idle_mcp_sessions().await {
            if let Err(e) = sessions.close_session(&id.clone().into()).await {
                tracing::debug!(error = %e, "an expired MCP session did not close cleanly");
            }
        }
    }
}

/// Compiles the input schemas of upstream tools whenever an upstream's tool list (or health)
/// changes, so that calls find them compiled; a call that comes first compiles what it needs.
async fn refresh_input_schemas(engine: Engine, upstreams: Upstreams, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut changed = upstreams.subscribe();
    loop {
        engine.refresh_input_schemas();
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The answer to a request whose `Mcp-Session-Id` names no session of its agent: the same as
/// rmcp's for an id it does not know, so that another agent's session id tells nothing.
fn unknown_mcp_session() -> Response {
    let mut response = Response::new(axum::body::Body::from("Not Found: Session not found"));
    *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
    response
}

/// The endpoint a path under `/mcp` names: `Some(None)` for `/mcp` itself, `Some(Some(name))`
/// for `/mcp/{name}`, `None` for anything else (the router sends only those two here).
fn endpoint(path: &str) -> Option<Option<&str>> {
    match path.strip_prefix("/mcp")? {
        "" => Some(None),
        rest => rest.strip_prefix('/').filter(|s| !s.is_empty() && !s.contains('/')).map(Some),
    }
}

/// `404` for a virtual server that does not exist, naming those that do: only an authenticated
/// agent gets this far.
fn unknown_server(asked: &str, gateway: &McpGateway) -> Response {
    let names: Vec<&str> = gateway.servers().iter().map(|s| s.name()).collect();
    let detail = if names.is_empty() {
        format!("there is no MCP server `{asked}`: no virtual servers are configured; `/mcp` offers every upstream")
    } else {
        let paths = names.iter().map(|n| format!("/mcp/{n}")).collect::<Vec<_>>().join(", ");
        format!("there is no MCP server `{asked}`; the virtual servers are {paths}, and `/mcp` offers every upstream")
    };
    Problem::new(axum::http::StatusCode::NOT_FOUND, "not-found", "Not found", detail)
        .with("servers", serde_json::json!(names))
        .into_response()
}

/// `/mcp` and `/mcp/{server}` accept agents only: their identity, and the endpoint they came to,
/// travel to the MCP handler in the request. An unknown server is answered after authentication,
/// so only agents learn which servers exist.
async fn authenticate_agent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let principal = match crate::api::authenticate(&state, &parts.headers, Endpoint::of(parts.uri.path())).await {
        Ok(p) => p,
        Err(problem) => return problem.into_response(),
    };
    let Principal::Agent(agent) = principal else {
        return Problem::forbidden_public("agent_only", "the MCP endpoint is for agents; use an agent's token")
            .into_response();
    };
    let Some(gateway) = state.gateway() else {
        return Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
            "the MCP gateway is not running",
        )
        .into_response();
    };
    let server = match endpoint(parts.uri.path()) {
        Some(Some(name)) if gateway.server(name).is_none() => return unknown_server(name, gateway),
        Some(server) => server.map(str::to_string),
        None => {
            let detail = "no such endpoint; see docs/api.md";
            return Problem::new(axum::http::StatusCode::NOT_FOUND, "not-found", "Not found", detail).into_response();
        }
    };
    let agent_id = agent.agent.id.clone();
    // The agent as this request's token made it travels with the request: an access token's
    // scopes and identity are this request's, not the agent's for good.
    let made: Arc<dyn std::any::Any + Send + Sync> = agent;
    parts.extensions.insert(CallerIdentity {
        agent_id: agent_id.clone(),
        server: server.clone(),
        principal: Some(made),
    });
    // An `Mcp-Session-Id` is a bearer secret of the agent that opened the session: a request
    // that carries one (POST, GET with or without `Last-Event-ID`, DELETE) goes on only when it
    // comes from that agent, to the endpoint the session was opened on, before rmcp sees it; any
    // other is answered as for an unknown id.
    let mut ids = parts.headers.get_all(HEADER_SESSION_ID).iter();
    let (mcp_session, in_progress) = match (ids.next(), ids.next()) {
        (None, _) => (None, None),
        (Some(value), None) => {
            let Some(id) = value.to_str().ok().map(str::to_string) else { return unknown_mcp_session() };
            let Some(request) = gateway.begin_mcp_request(&id, &agent_id, server.as_deref()) else {
                return unknown_mcp_session();
            };
            (Some(id), Some(request))
        }
        // Two ids: which one would count is not this layer's guess to make.
        (Some(_), Some(_)) => return unknown_mcp_session(),
    };
    let deleting = parts.method == axum::http::Method::DELETE;
    let mut response = next.run(Request::from_parts(parts, body)).await;
    // rmcp accepts a `DELETE` with `202`; the official SDKs expect `200` (the Python SDK logs
    // "Session termination failed: 202" on every close otherwise). The session is ended either way.
    if deleting && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::OK;
    }
    match &mcp_session {
        // A new session (the `initialize` answer names it) belongs to the agent that opened it,
        // before the answer, and with it the id, reaches the client.
        None => {
            if response.status().is_success()
                && let Some(id) = response.headers().get(HEADER_SESSION_ID).and_then(|v| v.to_str().ok())
            {
                gateway.mcp_session_opened(id, &agent_id, server.as_deref());
            }
        }
        // A client's `DELETE` ends its MCP session; once rmcp has accepted it, the airlock
        // session behind it is closed too.
        Some(id) if deleting && response.status().is_success() => gateway.end_mcp_session(id, &agent_id).await,
        Some(_) => {}
    }
    match in_progress {
        // The request is in progress while its answer streams (a `tools/call`, an open event
        // stream): the session is not idle until the body is done or dropped.
        Some(request) if response.status() == axum::http::StatusCode::OK => {
            let (parts, body) = response.into_parts();
            let body = body.into_data_stream().map(move |chunk| {
                let _in_progress = &request;
                chunk
            });
            Response::from_parts(parts, axum::body::Body::from_stream(body))
        }
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_on_a_non_loopback_address_are_warned_about() {
        let text = |extra: &str| format!("[server]\n{extra}\n[policy]\ndir = \".\"\n");
        let env = std::collections::BTreeMap::from([("METRICS".to_string(), "scrape".to_string())]);
        let load = |extra: &str| Config::parse(&text(extra), &std::env::temp_dir().join("airlock.toml"), &env).unwrap();
        let open = load("");
        let guarded = load("metrics_token = \"env:METRICS\"");
        assert_eq!(guarded.server.metrics_token_hash, Some(crate::config::hash_token("scrape")));
        let public: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let warning = open_metrics_warning(public, &open).unwrap();
        assert!(warning.contains("metrics_token"), "{warning}");
        assert_eq!(open_metrics_warning(loopback, &open), None);
        assert_eq!(open_metrics_warning(public, &guarded), None);
    }
}
