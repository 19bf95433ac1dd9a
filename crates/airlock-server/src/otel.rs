//! OpenTelemetry traces, exported over OTLP (HTTP/protobuf).
//!
//! One trace per session: an `invoke_agent {agent}` root span when the session opens; an
//! `execute_tool {tool}` span per action with children for policy evaluation, the journal
//! append, the approval wait and the upstream call. Span contexts are kept on the session and
//! the action in the journal, so spans that happen later (an approval resolved an hour after the
//! request, after a restart) join the same trace. A W3C `traceparent` from the agent (HTTP header,
//! MCP `params._meta`) becomes the parent of the action's span, and the upstream call carries
//! `traceparent` in its `_meta`. Arguments and results are exported only with
//! `[telemetry] capture_content = true`, and then with the paths of policy `redact` replaced by
//! `[REDACTED]` (everything, when policy did not run or its `redact` failed).
//!
//! The GenAI and MCP semantic conventions are still marked Development, so their attribute
//! names are defined here, in one place.

use std::sync::Arc;
use std::time::SystemTime;

use airlock_core::{Action, Session, TraceRef, redact};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// Attribute names (OpenTelemetry GenAI and MCP conventions, plus airlock's own).
pub mod attr {
    /// `gen_ai.operation.name`
    pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
    /// `gen_ai.agent.id`
    pub const GEN_AI_AGENT_ID: &str = "gen_ai.agent.id";
    /// `gen_ai.agent.name`
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    /// `gen_ai.conversation.id`
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// `gen_ai.tool.name`
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
    /// `gen_ai.tool.call.id`
    pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    /// `gen_ai.tool.call.arguments` (only with capture_content)
    pub const GEN_AI_TOOL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
    /// `gen_ai.tool.call.result` (only with capture_content)
    pub const GEN_AI_TOOL_RESULT: &str = "gen_ai.tool.call.result";
    /// `mcp.method.name`
    pub const MCP_METHOD: &str = "mcp.method.name";
    /// `mcp.session.id`: a digest of the id, never the id (see [`super::mcp_session_digest`]).
    pub const MCP_SESSION: &str = "mcp.session.id";
    /// `session.id`
    pub const SESSION_ID: &str = "session.id";
    /// `airlock.decision.effect`
    pub const EFFECT: &str = "airlock.decision.effect";
    /// `airlock.decision.rules`
    pub const RULES: &str = "airlock.decision.rules";
    /// `airlock.policy.revision`
    pub const POLICY_REVISION: &str = "airlock.policy.revision";
    /// `airlock.policy.duration_us`
    pub const POLICY_DURATION_US: &str = "airlock.policy.duration_us";
    /// `airlock.action.status`
    pub const ACTION_STATUS: &str = "airlock.action.status";
    /// `airlock.approval.id`
    pub const APPROVAL_ID: &str = "airlock.approval.id";
    /// `airlock.approval.verdict`
    pub const APPROVAL_VERDICT: &str = "airlock.approval.verdict";
    /// `airlock.approval.wait_seconds`
    pub const APPROVAL_WAIT: &str = "airlock.approval.wait_seconds";
    /// `airlock.approval.approvers`
    pub const APPROVERS: &str = "airlock.approval.approvers";
    /// `airlock.upstream`
    pub const UPSTREAM: &str = "airlock.upstream";
    /// `airlock.server`: the virtual server (`/mcp/{server}`) a call came through.
    pub const SERVER: &str = "airlock.server";
}

/// How an MCP session id appears in traces and logs: `sha256:` and the first 16 hex digits of
/// its SHA-256. The id is a bearer secret for its session (whoever presents it, with a token of
/// the agent that opened it, speaks in that session), and traces reach people and systems that
/// must not hold it; the digest still groups one session's spans. Ids are random UUIDs, so the
/// digest can't be turned back into one.
pub fn mcp_session_digest(mcp_session: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(mcp_session.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Settings from `[telemetry]`.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP endpoint (`http://host:4318`); `None` falls back to `OTEL_EXPORTER_OTLP_*`.
    pub otlp_endpoint: Option<String>,
    /// Export arguments and results.
    pub capture_content: bool,
    /// `service.name`.
    pub service_name: String,
    /// `grpc` or `http/protobuf`; `None` reads `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP.
    pub protocol: Option<String>,
}

/// Runs an exporter's futures on the server's tokio runtime. The SDK's batch processor exports
/// from its own thread with a plain executor, and the gRPC (tonic) client needs a tokio reactor.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter for OnRuntime<E> {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.handle.spawn(async move { inner.export(batch).await });
        async move {
            task.await.unwrap_or_else(|e| Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The tracer, or nothing when tracing is off.
pub struct Tracing {
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
    capture: bool,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").field("on", &self.tracer.is_some()).finish()
    }
}

fn env_endpoint() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()))
}

