//! `[identity]`, `[[identity.issuers]]` and `[[agent_templates]]`: from TOML text to a
//! [`Config`], or every problem with its path.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(
        &format!("[policy]\ndir = \".\"\n{text}"),
        &std::env::temp_dir().join("airlock.toml"),
        &BTreeMap::new(),
    )
}

fn problems(text: &str) -> Vec<(String, String)> {
    parse(text).err().map(|e| e.problems).unwrap_or_default()
}

const ISSUER: &str =
    "[identity]\nrequired_scopes = [\"mcp\"]\n\n[[identity.issuers]]\nissuer = \"https://idp.example/realms/ops\"\n";

#[test]
fn issuers_get_safe_defaults_and_agents_may_have_no_static_token() {
    let c = parse(&format!(
        "{ISSUER}\n[[agents]]\nid = \"ops-bot\"\nowner = \"platform\"\ntier = \"change\"\nissuer = \"https://idp.example/realms/ops\"\n\n\
         [[agent_templates]]\nname = \"ci\"\nclaim = \"groups\"\nvalues = [\"ci\"]\nowner = \"platform\"\ntier = \"advisory\"\ntools = [\"*.list\"]\n\
         [agent_templates.guards]\nactions_per_minute = 5\n"
    ))
    .unwrap();
    let identity = c.identity.as_ref().unwrap();
    assert_eq!(identity.required_scopes, ["mcp"]);
    assert_eq!(identity.scopes_supported, ["mcp"], "defaults to the required scopes");
    let issuer = &identity.issuers[0];
    assert_eq!(issuer.agent_claims, ["client_id", "azp", "sub"]);
    assert_eq!(issuer.groups_claim, "groups");
    assert_eq!(issuer.options.leeway, Duration::from_secs(60));
    assert_eq!(issuer.options.audiences, None, "the resource identifier is the audience");
    assert!(!issuer.options.algorithms.is_empty());
    assert_eq!(c.agents[0].token_hash, None);
    assert_eq!(c.agents[0].issuer.as_deref(), Some("https://idp.example/realms/ops"));
    let t = &c.agent_templates[0];
    assert_eq!(t.when, Some(("groups".to_string(), vec!["ci".to_string()])));
    assert_eq!(t.limits.actions_per_minute, 5);
}

#[test]
fn an_agent_without_a_token_needs_identity() {
    let found = problems("[[agents]]\nid = \"bot\"\nowner = \"p\"\ntier = \"change\"\nissuer = \"https://idp\"\n");
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["agents[0].token", "agents[0].issuer"], "{found:?}");
    assert!(found[0].1.contains("configure `[identity]`"), "{found:?}");
}

#[test]
fn every_problem_of_identity_is_reported_with_its_path() {
    let found = problems(
        "[identity]\nresource = \"urn:airlock\"\nrequired_scopes = [\"a b\"]\n\n\
         [[identity.issuers]]\nissuer = \"http://idp.example\"\nalgorithms = [\"none\", \"HS256\", \"RS256\"]\nleeway_seconds = 900\naudiences = []\n\n\
         [[identity.issuers]]\nissuer = \"https://idp.example\"\njwks_uri = \"http://keys.example/jwks\"\nagent_claim = \"\"\n\n\
         [[agent_templates]]\nname = \"t\"\nclaim = \"groups\"\nowner = \"p\"\ntier = \"advisory\"\nissuer = \"https://nobody\"\n\n\
         [[agent_templates]]\nname = \"t\"\nvalues = [\"x\"]\nowner = \"\"\ntier = \"advisory\"\ntools = [\"[\"]\n",
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "identity.resource",
            "identity.required_scopes[0]",
            "identity.scopes_supported[0]",
            "identity.issuers[0].issuer",
            "identity.issuers[0].audiences",
            "identity.issuers[0].algorithms[0]",
            "identity.issuers[0].algorithms[1]",
            "identity.issuers[0].leeway_seconds",
            "identity.issuers[1].jwks_uri",
            "identity.issuers[1].agent_claim",
            "agent_templates[0].issuer",
            "agent_templates[0].values",
            "agent_templates[1].name",
            "agent_templates[1].claim",
            "agent_templates[1].owner",
            "agent_templates[1].tools[0]",
        ],
        "{found:#?}"
    );
    let message = |key: &str| found.iter().find(|(k, _)| k == key).map(|(_, m)| m.clone()).unwrap();
    assert!(message("identity.issuers[0].algorithms[0]").contains("never allowed"));
    assert!(message("identity.issuers[0].algorithms[1]").contains("HMAC"));
}

