//! Journal verification on corrupted files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use airlock_server::Config;
use airlock_server::audit::{Anchor, resolve_public_key, verify_signed};
use reqwest::Method;
use rusqlite::{Connection, params};
use serde_json::json;
use tempfile::TempDir;

use crate::Finding;
use crate::server::{AGENT_TOKEN, APPROVER_TOKEN, FuzzServer, QUICKSTART_POLICY, runtime};

/// A journal written by the real server (allowed, denied, held and approved calls, a reported
/// result, a clean stop that signs a checkpoint), and what `audit verify` needs beside it.
struct Template {
    dir: TempDir,
}

const JOURNAL: &str = "journal.db";

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let server = FuzzServer::start(QUICKSTART_POLICY);
        write_history(&server).unwrap_or_else(|e| panic!("the journal template could not be written: {e}"));
        let dir = server.stop();
        Template { dir }
    })
}

fn write_history(server: &FuzzServer) -> Result<(), Finding> {
    for task in ["first", "second"] {
        let session = server.new_session()?;
        let submit = |tool: &str, arguments: serde_json::Value| {
            server.json(
                Method::POST,
                &format!("/v1/sessions/{session}/actions"),
                AGENT_TOKEN,
                &json!({"tool": tool, "arguments": arguments, "justification": task}),
            )
        };
        let listed = submit("nodepool.list", json!({}))?.json().unwrap_or_default();
        if let Some(id) = listed["id"].as_str() {
            server.json(
                Method::POST,
                &format!("/v1/actions/{id}/result"),
                AGENT_TOKEN,
                &json!({"ok": true, "output": {"pools": ["web"]}}),
            )?;
        }
        submit("firewall.open", json!({"port": 22, "cidr": "0.0.0.0/0"}))?;
        let held = submit("nodepool.scale", json!({"pool": "web", "count": 12}))?.json().unwrap_or_default();
        if let Some(approval) = held["approval_id"].as_str() {
            server.json(
                Method::POST,
                &format!("/v1/approvals/{approval}/approve"),
                APPROVER_TOKEN,
                &json!({"comment": "fuzz"}),
            )?;
        }
    }
    Ok(())
}

/// A copy of the template in a new directory, ready for `audit verify`.
fn copy_template(into: &Path) -> PathBuf {
    let from = template().dir.path();
    let data = into.join("data");
    std::fs::create_dir_all(&data).expect("a data directory for the journal copy");
    for entry in std::fs::read_dir(from.join("data")).expect("the journal template's files").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), data.join(entry.file_name())).expect("a copy of the journal template");
        }
    }
    std::fs::copy(from.join("airlock.toml"), into.join("airlock.toml"))
        .expect("a copy of the template's configuration");
    data.join(JOURNAL)
}

/// What `airlock audit verify` concludes: `Some(true)` when every chain and checkpoint checks
/// out, `Some(false)` when it reports a problem, `None` when it cannot read the journal at all
/// (an error, which the command also reports as a failure).
fn verify(dir: &Path, anchor: Option<&Anchor>) -> Option<bool> {
    let config = Config::load(&dir.join("airlock.toml")).ok()?;
    runtime().block_on(async {
        let journal = airlock_server::journal::reader(&config).await.ok()?;
        let chains = journal.verify().await.ok()?;
        let public = resolve_public_key(&config, None, anchor).ok()??;
        let signed = verify_signed(&journal, &public.key, anchor).await.ok()?;
        Some(chains.ok() && signed.ok())
    })
}

/// The event columns an edit may change; each is covered by the event's hash.
const COLUMNS: [&str; 5] = ["stream", "seq", "kind", "at", "payload"];

/// Byte 0 picks how the journal is corrupted:
///
/// - `0`: the file's bytes, xored at offsets the input gives (5 bytes an edit: offset, value);
/// - `1`: rows of the `events` table changed or deleted, as someone with write access to the
///   database would (3 bytes an edit and up to 31 of value); then verification must fail,
///   whichever column changed;
/// - `2`: the file cut at an offset;
/// - `3`: the rest is an anchor file given to `verify --anchor`.
///
/// In every mode verification answers without a panic.
pub fn journal(data: &[u8]) -> Result<(), Finding> {
    let [mode, rest @ ..] = data else { return Ok(()) };
    let dir = tempfile::tempdir().expect("a temporary directory for the journal copy");
    let journal = copy_template(dir.path());
    match mode % 4 {
        0 => {
            let mut bytes = std::fs::read(&journal).expect("the journal copy");
            for edit in rest.chunks_exact(5) {
                let offset = u32::from_le_bytes([edit[0], edit[1], edit[2], edit[3]]) as usize % bytes.len();
                bytes[offset] ^= edit[4].max(1);
            }
            std::fs::write(&journal, bytes).expect("the corrupted journal");
            verify(dir.path(), None);
        }
        1 => {
            let changed = edit_rows(&journal, rest);
            if changed && verify(dir.path(), None) == Some(true) {
                return Err(Finding("events were changed in the journal and `audit verify` passed".into()));
            }
        }
        2 => {
            let bytes = std::fs::read(&journal).expect("the journal copy");
            let cut = rest.iter().take(4).fold(0usize, |n, b| n << 8 | usize::from(*b)) % bytes.len().max(1);
            std::fs::write(&journal, &bytes[..cut]).expect("the cut journal");
            verify(dir.path(), None);
        }
        _ => {
            if let Ok(anchor) = Anchor::parse(&String::from_utf8_lossy(rest)) {
                verify(dir.path(), Some(&anchor));
            }
        }
    }
    Ok(())
}

/// Applies the input's edits to the `events` table; whether any of them changed a row.
fn edit_rows(journal: &Path, edits: &[u8]) -> bool {
    let conn = Connection::open(journal).expect("the journal copy opens");
    let positions: Vec<i64> = {
        let mut stmt = conn.prepare("SELECT pos FROM events ORDER BY pos").expect("the events table");
        stmt.query_map([], |r| r.get(0)).expect("event positions").flatten().collect()
    };
    if positions.is_empty() {
        return false;
    }
    let mut changed = false;
    let mut rest = edits;
    while let [row, column, len, tail @ ..] = rest {
        let n = usize::from(*len % 32).min(tail.len());
        let (value, next) = tail.split_at(n);
        rest = next;
        let pos = positions[usize::from(*row) % positions.len()];
        let column = usize::from(*column) % (COLUMNS.len() + 1);
        let done = if column == COLUMNS.len() {
            conn.execute("DELETE FROM events WHERE pos = ?1", params![pos])
        } else if COLUMNS[column] == "seq" {
            let seq = value.iter().fold(0i64, |n, b| n.wrapping_mul(256).wrapping_add(i64::from(*b)));
            conn.execute("UPDATE events SET seq = ?1 WHERE pos = ?2 AND seq != ?1", params![seq, pos])
        } else {
            let text = String::from_utf8_lossy(value).into_owned();
            let sql = format!("UPDATE events SET {0} = ?1 WHERE pos = ?2 AND {0} != ?1", COLUMNS[column]);
            conn.execute(&sql, params![text, pos])
        };
        // A change the table refuses (a duplicate stream and seq) changes nothing.
        changed |= done.is_ok_and(|rows| rows > 0);
    }
    changed
}
