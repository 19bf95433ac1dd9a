//! airlock as an MCP client: one supervised connection per configured upstream server.
//!
//! What airlock does with what an upstream sends it (progress, list changes, pings) is the
//! client handler in [`client`].
//!
//! Each upstream has a supervisor task that connects (a stdio child process or streamable
//! HTTP), lists its tools (all pages), and watches the connection. When the connection dies
//! (the child exits, the server goes away, a call finds the transport closed) the supervisor
//! reconnects with exponential backoff. Calls made while an upstream is down fail at once with a
//! clear error; nothing is queued or retried behind the agent's back.

mod client;
mod forwarding;
mod http_client;
mod supervise;

use client::UpstreamClient;
pub(crate) use client::token_key;
pub use forwarding::Offered;
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use supervise::supervise;

use airlock_core::sync::{lock, read, write};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest,
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse, JsonObject, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, RequestId, Resource, ResourceTemplate, ServerCapabilities,
    ServerResult, Tool,
};
use rmcp::service::{Peer, PeerRequestOptions, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// The child's whole environment: it inherits nothing from airlock's, which holds
        /// other callers' secrets.
        env: BTreeMap<String, String>,
        /// Working directory (the config file's directory).
        cwd: Option<std::path::PathBuf>,
    },
    /// Streamable HTTP.
    Http {
        /// Endpoint URL.
        url: String,
        /// Extra request headers.
        headers: BTreeMap<String, String>,
        /// airlock's own OAuth client credentials for this upstream: every request carries an
        /// access token got with them.
        client_credentials: Option<airlock_identity::ClientCredentialsOptions>,
    },
}

/// One upstream as configured.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Prefix of its tools.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Limit of one call.
    pub call_timeout: Duration,
}

/// Why a call to an upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream of that name.
    #[error("no upstream named `{0}`")]
    Unknown(String),
    /// Not connected right now.
    #[error("upstream `{name}` is not connected ({reason}); airlock is reconnecting, retry shortly")]
    Unavailable {
        /// Upstream.
        name: String,
        /// Last connection error.
        reason: String,
    },
    /// The call did not finish in time.
    #[error("upstream `{name}` did not answer within {seconds:.1}s")]
    Timeout {
        /// Upstream.
        name: String,
        /// The limit.
        seconds: f64,
    },
    /// The connection broke or the server answered with a protocol error.
    #[error("upstream `{name}` failed: {message}")]
    Failed {
        /// Upstream.
        name: String,
        /// What happened.
        message: String,
    },
    /// The call was sent, and airlock stopped waiting for its answer on request (a kill switch,
    /// the caller cancelling); the upstream heard `notifications/cancelled`.
    #[error("the call to upstream `{name}` was cancelled after it was sent")]
    Cancelled {
        /// Upstream.
        name: String,
    },
    /// The call was sent, and the connection to the upstream broke before its answer came (the
    /// server crashed or went away mid-call).
    #[error("the connection to upstream `{name}` broke after the call was sent ({message})")]
    Lost {
        /// Upstream.
        name: String,
        /// What the transport said.
        message: String,
    },
}

impl UpstreamError {
    /// Whether the call left airlock and ended without an answer (a time-out or a cancellation):
    /// the upstream may have acted on it, so its outcome is unknown, not failed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. } | UpstreamError::Cancelled { .. } | UpstreamError::Lost { .. })
    }
}

/// Why connecting to an upstream failed. Its text is the upstream's [`Health::Down`] error and
/// the reason given to calls while it is down.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// The stdio server's command could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The configured command.
        command: String,
        /// Why the process did not start.
        source: std::io::Error,
    },
    /// The stdio server started, but the MCP handshake with it failed.
    #[error("MCP handshake failed: {source}")]
    StdioHandshake {
        /// What rmcp said.
        source: rmcp::service::ClientInitializeError,
    },
    /// A configured header name is not a valid HTTP header name.
    #[error("header `{name}`: {source}")]
    HeaderName {
        /// The header as configured.
        name: String,
        /// What is wrong with it.
        source: http::header::InvalidHeaderName,
    },
    /// A configured header value is not a valid HTTP header value.
    #[error("header `{name}`: {source}")]
    HeaderValue {
        /// The header as configured.
        name: String,
        /// What is wrong with its value.
        source: http::header::InvalidHeaderValue,
    },
    /// The HTTP client could not be built (no TLS backend, for instance).
    #[error("cannot build the HTTP client: {source}")]
    HttpClient {
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// The MCP handshake with the HTTP server failed.
    #[error("MCP handshake with {url} failed: {source}")]
    HttpHandshake {
        /// The endpoint URL.
        url: String,
        /// What rmcp said.
        source: rmcp::service::ClientInitializeError,
    },
    /// The handshake succeeded but listing the tools failed.
    #[error("tools/list failed: {source}")]
    ListTools {
        /// What rmcp said.
        source: rmcp::ServiceError,
    },
    /// Connecting took longer than [`CONNECT_TIMEOUT`].
    #[error("connection timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    TimedOut,
}

