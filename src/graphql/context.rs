//! Who is calling, and which organization each resolver may act on.

use async_graphql::{Context, ID};
use chrono::{DateTime, Utc};

use super::errors::ApiError;
use crate::ledger::{Audit, AuditActor, ClientScope, ClientScopes, Ledger};

/// What a resolver is about to do: client sessions may do only what their scopes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any query or subscription of the organization (scope `READ`).
    Read,
    /// `purchasePackage` (scope `PURCHASE`).
    Purchase,
    /// `consumeCredits` and holds (scope `CONSUME`).
    Consume,
    /// Everything else: thresholds, sessions, keys. Never a client session.
    Manage,
}

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
    /// A client session (a browser's short-lived token): its own organization, within
    /// its scopes.
    Session {
        /// `cses_…`
        session_id: String,
        /// The session's organization.
        organization_id: String,
        /// The API key that minted it (none for the admin token): its requests spend
        /// that key's budget, and it dies with that key.
        key_id: Option<String>,
        /// What it may do.
        scopes: ClientScopes,
        /// When it stops working (WebSockets close then).
        expires_at: DateTime<Utc>,
    },
}

impl Caller {
    /// The organization a resolver acts on, given its `organizationId` argument and what
    /// it is about to do there.
    pub fn scope(&self, requested: Option<&ID>, access: Access) -> Result<String, ApiError> {
        if let Self::Session { organization_id, scopes, .. } = self {
            let needed = match access {
                Access::Read => ClientScope::Read,
                Access::Purchase => ClientScope::Purchase,
                Access::Consume => ClientScope::Consume,
                Access::Manage => return Err(ApiError::Forbidden("a client session may not do this")),
            };
            if !scopes.allows(needed) {
                return Err(ApiError::Forbidden(match needed {
                    ClientScope::Read => "this client session lacks the READ scope",
                    ClientScope::Purchase => "this client session lacks the PURCHASE scope",
                    ClientScope::Consume => "this client session lacks the CONSUME scope",
                }));
            }
            return match requested {
                Some(id) if id.as_str() != organization_id => {
                    Err(ApiError::Forbidden("this client session may only act on its own organization"))
                }
                _ => Ok(organization_id.clone()),
            };
        }
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
            (Self::Session { .. }, _) => Err(ApiError::Forbidden("a client session may not do this")),
        }
    }

    /// Succeeds for the admin token only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::ApiKey { .. } | Self::Session { .. } => {
                Err(ApiError::Forbidden("this operation requires the admin token"))
            }
            Self::Anonymous | Self::InvalidToken => Err(ApiError::Unauthenticated),
        }
    }

    /// Succeeds for any valid token.
    pub fn require_any(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin | Self::ApiKey { .. } | Self::Session { .. } => Ok(()),
            Self::Anonymous | Self::InvalidToken => Err(ApiError::Unauthenticated),
        }
    }

    /// The organization whose credentials (API keys, client sessions) the caller may
    /// manage: an API key its own, the admin any (naming it); a session none.
    pub fn manages(&self, organization_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::ApiKey { organization_id: own, .. } => own == organization_id,
            Self::Session { .. } | Self::Anonymous | Self::InvalidToken => false,
        }
    }

    /// The organization a request is attributed to in logs, if the token names one.
    pub fn organization_id(&self) -> Option<&str> {
        match self {
            Self::ApiKey { organization_id, .. } | Self::Session { organization_id, .. } => Some(organization_id),
            Self::Admin | Self::Anonymous | Self::InvalidToken => None,
        }
    }

    /// Who the ledger records as making a change: the key (the session's minting key for
    /// a session) and the session; nobody for the admin token.
    pub fn actor(&self) -> crate::ledger::Actor {
        match self {
            Self::ApiKey { key_id, .. } => {
                crate::ledger::Actor { api_key_id: Some(key_id.clone()), ..Default::default() }
            }
            Self::Session { session_id, key_id, .. } => crate::ledger::Actor {
                api_key_id: key_id.clone(),
                client_session_id: Some(session_id.clone()),
                ..Default::default()
            },
            Self::Admin | Self::Anonymous | Self::InvalidToken => crate::ledger::Actor::default(),
        }
    }

    /// Who acts, as the audit log says it.
    pub fn audit_actor(&self) -> AuditActor {
        match self {
            Self::Admin => AuditActor::Admin,
            Self::ApiKey { key_id, .. } => AuditActor::ApiKey(key_id.clone()),
            Self::Session { session_id, .. } => AuditActor::ClientSession(session_id.clone()),
            // They change nothing (every write needs a credential); kept apart anyway.
            Self::Anonymous | Self::InvalidToken => AuditActor::System,
        }
    }

    /// Whether the caller may see objects of `organization_id`.
    pub fn can_see(&self, organization_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::ApiKey { organization_id: own, .. } => own == organization_id,
            Self::Session { organization_id: own, scopes, .. } => {
                own == organization_id && scopes.allows(ClientScope::Read)
            }
            Self::Anonymous | Self::InvalidToken => false,
        }
    }
}

/// The request's tracing span, so resolvers can record the organization they act on.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub tracing::Span);

/// Where a request came from: its client's address and its `x-request-id`, for the
/// audit rows of what it changes. Kept as they came (no string is made for a request
/// that changes nothing audited).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The client's address (behind a trusted proxy, the one it reported).
    pub client_address: Option<std::net::IpAddr>,
    /// The request's id.
    pub request_id: Option<std::sync::Arc<str>>,
}

/// The ledger acting for this request's caller: its audited writes record who, from
/// where and under which request id.
pub fn audited(ctx: &Context<'_>) -> Ledger {
    let origin = ctx.data_opt::<Origin>().cloned().unwrap_or_default();
    let audit = Audit {
        actor: caller(ctx).audit_actor(),
        client_address: origin.client_address.map(|ip| ip.to_string()),
        request_id: origin.request_id.map(|id| id.to_string()),
    };
    ctx.data_unchecked::<Ledger>().with_audit(audit)
}

/// The caller of this request.
pub fn caller<'a>(ctx: &Context<'a>) -> &'a Caller {
    ctx.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
}

/// Resolves the organization to act on (for `access`) and records it on the request span.
pub fn scope(ctx: &Context<'_>, requested: Option<&ID>, access: Access) -> Result<String, ApiError> {
    let organization_id = caller(ctx).scope(requested, access)?;
    if let Some(RequestSpan(span)) = ctx.data_opt::<RequestSpan>() {
        span.record("organization", organization_id.as_str());
    }
    Ok(organization_id)
}
