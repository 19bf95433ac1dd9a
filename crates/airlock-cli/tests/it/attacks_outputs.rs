//! Attacks on what leaves airlock, each against the real binary: webhook deliveries (replayed,
//! changed, carrying secrets), `/metrics` (series made up by agents, read by anyone) and the
//! review UI (arguments with invisible or direction-changing characters). Each test plays the
//! attacker and checks that the attack fails; docs/security.md says which test shows what.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use axum::http::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The test policy plus a `redact` path, so webhook bodies have something to leave out.
fn policy_with_redact() -> String {
    format!("{POLICY}\nredact contains \"arguments.password\"\n")
}

/// The Python block of docs/configuration.md marked `verify-webhook`.
fn documented_python_verifier() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    let marker = doc.find("<!-- verify-webhook").expect("the verify-webhook marker in docs/configuration.md");
    let rest = &doc[marker..];
    let start = rest.find("```python\n").expect("a python block after the marker") + "```python\n".len();
    let end = rest[start..].find("\n```").expect("the end of the python block");
    rest[start..start + end].to_string()
}

/// Runs the documented verifier on `cases` (headers, body, now) in one receiver process, so ids
/// it accepted are remembered from case to case. Each answer is `true`, `false` or the
/// `Rejected` message.
fn run_documented_verifier(cases: &[(HeaderMap, String, i64)]) -> Vec<Value> {
    let cases: Vec<Value> = cases
        .iter()
        .map(|(h, body, now)| {
            let headers: serde_json::Map<String, Value> =
                h.iter().map(|(k, v)| (k.as_str().to_string(), json!(v.to_str().unwrap_or_default()))).collect();
            json!({"headers": headers, "body": body, "now": now})
        })
        .collect();
    let driver = format!(
        "{}\n\nimport json, sys\nout = []\nfor c in json.load(sys.stdin):\n    try:\n        \
         out.append(verify(sys.argv[1], c['headers'], c['body'].encode(), now=c['now']))\n    except Rejected as e:\n        \
         out.append(str(e))\nprint(json.dumps(out))\n",
        documented_python_verifier()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &driver, HOOK_SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be on PATH");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(Value::Array(cases).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the documented verifier failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A captured delivery can't be used again: replayed at once its id is known, replayed later its
/// timestamp is stale, and neither a fresh timestamp nor a changed body carries a valid
/// signature. Checked with the receiver-side check the docs give, in Rust and by running the
/// docs' own Python snippet. A signature over the body alone (what airlock sent before) passed
/// all of these replays.
#[tokio::test]
async fn a_captured_webhook_delivery_cannot_be_replayed_or_changed() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(POLICY, &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    let (headers, _, raw) = received.wait_for_raw("approval.requested", Duration::from_secs(10)).await;
    drop(al);

    let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() <= 60, "the timestamp is the time of the attempt: {ts} vs {now}");
    assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"), "{headers:?}");
    assert!(headers.get("x-airlock-signature-256").is_none(), "the body-only signature is no longer sent");

    // The genuine delivery is accepted once.
    let mut seen = HashMap::new();
    assert_eq!(verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), now, &mut seen), Ok(true));
    // Replayed at once: the id was seen.
    assert_eq!(verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), now + 1, &mut seen), Ok(false));
    // Replayed later, to a receiver that has long forgotten the id: the timestamp is stale.
    let later = ts + WEBHOOK_TOLERANCE_SECS + 1;
    let mut fresh_receiver = HashMap::new();
    assert_eq!(
        verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), later, &mut fresh_receiver),
        Err(Rejected::StaleTimestamp)
    );
    // Replayed later with the timestamp brought up to date: the signature covers it.
    let mut refreshed = headers.clone();
    refreshed.insert("webhook-timestamp", HeaderValue::from_str(&later.to_string()).unwrap());
    assert_eq!(
        verify_webhook(HOOK_SECRET, &refreshed, raw.as_bytes(), later, &mut fresh_receiver),
        Err(Rejected::BadSignature)
    );
    // With a new id, to get past the receiver's memory: the signature covers it too.
    let mut renamed = headers.clone();
    renamed.insert("webhook-id", HeaderValue::from_static("999999"));
    assert_eq!(
        verify_webhook(HOOK_SECRET, &renamed, raw.as_bytes(), now, &mut HashMap::new()),
        Err(Rejected::BadSignature)
    );
    // With a changed body: the signature covers the body.
    let changed = raw.replace("\"count\":3", "\"count\":300");
    assert_ne!(changed, raw);
    assert_eq!(
        verify_webhook(HOOK_SECRET, &headers, changed.as_bytes(), now, &mut HashMap::new()),
        Err(Rejected::BadSignature)
    );

    // The snippet in the docs says the same: one receiver process sees all of these.
    let answers = run_documented_verifier(&[
        (headers.clone(), raw.clone(), now),
        (headers.clone(), raw.clone(), now + 1),
        (headers.clone(), raw.clone(), later + WEBHOOK_TOLERANCE_SECS + 1),
        (refreshed, raw.clone(), later),
        (renamed, raw.clone(), now),
        (headers, changed, now),
    ]);
    assert_eq!(answers[0], json!(true), "{answers:?}");
    assert_eq!(answers[1], json!(false), "{answers:?}");
    assert!(answers[2].as_str().is_some_and(|m| m.starts_with("stale timestamp")), "{answers:?}");
    for rejected in &answers[3..] {
        assert!(rejected.as_str().is_some_and(|m| m.starts_with("bad signature")), "{answers:?}");
    }
}

