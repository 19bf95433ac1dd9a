//! Checking the journal's signed checkpoints, and anchors.
//!
//! The checkpoints live in the journal's own database, so they show what was changed *inside*
//! what they cover, never what was cut together with them: delete the newest events and every
//! checkpoint made after the cut, and the rest is consistent. An anchor is a signed checkpoint
//! copied out of the journal (`airlock audit anchor`) and kept elsewhere; `airlock audit verify
//! --anchor` fails when the journal no longer holds, unchanged, every event the anchor covers.
//!
//! Which public key checks the signatures matters as much: `data_dir/audit.pub` sits next to the
//! journal, and whoever can rewrite the journal can replace it. [`resolve_public_key`] prefers a
//! key given by the caller, then the configured signing key's, then the anchor's, and only then
//! that file, and says which one it used.

use std::path::Path;

use airlock_store::JournalReader;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{Error, NoteError, PUBLIC_KEY_FILE, decode_key, parse_note, read_signing_key, verify_note};
use crate::config::{AuditKey, Config};

/// Where the public key that checks checkpoints came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Given by the caller (`--public-key`).
    Given,
    /// The public half of `[audit] signing_key`.
    SigningKey,
    /// The public key recorded in the anchor.
    Anchor,
    /// `data_dir/audit.pub`, next to the journal: it proves nothing against whoever can rewrite
    /// the journal, who can re-sign it with a key of their own and replace this file.
    DataDir,
}

impl KeySource {
    /// Where the key came from, for people.
    pub fn describe(self) -> &'static str {
        match self {
            KeySource::Given => "the key given with --public-key",
            KeySource::SigningKey => "the public half of `[audit] signing_key`",
            KeySource::Anchor => "the key recorded in the anchor",
            KeySource::DataDir => "`data_dir/audit.pub`, next to the journal",
        }
    }
}

/// A public key to check checkpoints with (base64), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicKey {
    /// The Ed25519 public key, base64.
    pub key: String,
    /// Where it came from.
    pub source: KeySource,
}

/// The public key to check checkpoints with: `given` (a key in base64 or hex, or a file holding
/// one), else `[audit] signing_key`'s, else the anchor's, else `data_dir/audit.pub`; `None` when
/// there is none of these.
pub fn resolve_public_key(
    config: &Config,
    given: Option<&str>,
    anchor: Option<&Anchor>,
) -> Result<Option<PublicKey>, Error> {
    if let Some(given) = given {
        return given_key(given).map(|key| Some(PublicKey { key, source: KeySource::Given }));
    }
    match &config.audit.signing_key {
        Some(AuditKey::Env { seed, .. }) => {
            let key = ed25519_dalek::SigningKey::from_bytes(seed);
            return Ok(Some(PublicKey { key: public_of(&key), source: KeySource::SigningKey }));
        }
        Some(AuditKey::File(path)) => {
            let key = read_signing_key(path)?;
            return Ok(Some(PublicKey { key: public_of(&key), source: KeySource::SigningKey }));
        }
        None => {}
    }
    if let Some(key) = anchor.and_then(|a| a.public_key.as_deref()) {
        let key = decode_key(key).map_err(|_| Error::GivenKey(key.to_string()))?;
        return Ok(Some(PublicKey { key: B64.encode(key), source: KeySource::Anchor }));
    }
    let path = config.server.data_dir.join(PUBLIC_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let key = decode_key(&text).map_err(|source| Error::Key { path, source })?;
    Ok(Some(PublicKey { key: B64.encode(key), source: KeySource::DataDir }))
}

/// The public key to verify with: `[audit] signing_key`'s, else `data_dir/audit.pub`.
pub fn public_key_for(config: &Config) -> Result<String, Error> {
    match resolve_public_key(config, None, None)? {
        Some(k) => Ok(k.key),
        None => Err(Error::Read {
            path: config.server.data_dir.join(PUBLIC_KEY_FILE),
            source: std::io::ErrorKind::NotFound.into(),
        }),
    }
}

fn public_of(key: &ed25519_dalek::SigningKey) -> String {
    B64.encode(key.verifying_key().as_bytes())
}

/// A key given on the command line: the key itself, or a file that holds it.
fn given_key(given: &str) -> Result<String, Error> {
    if let Ok(key) = decode_key(given) {
        return Ok(B64.encode(key));
    }
    let path = Path::new(given);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        let key = decode_key(&text).map_err(|source| Error::Key { path: path.to_path_buf(), source })?;
        return Ok(B64.encode(key));
    }
    Err(Error::GivenKey(given.to_string()))
}

