//! The review UI: sign-in and CSRF over plain HTTP, and a real browser (Debian's Chromium driven
//! by playwright-core, installed by tests/browser/install.sh) approving a held action while the
//! agent long-polls for it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_csrf_over_http() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Not signed in: to the sign-in page.
    let r = http.get(format!("{}/ui/inbox", al.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    // An agent's token is not a human's.
    let r = http.post(format!("{}/ui/login", al.url)).form(&[("token", BOT)]).send().await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().contains("err="));
    let r = http.post(format!("{}/ui/login", al.url)).form(&[("token", ALICE)]).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let inbox = http.get(format!("{}/ui/inbox", al.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(inbox.status(), 200);
    let html = inbox.text().await.unwrap();
    assert!(html.contains("Pending approvals") && html.contains("alice"));

    // A hostile justification is shown as text, never as markup.
    let s = al.session(BOT).await;
    let held = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "nodepool.scale", "arguments": {"count": 2}, "justification": "<script>alert(1)</script>"}),
        )
        .await;
    let id = held.body["approval"]["id"].as_str().unwrap();
    let page = http.get(format!("{}/ui/approvals/{id}", al.url)).header("cookie", &cookie).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert(1)"));
    // A vote without the session's CSRF token is refused and changes nothing.
    let r = http
        .post(format!("{}/ui/approvals/{id}", al.url))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged"), ("verdict", "approve"), ("comment", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(al.get(&format!("/v1/approvals/{id}"), ALICE).await.body["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_approves_in_the_browser_and_the_agent_is_released() {
    let dir = browser_dir();
    assert!(
        PathBuf::from("/usr/bin/chromium").exists() && dir.join("node_modules/playwright-core").exists(),
        "run tests/browser/install.sh (scripts/test.sh does)"
    );
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let mut child = Command::new("node")
        .arg(dir.join("approve.mjs"))
        .env("AIRLOCK_URL", &al.url)
        .env("HUMAN_TOKEN", CAROL)
        .env("TOTP_CODE", &code)
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the browser sits on the inbox, then ask for an approval.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the browser did not sign in");
    let s = al.session(BOT).await;
    let held = al.act(BOT, &s, "firewall.open", json!({"port": 443, "cidr": "10.0.0.0/8"})).await;
    assert_eq!(held.body["status"], "pending_approval");
    let id = held.body["id"].as_str().unwrap().to_string();
    let poll = al.get(&format!("/v1/actions/{id}?wait=55"), BOT).await;
    assert_eq!(poll.body["status"], "approved", "the long-poll was not released by the browser's vote: {}", poll.body);
    assert_eq!(poll.body["approval"]["votes"][0]["human"], "carol");
    assert_eq!(poll.body["approval"]["votes"][0]["mfa"], true);

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{rest}\n{err}");
    let summary: Value = serde_json::from_str(rest.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(summary["appeared"], true, "{summary}");
    assert_eq!(summary["approved"], true, "{summary}");
    assert_eq!(summary["mobile_overflow"], false, "the page is wider than a phone: {summary}");
    for shot in summary["screenshots"].as_array().unwrap() {
        let p = shots.join(shot.as_str().unwrap());
        assert!(std::fs::metadata(&p).unwrap().len() > 1000, "{}", p.display());
        println!("screenshot: {}", p.display());
    }
}
