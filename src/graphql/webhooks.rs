//! Outgoing webhooks in GraphQL: endpoints (create, update, rotate, delete), events and
//! deliveries (lists newest first, `node`), and resending. The admin token manages any
//! organization's endpoints and endpoints of every organization (`organizationId`
//! null); an API key its own organization's; a client session none (`FORBIDDEN`).
//! Secrets appear only in the answers of create and rotate.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::context::{Access, Caller, audited, caller, scope};
use super::errors::ApiError;
use super::pagination::{decode_time_cursor, newest_first_page, page_size};
use super::scalars::DateTime;
use crate::config::WebhookConfig;
use crate::ledger::webhooks::{self, DeliveryStatus, EndpointChange, NewEndpoint};
use crate::ledger::{EventType, Ledger};
use crate::webhooks::address;

/// Where events are sent.
pub struct WebhookEndpoint(pub webhooks::WebhookEndpoint);

#[Object]
impl WebhookEndpoint {
    /// `whe_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Whose events; null for every organization's.
    async fn organization_id(&self) -> Option<ID> {
        self.0.organization_id.clone().map(ID)
    }

    /// Where events are POSTed.
    async fn url(&self) -> &str {
        &self.0.url
    }

    /// The event types it receives; empty for every type.
    async fn event_types(&self) -> Vec<&'static str> {
        self.0.event_types.iter().map(|kind| kind.as_str()).collect()
    }

    /// The owner's note.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// Whether deliveries are attempted.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// Why the server disabled it (a 410, five days of failures).
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Latest change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
}

/// Something that happened to an organization's credits, as sent to endpoints.
pub struct WebhookEvent(pub webhooks::WebhookEvent);

#[Object]
impl WebhookEvent {
    /// `evt_…`: the `webhook-id` of every delivery.
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// `credits.balance.low`, `credits.granted`, …
    #[graphql(name = "type")]
    async fn event_type(&self) -> &'static str {
        self.0.event_type.as_str()
    }

    /// Whom it is about.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// The body sent, as JSON text.
    async fn payload(&self) -> &str {
        &self.0.payload
    }

    /// Commit time of its change.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// Where a delivery stands.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "webhooks::DeliveryStatus")]
pub enum WebhookDeliveryStatus {
    /// Attempts remain.
    Pending,
    /// A 2xx answered.
    Succeeded,
    /// Given up.
    Failed,
}

/// One event's delivery to one endpoint.
pub struct WebhookDelivery(pub webhooks::WebhookDelivery);

#[Object]
impl WebhookDelivery {
    /// `whd_…`
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// To which endpoint.
    async fn endpoint_id(&self) -> ID {
        ID(self.0.endpoint_id.clone())
    }

    /// Which event.
    async fn event_id(&self) -> ID {
        ID(self.0.event_id.clone())
    }

    /// Where it stands.
    async fn status(&self) -> WebhookDeliveryStatus {
        self.0.status.into()
    }

    /// Attempts made.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    /// The last attempt's HTTP status, when it got one.
    async fn last_status_code(&self) -> Option<i32> {
        self.0.last_status_code
    }

    /// What went wrong last.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    /// When the next attempt is due.
    async fn next_attempt_at(&self) -> Option<DateTime> {
        self.0.next_attempt_at.map(DateTime)
    }

    /// When a 2xx answered.
    async fn delivered_at(&self) -> Option<DateTime> {
        self.0.delivered_at.map(DateTime)
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// Input of `createWebhookEndpoint`.
#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// Whose events; the admin token may leave it null for every organization's.
    pub organization_id: Option<ID>,
    /// An `https` URL whose host is a public address.
    pub url: String,
    /// The types to receive; null or empty for every type.
    pub event_types: Option<Vec<String>>,
    /// A note.
    pub description: Option<String>,
}

/// Input of `updateWebhookEndpoint`; absent fields stay.
#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    /// `whe_…`
    pub id: ID,
    /// A new URL.
    pub url: Option<String>,
    /// New types (empty: every type).
    pub event_types: Option<Vec<String>>,
    /// A new note.
    pub description: Option<String>,
    /// On or off (on clears `disabledReason`).
    pub enabled: Option<bool>,
}

