//! Outgoing webhooks as stored: endpoints (with their signing secrets), the events the
//! outbox writes with each change, and their deliveries, claimed by dispatchers under a
//! lease and settled attempt by attempt. Sending them over HTTP is the server's part;
//! this module decides nothing about the network.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use entity::{webhook_delivery, webhook_endpoint, webhook_event};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::db::{one_of, sql_time, unindexed_eq};
use crate::{AuditAction, EventType, Ledger, LedgerError, new_id};

/// How long a rotated-out secret still signs deliveries, beside the new one.
pub const SECRET_OVERLAP_HOURS: i64 = 24;

/// An endpoint an application registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `whe_…`
    pub id: String,
    /// Whose events; none for every organization's.
    pub organization_id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// The types it receives; empty for every type.
    pub event_types: Vec<EventType>,
    /// The owner's note.
    pub description: Option<String>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why the server disabled it, if it did.
    pub disabled_reason: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Latest change.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<webhook_endpoint::Model> for WebhookEndpoint {
    type Error = LedgerError;

    fn try_from(row: webhook_endpoint::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            event_types: parse_types(&row.event_types)?,
            id: row.id,
            organization_id: row.organization_id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn parse_types(stored: &str) -> Result<Vec<EventType>, LedgerError> {
    stored
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            EventType::from_name(name).ok_or_else(|| LedgerError::internal(format!("stored event type {name}")))
        })
        .collect()
}

fn stored_types(types: &[EventType]) -> String {
    let mut names: Vec<&str> = types.iter().map(|kind| kind.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// An event as written with its change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_…`: every delivery's `webhook-id`.
    pub id: String,
    /// What happened.
    pub event_type: EventType,
    /// Whom it is about.
    pub organization_id: String,
    /// The body, as JSON text.
    pub payload: String,
    /// Commit time of its change.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<webhook_event::Model> for WebhookEvent {
    type Error = LedgerError;

    fn try_from(row: webhook_event::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            event_type: EventType::from_name(&row.event_type)
                .ok_or_else(|| LedgerError::internal(format!("stored event type {}", row.event_type)))?,
            id: row.id,
            organization_id: row.organization_id,
            payload: row.payload,
            created_at: row.created_at,
        })
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Attempts remain.
    Pending,
    /// A 2xx answered.
    Succeeded,
    /// Given up.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(stored: &str) -> Result<Self, LedgerError> {
        match stored {
            "PENDING" => Ok(Self::Pending),
            "SUCCEEDED" => Ok(Self::Succeeded),
            "FAILED" => Ok(Self::Failed),
            other => Err(LedgerError::internal(format!("stored delivery status {other}"))),
        }
    }
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// `whd_…`
    pub id: String,
    /// To which endpoint.
    pub endpoint_id: String,
    /// Which event.
    pub event_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// The last attempt's HTTP status, when it got one.
    pub last_status_code: Option<i32>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a 2xx answered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<webhook_delivery::Model> for WebhookDelivery {
    type Error = LedgerError;

    fn try_from(row: webhook_delivery::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            status: DeliveryStatus::parse(&row.status)?,
            id: row.id,
            endpoint_id: row.endpoint_id,
            event_id: row.event_id,
            attempts: row.attempts,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
            created_at: row.created_at,
        })
    }
}

/// A new endpoint, validated by the caller (its URL, against request forgery).
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    /// Whose events; none for every organization's.
    pub organization_id: Option<String>,
    /// Where events go.
    pub url: String,
    /// The types it takes; empty for every type.
    pub event_types: Vec<EventType>,
    /// The owner's note.
    pub description: Option<String>,
}

/// Changes to an endpoint; absent parts stay.
#[derive(Clone, Debug, Default)]
pub struct EndpointChange {
    /// A new URL (validated by the caller).
    pub url: Option<String>,
    /// New types (empty: every type).
    pub event_types: Option<Vec<EventType>>,
    /// A new note.
    pub description: Option<String>,
    /// On or off; turning it on clears why it was off.
    pub enabled: Option<bool>,
}

/// Which rows of a list come next: newest first, after this creation time and id.
pub type ListCursor = (DateTime<Utc>, String);

/// A delivery a dispatcher claimed: what to send, where, and how to sign it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    /// `whd_…`
    pub id: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The endpoint.
    pub endpoint_id: String,
    /// Its URL.
    pub url: String,
    /// Secrets to sign with: the current one, and the previous one during the overlap.
    pub secrets: Vec<String>,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// The body.
    pub payload: String,
    /// The lease this dispatcher holds on it, until this instant.
    pub leased_until: DateTime<Utc>,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx.
    Succeeded {
        /// The status.
        status_code: i32,
    },
    /// Not delivered; another attempt at `retry_at`, or none (the delivery fails).
    NotDelivered {
        /// The HTTP status, when one came back.
        status_code: Option<i32>,
        /// What went wrong.
        error: String,
        /// The next attempt, if any remain.
        retry_at: Option<DateTime<Utc>>,
        /// Disable the endpoint, for this reason (a 410, five days of failures).
        disable: Option<String>,
    },
}

