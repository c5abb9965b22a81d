//! An organization's auto top-up settings and saved card.

use sea_orm::entity::prelude::*;

/// A row of `auto_top_ups`; none means auto top-up was never set up.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auto_top_ups")]
pub struct Model {
    /// The organization.
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    /// Whether it is on.
    pub enabled: bool,
    /// Below this `available`, a change starts a top-up.
    pub threshold: Option<i64>,
    /// The package each top-up buys.
    pub package_id: Option<String>,
    /// Credits each top-up adds (the package's, bonus included, when chosen).
    pub package_credits: Option<i64>,
    /// What each top-up charges, in the currency's smallest unit.
    pub package_amount: Option<i64>,
    /// Lower-case ISO 4217 code.
    pub package_currency: Option<String>,
    /// Top-ups started per calendar month (UTC), at most.
    pub monthly_limit: i32,
    /// Why it is paused (a decline, 3-D Secure); none while it runs.
    pub paused_reason: Option<String>,
    /// The organization's Stripe Customer (`cus_…`), created once.
    pub stripe_customer_id: Option<String>,
    /// The saved payment method (`pm_…`).
    pub payment_method_id: Option<String>,
    /// Its card brand.
    pub card_brand: Option<String>,
    /// Its last four digits.
    pub card_last4: Option<String>,
    /// Its expiry month.
    pub card_exp_month: Option<i32>,
    /// Its expiry year.
    pub card_exp_year: Option<i32>,
    /// Latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
