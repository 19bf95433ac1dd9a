//! Access tokens from a real OpenID provider (`oidc-provider`, configured by
//! tests/identity/provider.mjs and installed by tests/identity/install.sh): tokens it issues with
//! the client credentials grant call the HTTP API and `/mcp`; tokens for another audience, expired,
//! signed by a key it never published, or unsigned are refused with `401` and a challenge that
//! points at airlock's protected resource metadata; templates, `tools:` scopes and
//! `input.identity` do what docs/identity.md says.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

pub fn identity_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/identity")
}

/// The OpenID provider, running until dropped (its standard input closes and it exits).
pub struct Provider {
    child: Child,
    pub issuer: String,
    http: reqwest::Client,
}

impl Provider {
    pub fn start() -> Provider {
        airlock_mcp::ensure_crypto_provider();
        let dir = identity_dir();
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "oidc-provider is missing: run tests/identity/install.sh (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OpenID provider");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the provider's first line");
        let port = line.trim().strip_prefix("LISTENING ").unwrap_or_else(|| panic!("unexpected `{line}`"));
        Provider { child, issuer: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
    }

    /// An access token of `client` for `resource` with `scope`, by the client credentials grant.
    pub async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("grant_type", "client_credentials"), ("resource", resource), ("scope", scope)])
            .send()
            .await
            .expect("token request");
        let body: Value = r.json().await.expect("token response");
        body["access_token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_string()
    }

    /// Rotates the provider's signing key; returns the new key's id.
    pub async fn rotate(&self) -> String {
        let r = self.http.post(format!("{}/_test/rotate", self.issuer)).send().await.unwrap();
        r.json::<Value>().await.unwrap()["kid"].as_str().unwrap().to_string()
    }

    /// A token with `claims`, signed by a key the provider never published, under `kid`.
    pub async fn forge(&self, claims: Value, kid: &str) -> String {
        let r = self
            .http
            .post(format!("{}/_test/forge", self.issuer))
            .json(&json!({"claims": claims, "kid": kid}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rules that show what policy sees of the identity: `deploy.prod` is denied with a message that
/// names it, or says there is none.
const IDENTITY_POLICY: &str = r#"
deny contains {"rule": "ID0", "msg": "no identity: a static token"} if {
    input.action.tool == "deploy.prod"
    input.identity == null
}

deny contains {"rule": "ID1", "msg": sprintf("ci may not deploy (%s of %s, scopes %v)", [input.identity.subject, input.identity.issuer, input.identity.scopes])} if {
    input.action.tool == "deploy.prod"
    "ci" in input.identity.groups
}
"#;

/// airlock with the provider as its issuer: `ops-bot` listed (autonomous, this issuer only), a
/// `ci` template for the `ci` group (change tier, `fake__*`, `*.list` and `nodepool.*`), the
/// fake stdio upstream `fake`, and `mcp` required of every token.
pub fn start(provider: &Provider, identity_extra: &str) -> (Fixture, Airlock) {
    let extra = format!(
        r#"
[[upstreams]]
name = "fake"
command = "python3"
args = ["{fake}"]

[identity]
required_scopes = ["mcp"]
scopes_supported = ["mcp", "tools:fake__version", "tools:fake__*"]
{identity_extra}

[[identity.issuers]]
issuer = "{issuer}"
leeway_seconds = 0
keys_min_refresh_seconds = 1
token_type = "at+jwt"

[[agents]]
id = "ops-bot"
owner = "platform"
tier = "autonomous"
issuer = "{issuer}"

[[agent_templates]]
name = "ci"
claim = "groups"
values = ["ci"]
owner = "ci-team"
tier = "change"
labels = {{ source = "idp" }}
tools = ["fake__*", "*.list", "nodepool.*", "deploy.*"]
"#,
        fake = fake_mcp_server().display(),
        issuer = provider.issuer,
    );
    let fx = Fixture::with_extra(&format!("{POLICY}\n{IDENTITY_POLICY}"), &extra);
    let al = fx.start();
    (fx, al)
}

/// The issuer's count of access tokens it issued to each client (test-only endpoint).
impl Provider {
    pub async fn issued(&self, client: &str) -> u64 {
        let r = self.http.get(format!("{}/_test/issued", self.issuer)).send().await.unwrap();
        r.json::<Value>().await.unwrap()[client].as_u64().unwrap_or(0)
    }
}

pub async fn mcp_client(url: &str, token: &str) -> RunningService<RoleClient, ClientConfig> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-identity-tests", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP handshake with airlock")
}

pub async fn call(c: &RunningService<RoleClient, ClientConfig>, tool: &str) -> CallToolResult {
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(serde_json::Map::new()))
        .await
        .expect("tools/call")
}