/// An endpoint and its signing secret (shown only here).
#[derive(SimpleObject)]
pub struct CreateWebhookEndpointPayload {
    /// The endpoint.
    endpoint: WebhookEndpoint,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it.
    secret: String,
}

/// Which events to list.
#[derive(InputObject, Default)]
pub struct WebhookEventFilter {
    /// Any of these types.
    pub types: Option<Vec<String>>,
    /// Created strictly after.
    pub created_after: Option<DateTime>,
    /// Created strictly before.
    pub created_before: Option<DateTime>,
}

/// Which deliveries to list.
#[derive(InputObject, Default)]
pub struct WebhookDeliveryFilter {
    /// Any of these statuses.
    pub statuses: Option<Vec<WebhookDeliveryStatus>>,
}

/// Endpoints, newest first.
pub type WebhookEndpointConnection = Connection<String, WebhookEndpoint, EmptyFields, EmptyFields>;
/// Events, newest first.
pub type WebhookEventConnection = Connection<String, WebhookEvent, EmptyFields, EmptyFields>;
/// Deliveries, newest first.
pub type WebhookDeliveryConnection = Connection<String, WebhookDelivery, EmptyFields, EmptyFields>;

fn event_types(names: Option<Vec<String>>) -> Result<Vec<EventType>, ApiError> {
    names
        .unwrap_or_default()
        .iter()
        .map(|name| {
            EventType::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                ApiError::BadUserInput(format!("unknown event type {name:?}; known: {}", known.join(", ")))
            })
        })
        .collect()
}

async fn checked_url(ctx: &Context<'_>, url: &str) -> Result<String, ApiError> {
    let config = ctx.data_unchecked::<WebhookConfig>();
    address::check(url, config).await.map(|_| url.to_owned()).map_err(ApiError::BadUserInput)
}

/// An endpoint the caller manages, or `NOT_FOUND` (an endpoint of another organization
/// is not revealed); a client session is `FORBIDDEN`.
async fn managed_endpoint(ctx: &Context<'_>, id: &str) -> Result<webhooks::WebhookEndpoint, ApiError> {
    let caller = caller(ctx);
    if let Caller::Session { .. } = caller {
        return Err(ApiError::Forbidden("a client session may not manage webhooks"));
    }
    caller.require_any()?;
    let endpoint =
        ctx.data_unchecked::<Ledger>().webhook_endpoint(id).await?.ok_or(ApiError::NotFound("webhook endpoint"))?;
    let allowed = match (caller, &endpoint.organization_id) {
        (Caller::Admin, _) => true,
        (_, Some(organization_id)) => caller.manages(organization_id),
        (_, None) => false,
    };
    if allowed { Ok(endpoint) } else { Err(ApiError::NotFound("webhook endpoint")) }
}

/// The organization the caller may manage webhooks of, `None` for every organization
/// (the admin without `organizationId`).
fn webhook_scope(ctx: &Context<'_>, organization_id: Option<&ID>) -> Result<Option<String>, ApiError> {
    match (caller(ctx), organization_id) {
        (Caller::Admin, None) => Ok(None),
        (Caller::Session { .. }, _) => Err(ApiError::Forbidden("a client session may not manage webhooks")),
        _ => scope(ctx, organization_id, Access::Manage).map(Some),
    }
}