#[test]
fn templates_and_issuers_need_identity() {
    let found = problems("[identity]\n\n[[agent_templates]]\nname = \"t\"\nowner = \"p\"\ntier = \"advisory\"\n");
    assert_eq!(found[0].0, "identity.issuers", "{found:?}");
    let found = problems("[[agent_templates]]\nname = \"t\"\nowner = \"p\"\ntier = \"advisory\"\n");
    assert_eq!(found[0].0, "agent_templates", "{found:?}");
    let found = problems("[identity]\nissuers = [{ issuer = \"https://a\", colour = \"red\" }]\n");
    assert_eq!(found[0].0, "identity.issuers[0].colour", "{found:?}");
}

/// Every configuration example of docs/identity.md loads.
#[test]
fn the_examples_in_the_docs_load() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/identity.md")).unwrap();
    let blocks: Vec<&str> = text.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 4, "{} examples", blocks.len());
    let secrets = [
        ("TICKETS_CLIENT_SECRET", "s"),
        ("AIRLOCK_OIDC_SECRET", "s"),
        ("ANA_TOTP", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
    ];
    for block in blocks {
        match parse_env(block, &secrets) {
            Ok(c) => assert!(
                c.identity.is_some()
                    || c.upstreams
                        .iter()
                        .any(|u| matches!(&u.transport, UpstreamTransport::Http { client_credentials: Some(_), .. })),
                "the example configures no identity:\n{block}"
            ),
            Err(e) => panic!("an example of docs/identity.md does not load: {e}\n{block}"),
        }
    }
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::parse(&format!("[policy]\ndir = \".\"\n{text}"), &std::env::temp_dir().join("airlock.toml"), &env)
}

const TICKETS: &str = "[[upstreams]]\nname = \"tickets\"\nurl = \"https://tickets.example/mcp\"\n";

#[test]
fn an_upstream_takes_client_credentials_with_the_secret_from_the_environment() {
    let c = parse_env(
        &format!(
            "{TICKETS}[upstreams.client_credentials]\nissuer = \"https://idp.example/realms/ops\"\nclient_id = \"airlock\"\n\
             client_secret = \"env:TICKETS_SECRET\"\nscope = \"tickets.read\"\nresource = \"https://tickets.example/mcp\"\n"
        ),
        &[("TICKETS_SECRET", "s3cret")],
    )
    .unwrap();
    let UpstreamTransport::Http { client_credentials: Some(cc), .. } = &c.upstreams[0].transport else {
        panic!("no client credentials")
    };
    assert_eq!(cc.endpoint, airlock_identity::TokenEndpoint::Issuer("https://idp.example/realms/ops".into()));
    assert_eq!(cc.client_id, "airlock");
    assert_eq!(cc.client_secret, "s3cret");
    assert_eq!(cc.scope.as_deref(), Some("tickets.read"));
    assert_eq!(cc.resource.as_deref(), Some("https://tickets.example/mcp"));
    assert_eq!(cc.audience, None);
}

