//! A private PostgreSQL database for each test, on the server the test run was given: the one
//! named by `AIRLOCK_TEST_PG_URL`, else the one `tests/postgres/install.sh` found or started
//! (it writes its URL to `tests/postgres/.url`), else `postgres://postgres@127.0.0.1:5432/test`.
//! Each [`TestDatabase`] is created with a name no other test uses and dropped when it goes
//! out of scope, whatever the test's outcome.
//!
//! Tests only: no product crate depends on this one. A test that finds no server fails, naming
//! `install.sh`; it is never skipped silently.

use std::sync::atomic::{AtomicU32, Ordering};

/// The server URL tests run against when nothing else names one.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The file `tests/postgres/install.sh` writes the server's URL to.
fn url_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/postgres/.url")
}

/// The URL of the server tests run against (see the crate docs).
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("AIRLOCK_TEST_PG_URL")
        && !url.trim().is_empty()
    {
        return url.trim().to_string();
    }
    match std::fs::read_to_string(url_file()) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => DEFAULT_URL.to_string(),
    }
}

/// `url` with its database replaced by `name`; `url` is a `postgres://` URL or a
/// `key=value` connection string.
pub fn with_database(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url} dbname={name}");
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let authority = base.split_once('/').map_or(base, |(authority, _)| authority);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A database of its own for one test, dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl TestDatabase {
    /// Creates an empty database on the test server.
    ///
    /// # Panics
    ///
    /// When no server answers, saying how to get one.
    pub async fn create() -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("airlock_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL server for the tests at `{server}` ({e}): run tests/postgres/install.sh \
                 (scripts/test.sh does) or set AIRLOCK_TEST_PG_URL"
            )
        });
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database `{name}` on `{server}`: {e}"));
        let url = with_database(&server, &name);
        TestDatabase { server, name, url }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates the schema `name` in this database and returns a URL whose connections work in
    /// it (`search_path`): many journals in one database, cheaper than a database each.
    ///
    /// # Panics
    ///
    /// When the schema cannot be created.
    pub async fn schema(&self, name: &str) -> String {
        let client = connect(&self.url).await.unwrap_or_else(|e| panic!("cannot reach `{}`: {e}", self.name));
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the schema `{name}` in `{}`: {e}", self.name));
        let separator = if self.url.contains('?') { '&' } else { '?' };
        if self.url.contains("://") {
            format!("{}{separator}options=-csearch_path%3D{name}", self.url)
        } else {
            format!("{} options='-csearch_path={name}'", self.url)
        }
    }

    /// Makes the database refuse every connection, ending those open (`false`), as a database
    /// that went away would; or accept them again (`true`).
    ///
    /// # Panics
    ///
    /// When the server refuses the change.
    pub async fn accept_connections(&self, accept: bool) {
        let admin = connect(&self.server).await.unwrap_or_else(|e| panic!("cannot reach `{}`: {e}", self.server));
        let name = &self.name;
        let mut statements = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {accept};");
        if !accept {
            statements
                .push_str(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"));
        }
        admin.batch_execute(&statements).await.unwrap_or_else(|e| panic!("cannot change `{name}`: {e}"));
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the server's own database (for statements about this one, such as ending its
    /// connections).
    pub fn server_url(&self) -> &str {
        &self.server
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot be blocked on: a thread of its own does it.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let admin = connect(&server).await.map_err(std::io::Error::other)?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database `{}`: {dropped:?}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(with_database("host=h user=u dbname=test", "x"), "host=h user=u dbname=test dbname=x");
    }
}
