//! Commands that talk to a running server over the HTTP API.
//! `airlock plans` is in `plans.rs`, on the same client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::output;

#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL (default: the config's listen address, else http://127.0.0.1:7878).
    #[arg(long, env = "AIRLOCK_SERVER", global = true)]
    server: Option<String>,
    /// Config file to read the listen address from.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub enum HumansCommand {
    /// Lift a human's TOTP lock after too many failed codes (admins). Check first that the
    /// failures were the human's own typos and not someone guessing with a stolen token.
    Unlock {
        /// The human's id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn humans(cmd: HumansCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HumansCommand::Unlock { id, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::POST, &format!("/v1/humans/{id}/unlock"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("lifted the TOTP lock of {}; their failure count starts over", s(&v, "human"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum KillCommand {
    /// Stop actions now: all, one agent's, one upstream's or one tool's (glob).
    Engage {
        /// all, agent, upstream or tool.
        #[arg(long)]
        scope: String,
        /// The agent id, upstream name or tool name/glob (not for `all`).
        #[arg(long)]
        target: Option<String>,
        /// Why; quoted in every denial.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List engaged kill switches.
    List {
        /// Include released ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Release a kill switch.
    Release {
        /// Kill switch id (`kill_…`).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first.
    List {
        /// Only paused sessions (the ones that need a human).
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a session and its actions in order.
    Show {
        /// Session id (`ses_…`).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused session (humans with `approve` or `admin`).
    Resume {
        /// Session id (`ses_…`).
        id: String,
        /// Why it is safe to continue (required).
        #[arg(long, short = 'm')]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Close a session (admins, or the session's agent): no new actions, and its pending
    /// approvals and approved-but-unrun actions are cancelled.
    Close {
        /// Session id (`ses_…`).
        id: String,
        /// Why; recorded in the journal.
        #[arg(long, short = 'm', default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        let base = match (&conn.server, &conn.config) {
            (Some(s), _) => s.trim_end_matches('/').to_string(),
            (None, Some(c)) => {
                let config = airlock_server::Config::load(c).map_err(|e| anyhow::anyhow!("{e}"))?;
                config.server.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen))
            }
            (None, None) => "http://127.0.0.1:7878".to_string(),
        };
        let token = std::env::var("AIRLOCK_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| crate::login::cached_token(&base))
            .context("set AIRLOCK_TOKEN to your bearer token (see `airlock token new`), or run `airlock login`")?;
        Ok(Client { base, token, http: reqwest::Client::new() })
    }

    /// One request; an answer other than 2xx is an [`ApiError`].
    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(ApiError::from_answer(status, &value).into());
        }
        Ok(value)
    }

    /// One request, with the answer's status whatever it is, for the few answers whose error
    /// statuses carry a document of their own (a refused plan is a `403` with the plan).
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach airlock at {}; is `airlock serve` running?", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

/// An error answer of the API (`problem+json`): its status, `detail` and `rule`, so a command
/// can add what to do about it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) detail: String,
    pub(crate) rule: Option<String>,
}

impl ApiError {
    pub(crate) fn from_answer(status: reqwest::StatusCode, value: &Value) -> ApiError {
        ApiError {
            status,
            detail: value.get("detail").and_then(Value::as_str).unwrap_or("no detail").to_string(),
            rule: value.get("rule").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// The rule, when the answer named one.
    pub(crate) fn rule(&self) -> &str {
        self.rule.as_deref().unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)?;
        if let Some(rule) = &self.rule {
            write!(f, " [rule {rule}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Adds what to do to an API error whose rule has a usual fix; other errors pass unchanged.
pub(crate) fn with_hint(e: anyhow::Error, hint: impl Fn(&ApiError) -> Option<String>) -> anyhow::Error {
    match e.downcast_ref::<ApiError>().and_then(&hint) {
        Some(fix) => anyhow::anyhow!("{e}\n  {fix}"),
        None => e,
    }
}

pub(crate) fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub async fn kill(cmd: KillCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KillCommand::Engage { scope, target, reason, conn } => {
            let c = Client::new(&conn)?;
            let v = c
                .call(
                    reqwest::Method::POST,
                    "/v1/kill",
                    Some(json!({"scope": scope, "target": target, "reason": reason})),
                )
                .await?;
            if conn.json {
                output::json(&v);
            } else {
                println!(
                    "engaged kill switch {} on {} {}: {}",
                    s(&v, "id"),
                    s(&v, "scope"),
                    s(&v, "target"),
                    s(&v, "reason")
                );
                println!("release it with: airlock kill release {}", s(&v, "id"));
            }
        }
        KillCommand::List { all, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/kill?all={all}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                let list = v.get("kill_switches").and_then(Value::as_array).cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no kill switches engaged");
                } else {
                    let rows = list
                        .iter()
                        .map(|k| {
                            vec![
                                s(k, "id"),
                                s(k, "scope"),
                                s(k, "target"),
                                s(k, "reason"),
                                s(k, "engaged_by"),
                                output::age(&s(k, "engaged_at")),
                                if s(k, "released_at").is_empty() {
                                    "engaged".into()
                                } else {
                                    format!("released by {}", s(k, "released_by"))
                                },
                            ]
                        })
                        .collect();
                    println!("{}", output::table(&["ID", "SCOPE", "TARGET", "REASON", "BY", "AGE", "STATE"], rows));
                }
            }
        }
        KillCommand::Release { id, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::DELETE, &format!("/v1/kill/{id}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("released kill switch {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sessions(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCommand::List { paused, conn } => {
            let c = Client::new(&conn)?;
            let path = if paused { "/v1/sessions?status=paused" } else { "/v1/sessions" };
            let v = c.call(reqwest::Method::GET, path, None).await?;
            if conn.json {
                output::json(&v);
            } else {
                let list = v.get("sessions").and_then(Value::as_array).cloned().unwrap_or_default();
                let rows = list
                    .iter()
                    .map(|x| {
                        vec![
                            s(x, "id"),
                            s(x, "agent_id"),
                            if s(x, "status_reason").is_empty() {
                                s(x, "status")
                            } else {
                                format!("{}: {}", s(x, "status"), s(x, "status_reason"))
                            },
                            s(x, "actions"),
                            s(x, "denials"),
                            s(x, "failures"),
                            output::age(&s(x, "created_at")),
                            s(x, "task").chars().take(40).collect(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["SESSION", "AGENT", "STATUS", "ACTIONS", "DENIED", "FAILED", "AGE", "TASK"], rows)
                );
            }
        }
        SessionsCommand::Resume { id, comment, conn } => {
            let c = Client::new(&conn)?;
            let v = c
                .call(reqwest::Method::POST, &format!("/v1/sessions/{id}/resume"), Some(json!({"comment": comment})))
                .await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("session {id} is {} again", s(&v, "status"));
            }
        }
        SessionsCommand::Close { id, reason, conn } => {
            let c = Client::new(&conn)?;
            let v = c
                .call(reqwest::Method::POST, &format!("/v1/sessions/{id}/close"), Some(json!({"reason": reason})))
                .await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("session {id} is {} ({})", s(&v, "status"), s(&v, "status_reason"));
            }
        }
        SessionsCommand::Show { id, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("session  {} ({})  agent {}", s(&v, "id"), s(&v, "status"), s(&v, "agent_id"));
                println!("task     {}", s(&v, "task"));
                let actions = v.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
                let rows = actions
                    .iter()
                    .map(|a| {
                        let d = a.get("decision").cloned().unwrap_or(Value::Null);
                        let reasons = d
                            .get("reasons")
                            .and_then(Value::as_array)
                            .map(|r| r.iter().map(|x| s(x, "rule")).collect::<Vec<_>>().join(","))
                            .unwrap_or_default();
                        vec![
                            s(a, "seq"),
                            s(a, "tool"),
                            s(&d, "effect"),
                            s(a, "status"),
                            reasons,
                            output::age(&s(a, "created_at")),
                        ]
                    })
                    .collect();
                println!("{}", output::table(&["#", "TOOL", "DECISION", "STATUS", "RULES", "AGE"], rows));
                let t = c.call(reqwest::Method::GET, &format!("/v1/sessions/{id}/timeline"), None).await?;
                println!("timeline");
                for e in t["timeline"].as_array().cloned().unwrap_or_default() {
                    println!("  {:>3}  {}  {}", s(&e, "seq"), s(&e, "at").get(11..23).unwrap_or(""), s(&e, "summary"));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The active revision, the candidate and the history.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Reload `[policy] dir`; refused (the active revision stays) if it does not compile or its
    /// tests fail.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Restore the previously active revision from the journal, without touching files.
    Rollback {
        #[command(flatten)]
        conn: Conn,
    },
    /// Load a candidate directory (on the server) to run in shadow mode, optionally deciding
    /// for a canary share of sessions.
    Shadow {
        /// The candidate directory (relative to the server's config file).
        #[arg(long)]
        dir: String,
        /// Let the candidate decide for this percentage of sessions (0 – 100; default 0: shadow
        /// only, never changing an outcome).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        canary: u8,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change the share of sessions the loaded candidate decides for (0 returns them all to the
    /// active policy). A session keeps its policy for its whole life.
    Canary {
        /// Percentage of sessions, 0 – 100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        #[command(flatten)]
        conn: Conn,
    },
    /// Where the shadow candidate disagrees with the active policy.
    Diff {
        #[command(flatten)]
        conn: Conn,
    },
    /// Make the candidate the active policy.
    Promote {
        #[command(flatten)]
        conn: Conn,
    },
}

fn print_change(v: &Value) {
    if v.get("changed") == Some(&Value::Bool(false)) {
        println!("unchanged: {} is already active", output::short(&s(v, "active")));
    } else {
        println!("active: {} (was {})", output::short(&s(v, "active")), output::short(&s(v, "previous")));
    }
}

/// `airlock upstreams`: the MCP servers behind the gateway and whether they are connected.
/// Exit status 1 when any is not up, so scripts and probes can use it.
pub async fn upstreams(conn: Conn) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn)?;
    let v = c.call(reqwest::Method::GET, "/v1/upstreams", None).await?;
    let list = v.get("upstreams").and_then(Value::as_array).cloned().unwrap_or_default();
    let all_up = list.iter().all(|u| s(u, "state") == "up");
    if conn.json {
        output::json(&v);
    } else if list.is_empty() {
        println!("no upstreams configured (add [[upstreams]] to the config to put MCP servers behind airlock)");
    } else {
        let rows = list
            .iter()
            .map(|u| {
                let detail = match s(u, "state").as_str() {
                    "up" => {
                        format!("{} tools, {} (protocol {})", s(u, "tools"), s(u, "server"), s(u, "protocol_version"))
                    }
                    "down" => s(u, "error"),
                    _ => String::new(),
                };
                vec![s(u, "name"), s(u, "transport"), s(u, "state"), s(u, "connections"), detail]
            })
            .collect();
        println!("{}", output::table(&["NAME", "TRANSPORT", "STATE", "CONNECTIONS", "DETAIL"], rows));
    }
    Ok(if all_up { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `airlock servers`: the virtual servers, what each offers, and the names each withholds because
/// several tools have them. Exit status 1 when any withholds a name.
pub async fn servers(conn: Conn) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn)?;
    let v = c.call(reqwest::Method::GET, "/v1/servers", None).await?;
    let list = v.get("servers").and_then(Value::as_array).cloned().unwrap_or_default();
    let withheld = |srv: &Value| srv.get("withheld").and_then(Value::as_array).cloned().unwrap_or_default();
    let clean = list.iter().all(|srv| withheld(srv).is_empty());
    if conn.json {
        output::json(&v);
    } else if list.is_empty() {
        println!("no virtual servers configured (add [[servers]] to the config to offer a part of the upstreams)");
    } else {
        let words = |v: Option<&Value>| {
            v.and_then(Value::as_array)
                .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default()).collect::<Vec<_>>().join(", "))
        };
        let rows = list
            .iter()
            .map(|srv| {
                let chooses = match (words(srv.get("upstreams")), words(srv.get("tools"))) {
                    (Some(u), _) => format!("upstreams {u}"),
                    (None, Some(t)) => format!("tools {t}"),
                    _ => String::new(),
                };
                let held = withheld(srv)
                    .iter()
                    .map(|w| format!("{} ({})", s(w, "name"), words(w.get("tools")).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("; ");
                let prefix = if srv.get("prefix") == Some(&Value::Bool(false)) { "no" } else { "yes" };
                vec![s(srv, "name"), s(srv, "path"), chooses, prefix.to_string(), s(srv, "offered"), held]
            })
            .collect();
        println!("{}", output::table(&["NAME", "PATH", "CHOOSES", "PREFIX", "TOOLS", "WITHHELD"], rows));
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let (conn, method, path, body) = match &cmd {
        PolicyCommand::Status { conn } => (conn, reqwest::Method::GET, "/v1/policy", None),
        PolicyCommand::Reload { conn } => (conn, reqwest::Method::POST, "/v1/policy/reload", None),
        PolicyCommand::Rollback { conn } => (conn, reqwest::Method::POST, "/v1/policy/rollback", None),
        PolicyCommand::Shadow { dir, canary, conn } => {
            (conn, reqwest::Method::POST, "/v1/policy/candidate", Some(json!({"dir": dir, "canary_percent": canary})))
        }
        PolicyCommand::Canary { percent, conn } => {
            (conn, reqwest::Method::POST, "/v1/policy/canary", Some(json!({"percent": percent})))
        }
        PolicyCommand::Diff { conn } => (conn, reqwest::Method::GET, "/v1/policy/shadow", None),
        PolicyCommand::Promote { conn } => (conn, reqwest::Method::POST, "/v1/policy/promote", None),
    };
    let c = Client::new(conn)?;
    let v = c.call(method, path, body).await?;
    if conn.json {
        output::json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    match cmd {
        PolicyCommand::Status { .. } => {
            println!("active     {}", s(&v["active"], "revision"));
            match v.get("candidate").filter(|c| !c.is_null()) {
                Some(c) => match c["canary_percent"].as_u64().unwrap_or(0) {
                    0 => println!("candidate  {} (shadow)", s(c, "revision")),
                    p => println!("candidate  {} (shadow; decides for {p}% of sessions)", s(c, "revision")),
                },
                None => println!("candidate  none"),
            }
            let rows = v["history"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|h| vec![output::short(&s(h, "revision")), s(h, "activated_at"), s(h, "activated_by")])
                .collect();
            println!("{}", output::table(&["REVISION", "ACTIVATED", "HOW"], rows));
        }
        PolicyCommand::Shadow { .. } | PolicyCommand::Canary { .. } => {
            match v["canary_percent"].as_u64().unwrap_or(0) {
                0 => println!("candidate {} runs in shadow mode", output::short(&s(&v, "candidate"))),
                p => println!(
                    "candidate {} decides for {p}% of sessions and shadows the rest",
                    output::short(&s(&v, "candidate"))
                ),
            }
        }
        PolicyCommand::Diff { .. } => {
            println!(
                "candidate {}: {} decisions evaluated, {} disagreements",
                output::short(&s(&v, "candidate")),
                s(&v, "evaluated"),
                s(&v, "disagreements")
            );
            for (rule, m) in v["rules"].as_object().cloned().unwrap_or_default() {
                println!("  {rule}: +{} -{}", m["added"].as_u64().unwrap_or(0), m["removed"].as_u64().unwrap_or(0));
            }
            for d in v["recent"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {} {}: {} -> {}",
                    s(&d, "action_id"),
                    s(&d, "tool"),
                    s(&d["active"], "effect"),
                    s(&d["candidate"], "effect")
                );
            }
        }
        _ => print_change(&v),
    }
    Ok(ExitCode::SUCCESS)
}
