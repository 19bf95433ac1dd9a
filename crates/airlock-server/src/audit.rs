//! Signed checkpoints of the journal.
//!
//! A checkpoint commits to every event so far: the RFC 6962 Merkle root over the event hashes in
//! journal order, with the event count, signed with Ed25519 as a C2SP signed note
//! (`tlog-checkpoint` body: origin, tree size, base64 root hash). `airlock audit verify` checks
//! each checkpoint's signature and that the journal still has the events it covers, unchanged —
//! which also catches truncation of the newest events, which hash chains alone cannot. Cutting
//! the newest events *and* the checkpoints that cover them leaves a journal that is consistent
//! with itself; only a checkpoint kept elsewhere (an anchor, see [`verify`]) shows that cut.

mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::{AuditKey, Config};
use crate::engine::Engine;

pub use verify::{
    Anchor, AnchorError, AnchorReport, CheckpointReport, KeySource, PublicKey, SignedReport, latest_anchor,
    public_key_for, resolve_public_key, verify_checkpoints, verify_signed,
};

/// Key file created in `data_dir` when no `[audit] signing_key` is configured.
pub const KEY_FILE: &str = "audit.key";
/// Public key file written next to it, for auditors.
pub const PUBLIC_KEY_FILE: &str = "audit.pub";

/// The checkpoint signer.
#[derive(Clone)]
pub struct Signer_ {
    key: SigningKey,
    origin: String,
}

impl std::fmt::Debug for Signer_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// The signer type under a readable name.
pub type CheckpointSigner = Signer_;

/// A key that is not 32 bytes in base64 or hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key is 32 bytes in base64 or hex")]
pub struct KeyError;

pub(crate) fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bytes = B64
        .decode(text)
        .ok()
        .filter(|b| b.len() == 32)
        .or_else(|| hex::decode(text).ok().filter(|b| b.len() == 32))
        .ok_or(KeyError)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// The 4-byte key hash of a signed note's Ed25519 key: SHA-256(name, `\n`, 0x01, public key).
fn key_hash(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x01]);
    h.update(public.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d[..4]);
    out
}

impl Signer_ {
    /// Loads the configured key (`[audit] signing_key`), or the key file in `data_dir`,
    /// creating it (and the public key file) on first start.
    pub fn load_or_create(config: &Config) -> Result<Signer_, Error> {
        let origin = config.audit.origin.clone();
        let data_dir = &config.server.data_dir;
        let key = match &config.audit.signing_key {
            Some(AuditKey::Env { seed, .. }) => SigningKey::from_bytes(seed),
            Some(AuditKey::File(path)) => {
                let key = read_signing_key(path)?;
                if inside(path, data_dir) {
                    tracing::warn!(
                        path = %path.display(),
                        "the audit signing key is inside `data_dir`: whoever can rewrite the journal can re-sign it"
                    );
                }
                key
            }
            None => {
                let path = data_dir.join(KEY_FILE);
                if path.exists() {
                    read_signing_key(&path)?
                } else {
                    let io = |source| Error::Write { path: path.clone(), source };
                    std::fs::create_dir_all(data_dir).map_err(io)?;
                    let mut seed = [0u8; 32];
                    getrandom::fill(&mut seed).map_err(|e| Error::NoRandomness(e.to_string()))?;
                    write_private(&path, &B64.encode(seed)).map_err(io)?;
                    tracing::info!(path = %path.display(), "created the audit signing key");
                    SigningKey::from_bytes(&seed)
                }
            }
        };
        write_public(data_dir, &key)?;
        Ok(Signer_ { key, origin })
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// A signed note for a tree of `size` events with `root`.
    pub fn note(&self, size: u64, root: &[u8; 32]) -> String {
        let body = format!("{}\n{size}\n{}\n", self.origin, B64.encode(root));
        let sig: Signature = self.key.sign(body.as_bytes());
        let mut blob = key_hash(&self.origin, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob))
    }
}

