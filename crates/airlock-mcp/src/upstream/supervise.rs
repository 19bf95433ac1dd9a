//! Keeping one upstream connected: connect (a stdio child or streamable HTTP), list its tools,
//! watch the connection, reconnect with backoff.

use super::*;

type Running = RunningService<RoleClient, UpstreamClient>;

async fn connect(
    up: &Arc<Upstream>,
    credentials: &Option<Arc<airlock_identity::ClientCredentials>>,
) -> Result<Running, ConnectError> {
    let handler = UpstreamClient { upstream: up.clone() };
    match &up.spec.transport {
        Transport::Stdio { command, args, env, cwd } => {
            let mut cmd = tokio::process::Command::new(command);
            // Nothing of airlock's environment leaks to the child: it gets exactly `env`.
            cmd.args(args).env_clear().envs(env).kill_on_drop(true);
            if let Some(dir) = cwd {
                cmd.current_dir(dir);
            }
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| ConnectError::Spawn { command: command.clone(), source })?;
            if let Some(stderr) = stderr {
                let name = up.spec.name.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(upstream = %name, "{line}");
                    }
                });
            }
            handler.serve(transport).await.map_err(|source| ConnectError::StdioHandshake { source })
        }
        Transport::Http { url, headers, .. } => {
            let mut custom = HashMap::new();
            for (k, v) in headers {
                let name = http::HeaderName::try_from(k.as_str())
                    .map_err(|source| ConnectError::HeaderName { name: k.clone(), source })?;
                let value = http::HeaderValue::try_from(v.as_str())
                    .map_err(|source| ConnectError::HeaderValue { name: k.clone(), source })?;
                custom.insert(name, value);
            }
            let config =
                rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(custom);
            let client = super::http_client::PooledClient::new(credentials.clone())
                .map_err(|source| ConnectError::HttpClient { source })?;
            let transport = StreamableHttpClientTransport::with_client(client, config);
            handler.serve(transport).await.map_err(|source| ConnectError::HttpHandshake { url: url.clone(), source })
        }
    }
}

/// The HTTP client token requests go out with: no redirects (the client secret must not follow
/// one), and time limits.
fn token_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
}

async fn list_tools(peer: &Peer<RoleClient>) -> Result<Vec<Tool>, ConnectError> {
    peer.list_all_tools().await.map_err(|source| ConnectError::ListTools { source })
}

/// The first wait before reconnecting a lost upstream; it doubles with each failure, up to 30 s.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Keeps one upstream connected until `shutdown`.
pub(super) async fn supervise(
    up: Arc<Upstream>,
    shutdown: CancellationToken,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let mut backoff = FIRST_RETRY;
    let name = up.spec.name.clone();
    // One token cache for the upstream's lifetime, so that reconnecting does not ask again.
    let credentials = match &up.spec.transport {
        Transport::Http { client_credentials: Some(options), .. } => match token_client() {
            Ok(client) => Some(Arc::new(airlock_identity::ClientCredentials::new(options.clone(), client))),
            Err(source) => {
                set_health(&up, Health::Down { error: ConnectError::HttpClient { source }.to_string() }, &changed);
                return;
            }
        },
        _ => None,
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let connected = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&up, &credentials)) => r.unwrap_or(Err(ConnectError::TimedOut)),
            _ = shutdown.cancelled() => return,
        };
        let running = match connected {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(upstream = %name, %error, retry_in_ms = backoff.as_millis() as u64, "upstream unavailable");
                set_health(&up, Health::Down { error: error.to_string() }, &changed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let peer = running.peer().clone();
        let info = peer.peer_info();
        let (server, protocol_version) = info
            .map(|i| {
                let server = i.server_info.as_ref().map(|s| format!("{} {}", s.name, s.version)).unwrap_or_default();
                (server, i.protocol_version.to_string())
            })
            .unwrap_or_default();
        match list_tools(&peer).await {
            Ok(tools) => {
                tracing::info!(upstream = %name, %server, %protocol_version, tools = tools.len(), "upstream connected");
                let conn = Conn {
                    peer: peer.clone(),
                    tools,
                    server: server.clone(),
                    protocol_version: protocol_version.clone(),
                };
                let count = conn.tools.len();
                *write(&up.conn) = Some(Arc::new(conn));
                up.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                set_health(&up, Health::Up { server, protocol_version, tools: count }, &changed);
                tokio::spawn(super::forwarding::restore(up.clone(), peer.clone()));
                backoff = FIRST_RETRY;
            }
            Err(error) => {
                set_health(&up, Health::Down { error: error.to_string() }, &changed);
                let _ = running.cancel().await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
        // Watch the connection.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = running.cancel().await;
                    return;
                }
                _ = up.poke.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if running.is_closed() || read_conn(&up).is_none() {
                break;
            }
            if up.refresh_tools.swap(false, std::sync::atomic::Ordering::SeqCst)
                && let Ok(tools) = list_tools(&peer).await
                && let Some(old) = read_conn(&up)
            {
                let count = tools.len();
                let conn = Conn {
                    peer: peer.clone(),
                    tools,
                    server: old.server.clone(),
                    protocol_version: old.protocol_version.clone(),
                };
                *write(&up.conn) = Some(Arc::new(conn));
                set_health(
                    &up,
                    Health::Up {
                        server: old.server.clone(),
                        protocol_version: old.protocol_version.clone(),
                        tools: count,
                    },
                    &changed,
                );
            }
        }
        *write(&up.conn) = None;
        tracing::warn!(upstream = %name, "upstream connection lost; reconnecting");
        set_health(&up, Health::Down { error: "connection lost".into() }, &changed);
        let _ = running.cancel().await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
