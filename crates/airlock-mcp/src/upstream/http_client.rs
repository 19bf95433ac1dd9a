//! The HTTP client airlock talks to streamable-HTTP upstreams with: rmcp's reqwest client, with
//! connections kept alive.
//!
//! rmcp's default client turns connection pooling off, because its transport drops a `POST`'s
//! SSE stream as soon as the answer is in, before the server has ended it, and a connection whose
//! response was not read to its end can't go back to the pool. With pooling off every call opens
//! a new TCP connection, which costs the upstream a handshake per call and leaves a socket in
//! `TIME-WAIT` per call (a few hundred calls per second fill the ephemeral port range). This
//! client keeps the pool, and reads a dropped response stream to its end in the background
//! (bounded by [`DRAIN_LIMIT`]), so the connection is reused once the server has finished.
//!
//! An upstream configured with client credentials gets airlock's own access token on every
//! request (never anything of the agent's); a request the upstream answers with `401` is sent
//! once more with a new token, in case the one held was revoked or expired early.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use airlock_identity::ClientCredentials;

/// How long a dropped response stream is read for the connection's sake before it is closed.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// rmcp's reqwest client with pooled connections (see the module documentation), and the
/// upstream's client credentials, if any.
#[derive(Clone)]
pub(super) struct PooledClient {
    client: reqwest::Client,
    credentials: Option<Arc<ClientCredentials>>,
}

type HttpError = StreamableHttpError<reqwest::Error>;

/// Whether the upstream answered `401`: with a challenge rmcp reports it as `AuthRequired`,
/// without one as an unexpected response that starts with the status.
fn unauthorized(e: &HttpError) -> bool {
    match e {
        StreamableHttpError::AuthRequired(_) => true,
        StreamableHttpError::UnexpectedServerResponse(text) => text.starts_with("HTTP 401"),
        StreamableHttpError::Client(e) => e.status() == Some(reqwest::StatusCode::UNAUTHORIZED),
        _ => false,
    }
}

fn no_token(e: airlock_identity::Error) -> HttpError {
    StreamableHttpError::Io(std::io::Error::other(e.to_string()))
}

impl PooledClient {
    /// A client that keeps connections alive, sets `TCP_NODELAY`, and follows no redirects (a
    /// redirect could replay the session id, configured headers and token elsewhere); with
    /// `credentials`, every request carries airlock's access token for the upstream.
    pub(super) fn new(credentials: Option<Arc<ClientCredentials>>) -> Result<PooledClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PooledClient { client, credentials })
    }

    /// Sends with the access token (when there are credentials; else with `auth_header`, which
    /// airlock never sets), and once more with a new token when the upstream answers `401`.
    async fn authorized<T, F, Fut>(&self, auth_header: Option<String>, send: F) -> Result<T, HttpError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let Some(credentials) = &self.credentials else { return send(auth_header).await };
        let token = credentials.token().await.map_err(no_token)?;
        match send(Some(token.clone())).await {
            Err(e) if unauthorized(&e) => {
                tracing::info!("an upstream refused airlock's access token; asking for a new one");
                let renewed = credentials.renew(&token).await.map_err(no_token)?;
                send(Some(renewed)).await
            }
            other => other,
        }
    }
}

/// A response stream that, when dropped before its end, is read to the end in the background.
struct Drained<S: Stream + Send + Unpin + 'static> {
    inner: Option<S>,
}

impl<S: Stream + Send + Unpin + 'static> Stream for Drained<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut() {
            Some(inner) => {
                let next = inner.poll_next_unpin(cx);
                if let Poll::Ready(None) = next {
                    self.inner = None;
                }
                next
            }
            None => Poll::Ready(None),
        }
    }
}

impl<S: Stream + Send + Unpin + 'static> Drop for Drained<S> {
    fn drop(&mut self) {
        let Some(mut rest) = self.inner.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_LIMIT, async { while rest.next().await.is_some() {} }).await;
            });
        }
    }
}

type Response = Result<StreamableHttpPostResponse, HttpError>;

fn drained(response: Response) -> Response {
    match response {
        Ok(StreamableHttpPostResponse::Sse(stream, session)) => {
            Ok(StreamableHttpPostResponse::Sse(Drained { inner: Some(stream) }.boxed(), session))
        }
        other => other,
    }
}

impl StreamableHttpClient for PooledClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Response {
        let sent = self.authorized(auth_header, |auth| {
            self.client.post_message(uri.clone(), message.clone(), session_id.clone(), auth, custom_headers.clone())
        });
        drained(sent.await)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Response {
        let sent = self.authorized(auth_header, |auth| {
            self.client.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                auth,
                custom_headers.clone(),
                max_sse_event_size,
            )
        });
        drained(sent.await)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Response {
        let sent = self.authorized(auth_header, |auth| {
            self.client.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                auth,
                custom_headers.clone(),
                limits,
            )
        });
        drained(sent.await)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.authorized(auth_header, |auth| {
            self.client.delete_session(uri.clone(), session_id.clone(), auth, custom_headers.clone())
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.authorized(auth_header, |auth| {
            self.client.get_stream(uri.clone(), session_id.clone(), last_event_id.clone(), auth, custom_headers.clone())
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.authorized(auth_header, |auth| {
            self.client.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                auth,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}
