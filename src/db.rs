//! Connecting to the database (the ledger's [`ledger::db`]) and bringing its schema up to
//! date with the migrations, which the ledger does not depend on.

pub use ledger::db::*;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};

/// An arbitrary, fixed key for the PostgreSQL advisory lock that serializes migrations
/// when several replicas start at once.
const MIGRATION_LOCK_KEY: i64 = 0x0063_7265_6469_7473;

/// Applies pending migrations. On PostgreSQL this holds an advisory lock inside one
/// transaction, so replicas starting together migrate once and the others wait.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")).await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    } else {
        Migrator::up(db, None).await
    }
}