/// An argument that policy `redact`s does not reach the webhook receiver, in any event about the
/// action; the other arguments do.
#[tokio::test]
async fn a_redacted_argument_does_not_reach_the_webhook_receiver() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(&policy_with_redact(), &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    let secret = "hunter2-do-not-leak";
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3, "password": secret})).await;
    assert_eq!(r.body["decision"]["redact"], json!(["arguments.password"]), "{}", r.body);
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "fine"})).await;

    let (_, requested, raw_requested) = received.wait_for_raw("approval.requested", Duration::from_secs(10)).await;
    let (_, resolved, raw_resolved) = received.wait_for_raw("approval.resolved", Duration::from_secs(10)).await;
    for (body, raw) in [(&requested, &raw_requested), (&resolved, &raw_resolved)] {
        assert!(!raw.contains(secret), "the redacted value reached the receiver: {raw}");
        assert_eq!(body["action"]["arguments"], json!({"pool": "web", "count": 3, "password": "[REDACTED]"}));
    }
    // Humans who sign in still see what they approve.
    let action = al.get(&format!("/v1/actions/{}", r.body["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(action.body["arguments"]["password"], secret);
}

/// The token `/metrics` requires in the tests below, configured by its hash.
const METRICS: &str = "metrics-scraper-token";

fn metrics_server_toml() -> String {
    format!("metrics_token = \"{}\"", hash(METRICS))
}

async fn scrape(al: &Airlock, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", al.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Samples of `/metrics` text, as `(name, labels)` without values: one per series.
fn series(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
        .map(|s| match s.split_once('{') {
            Some((name, labels)) => (name.to_string(), labels.trim_end_matches('}').to_string()),
            None => (s.to_string(), String::new()),
        })
        .collect()
}

/// The values of label `label` among `series` of metric `name`.
fn label_values(series: &[(String, String)], name: &str, label: &str) -> std::collections::BTreeSet<String> {
    let prefix = format!("{label}=\"");
    series
        .iter()
        .filter(|(n, _)| n == name)
        .filter_map(|(_, labels)| labels.split(',').find_map(|l| l.strip_prefix(&prefix)))
        .map(|v| v.trim_end_matches('"').to_string())
        .collect()
}

/// An agent that makes up tool names can't make up metric series: 1,000 calls with random tool
/// names (half denied by a policy rule that puts the tool name in the rule, half failing and
/// opening a circuit breaker each) leave the `tool` labels at the tools airlock knows plus
/// `other`, and the `rule` label bounded. Before, each name was a series of its own in three
/// metrics, and each rule one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tool_names_do_not_create_metric_series() {
    let policy = format!(
        "{POLICY}\ndeny contains {{\"rule\": sprintf(\"RND-%s\", [input.action.tool]), \"msg\": \"made up\"}} if \
         startswith(input.action.tool, \"rnd-deny.\")\n"
    );
    let extra = format!(
        "\n[guards]\nactions_per_minute = 0\nmax_consecutive_denials = 0\nmax_consecutive_failures = 0\nloop_repeats = 0\n\
         breaker_failures = 1\n\n[[tools]]\nname = \"deploy.run\"\n\n\
         [[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{}\"]\n",
        fake_mcp_server().display()
    );
    let fx = Fixture::with_server(&policy, &metrics_server_toml(), &extra);
    let al = fx.start();
    al.wait_for_upstream("fake").await;

    // Known tools keep their names: a `[[tools]]` name and a tool the upstream lists.
    let s = al.session(BOT).await;
    let deploy = al.act(BOT, &s, "deploy.run", json!({})).await;
    let id = deploy.body["id"].as_str().unwrap();
    al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true})).await;
    let echo = al.act(BOT, &s, "fake__echo", json!({"x": 1})).await;
    assert_eq!(echo.body["status"], "succeeded", "{}", echo.body);
    // A name under the upstream's prefix that it does not list is made up too.
    let unlisted = al.act(BOT, &s, "fake__no_such_tool_4711", json!({})).await;
    assert_eq!(unlisted.body["status"], "failed", "{}", unlisted.body);

    // The attack: 1,000 calls, each with a new tool name, from 10 sessions at once.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (url, session) = (al.url.clone(), al.session(BOT).await);
        calls.spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..100 {
                let kind = if i % 2 == 0 { "rnd-deny" } else { "rnd-run" };
                let tool = format!("{kind}.{}", uuid::Uuid::new_v4().simple());
                let r: Value = http
                    .post(format!("{url}/v1/sessions/{session}/actions"))
                    .bearer_auth(BOT)
                    .json(&json!({"tool": tool, "arguments": {}, "justification": "made up"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let expected = if kind == "rnd-deny" { "denied" } else { "executing" };
                assert_eq!(r["status"], expected, "{r}");
                if kind == "rnd-run" {
                    let id = r["id"].as_str().unwrap();
                    let done = http
                        .post(format!("{url}/v1/actions/{id}/result"))
                        .bearer_auth(BOT)
                        .json(&json!({"ok": false, "error": "made up"}))
                        .send()
                        .await
                        .unwrap();
                    assert!(done.status().is_success(), "{}", done.text().await.unwrap());
                }
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let breakers = al.get("/v1/breakers", ADMIN).await;
    let open = breakers.body["breakers"].as_array().map_or(0, |b| b.iter().filter(|b| b["state"] == "open").count());
    assert!(open >= 500, "each failing made-up tool opened a breaker: {open}");

    let text = scrape(&al, Some(METRICS)).await.text().await.unwrap();
    let all = series(&text);
    let known: std::collections::BTreeSet<String> =
        ["deploy.run", "fake__echo", "other"].iter().map(|s| s.to_string()).collect();
    assert_eq!(label_values(&all, "airlock_actions_total", "tool"), known, "{text}");
    assert_eq!(label_values(&all, "airlock_breaker_state", "tool"), known, "{text}");
    let rules = label_values(&all, "airlock_decisions_total", "rule");
    assert!(rules.len() <= 256 + 1, "{} rule values: 256 names and `other` at most", rules.len());
    assert!(rules.contains("other"), "rules past the bound are `other`");
    assert!(all.len() < 1000, "1,000 made-up names made {} series", all.len());
    // The open breakers of made-up tools still show, as the worst state of `other`.
    assert!(text.lines().any(|l| l == "airlock_breaker_state{tool=\"other\"} 2"), "{text}");
}

/// With `[server] metrics_token`, `/metrics` answers only its holder: no token, a wrong one or an
/// agent's or human's token get `401`.
#[tokio::test]
async fn metrics_require_the_token_when_one_is_configured() {
    let fx = Fixture::with_server(POLICY, &metrics_server_toml(), "");
    let al = fx.start();
    for token in [None, Some("wrong"), Some(BOT), Some(ADMIN)] {
        let r = scrape(&al, token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(r.headers().contains_key("www-authenticate"));
        let text = r.text().await.unwrap();
        assert!(!text.contains("airlock_"), "{text}");
    }
    let r = scrape(&al, Some(METRICS)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    // Health stays open: load balancers probe it without a token.
    assert_eq!(reqwest::get(format!("{}/healthz", al.url)).await.unwrap().status(), StatusCode::OK);
}

/// The canary bucket airlock used before: the public SHA-256 of the session id.
fn public_bucket(session_id: &str) -> u8 {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(session_id.as_bytes());
    (u16::from_be_bytes([hash[0], hash[1]]) % 100) as u8
}

/// Loads a candidate that denies `ticket.create` as a 50 % canary.
async fn freeze_canary(al: &Airlock) {
    let r = al.post("/v1/policy/candidate", ADMIN, json!({"dir": "candidate", "canary_percent": 50})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// Whether the candidate decided `session`'s new call.
async fn in_canary(al: &Airlock, session: &str, n: u32) -> bool {
    let r = al.act(BOT, session, "ticket.create", json!({"n": n})).await;
    match r.status {
        StatusCode::FORBIDDEN => true,
        StatusCode::OK => false,
        other => panic!("{other}: {}", r.body),
    }
}

/// An agent can't tell from a session's id whether a canary (often the looser policy) decides
/// for it, so it can't open sessions until one lands there without trying each: the keyed
/// bucket disagrees with the public hash it could compute before. Each session keeps its
/// bucket across a restart.
#[tokio::test]
async fn a_session_id_does_not_tell_which_policy_decides_for_it() {
    let fx = Fixture::with_extra(POLICY, "\n[guards]\nmax_consecutive_denials = 0\n");
    let candidate = fx.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    let freeze =
        "\ndeny contains {\"rule\": \"TK1\", \"msg\": \"ticket freeze\"} if input.action.tool == \"ticket.create\"\n";
    std::fs::write(candidate.join("main.rego"), format!("{POLICY}{freeze}")).unwrap();

    let al = fx.start();
    freeze_canary(&al).await;
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let s = al.session(BOT).await;
        let canary = in_canary(&al, &s, 1).await;
        sessions.push((s, canary));
    }
    let predicted_right = sessions.iter().filter(|(s, canary)| (public_bucket(s) < 50) == *canary).count();
    // A guess is right half the time; the public hash predicted all 40.
    assert!(predicted_right < 35, "the public hash predicted {predicted_right} of 40 canary sessions");
    let canaries = sessions.iter().filter(|(_, c)| *c).count();
    assert!((5..=35).contains(&canaries), "a 50% canary decided for {canaries} of 40 sessions");
    al.stop();

    // After a restart (the canary is loaded again), each session is where it was.
    let al = fx.start();
    freeze_canary(&al).await;
    for (s, canary) in &sessions {
        assert_eq!(in_canary(&al, s, 2).await, *canary, "session {s} changed buckets across a restart");
    }
}

/// An agent can't make its arguments read differently to the human who approves them: a
/// right-to-left override, zero-width and other invisible characters reach the review page as
/// visible markers, never as they are, and the page warns before the vote form.
#[tokio::test]
async fn the_review_page_shows_invisible_and_direction_changing_characters() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    // Reads as `rm -rf /tmp/cache` with the override applied; it is something else.
    let command = "rm -rf /\u{202E}ehcac/pmt\u{200B}";
    let held = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 2, "hook": command})).await;
    let approval = held.body["approval"]["id"].as_str().unwrap().to_string();
    let (status, session) = sign_in(&al, ALICE).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.unwrap();
    let http = client();
    for path in [format!("/ui/approvals/{approval}"), "/ui/inbox/list".to_string()] {
        let page = http.get(format!("{}{path}", al.url)).header("cookie", &session).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(!html.contains('\u{202E}') && !html.contains('\u{200B}'), "{path}: a hidden character got through");
    }
    let page = http.get(format!("{}/ui/approvals/{approval}", al.url)).header("cookie", &session).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("rm -rf /<mark class=\"hidden-char\""), "{html}");
    assert!(html.contains("⟨U+202E⟩</mark>ehcac/pmt<mark"), "{html}");
    assert!(html.contains("⟨U+200B⟩"), "{html}");
    let warning = html.find("The arguments contain invisible or direction-changing characters.").expect("the warning");
    let form = html.find(r#"name="comment""#).expect("the vote form");
    assert!(warning < form, "the warning comes before the vote form");
}