/// Parses a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn parse_traceparent(value: &str) -> Option<TraceRef> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok = version.len() == 2
        && trace.len() == 32
        && span.len() == 16
        && trace.chars().chain(span.chars()).all(|c| c.is_ascii_hexdigit())
        && trace.chars().any(|c| c != '0')
        && span.chars().any(|c| c != '0');
    ok.then(|| TraceRef { trace_id: trace.to_ascii_lowercase(), span_id: span.to_ascii_lowercase() })
}

/// A `traceparent` value for a span.
pub fn traceparent(r: &TraceRef) -> String {
    format!("00-{}-{}-01", r.trace_id, r.span_id)
}

fn parent_context(parent: Option<&TraceRef>) -> Context {
    let Some(p) = parent else { return Context::new() };
    match (TraceId::from_hex(&p.trace_id), SpanId::from_hex(&p.span_id)) {
        (Ok(t), Ok(s)) => Context::new().with_remote_span_context(SpanContext::new(
            t,
            s,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )),
        _ => Context::new(),
    }
}

fn reference(cx: &SpanContext) -> TraceRef {
    TraceRef { trace_id: cx.trace_id().to_string(), span_id: cx.span_id().to_string() }
}

/// A span being recorded; ends when [`OpenSpan::end_at`] is called (or dropped).
pub struct OpenSpan(Option<opentelemetry_sdk::trace::Span>);

impl OpenSpan {
    /// A span that records nothing.
    pub fn none() -> OpenSpan {
        OpenSpan(None)
    }

    /// The span's ids.
    pub fn reference(&self) -> Option<TraceRef> {
        self.0.as_ref().map(|s| reference(s.span_context()))
    }

    /// Adds attributes.
    pub fn set(&mut self, attrs: Vec<KeyValue>) {
        if let Some(s) = &mut self.0 {
            s.set_attributes(attrs);
        }
    }

    /// Marks the span as an error.
    pub fn error(&mut self, message: String) {
        if let Some(s) = &mut self.0 {
            s.set_status(Status::error(message));
        }
    }

    /// Ends the span at `at`.
    pub fn end_at(mut self, at: SystemTime) {
        if let Some(mut s) = self.0.take() {
            s.end_with_timestamp(at);
        }
    }
}

impl Tracing {
    /// Tracing off.
    pub fn disabled() -> Tracing {
        Tracing { tracer: None, provider: None, capture: false }
    }