/// A signed checkpoint kept away from the journal: what `airlock audit anchor` prints. Only
/// `note` is evidence; the other fields repeat what it says (and the key it verified with), for
/// people and for tools that do not parse notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The note's origin line.
    pub origin: String,
    /// Events it covers: the journal's first `size` events.
    pub size: u64,
    /// Their RFC 6962 Merkle root, base64.
    pub root: String,
    /// When the checkpoint was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The Ed25519 public key it verified with when it was taken, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The signed note (C2SP `tlog-checkpoint`).
    pub note: String,
}

/// Why a file is not an anchor.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Neither the JSON `airlock audit anchor` prints nor a signed note.
    #[error("neither the JSON `airlock audit anchor` prints nor a signed checkpoint note")]
    NotAnAnchor(#[source] NoteError),
    /// The JSON's fields say something else than its signed note.
    #[error("its `{0}` differs from what its signed note says")]
    Disagrees(&'static str),
}

impl Anchor {
    /// The anchor of a stored checkpoint note.
    fn of(note: &str, created_at: Option<String>, public_key: Option<String>) -> Result<Anchor, NoteError> {
        let (cp, _, _) = parse_note(note)?;
        Ok(Anchor {
            origin: cp.origin,
            size: cp.size,
            root: B64.encode(cp.root),
            created_at,
            public_key,
            note: note.into(),
        })
    }

    /// Reads an anchor: the JSON `airlock audit anchor` prints, or a bare signed note.
    pub fn parse(text: &str) -> Result<Anchor, AnchorError> {
        let Ok(given) = serde_json::from_str::<Anchor>(text) else {
            return Anchor::of(text, None, None).map_err(AnchorError::NotAnAnchor);
        };
        let signed = Anchor::of(&given.note, None, given.public_key.clone()).map_err(AnchorError::NotAnAnchor)?;
        for (field, same) in [
            ("origin", signed.origin == given.origin),
            ("size", signed.size == given.size),
            ("root", signed.root == given.root),
        ] {
            if !same {
                return Err(AnchorError::Disagrees(field));
            }
        }
        Ok(given)
    }

    /// Reads the anchor file at `path`.
    pub fn read(path: &Path) -> Result<Anchor, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        Anchor::parse(&text).map_err(|source| Error::Anchor { path: path.to_path_buf(), source })
    }
}

/// What checking the stored checkpoints found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Checkpoints whose signature verified.
    pub checked: usize,
    /// Events in the journal.
    pub events: u64,
    /// Events covered by the newest checkpoint that verified; the rest are not signed yet.
    pub covered: u64,
    /// The first problem, if any.
    pub problem: Option<String>,
}

/// What checking an anchor found.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorReport {
    /// Events the anchor covers.
    pub size: u64,
    /// When its checkpoint was signed, if the anchor says.
    pub created_at: Option<String>,
    /// The problem, if any.
    pub problem: Option<String>,
}

/// What the signatures say about a journal: its checkpoints and, if given, an anchor.
#[derive(Debug, Clone, Serialize)]
pub struct SignedReport {
    /// The checkpoints stored in the journal.
    pub checkpoints: CheckpointReport,
    /// The anchor, if one was given.
    pub anchor: Option<AnchorReport>,
}

impl SignedReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.checkpoints.problem.is_none() && self.anchor.as_ref().is_none_or(|a| a.problem.is_none())
    }
}

/// Checks every stored checkpoint of `journal` against `public` and the events.
pub async fn verify_checkpoints(journal: &JournalReader, public: &str) -> Result<CheckpointReport, Error> {
    Ok(verify_signed(journal, public, None).await?.checkpoints)
}

