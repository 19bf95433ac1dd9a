//! The connection settings of the PostgreSQL backend.

use std::str::FromStr;
use std::time::Duration;

/// Where the journal's database is and how to connect to it.
#[derive(Clone)]
pub struct PostgresOptions {
    config: tokio_postgres::Config,
    /// Most connections this process opens (the writer's included).
    pub max_connections: usize,
    /// How long connecting (and waiting for a free connection) may take before the request
    /// fails.
    pub connect_timeout: Duration,
    /// Most commits made durable by one transaction.
    pub max_batch: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("database", &self.describe())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl PostgresOptions {
    /// Settings for the connection string `url` (`postgres://user:password@host:port/db?…` or
    /// `host=… user=… dbname=…`), with the default pool. The error never repeats the string,
    /// which may hold a password.
    pub fn parse(url: &str) -> Result<PostgresOptions, String> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("is not a PostgreSQL connection string: {}", super::message(&e)))?;
        if config.get_hosts().is_empty() {
            return Err("names no host: write `postgres://user@host:port/database`".into());
        }
        if config.get_user().is_none() {
            return Err("names no user: write `postgres://user@host:port/database`".into());
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err("asks for TLS (`sslmode=require`), which airlock does not speak to PostgreSQL yet: \
                 reach the database over a trusted network or a local TLS proxy, with `sslmode=disable`"
                .into());
        }
        Ok(PostgresOptions { config, max_connections: 16, connect_timeout: Duration::from_secs(5), max_batch: 1024 })
    }

    /// The parsed connection settings.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database's name (the user's name when the string names none, as PostgreSQL does).
    pub fn database(&self) -> &str {
        self.config.get_dbname().or(self.config.get_user()).unwrap_or_default()
    }

    /// `postgres://user@host:port/database`: where the journal is, without the password, for
    /// logs, errors and `airlock audit`.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or_default();
        format!("postgres://{user}@{host}:{port}/{}", self.database())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_is_parsed_and_described_without_its_password() {
        let o = PostgresOptions::parse("postgres://airlock:s3cret@db.internal:6543/journal?sslmode=disable").unwrap();
        assert_eq!(o.describe(), "postgres://airlock@db.internal:6543/journal");
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = PostgresOptions::parse("host=127.0.0.1 user=postgres").unwrap();
        assert_eq!(o.describe(), "postgres://postgres@127.0.0.1:5432/postgres");
        for (bad, says) in [
            ("postgres://db.internal/journal", "names no user"),
            ("postgres://u@/journal", "names no host"),
            ("nonsense=1", "is not a PostgreSQL connection string"),
            ("postgres://u:pw@h/db?sslmode=require", "TLS"),
        ] {
            let err = PostgresOptions::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
