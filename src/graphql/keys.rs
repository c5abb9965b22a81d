//! Credentials in GraphQL: API keys (their type, `createApiKey` / `revokeApiKey`) and
//! the client-session mutations (`createClientSession` / `revokeClientSession`, whose
//! types and resolvers are in `client_sessions.rs`).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::client_sessions::{self, ClientSession, CreateClientSessionInput};
use super::context::{audited, caller};
use super::errors::ApiError;
use super::scalars::DateTime;
use crate::ledger;

/// An organization API key (its secret is shown once, at creation, and never again).
pub struct ApiKey(pub ledger::ApiKey);

#[Object]
impl ApiKey {
    /// `key_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The organization the key acts for.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// Label.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The first characters of the secret, to recognize the key.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Latest use, to the minute.
    async fn last_used_at(&self) -> Option<DateTime> {
        self.0.last_used_at.map(DateTime)
    }

    /// When it was revoked.
    async fn revoked_at(&self) -> Option<DateTime> {
        self.0.revoked_at.map(DateTime)
    }
}

/// Input of `createApiKey`.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// The organization the key will act for.
    pub organization_id: ID,
    /// Label.
    pub name: String,
}

/// Result of `createApiKey`.
#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    /// The key's description.
    pub api_key: ApiKey,
    /// The secret: shown this once, never stored.
    pub secret: String,
}

/// Mutations of API keys and client sessions.
#[derive(Default)]
pub struct KeysMutation;

#[Object]
impl KeysMutation {
    /// Creates an API key for an organization; its secret is in the payload, once. Admin only.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> Result<CreateApiKeyPayload, ApiError> {
        caller(ctx).require_admin()?;
        let (api_key, secret) = audited(ctx).create_api_key(input.organization_id.as_str(), &input.name).await?;
        Ok(CreateApiKeyPayload { api_key: ApiKey(api_key), secret })
    }

    /// Mints a short-lived, scoped token for a browser (`scopes` default `[READ, PURCHASE]`,
    /// `ttlSeconds` default 3600, at most 86400). The organization's API key (own
    /// organization) or the admin token (naming it). The token is in this answer only.
    async fn create_client_session(
        &self,
        ctx: &Context<'_>,
        input: CreateClientSessionInput,
    ) -> Result<ClientSession, ApiError> {
        client_sessions::create(ctx, input).await
    }

    /// Revokes a client session at once, on every replica (its WebSockets close with
    /// 4403). The organization's API key or the admin token.
    async fn revoke_client_session(&self, ctx: &Context<'_>, id: ID) -> Result<ClientSession, ApiError> {
        client_sessions::revoke(ctx, id).await
    }

    /// Revokes an API key at once, and the client sessions it created. Admin only.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey, ApiError> {
        caller(ctx).require_admin()?;
        Ok(ApiKey(audited(ctx).revoke_api_key(id.as_str()).await?))
    }
}
