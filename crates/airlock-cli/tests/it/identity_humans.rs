//! People signing in to the review UI at the real OpenID provider (tests/identity/provider.mjs,
//! its development sign-in page): the authorization code flow with PKCE, `state` and `nonce`;
//! groups from the provider make an approver; the flow's attacks (a missing or wrong `state`, a
//! replayed code, a wrong `nonce`) are refused. Chromium signs in and approves in
//! `a_person_signs_in_at_the_provider_in_the_browser_and_approves`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::identity::Provider;
use crate::common::*;

/// airlock whose review UI signs people in at `idp` (`ana` is an approver there, `mallory` is
/// not), with the fixture's static humans and agents as well.
fn start(idp: &Provider) -> (Fixture, Airlock) {
    let extra = format!(
        r#"
[identity]

[identity.humans]
issuer = "{issuer}"
client_id = "airlock-ui"
client_secret = "env:UI_CLIENT_SECRET"
scopes = ["openid", "profile", "groups"]
id_claim = "preferred_username"
approver_groups = ["airlock-approvers"]
"#,
        issuer = idp.issuer
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = Airlock::start_with_env(&fx.config(), &[("UI_CLIENT_SECRET", "airlock-ui-secret")])
        .unwrap_or_else(|e| panic!("airlock did not start: {e}"));
    (fx, al)
}

/// A browser without JavaScript: follows redirects by hand and keeps each origin's cookies
/// (enough for the provider's sign-in page and airlock's UI).
struct Browser {
    http: reqwest::Client,
    jars: HashMap<String, HashMap<String, String>>,
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

impl Browser {
    fn new() -> Browser {
        Browser { http: client(), jars: HashMap::new() }
    }

    fn cookies(&self, url: &str) -> String {
        self.jars
            .get(&origin(url))
            .map(|j| j.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    }

    fn keep(&mut self, url: &str, r: &reqwest::Response) {
        let jar = self.jars.entry(origin(url)).or_default();
        for v in r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let pair = v.split(';').next().unwrap_or_default();
            let Some((k, val)) = pair.split_once('=') else { continue };
            if val.is_empty() || v.contains("Max-Age=0") {
                jar.remove(k.trim());
            } else {
                jar.insert(k.trim().to_string(), val.to_string());
            }
        }
    }

    async fn send(&mut self, url: &str, form_body: Option<String>) -> reqwest::Response {
        let mut req = match &form_body {
            Some(body) => self.http.post(url).header("content-type", FORM).body(body.clone()),
            None => self.http.get(url),
        };
        let cookies = self.cookies(url);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        self.keep(url, &r);
        r
    }

    /// Follows redirects from `url` until a response that is not one, or until the next URL
    /// satisfies `stop` (then that URL, not requested).
    async fn follow(&mut self, mut url: String, stop: impl Fn(&str) -> bool) -> (String, Option<reqwest::Response>) {
        for _ in 0..20 {
            if stop(&url) {
                return (url, None);
            }
            let r = self.send(&url, None).await;
            if !r.status().is_redirection() {
                return (url, Some(r));
            }
            let location = r.headers()["location"].to_str().unwrap().to_string();
            url = if location.starts_with("http") { location } else { format!("http://{}{location}", origin(&url)) };
        }
        panic!("too many redirects")
    }
}

fn at_callback(url: &str) -> bool {
    url.contains("/ui/login/callback")
}

/// Goes from the provider's authorization URL `auth` through its sign-in page as `login`, up to
/// airlock's callback URL, which is returned without being requested.
async fn through_provider(b: &mut Browser, auth: String, login: &str) -> String {
    let (page_url, page) = b.follow(auth, at_callback).await;
    let page = page.expect("the provider's sign-in page");
    assert_eq!(page.status(), 200, "{page_url}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="login""#), "not the sign-in page: {html}");
    let r = b.send(&page_url, Some(form(&[("prompt", "login"), ("login", login), ("password", "any")]))).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let next = r.headers()["location"].to_str().unwrap().to_string();
    let (callback, _) = b.follow(next, at_callback).await;
    assert!(callback.contains("code=") && callback.contains("state="), "{callback}");
    callback
}

/// Starts a sign-in at airlock; returns the provider's authorization URL airlock sent it to.
async fn start_sign_in(b: &mut Browser, al: &Airlock) -> String {
    let r = b.send(&format!("{}/ui/login/oidc", al.url), None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Signs `login` in all the way; returns the browser and the callback's response.
async fn sign_in_as(al: &Airlock, login: &str) -> (Browser, reqwest::Response) {
    let mut b = Browser::new();
    let auth = start_sign_in(&mut b, al).await;
    let callback = through_provider(&mut b, auth, login).await;
    let r = b.send(&callback, None).await;
    (b, r)
}

fn param(url: &str, name: &str) -> String {
    url.split(['?', '&']).find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
}

/// A call that needs one approval from the `sre` group, held; returns the approval id.
async fn held(al: &Airlock) -> String {
    let s = al.session(BOT).await;
    let r = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "nodepool.scale", "arguments": {"count": 3}, "justification": "more room for the batch"}),
        )
        .await;
    assert_eq!(r.body["status"], "pending_approval", "{}", r.body);
    r.body["approval"]["id"].as_str().unwrap().to_string()
}

/// Votes `approve` on `approval` in the UI as the browser's human; returns the vote's status.
async fn approve_in_ui(b: &mut Browser, al: &Airlock, approval: &str) -> StatusCode {
    let url = format!("{}/ui/approvals/{approval}", al.url);
    let page = b.send(&url, None).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let r = b.send(&url, Some(form(&[("csrf", &csrf(&html)), ("verdict", "approve"), ("comment", "fine")]))).await;
    r.status()
}

#[tokio::test]
async fn a_person_in_the_approver_group_signs_in_at_the_provider_and_approves() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let approval = held(&al).await;
    let (mut b, r) = sign_in_as(&al, "ana").await;
    let refresh = r.headers().get("refresh").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(refresh.as_deref(), Some("0; url=/ui/inbox"));
    let inbox = b.send(&format!("{}/ui/inbox", al.url), None).await;
    assert_eq!(inbox.status(), 200, "the session cookie signs the browser in");
    assert!(inbox.text().await.unwrap().contains("ana"));
    let status = approve_in_ui(&mut b, &al, &approval).await;
    assert!(status.is_redirection(), "{status}");
    let a = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(a.body["status"], "approved", "{}", a.body);
    assert_eq!(a.body["votes"][0]["human"], "ana", "{}", a.body);
}

#[tokio::test]
async fn a_person_without_the_approver_group_cannot_approve() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let approval = held(&al).await;
    // mallory is in `sre`, the group the approval asks for, but not an approver.
    let (mut b, r) = sign_in_as(&al, "mallory").await;
    assert_eq!(r.status(), 200);
    let page = b.send(&format!("{}/ui/approvals/{approval}", al.url), None).await;
    assert_eq!(page.status(), 200);
    let status = approve_in_ui(&mut b, &al, &approval).await;
    assert!(status.is_client_error(), "{status}");
    let a = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(a.body["status"], "pending", "{}", a.body);
    assert_eq!(a.body["votes"], json!([]), "{}", a.body);
}

