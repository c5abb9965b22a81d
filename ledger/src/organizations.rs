//! Organizations and their settings. Creating one also opens its balance at zero.

use entity::{credit_balance, organization};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::outbox::Outbox;
use super::{AuditAction, Balance, Ledger, LedgerError, MAX_CREDITS, Organization, check_label, new_id};

impl Ledger {
    /// Creates an organization with a zero balance.
    #[tracing::instrument(skip(self))]
    pub async fn create_organization(
        &self,
        name: &str,
        low_balance_threshold: Option<i64>,
    ) -> Result<Organization, LedgerError> {
        check_label("name", name)?;
        check_threshold(low_balance_threshold)?;
        let at = self.now();
        let organization =
            Organization { id: new_id("org"), name: name.trim().to_owned(), low_balance_threshold, created_at: at };
        let txn = self.begin_write().await?;
        organization::ActiveModel {
            id: Set(organization.id.clone()),
            name: Set(organization.name.clone()),
            low_balance_threshold: Set(low_balance_threshold),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        credit_balance::ActiveModel {
            id: Set(new_id("bal")),
            organization_id: Set(organization.id.clone()),
            balance: Set(0),
            held: Set(0),
            overdraft_limit: Set(0),
            next_event_at: Set(None),
            version: Set(0),
            generation: Set(0),
            open_lots_from: Set(1),
            low_balance_threshold: Set(low_balance_threshold),
            auto_top_up_below: Set(None),
            updated_at: Set(at),
        }
        .insert(&txn)
        .await?;
        // The audit row of a creation belongs to the new organization.
        let mut outbox = Outbox::default();
        let details = serde_json::json!({ "name": organization.name, "lowBalanceThreshold": low_balance_threshold });
        let id = Some(organization.id.as_str());
        self.audit_into(&mut outbox, id, AuditAction::CreateOrganization, id, details);
        outbox.commit(txn, &self.events).await?;
        Ok(organization)
    }

    /// An organization by id, if it exists.
    pub async fn organization(&self, id: &str) -> Result<Option<Organization>, LedgerError> {
        Ok(organization::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(Organization::from))
    }

    /// An organization by id, read on `conn` (e.g. inside a transaction).
    pub async fn organization_in<C: sea_orm::ConnectionTrait>(
        conn: &C,
        id: &str,
    ) -> Result<Option<Organization>, LedgerError> {
        Ok(organization::Entity::find_by_id(id.to_owned()).one(conn).await?.map(Organization::from))
    }

    /// Many organizations at once (for batching loaders); unknown ids are absent.
    pub async fn organizations(&self, ids: &[String]) -> Result<Vec<Organization>, LedgerError> {
        Ok(organization::Entity::find()
            .filter(organization::Column::Id.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(Organization::from)
            .collect())
    }

    /// Sets (or, with `None`, clears) the organization's low-balance threshold and
    /// returns the organization and its balance.
    #[tracing::instrument(skip(self))]
    pub async fn set_low_balance_threshold(
        &self,
        organization_id: &str,
        threshold: Option<i64>,
    ) -> Result<(Organization, Balance), LedgerError> {
        check_threshold(threshold)?;
        crate::retrying(|| async {
            let mut tx = self.begin().await?;
            let set = tx.set_low_balance_threshold(organization_id, threshold).await;
            tx.finish(set).await
        })
        .await
    }
}

fn check_threshold(threshold: Option<i64>) -> Result<(), LedgerError> {
    match threshold {
        Some(value) if !(0..=MAX_CREDITS).contains(&value) => Err(LedgerError::InvalidInput(format!(
            "lowBalanceThreshold must be between 0 and {MAX_CREDITS}, got {value}"
        ))),
        _ => Ok(()),
    }
}
