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

use std::collections::HashMap;
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

/// How long a dropped response stream is read for the connection's sake before it is closed.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// rmcp's reqwest client with pooled connections (see the module documentation).
#[derive(Clone)]
pub(super) struct PooledClient(reqwest::Client);

impl PooledClient {
    /// A client that keeps connections alive, sets `TCP_NODELAY`, and follows no redirects (a
    /// redirect could replay the session id and configured headers elsewhere).
    pub(super) fn new() -> Result<PooledClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PooledClient(client))
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

type Response = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

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
        drained(self.0.post_message(uri, message, session_id, auth_header, custom_headers).await)
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
        let sent = self.0.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        );
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
        let sent =
            self.0.post_message_with_response_limits(uri, message, session_id, auth_header, custom_headers, limits);
        drained(sent.await)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.0.delete_session(uri, session_id, auth_header, custom_headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.0.get_stream(uri, session_id, last_event_id, auth_header, custom_headers).await
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
        let stream = self.0.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        );
        stream.await
    }
}