#[tokio::test]
async fn a_callback_without_the_browsers_state_is_refused() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let mut b = Browser::new();
    let auth = start_sign_in(&mut b, &al).await;
    let callback = through_provider(&mut b, auth, "ana").await;
    let code = param(&callback, "code");
    let state = param(&callback, "state");

    // No state, another state, or the right state from a browser that did not start the flow
    // (no cookie): refused, and nobody is signed in.
    for url in [
        format!("{}/ui/login/callback?code={code}", al.url),
        format!("{}/ui/login/callback?code={code}&state=forged", al.url),
    ] {
        let r = b.send(&url, None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        assert!(cookie(&r, "airlock_ui").is_none());
    }
    let mut stranger = Browser::new();
    let r = stranger.send(&callback, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("unknown, expired or was used already"));
    // The refusals above cleared the flow's cookie in `b`: the real callback is now refused too.
    let r = b.send(&format!("{}/ui/login/callback?code={code}&state={state}", al.url), None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let mut b = Browser::new();
    let auth = start_sign_in(&mut b, &al).await;
    let callback = through_provider(&mut b, auth, "ana").await;
    let flow_cookie = b.cookies(&al.url);
    let r = b.send(&callback, None).await;
    assert_eq!(r.status(), 200, "the first use signs in");

    // The same callback again, with the same flow cookie: the flow is used up.
    let r = client().get(&callback).header("cookie", &flow_cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(cookie(&r, "airlock_ui").is_none());

    // The code with a fresh flow of the attacker's: the provider refuses it (used, and bound to
    // another PKCE challenge).
    let mut attacker = Browser::new();
    let fresh = start_sign_in(&mut attacker, &al).await;
    let state = param(&fresh, "state");
    let code = param(&callback, "code");
    let r = attacker.send(&format!("{}/ui/login/callback?code={code}&state={state}", al.url), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie(&r, "airlock_ui").is_none());
    assert!(r.text().await.unwrap().contains("the code was refused"));
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let mut b = Browser::new();
    let auth = start_sign_in(&mut b, &al).await;
    // The same request at the provider, with a nonce that is not the one airlock chose: the ID
    // token then carries that nonce.
    let nonce = param(&auth, "nonce");
    assert!(nonce.len() >= 43, "{auth}");
    assert!(auth.contains("code_challenge_method=S256"), "{auth}");
    let tampered = auth.replace(&format!("nonce={nonce}"), "nonce=chosen-by-the-attacker");
    let callback = through_provider(&mut b, tampered, "ana").await;
    let r = b.send(&callback, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie(&r, "airlock_ui").is_none());
    let text = r.text().await.unwrap();
    assert!(text.contains("nonce"), "{text}");
}

/// Kills the browser driver if the test fails half-way.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_at_the_provider_in_the_browser_and_approves() {
    let browser = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && browser.join("node_modules/playwright-core/package.json").exists(),
        "Chromium or playwright-core is missing: run tests/browser/install.sh (scripts/test.sh runs it)"
    );
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let approval = held(&al).await;
    let shots = browser.join("../../target/browser-screenshots-oidc");
    let mut child = Command::new("node")
        .arg(browser.join("oidc_approve.mjs"))
        .current_dir(&browser)
        .env("AIRLOCK_URL", &al.url)
        .env("LOGIN", "ana")
        .env("APPROVAL", &approval)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be on PATH");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut driver = Driver(child);
    let status = tokio::task::spawn_blocking(move || driver.0.wait()).await.unwrap().unwrap();
    let mut out = String::new();
    BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| out = l);
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    let summary: Value = serde_json::from_str(&out).unwrap_or(Value::String(out.clone()));
    assert!(status.success(), "the browser run failed: {summary}\n{err}");
    assert_eq!(summary["at_provider"], true, "{summary}");
    assert_eq!(summary["signed_in_as"], "ana", "{summary}");
    assert_eq!(summary["status"], "approved", "{summary}");
    let a = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(a.body["status"], "approved", "{}", a.body);
    assert_eq!(a.body["votes"][0]["human"], "ana", "{}", a.body);
}

