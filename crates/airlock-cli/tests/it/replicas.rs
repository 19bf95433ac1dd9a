//! Several replicas on one PostgreSQL database, each the real binary on its own port, any of
//! them answering any request: a vote on one wakes the agent waiting on another, a kill switch
//! engaged on one denies on the others, a budget is never exceeded across them, and one can be
//! killed under load without losing an acknowledged action, running an approved one twice or
//! breaking the journal; its periodic work moves to a survivor. Each test has a database of its
//! own (`airlock-test-postgres`; `tests/postgres/install.sh` provides the server).

use std::time::{Duration, Instant};

use crate::common::*;
use airlock_test_postgres::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The `[storage]` table of a config whose journal is in the database `AIRLOCK_DATABASE_URL` names.
const STORAGE: &str =
    "\n[storage]\nbackend = \"postgres\"\nurl = \"env:AIRLOCK_DATABASE_URL\"\nconnect_timeout_seconds = 2\n";

fn env(db: &TestDatabase) -> [(&str, &str); 1] {
    [("AIRLOCK_DATABASE_URL", db.url())]
}

/// Three replicas of one installation (one config, one `data_dir` with its keys) on `db`. The
/// first starts alone, so that the keys it creates are the ones the others load.
fn replicas(fx: &Fixture, db: &TestDatabase) -> Vec<Airlock> {
    (0..3)
        .map(|_| {
            Airlock::start_with_env(&fx.config(), &env(db)).unwrap_or_else(|e| panic!("a replica did not start: {e}"))
        })
        .collect()
}

/// `airlock audit verify --json` on the fixture's journal: exit code and report.
fn verify(fx: &Fixture, db: &TestDatabase) -> (i32, Value) {
    let config = fx.config();
    let (code, out, err) = run(&["audit", "verify", "--json", "--config", config.to_str().unwrap()], &env(db));
    (code, serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}")))
}

#[tokio::test]
async fn a_vote_on_one_replica_wakes_the_agent_waiting_on_another() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let r = replicas(&fx, &db);
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    let s = a.session(BOT).await;
    let held = a.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let (action, approval) = (held.body["id"].as_str().unwrap(), held.body["approval"]["id"].as_str().unwrap());

    // The agent long-polls on C; a human approves on B.
    let wait = {
        let url = format!("{}/v1/actions/{action}?wait=20", c.url);
        tokio::spawn(async move {
            let r = client().get(url).bearer_auth(BOT).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap(), Instant::now())
        })
    };
    // Let the long-poll start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!wait.is_finished(), "the long-poll returned before the vote");
    let vote = b.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(vote.status, StatusCode::OK, "{}", vote.body);
    let voted = Instant::now();
    let (status, body, woken) = tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    assert!(woken.duration_since(voted) < Duration::from_secs(1), "woken {:?} after the vote", woken - voted);
}

