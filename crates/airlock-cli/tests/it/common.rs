//! Test harness: writes a config and policy into a temporary directory, starts the real
//! `airlock` binary on a port chosen at run time, and talks to it over HTTP. The server is
//! killed when the handle drops, whatever the test's outcome.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use airlock_test_postgres::TestDatabase;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const BOT: &str = "bot-token";
pub const CHANGE_BOT: &str = "change-bot-token";
pub const READER: &str = "reader-token";
pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
pub const CAROL: &str = "carol-token";
pub const VIEWER: &str = "viewer-token";
pub const ADMIN: &str = "admin-token";
/// Webhook signing secret the fixtures pass as `HOOK_SECRET`.
pub const HOOK_SECRET: &str = "hook-secret-for-tests";
/// Base32 TOTP secret of carol (RFC 6238 test secret).
pub const CAROL_TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

pub fn hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The policy most tests use.
pub const POLICY: &str = r#"package airlock

import rego.v1

deny contains {"rule": "DB1", "msg": "dropping databases is forbidden"} if input.action.tool == "db.drop"

require_approval contains {"rule": "SC1", "msg": "scaling needs an SRE", "groups": ["sre"]} if {
    input.action.tool == "nodepool.scale"
}

require_approval contains {"rule": "SC2", "msg": "big scale-ups need two SREs", "groups": ["sre"], "quorum": 2} if {
    input.action.tool == "nodepool.scale"
    input.action.arguments.count > 50
}

require_approval contains {"rule": "MFA1", "msg": "firewall changes need step-up", "mfa": true} if {
    input.action.tool == "firewall.open"
}


# Loops far past any time limit when asked to.
deny contains {"rule": "SLOW", "msg": "unreachable"} if {
    input.action.tool == "slow"
    count([x | some x in numbers.range(1, 30000); some y in numbers.range(1, 30000); x == y]) < 0
}

cost_usd := 1.5 if input.action.tool == "nodepool.scale"
"#;

/// A fake stdio MCP server for upstream tests (Python, standard library only): tools `version`,
/// `meta`, `bill` (reports its `cost` argument as the result's cost) and `echo`. See the file.
pub fn fake_mcp_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/fakes/fake_mcp_server.py")
}

/// A temporary airlock installation: config, policy and data directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The fixture's journal database when the suite runs on PostgreSQL, dropped with it.
    _database: Option<TestDatabase>,
}

/// Whether this run keeps the fixtures' journals in PostgreSQL: `AIRLOCK_IT_BACKEND=postgres`,
/// which `scripts/test.sh` sets for its second pass over the behaviour tests.
pub fn on_postgres() -> bool {
    std::env::var("AIRLOCK_IT_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Variables every `airlock` this test process starts gets: the database URL of each fixture on
/// PostgreSQL (the config names it with `env:`, as it must).
static FIXTURE_ENV: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// A PostgreSQL database of its own for a fixture, and the `[storage]` table naming it.
fn postgres_storage() -> (TestDatabase, String) {
    let db = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to create the test database")
            .block_on(TestDatabase::create())
    })
    .join()
    .expect("the test database was created");
    let mut env = FIXTURE_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = format!("AIRLOCK_IT_DATABASE_{}", env.len());
    env.push((name.clone(), db.url().to_string()));
    (db, format!("\n[storage]\nbackend = \"postgres\"\nurl = \"env:{name}\"\n"))
}

impl Fixture {
    pub fn new(policy: &str) -> Fixture {
        Fixture::with_extra(policy, "")
    }

    pub fn with_extra(policy: &str, extra_toml: &str) -> Fixture {
        Fixture::with_server(policy, "", extra_toml)
    }

