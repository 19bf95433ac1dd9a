//! `airlock plans`: a session's plans over the HTTP API (`docs/plans.md`).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::client::{Client, Conn, s};
use crate::output;

#[derive(Subcommand)]
pub enum PlansCommand {
    /// List a session's plans.
    List {
        /// Session id (`ses_…`).
        session: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a plan: its steps and their progress, its versions, and what a pending amendment
    /// changes. Vote on a version with `airlock approvals approve|deny` and its approval id.
    Show {
        /// Session id (`ses_…`).
        session: String,
        /// Plan id (`pln_…`).
        plan: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn plans(cmd: PlansCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PlansCommand::List { session, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/sessions/{session}/plans"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                let list = v.get("plans").and_then(Value::as_array).cloned().unwrap_or_default();
                let rows = list
                    .iter()
                    .map(|p| {
                        let steps = p.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
                        let done = steps.iter().filter(|x| s(x, "status") == "done").count();
                        vec![
                            s(p, "id"),
                            s(p, "status"),
                            s(p, "in_force"),
                            s(p, "pending"),
                            format!("{done}/{}", steps.len()),
                            s(p, "goal").chars().take(50).collect(),
                        ]
                    })
                    .collect();
                println!("{}", output::table(&["PLAN", "STATUS", "IN FORCE", "PENDING", "DONE", "GOAL"], rows));
            }
        }
        PlansCommand::Show { session, plan, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/sessions/{session}/plans/{plan}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                print_plan(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(v: &Value) {
    println!(
        "plan     {} ({})  agent {}  session {}",
        s(v, "id"),
        s(v, "status"),
        s(v, "agent_id"),
        s(v, "session_id")
    );
    println!("goal     {}", s(v, "goal"));
    println!("spent    ${:.2}", v.get("spent_usd").and_then(Value::as_f64).unwrap_or(0.0));
    if v.get("finished") == Some(&Value::Bool(true)) {
        println!("finished every step is done");
    }
    if let Some(stuck) = v.get("stuck").filter(|x| !x.is_null()) {
        println!("stuck    no step progress since {} (stuck at {})", s(stuck, "since"), s(stuck, "at"));
    }
    let steps = v.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows = steps
        .iter()
        .map(|x| {
            vec![
                s(x, "id"),
                s(x, "tool"),
                s(x, "status"),
                x.get("arguments").map(Value::to_string).unwrap_or_default().chars().take(60).collect(),
                x.get("actions").and_then(Value::as_array).map(|a| a.len().to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    println!("{}", output::table(&["STEP", "TOOL", "STATUS", "ARGUMENTS (SCHEMA)", "CALLS"], rows));
    let versions = v.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows = versions
        .iter()
        .map(|x| {
            let by = x
                .get("approved_by")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            vec![s(x, "version"), s(x, "status"), s(x, "approval_id"), by, output::age(&s(x, "proposed_at"))]
        })
        .collect();
    println!("{}", output::table(&["VERSION", "STATUS", "APPROVAL", "APPROVED BY", "AGE"], rows));
    if let Some(diff) = v.get("diff").filter(|d| !d.is_null()) {
        println!("pending version {} changes:", s(v, "pending"));
        for (flag, what) in [
            ("goal_changed", "goal"),
            ("budget_changed", "budget"),
            ("deadline_changed", "deadline"),
            ("monitors_changed", "monitors"),
        ] {
            if diff.get(flag) == Some(&Value::Bool(true)) {
                println!("  ~ {what}");
            }
        }
        let list = |k: &str| diff.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        for step in list("added") {
            println!("  + step {} {}", s(&step, "id"), s(&step, "tool"));
        }
        for step in list("changed") {
            println!("  ~ step {} {}", s(&step, "id"), s(&step["to"], "tool"));
        }
        for step in list("removed") {
            println!("  - step {} {}", s(&step, "id"), s(&step, "tool"));
        }
    }
}
