//! A hand-written streamable HTTP MCP client, so that an attack test controls every header,
//! every session id and every `_meta` key (SDK clients would not send what an attacker sends).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::Airlock;

/// A client of one airlock's `/mcp`.
pub struct Mcp {
    url: String,
    http: reqwest::Client,
}

/// One answer of `/mcp`.
pub struct McpReply {
    pub status: StatusCode,
    pub session: Option<String>,
    pub body: String,
}

impl McpReply {
    /// The JSON-RPC messages of an SSE or JSON body.
    pub fn messages(&self) -> Vec<Value> {
        if let Ok(v) = serde_json::from_str::<Value>(&self.body) {
            return vec![v];
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    }

    /// The answer to request `id`: its `result`, or its `error`.
    pub fn answer(&self, id: u64) -> Result<Value, Value> {
        let m = self
            .messages()
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to request {id}: {} {}", self.status, self.body));
        if m.get("error").is_some() { Err(m["error"].clone()) } else { Ok(m["result"].clone()) }
    }

    /// The result of request `id` (null when it failed).
    pub fn result(&self, id: u64) -> Value {
        self.answer(id).unwrap_or(Value::Null)
    }

    /// Whether a tool result is an error, and its text.
    pub fn text(&self, id: u64) -> (bool, String) {
        let result = self.answer(id).unwrap_or_else(|e| panic!("tools/call failed: {e}"));
        let text = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        (result["isError"] == true, text)
    }
}

impl Mcp {
    pub fn new(al: &Airlock) -> Mcp {
        Mcp { url: format!("{}/mcp", al.url), http: reqwest::Client::new() }
    }

    /// One HTTP request to `/mcp`. A GET that opened an event stream is answered with its status
    /// only: the stream stays open until the reply is dropped, which is here.
    pub async fn send(
        &self,
        method: Method,
        token: &str,
        session: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> McpReply {
        let accept = if method == Method::GET { "text/event-stream" } else { "application/json, text/event-stream" };
        let mut req = self
            .http
            .request(method.clone(), &self.url)
            .bearer_auth(token)
            .header("accept", accept)
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("a request to /mcp");
        let status = resp.status();
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = if method == Method::GET && status == StatusCode::OK {
            String::new()
        } else {
            resp.text().await.unwrap_or_default()
        };
        McpReply { status, session, body }
    }

    /// A POST of `body`.
    pub async fn post(&self, token: &str, session: Option<&str>, body: Value, headers: &[(&str, &str)]) -> McpReply {
        self.send(Method::POST, token, session, Some(body), headers).await
    }

    /// Sends `initialize` with `headers` and `meta` as its `params._meta`.
    pub async fn try_initialize(&self, token: &str, headers: &[(&str, &str)], meta: Option<Value>) -> McpReply {
        let mut params = json!({"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "airlock-attack-tests", "version": "1"}});
        if let Some(m) = meta {
            params["_meta"] = m;
        }
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params});
        self.post(token, None, init, headers).await
    }

    /// `initialize` (which must succeed) and `notifications/initialized`; returns the session id.
    pub async fn initialize_with(&self, token: &str, headers: &[(&str, &str)], meta: Option<Value>) -> String {
        let r = self.try_initialize(token, headers, meta).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let result = r.answer(1).unwrap_or_else(|e| panic!("initialize failed: {e}"));
        assert_eq!(result["serverInfo"]["name"], "airlock", "{}", r.body);
        let session = r.session.expect("the initialize answer names an Mcp-Session-Id");
        let done = self.notify(token, &session, "notifications/initialized").await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        session
    }

    /// `initialize` with nothing extra; returns the session id.
    pub async fn initialize(&self, token: &str) -> String {
        self.initialize_with(token, &[], None).await
    }

    pub async fn request(&self, token: &str, session: &str, id: u64, method: &str, params: Value) -> McpReply {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.post(token, Some(session), body, &[]).await
    }

    pub async fn call(&self, token: &str, session: &str, id: u64, tool: &str, arguments: Value) -> McpReply {
        self.request(token, session, id, "tools/call", json!({"name": tool, "arguments": arguments})).await
    }

    pub async fn notify(&self, token: &str, session: &str, method: &str) -> McpReply {
        let body = json!({"jsonrpc": "2.0", "method": method});
        self.post(token, Some(session), body, &[]).await
    }
}