/// A person's access token for airlock's API (`resource` = airlock's base URL), got by the
/// authorization code flow with PKCE at the provider, as `airlock login` or any client would.
async fn person_token(idp: &Provider, resource: &str, redirect_to: &str, login: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = "a-pkce-verifier-for-the-tests-that-is-long-enough-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = format!("{redirect_to}/ui/login/callback");
    let enc = |v: &str| form(&[("v", v)]).trim_start_matches("v=").to_string();
    let auth = format!(
        "{}/auth?client_id=airlock-ui&response_type=code&redirect_uri={}&scope=openid%20mcp&state=s&nonce=n\
         &code_challenge={challenge}&code_challenge_method=S256&resource={}",
        idp.issuer,
        enc(&redirect),
        enc(resource)
    );
    let mut b = Browser::new();
    let callback = through_provider(&mut b, auth, login).await;
    let r = client()
        .post(format!("{}/token", idp.issuer))
        .basic_auth("airlock-ui", Some("airlock-ui-secret"))
        .header("content-type", FORM)
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", &param(&callback, "code")),
            ("code_verifier", verifier),
            ("redirect_uri", &redirect),
            ("resource", resource),
        ]))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT access token: {body}");
    token
}

#[tokio::test]
async fn a_persons_access_token_from_the_provider_votes_on_the_api() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let approval = held(&al).await;

    // Not an approver at the provider: refused for the role.
    let mallory = person_token(&idp, &al.url, &al.url, "mallory").await;
    let r = al.post(&format!("/v1/approvals/{approval}/approve"), &mallory, json!({"comment": "ok"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["rule"], "role", "{}", r.body);

    // A token for another resource (airlock's MCP endpoint) does not open the API.
    let elsewhere = person_token(&idp, &format!("{}/mcp", al.url), &al.url, "ana").await;
    let r = al.post(&format!("/v1/approvals/{approval}/approve"), &elsewhere, json!({"comment": "ok"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // An approver's token votes.
    let ana = person_token(&idp, &al.url, &al.url, "ana").await;
    let r = al.post(&format!("/v1/approvals/{approval}/approve"), &ana, json!({"comment": "fine by me"})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let a = al.get(&format!("/v1/approvals/{approval}"), &ana).await;
    assert_eq!(a.body["status"], "approved", "{}", a.body);
    assert_eq!(a.body["votes"][0]["human"], "ana", "{}", a.body);
}

/// `location` (absolute, or a path) as an absolute URL, relative to `base`'s origin.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_string() } else { format!("http://{}{location}", origin(base)) }
}

/// The `value` of the input named `name` in `html`.
fn input(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no `{name}` in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn airlock_login_runs_the_device_flow_and_the_cli_uses_the_token() {
    let idp = Provider::start();
    let (fx, al) = start(&idp);
    let approval = held(&al).await;
    let home = fx.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = airlock_cmd()
        .args(["login", "--issuer", &idp.issuer, "--server", &al.url])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("AIRLOCK_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("To sign in, open ").unwrap_or_else(|| panic!("{first}")).to_string();

    // The person opens the link, confirms the code and signs in at the provider.
    let mut b = Browser::new();
    let page = b.send(&url, None).await.text().await.unwrap();
    let device = format!("{}/device", idp.issuer);
    let confirm =
        form(&[("xsrf", &input(&page, "xsrf")), ("user_code", &input(&page, "user_code")), ("confirm", "yes")]);
    let r = b.send(&device, Some(confirm)).await;
    let login_page = absolute(&device, r.headers()["location"].to_str().unwrap());
    let r = b.send(&login_page, Some(form(&[("prompt", "login"), ("login", "ana"), ("password", "any")]))).await;
    let next = absolute(&device, r.headers()["location"].to_str().unwrap());
    let (_, done) = b.follow(next, |_| false).await;
    assert_eq!(done.unwrap().status(), 200);

    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{rest:?}");
    let file = home.join(".config/airlock/token.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(kept["server"], al.url.as_str());

    // The CLI uses the kept token (no AIRLOCK_TOKEN): the person approves.
    let out = airlock_cmd()
        .args(["approvals", "approve", &approval, "-m", "approved from the CLI", "--server", &al.url])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("AIRLOCK_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let a = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(a.body["status"], "approved", "{}", a.body);
    assert_eq!(a.body["votes"][0]["human"], "ana", "{}", a.body);
}

#[tokio::test]
async fn a_humans_entry_pins_totp_and_roles_for_a_person_from_the_provider() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    // A call that needs step-up (TOTP), from anyone who may approve.
    let s = al.session(BOT).await;
    let r = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"tool": "firewall.open", "arguments": {"port": 443}, "justification": "the rollout"}),
        )
        .await;
    assert_eq!(r.body["status"], "pending_approval", "{}", r.body);
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();

    // `carol` has no groups at the provider; the `[[humans]]` entry `carol` gives her the
    // `approve` role and her TOTP secret.
    let (mut b, r) = sign_in_as(&al, "carol").await;
    assert_eq!(r.status(), 200);
    let url = format!("{}/ui/approvals/{approval}", al.url);
    let vote = |csrf: String, totp: String| {
        form(&[("csrf", &csrf), ("verdict", "approve"), ("comment", "step-up checked"), ("totp", &totp)])
    };
    let html = b.send(&url, None).await.text().await.unwrap();
    let r = b.send(&url, Some(vote(csrf(&html), String::new()))).await;
    assert!(!r.status().is_redirection(), "a vote without the TOTP code is refused: {}", r.status());
    assert_eq!(al.get(&format!("/v1/approvals/{approval}"), ALICE).await.body["status"], "pending");
    let html = b.send(&url, None).await.text().await.unwrap();
    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let r = b.send(&url, Some(vote(csrf(&html), code))).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let a = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(a.body["status"], "approved", "{}", a.body);
    assert_eq!(a.body["votes"][0]["human"], "carol", "{}", a.body);
    assert_eq!(a.body["votes"][0]["mfa"], true, "{}", a.body);
}

#[tokio::test]
async fn a_sign_in_the_provider_refuses_signs_nobody_in_and_is_used_up() {
    let idp = Provider::start();
    let (_fx, al) = start(&idp);
    let mut b = Browser::new();
    let auth = start_sign_in(&mut b, &al).await;
    let state = param(&auth, "state");
    let cookies = b.cookies(&al.url);
    let r = b
        .send(
            &format!("{}/ui/login/callback?error=access_denied&error_description=cancelled&state={state}", al.url),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie(&r, "airlock_ui").is_none());
    assert!(r.text().await.unwrap().contains("access_denied"));
    // The flow is over: even with its cookie, a code for that state is not taken.
    let r = client()
        .get(format!("{}/ui/login/callback?code=anything&state={state}", al.url))
        .header("cookie", cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
