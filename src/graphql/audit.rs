//! The audit log over GraphQL: `auditEvents` (newest first) and `AuditEvent` nodes. The
//! admin reads any organization's or every one's; an API key its own organization's; a
//! client session none.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object};

use super::context::{Access, Caller, caller, scope};
use super::errors::ApiError;
use super::pagination::{decode_time_cursor, newest_first_page, page_size};
use super::scalars::DateTime;
use crate::ledger::{self, AuditFilter, Ledger};

/// One change of money or access made through the API.
pub struct AuditEvent(pub ledger::AuditEvent);

#[Object]
impl AuditEvent {
    /// `aud_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The organization it concerns (a new organization's own, for its creation).
    async fn organization_id(&self) -> Option<ID> {
        self.0.organization_id.clone().map(ID)
    }

    /// Who acted.
    async fn actor_type(&self) -> AuditActorType {
        self.0.actor_type.into()
    }

    /// The API key's or client session's id, when one acted.
    async fn actor_id(&self) -> Option<&str> {
        self.0.actor_id.as_deref()
    }

    /// What was done: `GRANT_CREDITS`, `CREATE_API_KEY`, …
    async fn action(&self) -> &str {
        &self.0.action
    }

    /// The id of what it was done to.
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }

    /// The input, without secrets, as JSON text.
    async fn details(&self) -> &str {
        &self.0.details
    }

    /// Where the request came from.
    async fn client_address(&self) -> Option<&str> {
        self.0.client_address.as_deref()
    }

    /// The request's `x-request-id`.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// When it was committed.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// Who acted.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "ledger::AuditActorType")]
pub enum AuditActorType {
    /// The admin token (or an operator's command line).
    Admin,
    /// An organization's API key.
    ApiKey,
    /// A client session.
    ClientSession,
    /// Stripe, through its webhook.
    Stripe,
    /// The server itself.
    System,
}

/// Which audit rows to list.
#[derive(InputObject, Default)]
pub struct AuditEventFilter {
    /// Any of these actions.
    pub actions: Option<Vec<String>>,
    /// Any of these kinds of actor.
    pub actor_types: Option<Vec<AuditActorType>>,
    /// Created strictly after.
    pub created_after: Option<DateTime>,
    /// Created strictly before.
    pub created_before: Option<DateTime>,
}

/// A page of audit rows.
pub type AuditEventConnection = Connection<String, AuditEvent, EmptyFields, EmptyFields>;

/// The audit log's query.
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Audit rows, newest first: an organization's, or with the admin token and no
    /// `organizationId`, every one (organizations' creations included).
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AuditEventFilter>,
    ) -> Result<AuditEventConnection, ApiError> {
        let organization_id = match (caller(ctx), organization_id.as_ref()) {
            (Caller::Admin, None) => None,
            (Caller::Session { .. }, _) => {
                return Err(ApiError::Forbidden("a client session may not read the audit log"));
            }
            _ => Some(scope(ctx, organization_id.as_ref(), Access::Manage)?),
        };
        let filter = filter.unwrap_or_default();
        let filter = AuditFilter {
            actions: filter.actions.unwrap_or_default(),
            actor_types: filter.actor_types.unwrap_or_default().into_iter().map(Into::into).collect(),
            created_after: filter.created_after.map(|at| at.0),
            created_before: filter.created_before.map(|at| at.0),
        };
        let size = page_size("first", first)?;
        let cursor = decode_time_cursor(after)?;
        let rows = ctx
            .data_unchecked::<Ledger>()
            .audit_events(organization_id.as_deref(), &filter, cursor.as_ref(), size + 1)
            .await?;
        Ok(newest_first_page(rows, size, cursor.is_some(), |row| (row.created_at, row.id.clone()), AuditEvent))
    }
}
