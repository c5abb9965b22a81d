//! The GraphQL layer's errors and the one mapping from domain errors to `extensions.code`.
//!
//! Resolvers return [`ApiError`]. It deliberately does not implement `Display`: that keeps
//! async-graphql's blanket `From<impl Display>` from turning it (or a stray `LedgerError`)
//! into an error without a code. Errors raised by async-graphql itself (parsing,
//! validation, argument coercion) get their codes from the [`ErrorCodes`] extension.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ErrorExtensionValues, Response, ServerError, ServerResult, ValidationResult, Variables};

use super::limits::LimitError;
use crate::billing::BillingError;
use crate::ledger::LedgerError;

/// Error codes of the public contract.
pub mod code {
    /// No or invalid credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// Credentials valid, but not for this.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// The thing named does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// An argument's value is unacceptable.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// The document is not GraphQL.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The document does not fit the schema or the limits.
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// The balance is too small.
    pub const INSUFFICIENT_CREDITS: &str = "INSUFFICIENT_CREDITS";
    /// The idempotency key names another request.
    pub const IDEMPOTENCY_CONFLICT: &str = "IDEMPOTENCY_CONFLICT";
    /// The hold has already been captured, released or expired.
    pub const HOLD_NOT_ACTIVE: &str = "HOLD_NOT_ACTIVE";
    /// `STRIPE_SECRET_KEY` is not set.
    pub const PAYMENT_PROVIDER_NOT_CONFIGURED: &str = "PAYMENT_PROVIDER_NOT_CONFIGURED";
    /// Stripe failed or timed out.
    pub const PAYMENT_PROVIDER_ERROR: &str = "PAYMENT_PROVIDER_ERROR";
    /// The caller sent more requests than its rate allows.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The database is unreachable.
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    /// Anything else; details are in the server log only.
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";

    /// Every code, for counting them (`credits_graphql_errors_total`).
    pub const ALL: [&str; 14] = [
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        BAD_USER_INPUT,
        GRAPHQL_PARSE_FAILED,
        GRAPHQL_VALIDATION_FAILED,
        INSUFFICIENT_CREDITS,
        IDEMPOTENCY_CONFLICT,
        HOLD_NOT_ACTIVE,
        PAYMENT_PROVIDER_NOT_CONFIGURED,
        PAYMENT_PROVIDER_ERROR,
        RATE_LIMITED,
        SERVICE_UNAVAILABLE,
        INTERNAL_SERVER_ERROR,
    ];
}

/// An error a resolver reports to the client.
#[derive(Clone, Debug)]
pub enum ApiError {
    /// No token, or a token that is not valid.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden(&'static str),
    /// The named object does not exist (or is not visible).
    NotFound(&'static str),
    /// A value is unacceptable; the message says which and why.
    BadUserInput(String),
    /// The document breaks a limit (depth, cost, nesting, introspection); refused
    /// before anything ran.
    Validation(String),
    /// The caller's rate is used up; retry after this many seconds.
    RateLimited {
        /// Whole seconds until a request will be admitted.
        retry_after_secs: u64,
    },
    /// The balance is smaller than the amount required.
    InsufficientCredits {
        /// Balance when refused.
        balance: i64,
        /// `balance − held` when refused.
        available: i64,
        /// Amount asked for (for a capture, the part beyond the hold).
        required: i64,
    },
    /// The hold has already ended this way.
    HoldNotActive {
        /// `CAPTURED`, `RELEASED` or `EXPIRED`.
        status: &'static str,
    },
    /// An overdraft limit below what is already owed (`BAD_USER_INPUT` with `debt`).
    OverdraftBelowDebt {
        /// Credits owed now.
        debt: i64,
    },
    /// The idempotency key was used for a different request.
    IdempotencyConflict,
    /// Stripe is not configured on this server.
    PaymentProviderNotConfigured,
    /// Stripe failed or did not answer in time (details are logged).
    PaymentProviderError,
    /// The database could not be reached.
    ServiceUnavailable,
    /// A bug or an unexpected failure, already logged.
    Internal,
}

impl ApiError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::BadUserInput(_) => code::BAD_USER_INPUT,
            Self::Validation(_) => code::GRAPHQL_VALIDATION_FAILED,
            Self::RateLimited { .. } => code::RATE_LIMITED,
            Self::InsufficientCredits { .. } => code::INSUFFICIENT_CREDITS,
            Self::HoldNotActive { .. } => code::HOLD_NOT_ACTIVE,
            Self::OverdraftBelowDebt { .. } => code::BAD_USER_INPUT,
            Self::IdempotencyConflict => code::IDEMPOTENCY_CONFLICT,
            Self::PaymentProviderNotConfigured => code::PAYMENT_PROVIDER_NOT_CONFIGURED,
            Self::PaymentProviderError => code::PAYMENT_PROVIDER_ERROR,
            Self::ServiceUnavailable => code::SERVICE_UNAVAILABLE,
            Self::Internal => code::INTERNAL_SERVER_ERROR,
        }
    }

    /// The HTTP status of a request refused with this error before it ran. (Errors of
    /// an executed operation travel in a 200 body, as GraphQL over HTTP prescribes.)
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadUserInput(_) | Self::Validation(_) | Self::OverdraftBelowDebt { .. } => StatusCode::BAD_REQUEST,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::InsufficientCredits { .. } | Self::IdempotencyConflict | Self::HoldNotActive { .. } => {
                StatusCode::CONFLICT
            }
            Self::PaymentProviderNotConfigured | Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PaymentProviderError => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unauthenticated => "a valid bearer token is required".into(),
            Self::Forbidden(what) => (*what).into(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput(message) | Self::Validation(message) => message.clone(),
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            Self::InsufficientCredits { balance, available, required } => {
                format!("insufficient credits: balance {balance}, available {available}, required {required}")
            }
            Self::HoldNotActive { status } => format!("the hold is not active: {status}"),
            Self::OverdraftBelowDebt { debt } => {
                format!("the overdraft limit cannot be below the current debt of {debt} credits")
            }
            Self::IdempotencyConflict => "idempotency key was already used for a different request".into(),
            Self::PaymentProviderNotConfigured => "payments are not configured on this server".into(),
            Self::PaymentProviderError => "the payment provider failed, try again later".into(),
            Self::ServiceUnavailable => "the database is unavailable, try again later".into(),
            Self::Internal => "internal server error".into(),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", error.code());
        match &error {
            ApiError::InsufficientCredits { balance, available, required } => {
                extensions.set("balance", *balance);
                extensions.set("available", *available);
                extensions.set("required", *required);
            }
            ApiError::HoldNotActive { status } => extensions.set("status", *status),
            ApiError::OverdraftBelowDebt { debt } => extensions.set("debt", *debt),
            _ => {}
        }
        if let ApiError::RateLimited { retry_after_secs } = &error {
            extensions.set("retryAfter", *retry_after_secs);
        }
        async_graphql::Error { message: error.message(), source: None, extensions: Some(extensions) }
    }
}

