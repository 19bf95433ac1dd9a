//! Connections nobody needs a token to open can't hold airlock's sockets: half-sent headers are
//! cut off after `header_read_timeout_seconds`, idle kept-alive connections after
//! `idle_timeout_seconds`, slow bodies after `request_body_timeout_seconds`; at
//! `max_connections` a new connection replaces the one that waited longest for a request, and
//! when every one is busy the reserve still serves `/healthz`, `/v1/kill` and `/v1/approvals`.
//! Small limits keep each test to a few seconds.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const LIMITS: &str = "header_read_timeout_seconds = 1
idle_timeout_seconds = 3
request_body_timeout_seconds = 1
max_connections = 8
reserved_connections = 2";

fn addr(al: &Airlock) -> String {
    al.url.trim_start_matches("http://").to_string()
}

/// Whether the server closes `stream` within `within` (anything it sends first is read and
/// dropped).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: airlock\r\n{auth}Connection: close\r\n\r\n")
}

/// Reads one response of a kept-alive connection: its head and a `Content-Length` body.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// The flood: many connections that sent half a request header. Each is closed by the
/// header timeout (or earlier, replaced by a newer one), and `/healthz` answers throughout.
#[tokio::test]
async fn half_sent_headers_are_cut_off_and_health_answers_during_the_flood() {
    let fx = Fixture::with_server(POLICY, LIMITS, "");
    let al = fx.start();
    let addr = addr(&al);
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: airlock\r\nX-Slow: ").await.unwrap();
        flood.push(s);
    }
    for _ in 0..3 {
        let answer = exchange(&addr, &get("/healthz", None)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    for (i, s) in flood.iter_mut().enumerate() {
        assert!(closed_within(s, Duration::from_secs(5)).await, "flood connection {i} still open");
    }
    // One header timeout (1 s) and some slack; never the 36 s of the issue.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    let metrics = reqwest::get(format!("{}/metrics", al.url)).await.unwrap().text().await.unwrap();
    let replaced = sample(&metrics, "airlock_http_connections_closed_total{reason=\"replaced\"}");
    let timed_out = sample(&metrics, "airlock_http_connections_closed_total{reason=\"header_timeout\"}");
    assert!(replaced >= 150.0 && timed_out >= 1.0, "replaced {replaced}, timed out {timed_out}");
}

/// A kept-alive connection outlives the header timeout while it waits for its next request,
/// and is closed at the idle timeout; once a new request has begun, its header is due within
/// the header timeout.
#[tokio::test]
async fn idle_and_header_timeouts_apply_to_kept_alive_connections() {
    let fx = Fixture::with_server(POLICY, LIMITS, "");
    let al = fx.start();
    let request = "GET /healthz HTTP/1.1\r\nHost: airlock\r\n\r\n";

    let mut idle = TcpStream::connect(addr(&al)).await.unwrap();
    idle.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let done = Instant::now();
    assert!(!closed_within(&mut idle, Duration::from_millis(2000)).await, "closed before the idle timeout");
    assert!(closed_within(&mut idle, Duration::from_secs(4)).await, "not closed at the idle timeout");
    let idle_for = done.elapsed();
    assert!(idle_for >= Duration::from_millis(2900) && idle_for < Duration::from_secs(5), "{idle_for:?}");

    let mut slow = TcpStream::connect(addr(&al)).await.unwrap();
    slow.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut slow).await.starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let begun = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    assert!(begun.elapsed() < Duration::from_millis(2500), "{:?}", begun.elapsed());
}

/// A body that does not arrive in time is answered `408` and the connection is closed.
#[tokio::test]
async fn a_request_body_that_trickles_is_cut_off() {
    let fx = Fixture::with_server(POLICY, LIMITS, "");
    let al = fx.start();
    let mut s = TcpStream::connect(addr(&al)).await.unwrap();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: airlock\r\nAuthorization: Bearer {BOT}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"task\": "
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout") && answer.contains("request_body_timeout_seconds"), "{answer}");
    assert!(sent.elapsed() < Duration::from_secs(3), "{:?}", sent.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

/// Every full connection busy (agents' long-polls): the reserve answers one request each, to
/// `/healthz`, `/v1/approvals` and `/v1/kill` only; anything else there is a `503`. Once the
/// long-polls end, everything is served again.
#[tokio::test]
async fn with_every_connection_busy_the_reserve_still_serves_health_kill_and_approvals() {
    let fx = Fixture::with_server(POLICY, "max_connections = 3\nreserved_connections = 2", "");
    let al = fx.start();
    let addr = addr(&al);
    let s = al.session(BOT).await;
    let held = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    let action = held.body["id"].as_str().unwrap().to_string();
    let mut polls = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(get(&format!("/v1/actions/{action}?wait=30"), Some(BOT)).as_bytes()).await.unwrap();
        polls.push(c);
        // Each is busy before the next arrives, so none replaces another.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let answer = exchange(&addr, &get("/v1/sessions", Some(BOT))).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("over-capacity") && answer.contains("/v1/kill"), "{answer}");
    let answer = exchange(&addr, &get("/healthz", None)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = exchange(&addr, &get("/v1/approvals", Some(ALICE))).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(&action), "{answer}");
    let body = json!({"scope": "all", "reason": "flood"}).to_string();
    let kill = format!(
        "POST /v1/kill HTTP/1.1\r\nHost: airlock\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&addr, &kill).await;
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "one request per reserve connection: {answer}");

    for c in polls {
        drop(c);
    }
    let sessions = get("/v1/sessions", Some(BOT));
    let answer =
        poll(Duration::from_secs(5), || exchange(&addr, &sessions), |a: &String| a.starts_with("HTTP/1.1 200")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