pub fn text(r: &CallToolResult) -> String {
    serde_json::to_value(&r.content).unwrap().to_string()
}

async fn post_mcp(al: &Airlock, path: &str, token: Option<&str>) -> Reply {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", al.url))
        .header("accept", "application/json, text/event-stream")
        .json(&init);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Reply { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

fn challenge(r: &Reply) -> String {
    r.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Asserts a `401` whose challenge points at `metadata` and says `invalid_token`, and whose detail
/// contains `why`.
fn assert_refused(r: &Reply, metadata: &str, why: &str) {
    r.assert_problem(StatusCode::UNAUTHORIZED, why);
    let c = challenge(r);
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(c.contains(&format!("resource_metadata=\"{metadata}\"")), "{c}");
    assert!(c.contains("error=\"invalid_token\""), "{c}");
}

#[tokio::test]
async fn a_provider_token_calls_the_http_api_and_mcp() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    // The HTTP API's resource identifier is airlock's base URL.
    let token = idp.token("ops-bot", &al.url, "mcp").await;
    let session = al.session(&token).await;
    let r = al.act(&token, &session, "nodepool.resize", json!({"count": 3})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["decision"]["effect"], "allow", "{}", r.body);
    let s = al.get(&format!("/v1/sessions/{session}"), ADMIN).await;
    assert_eq!(s.body["agent_id"], "ops-bot");
    // `/mcp` is its own resource: the API's token is not for it, and the MCP one is.
    let r = post_mcp(&al, "/mcp", Some(&token)).await;
    assert_refused(&r, &format!("{}/.well-known/oauth-protected-resource/mcp", al.url), "is for");
    let mcp_token = idp.token("ops-bot", &format!("{}/mcp", al.url), "mcp").await;
    let c = mcp_client(&format!("{}/mcp", al.url), &mcp_token).await;
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"fake__version".to_string()), "{names:?}");
    let r = call(&c, "fake__version").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    c.cancel().await.unwrap();
    // Static tokens work beside access tokens, and a wrong one is refused with the challenge.
    assert_eq!(al.post("/v1/sessions", BOT, json!({})).await.status, StatusCode::CREATED);
    let r = al.post("/v1/sessions", "not-a-token", json!({})).await;
    assert_refused(&r, &format!("{}/.well-known/oauth-protected-resource", al.url), "not valid");
}

#[tokio::test]
async fn tokens_for_another_audience_expired_forged_or_unsigned_are_refused_with_a_challenge() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let api_metadata = format!("{}/.well-known/oauth-protected-resource", al.url);
    let mcp_metadata = format!("{api_metadata}/mcp");
    let mcp = format!("{}/mcp", al.url);
    let refused = |token: String, why: &'static str| {
        let (al, api_metadata, mcp_metadata) = (&al, api_metadata.clone(), mcp_metadata.clone());
        async move {
            assert_refused(&al.post("/v1/sessions", &token, json!({})).await, &api_metadata, why);
            assert_refused(&post_mcp(al, "/mcp", Some(&token)).await, &mcp_metadata, why);
        }
    };
    // Another audience.
    let other = idp.token("ops-bot", "https://other.example/api", "mcp").await;
    refused(other, "is for `https://other.example/api`").await;
    // A key the provider never published, under a kid it never used and under its own kid.
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str| {
        json!({"iss": idp.issuer, "sub": "ops-bot", "client_id": "ops-bot", "aud": aud, "scope": "mcp",
               "iat": now, "exp": now + 300})
    };
    let forged = idp.forge(claims(&al.url), "stranger").await;
    let r = al.post("/v1/sessions", &forged, json!({})).await;
    assert_refused(&r, &api_metadata, "signed with key `stranger`");
    let forged = idp.forge(claims(&mcp), "key-1").await;
    assert_refused(&post_mcp(&al, "/mcp", Some(&forged)).await, &mcp_metadata, "signature does not verify");
    // `alg: none`: the provider's claims, no signature.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "at+jwt"})), b64(&claims(&al.url)));
    refused(unsigned, "signed with `none`, which is not allowed").await;
    // An issuer airlock does not trust.
    let mut stranger = claims(&al.url);
    stranger["iss"] = json!("https://evil.example");
    refused(idp.forge(stranger, "key-1").await, "`https://evil.example`, which is not a configured issuer").await;
    // Expired: the provider's own short-lived token (2 s), with no leeway.
    let short = idp.token("short-lived", &al.url, "mcp").await;
    assert_eq!(al.post("/v1/sessions", &short, json!({})).await.status, StatusCode::CREATED, "valid until it expires");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refused(short, "expired at").await;
    // No token at all: the challenge names the metadata and the scope, without an error.
    let r = post_mcp(&al, "/mcp", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), format!("Bearer realm=\"airlock\", resource_metadata=\"{mcp_metadata}\", scope=\"mcp\""));
}

