//! Metrics in the Prometheus text format at `/metrics`, and the names of everything airlock
//! measures, in one place.
//!
//! Histograms have explicit buckets (real Prometheus histograms, not summaries), so they can be
//! aggregated across replicas.
//!
//! Every label value is bounded: each distinct value is a series that lives as long as the
//! process, so a value an agent can choose would let it grow `/metrics` and the scraper's
//! storage without end. [`Labels`] decides what a `tool` or `rule` label may say; labels that
//! only take configured values (`agent`, `upstream`) or values from a fixed list (`effect`,
//! `outcome`, `status`, the pause `rule`) need no bound.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, RwLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Config;

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
/// Callers blocked until an action changes: HTTP long-polls (`?wait=`) and MCP calls held for a
/// human.
pub const ACTION_WAITERS: &str = "airlock_action_waiters";
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
/// Open HTTP connections.
pub const CONNECTIONS_OPEN: &str = "airlock_http_connections";
/// HTTP connections closed by airlock rather than by the client, by `reason`: `header_timeout`,
/// `idle_timeout`, `replaced` (made room for a new one at `max_connections`), `refused` (past
/// the reserve).
pub const CONNECTIONS_CLOSED: &str = "airlock_http_connections_closed_total";
/// Requests whose body did not arrive within `[server] request_body_timeout_seconds`.
pub const BODY_TIMEOUTS: &str = "airlock_http_request_body_timeouts_total";

/// The label value of every tool airlock does not know, and of every `rule` past the bound.
/// Messages forwarded between upstreams and clients, by method and outcome (counter).
pub const MCP_FORWARDED: &str = "airlock_mcp_forwarded_total";
/// Sessions and actions refused because free disk space is below the floor (counter).
pub const DISK_FLOOR_REFUSALS: &str = "airlock_disk_floor_refusals_total";
/// Rate-limited calls counted but not journaled in full (counter).
pub const RATE_LIMITED_UNJOURNALED: &str = "airlock_rate_limited_unjournaled_total";
/// Reads through the MCP gateway that are not calls, by kind and outcome (counter).
pub const MCP_READS: &str = "airlock_mcp_reads_total";
/// Forwarded messages left out of the journal because its backlog was full (counter).
pub const MCP_FORWARDED_UNJOURNALED: &str = "airlock_mcp_forwarded_unjournaled_total";
/// Calls that matched no step of the plan in force in their session (drift).
pub const PLAN_DRIFT: &str = "airlock_plan_drift_total";
/// Plans found stuck (no step progress for their `stuck_after_seconds`).
pub const PLANS_STUCK: &str = "airlock_plans_stuck_total";
/// Calls matched to a step of the plan in force in their session.
pub const PLAN_STEPS: &str = "airlock_plan_steps_matched_total";
/// Claims of assigned plan steps (leases granted).
pub const PLAN_CLAIMS: &str = "airlock_plan_step_claims_total";
/// Calls refused because the lease they named is stale, expired, used or another agent's.
pub const PLAN_LEASE_REFUSED: &str = "airlock_plan_lease_refused_total";
pub const OTHER: &str = "other";

/// Most distinct `rule` label values; later ones are [`OTHER`]. Rule names come from policy,
/// which may build them from its input (`sprintf("TF-%s", [input.action.tool])`).
pub const MAX_RULE_LABELS: usize = 256;

/// Whether a tool name or allowlist entry is a glob rather than one name.
fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// What the `tool` and `rule` labels may say.
///
/// A tool keeps its name when airlock knows it: an exact `[[tools]]` name, an agent's allowlist
/// entry that is one name rather than a glob, or a tool an upstream has listed (remembered once
/// seen, so its series stays while the upstream is down). Any other tool, however it was
/// named, counts as [`OTHER`]: globs are not enough, since `*` or `infra__*` would admit every
/// name an agent makes up. Rule names keep theirs up to [`MAX_RULE_LABELS`] distinct values.
pub struct Labels {
    configured: HashSet<String>,
    listed: RwLock<HashSet<String>>,
    upstreams: OnceLock<airlock_mcp::Upstreams>,
    rules: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labels").field("configured", &self.configured.len()).finish_non_exhaustive()
    }
}

impl Labels {
    /// The tools `config` names exactly.
    pub fn new(config: &Config) -> Labels {
        let tools = config.tools.iter().map(|t| &t.name);
        let allowed = config.agents.iter().flat_map(|a| a.tools.iter().flatten());
        let configured = tools.chain(allowed).filter(|n| !is_pattern(n)).cloned().collect();
        Labels {
            configured,
            listed: RwLock::new(HashSet::new()),
            upstreams: OnceLock::new(),
            rules: Mutex::new(HashSet::new()),
        }
    }

    /// Lets upstream tools (`{upstream}__{tool}` as listed) keep their names. Only the first
    /// call counts.
    pub fn attach_upstreams(&self, upstreams: airlock_mcp::Upstreams) {
        let _ = self.upstreams.set(upstreams);
    }

