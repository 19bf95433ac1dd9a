//! The journal's tables. Every statement is idempotent, so opening an existing journal runs the
//! same text.

/// Creates whatever is missing.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    pos        INTEGER PRIMARY KEY,
    stream     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    UNIQUE (stream, seq)
);
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_agent ON sessions (agent_id, created_at);
CREATE TABLE IF NOT EXISTS actions (
    id              TEXT PRIMARY KEY,
    session_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    agent_id        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    idempotency_key TEXT,
    created_at      TEXT    NOT NULL,
    body            TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_session ON actions (session_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS actions_idempotency ON actions (agent_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS approvals (
    id         TEXT PRIMARY KEY,
    action_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
CREATE TABLE IF NOT EXISTS kill_switches (
    id         TEXT PRIMARY KEY,
    active     INTEGER NOT NULL,
    engaged_at TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    endpoint     TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    next_at      TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at) WHERE delivered_at IS NULL AND next_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoints (
    id         INTEGER PRIMARY KEY,
    size       INTEGER NOT NULL,
    note       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_revisions (
    revision     TEXT PRIMARY KEY,
    activated_at TEXT NOT NULL,
    body         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS breakers (
    tool TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mfa_guards (
    human TEXT PRIMARY KEY,
    body  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_agent ON actions (agent_id, created_at);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    agent_id  TEXT NOT NULL,
    key       TEXT NOT NULL,
    action_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX IF NOT EXISTS actions_open ON actions (status, created_at)
    WHERE status IN ('pending_approval', 'approved', 'executing');
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"#;
