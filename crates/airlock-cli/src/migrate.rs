//! `airlock migrate`: bring the PostgreSQL journal's schema up to date, or copy an embedded
//! SQLite journal into PostgreSQL with every hash unchanged.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_server::Config;
use airlock_server::config::StorageConfig;
use airlock_store::PostgresStore;
use clap::Args;
use serde_json::json;

use crate::output;

/// The arguments of `airlock migrate` (its help is on the command, in `main.rs`).
#[derive(Args)]
pub struct MigrateArgs {
    /// Config file; its `[storage]` names the database.
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
    config: PathBuf,
    /// An SQLite journal to copy into the (empty) database.
    #[arg(long, value_name = "PATH")]
    from_sqlite: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let StorageConfig::Postgres(options) = &config.storage else {
        anyhow::bail!(
            "`{}` keeps the journal in SQLite (`[storage] backend = \"sqlite\"`), whose tables `airlock serve` \
             makes itself; `airlock migrate` is for `backend = \"postgres\"`",
            args.config.display()
        );
    };
    let database = options.describe();
    if let Some(source) = &args.from_sqlite
        && !source.is_file()
    {
        anyhow::bail!("there is no SQLite journal at `{}`", source.display());
    }
    let migrated = PostgresStore::migrate(options).await?;
    let Some(source) = &args.from_sqlite else {
        if args.json {
            output::json(&json!({"database": database, "schema_from": migrated.from, "schema": migrated.to}));
        } else if migrated.from == migrated.to {
            println!("the journal schema in {database} is up to date (version {})", migrated.to);
        } else {
            println!("migrated the journal schema in {database} from version {} to {}", migrated.from, migrated.to);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let report = PostgresStore::copy_from_sqlite(source, options).await?;
    if args.json {
        output::json(&json!({"database": database, "schema": migrated.to, "from_sqlite": source, "copied": report}));
    } else {
        println!(
            "copied {} events in {} streams from {} into {database}; every chain verifies and the Merkle root \
             is unchanged ({})",
            report.events,
            report.streams,
            source.display(),
            report.root
        );
        for (table, rows) in &report.rows {
            println!("    {table}: {rows} rows");
        }
        println!("check it with `airlock audit verify --config {}`", args.config.display());
    }
    Ok(ExitCode::SUCCESS)
}
