//! Queries: balances, history, purchases, packages, organizations and Relay `node`.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, ID, Object};

use super::client_sessions::ClientSession;
use super::context::{Access, caller, scope};
use super::errors::ApiError;
use super::lots::CreditLot;
use super::pagination::{decode_cursor, encode_cursor, page_size, transaction_page};
use super::types::{
    ApiKey, CreditBalance, CreditPackage, CreditPurchase, CreditTransaction, CreditTransactionFilter, Node,
    Organization, PurchaseTotals, TransactionTotals,
};
use crate::billing::{PackageCatalog, Purchases};
use crate::ledger::{Ledger, TransactionFilter};

/// Transactions, newest first, with `totalCount`.
pub type CreditTransactionConnection = Connection<String, CreditTransaction, TransactionTotals, EmptyFields>;
/// Purchases, newest first, with `totalCount`.
pub type CreditPurchaseConnection = Connection<String, CreditPurchase, PurchaseTotals, EmptyFields>;

/// Queries of balances, history, purchases, packages and organizations, and `node`.
#[derive(Default)]
pub struct LedgerQuery;

#[Object]
impl LedgerQuery {
    /// The organization's current balance. API keys may omit `organizationId`.
    async fn credit_balance(&self, ctx: &Context<'_>, organization_id: Option<ID>) -> Result<CreditBalance, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        Ok(CreditBalance(ctx.data_unchecked::<Ledger>().balance(&organization_id).await?))
    }

    /// The organization's transactions, newest first (Relay connection).
    // The contract fixes these arguments; each is a GraphQL argument, not a Rust design choice.
    #[allow(clippy::too_many_arguments)]
    async fn credit_transactions(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        filter: Option<CreditTransactionFilter>,
    ) -> Result<CreditTransactionConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let page = transaction_page(first, after, last, before)?;
        let filter = TransactionFilter::from(filter.unwrap_or_default());
        let ledger = ctx.data_unchecked::<Ledger>();
        // Distinguish "no such organization" from "no transactions yet".
        ledger.balance(&organization_id).await?;
        let page = ledger.transactions(&organization_id, &filter, page).await?;
        let totals = TransactionTotals { ledger: ledger.clone(), organization_id, filter };
        let mut connection = Connection::with_additional_fields(page.has_previous, page.has_next, totals);
        connection.edges.extend(page.items.into_iter().map(|transaction| {
            Edge::new(encode_cursor("seq", &transaction.seq.to_string()), CreditTransaction(transaction))
        }));
        Ok(connection)
    }

    /// The organization's credit purchases, newest first.
    async fn credit_purchases(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<CreditPurchaseConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let count = page_size("first", first)?;
        let after = after.map(|cursor| decode_cursor("pur", &cursor)).transpose()?;
        ctx.data_unchecked::<Ledger>().balance(&organization_id).await?;
        let purchases = ctx.data_unchecked::<Purchases>();
        let (items, has_next) = purchases.list(&organization_id, count, after.as_deref()).await?;
        let totals = PurchaseTotals { purchases: purchases.clone(), organization_id };
        let mut connection = Connection::with_additional_fields(after.is_some(), has_next, totals);
        connection.edges.extend(
            items.into_iter().map(|purchase| Edge::new(encode_cursor("pur", &purchase.id), CreditPurchase(purchase))),
        );
        Ok(connection)
    }

    /// The credit packages on sale. Public: no token needed.
    async fn credit_packages(&self, ctx: &Context<'_>) -> Vec<CreditPackage> {
        ctx.data_unchecked::<PackageCatalog>().all().iter().cloned().map(CreditPackage).collect()
    }

    /// An organization. API keys may omit `id` to get their own.
    async fn organization(&self, ctx: &Context<'_>, id: Option<ID>) -> Result<Organization, ApiError> {
        let organization_id = scope(ctx, id.as_ref(), Access::Read)?;
        ctx.data_unchecked::<Ledger>()
            .organization(&organization_id)
            .await?
            .map(Organization)
            .ok_or(ApiError::NotFound("organization"))
    }

    /// Any object by id (Relay refetch); null when unknown or not visible to the caller.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>, ApiError> {
        let caller = caller(ctx);
        caller.require_any()?;
        let ledger = ctx.data_unchecked::<Ledger>();
        let (prefix, _) = id.split_once('_').unwrap_or_default();
        let node =
            match prefix {
                "org" => ledger.organization(&id).await?.map(|o| (o.id.clone(), Node::Organization(Organization(o)))),
                "bal" => ledger
                    .balance_by_id(&id)
                    .await?
                    .map(|b| (b.organization_id.clone(), Node::CreditBalance(CreditBalance(b)))),
                "ctx" => ledger
                    .transaction(&id)
                    .await?
                    .map(|t| (t.organization_id.clone(), Node::CreditTransaction(CreditTransaction(t)))),
                // Credentials are for their managers only, never for a client session.
                "key" => ledger
                    .api_key(&id)
                    .await?
                    .filter(|k| caller.manages(&k.organization_id))
                    .map(|k| (k.organization_id.clone(), Node::ApiKey(ApiKey(k)))),
                "cses" => ledger.client_session(&id).await?.filter(|s| caller.manages(&s.organization_id)).map(|s| {
                    (s.organization_id.clone(), Node::ClientSession(ClientSession { session: s, token: None }))
                }),
                "lot" => ledger
                    .lots_by_id(&[id.to_string()])
                    .await?
                    .pop()
                    .map(|lot| (lot.organization_id.clone(), Node::CreditLot(CreditLot(lot)))),
                "hld" => ledger
                    .hold(&id)
                    .await?
                    .map(|hold| (hold.organization_id.clone(), Node::CreditHold(super::holds::CreditHold(hold)))),
                "pur" => ctx
                    .data_unchecked::<Purchases>()
                    .get(&id)
                    .await?
                    .map(|p| (p.organization_id.clone(), Node::CreditPurchase(CreditPurchase(p)))),
                _ => None,
            };
        Ok(node.filter(|(organization_id, _)| caller.can_see(organization_id)).map(|(_, node)| node))
    }
}