    /// Starts the OTLP exporter when an endpoint is configured (here or in `OTEL_*`).
    pub fn from_config(config: &TelemetryConfig) -> anyhow::Result<Tracing> {
        if config.otlp_endpoint.is_none() && !env_endpoint() {
            return Ok(Tracing::disabled());
        }
        airlock_mcp::ensure_crypto_provider();
        let protocol = config
            .protocol
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())
            .unwrap_or_else(|| "http/protobuf".into());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let provider = if protocol == "grpc" {
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &config.otlp_endpoint {
                b = b.with_endpoint(endpoint.trim_end_matches('/'));
            }
            let handle = tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("OTLP over gRPC needs a tokio runtime"))?;
            let exporter = {
                let _guard = handle.enter();
                b.build()?
            };
            builder.with_batch_exporter(OnRuntime { inner: Arc::new(exporter), handle }).build()
        } else {
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_http();
            if let Some(endpoint) = &config.otlp_endpoint {
                let endpoint = endpoint.trim_end_matches('/');
                let url = if endpoint.ends_with("/v1/traces") {
                    endpoint.to_string()
                } else {
                    format!("{endpoint}/v1/traces")
                };
                b = b.with_endpoint(url);
            }
            builder.with_batch_exporter(b.build()?).build()
        };
        let tracer = provider.tracer("airlock");
        Ok(Tracing { tracer: Some(tracer), provider: Some(provider), capture: config.capture_content })
    }

    /// Whether spans are recorded.
    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether arguments and results may be exported.
    pub fn capture_content(&self) -> bool {
        self.capture
    }

    /// Starts a span.
    pub fn start(
        &self,
        name: String,
        kind: SpanKind,
        parent: Option<&TraceRef>,
        at: SystemTime,
        attrs: Vec<KeyValue>,
    ) -> OpenSpan {
        let Some(tracer) = &self.tracer else { return OpenSpan(None) };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(at)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent_context(parent));
        OpenSpan(Some(span))
    }

    /// Records a finished span.
    pub fn record(
        &self,
        name: String,
        parent: Option<&TraceRef>,
        start: SystemTime,
        end: SystemTime,
        attrs: Vec<KeyValue>,
    ) {
        self.start(name, SpanKind::Internal, parent, start, attrs).end_at(end);
    }

    /// The session's root span.
    pub fn session_root(&self, session: &Session) -> Option<TraceRef> {
        let at: SystemTime = session.created_at.into();
        let span = self.start(
            format!("invoke_agent {}", session.agent_id),
            SpanKind::Server,
            None,
            at,
            vec![
                KeyValue::new(attr::GEN_AI_OPERATION, "invoke_agent"),
                KeyValue::new(attr::GEN_AI_AGENT_ID, session.agent_id.clone()),
                KeyValue::new(attr::GEN_AI_AGENT_NAME, session.agent_id.clone()),
                KeyValue::new(attr::GEN_AI_CONVERSATION_ID, session.id.clone()),
                KeyValue::new(attr::SESSION_ID, session.id.clone()),
            ],
        );
        let r = span.reference();
        span.end_at(at);
        r
    }

    /// Attributes of an action's `execute_tool` span.
    pub fn action_attributes(&self, action: &Action, mcp_session: Option<&str>) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
            KeyValue::new(attr::GEN_AI_TOOL_NAME, action.tool.clone()),
            KeyValue::new(attr::GEN_AI_TOOL_CALL_ID, action.id.clone()),
            KeyValue::new(attr::GEN_AI_AGENT_ID, action.agent_id.clone()),
            KeyValue::new(attr::GEN_AI_CONVERSATION_ID, action.session_id.clone()),
            KeyValue::new(attr::SESSION_ID, action.session_id.clone()),
        ];
        if let Some(m) = mcp_session {
            attrs.push(KeyValue::new(attr::MCP_METHOD, "tools/call"));
            attrs.push(KeyValue::new(attr::MCP_SESSION, mcp_session_digest(m)));
        }
        if let Some(u) = &action.upstream {
            attrs.push(KeyValue::new(attr::UPSTREAM, u.clone()));
        }
        if let Some(s) = &action.server {
            attrs.push(KeyValue::new(attr::SERVER, s.clone()));
        }
        attrs
    }

    /// `gen_ai.tool.call.arguments` when content capture is on, with the decision's `redact`
    /// paths applied. Set once the action is decided: before that, what to redact is unknown.
    pub fn arguments_attribute(&self, action: &Action) -> Option<KeyValue> {
        self.capture.then(|| {
            let arguments = redact::redact(&action.arguments, redact::Root::Arguments, &action.decision.redact);
            KeyValue::new(attr::GEN_AI_TOOL_ARGUMENTS, arguments.to_string())
        })
    }

    /// `gen_ai.tool.call.result` for what `action` returned, when content capture is on, with
    /// the decision's `redact` paths applied.
    pub fn result_attribute(&self, action: &Action, output: &serde_json::Value) -> Option<KeyValue> {
        self.capture.then(|| {
            let output = redact::redact(output, redact::Root::Result, &action.decision.redact);
            KeyValue::new(attr::GEN_AI_TOOL_RESULT, output.to_string())
        })
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mcp_session_id_is_exported_as_a_short_digest() {
        let id = "0b6f7c1e-2a51-4c1f-9d8e-3f5a6b7c8d9e";
        let digest = mcp_session_digest(id);
        assert_eq!(digest.len(), "sha256:".len() + 16);
        assert!(digest.starts_with("sha256:") && !digest.contains(id), "{digest}");
        let full = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()));
        assert_eq!(digest, format!("sha256:{}", full.get(..16).unwrap()));
        assert_ne!(digest, mcp_session_digest("another"));
    }

    #[test]
    fn traceparent_round_trip() {
        let r = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(r.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(traceparent(&r), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent("garbage").is_none());
    }
}