/// Seals webhook signing secrets before they are stored (AES-256-GCM under the server's
/// `CREDITS_SECRETS_KEY`): the server must be able to sign with a secret, so it cannot
/// keep only a hash; sealed, a copy of the database alone signs nothing. A sealed
/// secret is stored as `sealed:v1:` and the base64 of its nonce and ciphertext.
#[derive(Clone)]
pub struct SecretSeal(std::sync::Arc<ring::aead::LessSafeKey>);

impl std::fmt::Debug for SecretSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSeal")
    }
}

const SEALED: &str = "sealed:v1:";

impl SecretSeal {
    /// A seal under `key`, which must be 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, LedgerError> {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .map_err(|_| LedgerError::InvalidInput("the secrets key must be 32 bytes".into()))?;
        Ok(Self(std::sync::Arc::new(ring::aead::LessSafeKey::new(key))))
    }

    fn seal(&self, secret: &str) -> Result<String, LedgerError> {
        use base64::Engine;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|error| LedgerError::internal(format!("no randomness: {error}")))?;
        let mut sealed = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| LedgerError::internal("sealing a secret failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok(format!("{SEALED}{}", base64::engine::general_purpose::STANDARD.encode(stored)))
    }

    fn open(&self, stored: &str) -> Result<String, LedgerError> {
        use base64::Engine;
        let unreadable = || LedgerError::internal("a webhook secret does not open under this server's secrets key");
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(&stored[SEALED.len()..]).map_err(|_| unreadable())?;
        if bytes.len() < 12 {
            return Err(unreadable());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut sealed = sealed.to_vec();
        let opened = self.0.open_in_place(nonce, ring::aead::Aad::empty(), &mut sealed).map_err(|_| unreadable())?;
        String::from_utf8(opened.to_vec()).map_err(|_| unreadable())
    }
}

impl Ledger {
    /// `secret` as it is stored: sealed when a key is configured.
    fn stored_secret(&self, secret: &str) -> Result<String, LedgerError> {
        match &self.seal {
            Some(seal) => seal.seal(secret),
            None => Ok(secret.to_owned()),
        }
    }

    /// A stored secret, readable.
    fn readable_secret(&self, stored: &str) -> Result<String, LedgerError> {
        match (stored.starts_with(SEALED), &self.seal) {
            (false, _) => Ok(stored.to_owned()),
            (true, Some(seal)) => seal.open(stored),
            (true, None) => {
                Err(LedgerError::internal("a webhook secret is sealed, and this server has no secrets key"))
            }
        }
    }
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
fn new_secret() -> Result<String, LedgerError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| LedgerError::internal(format!("no randomness: {error}")))?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

impl Ledger {
    /// Registers an endpoint; returns it and its secret (never shown again).
    pub async fn create_webhook_endpoint(&self, new: NewEndpoint) -> Result<(WebhookEndpoint, String), LedgerError> {
        crate::check_text("description", new.description.as_deref().unwrap_or_default(), crate::MAX_DESCRIPTION_LEN)?;
        if let Some(organization_id) = &new.organization_id {
            self.organization(organization_id).await?.ok_or(LedgerError::OrganizationNotFound)?;
        }
        let secret = new_secret()?;
        let at = self.now();
        let txn = crate::db::begin_write(&self.db).await?;
        let row = webhook_endpoint::ActiveModel {
            id: Set(new_id("whe")),
            organization_id: Set(new.organization_id),
            url: Set(new.url),
            event_types: Set(stored_types(&new.event_types)),
            description: Set(new.description),
            enabled: Set(true),
            disabled_reason: Set(None),
            secret: Set(self.stored_secret(&secret)?),
            previous_secret: Set(None),
            previous_secret_until: Set(None),
            failing_since: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&txn)
        .await?;
        self.commit_audited(txn, &row, AuditAction::CreateWebhookEndpoint).await?;
        Ok((WebhookEndpoint::try_from(row)?, secret))
    }

    /// An endpoint by id.
    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, LedgerError> {
        webhook_endpoint::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(WebhookEndpoint::try_from)
            .transpose()
    }

