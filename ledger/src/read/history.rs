//! Reading an organization's transaction history: filters and cursor pages, newest first.

use chrono::{DateTime, Utc};
use entity::credit_transaction::{Column, Entity};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select};

use crate::{CreditTransaction, Ledger, LedgerError, TransactionKind};

/// Which transactions to list. Every present condition must hold.
#[derive(Clone, Debug, Default)]
pub struct TransactionFilter {
    /// Any of these kinds (all kinds when `None`).
    pub kinds: Option<Vec<TransactionKind>>,
    /// Exactly this reference type.
    pub reference_type: Option<String>,
    /// Exactly this reference id.
    pub reference_id: Option<String>,
    /// Created strictly after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Created strictly before this time.
    pub created_before: Option<DateTime<Utc>>,
}

/// A window of the newest-first history, in Relay terms. Cursors are sequence numbers.
#[derive(Clone, Copy, Debug)]
pub enum PageRequest {
    /// The `count` transactions that follow (are older than) `after`, or the newest.
    Forward {
        /// How many.
        count: u64,
        /// Exclusive cursor.
        after: Option<i64>,
    },
    /// The `count` transactions that precede (are newer than) `before`, or the oldest.
    Backward {
        /// How many.
        count: u64,
        /// Exclusive cursor.
        before: Option<i64>,
    },
}

/// One page of history, newest first.
#[derive(Clone, Debug)]
pub struct Page {
    /// The transactions, newest first.
    pub items: Vec<CreditTransaction>,
    /// Whether newer transactions exist before this page.
    pub has_previous: bool,
    /// Whether older transactions exist after this page.
    pub has_next: bool,
}

/// A transaction as exported: every column but its allocations, read without decoding
/// them (an export of millions of rows reads only what it writes).
#[derive(Clone, Debug, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct ExportedTransaction {
    /// `ctx_…`
    pub id: String,
    /// Whose.
    pub organization_id: String,
    /// Commit time (for an expiry, the lot's expiry).
    pub created_at: DateTime<Utc>,
    /// `PURCHASE`, `CONSUMPTION`, …
    pub kind: String,
    /// Signed change.
    pub amount: i64,
    /// Balance right after.
    pub balance_after: i64,
    /// Reason given.
    pub description: Option<String>,
    /// Reference type given.
    pub reference_type: Option<String>,
    /// Reference id given.
    pub reference_id: Option<String>,
    /// Idempotency key given.
    pub idempotency_key: Option<String>,
    /// The hold a capture ended.
    pub hold_id: Option<String>,
    /// The API key that made it.
    pub api_key_id: Option<String>,
    /// The client session that made it.
    pub client_session_id: Option<String>,
}