/// Checks every stored checkpoint of `journal`, and `anchor` if given, against `public` and the
/// events.
pub async fn verify_signed(
    journal: &JournalReader,
    public: &str,
    anchor: Option<&Anchor>,
) -> Result<SignedReport, Error> {
    let notes = journal.checkpoints().await?;
    let hashes = journal.event_hashes().await?;
    let mut report = CheckpointReport { checked: 0, events: len_u64(&hashes), covered: 0, problem: None };
    for (i, stored) in notes.iter().enumerate() {
        let what = format!("checkpoint {} (made {})", i + 1, stored.created_at);
        let cp = match verify_note(&stored.note, public) {
            Ok(cp) => cp,
            Err(e) => {
                report.problem = Some(format!("{what}: {e}"));
                break;
            }
        };
        report.checked += 1;
        if let Some(problem) = covers(&hashes, cp.size, &cp.root) {
            report.problem = Some(format!("{what} {problem}"));
            break;
        }
        report.covered = report.covered.max(cp.size);
    }
    if report.problem.is_none() && notes.is_empty() && !hashes.is_empty() {
        report.problem = Some(format!(
            "the journal has {} events and no signed checkpoint: nothing shows that its newest events were not cut (airlock signs one after the first event of each run and at shutdown)",
            hashes.len()
        ));
    }
    let anchor = anchor.map(|a| AnchorReport {
        size: a.size,
        created_at: a.created_at.clone(),
        problem: match verify_note(&a.note, public) {
            Err(e) => Some(format!("the anchor does not verify with this key: {e}")),
            Ok(cp) => covers(&hashes, cp.size, &cp.root).map(|p| format!("the anchor {p}")),
        },
    });
    Ok(SignedReport { checkpoints: report, anchor })
}

/// Why the journal whose event hashes are `hashes` is not what a checkpoint of `size` events
/// with `root` covered, if it is not; the text continues "checkpoint N …" or "the anchor …".
fn covers(hashes: &[String], size: u64, root: &[u8; 32]) -> Option<String> {
    let events = len_u64(hashes);
    if size > events {
        return Some(format!(
            "covers {size} events but the journal has only {events}: events were removed or the newest were truncated"
        ));
    }
    let prefix = hashes.get(..usize::try_from(size).unwrap_or(usize::MAX)).unwrap_or_default();
    (airlock_store::merkle_root(prefix) != *root)
        .then(|| format!("does not match the first {size} events: events it covers were altered, removed or reordered"))
}

fn len_u64<T>(items: &[T]) -> u64 {
    u64::try_from(items.len()).unwrap_or(u64::MAX)
}

/// The newest stored checkpoint of `journal` as an anchor, once its signature verified with
/// `public` and the journal was found to still hold what it covers.
pub async fn latest_anchor(journal: &JournalReader, public: &PublicKey) -> Result<Anchor, Error> {
    let notes = journal.checkpoints().await?;
    let newest = notes.last().ok_or(Error::NoCheckpoint)?;
    let cp = verify_note(&newest.note, &public.key)
        .map_err(|e| Error::BadCheckpoint(format!("{e} (checked with {})", public.source.describe())))?;
    let hashes = journal.event_hashes().await?;
    if let Some(problem) = covers(&hashes, cp.size, &cp.root) {
        return Err(Error::BadCheckpoint(format!("it {problem}")));
    }
    Anchor::of(&newest.note, Some(newest.created_at.clone()), Some(public.key.clone()))
        .map_err(|e| Error::BadCheckpoint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::Signer_;
    use super::*;

    fn signer() -> Signer_ {
        Signer_ { key: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]), origin: "airlock/test".into() }
    }

    #[test]
    fn an_anchor_is_its_json_or_a_bare_note_and_its_fields_must_agree_with_the_note() {
        let signer = signer();
        let note = signer.note(3, &[9u8; 32]);
        let anchor = Anchor::of(&note, Some("t".into()), Some(signer.public_key())).unwrap();
        assert_eq!((anchor.origin.as_str(), anchor.size), ("airlock/test", 3));
        let json = serde_json::to_string(&anchor).unwrap();
        assert_eq!(Anchor::parse(&json).unwrap(), anchor);
        assert_eq!(Anchor::parse(&note).unwrap().note, note);

        let mut edited = anchor.clone();
        edited.size = 2;
        let err = Anchor::parse(&serde_json::to_string(&edited).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "its `size` differs from what its signed note says");
        let err = Anchor::parse("{\"size\": 3}").unwrap_err();
        assert!(err.to_string().starts_with("neither the JSON `airlock audit anchor` prints"), "{err}");
    }

    #[test]
    fn a_given_public_key_is_the_key_or_a_file_holding_it() {
        let public = signer().public_key();
        assert_eq!(given_key(&public).unwrap(), public);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.pub");
        std::fs::write(&file, format!("{public}\n")).unwrap();
        assert_eq!(given_key(file.to_str().unwrap()).unwrap(), public);
        let err = given_key("nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`nope` is neither a public key (32 bytes in base64 or hex) nor a file that holds one"
        );
    }
}
