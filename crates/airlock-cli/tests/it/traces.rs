//! OpenTelemetry traces: a real OTLP/HTTP receiver, built in this test from the
//! `opentelemetry-proto` definitions, receives airlock's spans; the test checks the span tree,
//! names and attributes of one session with an allowed, a denied and an approved action.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

#[derive(Debug, Clone)]
pub(crate) struct RecordedSpan {
    pub(crate) name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    pub(crate) attrs: HashMap<String, String>,
    start: u64,
    end: u64,
}

#[derive(Clone, Default)]
pub(crate) struct Collector(Arc<Mutex<Vec<RecordedSpan>>>);

impl Collector {
    /// An OTLP/HTTP receiver on a free loopback port, and its endpoint for `[telemetry]`.
    pub(crate) async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let app = Router::new().route("/v1/traces", post(receive)).with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, endpoint)
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<RecordedSpan> {
        self.0.lock().unwrap().clone()
    }
}

async fn receive(State(c): State<Collector>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    c.record(req);
    ""
}

impl Collector {
    fn record(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attrs = s
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                Some(AnyValue::StringValue(s)) => s,
                                Some(AnyValue::IntValue(i)) => i.to_string(),
                                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                                Some(AnyValue::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    spans.push(RecordedSpan {
                        name: s.name,
                        trace_id: hex::encode(s.trace_id),
                        span_id: hex::encode(s.span_id),
                        parent: hex::encode(s.parent_span_id),
                        attrs,
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        self.record(request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// OTLP over gRPC too: the same session seen by a gRPC receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_grpc() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
        collector.clone(),
    );
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap()
    });
    let fx = Fixture::with_extra(
        POLICY,
        &format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\notlp_protocol = \"grpc\"\n"),
    );
    let al = fx.start();
    let s = al.session(BOT).await;
    al.act(BOT, &s, "ticket.create", json!({})).await;
    al.stop();
    let spans = collector.0.lock().unwrap().clone();
    let root = spans.iter().find(|x| x.name == "invoke_agent bot").expect("root span over gRPC");
    let tool = spans.iter().find(|x| x.name == "execute_tool ticket.create").expect("tool span over gRPC");
    assert_eq!(tool.parent, root.span_id);
    assert_eq!(tool.trace_id, root.trace_id);
}

// Multi-threaded: the receiver must keep answering while the test blocks on stopping airlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_is_one_trace_with_the_expected_span_tree() {
    let collector = Collector::default();
    let app = Router::new().route("/v1/traces", post(receive)).with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let fx = Fixture::with_extra(POLICY, &format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n"));
    let al = fx.start();
    let s = al.session(BOT).await;
    let allowed = al.act(BOT, &s, "ticket.create", json!({"title": "x"})).await;
    let denied = al.act(BOT, &s, "db.drop", json!({})).await;
    // The agent passes its own trace context for this one.
    let held = al
        .raw_post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            serde_json::to_vec(&json!({"tool": "nodepool.scale", "arguments": {"pool": "web", "count": 4}})).unwrap(),
            &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
        )
        .await;
    let approval = held.body["approval"]["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    // A clean stop flushes the exporter.
    al.stop();

    let spans = collector.0.lock().unwrap().clone();
    let by_name = |n: &str| spans.iter().filter(|s| s.name == n).cloned().collect::<Vec<_>>();
    let roots = by_name("invoke_agent bot");
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = &roots[0];
    assert_eq!(root.parent, "");
    assert_eq!(root.attrs["gen_ai.agent.id"], "bot");
    assert_eq!(root.attrs["gen_ai.conversation.id"], s);
    assert_eq!(root.attrs["session.id"], s);

    let tool_span = |tool: &str| {
        let v = by_name(&format!("execute_tool {tool}"));
        assert_eq!(v.len(), 1, "execute_tool {tool}: {spans:#?}");
        v[0].clone()
    };
    let a = tool_span("ticket.create");
    let d = tool_span("db.drop");
    let h = tool_span("nodepool.scale");
    for (span, action, effect) in [(&a, &allowed, "allow"), (&d, &denied, "deny"), (&h, &held, "require_approval")] {
        assert_eq!(span.attrs["gen_ai.tool.call.id"], action.body["id"].as_str().unwrap());
        assert_eq!(span.attrs["gen_ai.tool.name"], action.body["tool"].as_str().unwrap());
        assert_eq!(span.attrs["airlock.decision.effect"], effect);
        assert!(span.end >= span.start);
        // The action's spans are recorded on the action, for later children.
        assert_eq!(action.body["trace"]["span_id"], span.span_id.as_str());
    }
    // The session's trace holds the first two; the third continues the agent's own trace.
    for span in [&a, &d] {
        assert_eq!(span.trace_id, root.trace_id);
        assert_eq!(span.parent, root.span_id);
    }
    assert_eq!(h.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(h.parent, "00f067aa0ba902b7");
    assert_eq!(d.attrs["airlock.decision.rules"], "DB1");

    // Children: policy evaluation and journal append for each, the approval wait for the held one.
    for parent in [&a, &d, &h] {
        let kids: Vec<&RecordedSpan> = spans.iter().filter(|s| s.parent == parent.span_id).collect();
        let names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"policy.evaluate") && names.contains(&"journal.append"), "{names:?}");
        let p = kids.iter().find(|s| s.name == "policy.evaluate").unwrap();
        assert!(p.attrs["airlock.policy.revision"].starts_with("sha256:"));
        assert_eq!(p.attrs["airlock.decision.effect"], parent.attrs["airlock.decision.effect"]);
    }
    let wait = spans.iter().find(|s| s.name == "approval.wait").expect("approval.wait span");
    assert_eq!(wait.parent, h.span_id);
    assert_eq!(wait.trace_id, h.trace_id);
    assert_eq!(wait.attrs["airlock.approval.id"], approval);
    assert_eq!(wait.attrs["airlock.approval.verdict"], "approved");
    assert_eq!(wait.attrs["airlock.approval.approvers"], "alice");
    assert!(wait.end - wait.start >= 40_000_000, "the wait span covers the wait");
    // Content is not exported unless asked for.
    assert!(spans.iter().all(|s| !s.attrs.contains_key("gen_ai.tool.call.arguments")));
}