/// Writes a new file only its owner can read (mode 0600 on Unix); refuses to overwrite one.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)
    }
}

fn write_public(dir: &Path, key: &SigningKey) -> Result<(), Error> {
    let path = dir.join(PUBLIC_KEY_FILE);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("{}\n", B64.encode(key.verifying_key().as_bytes()))))
        .map_err(|source| Error::Write { path, source })
}

/// Reads a signing key file: an Ed25519 seed of 32 bytes in base64 or hex.
pub(crate) fn read_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let seed = decode_key(&text).map_err(|source| Error::Key { path: path.to_path_buf(), source })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Whether `path` lies inside `dir` (both resolved when they exist, so `./data/../data/x` is
/// inside `data`).
fn inside(path: &Path, dir: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    path.starts_with(dir)
}

/// Why the audit key could not be loaded, or a journal not checked. The underlying error is the
/// [`std::error::Error::source`], not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file, public key file or anchor that can't be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file or public key file that can't be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file that does not hold a key.
    #[error("`{}` does not hold a key", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// No randomness for a new key.
    #[error("no randomness for the audit key: {0}")]
    NoRandomness(String),
    /// A public key given on the command line that is neither a key nor a file with one.
    #[error("`{0}` is neither a public key (32 bytes in base64 or hex) nor a file that holds one")]
    GivenKey(String),
    /// An anchor that is not one.
    #[error("anchor `{}`", path.display())]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AnchorError,
    },
    /// The journal has no checkpoint to anchor.
    #[error(
        "the journal has no signed checkpoint yet: airlock signs one after the first event, every `checkpoint_every_events` events, every `checkpoint_interval_seconds` and at shutdown"
    )]
    NoCheckpoint,
    /// The newest checkpoint does not verify, or no longer matches the journal.
    #[error("the newest checkpoint can't be anchored: {0}")]
    BadCheckpoint(String),
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] airlock_store::Error),
}

/// A parsed checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Origin line.
    pub origin: String,
    /// Events covered.
    pub size: u64,
    /// Merkle root.
    pub root: [u8; 32],
}

/// Why a checkpoint note does not verify.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// The note has no blank line between its body and its signatures.
    #[error("not a signed note (no blank line)")]
    NotANote,
    /// The body has no origin line.
    #[error("no origin line")]
    NoOrigin,
    /// The body's second line is missing or not a number.
    #[error("no tree size line")]
    NoSize,
    /// The body has no third line.
    #[error("no root hash line")]
    NoRoot,
    /// The root hash line is not base64.
    #[error("the root hash is not base64")]
    RootNotBase64,
    /// The root hash is not a SHA-256 hash.
    #[error("the root hash is not 32 bytes")]
    RootLength,
    /// The public key to verify with does not decode.
    #[error("public key: {0}")]
    PublicKeyEncoding(#[source] KeyError),
    /// The public key decodes but is not an Ed25519 point.
    #[error("public key: {0}")]
    PublicKey(#[source] ed25519_dalek::SignatureError),
    /// The signature line by this key has a malformed signature.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature by this key does not match the body.
    #[error("the signature does not match: the checkpoint was altered or signed by another key")]
    Mismatch,
    /// No signature line is by this key.
    #[error("no signature by this key")]
    NoSignature,
}

/// Parses a note's body without checking its signature: the checkpoint it claims, its body (to
/// sign or verify) and its signature lines.
pub(crate) fn parse_note(note: &str) -> Result<(Checkpoint, String, &str), NoteError> {
    let (body, sigs) = note.split_once("\n\n").ok_or(NoteError::NotANote)?;
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines.next().ok_or(NoteError::NoOrigin)?.to_string();
    let size: u64 = lines.next().and_then(|l| l.parse().ok()).ok_or(NoteError::NoSize)?;
    let root_b64 = lines.next().ok_or(NoteError::NoRoot)?;
    let root_bytes = B64.decode(root_b64).map_err(|_| NoteError::RootNotBase64)?;
    let root: [u8; 32] = root_bytes.try_into().map_err(|_| NoteError::RootLength)?;
    Ok((Checkpoint { origin, size, root }, body, sigs))
}

/// Parses a note and checks its signature against `public` (base64 Ed25519 key).
pub fn verify_note(note: &str, public: &str) -> Result<Checkpoint, NoteError> {
    let (checkpoint, body, sigs) = parse_note(note)?;
    let public = decode_key(public).map_err(NoteError::PublicKeyEncoding)?;
    let vk = VerifyingKey::from_bytes(&public).map_err(NoteError::PublicKey)?;
    let want_hash = key_hash(&checkpoint.origin, &vk);
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { continue };
        let Some((name, blob)) = rest.split_once(' ') else { continue };
        let Ok(blob) = B64.decode(blob) else { continue };
        if name != checkpoint.origin || blob.len() != 68 || blob[..4] != want_hash {
            continue;
        }
        let sig = Signature::from_slice(&blob[4..]).map_err(|_| NoteError::MalformedSignature)?;
        return vk.verify(body.as_bytes(), &sig).map(|_| checkpoint).map_err(|_| NoteError::Mismatch);
    }
    Err(NoteError::NoSignature)
}

