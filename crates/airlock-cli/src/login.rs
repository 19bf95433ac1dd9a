//! `airlock login`: a person signs in at the organisation's identity provider with the OAuth
//! device authorization grant (RFC 8628), and the access token, issued for the airlock server's
//! API, is kept in the user's config directory (mode 0600) for later commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// `airlock login`.
#[derive(Args)]
pub struct LoginArgs {
    /// The identity provider's issuer (its discovery document gives the device endpoint).
    #[arg(long, env = "AIRLOCK_ISSUER")]
    issuer: String,
    /// The CLI's client id at the provider (a public client allowed the device grant).
    #[arg(long, env = "AIRLOCK_CLIENT_ID", default_value = "airlock-cli")]
    client_id: String,
    /// Scopes to ask for.
    #[arg(long, default_value = "openid")]
    scope: String,
    /// The resource the token is for (default: the server's URL, the API's resource identifier).
    #[arg(long)]
    resource: Option<String>,
    /// Server URL.
    #[arg(long, env = "AIRLOCK_SERVER", default_value = "http://127.0.0.1:7878")]
    server: String,
}

/// Where the token is kept: `$AIRLOCK_TOKEN_FILE`, else `$XDG_CONFIG_HOME/airlock/token.json`,
/// else `~/.config/airlock/token.json`.
pub fn token_file() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("AIRLOCK_TOKEN_FILE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("airlock/token.json"))
}

/// The kept token for `server`, while it has not expired.
pub fn cached_token(server: &str) -> Option<String> {
    let text = std::fs::read_to_string(token_file()?).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    if v.get("server")?.as_str()? != server.trim_end_matches('/') {
        return None;
    }
    let expires = v.get("expires_at").and_then(Value::as_i64).unwrap_or(i64::MAX);
    if expires <= chrono::Utc::now().timestamp() {
        return None;
    }
    v.get("access_token")?.as_str().map(str::to_string)
}

fn save(server: &str, token: &str, expires_in: Option<i64>) -> anyhow::Result<PathBuf> {
    let path = token_file().context("no config directory: set HOME, XDG_CONFIG_HOME or AIRLOCK_TOKEN_FILE")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let body = json!({
        "server": server.trim_end_matches('/'),
        "access_token": token,
        "expires_at": expires_in.map(|s| chrono::Utc::now().timestamp() + s),
    });
    use std::io::Write as _;
    #[cfg(unix)]
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created 0600 (and made so if it existed): the token is a credential.
        let f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path);
        let f = f.with_context(|| format!("cannot write `{}`", path.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f
    };
    #[cfg(not(unix))]
    let mut file = std::fs::File::create(&path).with_context(|| format!("cannot write `{}`", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&body)?.as_bytes())?;
    Ok(path)
}

async fn post_form(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let r = http
        .post(url)
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .with_context(|| format!("cannot reach `{url}`"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Runs the device flow and keeps the token.
pub async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let server = args.server.trim_end_matches('/').to_string();
    let resource = args.resource.clone().unwrap_or_else(|| server.clone());
    let metadata_url = format!("{}/.well-known/openid-configuration", args.issuer.trim_end_matches('/'));
    let metadata: Value = http
        .get(&metadata_url)
        .send()
        .await
        .with_context(|| format!("cannot reach `{metadata_url}`"))?
        .json()
        .await
        .with_context(|| format!("`{metadata_url}` is not JSON"))?;
    if metadata.get("issuer").and_then(Value::as_str) != Some(args.issuer.as_str()) {
        bail!("`{metadata_url}` does not name the issuer `{}`", args.issuer);
    }
    let endpoint = |k: &str| {
        metadata
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("the provider's metadata has no `{k}` (is the device grant enabled?)"))
    };
    let (device_endpoint, token_endpoint) = (endpoint("device_authorization_endpoint")?, endpoint("token_endpoint")?);
    let (status, started) = post_form(
        &http,
        &device_endpoint,
        &[("client_id", &args.client_id), ("scope", &args.scope), ("resource", &resource)],
    )
    .await?;
    if status != 200 {
        bail!("the provider refused to start the sign-in ({status}): {started}");
    }
    let text = |k: &str| started.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let device_code = text("device_code");
    let shown = if text("verification_uri_complete").is_empty() {
        format!("{} and enter the code {}", text("verification_uri"), text("user_code"))
    } else {
        text("verification_uri_complete")
    };
    println!("To sign in, open {shown}");
    println!("(code {})", text("user_code"));
    let mut interval = Duration::from_secs(started.get("interval").and_then(Value::as_u64).unwrap_or(5).max(1));
    let deadline =
        Instant::now() + Duration::from_secs(started.get("expires_in").and_then(Value::as_u64).unwrap_or(600));
    while Instant::now() < deadline {
        tokio::time::sleep(interval).await;
        let (status, answer) = post_form(
            &http,
            &token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
                ("client_id", &args.client_id),
                ("resource", &resource),
            ],
        )
        .await?;
        if status == 200 {
            let token =
                answer.get("access_token").and_then(Value::as_str).context("no `access_token` in the answer")?;
            let path = save(&server, token, answer.get("expires_in").and_then(Value::as_i64))?;
            println!("signed in; the token for {server} is kept in {}", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        match answer.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            _ => bail!("the sign-in failed ({status}): {answer}"),
        }
    }
    bail!("the sign-in was not completed in time")
}