impl From<ApiError> for ServerError {
    /// A request-level error: no location, no path.
    fn from(error: ApiError) -> Self {
        let error = async_graphql::Error::from(error);
        let mut server_error = ServerError::new(error.message, None);
        server_error.extensions = error.extensions;
        server_error
    }
}

impl From<LimitError> for ApiError {
    fn from(error: LimitError) -> Self {
        if error.is_bad_value() { Self::BadUserInput(error.to_string()) } else { Self::Validation(error.to_string()) }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::OrganizationNotFound => Self::NotFound("organization"),
            LedgerError::ApiKeyNotFound => Self::NotFound("API key"),
            LedgerError::ClientSessionNotFound => Self::NotFound("client session"),
            LedgerError::InsufficientCredits { balance, available, required } => {
                Self::InsufficientCredits { balance, available, required }
            }
            LedgerError::NotFound(what) => Self::NotFound(what),
            LedgerError::HoldNotActive { status } => Self::HoldNotActive { status },
            LedgerError::OverdraftBelowDebt { debt } => Self::OverdraftBelowDebt { debt },
            LedgerError::BalanceLimitExceeded { max } => {
                Self::BadUserInput(format!("the balance would exceed the largest allowed, {max} credits"))
            }
            LedgerError::IdempotencyConflict => Self::IdempotencyConflict,
            LedgerError::InvalidInput(message) => Self::BadUserInput(message),
            LedgerError::Unavailable(source) | LedgerError::Conflict(source) => {
                tracing::error!(error = %source, "database unavailable");
                Self::ServiceUnavailable
            }
            error @ (LedgerError::DuplicateIdempotencyKey | LedgerError::Internal(_)) => {
                tracing::error!(%error, "ledger failure");
                Self::Internal
            }
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::UnknownPackage(_) => Self::NotFound("credit package"),
            BillingError::InvalidInput(message) => Self::BadUserInput(message),
            BillingError::NotConfigured => Self::PaymentProviderNotConfigured,
            BillingError::Provider(source) => {
                tracing::error!(error = %source, "payment provider failure");
                Self::PaymentProviderError
            }
            BillingError::Ledger(error) => error.into(),
            error @ BillingError::MalformedEvent { .. } => {
                tracing::error!(%error, "unexpected billing failure");
                Self::Internal
            }
        }
    }
}

/// Schema extension giving every error async-graphql raises itself a contract code.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

fn has_code(error: &ServerError) -> bool {
    error.extensions.as_ref().is_some_and(|extensions| extensions.get("code").is_some())
}

fn set_code(mut error: ServerError, code: &str) -> ServerError {
    if !has_code(&error) {
        error.extensions.get_or_insert_with(Default::default).set("code", code);
    }
    error
}

/// Whether a validation message is about a value (a bad scalar, a missing variable)
/// rather than the shape of the document.
fn is_value_error(message: &str) -> bool {
    message.starts_with("Invalid value for argument")
        || (message.starts_with("Variable") && (message.contains("expected type") || message.contains("not provided")))
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|error| {
            // The nesting limit is checked while parsing but is a validation rule to clients.
            let code = if error.message.starts_with("The recursion depth") {
                code::GRAPHQL_VALIDATION_FAILED
            } else {
                code::GRAPHQL_PARSE_FAILED
            };
            set_code(error, code)
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| {
                    let code = if is_value_error(&error.message) {
                        code::BAD_USER_INPUT
                    } else {
                        code::GRAPHQL_VALIDATION_FAILED
                    };
                    set_code(error, code)
                })
                .collect()
        })
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        // What is left without a code was raised by the executor (our resolvers always
        // set one): a request-level problem (an unknown operation name) or an argument it
        // could not coerce is the client's; anything else is ours.
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|error| {
                let client_mistake = error.path.is_empty()
                    || error.message.starts_with("Failed to parse")
                    || error.message.starts_with("Invalid value");
                let code = if client_mistake { code::BAD_USER_INPUT } else { code::INTERNAL_SERVER_ERROR };
                set_code(error, code)
            })
            .collect();
        for error in &response.errors {
            if let Some(async_graphql::Value::String(code)) = error.extensions.as_ref().and_then(|ext| ext.get("code"))
            {
                crate::metrics::graphql_error(code);
            }
        }
        response
    }
}