    /// Changes an endpoint.
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<WebhookEndpoint, LedgerError> {
        if let Some(description) = &change.description {
            crate::check_text("description", description, crate::MAX_DESCRIPTION_LEN)?;
        }
        let txn = crate::db::begin_write(&self.db).await?;
        let row = webhook_endpoint::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(LedgerError::NotFound("webhook endpoint"))?;
        let mut row: webhook_endpoint::ActiveModel = row.into();
        if let Some(url) = change.url {
            row.url = Set(url);
        }
        if let Some(types) = change.event_types {
            row.event_types = Set(stored_types(&types));
        }
        if let Some(description) = change.description {
            row.description = Set(Some(description));
        }
        if let Some(enabled) = change.enabled {
            row.enabled = Set(enabled);
            if enabled {
                row.disabled_reason = Set(None);
                row.failing_since = Set(None);
            }
        }
        row.updated_at = Set(self.now());
        let row = row.update(&txn).await?;
        self.commit_audited(txn, &row, AuditAction::UpdateWebhookEndpoint).await?;
        WebhookEndpoint::try_from(row)
    }

    /// A new secret for the endpoint; the old one still signs beside it for
    /// [`SECRET_OVERLAP_HOURS`]. Returns the endpoint and the new secret.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<(WebhookEndpoint, String), LedgerError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let row = webhook_endpoint::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(LedgerError::NotFound("webhook endpoint"))?;
        let secret = new_secret()?;
        let at = self.now();
        let previous = row.secret.clone();
        let mut row: webhook_endpoint::ActiveModel = row.into();
        row.previous_secret = Set(Some(previous));
        row.previous_secret_until = Set(Some(at + Duration::hours(SECRET_OVERLAP_HOURS)));
        row.secret = Set(self.stored_secret(&secret)?);
        row.updated_at = Set(at);
        let row = row.update(&txn).await?;
        self.commit_audited(txn, &row, AuditAction::RotateWebhookEndpointSecret).await?;
        Ok((WebhookEndpoint::try_from(row)?, secret))
    }

    /// Deletes an endpoint; its pending deliveries fail. Returns it as it was. It is
    /// turned off first ([`Ledger::turn_off`]), so that the deliveries of every batch that
    /// wrote to it are there to fail, and no batch writes another.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<WebhookEndpoint, LedgerError> {
        crate::commit::idempotency::retrying(|| self.delete_endpoint_once(id)).await
    }

    async fn delete_endpoint_once(&self, id: &str) -> Result<WebhookEndpoint, LedgerError> {
        let turned_off = self.turn_off(crate::db::begin_write(&self.db).await?, id, None).await?;
        let row = turned_off.ok_or(LedgerError::NotFound("webhook endpoint"))?;
        let txn = crate::db::begin_write(&self.db).await?;
        fail_pending(&txn, id, "the endpoint was deleted").await?;
        if webhook_endpoint::Entity::delete_by_id(id.to_owned()).exec(&txn).await?.rows_affected == 0 {
            txn.rollback().await?;
            return Err(LedgerError::NotFound("webhook endpoint"));
        }
        self.commit_audited(txn, &row, AuditAction::DeleteWebhookEndpoint).await?;
        WebhookEndpoint::try_from(row)
    }

    /// Turns endpoint `id` off in `txn` (with `reason` when the server does it) and
    /// commits; returns it as it was, or `None` when it is gone. It is locked first, which
    /// waits for the batches writing deliveries to it ([`crate::outbox::fan_out`]); once
    /// this commits, none writes another. The lock is held for this short transaction
    /// only: failing the endpoint's pending deliveries, however many, comes after it and
    /// holds up no batch.
    async fn turn_off(
        &self,
        txn: sea_orm::DatabaseTransaction,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Option<webhook_endpoint::Model>, LedgerError> {
        let Some(endpoint) = webhook_endpoint::Entity::find_by_id(id.to_owned()).lock_exclusive().one(&txn).await?
        else {
            txn.rollback().await?;
            return Ok(None);
        };
        if endpoint.enabled {
            let mut row: webhook_endpoint::ActiveModel = endpoint.clone().into();
            row.enabled = Set(false);
            if let Some(reason) = reason {
                row.disabled_reason = Set(Some(reason.to_owned()));
                row.updated_at = Set(self.now());
            }
            row.update(&txn).await?;
        }
        txn.commit().await?;
        Ok(Some(endpoint))
    }

    /// Commits a change of `endpoint` with its audit row: what it now says, never its
    /// secrets, and its URL without query or fragment (a receiver's token may be there).
    async fn commit_audited(
        &self,
        txn: sea_orm::DatabaseTransaction,
        endpoint: &webhook_endpoint::Model,
        action: AuditAction,
    ) -> Result<(), LedgerError> {
        let details = serde_json::json!({
            "url": url_without_query(&endpoint.url),
            "eventTypes": endpoint.event_types,
            "description": endpoint.description,
            "enabled": endpoint.enabled,
        });
        let mut outbox = crate::outbox::Outbox::default();
        let organization = endpoint.organization_id.as_deref();
        self.audit_into(&mut outbox, organization, action, Some(&endpoint.id), details);
        outbox.commit(txn, &self.events).await
    }

    /// Endpoints, newest first: the organization's, or (`None`) every endpoint.
    pub async fn webhook_endpoints(
        &self,
        organization_id: Option<&str>,
        after: Option<&ListCursor>,
        limit: u64,
    ) -> Result<Vec<WebhookEndpoint>, LedgerError> {
        use webhook_endpoint::Column;
        let mut query = webhook_endpoint::Entity::find();
        if let Some(organization_id) = organization_id {
            query = query.filter(Column::OrganizationId.eq(organization_id));
        }
        if let Some((created_at, id)) = after {
            query = query.filter(older(Column::CreatedAt, Column::Id, *created_at, id));
        }
        let rows = query.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(WebhookEndpoint::try_from).collect()
    }

    /// An event by id.
    pub async fn webhook_event(&self, id: &str) -> Result<Option<WebhookEvent>, LedgerError> {
        webhook_event::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(WebhookEvent::try_from).transpose()
    }

    /// The organization's events, newest first, of `types` (all when empty) created in
    /// `(after, before)`.
    pub async fn webhook_events(
        &self,
        organization_id: &str,
        types: &[EventType],
        (created_after, created_before): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        after: Option<&ListCursor>,
        limit: u64,
    ) -> Result<Vec<WebhookEvent>, LedgerError> {
        use webhook_event::Column;
        let mut query = webhook_event::Entity::find().filter(Column::OrganizationId.eq(organization_id));
        if !types.is_empty() {
            query = query.filter(Column::EventType.is_in(types.iter().map(|kind| kind.as_str())));
        }
        if let Some(at) = created_after {
            query = query.filter(Column::CreatedAt.gt(at));
        }
        if let Some(at) = created_before {
            query = query.filter(Column::CreatedAt.lt(at));
        }
        if let Some((created_at, id)) = after {
            query = query.filter(older(Column::CreatedAt, Column::Id, *created_at, id));
        }
        let rows = query.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(WebhookEvent::try_from).collect()
    }

    /// An endpoint's deliveries, newest first, of `statuses` (all when empty).
    pub async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        statuses: &[DeliveryStatus],
        after: Option<&ListCursor>,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, LedgerError> {
        use webhook_delivery::Column;
        let mut query = webhook_delivery::Entity::find().filter(Column::EndpointId.eq(endpoint_id));
        if !statuses.is_empty() {
            query = query.filter(Column::Status.is_in(statuses.iter().map(|status| status.as_str())));
        }
        if let Some((created_at, id)) = after {
            query = query.filter(older(Column::CreatedAt, Column::Id, *created_at, id));
        }
        let rows = query.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(WebhookDelivery::try_from).collect()
    }

    /// A new delivery of an existing event to an endpoint that takes it (its own
    /// organization's, or every organization's); due now.
    pub async fn resend_webhook_event(
        &self,
        endpoint_id: &str,
        event_id: &str,
    ) -> Result<WebhookDelivery, LedgerError> {
        let event = self.webhook_event(event_id).await?.ok_or(LedgerError::NotFound("webhook event"))?;
        // The endpoint is held until the delivery is written, so that it is not deleted
        // in between (a delivery to no endpoint would wait forever).
        let txn = crate::db::begin_write(&self.db).await?;
        let endpoint = webhook_endpoint::Entity::find_by_id(endpoint_id.to_owned())
            .lock_shared()
            .one(&txn)
            .await?
            .ok_or(LedgerError::NotFound("webhook endpoint"))?;
        let own = endpoint.organization_id.as_deref().is_none_or(|own| own == event.organization_id);
        if !own || !crate::outbox::takes(&endpoint, event.event_type) {
            return Err(LedgerError::InvalidInput("the endpoint does not receive this event".into()));
        }
        let at = self.now();
        let row = webhook_delivery::ActiveModel {
            id: Set(new_id("whd")),
            endpoint_id: Set(endpoint.id),
            event_id: Set(event.id),
            status: Set(DeliveryStatus::Pending.as_str().to_owned()),
            attempts: Set(0),
            last_status_code: Set(None),
            last_error: Set(None),
            next_attempt_at: Set(Some(at)),
            leased_until: Set(None),
            delivered_at: Set(None),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        self.events.deliveries().notify_one();
        WebhookDelivery::try_from(row)
    }

    /// Writes the deliveries of up to `limit` events not yet fanned out (one per enabled
    /// endpoint that takes each: the organization's own, and those of every
    /// organization) and marks them, in one transaction; returns how many events. On
    /// PostgreSQL, events another dispatcher is fanning out are skipped. The write path
    /// writes an event's deliveries with it, by the same statement
    /// ([`crate::outbox::fan_out`]); events of a version that left that to the dispatcher
    /// (a replica not yet upgraded, a database of before) wait for this.
    pub async fn fan_out_events(&self, limit: u64) -> Result<usize, LedgerError> {
        // Most sweeps find none: looked for on the pool, not in a write transaction (on
        // SQLite a turn on the committer's connection), by the index of such events only
        // (in its order: else PostgreSQL, guessing half the events waiting, reads the
        // table until it finds one, all of it when none waits).
        let waiting = waiting_events().select_only().column(webhook_event::Column::Id).into_tuple::<String>();
        if waiting.one(&self.db).await?.is_none() {
            return Ok(0);
        }
        let txn = crate::db::begin_bookkeeping(&self.bookkeeper().await).await?;
        let mut query = waiting_events().limit(limit);
        if self.db.get_database_backend() == DbBackend::Postgres {
            query = query
                .lock_with_behavior(sea_orm::sea_query::LockType::Update, sea_orm::sea_query::LockBehavior::SkipLocked);
        }
        let events = query.all(&txn).await?;
        if events.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        let backend = self.db.get_database_backend();
        let rows = events
            .iter()
            .map(|event| {
                serde_json::json!([event.id, event.organization_id, event.event_type, sql_time(event.created_at)])
            })
            .collect();
        txn.execute_raw(crate::outbox::fan_out(backend, rows)).await?;
        webhook_event::Entity::update_many()
            .col_expr(webhook_event::Column::FannedOut, Expr::value(true))
            .filter(one_of(backend, "id", events.iter().map(|event| event.id.as_str())))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(events.len())
    }

    /// Deliveries waiting to be sent (pending, on any endpoint) and how long the oldest
    /// of them has waited, for `/metrics`.
    pub async fn webhook_backlog(&self) -> Result<(u64, std::time::Duration), LedgerError> {
        let (count, oldest): (i64, Option<DateTime<Utc>>) = webhook_delivery::Entity::find()
            .select_only()
            .column_as(Expr::from(Func::count(Expr::col(webhook_delivery::Column::Id))), "count")
            .column_as(Expr::from(Func::min(Expr::col(webhook_delivery::Column::CreatedAt))), "oldest")
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .into_tuple()
            .one(&self.db)
            .await?
            .unwrap_or((0, None));
        let waited = oldest.map_or(Duration::zero(), |oldest| self.now() - oldest);
        Ok((u64::try_from(count).unwrap_or(0), waited.to_std().unwrap_or_default()))
    }

    /// Records attempts of claimed deliveries, a burst in one transaction (how a busy
    /// dispatcher keeps its writes few): each only while its claim still holds it, with
    /// what it means for its endpoint (a success clears its failing streak, a failure
    /// starts one, a disabling one turns it off and fails its other pending deliveries,
    /// after this transaction, in transactions of their own).
    /// Successes under one lease are one statement. Returns how many claims still held.
    pub async fn record_attempts(
        &self,
        attempts: &[(ClaimedDelivery, AttemptOutcome)],
        failing_for: Duration,
    ) -> Result<usize, LedgerError> {
        let now = self.now();
        let backend = self.db.get_database_backend();
        let txn = crate::db::begin_bookkeeping(&self.bookkeeper().await).await?;
        // Which claims still held: the successes a lease at a time, the failures one by one.
        let mut held: HashSet<String> = HashSet::new();
        let mut succeeded: BTreeMap<(DateTime<Utc>, i32), Vec<&ClaimedDelivery>> = BTreeMap::new();
        for (claimed, outcome) in attempts {
            match outcome {
                AttemptOutcome::Succeeded { status_code } => {
                    succeeded.entry((claimed.leased_until, *status_code)).or_default().push(claimed);
                }
                AttemptOutcome::NotDelivered { .. } => {
                    if record_failure(&txn, claimed, outcome).await? {
                        held.insert(claimed.id.clone());
                    }
                }
            }
        }
        for ((until, status_code), group) in succeeded {
            let ids = group.iter().map(|claimed| claimed.id.as_str());
            let updated = delivered(backend, ids, until, status_code, now).exec_with_returning(&txn).await?;
            held.extend(updated.into_iter().map(|row| row.id));
        }
        // What the held attempts mean for their endpoints, in the order they were made.
        let mut endpoints: HashMap<String, (webhook_endpoint::Model, Option<String>)> =
            webhook_endpoint::Entity::find()
                .filter(one_of(
                    backend,
                    "id",
                    attempts.iter().map(|(claimed, _)| claimed.endpoint_id.as_str()).collect::<BTreeSet<_>>(),
                ))
                .all(&txn)
                .await?
                .into_iter()
                .map(|endpoint| (endpoint.id.clone(), (endpoint, None)))
                .collect();
        let before: HashMap<String, Option<DateTime<Utc>>> =
            endpoints.iter().map(|(id, (endpoint, _))| (id.clone(), endpoint.failing_since)).collect();
        for (claimed, outcome) in attempts {
            let Some((endpoint, disable)) = endpoints.get_mut(&claimed.endpoint_id) else { continue };
            if !held.contains(claimed.id.as_str()) || disable.is_some() {
                continue;
            }
            match outcome {
                AttemptOutcome::Succeeded { .. } => endpoint.failing_since = None,
                AttemptOutcome::NotDelivered { disable: disabling, .. } => {
                    let since = *endpoint.failing_since.get_or_insert(now);
                    *disable = disabling.clone().or_else(|| {
                        (now - since >= failing_for).then(|| "every delivery failed for five days".to_owned())
                    });
                }
            }
        }
        // An endpoint is written only when its failing streak changes; one to disable is
        // turned off after this commits, in a transaction of its own (which waits for
        // the batches writing to it: not while this holds other endpoints).
        let mut disabling = Vec::new();
        for (id, (endpoint, disable)) in endpoints {
            if before.get(&id) != Some(&endpoint.failing_since) {
                let failing_since = endpoint.failing_since;
                let mut row: webhook_endpoint::ActiveModel = endpoint.into();
                row.failing_since = Set(failing_since);
                row.update(&txn).await?;
            }
            disabling.extend(disable.map(|reason| (id, reason)));
        }
        txn.commit().await?;
        for (id, reason) in disabling {
            // The attempts are recorded whatever happens here; the endpoint's next failed
            // attempt decides to disable it again.
            if let Err(error) = crate::commit::idempotency::retrying(|| self.disable_endpoint(&id, &reason)).await {
                tracing::warn!(%error, endpoint = %id, "could not disable the endpoint; its next failure will try again");
            }
        }
        Ok(held.len())
    }

    /// Turns an endpoint off for `reason` ([`Ledger::turn_off`]), then fails its pending
    /// deliveries; nothing if it is gone or already off.
    async fn disable_endpoint(&self, id: &str, reason: &str) -> Result<(), LedgerError> {
        let txn = crate::db::begin_bookkeeping(&self.bookkeeper().await).await?;
        if !self.turn_off(txn, id, Some(reason)).await?.is_some_and(|endpoint| endpoint.enabled) {
            return Ok(());
        }
        let txn = crate::db::begin_bookkeeping(&self.bookkeeper().await).await?;
        fail_pending(&txn, id, &format!("the endpoint was disabled: {reason}")).await?;
        Ok(txn.commit().await?)
    }

    /// Claims up to `limit` deliveries that are due, to enabled endpoints other than
    /// `busy` (those the caller has no room for), for `lease` ([`crate::db::lease_due`]).
    pub async fn claim_deliveries(
        &self,
        limit: u64,
        lease: Duration,
        busy: &[String],
    ) -> Result<Vec<ClaimedDelivery>, LedgerError> {
        let now = self.now();
        // None when every enabled endpoint is left out: the claim would only walk past
        // their due deliveries (a storm's backlog to one endpoint at its limit), every
        // round. On SQLite also none when no endpoint is enabled: a claim is a write on
        // the committer's connection there, and an empty one took up to 16 ms of it under
        // 1,000 organizations' consumes, each second. A read on the pool instead (on
        // PostgreSQL a round trip more before every claim, only when it can spare one).
        let backend = self.db.get_database_backend();
        if !busy.is_empty() || backend == DbBackend::Sqlite {
            let free = webhook_endpoint::Entity::find()
                .select_only()
                .column(webhook_endpoint::Column::Id)
                .filter(webhook_endpoint::Column::Enabled.eq(true))
                .filter(one_of(backend, "id", busy.iter().map(String::as_str)).not())
                .into_tuple::<String>()
                .one(&self.db)
                .await?;
            if free.is_none() {
                return Ok(Vec::new());
            }
        }
        let enabled = "AND endpoint_id IN (SELECT e.id FROM webhook_endpoints e WHERE e.enabled)";
        let skip = ("endpoint_id", busy);
        let (deliveries, until) =
            crate::db::lease_due(&self.bookkeeper().await, webhook_delivery::Entity, enabled, skip, limit, now, lease)
                .await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let endpoint_ids: Vec<String> = deliveries.iter().map(|row| row.endpoint_id.clone()).collect();
        let event_ids: Vec<String> = deliveries.iter().map(|row| row.event_id.clone()).collect();
        let endpoints = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Id.is_in(endpoint_ids))
            .all(&self.db)
            .await?;
        let events =
            webhook_event::Entity::find().filter(webhook_event::Column::Id.is_in(event_ids)).all(&self.db).await?;
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let endpoint = endpoints.iter().find(|endpoint| endpoint.id == delivery.endpoint_id)?;
                let event = events.iter().find(|event| event.id == delivery.event_id)?;
                Some(ClaimedDelivery {
                    id: delivery.id,
                    attempts: delivery.attempts,
                    endpoint_id: endpoint.id.clone(),
                    url: endpoint.url.clone(),
                    secrets: self.signing_secrets(endpoint, now),
                    event_id: event.id.clone(),
                    payload: event.payload.clone(),
                    leased_until: until,
                })
            })
            .collect())
    }

    /// The secrets to sign `endpoint`'s deliveries with now: its current one, and the
    /// previous one during the overlap. An unreadable current secret leaves none: the
    /// attempt fails on it.
    fn signing_secrets(&self, endpoint: &webhook_endpoint::Model, now: DateTime<Utc>) -> Vec<String> {
        let mut secrets: Vec<String> = self.readable_secret(&endpoint.secret).into_iter().collect();
        if let (Some(previous), Some(until), false) =
            (&endpoint.previous_secret, endpoint.previous_secret_until, secrets.is_empty())
            && until > now
        {
            secrets.extend(self.readable_secret(previous));
        }
        secrets
    }

    /// Gives claims back unattempted (a dispatcher at its limit for their endpoint).
    pub async fn release_deliveries(&self, ids: &[String]) -> Result<(), LedgerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let backend = self.db.get_database_backend();
        given_back(backend, ids.iter().map(String::as_str)).exec(&self.bookkeeper().await).await?;
        Ok(())
    }
}

