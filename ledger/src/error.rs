//! Errors of the ledger layer. Adapters (GraphQL, webhooks, CLI) map these to their own
//! codes in one place each; nothing here knows about those protocols.

use sea_orm::{DbErr, RuntimeErr};

/// Why a ledger operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The organization does not exist.
    #[error("organization not found")]
    OrganizationNotFound,
    /// The API key does not exist.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// The client session does not exist.
    #[error("client session not found")]
    ClientSessionNotFound,
    /// The balance is smaller than the amount asked for; nothing changed.
    #[error("insufficient credits: balance {balance}, available {available}, required {required}")]
    InsufficientCredits {
        /// Balance when the consume was decided.
        balance: i64,
        /// Balance minus held credits, when the consume was decided.
        available: i64,
        /// Amount the request asked for (for a capture, the part beyond the hold).
        required: i64,
    },
    /// Adding the amount would take the balance past the largest representable value.
    #[error("balance would exceed {max} credits")]
    BalanceLimitExceeded {
        /// The largest balance allowed.
        max: i64,
    },
    /// A lot, hold or other named thing does not exist (or is not the caller's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The hold has already ended this way; nothing changed.
    #[error("hold is not active: {status}")]
    HoldNotActive {
        /// `CAPTURED`, `RELEASED` or `EXPIRED`.
        status: &'static str,
    },
    /// An overdraft limit below what is already owed.
    #[error("overdraft limit below the current debt of {debt}")]
    OverdraftBelowDebt {
        /// Credits owed now.
        debt: i64,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyConflict,
    /// Internal signal: another request with the same idempotency key committed first.
    #[error("duplicate idempotency key")]
    DuplicateIdempotencyKey,
    /// A value broke a domain rule (length, range, format).
    #[error("{0}")]
    InvalidInput(String),
    /// The database could not be reached, is restarting, or took too long.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// The database aborted the transaction to keep concurrent ones consistent (a
    /// serialization failure or deadlock); running it again will succeed.
    #[error("transaction conflict, retry")]
    Conflict(#[source] DbErr),
    /// Anything else; details are logged, never shown to clients.
    #[error("internal ledger error: {0}")]
    Internal(String),
}

impl LedgerError {
    /// An invariant the stored data broke (an unknown stored name, say): a bug or a
    /// hand edit, never the client's mistake.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

/// An error that may go away if the same work runs again (see [`super::retrying`]).
pub trait Retryable {
    /// Whether running the same work again may succeed at once.
    fn is_retryable(&self) -> bool;
}

impl Retryable for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

impl From<DbErr> for LedgerError {
    fn from(error: DbErr) -> Self {
        let fault = match &error {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Fault::Unavailable,
            DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => classify(e),
            _ => Fault::Other,
        };
        match fault {
            Fault::Unavailable => Self::Unavailable(error),
            Fault::Conflict => Self::Conflict(error),
            Fault::Other => Self::Internal(error.to_string()),
        }
    }
}

/// What kind of database failure an error is.
enum Fault {
    /// Not the request's fault, and not ours: the database is away or overloaded.
    Unavailable,
    /// A concurrency abort: retry.
    Conflict,
    /// Anything else.
    Other,
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that mean the database, not the
/// request, failed.
fn classify(error: &sea_orm::sqlx::Error) -> Fault {
    use sea_orm::sqlx::Error;
    match error {
        // A protocol error is a connection that broke mid-message (a proxy cutting it).
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => Fault::Unavailable,
        Error::Database(database) => match database.code().as_deref() {
            // serialization_failure, deadlock_detected
            Some("40001" | "40P01") => Fault::Conflict,
            // query_canceled (statement_timeout), admin_shutdown, crash_shutdown,
            // cannot_connect_now, lock_not_available, too_many_connections
            Some("57014" | "57P01" | "57P02" | "57P03" | "55P03" | "53300") => Fault::Unavailable,
            // read_only_sql_transaction: a standby answered, mid-failover (before its promotion)
            Some("25006") => Fault::Unavailable,
            // connection_exception class
            Some(code) if code.starts_with("08") => Fault::Unavailable,
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes
            Some(code) if code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6)) => Fault::Unavailable,
            _ => Fault::Other,
        },
        _ => Fault::Other,
    }
}
