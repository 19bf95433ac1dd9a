//! The HTTP listener: accepts TCP connections and serves them over HTTP/1.1 with hyper, within
//! limits that keep connections nobody needs a token to open from holding airlock's sockets.
//!
//! - **Header read timeout.** A request's header must be complete within
//!   `header_read_timeout` of the connection being accepted, or of the first byte of a later
//!   request on a kept-alive connection.
//! - **Idle timeout.** A kept-alive connection with no request in progress and no byte of a new
//!   one is closed after `idle_timeout`. A request in progress (a long-poll, an MCP stream, a
//!   call held for a human) is never idle, however quiet.
//! - **Request body timeout.** The whole body must arrive within `request_body_timeout` of the
//!   header; then reading it fails and the connection is not reused.
//! - **A cap with a reserve.** At most `max_connections` connections are served in full. When
//!   that many are open, a new one takes the place of the connection that has waited longest
//!   for a request (one sending half a header, or an idle one), so a flood of slow connections
//!   can't keep anyone out. When every one is busy with a request, up to
//!   `reserved_connections` more are accepted for one request each to `/healthz`, `/v1/kill…`
//!   or `/v1/approvals…`, so an operator can still see, stop and decide; other requests there
//!   get `503`. Past that, new connections are closed at once.
//!
//! Accepted sockets get `TCP_NODELAY`: answers (SSE events above all) are written in several
//! small pieces, and with Nagle's algorithm a keep-alive client's delayed ACK holds the last
//! piece back ~40 ms.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{HeaderValue, Request, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::Problem;
use crate::telemetry::{BODY_TIMEOUTS, CONNECTIONS_CLOSED as CLOSED, CONNECTIONS_OPEN as OPEN};

/// Connection timeouts and caps (`[server]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a request's whole header.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body, from its header on.
    pub request_body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served in full.
    pub max_connections: usize,
    /// Connections past `max_connections` kept for `/healthz`, `/v1/kill…` and `/v1/approvals…`.
    pub reserved_connections: usize,
}

