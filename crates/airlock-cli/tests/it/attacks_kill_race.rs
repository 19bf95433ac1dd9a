//! Kill switches at the moment of sending, and calls whose outcome nobody saw.
//!
//! - A kill switch engaged after a call was decided but before it left airlock must stop it:
//!   the switches are checked again at the moment of sending, under the lock the kill switch
//!   takes. The window is opened wide here by a policy that takes its time: the guards (and
//!   their kill-switch check) run before policy, so a switch engaged while policy runs used to
//!   be missed.
//! - A call that was sent and then timed out or was cancelled may have acted at the upstream:
//!   it is recorded `unknown`, not `failed`.
//! - An HTTP client that disconnects mid-call does not leave its action `executing`: the call
//!   runs on and its outcome is recorded. One that was out when airlock crashed is `unknown` at
//!   the next start.
//!
//! The upstream is `tests/interop/fakes/slow_mcp_server.py`: `sleep` takes its time, `touch`
//! leaves a file, so a test can tell whether a call reached it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A policy that allows everything, slowly when asked to: `spin` squared steps (and never a
/// match), so a test can hold a decision in policy for as long as it needs.
const SLOW_POLICY: &str = r#"package airlock

import rego.v1

deny contains {"rule": "SPIN", "msg": "unreachable"} if {
    n := input.action.arguments.spin
    count([x | some x in numbers.range(1, n); some y in numbers.range(1, n); x == y]) < 0
}
"#;

fn slow_mcp_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/fakes/slow_mcp_server.py")
}

/// An installation with the slow fake as upstream `slow` (calls limited to `call_timeout_ms`)
/// and `policy`, whose evaluations may take up to a minute.
fn fixture(policy: &str, call_timeout_ms: u64) -> Fixture {
    let extra = format!(
        "[[upstreams]]\nname = \"slow\"\ncommand = \"python3\"\nargs = [\"{}\"]\ntimeout_ms = {call_timeout_ms}\n",
        slow_mcp_server().display()
    );
    let fx = Fixture::with_extra(policy, &extra);
    let config = std::fs::read_to_string(fx.config()).unwrap();
    assert_eq!(config.matches("timeout_ms = 100\n").count(), 1, "{config}");
    std::fs::write(fx.config(), config.replace("timeout_ms = 100\n", "timeout_ms = 60000\n")).unwrap();
    fx
}

async fn started(fx: &Fixture) -> Airlock {
    let al = fx.start();
    al.wait_for_upstream("slow").await;
    al
}

fn marker(fx: &Fixture, name: &str) -> PathBuf {
    fx.dir.path().join(name)
}

/// The actions of `session`, oldest first.
async fn actions(al: &Airlock, session: &str) -> Vec<Value> {
    let s = al.get(&format!("/v1/sessions/{session}"), ADMIN).await;
    s.body["actions"].as_array().cloned().unwrap_or_default()
}

/// The `spin` that keeps a decision in policy for at least `at_least`, found by timing decisions
/// of an agent-executed tool (nothing runs) with growing `spin`.
async fn spin_for(al: &Airlock, session: &str, at_least: Duration) -> u64 {
    let mut spin: u64 = 300;
    for _ in 0..12 {
        let t0 = Instant::now();
        let r = al.act(BOT, session, "probe.spin", json!({"spin": spin})).await;
        let took = t0.elapsed();
        assert_eq!(r.body["status"], "executing", "{}", r.body);
        if took >= at_least {
            return spin;
        }
        // The work grows with the square of `spin`.
        let factor = (at_least.as_secs_f64() * 1.3 / took.as_secs_f64().max(0.001)).sqrt().clamp(1.2, 8.0);
        spin = (spin as f64 * factor) as u64;
    }
    panic!("no `spin` held a decision for {at_least:?}");
}

fn assert_not_called(path: &Path) {
    assert!(!path.exists(), "the call reached the upstream: {} exists", path.display());
}

