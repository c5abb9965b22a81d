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
    /// The balance is smaller than the amount asked for; nothing changed.
    #[error("insufficient credits: balance {balance}, required {required}")]
    InsufficientCredits {
        /// Balance when the consume was decided.
        balance: i64,
        /// Amount the request asked for.
        required: i64,
    },
    /// Adding the amount would take the balance past the largest representable value.
    #[error("balance would exceed {max} credits")]
    BalanceLimitExceeded {
        /// The largest balance allowed.
        max: i64,
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
    /// The database could not be reached.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else; details are logged, never shown to clients.
    #[error("internal ledger error: {0}")]
    Internal(String),
}

impl LedgerError {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

impl From<DbErr> for LedgerError {
    fn from(error: DbErr) -> Self {
        match &error {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Self::Unavailable(error),
            DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e))
                if is_connection_error(e) =>
            {
                Self::Unavailable(error)
            }
            _ => Self::Internal(error.to_string()),
        }
    }
}

fn is_connection_error(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    matches!(error, Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed)
}
