//! Credit purchases as recorded locally (their Stripe side arrives with Checkout).

use chrono::{DateTime, Utc};
use entity::credit_purchase::{Column, Entity, Model};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::ledger::LedgerError;

/// Where a purchase stands. Stored by [`PurchaseStatus::as_str`] in `credit_purchases.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    /// Checkout started, not paid yet.
    Pending,
    /// Paid; credits added.
    Paid,
    /// Payment failed, or the paid session did not match its package.
    Failed,
    /// Checkout expired unpaid.
    Expired,
    /// Refunded in full.
    Refunded,
    /// Refunded in part.
    PartiallyRefunded,
    /// The buyer disputed the payment and Stripe withdrew the funds.
    Disputed,
}

impl PurchaseStatus {
    /// Every status, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Paid,
        Self::Failed,
        Self::Expired,
        Self::Refunded,
        Self::PartiallyRefunded,
        Self::Disputed,
    ];

    /// The name stored in the database and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Paid => "PAID",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
            Self::Refunded => "REFUNDED",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Self::Disputed => "DISPUTED",
        }
    }

    /// Reads a stored status; anything else means the table was written by something
    /// that is not this code, an internal error.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| LedgerError::internal(format!("unknown purchase status {value}")))
    }

    /// Whether the purchase was paid and credited (whatever happened after).
    pub fn was_paid(self) -> bool {
        matches!(self, Self::Paid | Self::Refunded | Self::PartiallyRefunded | Self::Disputed)
    }
}

/// One purchase of a credit package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditPurchase {
    /// `pur_…`
    pub id: String,
    /// The buyer.
    pub organization_id: String,
    /// The package bought.
    pub package_id: String,
    /// Where the purchase stands.
    pub status: PurchaseStatus,
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

impl TryFrom<Model> for CreditPurchase {
    type Error = LedgerError;

    fn try_from(row: Model) -> Result<Self, LedgerError> {
        Ok(Self {
            status: PurchaseStatus::parse(&row.status)?,
            id: row.id,
            organization_id: row.organization_id,
            package_id: row.package_id,
            credits: row.credits,
            amount: row.amount,
            currency: row.currency,
            checkout_session_id: row.checkout_session_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
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
        let purchases = rows.into_iter().map(CreditPurchase::try_from).collect::<Result<_, _>>()?;
        Ok((purchases, more))
    }

    /// How many purchases the organization has.
    pub async fn count(&self, organization_id: &str) -> Result<u64, LedgerError> {
        use sea_orm::PaginatorTrait;
        Ok(Entity::find().filter(Column::OrganizationId.eq(organization_id)).count(&self.db).await?)
    }

    /// A purchase by id.
    pub async fn get(&self, id: &str) -> Result<Option<CreditPurchase>, LedgerError> {
        Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(CreditPurchase::try_from).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_name() {
        for status in PurchaseStatus::ALL {
            assert_eq!(PurchaseStatus::parse(status.as_str()).ok(), Some(status));
        }
        assert!(PurchaseStatus::parse("paid").is_err());
    }
}