    /// Like [`Fixture::with_extra`], with `server_toml` added to the `[server]` table.
    pub fn with_server(policy: &str, server_toml: &str, extra_toml: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/main.rego"), policy).unwrap();
        let config = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "data"
{server_toml}

[policy]
dir = "policies"
timeout_ms = 100

[[tools]]
name = "*.list"
read_only = true

[[agents]]
id = "bot"
token = "{bot}"
owner = "platform"
tier = "autonomous"
labels = {{ env = "prod" }}

[[agents]]
id = "change-bot"
token = "{change}"
owner = "platform"
tier = "change"

[[agents]]
id = "reader"
token = "{reader}"
owner = "platform"
tier = "advisory"

[[humans]]
id = "alice"
token = "{alice}"
groups = ["sre"]
roles = ["approve"]

[[humans]]
id = "bob"
token = "{bob}"
groups = ["sre"]
roles = ["approve"]

[[humans]]
id = "carol"
token = "{carol}"
groups = ["security"]
roles = ["approve"]
totp = "env:CAROL_TOTP"

[[humans]]
id = "viewer"
token = "{viewer}"
groups = ["sre"]

[[humans]]
id = "root"
token = "{admin}"
roles = ["admin"]
{extra_toml}
"#,
            bot = hash(BOT),
            change = hash(CHANGE_BOT),
            reader = hash(READER),
            alice = hash(ALICE),
            bob = hash(BOB),
            carol = hash(CAROL),
            viewer = hash(VIEWER),
            admin = hash(ADMIN),
        );
        let mut config = config;
        let mut database = None;
        if on_postgres() && !config.contains("[storage]") {
            let (db, storage) = postgres_storage();
            config.push_str(&storage);
            database = Some(db);
        }
        std::fs::write(dir.path().join("airlock.toml"), config).unwrap();
        Fixture { dir, _database: database }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("data/journal.db")
    }

    pub fn start(&self) -> Airlock {
        Airlock::start(&self.config()).unwrap_or_else(|e| panic!("airlock did not start: {e}"))
    }
}

pub fn airlock_bin() -> &'static str {
    env!("CARGO_BIN_EXE_airlock")
}

/// A command for the real binary with a clean, test-controlled environment.
pub fn airlock_cmd() -> Command {
    let mut cmd = Command::new(airlock_bin());
    cmd.env_remove("AIRLOCK_TOKEN").env_remove("AIRLOCK_SERVER").env_remove("AIRLOCK_CONFIG");
    cmd.env("CAROL_TOTP", CAROL_TOTP).env("HOOK_SECRET", HOOK_SECRET);
    cmd.envs(FIXTURE_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned());
    cmd
}

/// A running `airlock serve`.
pub struct Airlock {
    child: Option<Child>,
    pub url: String,
    pub stderr_path: PathBuf,
    http: reqwest::Client,
}

impl Airlock {
    pub fn start(config: &Path) -> Result<Airlock, String> {
        Airlock::start_with_env(config, &[])
    }