/// How long one connection attempt (start or reach the server, and the handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection state of one upstream, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Health {
    /// Connecting for the first time or again.
    Connecting,
    /// Connected.
    Up {
        /// Server name and version it reported.
        server: String,
        /// Protocol version agreed.
        protocol_version: String,
        /// Tools it offers.
        tools: usize,
    },
    /// Not connected; `error` says why.
    Down {
        /// Last error.
        error: String,
    },
}

/// One upstream's status: what `GET /v1/upstreams` lists.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamStatus {
    /// The configured name (the prefix of its tools).
    pub name: String,
    /// `stdio` (a child process) or `http` (streamable HTTP).
    pub transport: &'static str,
    /// Connection state, flattened: `state` plus its fields.
    #[serde(flatten)]
    pub health: Health,
    /// Connections made since start; more than 1 means it was restarted or reconnected.
    pub connections: u64,
}

/// Receives an upstream's progress notifications for one call: `(progress, total, message)`.
pub type ProgressRelay = Arc<dyn Fn(f64, Option<f64>, Option<String>) + Send + Sync>;

struct Conn {
    peer: Peer<RoleClient>,
    tools: Vec<Tool>,
    server: String,
    protocol_version: String,
}

struct Upstream {
    spec: UpstreamSpec,
    conn: RwLock<Option<Arc<Conn>>>,
    health: RwLock<Health>,
    /// Wakes the supervisor when a call saw the connection break or the tool list changed.
    poke: Notify,
    /// Bumped whenever the tool list may have changed.
    generation: std::sync::atomic::AtomicU64,
    refresh_tools: std::sync::atomic::AtomicBool,
    /// Calls in flight that relay progress, by the progress token airlock sent upstream.
    progress: std::sync::Mutex<HashMap<String, ProgressRelay>>,
    /// Bumped when any upstream says its prompts or resources changed (shared by all).
    lists: Arc<tokio::sync::watch::Sender<ListChanges>>,
    /// Calls in flight, with their clients, for what the upstream sends back.
    in_flight: crate::forward::InFlight,
    /// Resource subscriptions held here for clients.
    subscriptions: crate::subscriptions::Subscriptions,
    /// The most verbose log level any client asked for (`rank + 1`; 0 when none has).
    log_level: std::sync::atomic::AtomicU8,
}

/// How often upstreams said their prompt and resource lists changed, since start: a session
/// forwards `list_changed` to its client when a count moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListChanges {
    /// `notifications/prompts/list_changed` received.
    pub prompts: u64,
    /// `notifications/resources/list_changed` received.
    pub resources: u64,
}

/// All upstreams. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Vec<Arc<Upstream>>>,
    supervisors: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    shutdown: CancellationToken,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    lists: Arc<tokio::sync::watch::Sender<ListChanges>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").field("count", &self.inner.len()).finish()
    }
}

/// Removes a progress relay when the call it belongs to ends, however it ends.
struct RelayRegistration<'a> {
    upstream: &'a Upstream,
    key: String,
}

impl Drop for RelayRegistration<'_> {
    fn drop(&mut self) {
        lock(&self.upstream.progress).remove(&self.key);
    }
}

/// Takes a call off the upstream's in-flight list when it ends, however it ends.
struct InFlightRegistration<'a> {
    upstream: &'a Upstream,
    id: RequestId,
}

impl Drop for InFlightRegistration<'_> {
    fn drop(&mut self) {
        self.upstream.in_flight.remove(&self.id);
    }
}

/// Sends `notifications/cancelled` for a request that is dropped before its answer arrives;
/// clear `id` once the answer is in.
pub(crate) struct AbandonGuard {
    pub(crate) peer: Peer<RoleClient>,
    pub(crate) id: Option<RequestId>,
    pub(crate) reason: &'static str,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let (peer, reason) = (self.peer.clone(), self.reason.to_string());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = peer.notify_cancelled(CancelledNotificationParam::new(Some(id), Some(reason))).await;
            });
        }
    }
}

/// How long listing prompts or resources, reading a resource, or completing may take at one
/// upstream before airlock gives up on it.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