#[tokio::test]
async fn a_kill_switch_engaged_on_one_replica_denies_on_another_within_a_second() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let r = replicas(&fx, &db);
    let (a, c) = (&r[0], &r[2]);
    let s = c.session(BOT).await;
    assert_eq!(c.act(BOT, &s, "ticket.create", json!({"n": 0})).await.status, StatusCode::OK);

    let kill =
        a.post("/v1/kill", ADMIN, json!({"scope": "tool", "target": "ticket.create", "reason": "incident 7"})).await;
    assert_eq!(kill.status, StatusCode::CREATED, "{}", kill.body);
    let engaged = Instant::now();
    let mut n = 1;
    let denied = loop {
        let r = c.act(BOT, &s, "ticket.create", json!({"n": n})).await;
        n += 1;
        if r.status == StatusCode::FORBIDDEN || engaged.elapsed() > Duration::from_secs(5) {
            break r;
        }
    };
    let after = engaged.elapsed();
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch", "{}", denied.body);
    assert!(after < Duration::from_secs(1), "denied on the other replica only {after:?} after the kill switch");
    // And released on one, calls go through on the others again.
    let id = kill.body["id"].as_str().unwrap();
    assert_eq!(a.delete(&format!("/v1/kill/{id}"), ADMIN).await.status, StatusCode::OK);
    let again = poll(
        Duration::from_secs(3),
        || c.act(BOT, &s, "ticket.create", json!({"n": 1000})),
        |r| r.status == StatusCode::OK,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

#[tokio::test]
async fn a_budget_shared_by_the_replicas_is_never_exceeded() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "\n[[tools]]\nname = \"ticket.create\"\ncost_usd = 1.0\n\n[guards]\nbudget_usd_per_day = 10.0\n{STORAGE}"
        ),
    );
    let r = replicas(&fx, &db);
    // A call held for approval on one replica reserves its price ($1.50) on all of them.
    let s = r[0].session(BOT).await;
    let held = r[0].act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    // Two sessions of the agent, each called on all three replicas at once.
    let sessions = [r[1].session(BOT).await, r[2].session(BOT).await];
    let calls: Vec<_> = (0..48)
        .map(|i| {
            let url = format!("{}/v1/sessions/{}/actions", r[i % 3].url, sessions[i % 2]);
            tokio::spawn(async move {
                let body = json!({"tool": "ticket.create", "arguments": {"n": i}, "justification": "test"});
                let reply = client().post(url).bearer_auth(BOT).json(&body).send().await.unwrap();
                let status = reply.status();
                (status, reply.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap());
    }
    let allowed = replies.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    for (status, body) in replies.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
        // Over budget, or paused after ten denials in a row over budget.
        let rule = body["decision"]["reasons"][0]["rule"].as_str().unwrap_or_default();
        assert!(["airlock.budget", "airlock.session_state"].contains(&rule), "{body}");
    }
    assert_eq!(allowed, 8, "a budget of $10 with $1.50 reserved allowed {allowed} calls at $1");
    // The held call still fits, approved on another replica than the one that held it.
    let approval = held.body["approval"]["id"].as_str().unwrap();
    let vote = r[1].post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(vote.status, StatusCode::OK, "{}", vote.body);
    assert_eq!(vote.body["status"], "approved", "{}", vote.body);
    let mut spent = 0.0;
    for s in sessions.iter().chain([&s]) {
        spent += r[2].get(&format!("/v1/sessions/{s}"), BOT).await.body["spent_usd"].as_f64().unwrap();
    }
    assert!((spent - 9.5).abs() < 1e-9, "spent {spent}");
}

/// What one agent's worker acknowledged: the ids of its actions and, of those approved, which
/// one it completed.
#[derive(Default)]
struct Acknowledged {
    actions: Vec<(String, String)>,
    completed: Vec<String>,
}

/// One agent calling the replicas in turn (skipping `avoid` once it is set) until `stop`:
/// allowed calls, and calls held for approval that a human approves on the next replica and
/// whose result the agent reports on every replica at once (only one report may win).
async fn worker(
    urls: Vec<String>,
    token: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
    avoid: tokio::sync::watch::Receiver<Option<usize>>,
) -> Acknowledged {
    let http = client();
    let mut ack = Acknowledged::default();
    let mut i = 0usize;
    let pick = |i: usize| {
        let avoid = *avoid.borrow();
        let mut k = i % urls.len();
        if Some(k) == avoid {
            k = (k + 1) % urls.len();
        }
        k
    };
    let session = loop {
        let k = pick(i);
        i += 1;
        if let Ok(r) =
            http.post(format!("{}/v1/sessions", urls[k])).bearer_auth(token).json(&json!({"task": "load"})).send().await
            && r.status() == StatusCode::CREATED
        {
            break r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        }
    };
    while !*stop.borrow() {
        let k = pick(i);
        i += 1;
        let (tool, arguments) =
            if i.is_multiple_of(4) { ("deploy.run", json!({"n": i})) } else { ("ticket.create", json!({"n": i})) };
        let body = json!({"tool": tool, "arguments": arguments, "justification": "load"});
        let Ok(reply) =
            http.post(format!("{}/v1/sessions/{session}/actions", urls[k])).bearer_auth(token).json(&body).send().await
        else {
            continue;
        };
        let status = reply.status();
        let Ok(view) = reply.json::<Value>().await else { continue };
        if !matches!(status, StatusCode::OK | StatusCode::ACCEPTED | StatusCode::FORBIDDEN) {
            continue;
        }
        let id = view["id"].as_str().unwrap().to_string();
        ack.actions.push((id.clone(), session.clone()));
        if status != StatusCode::ACCEPTED {
            continue;
        }
        // Held: approved on the next replica, then reported on all of them at once.
        let approval = view["approval"]["id"].as_str().unwrap().to_string();
        let next = pick(i);
        let voted = http
            .post(format!("{}/v1/approvals/{approval}/approve", urls[next]))
            .bearer_auth(ALICE)
            .json(&json!({"comment": "ok"}))
            .send()
            .await;
        if !voted.is_ok_and(|r| r.status() == StatusCode::OK) {
            continue;
        }
        let reports: Vec<_> = urls
            .iter()
            .map(|u| {
                let report =
                    http.post(format!("{u}/v1/actions/{id}/result")).bearer_auth(token).json(&json!({"ok": true}));
                tokio::spawn(async move { report.send().await.is_ok_and(|r| r.status() == StatusCode::OK) })
            })
            .collect();
        let mut won = 0;
        for report in reports {
            won += usize::from(report.await.unwrap());
        }
        assert!(won <= 1, "the result of approved action {id} was recorded {won} times");
        if won == 1 {
            ack.completed.push(id);
        }
    }
    ack
}

#[tokio::test]
async fn a_replica_killed_under_load_loses_nothing_and_its_periodic_work_moves() {
    let db = TestDatabase::create().await;
    let policy = format!(
        "{POLICY}\nrequire_approval contains {{\"rule\": \"DP1\", \"msg\": \"deploys need an SRE\", \"groups\": [\"sre\"]}} if input.action.tool == \"deploy.run\"\n\
         require_approval contains {{\"rule\": \"CF1\", \"msg\": \"flushes expire fast\", \"groups\": [\"sre\"], \"ttl_seconds\": 1}} if input.action.tool == \"cache.flush\"\n"
    );
    let fx = Fixture::with_extra(&policy, STORAGE);
    let r = replicas(&fx, &db);
    let urls: Vec<String> = r.iter().map(|a| a.url.clone()).collect();
    // The leader does the periodic work; it is the one killed.
    let leads = |h: &Reply| h.body["leader"] == true;
    let mut leader = None;
    for _ in 0..50 {
        for (k, a) in r.iter().enumerate() {
            if leads(&a.request(reqwest::Method::GET, "/healthz", None, None).await) {
                leader = Some(k);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.expect("no replica leads");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (avoid_tx, avoid) = tokio::sync::watch::channel(None);
    let workers: Vec<_> = [BOT, CHANGE_BOT, BOT, CHANGE_BOT]
        .into_iter()
        .map(|token| tokio::spawn(worker(urls.clone(), token, stopped.clone(), avoid.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut r = r;
    let killed = r.remove(leader);
    killed.crash();
    avoid_tx.send_replace(Some(leader));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send_replace(true);
    let mut acknowledged = Acknowledged::default();
    for w in workers {
        let ack = w.await.unwrap();
        acknowledged.actions.extend(ack.actions);
        acknowledged.completed.extend(ack.completed);
    }
    assert!(acknowledged.actions.len() >= 20, "only {} actions under load", acknowledged.actions.len());
    assert!(!acknowledged.completed.is_empty(), "no approved action was run");

    // Every acknowledged action is in the journal, on every survivor.
    let survivor = &r[0];
    for (id, _) in &acknowledged.actions {
        let a = survivor.get(&format!("/v1/actions/{id}"), ADMIN).await;
        assert_eq!(a.status, StatusCode::OK, "acknowledged action {id} is gone: {}", a.body);
    }
    // Each approved action ran once: one completion in its session's journal.
    for id in &acknowledged.completed {
        let (_, session) = acknowledged.actions.iter().find(|(a, _)| a == id).unwrap();
        let events = survivor.get(&format!("/v1/sessions/{session}/events"), ADMIN).await;
        let completions = events.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "action.completed" && e["payload"]["action_id"] == id.as_str())
            .count();
        assert_eq!(completions, 1, "approved action {id} completed {completions} times");
    }

    // The periodic work moved: a survivor leads, and expires what is due.
    let mut leads_now = false;
    for _ in 0..50 {
        for a in &r {
            leads_now |= leads(&a.request(reqwest::Method::GET, "/healthz", None, None).await);
        }
        if leads_now {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leads_now, "no survivor took over the periodic work");
    let s = survivor.session(BOT).await;
    let held = survivor.act(BOT, &s, "cache.flush", json!({})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let id = held.body["id"].as_str().unwrap();
    let path = format!("/v1/actions/{id}?wait=2");
    let expired = poll(Duration::from_secs(10), || survivor.get(&path, BOT), |a| a.body["status"] == "expired").await;
    assert_eq!(expired.body["status"], "expired", "{}", expired.body);
    for a in r {
        a.stop();
    }
    let (code, report) = verify(&fx, &db);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
}

/// The active policy revision a replica reports.
async fn revision(a: &Airlock) -> String {
    a.request(reqwest::Method::GET, "/healthz", None, None).await.body["policy_revision"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_policy_reload_and_a_rollback_on_one_replica_reach_the_others() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let r = replicas(&fx, &db);
    let first = revision(&r[0]).await;
    let s = r[2].session(BOT).await;
    assert_eq!(r[2].act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);

    // A new rule, reloaded on A, decides on C.
    let stricter = format!(
        "{POLICY}\ndeny contains {{\"rule\": \"TK1\", \"msg\": \"no tickets today\"}} if input.action.tool == \"ticket.create\"\n"
    );
    std::fs::write(fx.dir.path().join("policies/main.rego"), stricter).unwrap();
    let reload = r[0].post("/v1/policy/reload", ADMIN, json!({})).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    let second = reload.body["active"].as_str().unwrap().to_string();
    let reloaded = Instant::now();
    let on_c = poll(Duration::from_secs(3), || revision(&r[2]), |rev| *rev == second).await;
    assert_eq!(on_c, second);
    assert!(reloaded.elapsed() < Duration::from_secs(1), "the reload reached C after {:?}", reloaded.elapsed());
    let denied = r[2].act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(denied.body["decision"]["reasons"][0]["rule"], "TK1", "{}", denied.body);

    // Rolled back on B, every replica decides with the first revision again.
    let rollback = r[1].post("/v1/policy/rollback", ADMIN, json!({})).await;
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.body);
    for a in &r {
        assert_eq!(poll(Duration::from_secs(3), || revision(a), |rev| *rev == first).await, first);
    }
    assert_eq!(r[0].act(BOT, &s, "ticket.create", json!({"n": 3})).await.status, StatusCode::OK);
}

/// A candidate loaded as a canary on A decides on C; discarded on B, it stops deciding on C.
#[tokio::test]
async fn a_candidate_discarded_on_one_replica_stops_deciding_on_the_others() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let r = replicas(&fx, &db);
    let dir = fx.dir.path().join("candidate");
    std::fs::create_dir_all(&dir).unwrap();
    let freeze = format!(
        "{POLICY}\ndeny contains {{\"rule\": \"FREEZE\", \"msg\": \"frozen\"}} if input.action.tool == \"ticket.create\"\n"
    );
    std::fs::write(dir.join("main.rego"), freeze).unwrap();
    let loaded = r[0]
        .post("/v1/policy/candidate", ADMIN, json!({"dir": dir.display().to_string(), "canary_percent": 100}))
        .await;
    assert_eq!(loaded.status, StatusCode::OK, "{}", loaded.body);
    let on_c = poll(Duration::from_secs(3), || policy_candidate(&r[2]), |c| !c.is_null()).await;
    assert_eq!(on_c["canary_percent"], 100, "{on_c}");
    let s = r[2].session(BOT).await;
    let frozen = r[2].act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(frozen.body["decision"]["reasons"][0]["rule"], "FREEZE", "{}", frozen.body);

    let discarded = r[1].delete("/v1/policy/candidate", ADMIN).await;
    assert_eq!(discarded.status, StatusCode::OK, "{}", discarded.body);
    let at = Instant::now();
    assert_eq!(poll(Duration::from_secs(3), || policy_candidate(&r[2]), |c| c.is_null()).await, Value::Null);
    assert!(at.elapsed() < Duration::from_secs(1), "the discard reached C after {:?}", at.elapsed());
    assert_eq!(r[2].act(BOT, &s, "ticket.create", json!({"n": 2})).await.status, StatusCode::OK);
}

/// A fake network element between one replica and PostgreSQL: forwards TCP connections until
/// it is cut, which drops every connection through it and refuses new ones, until restored.
struct Cable {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cable {
    async fn lay(target: String) -> Cable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = watch.clone();
                if *cut.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Cable { addr, cut, task }
    }

    fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
}

// The cable runs on the test's runtime while starting a replica blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_the_database_answers_503_and_recovers_by_itself() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    // `postgres://user@host:port/db`: replica A reaches host:port through the cable.
    let (scheme_user, rest) = db.url().split_once('@').unwrap();
    let (server, database) = rest.split_once('/').unwrap();
    let cable = Cable::lay(server.to_string()).await;
    let through = format!("{scheme_user}@{}/{database}", cable.addr);
    let b = Airlock::start_with_env(&fx.config(), &env(&db)).unwrap();
    let a = Airlock::start_with_env(&fx.config(), &[("AIRLOCK_DATABASE_URL", through.as_str())]).unwrap();
    let s = b.session(BOT).await;
    let before = a.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    cable.cut(true);
    let health = poll(
        Duration::from_secs(5),
        || a.request(reqwest::Method::GET, "/healthz", None, None),
        |h| h.status == StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{}", health.body);
    // A decides nothing meanwhile; B goes on, and engages a kill switch A has not heard of.
    for n in 2..5 {
        let r = a.act(BOT, &s, "ticket.create", json!({"n": n})).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    }
    let during = b.act(BOT, &s, "ticket.create", json!({"n": 5})).await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);
    let kill = b.post("/v1/kill", ADMIN, json!({"scope": "tool", "target": "ticket.create", "reason": "cut"})).await;
    assert_eq!(kill.status, StatusCode::CREATED, "{}", kill.body);

    // Restored: A answers again without a restart, with what was decided meanwhile.
    cable.cut(false);
    let health = poll(
        Duration::from_secs(15),
        || a.request(reqwest::Method::GET, "/healthz", None, None),
        |h| h.status == StatusCode::OK,
    )
    .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    for id in [&before.body["id"], &during.body["id"]] {
        let seen = a.get(&format!("/v1/actions/{}", id.as_str().unwrap()), BOT).await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    }
    let denied = a.act(BOT, &s, "ticket.create", json!({"n": 6})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch", "{}", denied.body);
    a.stop();
    b.stop();
    let (code, report) = verify(&fx, &db);
    assert_eq!(code, 0, "{report}");
}

#[tokio::test]
async fn a_totp_code_used_on_one_replica_is_refused_on_another() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let r = replicas(&fx, &db);
    let s = r[0].session(BOT).await;
    let mut approvals = Vec::new();
    for n in 0..2 {
        let held = r[0].act(BOT, &s, "firewall.open", json!({"port": 8000 + n})).await;
        assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
        approvals.push(held.body["approval"]["id"].as_str().unwrap().to_string());
    }
    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let first = r[1]
        .post(&format!("/v1/approvals/{}/approve", approvals[0]), CAROL, json!({"comment": "ok", "totp": code}))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // The same code, sent at once to another replica for another approval.
    let again = r[2]
        .post(&format!("/v1/approvals/{}/approve", approvals[1]), CAROL, json!({"comment": "ok", "totp": code}))
        .await;
    again.assert_problem(StatusCode::FORBIDDEN, "already used");
}

/// A replica killed while an upstream call it sent is out: a survivor marks the call `unknown`
/// (the upstream may have acted) without a restart, since the dead replica's lock is free.
#[tokio::test]
async fn a_call_in_flight_on_a_replica_that_dies_becomes_unknown_on_a_survivor() {
    let db = TestDatabase::create().await;
    let slow =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/fakes/slow_mcp_server.py");
    let upstream = format!(
        "[[upstreams]]\nname = \"slow\"\ncommand = \"python3\"\nargs = [\"{}\"]\ntimeout_ms = 60000\n",
        slow.display()
    );
    let fx = Fixture::with_extra(
        "package airlock\nimport rego.v1\ndeny contains \"never\" if false\n",
        &format!("{upstream}{STORAGE}"),
    );
    let mut all = replicas(&fx, &db);
    let (c, a) = (all.pop().unwrap(), all.pop().unwrap());
    a.wait_for_upstream("slow").await;
    let s = a.session(BOT).await;
    let (url, session) = (a.url.clone(), s.clone());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/sessions/{session}/actions"))
            .bearer_auth(BOT)
            .json(&json!({"tool": "slow__sleep", "arguments": {"seconds": 60}, "justification": "long"}))
            .send()
            .await
    });
    let out = poll(
        Duration::from_secs(15),
        || session_actions(&c, &s),
        |a| a.first().is_some_and(|a| a["status"] == "executing"),
    )
    .await;
    assert_eq!(out.first().map(|a| a["status"].clone()), Some(json!("executing")), "the call never went out: {out:?}");
    a.crash();
    assert!(call.await.unwrap().is_err(), "the crash ended the request");

    // The survivors take over; within the leader's sweep (every 10 s) the call is unknown.
    let out = poll(
        Duration::from_secs(30),
        || session_actions(&c, &s),
        |a| a.first().is_some_and(|a| a["status"] == "unknown"),
    )
    .await;
    let action = out.first().cloned().unwrap_or_default();
    assert_eq!(action["status"], "unknown", "{action}");
    assert_eq!(action["result"]["reported_by"], "airlock", "{action}");
    assert!(action["result"]["error"].as_str().unwrap_or_default().contains("in flight"), "{action}");
    drop(all);
    c.stop();
    let (code, report) = verify(&fx, &db);
    assert_eq!(code, 0, "{report}");
}

/// The actions of `session`, as `GET /v1/sessions/{id}` lists them.
async fn session_actions(al: &Airlock, session: &str) -> Vec<Value> {
    al.get(&format!("/v1/sessions/{session}"), BOT).await.body["actions"].as_array().cloned().unwrap_or_default()
}

/// The policy candidate `GET /v1/policy` shows (`null` when none).
async fn policy_candidate(al: &Airlock) -> Value {
    al.get("/v1/policy", ADMIN).await.body["candidate"].clone()
}