/// Whether a request for `path` is served on a reserve connection.
pub fn reserved_path(path: &str) -> bool {
    ["/healthz", "/v1/kill", "/v1/approvals"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Serves `app` on `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish its request in progress, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut tasks = tokio::task::JoinSet::new();
    // Each connection watches its own copy, to finish its request in progress and close.
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
                }
                let Some((id, conn)) = admit(&registry, &limits) else {
                    metrics::counter!(CLOSED, "reason" => "refused").increment(1);
                    continue;
                };
                let served = Served { id, conn, registry: registry.clone() };
                tasks.spawn(serve_connection(stream, served, app.clone(), limits.clone(), for_connections.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Returns once `shutdown` is true (or its sender gone).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Errors of `accept` that concern one connection are skipped; others (too many open files)
/// would repeat at once, so the loop pauses first.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The open connections.
#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Arc<Conn>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a new connection in (a full one, or a reserve one), making room first when every full
/// one is taken; `None` when it must be closed.
fn admit(registry: &Mutex<Registry>, limits: &Limits) -> Option<(u64, Arc<Conn>)> {
    let mut reg = lock(registry);
    if reg.open.len() >= limits.max_connections {
        // The connection that has waited longest for a request gives way: it has sent nothing
        // worth keeping, and the newcomer may be the operator.
        let oldest = reg.open.iter().filter_map(|(id, c)| c.waiting_since().map(|t| (t, *id))).min();
        if let Some((_, id)) = oldest
            && let Some(victim) = reg.open.remove(&id)
        {
            victim.close.cancel();
            metrics::counter!(CLOSED, "reason" => "replaced").increment(1);
        }
    }
    let open = reg.open.len();
    let reserve = open >= limits.max_connections;
    if reserve && open >= limits.max_connections.saturating_add(limits.reserved_connections) {
        return None;
    }
    let id = reg.next;
    reg.next += 1;
    let conn = Arc::new(Conn::new(reserve));
    reg.open.insert(id, conn.clone());
    metrics::gauge!(OPEN).set(reg.open.len() as f64);
    Some((id, conn))
}

/// A connection in the registry, which leaves it when dropped.
struct Served {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Mutex<Registry>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry);
        reg.open.remove(&self.id);
        metrics::gauge!(OPEN).set(reg.open.len() as f64);
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request: since when, since when bytes of it have been arriving, and
    /// whether it would be the connection's first.
    Waiting { since: Instant, first_byte: Option<Instant>, first: bool },
    /// Serving this many requests.
    Busy(usize),
}

/// Why airlock closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Header,
    Idle,
}

/// One connection's state, shared by its reader, its requests and its watchdog.
struct Conn {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when a deadline may have moved closer.
    changed: tokio::sync::Notify,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
    /// A reserve connection: one request, to a reserved path.
    reserve: bool,
}

impl Conn {
    fn new(reserve: bool) -> Conn {
        Conn {
            phase: Mutex::new(Phase::Waiting { since: Instant::now(), first_byte: None, first: true }),
            changed: tokio::sync::Notify::new(),
            close: CancellationToken::new(),
            reserve,
        }
    }

    fn waiting_since(&self) -> Option<Instant> {
        match *lock(&self.phase) {
            Phase::Waiting { since, .. } => Some(since),
            Phase::Busy(_) => None,
        }
    }

    /// When the connection expires, and why; `None` while a request is in progress.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        match *lock(&self.phase) {
            Phase::Busy(_) => None,
            Phase::Waiting { since, first: true, .. } => Some((since + limits.header_read_timeout, Expiry::Header)),
            Phase::Waiting { first_byte: Some(t), .. } => Some((t + limits.header_read_timeout, Expiry::Header)),
            Phase::Waiting { since, first_byte: None, .. } => Some((since + limits.idle_timeout, Expiry::Idle)),
        }
    }

    /// Bytes arrived: while waiting, the next request has begun.
    fn read_some(&self) {
        let mut phase = lock(&self.phase);
        if let Phase::Waiting { first_byte: first_byte @ None, first: false, .. } = &mut *phase {
            *first_byte = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request's header arrived.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut phase = lock(&self.phase);
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Waiting { .. } => Phase::Busy(1),
        };
        InFlight(self.clone())
    }
}

/// A request in progress on a connection, until its response body is dropped (written out, or
/// the connection gone).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = lock(&self.0.phase);
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Waiting { since: Instant::now(), first_byte: None, first: false },
        };
        drop(phase);
        self.0.changed.notify_one();
    }
}

async fn serve_connection(
    stream: TcpStream,
    served: Served,
    app: Router,
    limits: Arc<Limits>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let conn = served.conn.clone();
    let io = TokioIo::new(Watched { stream, conn: conn.clone() });
    let service = {
        let conn = conn.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = conn.request_started();
            let reserve = conn.reserve;
            let app = app.clone();
            let body_timeout = limits.request_body_timeout;
            async move {
                if reserve && !reserved_path(req.uri().path()) {
                    let mut response = over_capacity().into_response();
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok::<_, Infallible>(
                        response.map(|body| Body::new(Tracked { body, _in_flight: in_flight })),
                    );
                }
                let req = req.map(|body| Body::new(Deadline::new(body, body_timeout)));
                let Ok(mut response) = app.oneshot(req).await;
                if reserve {
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(response.map(|body| Body::new(Tracked { body, _in_flight: in_flight })))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is kept here (the watchdog below), not by hyper, which would also
    // apply it to kept-alive connections waiting for their next request.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&limits);
        let wake = deadline.map_or_else(|| Instant::now() + Duration::from_secs(86_400), |(at, _)| at);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // Replaced by a newer connection: dropping the connection closes the socket.
            _ = conn.close.cancelled() => return,
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => {
                if let Some((at, why)) = conn.deadline(&limits)
                    && at <= Instant::now()
                {
                    let reason = match why {
                        Expiry::Header => "header_timeout",
                        Expiry::Idle => "idle_timeout",
                    };
                    metrics::counter!(CLOSED, "reason" => reason).increment(1);
                    return;
                }
            }
            _ = conn.changed.notified() => {}
            () = stopped(&mut shutdown), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

fn over_capacity() -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "over-capacity",
        "Over capacity",
        "every connection of `server.max_connections` is busy; this one serves only /healthz, /v1/kill and /v1/approvals",
    )
}

/// The socket, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in progress until it is dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body did not arrive within `[server] request_body_timeout_seconds`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within `server.request_body_timeout_seconds`")]
pub struct BodyTimedOut;

/// A request body that fails once its time is up.
struct Deadline {
    body: Incoming,
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl Deadline {
    fn new(body: Incoming, within: Duration) -> Deadline {
        Deadline { body, timer: Box::pin(tokio::time::sleep(within)), expired: false }
    }
}

impl HttpBody for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            metrics::counter!(BODY_TIMEOUTS).increment(1);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_serves_health_kill_switches_and_approvals_only() {
        for path in ["/healthz", "/v1/kill", "/v1/kill/ks_1", "/v1/approvals", "/v1/approvals/apr_1/approve"] {
            assert!(reserved_path(path), "{path}");
        }
        for path in ["/", "/healthzz", "/v1/killall", "/v1/sessions", "/mcp", "/v1/approvalsx", "/metrics"] {
            assert!(!reserved_path(path), "{path}");
        }
    }

    fn limits(max: usize, reserved: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: max,
            reserved_connections: reserved,
        }
    }

    #[tokio::test]
    async fn a_full_house_replaces_the_longest_waiting_connection_then_reserves_then_refuses() {
        let reg = Mutex::new(Registry::default());
        let limits = limits(2, 1);
        let (a, conn_a) = admit(&reg, &limits).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (_, conn_b) = admit(&reg, &limits).unwrap();
        // Both wait for a request: the older gives way.
        let (_, conn_c) = admit(&reg, &limits).unwrap();
        assert!(conn_a.close.is_cancelled() && !conn_b.close.is_cancelled());
        assert!(!lock(&reg).open.contains_key(&a) && !conn_c.reserve);
        // Both busy: a reserve connection, then none.
        let _b = conn_b.request_started();
        let _c = conn_c.request_started();
        let (_, conn_d) = admit(&reg, &limits).unwrap();
        assert!(conn_d.reserve);
        let _d = conn_d.request_started();
        assert!(admit(&reg, &limits).is_none());
    }

    /// `deadline` is `(at, why)` with `at` between `before + timeout` and `after + timeout`.
    fn due(conn: &Conn, limits: &Limits, before: Instant, timeout: Duration, header: bool) {
        let after = Instant::now();
        let Some((at, why)) = conn.deadline(limits) else { panic!("no deadline") };
        assert!(at >= before + timeout && at <= after + timeout);
        assert_eq!(matches!(why, Expiry::Header), header);
    }

    #[tokio::test]
    async fn deadlines_follow_what_the_connection_is_doing() {
        let limits = limits(2, 1);
        let before = Instant::now();
        let conn = Arc::new(Conn::new(false));
        // A new connection: its first request's header is due.
        due(&conn, &limits, before, limits.header_read_timeout, true);
        conn.read_some();
        let in_flight = conn.request_started();
        assert!(conn.deadline(&limits).is_none(), "a request in progress never expires");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = Instant::now();
        drop(in_flight);
        // Kept alive: idle until a byte of the next request arrives, then its header is due.
        due(&conn, &limits, before, limits.idle_timeout, false);
        let before = Instant::now();
        conn.read_some();
        due(&conn, &limits, before, limits.header_read_timeout, true);
    }
}
