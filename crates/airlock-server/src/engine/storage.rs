//! What keeps one agent from filling the disk: the free-space floor under `data_dir`, the
//! sampling of rate-limited calls, and the cap on the arguments a denied call leaves in the
//! journal.

use super::*;

/// Arguments of a denied call larger than this (canonical JSON) are journaled as their digest,
/// size and a truncated copy.
pub(super) const DENIED_ARGUMENTS_MAX_BYTES: usize = 16 * 1024;
/// How much of oversized arguments is kept.
const DENIED_ARGUMENTS_KEPT_CHARS: usize = 1024;
/// At most one rate-limited call per agent is journaled in full per this many seconds; the
/// others are counted (`airlock_rate_limited_unjournaled_total`) and the count is journaled with
/// the next sampled one.
pub(super) const RATE_LIMIT_SAMPLE_SECONDS: i64 = 10;

impl Engine {
    /// Refuses to start anything new when free space under `data_dir` is below the floor. With
    /// the journal in PostgreSQL, `data_dir` holds only keys: the database's disk is watched
    /// where the database runs.
    pub(crate) fn check_disk_floor(&self) -> Result<()> {
        let floor = self.inner.config.server.min_free_disk_bytes;
        if floor == 0 || matches!(self.inner.config.storage, crate::config::StorageConfig::Postgres(_)) {
            return Ok(());
        }
        let dir = &self.inner.config.server.data_dir;
        let free = match rustix::fs::statvfs(dir) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read free disk space");
                return Ok(());
            }
        };
        if free >= floor {
            return Ok(());
        }
        metrics::counter!(tm::DISK_FLOOR_REFUSALS).increment(1);
        Err(Error::InsufficientStorage(format!(
            "only {} MiB free under {} (floor: [server] min_free_disk_mb = {}); airlock starts no new session or \
             action until space is freed. Approvals, kill switches and reads still work",
            free / (1024 * 1024),
            dir.display(),
            floor / (1024 * 1024)
        )))
    }

    /// Whether a call the rate limit denied is journaled (one per agent per sample period, with
    /// the count left out since); `Some(n)` means record it, `n` having been left out before it.
    pub(super) fn sample_rate_limited(&self, agent_id: &str, now: DateTime<Utc>) -> Option<u64> {
        let mut samples = lock(&self.inner.rate_samples);
        let entry = samples.entry(agent_id.to_string()).or_insert((DateTime::<Utc>::MIN_UTC, 0));
        if now - entry.0 < chrono::Duration::seconds(RATE_LIMIT_SAMPLE_SECONDS) {
            entry.1 += 1;
            metrics::counter!(tm::RATE_LIMITED_UNJOURNALED).increment(1);
            return None;
        }
        let skipped = entry.1;
        *entry = (now, 0);
        Some(skipped)
    }
}

/// A denied call's arguments as the journal keeps them: unchanged up to
/// [`DENIED_ARGUMENTS_MAX_BYTES`], else a marker with the digest of the call, the size and the
/// first characters.
pub(super) fn stored_denied_arguments(arguments: &Value, digest: &str) -> Option<Value> {
    let text = serde_json::to_string(arguments).ok()?;
    if text.len() <= DENIED_ARGUMENTS_MAX_BYTES {
        return None;
    }
    let kept: String = text.chars().take(DENIED_ARGUMENTS_KEPT_CHARS).collect();
    Some(json!({
        "airlock_truncated": true,
        "note": format!(
            "a denied call's arguments over {DENIED_ARGUMENTS_MAX_BYTES} bytes are not journaled in full; `digest` is the call's digest"
        ),
        "bytes": text.len(),
        "digest": digest,
        "prefix": kept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_arguments_are_kept_and_big_ones_become_a_marker() {
        assert_eq!(stored_denied_arguments(&json!({"a": 1}), "sha256:x"), None);
        let big = json!({"blob": "x".repeat(DENIED_ARGUMENTS_MAX_BYTES)});
        let stored = stored_denied_arguments(&big, "sha256:x").expect("truncated");
        assert_eq!(stored["airlock_truncated"], true);
        assert_eq!(stored["digest"], "sha256:x");
        assert!(stored["bytes"].as_u64().unwrap() > DENIED_ARGUMENTS_MAX_BYTES as u64);
        assert_eq!(stored["prefix"].as_str().unwrap().chars().count(), DENIED_ARGUMENTS_KEPT_CHARS);
    }
}