#[tokio::test]
async fn a_kill_switch_engaged_while_policy_decides_stops_the_call_before_it_is_sent() {
    let fx = fixture(SLOW_POLICY, 10_000);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let spin = spin_for(&al, &s, Duration::from_millis(2500)).await;
    let touched = marker(&fx, "touched");

    // The call: its guards run at once (no kill switch yet), then policy takes its time.
    let (url, session, path) = (al.url.clone(), s.clone(), touched.display().to_string());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/sessions/{session}/actions"))
            .bearer_auth(BOT)
            .json(&json!({"tool": "slow__touch", "arguments": {"path": path, "spin": spin}, "justification": "race"}))
            .send()
            .await
            .expect("request")
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Still deciding: nothing about the call is recorded before its decision.
    let before = actions(&al, &s).await;
    assert!(
        before.iter().all(|a| a["tool"] != "slow__touch"),
        "the decision came before the kill switch, so this run shows nothing: {before:?}"
    );
    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "upstream", "target": "slow", "reason": "incident 77"})).await;
    assert_eq!(ks.status, StatusCode::CREATED, "{}", ks.body);
    let ks_id = ks.body["id"].as_str().unwrap().to_string();

    let answer = call.await.unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    // Policy allowed it (it never heard of the switch), and the switch stopped it at the send.
    assert_eq!(body["decision"]["effect"], "allow", "{body}");
    assert_eq!(body["status"], "cancelled", "a kill switch engaged before the send must stop it: {body}");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["result"].is_null(), "{body}");
    assert_not_called(&touched);

    // The journal says why, naming the switch.
    let id = body["id"].as_str().unwrap();
    let events = al.get(&format!("/v1/sessions/{s}/events"), ADMIN).await;
    let cancelled = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "action.cancelled" && e["payload"]["action_id"] == id)
        .unwrap_or_else(|| panic!("no action.cancelled for {id}: {}", events.body))
        .clone();
    assert_eq!(cancelled["payload"]["reason"]["rule"], "airlock.kill_switch", "{cancelled}");
    assert!(cancelled["payload"]["reason"]["msg"].as_str().unwrap().contains(&ks_id), "{cancelled}");
    // Give a sent call time to arrive, had there been one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_not_called(&touched);
}

#[tokio::test]
async fn an_upstream_call_that_times_out_is_recorded_unknown_not_failed() {
    let fx = fixture(SLOW_POLICY, 300);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let t0 = Instant::now();
    let r = al.act(BOT, &s, "slow__sleep", json!({"seconds": 5})).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "the time limit did not cut the call short");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "unknown", "a call that timed out may have acted: {}", r.body);
    let error = r.body["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not answer within 0.3s"), "{error}");
    assert!(error.contains("outcome is unknown"), "{error}");
    let id = r.body["id"].as_str().unwrap();
    let stored = al.get(&format!("/v1/actions/{id}"), BOT).await;
    assert_eq!(stored.body["status"], "unknown", "{}", stored.body);
    let timeline = al.get(&format!("/v1/sessions/{s}/timeline"), ADMIN).await;
    assert!(timeline.body.to_string().contains("unknown: "), "{}", timeline.body);
    let metrics = scrape(&al).await;
    let unknown = r#"airlock_actions_total{tool="slow__sleep",outcome="unknown"}"#;
    assert_eq!(sample(&metrics, unknown), 1.0, "{metrics}");
    let failed = r#"airlock_actions_total{tool="slow__sleep",outcome="failed"}"#;
    assert_eq!(sample(&metrics, failed), 0.0, "{metrics}");
}