    /// Starts the server with `envs` added to its environment (secrets its config references).
    pub fn start_with_env(config: &Path, envs: &[(&str, &str)]) -> Result<Airlock, String> {
        airlock_mcp::ensure_crypto_provider();
        let stderr_path = config.with_file_name(format!("serve-{}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut child = airlock_cmd()
            .args(["serve", "--config"])
            .arg(config)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "warn")
            // Its own process group, so that upstream servers it starts die with it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // From here on the handle owns the process, so a failure below still stops it.
        let mut airlock = Airlock { child: Some(child), url: String::new(), stderr_path, http: reqwest::Client::new() };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("airlock listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => {
                airlock.url = url;
                Ok(airlock)
            }
            Err(_) => {
                let status = airlock.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                let log = std::fs::read_to_string(&airlock.stderr_path).unwrap_or_default();
                drop(airlock);
                Err(format!(
                    "{}: {log}",
                    status.map(|s| s.to_string()).unwrap_or_else(|| "did not start in 30s".into())
                ))
            }
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown) and waits for it; then makes sure
    /// nothing it started is left running.
    pub fn stop(mut self) {
        if let Some(child) = self.child.take() {
            shut_down(child);
        }
    }

    /// Kills the server and everything it started with SIGKILL, as a crash would.
    pub fn crash(mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), "-KILL");
            let _ = child.wait();
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(token), None).await
    }

    pub async fn raw_post(&self, path: &str, token: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.url)).bearer_auth(token).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.expect("request failed")).await
    }

    /// Waits up to 10 s for upstream `name` to be connected.
    pub async fn wait_for_upstream(&self, name: &str) {
        let is_up = |status: &Value| {
            status["upstreams"].as_array().into_iter().flatten().any(|u| u["name"] == name && u["state"] == "up")
        };
        let status = poll(Duration::from_secs(10), || self.get("/v1/upstreams", ADMIN), |r| is_up(&r.body)).await;
        if !is_up(&status.body) {
            panic!(
                "upstream `{name}` did not come up: {}",
                std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
            );
        }
    }

    pub async fn session(&self, token: &str) -> String {
        let r = self.post("/v1/sessions", token, json!({"task": "test"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub async fn act(&self, token: &str, session: &str, tool: &str, arguments: Value) -> Reply {
        self.post(
            &format!("/v1/sessions/{session}/actions"),
            token,
            json!({"tool": tool, "arguments": arguments, "justification": "test"}),
        )
        .await
    }
}

impl Drop for Airlock {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            shut_down(child);
        }
    }
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(signal).arg("--").arg(format!("-{pid}")).stderr(Stdio::null()).status();
}

/// SIGTERM to the server's process group, a grace period of up to 5 s, then SIGKILL to whatever
/// is left.
#[allow(clippy::disallowed_methods, reason = "Drop is synchronous; a short poll is fine in tests")]
fn shut_down(mut child: Child) {
    let pid = child.id();
    signal_group(pid, "-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(child.try_wait(), Ok(Some(_))) && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL_EVERY);
    }
    signal_group(pid, "-KILL");
    let _ = child.wait();
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, headers, body }
    }

    pub fn content_type(&self) -> String {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    /// Asserts an RFC 9457 problem with `status` whose detail contains `needle`.
    pub fn assert_problem(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.content_type(), "application/problem+json", "{}", self.body);
        assert!(self.body["type"].as_str().unwrap_or_default().starts_with("urn:airlock:problem:"), "{}", self.body);
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "detail `{detail}` lacks `{needle}`");
    }
}

/// How often [`poll`] looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Calls `fetch` every [`POLL_EVERY`] until what it returns satisfies `done`, for at most
/// `within`, and returns the last thing it fetched: the caller asserts on that, so a condition
/// that never came true fails with what was seen last. For waiting on something observable (a
/// state in the API, a row in the journal, a request at a receiver) instead of sleeping.
pub async fn poll<T, Fut>(within: Duration, mut fetch: impl FnMut() -> Fut, done: impl Fn(&T) -> bool) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = fetch().await;
        if done(&seen) || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Runs the binary and returns (exit code, stdout, stderr).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = airlock_cmd();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run airlock");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Webhook deliveries a [`receiver`] got: headers and the raw body.
#[derive(Clone, Default)]
pub struct Received(pub std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>);

impl Received {
    pub fn events(&self) -> Vec<(axum::http::HeaderMap, Value)> {
        self.0.lock().unwrap().iter().map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap())).collect()
    }

    /// The first delivery of `event`: headers, parsed body and the body exactly as received.
    pub async fn wait_for_raw(&self, event: &str, within: Duration) -> (axum::http::HeaderMap, Value, String) {
        let find = || async {
            self.0.lock().unwrap().iter().find_map(|(h, raw)| {
                let body: Value = serde_json::from_str(raw).ok()?;
                (body["event"] == event).then(|| (h.clone(), body, raw.clone()))
            })
        };
        let found = poll(within, find, Option::is_some).await;
        found.unwrap_or_else(|| panic!("no `{event}` notification within {within:?}"))
    }

    pub async fn wait_for(&self, event: &str, within: Duration) -> (axum::http::HeaderMap, Value) {
        let (headers, body, _) = self.wait_for_raw(event, within).await;
        (headers, body)
    }
}

