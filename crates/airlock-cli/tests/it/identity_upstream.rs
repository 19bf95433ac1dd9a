//! Upstreams that require OAuth client credentials: airlock gets its own access token from the
//! real OpenID provider (tests/identity/provider.mjs), keeps it, replaces it before it expires
//! and once when the upstream refuses it, and the agent's own token never reaches the upstream
//! (tests/identity/upstream.mjs checks every token it receives against the provider's keys and
//! prints its verdict).

use std::time::Duration;

use serde_json::Value;

use super::identity::{Provider, Script, call, mcp_client, text};
use crate::common::*;

/// The resource the upstream is, and the audience it accepts.
const ECHO: &str = "https://echo.example/mcp";

/// airlock with the provider as its issuer (for `ops-bot`'s token) and the upstream `echo`, which
/// it reaches with the client credentials of `client`.
fn start(idp: &Provider, upstream: &Script, client: &str) -> (Fixture, Airlock) {
    let extra = format!(
        r#"
[[upstreams]]
name = "echo"
url = "http://127.0.0.1:{port}/mcp"

[upstreams.client_credentials]
issuer = "{issuer}"
client_id = "{client}"
client_secret = "env:ECHO_CLIENT_SECRET"
scope = "echo.read"
resource = "{ECHO}"

[identity]

[[identity.issuers]]
issuer = "{issuer}"

[[agents]]
id = "ops-bot"
owner = "platform"
tier = "autonomous"
"#,
        port = upstream.port,
        issuer = idp.issuer,
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let secret = format!("{client}-secret");
    let al = Airlock::start_with_env(&fx.config(), &[("ECHO_CLIENT_SECRET", &secret)])
        .unwrap_or_else(|e| panic!("airlock did not start: {e}"));
    (fx, al)
}

fn upstream(idp: &Provider) -> Script {
    Script::start_with("upstream.mjs", &["--issuer", &idp.issuer, "--audience", ECHO])
}

/// What the upstream printed that starts with `prefix`.
fn printed(upstream: &Script, prefix: &str) -> Vec<String> {
    upstream.lines.lock().unwrap().iter().filter_map(|l| l.strip_prefix(prefix)).map(str::to_string).collect()
}

#[tokio::test]
async fn an_upstream_gets_airlocks_token_from_the_provider_and_never_the_agents() {
    let idp = Provider::start();
    let echo = upstream(&idp);
    let (_fx, al) = start(&idp, &echo, "airlock");
    al.wait_for_upstream("echo").await;
    let mcp = format!("{}/mcp", al.url);
    let agent_token = idp.token("ops-bot", &mcp, "mcp").await;
    let c = mcp_client(&mcp, &agent_token).await;
    for _ in 0..3 {
        let r = call(&c, "echo__headers").await;
        assert_ne!(r.is_error, Some(true), "{}", text(&r));
    }

    // Every request reached the upstream with a token the provider issued to airlock for the
    // upstream, which the upstream verified against the provider's keys.
    let verdicts = printed(&echo, "TOKEN ");
    assert!(!verdicts.is_empty() && verdicts.iter().all(|v| v.starts_with("valid ")), "{verdicts:?}");
    for v in &verdicts {
        let claims: Value = serde_json::from_str(v.trim_start_matches("valid ")).unwrap();
        assert_eq!(claims["iss"], idp.issuer.as_str(), "{claims}");
        assert_eq!(claims["aud"], ECHO, "{claims}");
        assert_eq!(claims["client_id"], "airlock", "{claims}");
        assert_eq!(claims["scope"], "echo.read", "{claims}");
    }
    // The agent's token never did.
    let auth = printed(&echo, "AUTH ");
    assert!(auth.iter().all(|a| a.starts_with("Bearer ") && !a.contains(&agent_token)), "{auth:?}");
    // One token served every request: airlock kept it.
    assert_eq!(idp.issued("airlock").await, 1, "{auth:?}");
    let held: std::collections::BTreeSet<&String> = auth.iter().collect();
    assert_eq!(held.len(), 1, "{held:?}");

    // The upstream stops accepting that token (as if revoked): airlock gets a new one once and
    // the call goes through.
    let r = client().post(format!("http://127.0.0.1:{}/_test/refuse-seen", echo.port)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = call(&c, "echo__headers").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(idp.issued("airlock").await, 2);
    let verdicts = printed(&echo, "TOKEN ");
    assert_eq!(verdicts.iter().filter(|v| v.starts_with("refused ")).count(), 1, "{verdicts:?}");
    assert!(verdicts.last().unwrap().starts_with("valid "), "{verdicts:?}");
    let auth = printed(&echo, "AUTH ");
    assert!(auth.iter().all(|a| !a.contains(&agent_token)), "{auth:?}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn an_upstream_token_is_replaced_before_it_expires() {
    let idp = Provider::start();
    let echo = upstream(&idp);
    // `airlock-brief`'s tokens live 3 seconds.
    let (_fx, al) = start(&idp, &echo, "airlock-brief");
    al.wait_for_upstream("echo").await;
    let mcp = format!("{}/mcp", al.url);
    let c = mcp_client(&mcp, &idp.token("ops-bot", &mcp, "mcp").await).await;
    let r = call(&c, "echo__headers").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let first = idp.issued("airlock-brief").await;
    // Past the time to replace it, before it expires.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call(&c, "echo__headers").await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(idp.issued("airlock-brief").await, first + 1);
    // The upstream never saw an expired or refused token: the new one was got in time.
    let verdicts = printed(&echo, "TOKEN ");
    assert!(verdicts.iter().all(|v| v.starts_with("valid ")), "{verdicts:?}");
    let tokens: std::collections::BTreeSet<String> = printed(&echo, "AUTH ").into_iter().collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn an_upstream_whose_client_is_refused_is_down_with_the_providers_reason() {
    let idp = Provider::start();
    let echo = upstream(&idp);
    let extra = format!(
        "[[upstreams]]\nname = \"echo\"\nurl = \"http://127.0.0.1:{}/mcp\"\n[upstreams.client_credentials]\n\
         token_endpoint = \"{}/token\"\nclient_id = \"airlock\"\nclient_secret = \"env:ECHO_CLIENT_SECRET\"\n",
        echo.port, idp.issuer
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = Airlock::start_with_env(&fx.config(), &[("ECHO_CLIENT_SECRET", "wrong-secret")]).unwrap();
    let status = poll(
        Duration::from_secs(10),
        || async { al.get("/v1/upstreams", ADMIN).await.body },
        |b: &Value| b.to_string().contains("invalid_client"),
    )
    .await;
    let text = status.to_string();
    assert!(text.contains(&format!("{}/token", idp.issuer)) && text.contains("invalid_client"), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
    // Nothing reached the upstream without a token.
    assert!(printed(&echo, "AUTH ").is_empty(), "{:?}", printed(&echo, "AUTH "));
}
