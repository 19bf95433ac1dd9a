//! The configuration as a whole: from TOML text to a [`Config`] or every problem with its path.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_core::limits::OnBudgetExceeded;

use super::*;

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("BOT_TOKEN".to_string(), "s3cret".to_string())])
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir();
    Config::parse(text, &dir.join("airlock.toml"), &env())
}

const HASH: &str = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(&format!(
        "[policy]\ndir = \".\"\n[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"platform\"\ntier = \"change\"\n[[humans]]\nid = \"alice\"\ntoken = \"{HASH}\"\nroles = [\"approve\"]\n"
    ))
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7878");
    assert_eq!(c.agents[0].token_hash, Some(hash_token("s3cret")));
    assert_eq!(c.humans[0].token_hash, Some(hash_token("secret")));
    assert_eq!(c.policy.timeout, Duration::from_millis(100));
    assert_eq!(c.mcp.session_idle, Duration::from_secs(3600));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let err = parse(
        "[server]\nlisten = \"localhost\"\nport = 3\n[policy]\ndir = \"/no/such/dir\"\n[[agents]]\nid = \"bot\"\ntoken = \"plaintext\"\nowner = \"\"\ntier = \"change\"\nextra = 1\n[[agents]]\nid = \"bot\"\ntoken = \"env:MISSING\"\nowner = \"x\"\ntier = \"autonomous\"\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "server.port",
        "agents[0].extra",
        "server.listen",
        "policy.dir",
        "agents[0].token",
        "agents[0].owner",
        "agents[1].id",
        "agents[1].token",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {err}");
    }
    let text = err.to_string();
    assert!(text.contains("did you mean `listen`"), "{text}");
    assert!(text.contains("`MISSING` is not set"), "{text}");
}

#[test]
fn wrong_types_name_their_key() {
    let err = parse(
        "[policy]\ndir = \".\"\n[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"boss\"\n",
    )
    .unwrap_err();
    let (key, msg) = &err.problems[0];
    assert_eq!(key, "agents[0].tier");
    assert!(msg.contains("boss"), "{msg}");

    // Every type error at once, across sections, fields and array elements, with missing
    // fields named too.
    let err = parse(
        "[server]\nlisten = 7878\nmax_body_bytes = \"big\"\nport = 1\n[policy]\ndir = \".\"\ntimeout_ms = \"fast\"\n\
         [[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n\
         [[agents]]\nid = \"b\"\ntoken = \"env:BOT_TOKEN\"\ntier = \"boss\"\nlabels = [1]\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "server.listen",
        "server.max_body_bytes",
        "server.port",
        "policy.timeout_ms",
        "agents[1].tier",
        "agents[1].labels",
        "agents[1]",
    ] {
        assert!(keys.contains(&expected), "`{expected}` not reported: {err}");
    }
    assert!(!keys.iter().any(|k| k.starts_with("agents[0]")), "agents[0] is fine: {err}");
    assert!(err.to_string().contains("missing field `owner`"), "{err}");
}

#[test]
fn agents_override_guard_defaults() {
    let c = parse(
        "[policy]\ndir = \".\"\n[guards]\nactions_per_minute = 100\nbudget_usd_per_day = 50.0\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nactions_per_minute = 5\non_budget_exceeded = \"require_approval\"\n\n[[agents]]\nid = \"b\"\ntoken = \"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\nowner = \"o\"\ntier = \"change\"\n",
    )
    .unwrap();
    assert_eq!(c.agents[0].limits.actions_per_minute, 5);
    assert_eq!(c.agents[0].limits.budget_usd_per_day, 50.0);
    assert_eq!(c.agents[0].limits.on_budget_exceeded, OnBudgetExceeded::RequireApproval);
    assert_eq!(c.agents[1].limits.actions_per_minute, 100);
    assert_eq!(c.agents[1].limits.loop_repeats, 5);
    let err =
        parse("[policy]\ndir = \".\"\n[guards]\nloop_repeats = 1\nbudget_usd_per_day = -1.0\nbreaker_cooldown = 3\n")
            .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"guards.loop_repeats") && keys.contains(&"guards.budget_usd_per_day"), "{err}");
    assert!(keys.contains(&"guards.breaker_cooldown"), "{err}");
}

