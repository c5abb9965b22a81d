//! Building the application from its configuration and serving it until told to stop.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;

use crate::billing::stripe::StripeGateway;
use crate::billing::{Billing, PackageCatalog, PackageError};
use crate::config::{Config, Limits};
use crate::graphql::build_schema;
use crate::http::assets::PagePolicy;
use crate::http::observe::MetricsAccess;
use crate::http::rate_limit::{ClientAddress, RateLimits};
use crate::http::ws::SocketCounts;
use crate::http::{AppState, metrics_router, router};
use crate::ledger::Ledger;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] DbErr),
    /// The package file is unusable.
    #[error(transparent)]
    Packages(#[from] PackageError),
    /// The Stripe client could not be built.
    #[error("stripe: {0}")]
    Stripe(#[from] crate::billing::stripe::GatewayError),
    /// `CREDITS_SECRETS_KEY` is unusable.
    #[error("{0}")]
    SecretsKey(String),
    /// The webhook client could not be built.
    #[error("webhooks: {0}")]
    Webhooks(#[from] reqwest::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown: tokio::sync::watch::Sender<()>,
    limits: Limits,
    sockets: SocketCounts,
    /// `CREDITS_METRICS_ADDR`'s listener and routes, when set.
    metrics: Option<(TcpListener, Router)>,
}

impl Application {
    /// Connects to the database, applies pending migrations and binds the listener.
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let db = crate::db::connect_with(&config.database_url, config.db_statement_timeout).await?;
        crate::db::migrate(&db).await?;
        Self::with_database(config, db).await
    }

    /// Binds the listener over an already migrated database.
    pub async fn with_database(config: &Config, db: DatabaseConnection) -> Result<Self, StartError> {
        let packages = match &config.packages_file {
            Some(path) => PackageCatalog::load(path)?,
            None => PackageCatalog::default(),
        };
        let mut ledger = Ledger::new(db);
        match &config.secrets_key {
            Some(key) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(key.expose().trim())
                    .map_err(|_| StartError::SecretsKey("CREDITS_SECRETS_KEY is not base64".into()))?;
                let seal = crate::ledger::webhooks::SecretSeal::new(&bytes)
                    .map_err(|_| StartError::SecretsKey("CREDITS_SECRETS_KEY must be the base64 of 32 bytes".into()))?;
                ledger = ledger.with_secret_seal(seal);
            }
            None => tracing::warn!(
                "CREDITS_SECRETS_KEY is not set: webhook signing secrets are stored as issued (set it to seal them)"
            ),
        }
        ledger.start_event_listener();
        ledger.start_sweeper();
        crate::webhooks::Dispatcher::new(ledger.clone(), config.webhooks.clone())?.start();
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(());
        let gateway = config.stripe.as_ref().map(StripeGateway::new).transpose()?;
        let billing = Billing::new(
            ledger.clone(),
            packages.clone(),
            gateway,
            config.checkout_success_url.clone(),
            config.checkout_cancel_url.clone(),
        );
        billing.start_top_up_worker();
        let rate_limits = RateLimits::new(config.limits.rate_limit);
        rate_limits.start_pruning();
        let sockets = SocketCounts::default();
        let state = AppState::new(crate::http::Shared {
            schema: build_schema(ledger.clone(), packages, billing.clone(), &config.limits, config.webhooks.clone()),
            ledger,
            billing,
            admin_token: config.admin_token.clone(),
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            limits: config.limits,
            rate_limits,
            client_address: ClientAddress {
                trust_proxy: config.limits.trust_proxy,
                trusted_proxies: config.trusted_proxies.clone().into(),
            },
            sockets: sockets.clone(),
            pages: PagePolicy { cors_origins: config.cors_origins.clone(), graphiql: config.graphiql },
            shutdown: shutdown_rx,
            metrics: MetricsAccess {
                handle: (config.metrics_token.is_some() || config.metrics_addr.is_some()).then(crate::metrics::install),
                token: config.metrics_token.clone(),
            },
        });
        let listener =
            TcpListener::bind(config.addr).await.map_err(|source| StartError::Bind { addr: config.addr, source })?;
        let metrics = match config.metrics_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
                Some((listener, metrics_router(state.clone())))
            }
            None => None,
        };
        Ok(Self {
            listener,
            router: router(state, &config.cors_origins),
            shutdown,
            limits: config.limits,
            sockets,
            metrics,
        })
    }

    /// The bound port (useful when binding port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish and closes every WebSocket with 1001 (going away), within the shutdown
    /// grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        if let Some((listener, router)) = self.metrics {
            // Plain axum: a scrape is one short request from the operator's collector.
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the metrics address stopped serving");
                }
            });
        }
        let notify = self.shutdown;
        let signal = async move {
            shutdown.await;
            notify.send_replace(());
        };
        let sockets = self.sockets;
        let drained = async move { sockets.all_closed().await };
        crate::http::server::serve(self.listener, self.router, self.limits, signal, drained).await
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