#[tokio::test]
async fn the_metadata_documents_name_the_provider_and_the_resources() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    for (path, resource) in [
        ("", al.url.clone()),
        ("/mcp", format!("{}/mcp", al.url)),
        ("/mcp/anything", format!("{}/mcp/anything", al.url)),
    ] {
        let r = reqwest::get(format!("{}/.well-known/oauth-protected-resource{path}", al.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["resource"], resource.as_str(), "{doc}");
        assert_eq!(doc["authorization_servers"], json!([idp.issuer]), "{doc}");
        assert_eq!(doc["scopes_supported"], json!(["mcp", "tools:fake__version", "tools:fake__*"]), "{doc}");
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{doc}");
    }
    // Without `[identity]` there is nothing to discover.
    let plain = Fixture::new(POLICY);
    let al = plain.start();
    let r = reqwest::get(format!("{}/.well-known/oauth-protected-resource/mcp", al.url)).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = al.post("/v1/sessions", "nope", json!({})).await;
    assert!(!challenge(&r).contains("resource_metadata"), "{}", challenge(&r));
}

#[tokio::test]
async fn a_token_without_a_required_scope_is_forbidden_with_insufficient_scope() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let token = idp.token("ops-bot", &al.url, "tools:fake__version").await;
    let r = al.post("/v1/sessions", &token, json!({})).await;
    r.assert_problem(StatusCode::FORBIDDEN, "lacks the scope `mcp`");
    let c = challenge(&r);
    assert!(c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"mcp\""), "{c}");
    assert_eq!(r.body["missing_scopes"], json!(["mcp"]));
}

#[tokio::test]
async fn a_template_chosen_by_a_claim_gives_the_tier_and_allowlist() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let token = idp.token("ci-runner", &al.url, "mcp").await;
    let session = al.session(&token).await;
    // The `ci` template: change tier, so an allowed change waits for a human...
    let r = al.act(&token, &session, "nodepool.resize", json!({"count": 3})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "pending_approval", "{}", r.body);
    // ...and its allowlist: `db.drop` is not on it.
    let r = al.act(&token, &session, "db.drop", json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.tool_allowlist", "{}", r.body);
    // A client whose claims choose no template is no agent.
    let visitor = idp.token("visitor", &al.url, "mcp").await;
    let r = al.post("/v1/sessions", &visitor, json!({})).await;
    r.assert_problem(StatusCode::FORBIDDEN, "no `[[agent_templates]]` entry matches the token");
    assert_eq!(r.body["rule"], "unknown_agent");
}

