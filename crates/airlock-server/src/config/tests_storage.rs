//! `[storage]`: SQLite by default; PostgreSQL at a URL that is never written in the file.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const DB_URL: &str = "postgres://airlock:pw@db.internal:5432/journal";

fn parse(storage: &str) -> Result<Config, ConfigError> {
    let env = BTreeMap::from([("DB_URL".to_string(), DB_URL.to_string()), ("NOT_A_URL".into(), "nonsense=1".into())]);
    let text = format!("[policy]\ndir = \".\"\n{storage}");
    Config::parse(&text, &std::env::temp_dir().join("airlock.toml"), &env)
}

fn problems(storage: &str) -> Vec<String> {
    parse(storage).unwrap_err().problems.iter().map(|(k, m)| format!("{k}: {m}")).collect()
}

#[test]
fn sqlite_is_the_default_and_takes_no_database_settings() {
    assert!(matches!(parse("").unwrap().storage, StorageConfig::Sqlite));
    assert!(matches!(parse("[storage]\nbackend = \"sqlite\"\n").unwrap().storage, StorageConfig::Sqlite));
    assert_eq!(
        problems("[storage]\nurl = \"env:DB_URL\"\nmax_connections = 4\n"),
        [
            "storage.url: is for `backend = \"postgres\"` only",
            "storage.max_connections: is for `backend = \"postgres\"` only"
        ]
    );
    assert_eq!(
        problems("[storage]\nbackend = \"mysql\"\npool = 3\n"),
        ["storage.pool: unknown key", "storage.backend: `mysql` must be `sqlite` (the default) or `postgres`"]
    );
}

#[test]
fn postgres_reads_its_url_from_the_environment_with_pool_settings() {
    let config = parse(
        "[storage]\nbackend = \"postgres\"\nurl = \"env:DB_URL\"\nmax_connections = 32\nconnect_timeout_seconds = 9\n",
    )
    .unwrap();
    let StorageConfig::Postgres(options) = &config.storage else { panic!("{:?}", config.storage) };
    assert_eq!(options.describe(), "postgres://airlock@db.internal:5432/journal");
    assert_eq!((options.max_connections, options.connect_timeout), (32, Duration::from_secs(9)));
    assert!(!format!("{config:?}").contains("pw"), "the password shows in {config:?}");
    let defaults = parse("[storage]\nbackend = \"postgres\"\nurl = \"env:DB_URL\"\n").unwrap();
    let StorageConfig::Postgres(options) = &defaults.storage else { panic!() };
    assert_eq!((options.max_connections, options.connect_timeout), (16, Duration::from_secs(5)));
}

#[test]
fn a_database_url_in_the_file_is_refused() {
    let with_password = problems(&format!("[storage]\nbackend = \"postgres\"\nurl = \"{DB_URL}\"\n"));
    assert_eq!(
        with_password,
        [
            "storage.url: holds a password: never write it in the file. Put the URL in an environment variable and write `env:NAME`"
        ]
    );
    let without = problems("[storage]\nbackend = \"postgres\"\nurl = \"postgres://airlock@db/journal\"\n");
    assert!(without[0].starts_with("storage.url: must be `env:NAME`"), "{without:?}");
    assert_eq!(
        problems("[storage]\nbackend = \"postgres\"\n"),
        [
            "storage.url: is required with `backend = \"postgres\"`: `env:NAME`, naming the variable that holds the connection URL"
        ]
    );
    assert_eq!(
        problems("[storage]\nbackend = \"postgres\"\nurl = \"env:UNSET\"\n"),
        ["storage.url: environment variable `UNSET` is not set"]
    );
    let bad = problems("[storage]\nbackend = \"postgres\"\nurl = \"env:NOT_A_URL\"\nmax_connections = 1\n");
    assert!(
        bad[0].starts_with("storage.url: environment variable `NOT_A_URL` is not a PostgreSQL connection string"),
        "{bad:?}"
    );
    let bounds = problems(
        "[storage]\nbackend = \"postgres\"\nurl = \"env:DB_URL\"\nmax_connections = 1\nconnect_timeout_seconds = 0\n",
    );
    assert_eq!(
        bounds,
        [
            "storage.max_connections: must be between 2 and 1000, got 1",
            "storage.connect_timeout_seconds: must be between 1 and 300, got 0"
        ]
    );
}
