//! Lots and overdraft (holds join them here): their types, the `creditLots` query and
//! the `voidCreditLot` / `setOverdraftLimit` mutations.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::context::{Access, audited, caller, scope};
use super::errors::ApiError;
use super::pagination::{decode_cursor, encode_cursor, page_size};
use super::scalars::Credits;
use super::views::{CreditBalance, CreditCategory, CreditLot, CreditLotStatus, CreditTransaction};
use crate::ledger::{Ledger, LotFilter};

/// Which lots to list.
#[derive(InputObject, Default)]
pub struct CreditLotFilter {
    /// Any of these statuses.
    pub statuses: Option<Vec<CreditLotStatus>>,
    /// Any of these categories.
    pub categories: Option<Vec<CreditCategory>>,
}

impl From<CreditLotFilter> for LotFilter {
    fn from(filter: CreditLotFilter) -> Self {
        Self {
            statuses: filter.statuses.map(|statuses| statuses.into_iter().map(Into::into).collect()),
            categories: filter.categories.map(|categories| categories.into_iter().map(Into::into).collect()),
        }
    }
}

/// `totalCount` of a lot connection, counted only when asked for.
pub struct LotTotals {
    ledger: Ledger,
    organization_id: String,
    filter: LotFilter,
}

#[Object]
impl LotTotals {
    /// How many lots match, over all pages.
    async fn total_count(&self) -> Result<i64, ApiError> {
        let count = self.ledger.count_lots(&self.organization_id, &self.filter).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// Lots, newest first, with `totalCount`.
pub type CreditLotConnection = Connection<String, CreditLot, LotTotals, EmptyFields>;

/// Queries about lots.
#[derive(Default)]
pub struct LotsQuery;

#[Object]
impl LotsQuery {
    /// The organization's credit lots, newest first (Relay connection).
    async fn credit_lots(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<CreditLotFilter>,
    ) -> Result<CreditLotConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let count = page_size("first", first)?;
        let after = after
            .map(|cursor| {
                decode_cursor("lot", &cursor)?
                    .parse::<i64>()
                    .map_err(|_| ApiError::BadUserInput(format!("invalid cursor {cursor:?}")))
            })
            .transpose()?;
        let filter = LotFilter::from(filter.unwrap_or_default());
        let ledger = ctx.data_unchecked::<Ledger>();
        ledger.balance(&organization_id).await?;
        let (lots, has_next) = ledger.lots(&organization_id, &filter, count, after).await?;
        let totals = LotTotals { ledger: ledger.clone(), organization_id, filter };
        let mut connection = Connection::with_additional_fields(after.is_some(), has_next, totals);
        connection
            .edges
            .extend(lots.into_iter().map(|lot| Edge::new(encode_cursor("lot", &lot.seq.to_string()), CreditLot(lot))));
        Ok(connection)
    }
}

/// Result of `voidCreditLot`.
#[derive(SimpleObject)]
pub struct VoidCreditLotPayload {
    /// The lot after.
    pub lot: CreditLot,
    /// The `VOID` transaction; null when nothing was left to void (or it was voided before).
    pub transaction: Option<CreditTransaction>,
    /// The balance now.
    pub balance: CreditBalance,
}

/// Mutations of lots and the overdraft.
#[derive(Default)]
pub struct LotsMutation;

#[Object]
impl LotsMutation {
    /// Removes a lot's unheld remainder as a `VOID` transaction (a mistaken grant); the
    /// lot is never drawn again. Voiding a voided lot changes nothing. Admin only.
    async fn void_credit_lot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        description: String,
    ) -> Result<VoidCreditLotPayload, ApiError> {
        caller(ctx).require_admin()?;
        let (lot, transaction, balance) = audited(ctx).void_lot(id.as_str(), &description).await?;
        Ok(VoidCreditLotPayload {
            lot: CreditLot(lot),
            transaction: transaction.map(CreditTransaction),
            balance: CreditBalance(balance),
        })
    }

    /// Lets the organization's balance go down to `−limit`. A limit below the current
    /// debt is refused (`BAD_USER_INPUT` with `debt`). Admin only.
    async fn set_overdraft_limit(
        &self,
        ctx: &Context<'_>,
        organization_id: ID,
        limit: Credits,
    ) -> Result<CreditBalance, ApiError> {
        caller(ctx).require_admin()?;
        let balance = audited(ctx).set_overdraft_limit(organization_id.as_str(), limit.0).await?;
        Ok(CreditBalance(balance))
    }
}
