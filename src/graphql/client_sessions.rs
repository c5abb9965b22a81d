//! Client sessions in GraphQL: short-lived, scoped tokens for browsers, minted by the
//! organization's API key (or the admin token) for the application's signed-in user.
//! Their type, input and resolvers; the `createClientSession` / `revokeClientSession`
//! fields that call them are in `keys.rs`.

use async_graphql::{Context, Enum, ID, InputObject, Object};

use super::Caller;
use super::context::{Access, audited, caller, scope};
use super::errors::ApiError;
use super::scalars::DateTime;
use crate::ledger::{self, ClientScopes, Ledger, SessionTtl};

/// What a client session may do.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "ClientScope")]
pub enum ClientScope {
    /// Every query and subscription of its organization.
    Read,
    /// `purchasePackage`.
    Purchase,
    /// `consumeCredits` (and holds).
    Consume,
}

impl From<ClientScope> for ledger::ClientScope {
    fn from(scope: ClientScope) -> Self {
        match scope {
            ClientScope::Read => Self::Read,
            ClientScope::Purchase => Self::Purchase,
            ClientScope::Consume => Self::Consume,
        }
    }
}

impl From<ledger::ClientScope> for ClientScope {
    fn from(scope: ledger::ClientScope) -> Self {
        match scope {
            ledger::ClientScope::Read => Self::Read,
            ledger::ClientScope::Purchase => Self::Purchase,
            ledger::ClientScope::Consume => Self::Consume,
        }
    }
}

/// A short-lived, scoped bearer token for a browser.
pub struct ClientSession {
    /// The session.
    pub session: ledger::ClientSession,
    /// The token: only in `createClientSession`'s answer, never stored.
    pub token: Option<String>,
}

#[Object]
impl ClientSession {
    /// `cses_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.session.id.clone())
    }

    /// The bearer token (`cst_…`): only in `createClientSession`'s answer, null elsewhere.
    async fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The organization the session acts for.
    async fn organization_id(&self) -> ID {
        ID(self.session.organization_id.clone())
    }

    /// What it may do.
    async fn scopes(&self) -> Vec<ClientScope> {
        self.session.scopes.iter().map(ClientScope::from).collect()
    }

    /// When it stops working.
    async fn expires_at(&self) -> DateTime {
        DateTime(self.session.expires_at)
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.session.created_at)
    }

    /// When it was revoked (directly, or with the API key that created it).
    async fn revoked_at(&self) -> Option<DateTime> {
        self.session.revoked_at.map(DateTime)
    }
}

/// Input of `createClientSession`.
#[derive(InputObject)]
pub struct CreateClientSessionInput {
    /// The organization; API keys may omit it, the admin token must name it.
    pub organization_id: Option<ID>,
    /// What the session may do; default `[READ, PURCHASE]`.
    pub scopes: Option<Vec<ClientScope>>,
    /// Lifetime in seconds; default 3600, at most 86400.
    pub ttl_seconds: Option<i32>,
}

/// Mints a session (the resolver behind `createClientSession`).
pub async fn create(ctx: &Context<'_>, input: CreateClientSessionInput) -> Result<ClientSession, ApiError> {
    let caller = caller(ctx);
    let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Manage)?;
    let scopes = match input.scopes {
        Some(scopes) => ClientScopes::parse(scopes.into_iter().map(ledger::ClientScope::from))?,
        None => ClientScopes::default_set(),
    };
    let ttl = SessionTtl::parse(input.ttl_seconds.map(i64::from))?;
    let created_by = match caller {
        Caller::ApiKey { key_id, .. } => Some(key_id.as_str()),
        _ => None,
    };
    let (session, token) = audited(ctx).create_client_session(&organization_id, scopes, ttl, created_by).await?;
    Ok(ClientSession { session, token: Some(token) })
}

/// Revokes a session (the resolver behind `revokeClientSession`): the organization's API
/// key or the admin token; another organization's session is not found.
pub async fn revoke(ctx: &Context<'_>, id: ID) -> Result<ClientSession, ApiError> {
    let caller = caller(ctx);
    match caller {
        Caller::Admin | Caller::ApiKey { .. } => {}
        // Not even its own: a leaked session token must not be able to hide by revoking.
        Caller::Session { .. } => return Err(ApiError::Forbidden("a client session may not do this")),
        Caller::Anonymous | Caller::InvalidToken => return Err(ApiError::Unauthenticated),
    }
    let ledger = ctx.data_unchecked::<Ledger>();
    let visible = ledger.client_session(id.as_str()).await?.is_some_and(|s| caller.manages(&s.organization_id));
    if !visible {
        return Err(ApiError::NotFound("client session"));
    }
    Ok(ClientSession { session: audited(ctx).revoke_client_session(id.as_str()).await?, token: None })
}
