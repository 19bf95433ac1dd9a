//! Signing in and out, and what every later request is checked against: the session cookie
//! (a random id mapped in memory to the human), the per-session CSRF token, and the `Origin` /
//! `Sec-Fetch-Site` headers. The token a human signs in with is checked once and never stored.

use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::Ui;
use super::html::{Nav, shell};
use super::respond::{page, see_other, to_login};
use crate::config::{HumanConfig, hash_token};

/// Cookie holding the signed-in session id.
pub(super) const SESSION_COOKIE: &str = "airlock_ui";
/// Cookie holding the sign-in form's CSRF nonce (double-submit) before anyone is signed in.
pub(super) const LOGIN_COOKIE: &str = "airlock_ui_login";
/// How long a sign-in lasts.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// A failed sign-in answers after this delay, to slow down guessing.
const SIGN_IN_FAILURE_DELAY: Duration = Duration::from_millis(250);

/// A signed-in browser.
pub(super) struct SignedIn {
    human: String,
    /// The human as the identity provider's claims made them, for a sign-in there (`None`: a
    /// static token's human, read from the configuration on each request).
    from_provider: Option<HumanConfig>,
    csrf: String,
    expires: Instant,
}

/// The human behind one request.
pub(super) struct Viewer {
    pub(super) human: HumanConfig,
    pub(super) csrf: String,
}

impl Ui {
    /// The signed-in human, from the session cookie.
    pub(super) fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let sid = cookie(headers, SESSION_COOKIE)?;
        let (human, from_provider, csrf) = {
            let mut sessions = airlock_core::sync::lock(&self.sessions);
            let s = sessions.get(&sid)?;
            if s.expires <= Instant::now() {
                sessions.remove(&sid);
                return None;
            }
            (s.human.clone(), s.from_provider.clone(), s.csrf.clone())
        };
        if let Some(human) = from_provider {
            return Some(Viewer { human, csrf });
        }
        // A human removed from the configuration is signed out.
        Some(Viewer { human: self.human(&human)?, csrf })
    }

    pub(super) fn sign_in(&self, human: &str, from_provider: Option<HumanConfig>) -> Option<String> {
        let sid = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut sessions = airlock_core::sync::lock(&self.sessions);
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            sid.clone(),
            SignedIn { human: human.to_string(), from_provider, csrf, expires: now + SESSION_TTL },
        );
        Some(sid)
    }

    fn sign_out(&self, headers: &HeaderMap) {
        if let Some(sid) = cookie(headers, SESSION_COOKIE) {
            airlock_core::sync::lock(&self.sessions).remove(&sid);
        }
    }
}

pub(super) fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Compares secrets in time independent of where they differ.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && !a.is_empty() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a state-changing request comes from our own pages. Browsers send `Origin` with every
/// form `POST`; when it is there it must name this host. `Sec-Fetch-Site`, when sent, must not say
/// the request came from another site. The CSRF token is checked separately.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text(header::ORIGIN) else { return true };
    let Some((_, authority)) = origin.split_once("://") else { return false };
    let forwarded = text(header::HeaderName::from_static("x-forwarded-host"));
    [text(header::HOST), forwarded].into_iter().flatten().any(|host| host.eq_ignore_ascii_case(authority))
}

/// Whether the browser reached us over HTTPS (through a proxy that says so), so cookies can be
/// marked `Secure`. A forged header only makes the cookie stricter.
pub(super) fn is_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

pub(super) fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"))
        .ok()
}

pub(super) async fn root(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_some() { see_other("/ui/inbox") } else { to_login() }
}

