//! One automatic recharge of an organization, from its trigger to its credits.

use sea_orm::entity::prelude::*;

/// A row of `credit_top_ups`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_top_ups")]
pub struct Model {
    /// `ctu_…`: also the Stripe `Idempotency-Key` of its PaymentIntent.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Whose.
    pub organization_id: String,
    /// The package bought.
    pub package_id: String,
    /// `PENDING`, `SUCCEEDED`, `FAILED` or `REQUIRES_ACTION`.
    pub status: String,
    /// Credits it adds (with the package's bonus).
    pub credits: i64,
    /// Price in the currency's smallest unit.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Its PaymentIntent, once Stripe answered.
    pub payment_intent_id: Option<String>,
    /// Stripe's message, when it failed.
    pub failure_message: Option<String>,
    /// The `PURCHASE` transaction that credited it.
    pub transaction_id: Option<String>,
    /// The part of its charge refunded so far, as last settled (see billing's settlement).
    pub refunded_amount: i64,
    /// Calls to Stripe made for it.
    pub attempts: i32,
    /// When the worker calls Stripe next (pending only).
    pub next_attempt_at: Option<ChronoDateTimeUtc>,
    /// A worker's claim, until this instant.
    pub leased_until: Option<ChronoDateTimeUtc>,
    /// When it was triggered.
    pub created_at: ChronoDateTimeUtc,
    /// Latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
