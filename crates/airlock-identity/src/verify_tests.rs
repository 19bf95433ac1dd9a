//! The checks against a key set served on this machine, with tokens signed here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const RESOURCE: &str = "http://127.0.0.1/mcp";

/// An Ed25519 key from a seed, as PKCS#8 DER (RFC 8410: a fixed prefix and the seed).
fn ed_key(seed: u8) -> EncodingKey {
    let mut der = hex_bytes("302e020100300506032b657004220420");
    der.extend([seed; 32]);
    EncodingKey::from_ed_der(&der)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn public_jwk(seed: u8, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&ed_key(seed), Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

/// A key set server: serves `keys` at `/jwks` and discovery at the well-known path, counting
/// key-set fetches.
struct Idp {
    issuer: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn idp(keys: Vec<Jwk>, named_issuer: Option<&str>) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let discovery = json!({"issuer": named_issuer.unwrap_or(&issuer), "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let set = JwkSet { keys: k.lock().unwrap().clone() };
                async move { axum::Json(serde_json::to_value(set).unwrap()) }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Idp { issuer, keys, fetches, _task: task }
}

fn options(idp: &Idp) -> IssuerOptions {
    IssuerOptions {
        leeway: Duration::ZERO,
        keys_min_refresh: Duration::from_secs(60),
        ..IssuerOptions::new(&idp.issuer)
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(idp: &Idp) -> Value {
    json!({"iss": idp.issuer, "sub": "bot", "aud": RESOURCE, "exp": now() + 300, "client_id": "bot", "scope": "mcp"})
}

fn sign(claims: &Value, seed: u8, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &ed_key(seed)).unwrap()
}

fn verifier(options: IssuerOptions) -> Arc<Verifier> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Verifier::new(vec![options], reqwest::Client::new())
}

#[tokio::test]
async fn a_token_signed_with_a_published_key_for_this_resource_is_accepted() {
    let idp = idp(vec![public_jwk(1, "k1")], None).await;
    let v = verifier(options(&idp));
    let verified = v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap();
    assert_eq!(verified.issuer, idp.issuer);
    assert_eq!(verified.subject(), "bot");
    assert_eq!(verified.scopes(), ["mcp"]);
    // Found by discovery, fetched once, then cached.
    v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap();
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expired_early_and_misaddressed_tokens_are_refused_with_the_reason() {
    let idp = idp(vec![public_jwk(1, "k1")], None).await;
    let v = verifier(options(&idp));
    let mut expired = claims(&idp);
    expired["exp"] = json!(now() - 5);
    assert_eq!(v.verify(&sign(&expired, 1, "k1"), RESOURCE).await, Err(Error::Expired { exp: now() - 5 }));
    let mut early = claims(&idp);
    early["nbf"] = json!(now() + 120);
    assert!(matches!(v.verify(&sign(&early, 1, "k1"), RESOURCE).await, Err(Error::NotYetValid { .. })));
    let mut other = claims(&idp);
    other["aud"] = json!(["https://other.example"]);
    let e = v.verify(&sign(&other, 1, "k1"), RESOURCE).await.unwrap_err();
    assert_eq!(e.to_string(), format!("the token is for `https://other.example`, not for `{RESOURCE}`"));
    let mut no_exp = claims(&idp);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(v.verify(&sign(&no_exp, 1, "k1"), RESOURCE).await, Err(Error::Claim("exp".into())));
    // Configured audiences replace the resource identifier.
    let v = verifier(IssuerOptions { audiences: Some(vec!["api://airlock".into()]), ..options(&idp) });
    let e = v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap_err();
    assert!(matches!(e, Error::WrongAudience { .. }), "{e}");
    // Leeway lets a token a few seconds past `exp` through.
    let v = verifier(IssuerOptions { leeway: Duration::from_secs(30), ..options(&idp) });
    v.verify(&sign(&expired, 1, "k1"), RESOURCE).await.unwrap();
}

#[tokio::test]
async fn unsigned_hmac_and_forged_tokens_are_refused() {
    let idp = idp(vec![public_jwk(1, "k1")], None).await;
    let v = verifier(options(&idp));
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims(&idp)));
    let e = v.verify(&none, RESOURCE).await.unwrap_err();
    assert!(matches!(&e, Error::AlgorithmNotAllowed { alg, .. } if alg == "none"), "{e}");
    // HMAC keyed with the public key, the classic confusion attack.
    let public = public_jwk(1, "k1");
    let secret = serde_json::to_vec(&public).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hmac = encode(&header, &claims(&idp), &EncodingKey::from_secret(&secret).unwrap()).unwrap();
    let e = v.verify(&hmac, RESOURCE).await.unwrap_err();
    assert!(matches!(&e, Error::AlgorithmNotAllowed { alg, .. } if alg == "HS256"), "{e}");
    // A payload changed after signing.
    let good = sign(&claims(&idp), 1, "k1");
    let parts: Vec<&str> = good.split('.').collect();
    let mut changed = claims(&idp);
    changed["sub"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&changed), parts[2]);
    assert_eq!(v.verify(&forged, RESOURCE).await, Err(Error::BadSignature(idp.issuer.clone())));
    // A key that is not the issuer's, under the issuer's `kid`.
    assert_eq!(v.verify(&sign(&claims(&idp), 9, "k1"), RESOURCE).await, Err(Error::BadSignature(idp.issuer.clone())));
    // An issuer that is not configured, and things that are not JWTs.
    let mut stranger = claims(&idp);
    stranger["iss"] = json!("https://evil.example");
    assert_eq!(
        v.verify(&sign(&stranger, 1, "k1"), RESOURCE).await,
        Err(Error::UnknownIssuer("https://evil.example".into()))
    );
    assert!(matches!(v.verify("not-a-jwt", RESOURCE).await, Err(Error::Malformed(_))));
    assert!(matches!(v.verify("a.b.c", RESOURCE).await, Err(Error::Malformed(_))));
    // An allowlist without EdDSA refuses EdDSA tokens.
    let v = verifier(IssuerOptions { algorithms: vec![Algorithm::RS256], ..options(&idp) });
    let e = v.verify(&good, RESOURCE).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the token is signed with `EdDSA`, which is not allowed for this issuer (allowed: RS256)"
    );
}

#[tokio::test]
async fn an_unknown_key_is_looked_for_again_but_not_more_often_than_allowed() {
    let idp = idp(vec![public_jwk(1, "k1")], None).await;
    let v = verifier(IssuerOptions { keys_min_refresh: Duration::from_millis(300), ..options(&idp) });
    v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap();
    // A flood of tokens naming keys nobody published: at most one more fetch per interval.
    for i in 0..20 {
        let e = v.verify(&sign(&claims(&idp), 2, &format!("x{i}")), RESOURCE).await.unwrap_err();
        assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
    }
    assert!(idp.fetches.load(Ordering::SeqCst) <= 2, "{} fetches", idp.fetches.load(Ordering::SeqCst));
    // The issuer rotates to a new key: once the interval has passed, its tokens verify.
    idp.keys.lock().unwrap().insert(0, public_jwk(2, "k2"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    v.verify(&sign(&claims(&idp), 2, "k2"), RESOURCE).await.unwrap();
    v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap();
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let idp = idp(vec![public_jwk(1, "k1")], Some("https://someone-else.example")).await;
    let v = verifier(options(&idp));
    let e = v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("names the issuer `https://someone-else.example`"), "{e}");
    // A configured key set needs no discovery.
    let v = verifier(IssuerOptions { jwks_uri: Some(format!("{}/jwks", idp.issuer)), ..options(&idp) });
    v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap();
}

#[tokio::test]
async fn a_required_type_is_checked() {
    let idp = idp(vec![public_jwk(1, "k1")], None).await;
    let v = verifier(IssuerOptions { token_type: Some("at+jwt".into()), ..options(&idp) });
    let e = v.verify(&sign(&claims(&idp), 1, "k1"), RESOURCE).await.unwrap_err();
    assert_eq!(e, Error::WrongType { found: "JWT".into(), expected: "at+jwt".into() });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    header.typ = Some("application/at+jwt".into());
    let typed = encode(&header, &claims(&idp), &ed_key(1)).unwrap();
    v.verify(&typed, RESOURCE).await.unwrap();
}
