//! The `credits` command line: serve (the default), migrate, print the schema, and
//! operator tasks (organizations, API keys, grants) straight on the database.

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::{Application, StartError, shutdown_signal};
use crate::billing::{PackageCatalog, PackageError};
use crate::config::{Config, ConfigError};
use crate::ledger::{Amount, GrantRequest, Ledger, LedgerError};

/// Credit-based usage billing over GraphQL.
#[derive(Debug, Parser)]
#[command(name = "credits", version, about)]
pub struct Cli {
    /// Database URL (overrides DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The tracing filter for this command: `configured` for the server; for one-shot
    /// commands the same without sea-orm's migration notes, so that they print only
    /// their result (`RUST_LOG=sea_orm_migration=info` brings them back).
    pub fn log_filter(&self, configured: &str) -> String {
        let serving = matches!(self.command, None | Some(Command::Serve { .. }));
        if serving || configured.contains("sea_orm_migration") {
            configured.to_owned()
        } else {
            format!("{configured},sea_orm_migration=warn")
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP (the default).
    Serve {
        /// Listen address (overrides CREDITS_ADDR).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the GraphQL SDL.
    Schema,
    /// Manage organizations.
    Org {
        /// Action.
        #[command(subcommand)]
        action: OrgAction,
    },
    /// Manage API keys.
    ApiKey {
        /// Action.
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Grant credits to an organization.
    Grant {
        /// Organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// Credits to add.
        #[arg(long)]
        amount: i64,
        /// Why.
        #[arg(long)]
        description: String,
        /// Makes retries of this grant harmless.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Write a consistent copy of a SQLite database, online (`VACUUM INTO`); on
    /// PostgreSQL, print the `pg_dump` command to use instead.
    Backup {
        /// Where to write the copy (must not exist).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Check every invariant of the books (balances, transactions, lots, allocations,
    /// holds); exit non-zero naming the first organization that breaks one.
    Verify,
}

/// Organization actions.
#[derive(Debug, Subcommand)]
pub enum OrgAction {
    /// Create an organization; prints its id.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Default low-balance threshold.
        #[arg(long)]
        low_balance_threshold: Option<i64>,
    },
}

/// API key actions.
#[derive(Debug, Subcommand)]
pub enum ApiKeyAction {
    /// Create a key; prints its id and, once, its secret.
    Create {
        /// Organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// Label.
        #[arg(long)]
        name: String,
    },
    /// Revoke a key at once.
    Revoke {
        /// Key id (`key_…`).
        #[arg(long)]
        id: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The package file is unusable.
    #[error(transparent)]
    Packages(#[from] PackageError),
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
    /// `backup` cannot do what was asked (PostgreSQL, or the file exists).
    #[error("backup: {0}")]
    Backup(String),
    /// `verify` found an organization whose books break an invariant.
    #[error("verify: organization {organization_id} breaks an invariant: {invariant}")]
    Broken {
        /// `org_…`
        organization_id: String,
        /// Which, with the figures.
        invariant: String,
    },
}

impl From<sea_orm::DbErr> for CliError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Start(StartError::Database(error))
    }
}

/// Runs the command line.
pub async fn run(cli: Cli, mut config: Config) -> Result<(), CliError> {
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    // A bad package file stops every command, not only the server: it is configuration.
    if let Some(path) = &config.packages_file {
        PackageCatalog::load(path)?;
    }
    let json = cli.json;
    match cli.command.unwrap_or(Command::Serve { addr: None }) {
        Command::Serve { addr } => {
            if let Some(addr) = addr {
                config.addr = addr;
            }
            let app = Application::build(&config).await?;
            let addr = app.local_addr()?;
            tracing::info!(%addr, graphiql = %format!("http://{addr}/graphql"), "credits is serving");
            if config.admin_token.is_none() {
                tracing::warn!("CREDITS_ADMIN_TOKEN is not set: no admin access over HTTP");
            }
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate => {
            let db = crate::db::connect(&config.database_url).await?;
            crate::db::migrate(&db).await?;
            print(json, json!({ "migrated": true }), &["migrated"]);
        }
        Command::Schema => println!("{}", crate::graphql::sdl()),
        Command::Org { action: OrgAction::Create { name, low_balance_threshold } } => {
            let ledger = ledger(&config).await?;
            let organization = ledger.create_organization(&name, low_balance_threshold).await?;
            print(json, json!({ "id": organization.id, "name": organization.name }), &[&organization.id]);
        }
        Command::ApiKey { action: ApiKeyAction::Create { org, name } } => {
            let ledger = ledger(&config).await?;
            let (key, secret) = ledger.create_api_key(&org, &name).await?;
            eprintln!("note: the secret is shown this once and cannot be recovered; store it now");
            print(json, json!({ "id": key.id, "prefix": key.prefix, "secret": secret }), &[&key.id, &secret]);
        }
        Command::ApiKey { action: ApiKeyAction::Revoke { id } } => {
            let ledger = ledger(&config).await?;
            let key = ledger.revoke_api_key(&id).await?;
            print(json, json!({ "id": key.id, "revokedAt": key.revoked_at }), &[&key.id]);
        }
        Command::Grant { org, amount, description, idempotency_key } => {
            let ledger = ledger(&config).await?;
            let request = GrantRequest::new(org, Amount::parse(amount)?, description, idempotency_key)?;
            let applied = ledger.grant(request).await?;
            let balance = applied.balance.balance.to_string();
            print(
                json,
                json!({ "transactionId": applied.transaction.id, "balance": applied.balance.balance, "replayed": applied.replayed }),
                &[&applied.transaction.id, &balance],
            );
        }
        Command::Backup { out } => {
            if !config.database_url.starts_with("sqlite:") {
                return Err(CliError::Backup(
                    "on PostgreSQL, take the copy with pg_dump (consistent while the server runs): \
                     pg_dump --format=custom --file=credits.dump \"$DATABASE_URL\"; restore with pg_restore"
                        .into(),
                ));
            }
            if out.exists() {
                return Err(CliError::Backup(format!("{} exists; name a new file", out.display())));
            }
            let db = crate::db::connect(&config.database_url).await?;
            crate::ledger::db::vacuum_into(&db, &out).await?;
            let written = out.display().to_string();
            print(json, json!({ "backup": written }), &[&written]);
        }
        Command::Verify => {
            let db = crate::db::connect(&config.database_url).await?;
            let verification = Ledger::new(db).verify().await?;
            if let Some(broken) = verification.broken {
                return Err(CliError::Broken { organization_id: broken.organization_id, invariant: broken.invariant });
            }
            let summary =
                format!("ok: {} organizations, {} transactions", verification.organizations, verification.transactions);
            print(
                json,
                json!({ "ok": true, "organizations": verification.organizations, "transactions": verification.transactions }),
                &[&summary],
            );
        }
    }
    Ok(())
}

async fn ledger(config: &Config) -> Result<Ledger, CliError> {
    let db = crate::db::connect(&config.database_url).await?;
    crate::db::migrate(&db).await?;
    // What an operator changes here is audited as the admin's.
    Ok(Ledger::new(db).with_audit(crate::ledger::Audit::operator()))
}

fn print(json: bool, value: serde_json::Value, lines: &[&str]) {
    if json {
        println!("{value}");
    } else {
        for line in lines {
            println!("{line}");
        }
    }
}
