//! The review UI at `/ui` against the real binary: sign-in and CSRF over plain HTTP, and a real
//! browser (Debian's Chromium driven by playwright-core, both installed by
//! `tests/browser/install.sh`, which `scripts/test.sh` runs) approving a held action while the
//! agent long-polls for it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/browser`, once Chromium and playwright-core are there: the browser tests fail, naming
/// `install.sh`, rather than skip.
pub(crate) fn browser_dir() -> PathBuf {
    let browser = repo().join("tests/browser");
    let missing: Vec<&str> = [
        (Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium"),
        (
            browser.join("node_modules/playwright-core/package.json").exists(),
            "tests/browser/node_modules/playwright-core",
        ),
    ]
    .into_iter()
    .filter_map(|(ok, what)| (!ok).then_some(what))
    .collect();
    assert!(missing.is_empty(), "missing {missing:?}: run tests/browser/install.sh (scripts/test.sh runs it)");
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_csrf_over_http() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let http = client();

    let r = http.get(format!("{}/ui", al.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    let css = http.get(format!("{}/ui/static/airlock.css", al.url)).send().await.unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));

    // Agents and unknown tokens can't sign in.
    for token in [BOT, "not-a-token"] {
        let (status, session) = sign_in(&al, token).await;
        assert_eq!(status, 401, "{token}");
        assert!(session.is_none(), "{token}");
    }
    let (status, session) = sign_in(&al, ALICE).await;
    assert_eq!(status, 303);
    let session = session.expect("a session cookie");
    let inbox = http.get(format!("{}/ui/inbox", al.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(inbox.status(), 200);
    assert!(inbox.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = inbox.text().await.unwrap();
    assert!(html.contains("Pending approvals") && html.contains("<strong>alice</strong>"), "{html}");

    // A held action shows up, with the agent's text escaped.
    let s = al.session(BOT).await;
    let held = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "nodepool.scale", "arguments": {"count": 2}, "justification": "<script>alert(1)</script>"}),
        )
        .await;
    let id = held.body["approval"]["id"].as_str().unwrap().to_string();
    let list = http.get(format!("{}/ui/inbox/list", al.url)).header("cookie", &session).send().await.unwrap();
    let html = list.text().await.unwrap();
    assert!(html.contains(&format!(r#"data-approval="{id}""#)), "{html}");
    let page = http.get(format!("{}/ui/approvals/{id}", al.url)).header("cookie", &session).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert(1)"), "{html}");
    let token = csrf(&html);

    // A vote without the session's CSRF token, or from another site, is refused and changes nothing.
    let vote = |csrf: String, origin: Option<String>| {
        let mut req = http
            .post(format!("{}/ui/approvals/{id}", al.url))
            .header("cookie", &session)
            .header("content-type", FORM)
            .body(form(&[("csrf", &csrf), ("verdict", "approve"), ("comment", "ok")]));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(vote(String::new(), None).await.unwrap().status(), 403);
    assert_eq!(vote("f".repeat(64), None).await.unwrap().status(), 403);
    assert_eq!(vote(token.clone(), Some("http://evil.example".into())).await.unwrap().status(), 403);
    assert_eq!(al.get(&format!("/v1/approvals/{id}"), ALICE).await.body["status"], "pending");

    // With it, from our own origin, the vote counts.
    let r = vote(token, Some(al.url.clone())).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(al.get(&format!("/v1/approvals/{id}"), ALICE).await.body["status"], "approved");

    // Signing out ends the session.
    let page = http.get(format!("{}/ui/history", al.url)).header("cookie", &session).send().await.unwrap();
    let token = csrf(&page.text().await.unwrap());
    let r = http
        .post(format!("{}/ui/logout", al.url))
        .header("cookie", &session)
        .header("content-type", FORM)
        .body(form(&[("csrf", &token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http.get(format!("{}/ui/inbox", al.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/ui/login");
}

/// A browser script of `tests/browser` running under Node.js: its stdout's lines arrive as JSON
/// values (or strings, for lines that are not JSON), its stderr is kept for the failure message,
/// and it is killed if the test fails half-way.
pub(crate) struct BrowserRun {
    child: Child,
    lines: mpsc::Receiver<Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl BrowserRun {
    /// Starts `tests/browser/{script}` against `url`, with `SCREENSHOT_DIR` set to `shots`
    /// (emptied first) and the given further environment.
    pub(crate) fn start(script: &str, url: &str, shots: &Path, env: &[(&str, &str)]) -> BrowserRun {
        let browser = browser_dir();
        let _ = std::fs::remove_dir_all(shots);
        let mut child = Command::new("node")
            .arg(browser.join(script))
            .current_dir(&browser)
            .env("AIRLOCK_URL", url)
            .env("SCREENSHOT_DIR", shots)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (Node.js 20 or later) must be on PATH");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        BrowserRun { child, lines, stderr: Some(stderr) }
    }

    /// The script's next line, waiting up to `timeout`; `what` says what it was doing meanwhile.
    pub(crate) fn next(&self, what: &str, timeout: Duration) -> Value {
        self.lines.recv_timeout(timeout).unwrap_or_else(|_| panic!("the browser driver said nothing while {what}"))
    }

    /// Waits for the script to end and asserts that it succeeded; `summary` (its last line) and
    /// its stderr go into the failure message.
    pub(crate) fn finish(mut self, summary: &Value) {
        let status = self.child.wait().unwrap();
        let stderr_text = self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
        assert!(status.success(), "the browser run failed: {summary}\n{stderr_text}");
    }
}

impl Drop for BrowserRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that every screenshot the `summary` of a browser run lists is there and not empty,
/// and prints where each is.
pub(crate) fn check_screenshots(summary: &Value) {
    for file in summary["screenshots"].as_array().unwrap() {
        let path = PathBuf::from(file.as_str().unwrap());
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 2000, "screenshot {} is missing or empty", path.display());
        println!("screenshot: {}", path.canonicalize().unwrap_or(path).display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_approves_in_the_browser_and_the_agent_is_released() {
    // The same in both calls, so the diff stays one line: a right-to-left override and a zero
    // width space the page must show as markers.
    const LABEL: &str = "office\u{202E}ptth\u{200B}";
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    // An earlier call of the same tool in the session, still pending: the detail page diffs
    // against it, and the browser must pick out the new approval next to it.
    let s = al.session(BOT).await;
    let earlier = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "firewall.open", "arguments": {"port": 80, "cidr": "10.20.0.0/16", "label": LABEL},
                   "justification": "plain HTTP for the office network"}),
        )
        .await;
    assert_eq!(earlier.body["status"], "pending_approval", "{}", earlier.body);

    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let shots = repo().join("target/browser-screenshots");
    let driver = BrowserRun::start("approve.mjs", &al.url, &shots, &[("HUMAN_TOKEN", CAROL), ("TOTP_CODE", &code)]);
    let next = |what: &str| driver.next(what, Duration::from_secs(90));

    // The browser is signed in and its inbox is live: now the agent asks. No pause is needed:
    // the driver says `ready` only once the inbox's event stream is open, and the server
    // subscribes a stream to approval changes before it answers, so the stream sees this one.
    let ready = next("signing in");
    assert_eq!(ready["event"], "ready", "the browser did not get to a live inbox: {ready}");
    assert_eq!(ready["pending"], 1, "{ready}");
    let held = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "firewall.open", "arguments": {"port": 443, "cidr": "10.20.0.0/16", "label": LABEL},
                   "justification": "open HTTPS from the new office network for the rollout"}),
        )
        .await;
    assert_eq!(held.body["status"], "pending_approval", "{}", held.body);
    let action = held.body["id"].as_str().unwrap().to_string();
    let approval = held.body["approval"]["id"].as_str().unwrap().to_string();

    // The agent's long-poll returns when the human approves in the browser.
    let started = std::time::Instant::now();
    let poll = al.get(&format!("/v1/actions/{action}?wait=60"), BOT).await;
    assert_eq!(poll.body["status"], "approved", "the long-poll was not released by the browser's vote: {}", poll.body);
    assert!(started.elapsed() < Duration::from_secs(55), "the long-poll ran into its limit");
    let vote = &poll.body["approval"]["votes"][0];
    assert_eq!(vote["human"], "carol");
    assert_eq!(vote["mfa"], true);
    assert!(vote["comment"].as_str().unwrap().starts_with("Checked the rule"), "{vote}");

    let summary = next("finishing");
    driver.finish(&summary);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["approval"], approval.as_str(), "{summary}");
    assert_eq!(summary["appeared_live"], true, "{summary}");
    assert_eq!(summary["mobile_overflow"], false, "{summary}");
    assert_eq!(summary["diff_lines"], 2, "the port change is shown as one line out, one in: {summary}");
    assert_eq!(summary["hidden_markers"], json!(["⟨U+202E⟩", "⟨U+200B⟩"]), "{summary}");
    assert_eq!(summary["hidden_warning"], 1, "{summary}");
    assert!(summary["screenshots"].as_array().unwrap().len() >= 9, "{summary}");
    check_screenshots(&summary);
}