#[test]
fn breaker_error_rate_keys_default_override_and_validate() {
    let c = parse(
        "[policy]\ndir = \".\"\n[guards]\nbreaker_window_seconds = 120\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nbreaker_error_rate = 0.25\nbreaker_min_calls = 4\n",
    )
    .unwrap();
    let l = &c.agents[0].limits;
    assert_eq!((l.breaker_error_rate, l.breaker_window_seconds, l.breaker_min_calls), (0.25, 120, 4));
    assert_eq!((c.guards.breaker_error_rate, c.guards.breaker_min_calls), (0.5, 10));
    let err = parse(
        "[policy]\ndir = \".\"\n[guards]\nbreaker_error_rate = 1.5\nbreaker_window_seconds = 0\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nbreaker_min_calls = 0\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    for expected in ["guards.breaker_error_rate", "guards.breaker_window_seconds", "agents[0].guards.breaker_min_calls"]
    {
        assert!(keys.contains(&expected), "`{expected}` not reported: {err}");
    }
}

#[test]
fn upstreams_need_exactly_one_transport() {
    let err = parse("[policy]\ndir = \".\"\n[[upstreams]]\nname = \"a__b\"\n").unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["upstreams[0].name", "upstreams[0].command"]);
}

/// An agent's `on_behalf_of` names a human (declared before or after the agent); anything else is
/// refused with the key and the humans there are.
#[test]
fn an_agents_requester_must_be_a_configured_human() {
    let agent = |human: &str| {
        format!(
            "[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"p\"\ntier = \"change\"\non_behalf_of = \"{human}\"\n"
        )
    };
    let humans = format!("[[humans]]\nid = \"alice\"\ntoken = \"{HASH}\"\n");
    let c = parse(&format!("[policy]\ndir = \".\"\n{}{humans}", agent("alice"))).unwrap();
    assert_eq!(c.agents[0].on_behalf_of.as_deref(), Some("alice"));
    let err = parse(&format!("[policy]\ndir = \".\"\n{}{humans}", agent("mallory"))).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].0, "agents[0].on_behalf_of", "{err}");
    assert!(
        err.problems[0].1.contains("`mallory` is not the `id` of a `[[humans]]` entry (the humans are `alice`)"),
        "{err}"
    );
    let err = parse(&format!("[policy]\ndir = \".\"\n{}", agent("alice"))).unwrap_err();
    assert!(err.to_string().contains("there are no `[[humans]]`"), "{err}");
    let none = parse(
        "[policy]\ndir = \".\"\n[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"p\"\ntier = \"change\"\n",
    );
    assert_eq!(none.unwrap().agents[0].on_behalf_of, None);
}

/// Arguments are checked against upstream schemas unless an upstream turns it off.
#[test]
fn upstreams_validate_input_unless_turned_off() {
    let c = parse(
        "[policy]\ndir = \".\"\n[[upstreams]]\nname = \"a\"\ncommand = \"x\"\n[[upstreams]]\nname = \"b\"\ncommand = \"x\"\nvalidate_input = false\n",
    )
    .unwrap();
    assert!(c.upstreams[0].validate_input);
    assert!(!c.upstreams[1].validate_input);
    let err = parse("[policy]\ndir = \".\"\n[[upstreams]]\nname = \"a\"\ncommand = \"x\"\nvalidate_input = \"yes\"\n")
        .unwrap_err();
    assert!(err.problems.iter().any(|(k, _)| k == "upstreams[0].validate_input"), "{err}");
}

