//! Bounded autonomy against the real binary: budgets, rate limits, circuit breakers, loop and
//! streak detection with pause and resume — and all of it still in force after a restart.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;

fn fixture(guards: &str) -> Fixture {
    Fixture::with_extra(
        POLICY,
        &format!("\n[[tools]]\nname = \"ticket.create\"\ncost_usd = 1.0\n\n[guards]\n{guards}\n"),
    )
}

async fn report(al: &Airlock, id: &str, ok: bool) {
    let r = al
        .post(
            &format!("/v1/actions/{id}/result"),
            BOT,
            json!({"ok": ok, "error": if ok { None } else { Some("HTTP 503 from the ticket API") }}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_budget_stops_the_action_that_would_overrun_it_even_after_a_restart() {
    let fx = fixture("budget_usd_per_day = 3.0");
    let al = fx.start();
    let s = al.session(BOT).await;
    for n in 0..3 {
        let r = al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
        assert_eq!(r.status, StatusCode::OK, "action {n}: {}", r.body);
    }
    let r = al.act(BOT, &s, "ticket.create", json!({"n": 3})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget");
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("daily budget of $3.00"));
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["spent_usd"], 3.0);
    // Free actions still run.
    assert_eq!(al.act(BOT, &s, "inventory.list", json!({})).await.status, StatusCode::OK);

    al.crash();
    let al = fx.start();
    let s2 = al.session(BOT).await;
    let r = al.act(BOT, &s2, "ticket.create", json!({"n": 4})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget", "the day's spend was forgotten: {}", r.body);
}

#[tokio::test]
async fn an_overrun_can_go_to_a_human_instead() {
    let fx = fixture("budget_usd_per_session = 1.0\non_budget_exceeded = \"require_approval\"");
    let al = fx.start();
    let s = al.session(BOT).await;
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);
    let r = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget");
}

#[tokio::test]
async fn the_rate_limit_says_when_to_retry_and_survives_a_restart() {
    let fx = fixture("actions_per_minute = 3");
    let al = fx.start();
    let s = al.session(BOT).await;
    for n in 0..3 {
        assert_eq!(al.act(BOT, &s, "inventory.list", json!({"n": n})).await.status, StatusCode::OK);
    }
    let r = al.act(BOT, &s, "inventory.list", json!({"n": 3})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    let msg = r.body["decision"]["reasons"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("3 actions per minute") && msg.contains("retry after"), "{msg}");
    // Another agent has its own bucket.
    let other = al.session(CHANGE_BOT).await;
    assert_eq!(al.act(CHANGE_BOT, &other, "inventory.list", json!({})).await.status, StatusCode::OK);

    al.crash();
    let al = fx.start();
    let r = al.act(BOT, &s, "inventory.list", json!({"n": 5})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "the limit was reset by a restart: {}", r.body);
}

#[tokio::test]
async fn an_agents_own_guards_override_the_global_ones() {
    // Global: 3 actions a minute. `tight` allows itself 1; `roomy` 6.
    let extra = format!(
        "\n[guards]\nactions_per_minute = 3\n\n         [[agents]]\nid = \"tight\"\ntoken = \"{tight}\"\nowner = \"platform\"\ntier = \"autonomous\"\n         [agents.guards]\nactions_per_minute = 1\n\n         [[agents]]\nid = \"roomy\"\ntoken = \"{roomy}\"\nowner = \"platform\"\ntier = \"autonomous\"\n         [agents.guards]\nactions_per_minute = 6\n",
        tight = hash("tight-token"),
        roomy = hash("roomy-token"),
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    let allowed = |token: &'static str| {
        let al = &al;
        async move {
            let s = al.session(token).await;
            let mut n = 0;
            while al.act(token, &s, "inventory.list", json!({"n": n})).await.status == StatusCode::OK {
                n += 1;
                assert!(n < 20, "no limit for {token}");
            }
            n
        }
    };
    assert_eq!(allowed("tight-token").await, 1);
    assert_eq!(allowed("roomy-token").await, 6);
    assert_eq!(allowed(BOT).await, 3, "agents without their own table get [guards]");
}

/// The breaker opens, fails fast and stays open across a restart. Its cool-down, half-open probe
/// and closing are time passing: the engine cases move a clock for them (`tests/engine/guards.toml`).
#[tokio::test]
async fn a_failing_tool_opens_its_breaker_which_stays_open_across_a_restart() {
    let fx = fixture("breaker_failures = 2\nbreaker_cooldown_seconds = 600\nmax_consecutive_failures = 0");
    let al = fx.start();
    let s = al.session(BOT).await;
    for n in 0..2 {
        let r = al.act(BOT, &s, "flaky.op", json!({"n": n})).await;
        report(&al, r.body["id"].as_str().unwrap(), false).await;
    }
    let r = al.act(BOT, &s, "flaky.op", json!({"n": 2})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.circuit_breaker");
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("HTTP 503"), "{}", r.body);
    // Other tools are not affected.
    assert_eq!(al.act(BOT, &s, "inventory.list", json!({})).await.status, StatusCode::OK);
    let breakers = al.get("/v1/breakers", ALICE).await;
    assert_eq!(breakers.body["breakers"][0]["tool"], "flaky.op");
    assert_eq!(breakers.body["breakers"][0]["state"], "open");

    // Still open after a restart.
    al.crash();
    let al = fx.start();
    let r = al.act(BOT, &s, "flaky.op", json!({"n": 3})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.circuit_breaker");
}

#[tokio::test]
async fn failures_interleaved_with_successes_open_the_breaker_by_error_rate_across_restarts() {
    // Two failures in a row would open it; the agent never fails twice in a row, so only the
    // error rate can.
    let fx = fixture(
        "breaker_failures = 2\nbreaker_error_rate = 0.5\nbreaker_window_seconds = 300\nbreaker_min_calls = 6\nmax_consecutive_failures = 0",
    );
    let mut al = fx.start();
    let s = al.session(BOT).await;
    // fail, succeed, fail, succeed | restart | fail, succeed, fail: 4 of 7 failed.
    let outcomes = [false, true, false, true, false, true, false];
    for (n, ok) in outcomes.into_iter().enumerate() {
        if n == 4 {
            // The window's counts are journaled: a restart in the middle forgets nothing.
            al.crash();
            al = fx.start();
        }
        let r = al.act(BOT, &s, "flaky.op", json!({"n": n})).await;
        assert_eq!(r.status, StatusCode::OK, "call {n} was not let through: {}", r.body);
        report(&al, r.body["id"].as_str().unwrap(), ok).await;
        let state = al.get("/v1/breakers", ALICE).await.body["breakers"][0]["state"].clone();
        assert_eq!(state, if n < 6 { "closed" } else { "open" }, "after call {n}");
    }
    let breaker = al.get("/v1/breakers", ALICE).await.body["breakers"][0].clone();
    assert_eq!(breaker["consecutive_failures"], 1, "{breaker}");
    assert_eq!(breaker["tripped_by"]["kind"], "error_rate", "{breaker}");
    assert_eq!(breaker["tripped_by"]["failures"], 4);
    assert_eq!(breaker["tripped_by"]["calls"], 7);

    let r = al.act(BOT, &s, "flaky.op", json!({"n": 7})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let reason = &r.body["decision"]["reasons"][0];
    assert_eq!(reason["rule"], "airlock.circuit_breaker");
    let msg = reason["msg"].as_str().unwrap();
    assert!(msg.contains("4 of 7 calls failed within 300s"), "{msg}");
    assert!(msg.contains("error rate of 57.1% at or over its limit of 50%"), "{msg}");
    assert!(msg.contains("HTTP 503"), "{msg}");

    // The trip is journaled with its cause.
    let (code, out, err) = run(&["audit", "export", "--since", "1h", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let opened: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "breaker.changed" && e["payload"]["state"] == "open")
        .collect();
    assert_eq!(opened.len(), 1, "{out}");
    assert_eq!(opened[0]["payload"]["tripped_by"]["kind"], "error_rate", "{}", opened[0]);

    // Still open, for the same reason, after a restart.
    al.crash();
    let al = fx.start();
    let r = al.act(BOT, &s, "flaky.op", json!({"n": 8})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.circuit_breaker", "{}", r.body);
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("4 of 7 calls failed"), "{}", r.body);
}

#[tokio::test]
async fn a_loop_of_identical_calls_pauses_the_session_until_a_human_resumes_it() {
    let fx = fixture("loop_repeats = 3");
    let al = fx.start();
    let s = al.session(BOT).await;
    for _ in 0..2 {
        let r = al.act(BOT, &s, "inventory.list", json!({"region": "eu"})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = al.act(BOT, &s, "inventory.list", json!({"region": "eu"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.loop");
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["status"], "paused");
    assert!(session.body["status_reason"].as_str().unwrap().contains("airlock.loop"));

    // Everything is denied while paused, with the reason.
    let r = al.act(BOT, &s, "ticket.create", json!({"other": true})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.session_state");
    assert!(
        r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("identical")
            || r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("same call")
    );

    // What needs a human, from the command line.
    let (code, out, err) = run(&["sessions", "list", "--paused", "--server", &al.url], &[("AIRLOCK_TOKEN", ALICE)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&s) && out.contains("paused"), "{out}");

    // Still paused after a restart.
    al.crash();
    let al = fx.start();
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["status"], "paused");

    al.post(&format!("/v1/sessions/{s}/resume"), VIEWER, json!({"comment": "ok"}))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "role");
    al.post(&format!("/v1/sessions/{s}/resume"), ALICE, json!({}))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "comment");
    let (code, out, err) = run(
        &["sessions", "resume", &s, "-m", "fixed the inventory cache", "--server", &al.url],
        &[("AIRLOCK_TOKEN", ALICE)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("active"), "{out}");
    let after = al.act(BOT, &s, "inventory.list", json!({"region": "eu"})).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    let events = al.get(&format!("/v1/sessions/{s}/events"), ALICE).await;
    let changes: Vec<_> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session.status_changed")
        .map(|e| e["payload"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes, vec!["paused", "active"]);
}

#[tokio::test]
async fn streaks_of_denials_or_failures_pause_the_session() {
    let fx = fixture("max_consecutive_denials = 2\nmax_consecutive_failures = 2\nbreaker_failures = 0");
    let al = fx.start();
    let s = al.session(BOT).await;
    al.act(BOT, &s, "db.drop", json!({"db": "a"})).await;
    al.act(BOT, &s, "db.drop", json!({"db": "b"})).await;
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["status"], "paused", "{}", session.body);
    assert!(session.body["status_reason"].as_str().unwrap().contains("airlock.consecutive_denials"));

    let s = al.session(BOT).await;
    for n in 0..2 {
        let r = al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
        report(&al, r.body["id"].as_str().unwrap(), false).await;
    }
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["status"], "paused");
    assert!(session.body["status_reason"].as_str().unwrap().contains("airlock.consecutive_failures"));
    assert_eq!(session.body["failures"], 2);
}

#[tokio::test]
async fn a_cost_reported_with_the_result_counts_when_the_host_set_no_price() {
    let policy = format!(
        "{POLICY}\ndeny contains {{\"rule\": \"SP1\", \"msg\": \"reports wait for cheaper sessions\"}} if {{\n    input.action.tool == \"report.build\"\n    input.session.spent_usd >= 0.75\n}}\n"
    );
    let fx = Fixture::with_extra(
        &policy,
        "\n[[tools]]\nname = \"ticket.create\"\ncost_usd = 1.0\n\n[guards]\nbudget_usd_per_day = 2.0\n",
    );
    let al = fx.start();
    let s = al.session(BOT).await;

    // An unpriced call: its cost is only known once it has run.
    let llm = al.act(BOT, &s, "llm.complete", json!({"prompt": "summarise"})).await;
    assert_eq!(llm.status, StatusCode::OK, "{}", llm.body);
    assert!(llm.body["decision"].get("cost_usd").is_none(), "{}", llm.body);
    let id = llm.body["id"].as_str().unwrap();
    let path = format!("/v1/actions/{id}/result");
    al.post(&path, BOT, json!({"ok": true, "cost_usd": -1}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "cost_usd");
    al.post(&path, BOT, json!({"ok": true, "cost_usd": "cheap"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "cost_usd");
    assert_eq!(
        al.get(&format!("/v1/actions/{id}"), BOT).await.body["status"],
        "executing",
        "a refused report recorded something"
    );
    let r = al.post(&path, BOT, json!({"ok": true, "output": {"tokens": 1200}, "cost_usd": 0.75})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["result"]["cost_usd"], 0.75);
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"], 0.75);

    // Policy sees it in `input.session.spent_usd`.
    let r = al.act(BOT, &s, "report.build", json!({})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "SP1", "{}", r.body);

    // A priced call: the catalog's price counts, the reported cost is recorded but not added.
    let ticket = al.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(ticket.status, StatusCode::OK, "{}", ticket.body);
    let r = al
        .post(
            &format!("/v1/actions/{}/result", ticket.body["id"].as_str().unwrap()),
            BOT,
            json!({"ok": true, "cost_usd": 5.0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["result"]["cost_usd"], 5.0);
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"], 1.75);

    // The budget counts it on the next action: 1.75 spent + 1.00 is over 2.00.
    let r = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget");
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("spent $1.75 today"), "{}", r.body);

    // Journaled with the result, with what was counted.
    let events = al.get(&format!("/v1/sessions/{s}/events"), ALICE).await;
    let completed: Vec<&serde_json::Value> =
        events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "action.completed").collect();
    assert_eq!(completed.len(), 2);
    assert_eq!(completed[0]["payload"]["result"]["cost_usd"], 0.75);
    assert_eq!(completed[0]["payload"]["cost_counted_usd"], 0.75);
    assert_eq!(completed[1]["payload"]["cost_counted_usd"], 0.0);
    let timeline = al.get(&format!("/v1/sessions/{s}/timeline"), ALICE).await;
    let summaries: Vec<&str> = timeline.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "action.completed")
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert_eq!(
        summaries,
        vec![
            "succeeded (reported cost $0.75, counted)",
            "succeeded (reported cost $5.00, not counted: the action was priced)"
        ]
    );

    // The day's spend is recomputed from the journal after a restart, reported cost included.
    al.crash();
    let al = fx.start();
    let s2 = al.session(BOT).await;
    let r = al.act(BOT, &s2, "ticket.create", json!({"n": 3})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget", "{}", r.body);
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("spent $1.75 today"), "{}", r.body);
}

#[tokio::test]
async fn a_cost_an_upstream_reports_in_its_result_counts_toward_the_session() {
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "\n[[upstreams]]\nname = \"billing\"\ncommand = \"python3\"\nargs = [\"{}\"]\n",
            fake_mcp_server().display()
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("billing").await;
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "billing__bill", json!({"cost": 0.4})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["result"]["reported_by"], "upstream");
    assert_eq!(r.body["result"]["cost_usd"], 0.4);
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"], 0.4);
    // A cost that is not a non-negative number is ignored: the call happened either way.
    let r = al.act(BOT, &s, "billing__bill", json!({"cost": "cheap"})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert!(r.body["result"].get("cost_usd").is_none(), "{}", r.body);
    let r = al.act(BOT, &s, "billing__bill", json!({"cost": -2})).await;
    assert!(r.body["result"].get("cost_usd").is_none(), "{}", r.body);
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"], 0.4);
    // A result with no content at all is still the tool's answer, and its cost still counts.
    let r = al.act(BOT, &s, "billing__quiet", json!({})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    let r = al.act(BOT, &s, "billing__quiet", json!({"cost": 0.1})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["result"]["cost_usd"], 0.1, "{}", r.body);
    let spent = al.get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"].as_f64().unwrap();
    assert!((spent - 0.5).abs() < 1e-9, "{spent}");
}
