//! Who is calling, and which organization each resolver may act on.

use async_graphql::{Context, ID};

use super::errors::ApiError;

/// The authenticated party of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A token was given but is unknown, malformed or revoked.
    InvalidToken,
    /// The admin token: may act on any organization, naming it.
    Admin,
    /// An organization API key: acts on its own organization only.
    ApiKey {
        /// `key_…`
        key_id: String,
        /// The key's organization.
        organization_id: String,
    },
}

impl Caller {
    /// The organization a resolver acts on, given its `organizationId` argument.
    pub fn scope(&self, requested: Option<&ID>) -> Result<String, ApiError> {
        match (self, requested) {
            (Self::Anonymous | Self::InvalidToken, _) => Err(ApiError::Unauthenticated),
            (Self::Admin, Some(id)) => Ok(id.to_string()),
            (Self::Admin, None) => {
                Err(ApiError::BadUserInput("organizationId is required with the admin token".into()))
            }
            (Self::ApiKey { organization_id, .. }, None) => Ok(organization_id.clone()),
            (Self::ApiKey { organization_id, .. }, Some(id)) if id.as_str() == organization_id => {
                Ok(organization_id.clone())
            }
            (Self::ApiKey { .. }, Some(_)) => {
                Err(ApiError::Forbidden("this API key may only act on its own organization"))
            }
        }
    }

    /// Succeeds for the admin token only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::ApiKey { .. } => Err(ApiError::Forbidden("this operation requires the admin token")),
            Self::Anonymous | Self::InvalidToken => Err(ApiError::Unauthenticated),
        }
    }

    /// Succeeds for any valid token.
    pub fn require_any(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin | Self::ApiKey { .. } => Ok(()),
            Self::Anonymous | Self::InvalidToken => Err(ApiError::Unauthenticated),
        }
    }

    /// Whether the caller may see objects of `organization_id`.
    pub fn can_see(&self, organization_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::ApiKey { organization_id: own, .. } => own == organization_id,
            Self::Anonymous | Self::InvalidToken => false,
        }
    }
}

/// The request's tracing span, so resolvers can record the organization they act on.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub tracing::Span);

/// The caller of this request.
pub fn caller<'a>(ctx: &Context<'a>) -> &'a Caller {
    ctx.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
}

/// Resolves the organization to act on and records it on the request span.
pub fn scope(ctx: &Context<'_>, requested: Option<&ID>) -> Result<String, ApiError> {
    let organization_id = caller(ctx).scope(requested)?;
    if let Some(RequestSpan(span)) = ctx.data_opt::<RequestSpan>() {
        span.record("organization", organization_id.as_str());
    }
    Ok(organization_id)
}
