//! Metrics in the Prometheus text format at `/metrics`, and the names of everything airlock
//! measures, in one place.
//!
//! Histograms have explicit buckets (real Prometheus histograms, not summaries), so they can be
//! aggregated across replicas.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Decisions, by `effect` and first `rule`.
pub const DECISIONS: &str = "airlock_decisions_total";
/// Time to decide one action (guards, policy, journal), seconds.
pub const DECISION_SECONDS: &str = "airlock_decision_duration_seconds";
/// Policy evaluation time, seconds.
pub const POLICY_SECONDS: &str = "airlock_policy_evaluation_seconds";
/// From approval request to resolution, seconds, by `status`.
pub const APPROVAL_WAIT_SECONDS: &str = "airlock_approval_wait_seconds";
/// Approvals waiting for humans.
pub const APPROVALS_PENDING: &str = "airlock_approvals_pending";
/// Finished actions, by `tool` and `outcome`.
pub const ACTIONS: &str = "airlock_actions_total";
/// Upstream call time, seconds, by `upstream`.
pub const UPSTREAM_SECONDS: &str = "airlock_upstream_call_duration_seconds";
/// Upstream call failures, by `upstream`.
pub const UPSTREAM_ERRORS: &str = "airlock_upstream_errors_total";
/// Breaker state by `tool`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "airlock_breaker_state";
/// Money spent by allowed actions, US dollars, by `agent`.
pub const SPEND_USD: &str = "airlock_spend_usd_total";
/// Sessions paused by a guard, by `rule`.
pub const SESSIONS_PAUSED: &str = "airlock_sessions_paused_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency =
                [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let waits = [1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0];
            let batches = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
            let builder = PrometheusBuilder::new()
                .set_buckets(&latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(APPROVAL_WAIT_SECONDS.into()), &waits))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(airlock_store::metrics_names::BATCH_SIZE.into()), &batches)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(DECISIONS, "Decisions by effect and first rule");
    describe_histogram!(DECISION_SECONDS, metrics::Unit::Seconds, "Time to decide and journal one action");
    describe_histogram!(POLICY_SECONDS, metrics::Unit::Seconds, "Rego evaluation time");
    describe_histogram!(APPROVAL_WAIT_SECONDS, metrics::Unit::Seconds, "Time from approval request to resolution");
    describe_gauge!(APPROVALS_PENDING, "Approvals waiting for humans");
    describe_counter!(ACTIONS, "Finished actions by tool and outcome");
    describe_histogram!(UPSTREAM_SECONDS, metrics::Unit::Seconds, "Upstream tool call time");
    describe_counter!(UPSTREAM_ERRORS, "Upstream tool call failures");
    describe_gauge!(BREAKER_STATE, "Circuit breaker state: 0 closed, 1 half-open, 2 open");
    describe_gauge!(SPEND_USD, "Money spent by allowed actions (USD)");
    describe_counter!(SESSIONS_PAUSED, "Sessions paused by a guard");
    describe_histogram!(airlock_store::metrics_names::BATCH_SIZE, "Commits per journal transaction (group commit)");
    describe_histogram!(
        airlock_store::metrics_names::COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Journal transaction time including fsync"
    );
}