/// An upstream that acts and then crashes before answering: the connection breaks after the
/// call was sent, so the call may have acted (here it did: the marker exists), and it is
/// recorded `unknown`, not `failed`.
#[tokio::test]
async fn an_upstream_that_dies_mid_call_leaves_the_call_unknown_not_failed() {
    let fx = fixture(SLOW_POLICY, 10_000);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let acted = marker(&fx, "acted");
    let r = al.act(BOT, &s, "slow__die", json!({"path": acted.display().to_string()})).await;
    assert!(acted.exists(), "the upstream did not get the call");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "unknown", "a call whose upstream died mid-call may have acted: {}", r.body);
    let error = r.body["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("broke after the call was sent"), "{error}");
}

#[tokio::test]
async fn an_upstream_call_a_kill_switch_cancels_in_flight_is_recorded_unknown() {
    let fx = fixture(SLOW_POLICY, 60_000);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let t0 = Instant::now();
    let (url, session) = (al.url.clone(), s.clone());
    let call = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/sessions/{session}/actions"))
            .bearer_auth(BOT)
            .json(&json!({"tool": "slow__sleep", "arguments": {"seconds": 30}, "justification": "long"}))
            .send()
            .await
            .expect("request");
        r.json::<Value>().await.unwrap()
    });
    let out =
        poll(Duration::from_secs(10), || actions(&al, &s), |a| a.first().is_some_and(|a| a["status"] == "executing"))
            .await;
    assert_eq!(out.first().map(|a| a["status"].clone()), Some(json!("executing")), "the call never went out: {out:?}");
    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "all", "reason": "runaway"})).await;
    let ks_id = ks.body["id"].as_str().unwrap().to_string();
    let body = call.await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "the call ran on after the kill switch");
    assert_eq!(body["status"], "unknown", "a call cancelled after it was sent may have acted: {body}");
    let error = body["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cancelled after it was sent") && error.contains(&ks_id), "{error}");
}

#[tokio::test]
async fn an_http_client_that_disconnects_mid_call_does_not_leave_its_action_executing() {
    let fx = fixture(SLOW_POLICY, 10_000);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let slept = marker(&fx, "slept");
    // The client gives up long before the call ends, and closes its connection.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(400)).build().unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/sessions/{s}/actions", al.url))
        .bearer_auth(BOT)
        .json(&json!({"tool": "slow__sleep", "arguments": {"seconds": 1.5, "path": slept.display().to_string()}, "justification": "t"}))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()), "the client was to time out");
    drop(impatient);

    // The call runs to its end without anyone waiting, and its outcome is recorded.
    let out =
        poll(Duration::from_secs(15), || actions(&al, &s), |a| a.first().is_some_and(|a| a["status"] != "executing"))
            .await;
    let action = out.first().cloned().unwrap_or_default();
    assert_eq!(action["status"], "succeeded", "the action was left behind: {action}");
    assert!(slept.exists(), "the call did not run to its end");
}

#[tokio::test]
async fn a_call_out_when_airlock_crashes_is_unknown_at_the_next_start() {
    let fx = fixture(SLOW_POLICY, 60_000);
    let al = started(&fx).await;
    let s = al.session(BOT).await;
    let (url, session) = (al.url.clone(), s.clone());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/sessions/{session}/actions"))
            .bearer_auth(BOT)
            .json(&json!({"tool": "slow__sleep", "arguments": {"seconds": 30}, "justification": "long"}))
            .send()
            .await
    });
    let out =
        poll(Duration::from_secs(10), || actions(&al, &s), |a| a.first().is_some_and(|a| a["status"] == "executing"))
            .await;
    assert_eq!(out.first().map(|a| a["status"].clone()), Some(json!("executing")), "the call never went out: {out:?}");
    al.crash();
    assert!(call.await.unwrap().is_err(), "the crash ended the request");

    let al = started(&fx).await;
    let action = actions(&al, &s).await.first().cloned().unwrap_or_default();
    assert_eq!(action["status"], "unknown", "{action}");
    assert_eq!(action["result"]["reported_by"], "airlock", "{action}");
    assert!(action["result"]["error"].as_str().unwrap_or_default().contains("in flight"), "{action}");
}