/// The sign-in form as sent.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub(super) fn login_page(ui: &Ui, status: StatusCode, nonce: &str, error: Option<&str>, secure: bool) -> Response {
    let provider = ui.app.access().human_sign_in().is_some();
    let body = html! {
        div.login-box {
            div.panel {
                h1 { "Sign in" }
                p.sub { "Review and approve what agents want to do." }
                @if let Some(e) = error { div.flash.error role="alert" { (e) } }
                @if provider {
                    div.buttons { a.button.primary #sso href="/ui/login/oidc" { "Sign in with your organisation" } }
                    p.hint { "Or with an airlock token:" }
                }
                form.login method="post" action="/ui/login" {
                    input type="hidden" name="csrf" value=(nonce);
                    label for="token" { "Your airlock token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    p.hint { "The token your airlock operator gave you. Agents' tokens can't sign in here." }
                    div.buttons { button.primary type="submit" { "Sign in" } }
                }
            }
        }
    };
    let mut response = page(status, shell("Sign in", None, Nav::None, 0, body));
    if let Some(c) = set_cookie(LOGIN_COOKIE, nonce, 3600, secure) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

pub(super) fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        shell(
            "Unavailable",
            None,
            Nav::None,
            0,
            html! { div.flash.error { "airlock could not create a secure random token; try again" } },
        ),
    )
}

pub(super) async fn login_form(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_some() {
        return see_other("/ui/inbox");
    }
    let Some(nonce) = cookie(&headers, LOGIN_COOKIE).filter(|n| n.len() == 64).or_else(random_hex) else {
        return unavailable();
    };
    login_page(&ui, StatusCode::OK, &nonce, None, is_https(&headers))
}

pub(super) async fn login(State(ui): State<Ui>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let secure = is_https(&headers);
    let nonce = cookie(&headers, LOGIN_COOKIE);
    if !same_origin(&headers) || !nonce.as_deref().is_some_and(|n| same_secret(n, &form.csrf)) {
        let Some(fresh) = random_hex() else { return unavailable() };
        return login_page(
            &ui,
            StatusCode::FORBIDDEN,
            &fresh,
            Some("the sign-in form expired or came from another site; sign in again"),
            secure,
        );
    }
    let hash = hash_token(form.token.trim());
    let human = ui.engine().config().humans.iter().find(|h| h.token_hash == Some(hash)).map(|h| h.human.id.clone());
    let Some(human) = human else {
        tokio::time::sleep(SIGN_IN_FAILURE_DELAY).await;
        let nonce = nonce.unwrap_or_default();
        return login_page(
            &ui,
            StatusCode::UNAUTHORIZED,
            &nonce,
            Some("sign-in refused: that is not a human's airlock token"),
            secure,
        );
    };
    let Some(sid) = ui.sign_in(&human, None) else { return unavailable() };
    tracing::info!(human = %human, "signed in to the review UI");
    let mut response = see_other("/ui/inbox");
    let h = response.headers_mut();
    if let Some(c) = set_cookie(SESSION_COOKIE, &sid, SESSION_TTL.as_secs(), secure) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(LOGIN_COOKIE, "", 0, secure) {
        h.append(header::SET_COOKIE, c);
    }
    response
}

/// A form that carries only its CSRF token (sign out).
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn forbidden(viewer: Option<&Viewer>) -> Response {
    page(
        StatusCode::FORBIDDEN,
        shell(
            "Refused",
            viewer,
            Nav::None,
            0,
            html! {
                h1 { "Refused" }
                div.flash.error role="alert" {
                    "This form is out of date or was sent from another site, so nothing was changed. "
                    "Go back, reload the page and try again."
                }
            },
        ),
    )
}

/// The viewer, if the request carries their session and a valid CSRF token from our own pages;
/// otherwise the refusal page.
pub(super) fn checked(ui: &Ui, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Box<Response>> {
    match ui.viewer(headers) {
        Some(v) if same_origin(headers) && same_secret(&v.csrf, csrf) => Ok(v),
        other => Err(Box::new(forbidden(other.as_ref()))),
    }
}

pub(super) async fn logout(State(ui): State<Ui>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(refused) = checked(&ui, &headers, &form.csrf) {
        return *refused;
    }
    ui.sign_out(&headers);
    let mut response = to_login();
    if let Some(c) = set_cookie(SESSION_COOKIE, "", 0, is_https(&headers)) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7878"));
        assert!(same_origin(&h), "no Origin: the CSRF token decides");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7878"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("", ""));
    }
}
