//! Responses every page shares: the UI's security headers, redirects, and the pages for errors
//! and unknown paths.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Ui;
use super::html::{Nav, shell};
use super::session::Viewer;
use crate::engine;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn harden(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// An HTML page (or fragment) with the UI's security headers.
pub(super) fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
    harden(&mut response);
    response
}

pub(super) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut response);
    response
}

pub(super) fn to_login() -> Response {
    see_other("/ui/login")
}

pub(super) fn error_status(e: &engine::Error) -> StatusCode {
    match e {
        engine::Error::NotFound { .. } => StatusCode::NOT_FOUND,
        engine::Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        engine::Error::Conflict(_) => StatusCode::CONFLICT,
        engine::Error::Invalid(_) => StatusCode::BAD_REQUEST,
        engine::Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        engine::Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        engine::Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// What the user is told about an engine error: its message, except for journal failures, whose
/// details stay in the log.
pub(super) fn error_text(e: &engine::Error) -> String {
    match e {
        engine::Error::Store(err) => {
            tracing::error!(error = %err, "journal error in the review UI");
            "the journal could not be read or written; nothing was changed, try again shortly".to_string()
        }
        other => other.to_string(),
    }
}

pub(super) fn failure_page(viewer: Option<&Viewer>, e: &engine::Error) -> Response {
    let status = error_status(e);
    let title = if status == StatusCode::NOT_FOUND { "Not found" } else { "Something went wrong" };
    page(
        status,
        shell(title, viewer, Nav::None, 0, html! { h1 { (title) } div.flash.error role="alert" { (error_text(e)) } }),
    )
}

pub(super) async fn not_found(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let viewer = ui.viewer(&headers);
    let body = html! {
        h1 { "Not found" }
        p { "There is no such page. " a href="/ui/inbox" { "Go to the inbox" } "." }
    };
    page(StatusCode::NOT_FOUND, shell("Not found", viewer.as_ref(), Nav::None, 0, body))
}