/// With `capture_content = true`, arguments and results are exported with the paths of policy
/// `redact` replaced: a redacted value never reaches the receiver, a value next to it does, and a
/// broken `redact` exports no content of its action at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_content_is_exported_with_policy_redact_paths_replaced() {
    let collector = Collector::default();
    let app = Router::new().route("/v1/traces", post(receive)).with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let policy = format!(
        r#"{POLICY}
redact contains "arguments.password"
redact contains "arguments.db.conn_string"
redact contains "arguments.token" if input.action.upstream == "echo"
redact contains "result.structuredContent.token" if input.action.upstream == "echo"
redact contains 42 if input.action.tool == "odd.redact"
"#
    );
    let fx = Fixture::with_extra(
        &policy,
        &format!(
            "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\ncapture_content = true\n\n\
             [[upstreams]]\nname = \"echo\"\ncommand = \"python3\"\nargs = [\"{fake}\"]\n",
            fake = fake_mcp_server().display()
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("echo").await;
    let s = al.session(BOT).await;
    let ticket = al
        .act(
            BOT,
            &s,
            "ticket.create",
            json!({"title": "visible-title", "password": "hunter2-secret",
                   "db": {"conn_string": "postgres://app:pw-secret@db", "name": "orders-db"}}),
        )
        .await;
    assert_eq!(ticket.body["status"], "executing", "{}", ticket.body);
    assert_eq!(ticket.body["decision"]["redact"], json!(["arguments.db.conn_string", "arguments.password"]));
    // Redaction is for export: the journal keeps the call as it was made.
    assert_eq!(ticket.body["arguments"]["password"], "hunter2-secret");
    let echo = al.act(BOT, &s, "echo__echo", json!({"id": "visible-id", "token": "tok-secret"})).await;
    assert_eq!(echo.body["status"], "succeeded", "{}", echo.body);
    let odd = al.act(BOT, &s, "odd.redact", json!({"note": "leaks-if-broken"})).await;
    assert_eq!(odd.body["status"], "executing", "a broken redact must not deny: {}", odd.body);
    assert_eq!(odd.body["decision"]["warnings"][0]["rule"], "airlock.redact_error", "{}", odd.body);
    assert_eq!(odd.body["decision"]["redact"], json!(["*"]));
    al.stop();

    let spans = collector.0.lock().unwrap().clone();
    let exported: String = spans.iter().flat_map(|s| s.attrs.values().cloned()).collect::<Vec<_>>().join("\n");
    for secret in ["hunter2-secret", "pw-secret", "tok-secret", "leaks-if-broken"] {
        assert!(!exported.contains(secret), "`{secret}` was exported: {exported}");
    }
    let attr_json = |span: &str, key: &str| -> serde_json::Value {
        let s = spans.iter().find(|s| s.name == span).unwrap_or_else(|| panic!("no span `{span}`: {spans:#?}"));
        let text = s.attrs.get(key).unwrap_or_else(|| panic!("`{span}` has no `{key}`: {:?}", s.attrs));
        serde_json::from_str(text).unwrap()
    };
    assert_eq!(
        attr_json("execute_tool ticket.create", "gen_ai.tool.call.arguments"),
        json!({"title": "visible-title", "password": "[REDACTED]", "db": {"conn_string": "[REDACTED]", "name": "orders-db"}})
    );
    assert_eq!(
        attr_json("execute_tool echo__echo", "gen_ai.tool.call.arguments"),
        json!({"id": "visible-id", "token": "[REDACTED]"})
    );
    let result = attr_json("tools/call echo", "gen_ai.tool.call.result");
    assert_eq!(result["structuredContent"], json!({"id": "visible-id", "token": "[REDACTED]"}), "{result}");
    assert_eq!(attr_json("execute_tool odd.redact", "gen_ai.tool.call.arguments"), json!("[REDACTED]"));
}

// An MCP tools/call: the agent's trace context arrives in `params._meta`, the spans carry the
// MCP attributes, and the upstream receives trace context pointing at airlock's upstream span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_call_continues_the_agents_trace_and_passes_it_upstream() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, RequestMetaObject};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let collector = Collector::default();
    let app = Router::new().route("/v1/traces", post(receive)).with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n\n\
             [[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{fake}\"]\n",
            fake = fake_mcp_server().display()
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("fake").await;

    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", al.url)).auth_header(BOT);
    let c = ClientConfig::new(ClientCapabilities::default(), Implementation::new("traced-agent", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP handshake");
    let agent_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut meta = RequestMetaObject::new();
    meta.0.insert("traceparent".into(), json!(format!("00-{agent_trace}-b7ad6b7169203331-01")));
    meta.0.insert("airlock/justification".into(), json!("checking what the upstream receives"));
    let mut params = CallToolRequestParams::new("fake__meta");
    params.meta = Some(meta);
    let r = c.call_tool(params).await.expect("tools/call");
    let text = serde_json::to_value(&r.content).unwrap()[0]["text"].as_str().unwrap().to_string();
    let upstream_meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    c.cancel().await.unwrap();
    // The justification travelled in `_meta` too.
    let sessions = al.get("/v1/sessions", ADMIN).await;
    let session =
        al.get(&format!("/v1/sessions/{}", sessions.body["sessions"][0]["id"].as_str().unwrap()), ADMIN).await;
    assert_eq!(session.body["actions"][0]["justification"], "checking what the upstream receives");
    al.stop();

    let spans = collector.0.lock().unwrap().clone();
    let tool = spans.iter().find(|s| s.name == "execute_tool fake__meta").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(tool.trace_id, agent_trace, "the agent's trace continues");
    assert_eq!(tool.parent, "b7ad6b7169203331");
    assert_eq!(tool.attrs["mcp.method.name"], "tools/call");
    assert!(!tool.attrs["mcp.session.id"].is_empty(), "{:?}", tool.attrs);
    let upstream = spans.iter().find(|s| s.name == "tools/call meta").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(upstream.parent, tool.span_id);
    assert_eq!(upstream.trace_id, agent_trace);
    assert_eq!(upstream.attrs["airlock.upstream"], "fake");
    // What the upstream received names airlock's upstream-call span as its parent.
    let sent = upstream_meta["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent: {upstream_meta}"));
    assert_eq!(sent, format!("00-{agent_trace}-{}-01", upstream.span_id), "{upstream_meta}");
}