impl Upstreams {
    /// Starts a supervisor per upstream. Connections come up in the background; use
    /// [`Upstreams::wait_ready`] to wait for them.
    pub fn start(specs: Vec<UpstreamSpec>) -> Upstreams {
        crate::ensure_crypto_provider();
        let shutdown = CancellationToken::new();
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let changed = Arc::new(changed);
        let lists = Arc::new(tokio::sync::watch::channel(ListChanges::default()).0);
        let inner: Vec<Arc<Upstream>> = specs
            .into_iter()
            .map(|spec| {
                Arc::new(Upstream {
                    spec,
                    conn: RwLock::new(None),
                    health: RwLock::new(Health::Connecting),
                    poke: Notify::new(),
                    generation: std::sync::atomic::AtomicU64::new(0),
                    refresh_tools: std::sync::atomic::AtomicBool::new(false),
                    progress: std::sync::Mutex::new(HashMap::new()),
                    lists: lists.clone(),
                    in_flight: Default::default(),
                    subscriptions: Default::default(),
                    log_level: Default::default(),
                })
            })
            .collect();
        let supervisors =
            inner.iter().map(|up| tokio::spawn(supervise(up.clone(), shutdown.clone(), changed.clone()))).collect();
        Upstreams {
            inner: Arc::new(inner),
            supervisors: Arc::new(std::sync::Mutex::new(supervisors)),
            shutdown,
            changed,
            lists,
        }
    }