#[tokio::test]
async fn a_tools_scope_narrows_the_allowlist_for_that_token() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let mcp = format!("{}/mcp", al.url);
    let narrow = idp.token("ci-runner", &mcp, "mcp tools:fake__version").await;
    let c = mcp_client(&mcp, &narrow).await;
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["fake__version"]);
    assert_ne!(call(&c, "fake__version").await.is_error, Some(true));
    let r = call(&c, "fake__echo").await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("airlock.tool_allowlist"), "{}", text(&r));
    c.cancel().await.unwrap();
    // The same agent with a broader token sees its template's whole allowlist.
    let broad = idp.token("ci-runner", &mcp, "mcp").await;
    let c = mcp_client(&mcp, &broad).await;
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(names.len() > 1 && names.contains(&"fake__echo".to_string()), "{names:?}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn policy_sees_the_identity_of_an_access_token_and_null_for_a_static_token() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let token = idp.token("ci-runner", &al.url, "mcp").await;
    let session = al.session(&token).await;
    let r = al.act(&token, &session, "deploy.prod", json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let reason = &r.body["decision"]["reasons"][0];
    assert_eq!(reason["rule"], "ID1", "{}", r.body);
    let expected = format!("ci may not deploy (ci-runner of {}, scopes [\"mcp\"])", idp.issuer);
    assert_eq!(reason["msg"], expected.as_str());
    let static_session = al.session(BOT).await;
    let r = al.act(BOT, &static_session, "deploy.prod", json!({})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "ID0", "{}", r.body);
    // The listed agent is in `ops`, not `ci`: policy lets it deploy.
    let ops = idp.token("ops-bot", &al.url, "mcp").await;
    let session = al.session(&ops).await;
    let r = al.act(&ops, &session, "deploy.prod", json!({})).await;
    assert_eq!(r.body["decision"]["effect"], "allow", "{}", r.body);
}

#[tokio::test]
async fn tokens_signed_with_a_rotated_key_are_accepted_once_the_keys_are_fetched_again() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let before = idp.token("ops-bot", &al.url, "mcp").await;
    assert_eq!(al.post("/v1/sessions", &before, json!({})).await.status, StatusCode::CREATED);
    let kid = idp.rotate().await;
    let after = idp.token("ops-bot", &al.url, "mcp").await;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(after.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], kid.as_str());
    // Keys are fetched again at most once a second here (`keys_min_refresh_seconds = 1`).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = al.post("/v1/sessions", &after, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // The old key is still published, so its tokens still verify.
    assert_eq!(al.post("/v1/sessions", &before, json!({})).await.status, StatusCode::CREATED);
}

/// A Node script of tests/identity that prints `LISTENING <port>` and runs until dropped; the
/// rest of what it prints is kept.
pub struct Script {
    child: Child,
    pub port: u16,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Script {
    pub fn start(name: &str) -> Script {
        Script::start_with(name, &[])
    }

    pub fn start_with(name: &str, args: &[&str]) -> Script {
        let mut child = Command::new("node")
            .arg(identity_dir().join(name))
            .args(args)
            .current_dir(identity_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a test script");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        reader.read_line(&mut first).expect("its first line");
        let port = first.trim().strip_prefix("LISTENING ").and_then(|p| p.parse().ok()).expect("LISTENING <port>");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Script { child, port, lines }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_agents_access_token_never_reaches_an_upstream() {
    let idp = Provider::start();
    let upstream = Script::start("upstream.mjs");
    let extra = format!("\n[[upstreams]]\nname = \"echo\"\nurl = \"http://127.0.0.1:{}/mcp\"\n", upstream.port);
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "{extra}\n[identity]\n\n[[identity.issuers]]\nissuer = \"{}\"\n\n[[agents]]\nid = \"ops-bot\"\nowner = \"platform\"\ntier = \"autonomous\"\n",
            idp.issuer
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("echo").await;
    let mcp = format!("{}/mcp", al.url);
    let token = idp.token("ops-bot", &mcp, "mcp").await;
    let c = mcp_client(&mcp, &token).await;
    let r = call(&c, "echo__headers").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let seen = text(&r);
    assert!(seen.contains("host"), "the upstream reports its headers: {seen}");
    assert!(!seen.contains(&token) && !seen.to_lowercase().contains("authorization"), "{seen}");
    c.cancel().await.unwrap();
    let auth: Vec<String> = upstream.lines.lock().unwrap().iter().filter(|l| l.starts_with("AUTH ")).cloned().collect();
    assert!(!auth.is_empty() && auth.iter().all(|l| l == "AUTH null"), "{auth:?}");
}

#[tokio::test]
async fn the_typescript_sdk_discovers_the_metadata_and_gets_its_own_token() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp, "");
    let mcp = format!("{}/mcp", al.url);
    let out = Command::new("node")
        .arg(identity_dir().join("oauth_client.mjs"))
        .args(["--url", &mcp, "--issuer", &idp.issuer, "--client", "ci-runner", "--secret", "ci-runner-secret"])
        .args(["--scope", "mcp", "--call", "fake__version"])
        .current_dir(identity_dir())
        .output()
        .expect("run the TypeScript SDK client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // It asked for the resource the metadata names (and the scope it was configured with).
    assert_eq!(v["token_audience"], mcp.as_str(), "{v}");
    assert_eq!(v["token_scope"], "mcp", "{v}");
    assert!(v["tools"].as_array().unwrap().iter().any(|t| t == "fake__version"), "{v}");
    assert_eq!(v["calls"][0]["is_error"], false, "{v}");
}
