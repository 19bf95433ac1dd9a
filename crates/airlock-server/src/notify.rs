//! Webhook notifications from a durable outbox.
//!
//! A notification is written to the outbox in the same transaction as the event that caused it
//! (an approval requested, resolved or expired), so a crash loses none. A separate delivery task
//! POSTs due notifications and retries failures with exponential backoff; when airlock starts,
//! whatever is still undelivered is tried at once. Delivery never runs on the decision path: a
//! slow or dead webhook can't delay a decision.
//!
//! Deliveries are signed the Standard Webhooks way when the endpoint has a secret: the signature
//! covers the delivery id and the time of the attempt as well as the body, so a receiver that
//! checks all three (docs/configuration.md shows how) rejects a captured delivery replayed later
//! or with a changed body. Arguments in bodies have policy `redact` paths applied, as exported
//! traces do: a webhook receiver is outside airlock.

use std::time::Duration;

use airlock_core::{Action, Approval, redact};
use airlock_store::{Commit, DeliveryUpdate, NewNotification, Notification};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::{Config, NotifyConfig};
use crate::engine::Engine;

/// Standard Webhooks: the delivery id, the same on every retry of one notification.
pub const ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: when this attempt was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Header carrying the event name.
pub const EVENT_HEADER: &str = "x-airlock-event";
/// Header carrying the delivery id (the same as `webhook-id`).
pub const DELIVERY_HEADER: &str = "x-airlock-delivery";

/// Attempts before a notification is given up (about 2 hours of retries).
const MAX_ATTEMPTS: u32 = 30;

/// The `webhook-signature` value of one delivery attempt: `v1,` and the base64 of the
/// HMAC-SHA256, under `key`, of `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case can't happen, and signs nothing if it did.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Adds one notification per subscribed endpoint to `commit`.
pub fn enqueue(
    config: &Config,
    commit: &mut Commit,
    event: &str,
    approval: &Approval,
    action: &Action,
    now: DateTime<Utc>,
) {
    let subscribed: Vec<&NotifyConfig> = config.notify.iter().filter(|n| n.events.iter().any(|e| e == event)).collect();
    if subscribed.is_empty() {
        return;
    }
    let agent = config.agents.iter().find(|a| a.agent.id == action.agent_id);
    let base = config.server.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen));
    let body = json!({
        "event": event,
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "approval": {
            "id": approval.id,
            "status": approval.status,
            "requirements": approval.requirements,
            "votes": approval.votes,
            "created_at": approval.created_at,
            "expires_at": approval.expires_at,
        },
        "action": {
            "id": action.id,
            "session_id": action.session_id,
            "tool": action.tool,
            "upstream": action.upstream,
            // The receiver is outside airlock: what policy keeps out of traces stays out of here.
            "arguments": redact::redact(&action.arguments, redact::Root::Arguments, &action.decision.redact),
            "justification": action.justification,
            "status": action.status,
            "decision": action.decision,
        },
        "agent": {
            "id": action.agent_id,
            "owner": agent.map(|a| a.agent.owner.clone()),
            "oncall": agent.and_then(|a| a.agent.oncall.clone()),
        },
        "links": {
            "ui": format!("{base}/ui/approvals/{}", approval.id),
            "api": format!("{base}/v1/approvals/{}", approval.id),
        },
    });
    for n in subscribed {
        commit.outbox.push(NewNotification {
            endpoint: n.name.clone(),
            event: event.to_string(),
            body: body.clone(),
            at: now,
        });
    }
}

/// Adds `session.paused` notifications (the escalation to the agent's owner and on-call).
pub fn enqueue_session(
    config: &Config,
    commit: &mut Commit,
    event: &str,
    session: &airlock_core::Session,
    rule: &str,
    reason: &str,
    now: DateTime<Utc>,
) {
    let agent = config.agents.iter().find(|a| a.agent.id == session.agent_id);
    let base = config.server.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen));
    let body = json!({
        "event": event,
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "session": {"id": session.id, "task": session.task, "status": session.status, "actions": session.actions},
        "rule": rule,
        "reason": reason,
        "agent": {
            "id": session.agent_id,
            "owner": agent.map(|a| a.agent.owner.clone()),
            "oncall": agent.and_then(|a| a.agent.oncall.clone()),
        },
        "links": {"api": format!("{base}/v1/sessions/{}", session.id), "resume": format!("{base}/v1/sessions/{}/resume", session.id)},
    });
    push(config, commit, event, body, now);
}

/// Adds `plan.stuck` notifications: `plan` is the plan as the API shows it.
pub fn enqueue_plan(
    config: &Config,
    commit: &mut Commit,
    event: &str,
    session: &airlock_core::Session,
    plan: serde_json::Value,
    now: DateTime<Utc>,
) {
    let agent = config.agents.iter().find(|a| a.agent.id == session.agent_id);
    let base = config.server.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen));
    let plan_id = plan.get("id").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let body = json!({
        "event": event,
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "session": {"id": session.id, "task": session.task, "status": session.status, "actions": session.actions},
        "plan": plan,
        "agent": {
            "id": session.agent_id,
            "owner": agent.map(|a| a.agent.owner.clone()),
            "oncall": agent.and_then(|a| a.agent.oncall.clone()),
        },
        "links": {"api": format!("{base}/v1/sessions/{}/plans/{plan_id}", session.id)},
    });
    push(config, commit, event, body, now);
}

