//! Mutations: consuming and granting credits, thresholds, organizations, API keys and
//! client sessions.

use async_graphql::{Context, ID, Object};

use super::client_sessions::{self, ClientSession, CreateClientSessionInput};
use super::context::{Access, caller, scope};
use super::errors::ApiError;
use super::scalars::Credits;
use super::types::{
    ApiKey, BalanceChangePayload, Consume, ConsumeCreditsInput, CreateApiKeyInput, CreateApiKeyPayload,
    CreateOrganizationInput, CreditBalance, CreditPurchase, GrantCreditsInput, GrantCreditsPayload, Organization,
    PurchasePackageInput, PurchasePackagePayload,
};
use crate::billing::Billing;
use crate::ledger::{Amount, ConsumeRequest, GrantRequest, Ledger};

/// Mutations of balances, organizations, purchases and API keys.
#[derive(Default)]
pub struct LedgerMutation;

#[Object]
impl LedgerMutation {
    /// Deducts credits, atomically: succeeds in full or changes nothing, and never takes
    /// the balance below zero. With `idempotencyKey`, retries return the original.
    async fn consume_credits(
        &self,
        ctx: &Context<'_>,
        input: ConsumeCreditsInput,
    ) -> Result<BalanceChangePayload<Consume>, ApiError> {
        let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Consume)?;
        let request = ConsumeRequest::new(
            organization_id,
            Amount::parse(input.amount.0)?,
            input.description,
            input.reference_type,
            input.reference_id,
            input.idempotency_key,
        )?;
        Ok(ctx.data_unchecked::<Ledger>().consume(request).await?.into())
    }

    /// Starts buying a credit package through Stripe Checkout. The purchase is `PENDING`
    /// until Stripe reports the payment; then its credits (plus bonus) are added once.
    async fn purchase_package(
        &self,
        ctx: &Context<'_>,
        input: PurchasePackageInput,
    ) -> Result<PurchasePackagePayload, ApiError> {
        let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Purchase)?;
        let started = ctx
            .data_unchecked::<Billing>()
            .purchase_package(&organization_id, input.package_id.as_str(), input.success_url, input.cancel_url)
            .await?;
        Ok(PurchasePackagePayload {
            purchase: CreditPurchase(started.purchase),
            checkout_session_id: started.checkout_session_id,
            checkout_url: started.checkout_url,
        })
    }

    /// Adds credits to an organization as a `GRANT`, forming a lot (default: promotional,
    /// priority 50, no expiry); any overdraft debt is paid first. Admin only.
    async fn grant_credits(
        &self,
        ctx: &Context<'_>,
        input: GrantCreditsInput,
    ) -> Result<GrantCreditsPayload, ApiError> {
        caller(ctx).require_admin()?;
        let organization_id = scope(ctx, Some(&input.organization_id), Access::Manage)?;
        let ledger = ctx.data_unchecked::<Ledger>();
        let request = GrantRequest::new(
            organization_id,
            Amount::parse(input.amount.0)?,
            input.description,
            input.idempotency_key,
        )?
        .with_lot(
            input.category.map(Into::into),
            input.priority,
            input.expires_at.map(|at| at.0),
            ledger.now(),
        )?;
        Ok(GrantCreditsPayload(ledger.grant(request).await?))
    }

    /// Sets the organization's low-balance threshold; null clears it.
    async fn set_low_balance_threshold(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        threshold: Option<Credits>,
    ) -> Result<CreditBalance, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Manage)?;
        let (_, balance) = ctx
            .data_unchecked::<Ledger>()
            .set_low_balance_threshold(&organization_id, threshold.map(|credits| credits.0))
            .await?;
        Ok(CreditBalance(balance))
    }

    /// Creates an organization with a zero balance. Admin only.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        input: CreateOrganizationInput,
    ) -> Result<Organization, ApiError> {
        caller(ctx).require_admin()?;
        let ledger = ctx.data_unchecked::<Ledger>();
        let organization =
            ledger.create_organization(&input.name, input.low_balance_threshold.map(|credits| credits.0)).await?;
        Ok(Organization(organization))
    }

    /// Creates an API key for an organization; its secret is in the payload, once. Admin only.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> Result<CreateApiKeyPayload, ApiError> {
        caller(ctx).require_admin()?;
        let (api_key, secret) =
            ctx.data_unchecked::<Ledger>().create_api_key(input.organization_id.as_str(), &input.name).await?;
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
        Ok(ApiKey(ctx.data_unchecked::<Ledger>().revoke_api_key(id.as_str()).await?))
    }
}