#[test]
fn every_problem_of_client_credentials_is_reported_with_its_path() {
    let found = parse_env(
        &format!(
            "{TICKETS}headers = {{ authorization = \"Bearer x\" }}\n[upstreams.client_credentials]\n\
             token_endpoint = \"http://idp.example/token\"\nclient_id = \"\"\nclient_secret = \"s3cret\"\nscope = \" \"\n\n\
             [[upstreams]]\nname = \"fs\"\ncommand = \"x\"\n[upstreams.client_credentials]\nissuer = \"https://a\"\n\
             token_endpoint = \"https://a/token\"\nclient_id = \"airlock\"\nclient_secret = \"env:UNSET\"\n\n\
             [[upstreams]]\nname = \"third\"\nurl = \"https://third.example/mcp\"\n[upstreams.client_credentials]\n\
             client_id = \"airlock\"\nclient_secret = \"env:SET\"\n"
        ),
        &[("SET", "x")],
    )
    .unwrap_err()
    .problems;
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "upstreams[0].client_credentials.token_endpoint",
            "upstreams[0].client_credentials.client_id",
            "upstreams[0].client_credentials.client_secret",
            "upstreams[0].client_credentials.scope",
            "upstreams[0].headers.authorization",
            "upstreams[1].client_credentials.issuer",
            "upstreams[1].client_credentials.client_secret",
            "upstreams[1].client_credentials",
            "upstreams[2].client_credentials.token_endpoint",
        ],
        "{found:?}"
    );
    assert!(found[0].1.contains("the client secret is sent there"), "{found:?}");
    assert!(found[2].1.contains("never the secret itself"), "{found:?}");
    assert!(found[4].1.contains("conflicts with `client_credentials`"), "{found:?}");
    assert!(found[6].1.contains("`UNSET` is not set"), "{found:?}");
    assert!(found[7].1.contains("only applies to `url` upstreams"), "{found:?}");
}

const SIGN_IN: &str = "[identity]\n\n[identity.humans]\nissuer = \"https://idp.example/realms/ops\"\nclient_id = \"airlock\"\n\
                       client_secret = \"env:UI_SECRET\"\nid_claim = \"email\"\napprover_groups = [\"approvers\"]\n";

#[test]
fn people_sign_in_at_the_provider_and_humans_need_no_token_then() {
    let c = parse_env(
        &format!("{SIGN_IN}\n[[humans]]\nid = \"ana@example.com\"\nroles = [\"admin\"]\n"),
        &[("UI_SECRET", "s3cret")],
    )
    .unwrap();
    let h = c.identity.as_ref().unwrap().humans.as_ref().unwrap();
    assert_eq!(h.client_secret, "s3cret");
    assert_eq!(h.scopes, ["openid", "profile", "email"]);
    assert_eq!(h.id_claim, "email");
    assert_eq!(h.groups_claim, "groups");
    assert_eq!(h.options.audiences, Some(vec!["airlock".to_string()]), "ID tokens are for airlock's client id");
    assert_eq!(c.humans[0].token_hash, None);
    assert!(c.identity.as_ref().unwrap().issuers.is_empty(), "no issuer is needed for people alone");
}

#[test]
fn every_problem_of_people_sign_in_is_reported_with_its_path() {
    let found = parse_env(
        "[identity]\n\n[identity.humans]\nissuer = \"http://idp.example\"\nclient_id = \" \"\nclient_secret = \"s3cret\"\n\
         redirect_uri = \"https://airlock.example/elsewhere\"\nscopes = [\"a b\"]\nid_claim = \"\"\nleeway_seconds = 900\n\
         algorithms = [\"HS256\"]\n",
        &[],
    )
    .unwrap_err()
    .problems;
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "identity.humans.issuer",
            "identity.humans.client_id",
            "identity.humans.client_secret",
            "identity.humans.redirect_uri",
            "identity.humans.scopes[0]",
            "identity.humans.algorithms[0]",
            "identity.humans.algorithms",
            "identity.humans.leeway_seconds",
            "identity.humans.id_claim",
        ],
        "{found:?}"
    );
    let without = problems("[[humans]]\nid = \"ana\"\n");
    assert_eq!(without[0].0, "humans[0].token", "{without:?}");
    assert!(without[0].1.contains("[identity.humans]"), "{without:?}");
}
