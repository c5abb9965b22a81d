//! Reading the audit log: newest first, for one organization or all, filtered.

use entity::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::webhooks::{ListCursor, older};
use crate::{AuditEvent, AuditFilter, Ledger, LedgerError};

impl Ledger {
    /// Audit rows, newest first: the organization's, or (`None`) every one; after the
    /// position `after`, at most `limit`, as `filter` says.
    pub async fn audit_events(
        &self,
        organization_id: Option<&str>,
        filter: &AuditFilter,
        after: Option<&ListCursor>,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, LedgerError> {
        use audit_event::Column;
        let mut query = audit_event::Entity::find();
        if let Some(organization_id) = organization_id {
            query = query.filter(Column::OrganizationId.eq(organization_id));
        }
        if !filter.actions.is_empty() {
            query = query.filter(Column::Action.is_in(filter.actions.iter().cloned()));
        }
        if !filter.actor_types.is_empty() {
            query = query.filter(Column::ActorType.is_in(filter.actor_types.iter().map(|kind| kind.as_str())));
        }
        if let Some(at) = filter.created_after {
            query = query.filter(Column::CreatedAt.gt(at));
        }
        if let Some(at) = filter.created_before {
            query = query.filter(Column::CreatedAt.lt(at));
        }
        if let Some((created_at, id)) = after {
            query = query.filter(older(Column::CreatedAt, Column::Id, *created_at, id));
        }
        let rows = query.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(AuditEvent::try_from).collect()
    }

    /// One audit row by id.
    pub async fn audit_event(&self, id: &str) -> Result<Option<AuditEvent>, LedgerError> {
        audit_event::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(AuditEvent::try_from).transpose()
    }
}