/// Queries of webhook endpoints, events and deliveries.
#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// Endpoints, newest first: an organization's, or with the admin token and no
    /// `organizationId`, every endpoint.
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WebhookEndpointConnection, ApiError> {
        let organization_id = webhook_scope(ctx, organization_id.as_ref())?;
        let size = page_size("first", first)?;
        let cursor = decode_time_cursor(after)?;
        let rows = ctx
            .data_unchecked::<Ledger>()
            .webhook_endpoints(organization_id.as_deref(), cursor.as_ref(), size + 1)
            .await?;
        Ok(newest_first_page(rows, size, cursor.is_some(), |row| (row.created_at, row.id.clone()), WebhookEndpoint))
    }

    /// The organization's events, newest first.
    async fn webhook_events(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<WebhookEventFilter>,
    ) -> Result<WebhookEventConnection, ApiError> {
        if let Caller::Session { .. } = caller(ctx) {
            return Err(ApiError::Forbidden("a client session may not read webhooks"));
        }
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Manage)?;
        let filter = filter.unwrap_or_default();
        let types = event_types(filter.types)?;
        let size = page_size("first", first)?;
        let cursor = decode_time_cursor(after)?;
        let range = (filter.created_after.map(|at| at.0), filter.created_before.map(|at| at.0));
        let rows = ctx
            .data_unchecked::<Ledger>()
            .webhook_events(&organization_id, &types, range, cursor.as_ref(), size + 1)
            .await?;
        Ok(newest_first_page(rows, size, cursor.is_some(), |row| (row.created_at, row.id.clone()), WebhookEvent))
    }

    /// An endpoint's deliveries, newest first.
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<WebhookDeliveryFilter>,
    ) -> Result<WebhookDeliveryConnection, ApiError> {
        let endpoint = managed_endpoint(ctx, &endpoint_id).await?;
        let statuses: Vec<DeliveryStatus> =
            filter.unwrap_or_default().statuses.unwrap_or_default().into_iter().map(Into::into).collect();
        let size = page_size("first", first)?;
        let cursor = decode_time_cursor(after)?;
        let rows = ctx
            .data_unchecked::<Ledger>()
            .webhook_deliveries(&endpoint.id, &statuses, cursor.as_ref(), size + 1)
            .await?;
        Ok(newest_first_page(rows, size, cursor.is_some(), |row| (row.created_at, row.id.clone()), WebhookDelivery))
    }
}

/// Mutations of webhook endpoints.
#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Registers an endpoint; its secret is in this answer only.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> Result<CreateWebhookEndpointPayload, ApiError> {
        let organization_id = webhook_scope(ctx, input.organization_id.as_ref())?;
        let event_types = event_types(input.event_types)?;
        let url = checked_url(ctx, &input.url).await?;
        let new = NewEndpoint { organization_id, url, event_types, description: input.description };
        let (endpoint, secret) = audited(ctx).create_webhook_endpoint(new).await?;
        Ok(CreateWebhookEndpointPayload { endpoint: WebhookEndpoint(endpoint), secret })
    }

    /// Changes an endpoint.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: UpdateWebhookEndpointInput,
    ) -> Result<WebhookEndpoint, ApiError> {
        let endpoint = managed_endpoint(ctx, &input.id).await?;
        let url = match input.url {
            Some(url) => Some(checked_url(ctx, &url).await?),
            None => None,
        };
        let event_types = input.event_types.map(|names| event_types(Some(names))).transpose()?;
        let change = EndpointChange { url, event_types, description: input.description, enabled: input.enabled };
        Ok(WebhookEndpoint(audited(ctx).update_webhook_endpoint(&endpoint.id, change).await?))
    }

    /// A new secret; the old one still signs deliveries beside it for 24 hours.
    async fn rotate_webhook_endpoint_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<CreateWebhookEndpointPayload, ApiError> {
        let endpoint = managed_endpoint(ctx, &id).await?;
        let (endpoint, secret) = audited(ctx).rotate_webhook_secret(&endpoint.id).await?;
        Ok(CreateWebhookEndpointPayload { endpoint: WebhookEndpoint(endpoint), secret })
    }

    /// Deletes an endpoint; its pending deliveries fail.
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<WebhookEndpoint, ApiError> {
        let endpoint = managed_endpoint(ctx, &id).await?;
        Ok(WebhookEndpoint(audited(ctx).delete_webhook_endpoint(&endpoint.id).await?))
    }

    /// Delivers an event again to an endpoint that receives it (same `webhook-id`).
    async fn resend_webhook_event(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        event_id: ID,
    ) -> Result<WebhookDelivery, ApiError> {
        let endpoint = managed_endpoint(ctx, &endpoint_id).await?;
        Ok(WebhookDelivery(ctx.data_unchecked::<Ledger>().resend_webhook_event(&endpoint.id, &event_id).await?))
    }
}