/// Tools are offered as `{upstream}__{tool}` and routed by the first `__`: a name that ends with
/// `_` or contains `__` would send calls to another upstream, so such names are refused.
#[test]
fn upstream_names_that_would_misroute_tools_are_refused() {
    for (name, needle) in [
        (
            "fs_",
            "`fs_` must not end with `_`: its tool `x` would be offered as `fs___x`, which routes to upstream `fs`'s tool `_x`",
        ),
        ("_", "must not end with `_`"),
        ("a__b", "`a__b` must not contain `__`"),
        ("fs__", "must not contain `__`"),
        ("f s", "`f s` must be 1-32 letters, digits, `-` or `_`"),
    ] {
        let err = parse(&format!("[policy]\ndir = \".\"\n[[upstreams]]\nname = \"{name}\"\ncommand = \"x\"\n"))
            .expect_err(name);
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].0, "upstreams[0].name", "{err}");
        assert!(err.problems[0].1.contains(needle), "{name}: {err}");
    }
    for name in ["fs", "_fs", "a_b", "a-b_c", "x1"] {
        let c = parse(&format!("[policy]\ndir = \".\"\n[[upstreams]]\nname = \"{name}\"\ncommand = \"x\"\n"));
        assert!(c.is_ok(), "{name}: {:?}", c.err());
    }
}