/// Makes a checkpoint now if events were added since `last`; returns the new size.
pub async fn checkpoint_once(engine: &Engine, signer: &Signer_, last: u64) -> anyhow::Result<u64> {
    let (size, root) = engine.store().tree_head().await?;
    if size == 0 || size == last {
        return Ok(last);
    }
    let note = signer.note(size, &root);
    engine.store().save_checkpoint(size, note, Utc::now()).await?;
    tracing::debug!(size, "journal checkpoint signed");
    Ok(size)
}

/// Counts the events the engine commits and wakes the checkpointer once `[audit]
/// checkpoint_every_events` more were committed than its last checkpoint covered.
///
/// The checkpointer must not read the journal for every event: a checkpoint reads the tree head,
/// and even asking how many events there are is a query. Instead the engine adds each commit's
/// event count to an atomic counter (it knows the count without asking anyone), and compares the
/// total with the count the checkpointer asked to be woken at; only when that is reached does it
/// wake the checkpointer, once. So an event costs two atomic operations and no task wake-up, and
/// a checkpoint is signed as soon as it is due rather than on the next tick of some poll.
#[derive(Debug)]
pub struct CheckpointTrigger {
    /// Events committed through the engine since it started.
    committed: AtomicU64,
    /// Wake the checkpointer when `committed` reaches this (`u64::MAX`: nobody is waiting).
    due_at: AtomicU64,
    wake: Notify,
}

impl Default for CheckpointTrigger {
    fn default() -> Self {
        CheckpointTrigger { committed: AtomicU64::new(0), due_at: AtomicU64::new(u64::MAX), wake: Notify::new() }
    }
}

impl CheckpointTrigger {
    /// Counts `events` just committed, and wakes the checkpointer if a checkpoint is now due.
    pub(crate) fn committed(&self, events: usize) {
        if events == 0 {
            return;
        }
        let events = u64::try_from(events).unwrap_or(u64::MAX);
        let total = self.committed.fetch_add(events, Ordering::AcqRel).saturating_add(events);
        if total >= self.due_at.load(Ordering::Acquire) {
            // Stores a permit when the checkpointer is busy signing: it looks again right after.
            self.wake.notify_one();
        }
    }

    /// Events committed since the engine started.
    fn count(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Waits until the count reaches `due`. Returns at once if it already has.
    async fn reached(&self, due: u64) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before `due_at` is published and the count read, so that a commit in
            // between is not missed.
            woken.as_mut().enable();
            self.due_at.store(due, Ordering::Release);
            if self.count() >= due {
                return;
            }
            woken.await;
            // A permit left by a commit before the last checkpoint wakes us early; look again.
            if self.count() >= due {
                return;
            }
        }
    }
}