impl Ledger {
    /// A page of the organization's transactions matching `filter`, newest first.
    pub async fn transactions(
        &self,
        organization_id: &str,
        filter: &TransactionFilter,
        page: PageRequest,
    ) -> Result<Page, LedgerError> {
        let query = filtered(organization_id, filter);
        let (rows, count, has_previous, has_next) = match page {
            PageRequest::Forward { count, after } => {
                let query = match after {
                    Some(cursor) => query.filter(Column::Seq.lt(cursor)),
                    None => query,
                };
                let rows = query.order_by_desc(Column::Seq).limit(count + 1).all(&self.db).await?;
                let more = rows.len() as u64 > count;
                (rows, count, after.is_some(), more)
            }
            PageRequest::Backward { count, before } => {
                let query = match before {
                    Some(cursor) => query.filter(Column::Seq.gt(cursor)),
                    None => query,
                };
                let mut rows = query.order_by_asc(Column::Seq).limit(count + 1).all(&self.db).await?;
                let more = rows.len() as u64 > count;
                rows.truncate(count as usize);
                rows.reverse();
                (rows, count, more, before.is_some())
            }
        };
        let items =
            rows.into_iter().take(count as usize).map(CreditTransaction::try_from).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, has_previous, has_next })
    }

    /// How many of the organization's transactions match `filter`.
    pub async fn count_transactions(
        &self,
        organization_id: &str,
        filter: &TransactionFilter,
    ) -> Result<u64, LedgerError> {
        Ok(filtered(organization_id, filter).count(&self.db).await?)
    }

    /// Up to `limit` of the organization's transactions after sequence number `seq`,
    /// oldest first (how live followers catch up).
    pub async fn transactions_since(
        &self,
        organization_id: &str,
        seq: i64,
        limit: u64,
    ) -> Result<Vec<CreditTransaction>, LedgerError> {
        Entity::find()
            .filter(Column::OrganizationId.eq(organization_id))
            .filter(Column::Seq.gt(seq))
            .order_by_asc(Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(CreditTransaction::try_from)
            .collect()
    }

    /// Up to `limit` of the organization's transactions created in `[from, to)` (either
    /// end open when absent) of `kinds` (all when absent), in order of creation (then
    /// id), after `after` (the creation time and id of the last one already read): how
    /// an export pages through a history of any length.
    pub async fn transactions_in_order(
        &self,
        organization_id: &str,
        (from, to): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        kinds: Option<&[TransactionKind]>,
        after: Option<(DateTime<Utc>, &str)>,
        limit: u64,
    ) -> Result<Vec<ExportedTransaction>, LedgerError> {
        let filter = TransactionFilter { kinds: kinds.map(<[_]>::to_vec), created_before: to, ..Default::default() };
        let mut query = filtered(organization_id, &filter);
        if let Some(from) = from {
            query = query.filter(Column::CreatedAt.gte(from));
        }
        if let Some((created_at, id)) = after {
            // A row value, so that both engines read on along the index.
            let position = Expr::tuple([Expr::col(Column::CreatedAt), Expr::col(Column::Id)]);
            query = query.filter(sea_orm::sea_query::ExprTrait::gt(
                position,
                Expr::tuple([Expr::value(created_at), Expr::value(id)]),
            ));
        }
        query
            .select_only()
            .columns([
                Column::Id,
                Column::OrganizationId,
                Column::CreatedAt,
                Column::Kind,
                Column::Amount,
                Column::BalanceAfter,
                Column::Description,
                Column::ReferenceType,
                Column::ReferenceId,
                Column::IdempotencyKey,
                Column::HoldId,
                Column::ApiKeyId,
                Column::ClientSessionId,
            ])
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(limit)
            .into_model::<ExportedTransaction>()
            .all(&self.db)
            .await
            .map_err(Into::into)
    }

    /// A transaction by id, if it exists.
    pub async fn transaction(&self, id: &str) -> Result<Option<CreditTransaction>, LedgerError> {
        Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(CreditTransaction::try_from).transpose()
    }

    /// Transactions by id; unknown ids are absent.
    pub async fn transactions_by_id(&self, ids: &[String]) -> Result<Vec<CreditTransaction>, LedgerError> {
        Entity::find()
            .filter(Column::Id.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(CreditTransaction::try_from)
            .collect()
    }
}

fn filtered(organization_id: &str, filter: &TransactionFilter) -> Select<Entity> {
    let mut query = Entity::find().filter(Column::OrganizationId.eq(organization_id));
    if let Some(kinds) = &filter.kinds {
        query = query.filter(Column::Kind.is_in(kinds.iter().map(|kind| kind.as_str())));
    }
    if let Some(reference_type) = &filter.reference_type {
        query = query.filter(Column::ReferenceType.eq(reference_type));
    }
    if let Some(reference_id) = &filter.reference_id {
        query = query.filter(Column::ReferenceId.eq(reference_id));
    }
    if let Some(after) = filter.created_after {
        query = query.filter(Column::CreatedAt.gt(after));
    }
    if let Some(before) = filter.created_before {
        query = query.filter(Column::CreatedAt.lt(before));
    }
    query
}