/// A stdio upstream inherits only the harmless variables of airlock's environment, and none that
/// the file reads a secret from, even a harmless name; it gets its own `env` table on top.
#[test]
fn stdio_upstreams_inherit_no_secret_from_airlocks_environment() {
    let env: BTreeMap<String, String> = [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/home/airlock"),
        ("LANG", "C.UTF-8"),
        ("USER", "a-token-kept-in-a-harmless-name"),
        ("BOT_TOKEN", "s3cret"),
        ("ALICE_TOKEN", "alice-s3cret"),
        ("ALICE_TOTP", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        ("AUDIT_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        ("HOOK_SECRET", "hook"),
        ("FS_KEY", "fs-key"),
        ("TICKETS_AUTH", "Bearer t"),
        ("UNRELATED", "not referenced, not harmless"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let text = r#"
[policy]
dir = "."
[audit]
signing_key = "env:AUDIT_KEY"
[[notify]]
url = "https://hooks.example"
secret = "env:HOOK_SECRET"
[[agents]]
id = "bot"
token = "env:USER"
owner = "o"
tier = "change"
[[humans]]
id = "alice"
token = "env:ALICE_TOKEN"
totp = "env:ALICE_TOTP"
[[upstreams]]
name = "fs"
command = "mcp-fs"
env = { FS_KEY = "env:FS_KEY", MODE = "plain", RENAMED = "env:BOT_TOKEN" }
[[upstreams]]
name = "tickets"
url = "https://mcp.example/mcp"
headers = { Authorization = "env:TICKETS_AUTH" }
[[upstreams]]
name = "other"
command = "mcp-other"
"#;
    let c = Config::parse(text, &std::env::temp_dir().join("airlock.toml"), &env).unwrap();
    let expected_inherited: BTreeMap<String, String> =
        [("HOME", "/home/airlock"), ("LANG", "C.UTF-8"), ("PATH", "/usr/bin:/bin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let UpstreamTransport::Stdio { env: own, inherited, .. } = &c.upstreams[0].transport else { panic!("not stdio") };
    assert_eq!(inherited, &expected_inherited, "`USER` holds a token here, so it is not inherited");
    assert_eq!(own.keys().collect::<Vec<_>>(), ["FS_KEY", "MODE", "RENAMED"]);
    assert_eq!(own["RENAMED"], "s3cret", "a secret reaches the child under the name its table gives it");
    let UpstreamTransport::Stdio { env: own, inherited, .. } = &c.upstreams[2].transport else { panic!("not stdio") };
    assert_eq!(inherited, &expected_inherited);
    assert!(own.is_empty(), "another upstream's `env` is its own: {own:?}");
    assert!(INHERITED_ENV.contains(&"PATH") && !INHERITED_ENV.contains(&"SHELL"));
}

#[test]
fn upstream_headers_and_env_read_env_references() {
    let base = "[policy]\ndir = \".\"\n[[upstreams]]\nname = \"tickets\"\nurl = \"https://mcp.example/mcp\"\n";
    let c = parse(&format!("{base}headers = {{ Authorization = \"env:BOT_TOKEN\", X-Team = \"sre\" }}\n")).unwrap();
    let UpstreamTransport::Http { headers, .. } = &c.upstreams[0].transport else { panic!("not http") };
    assert_eq!(headers["Authorization"], env().var("BOT_TOKEN").unwrap());
    assert_eq!(headers["X-Team"], "sre");

    let err = parse(&format!(
        "{base}headers = {{ Authorization = \"env:NOPE\" }}\n[[upstreams]]\nname = \"fs\"\ncommand = \"x\"\nenv = {{ KEY = \"env:ALSO_NOPE\" }}\n"
    ))
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["upstreams[0].headers.Authorization", "upstreams[1].env.KEY"], "{err}");
    assert!(err.to_string().contains("`NOPE` is not set"), "{err}");
}

/// Problems come in the order of the sections as checked (not as written), with the same messages
/// as `airlock check` prints; the file lists its sections backwards on purpose.
#[test]
fn problems_are_reported_in_section_order() {
    let err = parse(
        r#"
[telemetry]
otlp_endpoint = "grpc://collector"
otlp_protocol = "udp"
[audit]
signing_key = "/nonexistent/audit.key"
checkpoint_interval_seconds = 0
checkpoint_every_events = 0
origin = "a b"
[[notify]]
url = "ftp://hooks"
events = ["nope"]
secret = "env:NOPE"
timeout_ms = 0
[[notify]]
name = "notify[0]"
url = "https://hooks"
secret = "plain"
[[tools]]
name = ""
cost_usd = -1.0
[[tools]]
name = "x"
cost_usd = nan
[[upstreams]]
name = "a__b"
url = "ftp://mcp"
args = ["x"]
headers = { A = "env:NOPE" }
timeout_ms = 0
read_only = ["["]
[[upstreams]]
name = "b"
command = "x"
url = "https://mcp"
[[upstreams]]
name = "b"
command = "x"
headers = { A = "b" }
[[humans]]
id = "bot"
token = "env:BOT_TOKEN"
totp = "plain"
[[humans]]
id = "carol"
token = "env:BOT_TOKEN"
totp = "env:NOPE"
[[agents]]
id = "bot"
token = "sha256:zz"
owner = " "
tier = "change"
tools = ["["]
[agents.guards]
budget_usd_per_session = -2.0
[[agents]]
id = "no spaces"
token = "plain"
owner = "o"
tier = "change"
[guards]
loop_repeats = 1
loop_window_seconds = 0
budget_usd_per_day = -inf
breaker_cooldown_seconds = 0
breaker_error_rate = 2.0
breaker_window_seconds = 0
breaker_min_calls = 0
[mcp]
approval_wait_seconds = 4000
session_idle_seconds = 0
[approvals]
default_ttl_seconds = 0
execute_within_seconds = 0
[policy]
timeout_ms = 0
[server]
listen = "nowhere"
max_body_bytes = 1
public_url = "ftp://airlock"
max_wait_seconds = 0
bogus = 1
"#,
    )
    .unwrap_err();
    let expected = [
        "server.bogus: unknown key",
        "server.listen: `nowhere` is not an address; write IP:PORT such as `127.0.0.1:7878` (port 0 picks a free port)",
        "server.max_body_bytes: must be between 1024 and 67108864, got 1",
        "server.public_url: `ftp://airlock` must start with http:// or https://",
        "server.max_wait_seconds: must be between 1 and 3600, got 0",
        "policy.dir: is required: the directory of `.rego` files",
        "policy.timeout_ms: must be between 1 and 60000, got 0",
        "approvals.default_ttl_seconds: must be between 1 and 2592000, got 0",
        "approvals.execute_within_seconds: must be between 1 and 604800, got 0",
        "mcp.approval_wait_seconds: must be at most 3600, got 4000",
        "mcp.session_idle_seconds: must be between 1 and 604800, got 0",
        "guards.loop_repeats: must be 0 (off) or at least 2",
        "guards.loop_window_seconds: must be between 1 and 604800, got 0",
        "guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
        "guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
        "guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
        "guards.breaker_window_seconds: must be between 1 and 86400, got 0",
        "guards.breaker_min_calls: must be between 1 and 1000000, got 0",
        "agents[0].token: a `sha256:` token must be followed by 64 hex digits",
        "agents[0].owner: must name the team or person accountable for the agent",
        "agents[0].tools[0]: `[` is not a valid glob",
        "agents[0].guards.loop_repeats: must be 0 (off) or at least 2",
        "agents[0].guards.loop_window_seconds: must be between 1 and 604800, got 0",
        "agents[0].guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
        "agents[0].guards.budget_usd_per_session: must be a non-negative number (0 = no limit), got -2",
        "agents[0].guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
        "agents[0].guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
        "agents[0].guards.breaker_window_seconds: must be between 1 and 86400, got 0",
        "agents[0].guards.breaker_min_calls: must be between 1 and 1000000, got 0",
        "agents[1].id: `no spaces` must be 1-64 letters, digits or `-_.@`",
        "agents[1].token: must be `sha256:<hex>` (the SHA-256 of the token) or `env:NAME`; never the token itself. `airlock token new` makes a token and prints its hash",
        "agents[1].guards.loop_repeats: must be 0 (off) or at least 2",
        "agents[1].guards.loop_window_seconds: must be between 1 and 604800, got 0",
        "agents[1].guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
        "agents[1].guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
        "agents[1].guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
        "agents[1].guards.breaker_window_seconds: must be between 1 and 86400, got 0",
        "agents[1].guards.breaker_min_calls: must be between 1 and 1000000, got 0",
        "humans[0].id: `bot` is used twice",
        "humans[0].totp: must be `env:NAME` naming a variable that holds the base32 secret",
        "humans[1].token: the same token is used by another agent or human",
        "humans[1].totp: environment variable `NOPE` is not set",
        "upstreams[0].name: `a__b` must not contain `__`: tools are offered as `{upstream}__{tool}` and a call is routed by the first `__` in its name",
        "upstreams[0].headers.A: environment variable `NOPE` is not set",
        "upstreams[0].url: `ftp://mcp` must start with http:// or https://",
        "upstreams[0].args: `args` and `env` only apply to `command` upstreams",
        "upstreams[0].read_only[0]: `[` is not a valid glob",
        "upstreams[0].timeout_ms: must be between 1 and 3600000, got 0",
        "upstreams[1].command: set either `command` (stdio) or `url` (streamable HTTP), not both",
        "upstreams[2].name: `b` is used twice",
        "upstreams[2].headers: only applies to `url` upstreams",
        "tools[0].name: `` is not a valid tool name or glob",
        "tools[0].cost_usd: must be a non-negative number, got -1",
        "tools[1].cost_usd: must be a non-negative number, got NaN",
        "notify[0].url: `ftp://hooks` must start with http:// or https://",
        "notify[0].events[0]: unknown event `nope`; known: approval.requested, approval.resolved, approval.expired, session.paused, breaker.opened, plan.stuck",
        "notify[0].secret: environment variable `NOPE` is not set",
        "notify[0].timeout_ms: must be between 1 and 60000, got 0",
        "notify[1].name: `notify[0]` is used twice",
        "notify[1].secret: must be `env:NAME`; secrets are not written in the file",
        "audit.signing_key: `/nonexistent/audit.key` is not a file; write `env:NAME` or the path of a file holding the key (`openssl rand -base64 32 > FILE` makes one)",
        "audit.checkpoint_interval_seconds: must be between 1 and 86400, got 0",
        "audit.checkpoint_every_events: must be between 1 and 1000000000, got 0",
        "audit.origin: `a b` must be non-empty, without spaces or `+`",
        "telemetry.otlp_endpoint: `grpc://collector` must start with http:// or https:// (OTLP over HTTP)",
        "telemetry.otlp_protocol: `udp` must be `grpc` or `http/protobuf`",
    ];
    let text = err.to_string();
    let got: Vec<&str> = text.lines().skip(1).map(|l| l.trim_start_matches("  - ")).collect();
    assert_eq!(got, expected, "\n{text}");
}

#[test]
fn webhook_secrets_in_the_standard_webhooks_form_are_decoded() {
    let env = BTreeMap::from([
        ("PLAIN".to_string(), "hook-secret".to_string()),
        ("WHSEC".to_string(), "whsec_aG9vay1zZWNyZXQ=".to_string()),
        ("BROKEN".to_string(), "whsec_not base64!".to_string()),
    ]);
    let text =
        |var: &str| format!("[policy]\ndir = \".\"\n[[notify]]\nurl = \"https://hooks\"\nsecret = \"env:{var}\"\n");
    let load = |var: &str| Config::parse(&text(var), &std::env::temp_dir().join("airlock.toml"), &env);
    let plain = load("PLAIN").unwrap().notify[0].secret.clone().unwrap();
    let whsec = load("WHSEC").unwrap().notify[0].secret.clone().unwrap();
    assert_eq!(plain.key(), b"hook-secret");
    assert_eq!(whsec.key(), b"hook-secret", "`whsec_` + base64 is the key those bytes decode to");
    let err = load("BROKEN").unwrap_err();
    assert_eq!(
        err.problems,
        vec![(
            "notify[0].secret".to_string(),
            "a secret that starts with `whsec_` must be followed by base64 (the Standard Webhooks form)".to_string()
        )]
    );
}

/// The checkpoint signing key comes from the environment (decoded when the file is loaded) or from
/// a file outside `data_dir` (only looked for: `audit verify` may not be allowed to read it).
#[test]
fn the_audit_signing_key_is_an_env_reference_or_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("audit.key"), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let env: BTreeMap<String, String> =
        [("AUDIT_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"), ("SHORT", "abcd")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let load = |key: &str| {
        Config::parse(
            &format!("[policy]\ndir = \".\"\n[audit]\nsigning_key = \"{key}\"\n"),
            &dir.path().join("airlock.toml"),
            &env,
        )
    };
    let c = load("env:AUDIT_KEY").unwrap();
    let Some(AuditKey::Env { name, seed }) = &c.audit.signing_key else { panic!("{:?}", c.audit.signing_key) };
    assert_eq!((name.as_str(), seed[1]), ("AUDIT_KEY", 0x11));
    assert!(!format!("{:?}", c.audit).contains("17"), "the seed is not in the debug output: {:?}", c.audit);
    let c = load("keys/audit.key").unwrap();
    assert!(matches!(&c.audit.signing_key, Some(AuditKey::File(p)) if *p == dir.path().join("keys/audit.key")));

    let err = load("env:SHORT").unwrap_err().to_string();
    assert!(
        err.contains("audit.signing_key: environment variable `SHORT`: a key is 32 bytes in base64 or hex"),
        "{err}"
    );
    let err = load("env:UNSET").unwrap_err().to_string();
    assert!(err.contains("audit.signing_key: environment variable `UNSET` is not set"), "{err}");
    let err = load("keys").unwrap_err().to_string();
    assert!(err.contains("keys` is not a file; write `env:NAME` or the path of a file"), "{err}");
}

/// Connection timeouts and caps have safe defaults and refuse values that would switch them off.
#[test]
fn connection_limits_have_defaults_and_bounds() {
    let c = parse("[policy]\ndir = \".\"\n").unwrap();
    assert_eq!(
        c.server.connections,
        crate::connections::Limits {
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            reserved_connections: 16,
        }
    );
    let err = parse(
        "[server]\nheader_read_timeout_seconds = 0\nrequest_body_timeout_seconds = 3601\nidle_timeout_seconds = 0\n\
         max_connections = 0\nreserved_connections = 10001\n[policy]\ndir = \".\"\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.header_read_timeout_seconds",
            "server.request_body_timeout_seconds",
            "server.idle_timeout_seconds",
            "server.max_connections",
            "server.reserved_connections"
        ],
        "{err}"
    );
    assert!(err.to_string().contains("server.max_connections: must be between 1 and 1000000, got 0"), "{err}");
}