/// Events not yet fanned out, oldest first: in the words of the index that holds only
/// them (a partial index serves a query whose condition is its own), and in its order.
fn waiting_events() -> sea_orm::Select<webhook_event::Entity> {
    webhook_event::Entity::find().filter(Expr::cust("NOT fanned_out")).order_by_asc(webhook_event::Column::CreatedAt)
}

/// Marks the deliveries `ids` delivered (`status_code`, at `now`), those still under the
/// lease ending `until`. They are found by key: `status` is only checked
/// ([`unindexed_eq`]), or either engine walks every pending delivery for them.
fn delivered<'a>(
    backend: DbBackend,
    ids: impl IntoIterator<Item = &'a str>,
    until: DateTime<Utc>,
    status_code: i32,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<webhook_delivery::Entity> {
    use webhook_delivery::Column;
    webhook_delivery::Entity::update_many()
        .col_expr(Column::Status, Expr::value(DeliveryStatus::Succeeded.as_str()))
        .col_expr(Column::LastStatusCode, Expr::value(status_code))
        .col_expr(Column::LastError, Expr::value(Option::<String>::None))
        .col_expr(Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(Column::DeliveredAt, Expr::value(now))
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(one_of(backend, "id", ids))
        .filter(unindexed_eq(backend, "status", DeliveryStatus::Pending.as_str()))
        .filter(Column::LeasedUntil.eq(until))
}

/// Gives the claimed deliveries `ids` back unattempted, found by key as in [`delivered`].
fn given_back<'a>(
    backend: DbBackend,
    ids: impl IntoIterator<Item = &'a str>,
) -> sea_orm::UpdateMany<webhook_delivery::Entity> {
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(one_of(backend, "id", ids))
        .filter(unindexed_eq(backend, "status", DeliveryStatus::Pending.as_str()))
}

