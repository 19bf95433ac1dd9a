//! The real airlock server, started in this process for the targets that talk HTTP.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use airlock_server::Config;
use airlock_server::serve::{self, Running};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::runtime::Runtime;

use crate::Finding;

/// The agent every target calls as.
pub(crate) const AGENT_TOKEN: &str = "fuzz-agent-token";
/// `alice`, who may approve.
pub(crate) const APPROVER_TOKEN: &str = "fuzz-approver-token";
/// `root`, an admin: kill switches, policy lifecycle.
pub(crate) const ADMIN_TOKEN: &str = "fuzz-admin-token";

/// How long a request may go unanswered before that is a finding.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The runtime every server and client of this process runs on.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the fuzz harness needs a tokio runtime")
    })
}

fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// The configuration of a fuzz server: generous guards, so that the fuzzer explores the code
/// rather than the rate limiter, and small limits where an input could otherwise grow the
/// journal without bound.
fn config_text() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
max_body_bytes = 65536
min_free_disk_mb = 0

[policy]
dir = "policies"
timeout_ms = 500

[mcp]
approval_wait_seconds = 1

[approvals]
default_ttl_seconds = 3600
allow_requester = true

[guards]
loop_repeats = 1000000
max_consecutive_failures = 1000000
max_consecutive_denials = 1000000
actions_per_minute = 1000000
sessions_per_minute = 1000000
budget_usd_per_day = 1000000.0

[audit]
checkpoint_every_events = 200

[[tools]]
name = "nodepool.list"
read_only = true

[[tools]]
name = "firewall.*"
destructive = true

[[agents]]
id = "fuzz-agent"
token = "{agent}"
owner = "fuzz-team"
tier = "autonomous"

[[humans]]
id = "alice"
token = "{approver}"
groups = ["sre"]
roles = ["approve"]

[[humans]]
id = "root"
token = "{admin}"
roles = ["admin"]
"#,
        agent = token_hash(AGENT_TOKEN),
        approver = token_hash(APPROVER_TOKEN),
        admin = token_hash(ADMIN_TOKEN),
    )
}

/// A policy for [`crate::http`]: the quickstart's, so that requests meet real rules.
pub(crate) const QUICKSTART_POLICY: &[(&str, &str)] = &[
    ("airlock.rego", include_str!("../../../examples/quickstart/policies/airlock.rego")),
    ("data.json", include_str!("../../../examples/quickstart/policies/data.json")),
];

/// Rules for [`crate::mcp`], beside the quickstart's: a call through the echo upstream is held
/// or denied when its arguments ask.
pub(crate) const MCP_RULES: (&str, &str) = (
    "fuzz.rego",
    r#"package airlock

import rego.v1

require_approval contains {"rule": "FUZZ_HOLD", "msg": "held because the arguments ask"} if input.action.arguments.hold == true

deny contains {"rule": "FUZZ_DENY", "msg": "denied because the arguments ask"} if input.action.arguments.deny == true
"#,
);

/// A policy for [`crate::policy_input`] that takes its whole decision from the call's
/// arguments: whatever an agent puts there reaches the decision contract unfiltered.
pub(crate) const REFLECTING_POLICY: &[(&str, &str)] = &[(
    "airlock.rego",
    r#"package airlock

import rego.v1

args := object.get(input, ["action", "arguments"], {})

deny contains e if {
	some e in args.deny
}

require_approval contains e if {
	some e in args.approve
}

warn contains e if {
	some e in args.warn
}

redact contains p if {
	some p in args.redact
}

cost_usd := args.cost_usd
"#,
)];

/// A running airlock with its own data directory, and a client for it.
pub(crate) struct FuzzServer {
    base: String,
    client: reqwest::Client,
    _running: Running,
    _dir: TempDir,
}

/// What the server answered.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl FuzzServer {
    /// Starts airlock with `policy` (file name, content) in a new temporary directory. Setting up
    /// the harness is not an input path: failing here stops the fuzzer with the reason.
    pub fn start(policy: &[(&str, &str)]) -> FuzzServer {
        FuzzServer::start_with(policy, None)
    }

    /// [`FuzzServer::start`], in front of the MCP server at `upstream` (named `echo`).
    pub fn start_with(policy: &[(&str, &str)], upstream: Option<&str>) -> FuzzServer {
        let dir = tempfile::tempdir().expect("a temporary directory for the fuzz server");
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).expect("the fuzz server's policy directory");
        for (name, text) in policy {
            std::fs::write(policies.join(name), text).expect("the fuzz server's policy");
        }
        let path = dir.path().join("airlock.toml");
        let mut config = config_text();
        if let Some(url) = upstream {
            config.push_str(&format!("\n[[upstreams]]\nname = \"echo\"\nurl = \"{url}\"\n"));
        }
        std::fs::write(&path, config).expect("the fuzz server's configuration");
        let running = start_at(&path);
        let base = format!("http://{}", running.addr);
        let client = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .pool_max_idle_per_host(4)
            .build()
            .expect("an HTTP client");
        FuzzServer { base, client, _running: running, _dir: dir }
    }

    /// Sends one request and waits for the answer; no answer (a dropped connection, a time-out)
    /// is a finding.
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, Finding> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.client.request(method.clone(), &url).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        runtime().block_on(async move {
            let response = request.send().await.map_err(|e| Finding(format!("{method} {path} got no answer: {e}")))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| Finding(format!("{method} {path}: the answer broke off: {e}")))?
                .to_vec();
            Ok(Reply { status, headers, body })
        })
    }

    /// A JSON request.
    pub fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<Reply, Finding> {
        self.send(method, path, Some(token), &[("content-type", "application/json")], body.to_string().into_bytes())
    }

    /// Fails unless `/healthz` answers 200: the server survived the last input.
    pub fn healthy(&self, after: &str) -> Result<(), Finding> {
        let reply = self.send(reqwest::Method::GET, "/healthz", None, &[], Vec::new())?;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(Finding(format!("after {after}, /healthz answered {}", reply.status)))
        }
    }

    /// A new session of the fuzz agent; its id.
    pub fn new_session(&self) -> Result<String, Finding> {
        let reply =
            self.json(reqwest::Method::POST, "/v1/sessions", AGENT_TOKEN, &serde_json::json!({"task": "fuzz"}))?;
        reply
            .json()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .ok_or_else(|| Finding(format!("POST /v1/sessions answered {} without a session id", reply.status)))
    }
}

/// Starts the real server on the harness runtime.
fn start_at(path: &Path) -> Running {
    let config = Config::load(path).unwrap_or_else(|e| panic!("the fuzz server's configuration is invalid: {e}"));
    runtime().block_on(serve::start(config)).unwrap_or_else(|e| panic!("the fuzz server did not start: {e:#}"))
}

/// Whether `status` is an error the server should never answer to any input: an internal error.
/// 503 and 507 are deliberate refusals (no journal, no disk) and count as answers.
pub(crate) fn is_internal_error(status: u16) -> bool {
    (500..600).contains(&status) && status != 503 && status != 507
}

impl FuzzServer {
    /// Stops the server cleanly (it signs a last checkpoint) and hands over its directory.
    pub fn stop(self) -> TempDir {
        let FuzzServer { _running: running, _dir: dir, .. } = self;
        runtime().block_on(running.stop()).unwrap_or_else(|e| panic!("the fuzz server did not stop cleanly: {e:#}"));
        dir
    }
}
