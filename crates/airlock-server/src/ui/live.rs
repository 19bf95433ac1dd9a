//! Live updates: a short-lived server-sent event stream that tells the inbox when approvals
//! change, so it refreshes without polling.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::Ui;
use super::respond::page;

/// The event stream is closed after this long and the browser reconnects by itself, so that an
/// open tab never holds up a graceful shutdown for longer.
const STREAM_LIFETIME: Duration = Duration::from_secs(30);

/// Where an event stream is in its short life.
enum Stream {
    Start(tokio::sync::watch::Receiver<u64>),
    Open(tokio::sync::watch::Receiver<u64>),
    Done,
}

/// Server-sent events: `approvals` each time an approval is requested or resolved. The stream
/// closes after [`STREAM_LIFETIME`] with a `bye` event, and the browser reconnects.
pub(super) async fn events(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_none() {
        return page(StatusCode::UNAUTHORIZED, html! { "Signed out." });
    }
    let mut rx = ui.engine().approvals_changed();
    rx.borrow_and_update();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream = futures::stream::unfold(Stream::Start(rx), move |state| async move {
        match state {
            Stream::Start(rx) => {
                let hello = Event::default().event("hello").data("0").retry(Duration::from_secs(2));
                Some((Ok::<Event, Infallible>(hello), Stream::Open(rx)))
            }
            Stream::Open(mut rx) => match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    let n = *rx.borrow_and_update();
                    Some((Ok(Event::default().event("approvals").data(n.to_string())), Stream::Open(rx)))
                }
                _ => Some((Ok(Event::default().event("bye").data("reconnect")), Stream::Done)),
            },
            Stream::Done => None,
        }
    });
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
