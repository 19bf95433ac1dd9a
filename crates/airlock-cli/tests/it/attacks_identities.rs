//! Attacks on identity: nothing behind airlock (an upstream server) and no caller in front of it
//! (another agent, whoever reads the traces) can act as someone else. Each test plays the
//! attacker against the real `airlock` binary, one section per item of the security issue;
//! docs/security.md says what airlock promises and which test here shows it.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::*;
use crate::raw_mcp::{Mcp, McpReply};

/// The fake stdio MCP server as upstream `fake`, plus `extra`.
fn fake_upstream(extra: &str) -> String {
    format!(
        "\n[[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{}\"]\n{extra}",
        fake_mcp_server().display()
    )
}

// --- 1. An upstream's environment ----------------------------------------------------------

/// Secrets the server under test holds in its environment, each named by some key of its config
/// (or by none: `AWS_SECRET_ACCESS_KEY` is there only because the operator's shell had it).
const SECRETS: &[(&str, &str)] = &[
    ("DAVE_TOKEN", "dave-human-token-5f1c0a"),
    ("DAVE_TOTP", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
    ("OPS_AGENT_TOKEN", "ops-agent-token-9b2e77"),
    ("AUDIT_SIGNING_KEY", "4c6f6e672d6c69766564206175646974206b657920666f722074657374732121"),
    ("HOOK_SECRET", HOOK_SECRET),
    ("CAROL_TOTP", CAROL_TOTP),
    ("OTHER_UPSTREAM_TOKEN", "other-upstream-token-71d3"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-from-the-operators-shell-0e4f"),
];

/// An upstream that writes its whole environment to a file (then serves MCP, so that it comes
/// up) finds none of the secrets of airlock's environment, by name or by value; it does find
/// its own `env` entries, one of them read from airlock's environment with `env:`, and `PATH`.
#[tokio::test]
async fn an_upstream_that_dumps_its_environment_finds_no_secret_of_airlock() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("upstream-env.txt");
    let extra = format!(
        r#"
[audit]
signing_key = "env:AUDIT_SIGNING_KEY"

[[notify]]
url = "http://127.0.0.1:9/hook"
events = ["session.paused"]
secret = "env:HOOK_SECRET"

[[agents]]
id = "ops"
token = "env:OPS_AGENT_TOKEN"
owner = "platform"
tier = "change"

[[humans]]
id = "dave"
token = "env:DAVE_TOKEN"
roles = ["approve"]
totp = "env:DAVE_TOTP"

[[upstreams]]
name = "dumper"
command = "sh"
args = ["-c", "env > '{dump}'; exec python3 '{fake}'"]
env = {{ OWN_SETTING = "plain-value", OWN_KEY = "env:UPSTREAM_OWN_KEY" }}

[[upstreams]]
name = "other"
command = "python3"
args = ["{fake}"]
env = {{ OTHER_TOKEN = "env:OTHER_UPSTREAM_TOKEN" }}
"#,
        dump = dump.display(),
        fake = fake_mcp_server().display(),
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let mut envs = SECRETS.to_vec();
    envs.push(("UPSTREAM_OWN_KEY", "the-dumpers-own-key-3a9c"));
    let al = Airlock::start_with_env(&fx.config(), &envs).unwrap_or_else(|e| panic!("airlock did not start: {e}"));
    al.wait_for_upstream("dumper").await;
    al.wait_for_upstream("other").await;
    let seen = std::fs::read_to_string(&dump).expect("the upstream wrote its environment");
    let names: Vec<&str> = seen.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    for (name, value) in SECRETS {
        assert!(!seen.contains(value), "the upstream can read `{name}`'s value:\n{seen}");
        assert!(!names.contains(name), "the upstream sees `{name}`:\n{seen}");
    }
    for line in ["OWN_SETTING=plain-value", "OWN_KEY=the-dumpers-own-key-3a9c"] {
        assert!(seen.lines().any(|l| l == line), "`{line}` is missing:\n{seen}");
    }
    assert!(!names.contains(&"UPSTREAM_OWN_KEY"), "its own key arrives under the name its table gives:\n{seen}");
    assert!(names.contains(&"PATH"), "PATH is inherited:\n{seen}");
    for name in names {
        assert!(
            airlock_server::config::INHERITED_ENV.contains(&name)
                || ["OWN_SETTING", "OWN_KEY", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "`{name}` is neither inherited, nor the upstream's own, nor set by its shell:\n{seen}"
        );
    }
    al.stop();
}

// --- 2. Another agent's MCP session ---------------------------------------------------------

/// Agent `bot` opens an MCP session; agent `change-bot` learns its id. Every request that
/// `change-bot` makes with it (POST of a request or a notification, GET of the event stream,
/// with and without `Last-Event-ID`, DELETE) is answered as for an id nobody has, before the
/// owner's first `tools/call` (when no airlock session exists yet) and after it. Nothing runs as
/// the intruder, and the owner's session goes on working until the owner ends it.
#[tokio::test]
async fn another_agents_mcp_session_id_is_unknown_to_it() {
    let fx = Fixture::with_extra(POLICY, &fake_upstream(""));
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    let mcp = Mcp::new(&al);
    let theirs = mcp.initialize(BOT).await;
    let unknown = mcp.request(CHANGE_BOT, "9a4f5a1e-8f3c-4d2b-a6a1-0c9e6b2f7d10", 2, "tools/list", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let as_unknown = |what: &str, r: &McpReply| {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}: {}", r.body);
        assert_eq!(r.body, unknown.body, "{what} differs from the answer for an unknown session");
    };
    for round in ["before the owner's first call", "after the owner's first call"] {
        let list = mcp.request(CHANGE_BOT, &theirs, 2, "tools/list", json!({})).await;
        as_unknown(&format!("tools/list {round}"), &list);
        let call = mcp.call(CHANGE_BOT, &theirs, 3, "fake__echo", json!({"by": "intruder"})).await;
        as_unknown(&format!("tools/call {round}"), &call);
        let note = mcp.notify(CHANGE_BOT, &theirs, "notifications/initialized").await;
        as_unknown(&format!("a notification {round}"), &note);
        let stream = mcp.send(Method::GET, CHANGE_BOT, Some(&theirs), None, &[]).await;
        as_unknown(&format!("GET {round}"), &stream);
        let resume = mcp.send(Method::GET, CHANGE_BOT, Some(&theirs), None, &[("last-event-id", "0")]).await;
        as_unknown(&format!("GET with Last-Event-ID {round}"), &resume);
        let end = mcp.send(Method::DELETE, CHANGE_BOT, Some(&theirs), None, &[]).await;
        as_unknown(&format!("DELETE {round}"), &end);
        if round.starts_with("before") {
            let mine = mcp.call(BOT, &theirs, 10, "fake__echo", json!({"by": "owner"})).await;
            assert_eq!(mine.result(10)["structuredContent"], json!({"by": "owner"}), "{}", mine.body);
        }
    }
    // The owner's session still works: a call, and its event stream.
    let mine = mcp.call(BOT, &theirs, 11, "fake__echo", json!({"by": "owner"})).await;
    assert_eq!(mine.result(11)["structuredContent"], json!({"by": "owner"}), "{}", mine.body);
    let stream = mcp.send(Method::GET, BOT, Some(&theirs), None, &[]).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.body);
    // Naming its own session and the owner's at once gets the intruder nowhere either.
    let own = mcp.initialize(CHANGE_BOT).await;
    let both = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}});
    let r = mcp.send(Method::POST, CHANGE_BOT, Some(&own), Some(both), &[("mcp-session-id", &theirs)]).await;
    as_unknown("two session ids", &r);
    let r = mcp.request(CHANGE_BOT, &own, 5, "tools/list", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "the intruder's own session: {}", r.body);
    // Nothing ran as the intruder: one session, the owner's, with the owner's two calls.
    let sessions = al.get("/v1/sessions", ADMIN).await.body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["agent_id"], "bot");
    assert_eq!(sessions[0]["status"], "active", "the intruder's DELETE closed it: {}", sessions[0]);
    let id = sessions[0]["id"].as_str().unwrap();
    let actions = al.get(&format!("/v1/sessions/{id}"), ADMIN).await.body["actions"].as_array().unwrap().clone();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions.iter().all(|a| a["arguments"]["by"] == "owner"), "{actions:?}");
    // The owner ends it; then it is gone for the owner too.
    let end = mcp.send(Method::DELETE, BOT, Some(&theirs), None, &[]).await;
    assert!(end.status.is_success(), "{} {}", end.status, end.body);
    let after = mcp.request(BOT, &theirs, 12, "tools/list", json!({})).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{}", after.body);
    al.stop();
}

