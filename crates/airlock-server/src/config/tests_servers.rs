//! `[[servers]]`: virtual MCP servers, from TOML text to a [`Config`] or every problem with its
//! path, and the names two tools the file names would share.

use std::collections::BTreeMap;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = BTreeMap::from([("BOT_TOKEN".to_string(), "s3cret".to_string())]);
    Config::parse(text, &std::env::temp_dir().join("airlock.toml"), &env)
}

/// Two upstreams, `fs` (which names `read_file` and `write_file`) and `docs` (which names
/// `read_file`), then `servers`.
fn with(servers: &str) -> String {
    format!(
        "[policy]\ndir = \".\"\n\
         [[upstreams]]\nname = \"fs\"\ncommand = \"x\"\nread_only = [\"read_file\", \"list_*\"]\ndestructive = [\"write_file\"]\n\
         [[upstreams]]\nname = \"docs\"\nurl = \"http://127.0.0.1:9/mcp\"\nread_only = [\"read_file\"]\n\
         {servers}"
    )
}

fn problems(text: &str) -> Vec<(String, String)> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

#[test]
fn servers_choose_by_upstreams_or_tools_and_keep_overrides() {
    let c = parse(&with(
        "[[servers]]\nname = \"files\"\nupstreams = [\"fs\"]\nprefix = false\n\
         [servers.overrides.fs__read_file]\nrename = \"read\"\ndescription = \"Read one file\"\n\
         [[servers]]\nname = \"reading\"\ntools = [\"*__read_*\"]\n",
    ))
    .unwrap();
    assert_eq!(c.servers.len(), 2);
    let files = &c.servers[0];
    assert_eq!(files.select, ServerSelect::Upstreams(vec!["fs".into()]));
    assert!(!files.prefix);
    let o = &files.overrides["fs__read_file"];
    assert_eq!((o.rename.as_deref(), o.description.as_deref()), (Some("read"), Some("Read one file")));
    assert_eq!(c.servers[1].select, ServerSelect::Tools(vec!["*__read_*".into()]));
    assert!(c.servers[1].prefix, "names keep their prefix unless told otherwise");
    // The inline form of the same table.
    let inline = parse(&with(
        "[[servers]]\nname = \"files\"\nupstreams = [\"fs\"]\nprefix = false\n\
         overrides = { fs__read_file = { rename = \"read\", description = \"Read one file\" } }\n",
    ))
    .unwrap();
    assert_eq!(inline.servers[0], c.servers[0]);
}

#[test]
fn every_problem_of_a_server_is_reported_with_its_path() {
    let found = problems(&with(
        "[[servers]]\nname = \"a b\"\nupstreams = [\"fs\"]\n\
         [servers.overrides.docs__read_file]\nrename = \"x\"\n\
         [servers.overrides.fs__write_file]\nrename = \"no spaces\"\ndescription = \" \"\n\
         [servers.overrides.fs__list]\n\
         [[servers]]\nname = \"b\"\n\
         [[servers]]\nname = \"c\"\nupstreams = []\ntools = [\"x\"]\n\
         [[servers]]\nname = \"d\"\ntools = [\"fss__*\", \"read_file\", \"[\", \"*read*\"]\nprefx = true\n\
         [[servers]]\nname = \"d\"\ntools = []\n\
         [[servers]]\nname = \"e\"\nupstreams = [\"fs\", \"nope\", \"fs\"]\n",
    ));
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    let expected = [
        "servers[3].prefx",
        "servers[0].name",
        "servers[0].overrides.docs__read_file",
        "servers[0].overrides.fs__list",
        "servers[0].overrides.fs__write_file.rename",
        "servers[0].overrides.fs__write_file.description",
        "servers[1].upstreams",
        "servers[2].tools",
        "servers[3].tools[0]",
        "servers[3].tools[1]",
        "servers[3].tools[2]",
        "servers[4].name",
        "servers[4].tools",
        "servers[5].upstreams[1]",
        "servers[5].upstreams[2]",
    ];
    assert_eq!(keys, expected, "{found:#?}");
    let message = |key: &str| found.iter().find(|(k, _)| k == key).map(|(_, m)| m.as_str()).unwrap_or_default();
    assert!(message("servers[5].upstreams[1]").contains("the upstreams are `fs`, `docs`"), "{found:#?}");
    assert!(message("servers[0].overrides.docs__read_file").contains("its `upstreams` do not include it"));
    assert!(message("servers[0].overrides.fs__list").contains("set `rename`, `description` or both"));
    assert!(message("servers[1].upstreams").contains("set `upstreams` (upstream names) or `tools`"));
    assert!(message("servers[2].tools").contains("not both"));
    assert!(message("servers[3].tools[0]").contains("no upstream is named `fss`"));
    assert!(message("servers[3].tools[1]").contains("full names `{upstream}__{tool}` (`fs__read_file`)"));
}