/// Adds `breaker.opened` notifications.
pub fn enqueue_breaker(
    config: &Config,
    commit: &mut Commit,
    breaker: &airlock_core::limits::Breaker,
    agent_id: &str,
    now: DateTime<Utc>,
) {
    let agent = config.agents.iter().find(|a| a.agent.id == agent_id);
    let body = json!({
        "event": "breaker.opened",
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "breaker": breaker,
        "agent": {
            "id": agent_id,
            "owner": agent.map(|a| a.agent.owner.clone()),
            "oncall": agent.and_then(|a| a.agent.oncall.clone()),
        },
    });
    push(config, commit, "breaker.opened", body, now);
}

fn push(config: &Config, commit: &mut Commit, event: &str, body: serde_json::Value, now: DateTime<Utc>) {
    for n in config.notify.iter().filter(|n| n.events.iter().any(|e| e == event)) {
        commit.outbox.push(NewNotification {
            endpoint: n.name.clone(),
            event: event.to_string(),
            body: body.clone(),
            at: now,
        });
    }
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(10)).min(300))
}

/// Why one delivery attempt of a notification failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The request did not get an answer: no connection, a TLS failure or the endpoint's time-out.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The endpoint's URL.
        url: String,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// The endpoint answered with a status other than 2xx.
    #[error("{url} answered {status}")]
    Refused {
        /// The endpoint's URL.
        url: String,
        /// The status it answered with.
        status: reqwest::StatusCode,
    },
}

async fn deliver(http: &reqwest::Client, endpoint: &NotifyConfig, n: &Notification) -> Result<(), DeliveryError> {
    let id = n.id.to_string();
    // Each attempt is signed at its own time, so a retry is never older than the receiver's
    // tolerance however long the endpoint was down.
    let timestamp = Utc::now().timestamp();
    let mut req = http
        .post(&endpoint.url)
        .timeout(endpoint.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .header(EVENT_HEADER, n.event.as_str())
        .header(DELIVERY_HEADER, id.as_str())
        .header(ID_HEADER, id.as_str())
        .header(TIMESTAMP_HEADER, timestamp.to_string());
    if let Some(secret) = &endpoint.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret.key(), &id, timestamp, n.body.as_bytes()));
    }
    let resp = req
        .body(n.body.clone())
        .send()
        .await
        .map_err(|source| DeliveryError::Unreachable { url: endpoint.url.clone(), source })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Refused { url: endpoint.url.clone(), status: resp.status() })
    }
}

/// Delivers due notifications until `shutdown` changes.
pub async fn run_deliveries(engine: Engine, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if engine.config().notify.is_empty() {
        return;
    }
    airlock_mcp::ensure_crypto_provider();
    let http = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; notifications stay in the outbox");
            return;
        }
    };
    // Notifications left undelivered from before this start are tried at once, not when their
    // backoff says: the backoff spares a live endpoint from being hammered, and a restart is an
    // operator's new attempt (often after fixing the endpoint or the network).
    let retry = Commit { deliveries: vec![DeliveryUpdate::RetryAll { at: Utc::now() }], ..Default::default() };
    if let Err(e) = engine.commit(retry).await {
        tracing::warn!(error = %e, "could not make undelivered notifications due; they wait for their next retry");
    }
    let wake = engine.outbox_wake();
    loop {
        // With replicas, one delivers: the leader.
        if !engine.is_leader() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let due = match engine.store().notifications_due(Utc::now(), 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading the outbox failed");
                Vec::new()
            }
        };
        if !due.is_empty() {
            let attempts = due.iter().map(|n| async {
                let Some(endpoint) = engine.config().notify.iter().find(|e| e.name == n.endpoint) else {
                    return DeliveryUpdate::Failed {
                        id: n.id,
                        error: format!("endpoint `{}` is no longer configured", n.endpoint),
                        next_at: None,
                    };
                };
                match deliver(&http, endpoint, n).await {
                    Ok(()) => DeliveryUpdate::Delivered { id: n.id, at: Utc::now() },
                    Err(error) => {
                        let attempts = n.attempts + 1;
                        let next_at = (attempts < MAX_ATTEMPTS).then(|| {
                            Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default()
                        });
                        if next_at.is_none() {
                            tracing::error!(endpoint = %n.endpoint, delivery = n.id, %error, "giving up on a notification");
                        } else {
                            tracing::warn!(endpoint = %n.endpoint, delivery = n.id, %error, attempts, "notification failed; will retry");
                        }
                        DeliveryUpdate::Failed { id: n.id, error: error.to_string(), next_at }
                    }
                }
            });
            let updates = futures::future::join_all(attempts).await;
            let commit = Commit { deliveries: updates, ..Default::default() };
            if let Err(e) = engine.commit(commit).await {
                tracing::warn!(error = %e, "recording deliveries failed");
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // The vector the Standard Webhooks reference libraries test against: a receiver using
        // one of them accepts what airlock sends.
        let secret = crate::config::WebhookSecret::from_configured("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(secret.key(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Any other secret is used as its bytes.
        let plain = crate::config::WebhookSecret::from_configured("hook-secret").unwrap();
        assert_eq!(plain.key(), b"hook-secret");
        assert!(crate::config::WebhookSecret::from_configured("whsec_not base64!").is_err());
        assert_eq!(format!("{plain:?}"), "WebhookSecret(..)");
    }

    #[test]
    fn a_refused_delivery_names_the_endpoint_and_status() {
        let e = DeliveryError::Refused {
            url: "https://hooks.example/airlock".into(),
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
        };
        assert_eq!(e.to_string(), "https://hooks.example/airlock answered 503 Service Unavailable");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(300));
    }
}
