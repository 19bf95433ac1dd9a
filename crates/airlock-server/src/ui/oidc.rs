//! Signing in at the identity provider (`[identity.humans]`): `/ui/login/oidc` starts the
//! authorization code flow and `/ui/login/callback` finishes it (see
//! [`crate::human_sign_in`]). The flow's `state` is bound to the browser that started it by a
//! cookie; the callback is refused unless the browser brings the same `state` back.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::Ui;
use super::html::{Nav, shell};
use super::respond::{not_found, page, see_other};
use super::session::{
    LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL, cookie, is_https, login_page, random_hex, same_secret, set_cookie,
    unavailable,
};
use crate::human_sign_in::SignInError;

/// Cookie holding the `state` of a sign-in in progress at the provider. `SameSite=Lax`: the
/// provider sends the browser back with a top-level navigation from its own site, which a
/// `Strict` cookie would not come with; it is scoped to the callback's path and useless alone.
const FLOW_COOKIE: &str = "airlock_ui_oidc";
/// How long a sign-in at the provider may take.
const FLOW_SECONDS: u64 = 600;

fn flow_cookie(value: &str, max_age: u64, secure: bool) -> Option<axum::http::HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    axum::http::HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path=/ui/login; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn refused(ui: &Ui, status: StatusCode, why: &str, secure: bool) -> Response {
    let Some(nonce) = random_hex() else { return unavailable() };
    let mut response = login_page(ui, status, &nonce, Some(why), secure);
    if let Some(c) = flow_cookie("", 0, secure) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// `GET /ui/login/oidc`: to the provider's sign-in page.
pub(super) async fn start(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let secure = is_https(&headers);
    let Some(sign_in) = ui.app.access().human_sign_in().cloned() else { return not_found(State(ui), headers).await };
    match sign_in.start().await {
        Ok(started) => {
            let mut response = see_other(&started.url);
            if let Some(c) = flow_cookie(&started.state, FLOW_SECONDS, secure) {
                response.headers_mut().append(header::SET_COOKIE, c);
            }
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a sign-in at the identity provider");
            refused(&ui, StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), secure)
        }
    }
}

/// What the provider sends back (RFC 6749 §4.1.2, and RFC 9207's `iss`).
#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /ui/login/callback`: checks the `state` against the browser's, finishes the flow and
/// signs the human in.
pub(super) async fn callback(State(ui): State<Ui>, headers: HeaderMap, Query(back): Query<Callback>) -> Response {
    let secure = is_https(&headers);
    let Some(sign_in) = ui.app.access().human_sign_in().cloned() else { return not_found(State(ui), headers).await };
    let state = back.state.unwrap_or_default();
    let bound = cookie(&headers, FLOW_COOKIE);
    if !bound.as_deref().is_some_and(|b| same_secret(b, &state)) {
        tracing::warn!("a sign-in came back without the state its browser started with");
        return refused(&ui, StatusCode::FORBIDDEN, &SignInError::UnknownState.to_string(), secure);
    }
    let config = ui.engine().config().clone();
    let issuer = &config.identity.as_ref().and_then(|i| i.humans.as_ref()).map(|h| h.options.issuer.clone());
    if let (Some(iss), Some(expected)) = (&back.iss, issuer)
        && iss != expected
    {
        // RFC 9207: a response from another provider (a mix-up attack) is not this one's.
        return refused(&ui, StatusCode::FORBIDDEN, "the sign-in came back from another identity provider", secure);
    }
    let code = match (back.code, back.error) {
        (Some(code), None) => code,
        (_, error) => {
            // The flow is over either way.
            sign_in.abandon(&state);
            let why = format!(
                "the identity provider did not sign you in ({}{})",
                error.unwrap_or_else(|| "no code".into()),
                back.error_description.map(|d| format!(": {d}")).unwrap_or_default()
            );
            return refused(&ui, StatusCode::UNAUTHORIZED, &why, secure);
        }
    };
    let human = match sign_in.finish(&state, &code, &config).await {
        Ok(human) => human,
        Err(e) => {
            tracing::warn!(error = %e, "a sign-in at the identity provider was refused");
            let status = match e {
                SignInError::Provider(_) => StatusCode::BAD_GATEWAY,
                SignInError::NotAHuman(_) | SignInError::UnknownState => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            return refused(&ui, status, &e.to_string(), secure);
        }
    };
    let id = human.human.id.clone();
    let Some(sid) = ui.sign_in(&id, Some(human)) else { return unavailable() };
    tracing::info!(human = %id, "signed in to the review UI at the identity provider");
    // A page, not a redirect: the browser arrived here from the provider's site, and a
    // `SameSite=Strict` session cookie is not sent on the rest of such a navigation; the next
    // request, made from this page, is same-site.
    let body = html! {
        div.login-box { div.panel {
            h1 { "Signed in" }
            p { "Signed in as " strong { (id) } ". " a #continue href="/ui/inbox" { "Continue to the inbox" } }
        } }
    };
    let mut response = page(StatusCode::OK, shell("Signed in", None, Nav::None, 0, body));
    let h = response.headers_mut();
    if let Ok(refresh) = axum::http::HeaderValue::from_str("0; url=/ui/inbox") {
        h.insert(header::REFRESH, refresh);
    }
    if let Some(c) = set_cookie(SESSION_COOKIE, &sid, SESSION_TTL.as_secs(), secure) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(LOGIN_COOKIE, "", 0, secure) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = flow_cookie("", 0, secure) {
        h.append(header::SET_COOKIE, c);
    }
    response
}