async fn hook(
    axum::extract::State(r): axum::extract::State<Received>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    r.0.lock().unwrap().push((headers, String::from_utf8_lossy(&body).into_owned()));
    axum::http::StatusCode::NO_CONTENT
}

/// A webhook receiver on 127.0.0.1 (the given port, or any free one) that records every
/// delivery; it stops when the returned task is dropped with the test's runtime.
pub async fn receiver(port: u16) -> (String, Received, tokio::task::JoinHandle<()>) {
    let received = Received::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received, task)
}

/// A `[[notify]]` entry for `url`, signed with [`HOOK_SECRET`].
pub fn notify_toml(url: &str) -> String {
    format!("\n[[notify]]\nname = \"pager\"\nurl = \"{url}\"\nsecret = \"env:HOOK_SECRET\"\ntimeout_ms = 2000\n")
}

/// How long a receiver accepts a delivery's timestamp either way (docs/configuration.md).
pub const WEBHOOK_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a receiver following docs/configuration.md ("Verifying deliveries") turns a delivery away.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    BadSignature,
    StaleTimestamp,
}

/// The check docs/configuration.md tells receivers to make, at time `now` (Unix seconds), with
/// `seen` the ids accepted so far: `Ok(true)` for a new authentic delivery, `Ok(false)` for an id
/// seen within the window, `Err` for a forged, changed or stale one.
pub fn verify_webhook(
    secret: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now: i64,
    seen: &mut std::collections::HashMap<String, i64>,
) -> Result<bool, Rejected> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (id, ts, signatures) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    // Constant-time comparison matters to a real receiver; here equality says the same.
    if !signatures.split(' ').any(|s| s == expected) {
        return Err(Rejected::BadSignature);
    }
    match ts.parse::<i64>() {
        Ok(t) if (now - t).abs() <= WEBHOOK_TOLERANCE_SECS => {}
        _ => return Err(Rejected::StaleTimestamp),
    }
    seen.retain(|_, at| now - *at <= WEBHOOK_TOLERANCE_SECS);
    if seen.contains_key(&id) {
        return Ok(false);
    }
    seen.insert(id, now);
    Ok(true)
}

/// Review UI forms are sent as this.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// An HTTP client that does not follow redirects, as the UI tests need.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `name=value` of the cookie `name` set by a response.
pub fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .find(|c| c.starts_with(&format!("{name}=")) && c.len() > name.len() + 1)
}

/// The CSRF token of the first form in `html`.
pub fn csrf(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// A URL-encoded form body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                    b' ' => "+".to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs in with `token` the way a browser does; returns the status and the session cookie.
pub async fn sign_in(al: &Airlock, token: &str) -> (StatusCode, Option<String>) {
    let http = client();
    let page = http.get(format!("{}/ui/login", al.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let nonce = cookie(&page, "airlock_ui_login").expect("the sign-in form sets its nonce cookie");
    let html = page.text().await.unwrap();
    let r = http
        .post(format!("{}/ui/login", al.url))
        .header("cookie", &nonce)
        .header("content-type", FORM)
        .body(form(&[("csrf", &csrf(&html)), ("token", token)]))
        .send()
        .await
        .unwrap();
    (r.status(), cookie(&r, "airlock_ui"))
}

/// `GET /metrics`, as Prometheus would scrape it.
pub async fn scrape(al: &Airlock) -> String {
    let r = reqwest::get(format!("{}/metrics", al.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    r.text().await.unwrap()
}

/// The value of the first sample whose line starts with `prefix` (name plus labels).
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