/// Records a failed attempt of a claimed delivery inside `txn`, only while its claim
/// still holds it: the next attempt, or none (the delivery fails). Returns whether the
/// claim still held.
async fn record_failure(
    txn: &sea_orm::DatabaseTransaction,
    claimed: &ClaimedDelivery,
    outcome: &AttemptOutcome,
) -> Result<bool, LedgerError> {
    use webhook_delivery::Column;
    let AttemptOutcome::NotDelivered { status_code, error, retry_at, .. } = outcome else { return Ok(false) };
    let status = if retry_at.is_some() { DeliveryStatus::Pending } else { DeliveryStatus::Failed };
    let updated = webhook_delivery::Entity::update_many()
        .col_expr(Column::Attempts, Expr::value(claimed.attempts + 1))
        .col_expr(Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(Column::Status, Expr::value(status.as_str()))
        .col_expr(Column::LastStatusCode, Expr::value(*status_code))
        .col_expr(Column::LastError, Expr::value(truncate(error)))
        .col_expr(Column::NextAttemptAt, Expr::value(*retry_at))
        .filter(Column::Id.eq(&claimed.id))
        .filter(Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(Column::LeasedUntil.eq(claimed.leased_until))
        .exec(txn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Fails an endpoint's pending deliveries with `why`.
async fn fail_pending(conn: &impl ConnectionTrait, endpoint_id: &str, why: &str) -> Result<(), LedgerError> {
    use webhook_delivery::Column;
    webhook_delivery::Entity::update_many()
        .col_expr(Column::Status, Expr::value(DeliveryStatus::Failed.as_str()))
        .col_expr(Column::LastError, Expr::value(why))
        .col_expr(Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(Column::EndpointId.eq(endpoint_id))
        .filter(Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Rows older than `(created_at, id)` in a newest-first list.
pub(crate) fn older<C: ColumnTrait>(created: C, id_column: C, created_at: DateTime<Utc>, id: &str) -> Expr {
    // A row value, so that both engines read on along the index.
    let position = Expr::tuple([Expr::col(created), Expr::col(id_column)]);
    sea_orm::sea_query::ExprTrait::lt(position, Expr::tuple([Expr::value(created_at), Expr::value(id.to_owned())]))
}

/// An error message as stored: at most 500 characters.
fn truncate(error: &str) -> String {
    error.chars().take(500).collect()
}

/// `url` up to its path: what an audit row keeps of an endpoint's address.
fn url_without_query(url: &str) -> &str {
    &url[..url.find(['?', '#']).unwrap_or(url.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{QueryTrait, Statement};

    /// A commit wakes the dispatcher only when it wrote deliveries: the events of an
    /// organization no endpoint takes wake nothing (under a storm of them, each wake was
    /// a claim, a write, that found nothing).
    #[tokio::test]
    async fn only_a_commit_that_wrote_deliveries_wakes_the_dispatcher() {
        let (_dir, url) = crate::db::migrated_sqlite().await;
        let ledger = crate::Ledger::new(crate::db::connect(&url).await.expect("connect"));
        let unhooked = ledger.create_organization("Unhooked", None).await.expect("organization").id;
        let hooked = ledger.create_organization("Hooked", None).await.expect("organization").id;
        let endpoint = NewEndpoint {
            organization_id: Some(hooked.clone()),
            url: "https://example.com/hook".into(),
            event_types: Vec::new(),
            description: None,
        };
        ledger.create_webhook_endpoint(endpoint).await.expect("endpoint");
        let woken = || async {
            tokio::time::timeout(std::time::Duration::from_millis(100), ledger.events().deliveries().notified())
                .await
                .is_ok()
        };
        woken().await;
        let grant = |org: &str| {
            let amount = crate::Amount::parse(5).expect("amount");
            crate::GrantRequest::new(org.to_owned(), amount, "grant".into(), None).expect("grant")
        };
        ledger.grant(grant(&unhooked)).await.expect("granted");
        assert!(!woken().await, "an event no endpoint takes woke the dispatcher");
        ledger.grant(grant(&hooked)).await.expect("granted");
        assert!(woken().await, "a delivery written did not wake the dispatcher");
    }

    /// The dispatcher's statements on large tables find their rows by the index meant
    /// for them on SQLite: recording delivered attempts and giving claims back by key,
    /// not by walking the pending deliveries (a storm's whole backlog, each burst); the
    /// look for events still to fan out by the index of those events only.
    #[tokio::test]
    async fn the_dispatchers_statements_find_their_rows_by_their_index() {
        let (_dir, url) = crate::db::migrated_sqlite().await;
        // Connections opened after the migration: `EXPLAIN` reads no table, so a
        // connection of before would plan with the schema it had.
        let db = crate::db::connect(&url).await.expect("connect");
        let backend = DbBackend::Sqlite;
        let now = Utc::now();
        let ids = ["whd_1", "whd_2"];
        let waiting = waiting_events().limit(500);
        for (name, statement, index) in [
            (
                "delivered",
                delivered(backend, ids, now, 204, now).build(backend),
                "sqlite_autoindex_webhook_deliveries_1 (id=?)",
            ),
            ("given back", given_back(backend, ids).build(backend), "sqlite_autoindex_webhook_deliveries_1 (id=?)"),
            ("waiting events", waiting.build(backend), "ix_webhook_events_unfanned"),
        ] {
            let sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
            let values = statement.values.map(|values| values.0).unwrap_or_default();
            let plan: Vec<String> = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await
                .expect("plan")
                .iter()
                .map(|row| row.try_get::<String>("", "detail").expect("detail"))
                .collect();
            assert!(plan.iter().any(|step| step.contains(index)), "{name}: {plan:?}");
            assert!(
                !plan.iter().any(|step| (step.starts_with("SCAN webhook") && !step.contains(" USING "))
                    || step.contains("TEMP B-TREE")
                    || step.contains("ix_webhook_deliveries_due")),
                "{name}: {plan:?}"
            );
        }
    }
}