    /// Stops every supervisor and closes every connection (child processes are killed), waiting
    /// up to five seconds for them to finish.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let handles: Vec<_> = lock(&self.supervisors).drain(..).collect();
        let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(handles)).await;
    }

    /// Waits until every upstream has connected or failed once, at most `limit`.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.changed.subscribe();
        loop {
            let all_settled = self.inner.iter().all(|u| !matches!(*read(&u.health), Health::Connecting));
            if all_settled {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return;
            }
        }
    }

    /// A receiver that changes whenever any upstream's tools or health change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A receiver that changes whenever an upstream says its prompts or resources changed.
    pub fn subscribe_lists(&self) -> tokio::sync::watch::Receiver<ListChanges> {
        self.lists.subscribe()
    }

    /// Health of every upstream, by name.
    pub fn health(&self) -> Vec<(String, Health)> {
        self.inner.iter().map(|u| (u.spec.name.clone(), read(&u.health).clone())).collect()
    }

    /// Status of every upstream, in configuration order, for status pages and `airlock upstreams`.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.inner
            .iter()
            .map(|u| UpstreamStatus {
                name: u.spec.name.clone(),
                transport: match u.spec.transport {
                    Transport::Stdio { .. } => "stdio",
                    Transport::Http { .. } => "http",
                },
                health: read(&u.health).clone(),
                connections: u.generation.load(std::sync::atomic::Ordering::SeqCst),
            })
            .collect()
    }

    /// The tools of every connected upstream, as `(upstream, tool)` with the upstream's own names.
    pub fn tools(&self) -> Vec<(String, Tool)> {
        let mut out = Vec::new();
        for u in self.inner.iter() {
            if let Some(conn) = read_conn(u) {
                out.extend(conn.tools.iter().map(|t| (u.spec.name.clone(), t.clone())));
            }
        }
        out
    }

    /// The tool `name` of upstream `upstream`, if connected and offered.
    pub fn tool(&self, upstream: &str, name: &str) -> Option<Tool> {
        let u = self.inner.iter().find(|u| u.spec.name == upstream)?;
        read_conn(u)?.tools.iter().find(|t| t.name == name).cloned()
    }

    /// Whether an upstream of that name is configured.
    pub fn contains(&self, upstream: &str) -> bool {
        self.inner.iter().any(|u| u.spec.name == upstream)
    }

    fn connected(&self, upstream: &str) -> Result<(&Arc<Upstream>, Arc<Conn>), UpstreamError> {
        let up = self
            .inner
            .iter()
            .find(|u| u.spec.name == upstream)
            .ok_or_else(|| UpstreamError::Unknown(upstream.to_string()))?;
        let Some(conn) = read_conn(up) else {
            let reason = match read(&up.health).clone() {
                Health::Down { error } => error,
                Health::Connecting => "still connecting".into(),
                Health::Up { .. } => "connection lost".into(),
            };
            return Err(UpstreamError::Unavailable { name: upstream.to_string(), reason });
        };
        Ok((up, conn))
    }

    /// Calls a tool. `cancel` aborts the call (the request is cancelled at the upstream too).
    /// With a progress relay in `back`, airlock asks the upstream for progress (under a token of
    /// its own, so two clients' tokens never collide) and hands each notification to it; with a
    /// caller, the upstream's requests and log messages during the call go to that client.
    pub async fn call(
        &self,
        upstream: &str,
        name: &str,
        arguments: JsonObject,
        cancel: CancellationToken,
        traceparent: Option<String>,
        back: crate::forward::Backchannel,
    ) -> Result<CallToolResult, UpstreamError> {
        let crate::forward::Backchannel { progress: relay, caller } = back;
        let (up, conn) = self.connected(upstream)?;
        let mut params = CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
        if let Some(tp) = traceparent {
            // W3C trace context travels in `_meta` (MCP convention).
            let mut meta = rmcp::model::RequestMetaObject::new();
            meta.0.insert("traceparent".to_string(), serde_json::Value::String(tp));
            params.meta = Some(meta);
        }
        let timeout = up.spec.call_timeout;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // rmcp gives every request a progress token of its own (unique on this connection), so
        // the relay is registered under that token.
        let handle = conn
            .peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(|e| failed(up, e))?;
        up.in_flight.insert(handle.id.clone(), caller);
        let _in_flight = InFlightRegistration { upstream: up, id: handle.id.clone() };
        let _registration = relay.map(|relay| {
            let key = token_key(&handle.progress_token);
            lock(&up.progress).insert(key.clone(), relay);
            RelayRegistration { upstream: up, key }
        });
        // Abandoning the call (time-out, cancellation, the caller going away) cancels it at the
        // upstream with `notifications/cancelled`.
        let mut abandoned = AbandonGuard { peer: conn.peer.clone(), id: Some(handle.id.clone()), reason: "abandoned" };
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, handle.await_response()) => r,
            _ = cancel.cancelled() => {
                abandoned.reason = "cancelled by airlock";
                return Err(UpstreamError::Cancelled { name: upstream.to_string() });
            }
        };
        match result {
            Err(_) => {
                abandoned.reason = "timed out at airlock";
                Err(UpstreamError::Timeout { name: upstream.to_string(), seconds: timeout.as_secs_f64() })
            }
            Ok(Ok(ServerResult::CallToolResult(result))) => {
                abandoned.id = None;
                if _registration.is_some() {
                    // rmcp hands each notification to its handler on a task of its own, spawned
                    // before the answer is delivered; let those tasks run before the relay goes.
                    // (Not a sleep: rmcp clients send a progress token with every call, so this
                    // is on every relayed call's path.)
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                }
                Ok(result)
            }
            Ok(Ok(other)) => {
                abandoned.id = None;
                // A result without `content` (`{}`, or `_meta` alone) is decoded by rmcp as an
                // empty or custom result; it is still the tool's answer.
                let value = serde_json::to_value(&other).unwrap_or(serde_json::Value::Null);
                let contentless = matches!(other, ServerResult::EmptyResult(_) | ServerResult::CustomResult(_));
                let recovered = match value {
                    serde_json::Value::Object(mut map) if contentless && !map.contains_key("content") => {
                        map.insert("content".into(), serde_json::Value::Array(Vec::new()));
                        serde_json::from_value::<CallToolResult>(serde_json::Value::Object(map)).ok()
                    }
                    _ => None,
                };
                match recovered {
                    Some(result) => Ok(result),
                    None => {
                        let kind = serde_json::to_value(&other)
                            .ok()
                            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(", ")))
                            .unwrap_or_default();
                        Err(UpstreamError::Failed {
                            name: upstream.to_string(),
                            message: format!("answered tools/call with something other than a tool result ({kind})"),
                        })
                    }
                }
            }
            Ok(Err(e)) => {
                abandoned.id = None;
                // The connection broke after the call left: the upstream may have acted.
                let lost = matches!(e, rmcp::ServiceError::TransportClosed);
                let error = failed(up, e);
                if lost {
                    return Err(UpstreamError::Lost { name: upstream.to_string(), message: error.to_string() });
                }
                Err(error)
            }
        }
    }

    /// Connected upstreams that offer `what` (prompts, resources, completions).
    fn offering(&self, what: fn(&ServerCapabilities) -> bool) -> Vec<(String, Arc<Conn>)> {
        self.inner
            .iter()
            .filter_map(|u| read_conn(u).map(|c| (u.spec.name.clone(), c)))
            .filter(|(_, c)| c.peer.peer_info().is_some_and(|i| what(&i.capabilities)))
            .collect()
    }

    /// Lists something (all pages) at every connected upstream that offers it, concurrently, as
    /// `(upstream, item)`. An upstream that fails or times out is left out and logged; the
    /// others still answer.
    async fn list_everywhere<T, F, Fut>(
        &self,
        offers: fn(&ServerCapabilities) -> bool,
        method: &'static str,
        list: F,
    ) -> Vec<(String, T)>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, rmcp::ServiceError>>,
    {
        let lists = self.offering(offers).into_iter().map(|(name, conn)| {
            let listing = list(conn.peer.clone());
            async move {
                match tokio::time::timeout(LIST_TIMEOUT, listing).await {
                    Ok(Ok(items)) => items.into_iter().map(|item| (name.clone(), item)).collect(),
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = %name, error = %e, "{method} failed");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::warn!(upstream = %name, "{method} timed out");
                        Vec::new()
                    }
                }
            }
        });
        futures::future::join_all(lists).await.into_iter().flatten().collect()
    }

    /// Every connected upstream's prompts, as `(upstream, prompt)`.
    pub async fn prompts(&self) -> Vec<(String, Prompt)> {
        self.list_everywhere(
            |c| c.prompts.is_some(),
            "prompts/list",
            |peer| async move { peer.list_all_prompts().await },
        )
        .await
    }

    /// Every connected upstream's resources, as `(upstream, resource)`.
    pub async fn resources(&self) -> Vec<(String, Resource)> {
        self.list_everywhere(
            |c| c.resources.is_some(),
            "resources/list",
            |peer| async move { peer.list_all_resources().await },
        )
        .await
    }

    /// Every connected upstream's resource templates, as `(upstream, template)`.
    pub async fn resource_templates(&self) -> Vec<(String, ResourceTemplate)> {
        self.list_everywhere(
            |c| c.resources.is_some(),
            "resources/templates/list",
            |peer| async move { peer.list_all_resource_templates().await },
        )
        .await
    }

    /// One request to one connected upstream, within `limit`.
    async fn ask<T, F, Fut>(&self, upstream: &str, limit: Option<Duration>, request: F) -> Result<T, UpstreamError>
    where
        F: FnOnce(Peer<RoleClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let (up, conn) = self.connected(upstream)?;
        let limit = limit.unwrap_or(up.spec.call_timeout);
        match tokio::time::timeout(limit, request(conn.peer.clone())).await {
            Err(_) => Err(UpstreamError::Timeout { name: upstream.to_string(), seconds: limit.as_secs_f64() }),
            Ok(r) => r.map_err(|e| failed(up, e)),
        }
    }

    /// `prompts/get` at one upstream, with the upstream's own prompt name in `params`.
    pub async fn get_prompt(
        &self,
        upstream: &str,
        params: GetPromptRequestParams,
    ) -> Result<GetPromptResponse, UpstreamError> {
        self.ask(upstream, None, |peer| async move { peer.get_prompt_once(params).await }).await
    }

    /// `resources/read` at one upstream.
    pub async fn read_resource(
        &self,
        upstream: &str,
        params: ReadResourceRequestParams,
    ) -> Result<ReadResourceResponse, UpstreamError> {
        self.ask(upstream, None, |peer| async move { peer.read_resource_once(params).await }).await
    }

    /// `completion/complete` at one upstream, with the upstream's own names in `params`.
    pub async fn complete(
        &self,
        upstream: &str,
        params: CompleteRequestParams,
    ) -> Result<CompleteResult, UpstreamError> {
        self.ask(upstream, Some(LIST_TIMEOUT), |peer| async move { peer.complete(params).await }).await
    }
}

/// An upstream's error as an [`UpstreamError`]; a broken transport also wakes the supervisor so
/// it reconnects.
fn failed(up: &Upstream, e: rmcp::ServiceError) -> UpstreamError {
    let message = e.to_string();
    if matches!(e, rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_)) {
        *write(&up.conn) = None;
        up.poke.notify_one();
    }
    UpstreamError::Failed { name: up.spec.name.clone(), message }
}

fn read_conn(up: &Upstream) -> Option<Arc<Conn>> {
    read(&up.conn).clone()
}

fn set_health(up: &Upstream, health: Health, changed: &tokio::sync::watch::Sender<u64>) {
    *write(&up.health) = health;
    changed.send_modify(|n| *n = n.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_read_as_the_health_page_shows_them() {
        let source = http::HeaderName::try_from("bad header").unwrap_err();
        let header = ConnectError::HeaderName { name: "bad header".into(), source };
        assert_eq!(header.to_string(), "header `bad header`: invalid HTTP header name");
        assert_eq!(ConnectError::TimedOut.to_string(), "connection timed out after 60s");
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let spawn = ConnectError::Spawn { command: "mcp-fs".into(), source };
        assert_eq!(spawn.to_string(), "cannot start `mcp-fs`: no such file");
    }
}
