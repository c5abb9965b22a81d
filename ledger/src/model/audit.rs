//! The audit log's nouns: who changed money or access, from where, what they did, and
//! the row that records it.

use chrono::{DateTime, Utc};
use entity::audit_event;

use crate::LedgerError;

/// Who acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditActor {
    /// The admin token (or an operator at the command line).
    Admin,
    /// An organization's API key (`key_…`).
    ApiKey(String),
    /// A client session (`cses_…`).
    ClientSession(String),
    /// Stripe, through its webhook.
    Stripe,
    /// The server itself: expiries, top-ups.
    System,
}

impl AuditActor {
    /// Its kind.
    pub fn kind(&self) -> AuditActorType {
        match self {
            Self::Admin => AuditActorType::Admin,
            Self::ApiKey(_) => AuditActorType::ApiKey,
            Self::ClientSession(_) => AuditActorType::ClientSession,
            Self::Stripe => AuditActorType::Stripe,
            Self::System => AuditActorType::System,
        }
    }

    /// The key's or session's id.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::ApiKey(id) | Self::ClientSession(id) => Some(id),
            _ => None,
        }
    }
}

/// The kinds of actor, as stored and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditActorType {
    /// `ADMIN`
    Admin,
    /// `API_KEY`
    ApiKey,
    /// `CLIENT_SESSION`
    ClientSession,
    /// `STRIPE`
    Stripe,
    /// `SYSTEM`
    System,
}

impl AuditActorType {
    const ALL: [Self; 5] = [Self::Admin, Self::ApiKey, Self::ClientSession, Self::Stripe, Self::System];

    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "ADMIN",
            Self::ApiKey => "API_KEY",
            Self::ClientSession => "CLIENT_SESSION",
            Self::Stripe => "STRIPE",
            Self::System => "SYSTEM",
        }
    }

    fn parse(stored: &str) -> Result<Self, LedgerError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == stored)
            .ok_or_else(|| LedgerError::internal(format!("stored audit actor type {stored}")))
    }
}

/// Who acts and from where: a write carrying it records so in its audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// Who.
    pub actor: AuditActor,
    /// The client's address, when it came over the network.
    pub client_address: Option<String>,
    /// The request's id (`x-request-id`).
    pub request_id: Option<String>,
}

impl Audit {
    /// The server acting on its own.
    pub fn system() -> Self {
        Self { actor: AuditActor::System, client_address: None, request_id: None }
    }

    /// [`Audit::system`], shared: every batch of the committer starts with it.
    pub(crate) fn shared_system() -> std::sync::Arc<Self> {
        static SYSTEM: std::sync::LazyLock<std::sync::Arc<Audit>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(Audit::system()));
        SYSTEM.clone()
    }

    /// An operator at the command line (the admin, without a request).
    pub fn operator() -> Self {
        Self { actor: AuditActor::Admin, client_address: None, request_id: None }
    }
}

/// What was done: the audited changes of money and access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// `grantCredits`, or `credits grant`.
    GrantCredits,
    /// `voidCreditLot`.
    VoidCreditLot,
    /// `setOverdraftLimit`.
    SetOverdraftLimit,
    /// `setLowBalanceThreshold`.
    SetLowBalanceThreshold,
    /// `createOrganization`.
    CreateOrganization,
    /// `createApiKey`.
    CreateApiKey,
    /// `revokeApiKey`.
    RevokeApiKey,
    /// `createClientSession`.
    CreateClientSession,
    /// `revokeClientSession`.
    RevokeClientSession,
    /// `createWebhookEndpoint`.
    CreateWebhookEndpoint,
    /// `updateWebhookEndpoint`.
    UpdateWebhookEndpoint,
    /// `rotateWebhookEndpointSecret`.
    RotateWebhookEndpointSecret,
    /// `deleteWebhookEndpoint`.
    DeleteWebhookEndpoint,
    /// `setAutoTopUp`.
    SetAutoTopUp,
    /// A paid Checkout credited (Stripe's webhook).
    CompletePurchase,
    /// A refund or dispute of a payment settled: credits taken back or given back.
    SettlePayment,
    /// A paid auto top-up credited (the worker, or Stripe's webhook).
    CompleteTopUp,
}

impl AuditAction {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GrantCredits => "GRANT_CREDITS",
            Self::VoidCreditLot => "VOID_CREDIT_LOT",
            Self::SetOverdraftLimit => "SET_OVERDRAFT_LIMIT",
            Self::SetLowBalanceThreshold => "SET_LOW_BALANCE_THRESHOLD",
            Self::CreateOrganization => "CREATE_ORGANIZATION",
            Self::CreateApiKey => "CREATE_API_KEY",
            Self::RevokeApiKey => "REVOKE_API_KEY",
            Self::CreateClientSession => "CREATE_CLIENT_SESSION",
            Self::RevokeClientSession => "REVOKE_CLIENT_SESSION",
            Self::CreateWebhookEndpoint => "CREATE_WEBHOOK_ENDPOINT",
            Self::UpdateWebhookEndpoint => "UPDATE_WEBHOOK_ENDPOINT",
            Self::RotateWebhookEndpointSecret => "ROTATE_WEBHOOK_ENDPOINT_SECRET",
            Self::DeleteWebhookEndpoint => "DELETE_WEBHOOK_ENDPOINT",
            Self::SetAutoTopUp => "SET_AUTO_TOP_UP",
            Self::CompletePurchase => "COMPLETE_PURCHASE",
            Self::SettlePayment => "SETTLE_PAYMENT",
            Self::CompleteTopUp => "COMPLETE_TOP_UP",
        }
    }
}

/// One audit row as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// `aud_…`
    pub id: String,
    /// The organization it concerns (a new one's own, for its creation).
    pub organization_id: Option<String>,
    /// Who acted.
    pub actor_type: AuditActorType,
    /// The key's or session's id.
    pub actor_id: Option<String>,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target_id: Option<String>,
    /// The input, without secrets, as JSON.
    pub details: String,
    /// Where the request came from.
    pub client_address: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<audit_event::Model> for AuditEvent {
    type Error = LedgerError;

    fn try_from(row: audit_event::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            actor_type: AuditActorType::parse(&row.actor_type)?,
            id: row.id,
            organization_id: row.organization_id,
            actor_id: row.actor_id,
            action: row.action,
            target_id: row.target_id,
            details: row.details,
            client_address: row.client_address,
            request_id: row.request_id,
            created_at: row.created_at,
        })
    }
}

/// Which audit rows to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only these actions (empty: all).
    pub actions: Vec<String>,
    /// Only these kinds of actor (empty: all).
    pub actor_types: Vec<AuditActorType>,
    /// Only rows strictly after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only rows before this instant.
    pub created_before: Option<DateTime<Utc>>,
}
