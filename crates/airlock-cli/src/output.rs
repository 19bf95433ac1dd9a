//! Printing: tables for people, JSON for programs.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// A table with a header row, sized to the terminal.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

/// Pretty JSON on standard output.
pub fn json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
}

/// A short form of a long id or hash for tables.
pub fn short(s: &str) -> String {
    match s.strip_prefix("sha256:") {
        Some(h) => format!("sha256:{}", h.get(..12).unwrap_or(h)),
        None => s.to_string(),
    }
}

/// "3m ago"-style age.
pub fn age(t: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) else { return t.to_string() };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

/// "in 5m" / "5m ago".
pub fn until(t: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) else { return t.to_string() };
    let secs = (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    if secs >= 0 { format!("in {}", human_duration(secs).trim_end_matches(" ago")) } else { human_duration(-secs) }
}

fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let s = if secs < 5 {
        return "just now".into();
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    };
    format!("{s} ago")
}