/// An MCP session id is a bearer secret for that session, so traces (read by whoever runs the
/// trace backend) carry `sha256:` and the first 16 hex digits of its SHA-256: enough to group one
/// session's spans, useless for joining the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_carry_a_digest_of_the_mcp_session_id_never_the_id() {
    let (collector, endpoint) = crate::traces::Collector::start().await;
    let fx = Fixture::with_extra(POLICY, &fake_upstream(&format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n")));
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    let mcp = Mcp::new(&al);
    let session = mcp.initialize(BOT).await;
    let r = mcp.call(BOT, &session, 2, "fake__echo", json!({"n": 1})).await;
    assert_eq!(r.result(2)["structuredContent"], json!({"n": 1}), "{}", r.body);
    al.stop();
    let spans = collector.spans();
    let tool = spans.iter().find(|s| s.name == "execute_tool fake__echo").unwrap_or_else(|| panic!("{spans:#?}"));
    let digest = format!("sha256:{}", &hex::encode(Sha256::digest(session.as_bytes()))[..16]);
    assert_eq!(tool.attrs.get("mcp.session.id"), Some(&digest), "{:?}", tool.attrs);
    for span in &spans {
        for (key, value) in &span.attrs {
            assert!(!value.contains(&session), "`{key}` of `{}` exports the MCP session id", span.name);
        }
    }
}

// --- 3. Idle MCP sessions: on a clock the test moves, in `airlock-server/tests/engine/mcp_idle.rs`.

// --- 4. Upstream names ------------------------------------------------------------------------

/// Upstream `fs_`'s tool `x` would be offered as `fs___x`, which airlock routes to upstream `fs`'s
/// tool `_x`: whoever names an upstream so captures another's tools. `airlock check` (and
/// `serve`) refuse it, naming the key.
#[test]
fn an_upstream_name_that_would_capture_another_upstreams_tools_is_refused() {
    for (name, message) in [
        (
            "fs_",
            "upstreams[1].name: `fs_` must not end with `_`: its tool `x` would be offered as `fs___x`, which routes to upstream `fs`'s tool `_x`",
        ),
        ("fs__x", "upstreams[1].name: `fs__x` must not contain `__`"),
    ] {
        let fx = Fixture::with_extra(
            POLICY,
            &format!(
                "\n[[upstreams]]\nname = \"fs\"\ncommand = \"mcp-fs\"\n\n[[upstreams]]\nname = \"{name}\"\ncommand = \"mcp-other\"\n"
            ),
        );
        let (code, out, err) = run(&["check", "--config", fx.config().to_str().unwrap()], &[]);
        assert_eq!(code, 1, "`{name}` was accepted: {out}{err}");
        assert!(err.contains(message), "{err}");
        let started = Airlock::start(&fx.config());
        assert!(started.is_err(), "serve started with upstream `{name}`");
    }
}

// --- 5. Long-poll waits ---------------------------------------------------------------------

/// `GET /v1/actions/{id}?wait=1e20` used to panic the handler (a `Duration` can't hold that many
/// seconds), dropping the connection. A finite wait of any size is capped at
/// `[server] max_wait_seconds` (the unit test of `wait_limit` shows the cap); one that is
/// negative, not a number or infinite is a `400` that says what was wrong. The server answers
/// normally afterwards. The action is a finished one, so that an accepted wait returns at once.
#[tokio::test]
async fn a_long_poll_wait_that_is_no_duration_is_refused_not_a_crash() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let denied = al.act(BOT, &s, "db.drop", json!({"name": "prod"})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    let action = denied.body["id"].as_str().unwrap().to_string();
    for huge in ["1e20", "1.7e308", "100000000000000000000000"] {
        let r = al.get(&format!("/v1/actions/{action}?wait={huge}"), BOT).await;
        assert_eq!(r.status, StatusCode::OK, "wait={huge}: {}", r.body);
        assert_eq!(r.body["status"], "denied", "{}", r.body);
    }
    for (bad, shown) in [("NaN", "NaN"), ("inf", "inf"), ("-inf", "-inf"), ("1e400", "inf"), ("-1", "-1")] {
        let r = al.get(&format!("/v1/actions/{action}?wait={bad}"), BOT).await;
        r.assert_problem(StatusCode::BAD_REQUEST, "`wait` must be a finite, non-negative number of seconds");
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("got `{shown}`")), "wait={bad}: {detail}");
    }
    let health = al.get("/healthz", BOT).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    al.stop();
}