/// Two tools the file names would share a name on a server with `prefix = false`: refused, with
/// the keys that name them; a rename, or keeping the prefix, settles it.
#[test]
fn a_name_two_named_tools_would_share_is_refused_at_load() {
    let found = problems(&with("[[servers]]\nname = \"flat\"\nupstreams = [\"fs\", \"docs\"]\nprefix = false\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    let (key, message) = &found[0];
    assert_eq!(key, "servers[0].prefix");
    assert_eq!(
        message,
        "`read_file` would be the name of `docs__read_file` (named at upstreams[1].read_only[0]) and \
         `fs__read_file` (named at upstreams[0].read_only[0]) on server `flat`; rename one \
         (`[servers.overrides.fs__read_file]` with `rename = \"…\"`), leave one upstream out, or set `prefix = true`"
    );
    let renamed = "[servers.overrides.docs__read_file]\nrename = \"read_doc\"\n";
    let flat = "[[servers]]\nname = \"flat\"\nupstreams = [\"fs\", \"docs\"]\nprefix = false\n";
    assert_eq!(problems(&with(&format!("{flat}{renamed}"))), vec![]);
    assert_eq!(problems(&with("[[servers]]\nname = \"p\"\nupstreams = [\"fs\", \"docs\"]\n")), vec![]);
    // Globs name nothing: `list_*` of `fs` can't be told to collide with anything.
    assert_eq!(problems(&with("[[servers]]\nname = \"f\"\ntools = [\"fs__*\"]\nprefix = false\n")), vec![]);
}

/// A rename onto a name another tool has (known from an allowlist, a `[[tools]]` entry, or another
/// rename) is refused at the rename's key.
#[test]
fn a_rename_onto_another_known_name_is_refused() {
    let agent = "[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\ntools = [\"docs__search\"]\n";
    let server = "[[servers]]\nname = \"s\"\nupstreams = [\"fs\", \"docs\"]\nprefix = false\n\
                  [servers.overrides.fs__read_file]\nrename = \"search\"\n";
    let found = problems(&with(&format!("{agent}{server}")));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, "servers[0].overrides.fs__read_file.rename");
    assert!(found[0].1.contains("`docs__search` (named at agents[0].tools[0])"), "{found:#?}");
    assert!(found[0].1.contains("rename it to a name no other tool of this server has"), "{found:#?}");

    let two = "[[servers]]\nname = \"s\"\nupstreams = [\"fs\"]\n\
               [servers.overrides.fs__read_file]\nrename = \"get\"\n[servers.overrides.fs__write_file]\nrename = \"get\"\n";
    let found = problems(&with(two));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.starts_with("`get` would be the name of `fs__read_file`"), "{found:#?}");
}

/// The `[[servers]]` examples in the docs load, beside the upstreams they name.
#[test]
fn the_examples_in_the_docs_load() {
    for (file, heading) in [
        ("docs/configuration.md", "## `[[servers]]`"),
        ("docs/mcp.md", "## Virtual servers"),
        ("README.md", "### In front of MCP servers"),
    ] {
        let text = std::fs::read_to_string(format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let section = &text[text.find(heading).unwrap_or_else(|| panic!("{file}: no `{heading}`"))..];
        let block = section
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .find(|b| b.contains("[[servers]]"))
            .unwrap_or_else(|| panic!("{file}: no example under `{heading}`"));
        let upstreams =
            "[[upstreams]]\nname = \"fs\"\ncommand = \"x\"\n[[upstreams]]\nname = \"time\"\ncommand = \"x\"\n";
        match parse(&format!("[policy]\ndir = \".\"\n{upstreams}{block}")) {
            Ok(c) => assert!(!c.servers.is_empty(), "{file}: the example has no server"),
            Err(e) => panic!("{file}: the example does not load: {e}"),
        }
    }
}
