//! Credit purchases as recorded locally (their Stripe side arrives with Checkout).

use chrono::{DateTime, Utc};
use entity::credit_purchase::{Column, Entity, Model};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::ledger::LedgerError;

/// One purchase of a credit package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditPurchase {
    /// `pur_…`
    pub id: String,
    /// The buyer.
    pub organization_id: String,
    /// The package bought.
    pub package_id: String,
    /// `PENDING`, `PAID`, `FAILED`, `EXPIRED`, `REFUNDED` or `PARTIALLY_REFUNDED`.
    pub status: String,
    /// Credits the purchase adds.
    pub credits: i64,
    /// Price in the currency's smallest unit.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// Stripe Checkout Session id.
    pub checkout_session_id: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Latest status change.
    pub updated_at: DateTime<Utc>,
}

impl From<Model> for CreditPurchase {
    fn from(row: Model) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            package_id: row.package_id,
            status: row.status,
            credits: row.credits,
            amount: row.amount,
            currency: row.currency,
            checkout_session_id: row.checkout_session_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Reads purchases.
#[derive(Clone, Debug)]
pub struct Purchases {
    db: DatabaseConnection,
}

impl Purchases {
    /// Purchases stored in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Up to `count` purchases of the organization older than `after` (an id), newest
    /// first, and whether more follow. Ids are time-ordered, so they order the list.
    pub async fn list(
        &self,
        organization_id: &str,
        count: u64,
        after: Option<&str>,
    ) -> Result<(Vec<CreditPurchase>, bool), LedgerError> {
        let mut query = Entity::find().filter(Column::OrganizationId.eq(organization_id));
        if let Some(after) = after {
            query = query.filter(Column::Id.lt(after));
        }
        let mut rows = query.order_by_desc(Column::Id).limit(count + 1).all(&self.db).await?;
        let more = rows.len() as u64 > count;
        rows.truncate(count as usize);
        Ok((rows.into_iter().map(CreditPurchase::from).collect(), more))
    }

    /// How many purchases the organization has.
    pub async fn count(&self, organization_id: &str) -> Result<u64, LedgerError> {
        use sea_orm::PaginatorTrait;
        Ok(Entity::find().filter(Column::OrganizationId.eq(organization_id)).count(&self.db).await?)
    }

    /// A purchase by id.
    pub async fn get(&self, id: &str) -> Result<Option<CreditPurchase>, LedgerError> {
        Ok(Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(CreditPurchase::from))
    }
}
