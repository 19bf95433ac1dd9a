//! A stuck plan's webhook, on the engine's clock: a plan with `stuck_after_seconds` that makes
//! no step progress for that long is reported to a real HTTP receiver on 127.0.0.1 by the
//! webhook delivery task, once; the test moves the clock instead of waiting for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_server::engine::PlanProposal;

use super::start;

const POLICY: &str = r#"
package airlock
import rego.v1
require_approval contains {"rule": "PLAN1", "msg": "plans need an SRE", "groups": ["sre"]} if input.kind == "plan.propose"
"#;

type Received = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

async fn hook(
    axum::extract::State(received): axum::extract::State<Received>,
    headers: axum::http::HeaderMap,
    body: axum::Json<serde_json::Value>,
) -> axum::http::StatusCode {
    let event = headers.get("x-airlock-event").and_then(|v| v.to_str().ok()).map(str::to_string);
    received.lock().unwrap().push((event, body.0));
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test]
async fn a_stuck_plan_triggers_its_webhook_after_the_configured_time() {
    let received: Received = Arc::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let config = format!(
        r#"
[server]
data_dir = "data"
[policy]
dir = "."
[guards]
actions_per_minute = 0
[[agents]]
id = "bot"
token = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
owner = "platform"
tier = "autonomous"
[[humans]]
id = "alice"
token = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
groups = ["sre"]
roles = ["approve"]
[[notify]]
name = "pager"
url = "{url}"
events = ["plan.stuck"]
"#
    );
    let mut run = start("plan stuck webhook", &config, POLICY, &Default::default()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let deliveries = tokio::spawn(airlock_server::notify::run_deliveries(run.engine.clone(), stopped));

    let agent = run.agent(None);
    let session = run.session(Some("s1"), &agent).await;
    let proposal: PlanProposal = serde_json::from_value(serde_json::json!({
        "goal": "rotate the certificates",
        "stuck_after_seconds": 900,
        "steps": [{"id": "issue", "tool": "pki.issue"}, {"id": "deploy", "tool": "pki.deploy"}]
    }))
    .unwrap();
    let plan = run.engine.propose_plan(&agent, &session, None, proposal).await.unwrap();
    run.approve_plan(&plan, "alice").await;

    // Just before its time nothing is stuck and nothing is queued.
    run.clock.advance(chrono::Duration::seconds(899));
    assert_eq!(run.engine.check_plans().await.unwrap(), 0);
    let view = run.engine.plan(&session, &plan.id, None).await.unwrap();
    assert!(view.stuck.is_none(), "{:?}", view.stuck);

    // Past it, the plan is stuck: the webhook arrives, and the plan says so.
    run.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(run.engine.check_plans().await.unwrap(), 1);
    let view = run.engine.plan(&session, &plan.id, None).await.unwrap();
    let stuck = view.stuck.expect("the plan shows as stuck");
    assert!(stuck.reported);
    assert_eq!((stuck.at - stuck.since).num_seconds(), 900);
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = received.lock().unwrap().clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let (event, body) = &delivered[0];
    assert_eq!(event.as_deref(), Some("plan.stuck"));
    assert_eq!(body["event"], "plan.stuck");
    assert_eq!(body["plan"]["id"], plan.id.as_str());
    assert_eq!(body["plan"]["goal"], "rotate the certificates");
    assert_eq!(body["plan"]["stuck"]["since"], serde_json::to_value(stuck.since).unwrap());
    assert_eq!(body["session"]["id"], session.as_str());
    assert_eq!(body["agent"]["id"], "bot");

    // Still stuck later: no second notification for the same stretch.
    run.clock.advance(chrono::Duration::seconds(3600));
    assert_eq!(run.engine.check_plans().await.unwrap(), 0);
    let far = run.engine.now() + chrono::Duration::days(3650);
    let outbox = run.store.notifications_due(far, 100).await.unwrap();
    assert!(outbox.is_empty(), "nothing more is queued: {outbox:?}");
    assert_eq!(received.lock().unwrap().len(), 1);

    stop.send(true).unwrap();
    deliveries.await.unwrap();
    server.abort();
}