    /// The `tool` label of `tool`: its name when known, else [`OTHER`].
    pub fn tool(&self, tool: &str) -> String {
        if self.configured.contains(tool) || airlock_core::sync::read(&self.listed).contains(tool) {
            return tool.to_string();
        }
        let listed = tool
            .split_once(airlock_mcp::front::TOOL_SEPARATOR)
            .is_some_and(|(upstream, name)| self.upstreams.get().is_some_and(|u| u.tool(upstream, name).is_some()));
        if !listed {
            return OTHER.to_string();
        }
        airlock_core::sync::write(&self.listed).insert(tool.to_string());
        tool.to_string()
    }

    /// The `rule` label of `rule`: itself among the first [`MAX_RULE_LABELS`] distinct rules.
    pub fn rule(&self, rule: &str) -> String {
        let mut rules = airlock_core::sync::lock(&self.rules);
        if rules.contains(rule) {
            return rule.to_string();
        }
        if rules.len() >= MAX_RULE_LABELS {
            return OTHER.to_string();
        }
        rules.insert(rule.to_string());
        rule.to_string()
    }
}

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
    describe_gauge!(ACTION_WAITERS, "Callers blocked until an action changes (long-polls, held MCP calls)");
    describe_counter!(ACTIONS, "Finished actions by tool and outcome");
    describe_counter!(
        MCP_READS,
        "Resource reads, prompt gets, completions and subscriptions screened, by kind and outcome"
    );
    describe_counter!(MCP_FORWARDED, "MCP messages forwarded between upstreams and clients, by method and outcome");
    describe_counter!(MCP_FORWARDED_UNJOURNALED, "Forwarded MCP messages not journaled because the backlog was full");
    describe_histogram!(UPSTREAM_SECONDS, metrics::Unit::Seconds, "Upstream tool call time");
    describe_counter!(UPSTREAM_ERRORS, "Upstream tool call failures");
    describe_gauge!(BREAKER_STATE, "Circuit breaker state: 0 closed, 1 half-open, 2 open");
    describe_gauge!(SPEND_USD, "Money spent by allowed actions (USD)");
    describe_counter!(SESSIONS_PAUSED, "Sessions paused by a guard");
    describe_counter!(PLAN_DRIFT, "Calls that matched no step of the plan in force (drift)");
    describe_counter!(PLANS_STUCK, "Plans found stuck: no step progress for their stuck_after_seconds");
    describe_counter!(PLAN_STEPS, "Calls matched to a step of the plan in force");
    describe_counter!(PLAN_CLAIMS, "Claims of assigned plan steps (leases granted)");
    describe_counter!(PLAN_LEASE_REFUSED, "Calls refused because the lease they named no longer admits them");
    describe_gauge!(CONNECTIONS_OPEN, "Open HTTP connections");
    describe_counter!(CONNECTIONS_CLOSED, "HTTP connections closed by airlock, by reason");
    describe_counter!(BODY_TIMEOUTS, "Requests whose body did not arrive in time");
    describe_histogram!(airlock_store::metrics_names::BATCH_SIZE, "Commits per journal transaction (group commit)");
    describe_histogram!(
        airlock_store::metrics_names::COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Journal transaction time including fsync"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(extra: &str) -> Labels {
        let text = format!("[policy]\ndir = \".\"\n{extra}");
        let env = std::collections::BTreeMap::from([("T".to_string(), "t".to_string())]);
        let config = Config::parse(&text, &std::env::temp_dir().join("airlock.toml"), &env).unwrap();
        Labels::new(&config)
    }

    #[test]
    fn only_tools_named_exactly_keep_their_names() {
        let l = labels(
            "[[tools]]\nname = \"deploy.run\"\n[[tools]]\nname = \"*.list\"\n\
             [[agents]]\nid = \"a\"\ntoken = \"env:T\"\nowner = \"o\"\ntier = \"change\"\ntools = [\"db.query\", \"infra__*\"]\n",
        );
        assert_eq!(l.tool("deploy.run"), "deploy.run");
        assert_eq!(l.tool("db.query"), "db.query");
        // Globs would admit any name an agent makes up.
        assert_eq!(l.tool("nodes.list"), OTHER);
        assert_eq!(l.tool("infra__scale"), OTHER, "no upstream has listed it");
        assert_eq!(l.tool("random-4711"), OTHER);
    }

    #[test]
    fn rule_labels_are_bounded() {
        let l = labels("");
        assert_eq!(l.rule("none"), "none");
        for i in 1..MAX_RULE_LABELS {
            assert_eq!(l.rule(&format!("R{i}")), format!("R{i}"));
        }
        assert_eq!(l.rule("one-too-many"), OTHER);
        // Rules seen before keep their names.
        assert_eq!(l.rule("R1"), "R1");
        assert_eq!(l.rule("none"), "none");
    }
}
