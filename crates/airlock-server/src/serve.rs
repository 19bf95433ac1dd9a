//! `airlock serve`: open the journal, load the policy, start the engine and the HTTP listener,
//! and shut down cleanly on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_policy::{Options as PolicyOptions, Policy};
use airlock_store::{SqliteOptions, SqliteStore, Store};
use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::engine::Engine;

/// File name of the embedded journal inside `data_dir`.
pub const JOURNAL_FILE: &str = "journal.db";

/// Loads the policy named by the configuration.
pub fn load_policy(config: &Config) -> Result<Policy, airlock_policy::Error> {
    Policy::load(&config.policy.dir, &PolicyOptions { timeout: config.policy.timeout })
}

/// A running server.
pub struct Running {
    /// The address it listens on (with the real port when the config said 0).
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Asks the server to stop and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    /// A handle that stops the server when `true` is sent.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts airlock with `config`. A policy that does not compile is an error: the server refuses
/// to start rather than run without policy.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let policy = load_policy(&config).context("the policy does not load, so airlock will not start")?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&config.server.data_dir.join(JOURNAL_FILE), SqliteOptions::default())
            .context("cannot open the journal")?,
    );
    let config = Arc::new(config);
    let engine = Engine::start(config.clone(), policy, store).await.context("cannot restore state from the journal")?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(engine.clone().run_background(rx.clone()));
    let app = router(AppState::new(engine.clone())).layer(tower_http::trace::TraceLayer::new_for_http());
    let mut rx_http = rx.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx_http.wait_for(|stop| *stop).await;
            })
            .await
            .context("HTTP server failed")?;
        background.abort();
        drop(engine);
        Ok(())
    });
    Ok(Running { addr, shutdown, task })
}