/// Signs a checkpoint with the first event committed after start, then when `[audit]
/// checkpoint_every_events` events were committed since the last one, and at the latest `[audit]
/// checkpoint_interval_seconds` after it (when there are new events), until `shutdown`; then once
/// more.
pub async fn run_checkpoints(engine: Engine, signer: Signer_, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = engine.config().audit.checkpoint_interval;
    let every = engine.config().audit.checkpoint_every_events;
    let trigger = engine.checkpoint_trigger();
    let mut last = 0;
    // Events counted when the last checkpoint was made. It is read before the tree head, so an
    // event committed in between is both in that checkpoint and counted towards the next: the
    // next checkpoint may come a little early, never late.
    // Zero, not the count now: events committed before this task first ran (a request served
    // the moment the server listens) still make the first checkpoint due at once.
    let mut counted: u64 = 0;
    loop {
        // The first checkpoint of a run is due with its first event, so that it also covers what
        // the journal holds from before (events of a run that crashed before its last
        // checkpoint, those written while starting) and a journal with events is without any
        // checkpoint only for a moment.
        let due = counted.saturating_add(if last == 0 { 1 } else { every });
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = trigger.reached(due) => {}
            _ = shutdown.changed() => break,
        }
        // A failed checkpoint is tried again when the next one is due, not at once: the journal
        // that failed it is unlikely to be back a moment later.
        counted = trigger.count();
        // With replicas, one signs checkpoints: the leader.
        if !engine.is_leader() {
            continue;
        }
        match checkpoint_once(&engine, &signer, last).await {
            Ok(size) => last = size,
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
        }
    }
    if engine.is_leader()
        && let Err(e) = checkpoint_once(&engine, &signer, last).await
    {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_verify_and_detect_tampering() {
        let signer = Signer_ { key: SigningKey::from_bytes(&[7u8; 32]), origin: "airlock/test".into() };
        let note = signer.note(42, &[9u8; 32]);
        assert!(note.starts_with("airlock/test\n42\n"));
        let cp = verify_note(&note, &signer.public_key()).unwrap();
        assert_eq!((cp.size, cp.root), (42, [9u8; 32]));
        let forged = note.replacen("\n42\n", "\n41\n", 1);
        let err = verify_note(&forged, &signer.public_key()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the signature does not match: the checkpoint was altered or signed by another key"
        );
        let other = Signer_ { key: SigningKey::from_bytes(&[8u8; 32]), origin: "airlock/test".into() };
        assert!(matches!(verify_note(&note, &other.public_key()), Err(NoteError::NoSignature)));
        let err = verify_note(&note, "short").unwrap_err();
        assert_eq!(err.to_string(), "public key: a key is 32 bytes in base64 or hex");
        assert!(matches!(verify_note("airlock/test\n42\n", &signer.public_key()), Err(NoteError::NotANote)));
    }

    #[tokio::test]
    async fn the_trigger_wakes_the_checkpointer_once_enough_events_were_committed() {
        use futures::FutureExt;
        let trigger = CheckpointTrigger::default();
        trigger.committed(3);
        let mut reached = Box::pin(trigger.reached(5));
        assert!(futures::poll!(reached.as_mut()).is_pending());
        trigger.committed(1);
        assert!(futures::poll!(reached.as_mut()).is_pending(), "4 of 5 events");
        trigger.committed(2);
        assert!(futures::poll!(reached.as_mut()).is_ready(), "6 of 5 events");

        // A commit while the checkpoint is signed leaves a wake-up behind; it does not count as
        // the next checkpoint being due.
        trigger.committed(1);
        let mut next = Box::pin(trigger.reached(6 + 5));
        assert!(futures::poll!(next.as_mut()).is_pending(), "7 of 11 events");
        trigger.committed(0);
        trigger.committed(4);
        assert!(futures::poll!(next.as_mut()).is_ready(), "11 of 11 events");
        // Already there: no waiting at all.
        assert!(trigger.reached(2).now_or_never().is_some());
    }
}
