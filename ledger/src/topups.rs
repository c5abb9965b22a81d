//! Auto top-up as stored and decided: an organization's settings and saved card, and
//! its top-ups, each started by the committed change that left `available` below the
//! threshold (in that same transaction, under the organization's lock, so however many
//! requests race across it, one starts), then paid by the server's worker and credited
//! once.
//!
//! The balance row carries the threshold below which a change starts a top-up
//! (`auto_top_up_below`) only while one may start (on, not paused, a card saved, none
//! pending): the write path compares it with the new `available` and reads nothing more
//! until it fires. Starting one clears it; a top-up that ends, a saved card, a new
//! month and `setAutoTopUp` set it again ([`LedgerTx::arm_top_up`]).

use chrono::{DateTime, Datelike, TimeZone, Utc};
use entity::{auto_top_up, credit_top_up};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::write::LedgerTx;
use crate::{Ledger, LedgerError, new_id};

/// The most top-ups a month allows, and the default.
pub const MAX_MONTHLY_LIMIT: i32 = 100;
/// Top-ups per month when none is set.
pub const DEFAULT_MONTHLY_LIMIT: i32 = 4;

/// A saved card: what it is, nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedPaymentMethod {
    /// `pm_…`
    pub id: String,
    /// `visa`, `mastercard`, …
    pub brand: Option<String>,
    /// The last four digits.
    pub last4: Option<String>,
    /// Expiry month.
    pub exp_month: Option<i32>,
    /// Expiry year.
    pub exp_year: Option<i32>,
}

/// What a top-up buys: a package's id and terms when it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopUpPackage {
    /// The package.
    pub id: String,
    /// Credits each top-up adds (bonus included).
    pub credits: i64,
    /// Its price in the currency's smallest unit.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
}

/// An organization's auto top-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoTopUp {
    /// Whose.
    pub organization_id: String,
    /// Whether it is on.
    pub enabled: bool,
    /// Below this `available`, a change starts a top-up.
    pub threshold: Option<i64>,
    /// The package each top-up buys.
    pub package_id: Option<String>,
    /// Top-ups started per calendar month (UTC), at most.
    pub monthly_limit: i32,
    /// Top-ups started this month.
    pub top_ups_this_month: i32,
    /// The saved card.
    pub payment_method: Option<SavedPaymentMethod>,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// The organization's Stripe Customer.
    pub stripe_customer_id: Option<String>,
}

/// What `setAutoTopUp` asks for.
#[derive(Clone, Debug)]
pub struct AutoTopUpChange {
    /// On or off.
    pub enabled: bool,
    /// A new threshold (kept when absent).
    pub threshold: Option<i64>,
    /// A new package (kept when absent).
    pub package: Option<TopUpPackage>,
    /// A new monthly limit (kept when absent; 4 at first).
    pub monthly_limit: Option<i32>,
}

/// Where a top-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopUpStatus {
    /// Being paid.
    Pending,
    /// Paid and credited.
    Succeeded,
    /// Declined or failed.
    Failed,
    /// Needs the customer (3-D Secure).
    RequiresAction,
}

impl TopUpStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::RequiresAction => "REQUIRES_ACTION",
        }
    }

    fn parse(stored: &str) -> Result<Self, LedgerError> {
        Ok(match stored {
            "PENDING" => Self::Pending,
            "SUCCEEDED" => Self::Succeeded,
            "FAILED" => Self::Failed,
            "REQUIRES_ACTION" => Self::RequiresAction,
            other => return Err(LedgerError::internal(format!("stored top-up status {other}"))),
        })
    }
}

/// One automatic recharge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTopUp {
    /// `ctu_…`
    pub id: String,
    /// Whose.
    pub organization_id: String,
    /// The package bought.
    pub package_id: String,
    /// Where it stands.
    pub status: TopUpStatus,
    /// Credits it adds.
    pub credits: i64,
    /// Price in the currency's smallest unit.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Its PaymentIntent.
    pub payment_intent_id: Option<String>,
    /// Stripe's message, when it failed.
    pub failure_message: Option<String>,
    /// The `PURCHASE` that credited it.
    pub transaction_id: Option<String>,
    /// The part of its charge refunded so far, as last settled.
    pub refunded_amount: i64,
    /// Calls to Stripe made for it.
    pub attempts: i32,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// Latest change.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<credit_top_up::Model> for CreditTopUp {
    type Error = LedgerError;

    fn try_from(row: credit_top_up::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            status: TopUpStatus::parse(&row.status)?,
            id: row.id,
            organization_id: row.organization_id,
            package_id: row.package_id,
            credits: row.credits,
            amount: row.amount,
            currency: row.currency,
            payment_intent_id: row.payment_intent_id,
            failure_message: row.failure_message,
            transaction_id: row.transaction_id,
            refunded_amount: row.refunded_amount,
            attempts: row.attempts,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A top-up a worker claimed: what to charge, and with which card.
#[derive(Clone, Debug)]
pub struct ClaimedTopUp {
    /// The top-up.
    pub top_up: CreditTopUp,
    /// The organization's Stripe Customer.
    pub customer_id: Option<String>,
    /// The saved card.
    pub payment_method_id: Option<String>,
}

/// The first instant of `at`'s calendar month (UTC).
fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single().unwrap_or(at)
}

fn settings_of(row: Option<auto_top_up::Model>, organization_id: &str, this_month: i32) -> AutoTopUp {
    let Some(row) = row else {
        return AutoTopUp {
            organization_id: organization_id.to_owned(),
            enabled: false,
            threshold: None,
            package_id: None,
            monthly_limit: DEFAULT_MONTHLY_LIMIT,
            top_ups_this_month: this_month,
            payment_method: None,
            paused_reason: None,
            stripe_customer_id: None,
        };
    };
    AutoTopUp {
        payment_method: row.payment_method_id.map(|id| SavedPaymentMethod {
            id,
            brand: row.card_brand,
            last4: row.card_last4,
            exp_month: row.card_exp_month,
            exp_year: row.card_exp_year,
        }),
        organization_id: row.organization_id,
        enabled: row.enabled,
        threshold: row.threshold,
        package_id: row.package_id,
        monthly_limit: row.monthly_limit,
        top_ups_this_month: this_month,
        paused_reason: row.paused_reason,
        stripe_customer_id: row.stripe_customer_id,
    }
}

async fn read_settings(
    conn: &impl ConnectionTrait,
    organization_id: &str,
    at: DateTime<Utc>,
) -> Result<AutoTopUp, LedgerError> {
    let row = auto_top_up::Entity::find_by_id(organization_id.to_owned()).one(conn).await?;
    let this_month = credit_top_up::Entity::find()
        .filter(credit_top_up::Column::OrganizationId.eq(organization_id))
        .filter(credit_top_up::Column::CreatedAt.gte(month_start(at)))
        .count(conn)
        .await?;
    Ok(settings_of(row, organization_id, i32::try_from(this_month).unwrap_or(i32::MAX)))
}

async fn pending(conn: &impl ConnectionTrait, organization_id: &str) -> Result<bool, LedgerError> {
    Ok(credit_top_up::Entity::find()
        .filter(credit_top_up::Column::OrganizationId.eq(organization_id))
        .filter(credit_top_up::Column::Status.eq(TopUpStatus::Pending.as_str()))
        .count(conn)
        .await?
        > 0)
}

/// Whether a top-up may start now, and below which `available`.
fn armed(settings: &AutoTopUp, pending: bool) -> Option<i64> {
    let ready = settings.enabled
        && settings.paused_reason.is_none()
        && settings.payment_method.is_some()
        && !pending
        && settings.top_ups_this_month < settings.monthly_limit;
    if ready { settings.threshold } else { None }
}

impl Ledger {
    /// The organization's auto top-up (off, with defaults, when never set up).
    pub async fn auto_top_up(&self, organization_id: &str) -> Result<AutoTopUp, LedgerError> {
        read_settings(&self.db, organization_id, self.now()).await
    }

    /// Records the organization's Stripe Customer (created once, reused).
    pub async fn set_stripe_customer(&self, organization_id: &str, customer_id: &str) -> Result<(), LedgerError> {
        let at = self.now();
        let current = auto_top_up::Entity::find_by_id(organization_id.to_owned()).one(&self.db).await?;
        let exists = current.is_some();
        let mut model = current.unwrap_or_else(|| blank(organization_id, at));
        model.stripe_customer_id = Some(customer_id.to_owned());
        model.updated_at = at;
        store(&self.db, model, exists).await
    }

    /// The organization's top-ups, newest first.
    pub async fn top_ups(
        &self,
        organization_id: &str,
        after: Option<&(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<CreditTopUp>, LedgerError> {
        use credit_top_up::Column;
        let mut query = credit_top_up::Entity::find().filter(Column::OrganizationId.eq(organization_id));
        if let Some((created_at, id)) = after {
            query = query.filter(crate::webhooks::older(Column::CreatedAt, Column::Id, *created_at, id));
        }
        let rows = query.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(CreditTopUp::try_from).collect()
    }

    /// A top-up by id.
    pub async fn top_up(&self, id: &str) -> Result<Option<CreditTopUp>, LedgerError> {
        credit_top_up::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(CreditTopUp::try_from).transpose()
    }

    /// Claims up to `limit` pending top-ups that are due, for `lease`
    /// ([`crate::db::lease_due`]).
    pub async fn claim_top_ups(&self, limit: u64, lease: chrono::Duration) -> Result<Vec<ClaimedTopUp>, LedgerError> {
        let (rows, _) = crate::db::lease_due(
            &self.bookkeeper().await,
            credit_top_up::Entity,
            "",
            ("id", &[]),
            limit,
            self.now(),
            lease,
        )
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let settings = auto_top_up::Entity::find_by_id(row.organization_id.clone()).one(&self.db).await?;
            claimed.push(ClaimedTopUp {
                customer_id: settings.as_ref().and_then(|settings| settings.stripe_customer_id.clone()),
                payment_method_id: settings.and_then(|settings| settings.payment_method_id),
                top_up: CreditTopUp::try_from(row)?,
            });
        }
        Ok(claimed)
    }

    /// A top-up whose call to Stripe failed for now: tried again at `retry_at`.
    pub async fn retry_top_up(&self, id: &str, retry_at: DateTime<Utc>, error: &str) -> Result<(), LedgerError> {
        credit_top_up::Entity::update_many()
            .col_expr(credit_top_up::Column::Attempts, Expr::col(credit_top_up::Column::Attempts).add(1))
            .col_expr(credit_top_up::Column::NextAttemptAt, Expr::value(retry_at))
            .col_expr(credit_top_up::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(credit_top_up::Column::FailureMessage, Expr::value(error.chars().take(500).collect::<String>()))
            .col_expr(credit_top_up::Column::UpdatedAt, Expr::value(self.now()))
            .filter(credit_top_up::Column::Id.eq(id))
            .filter(credit_top_up::Column::Status.eq(TopUpStatus::Pending.as_str()))
            .exec(&self.bookkeeper().await)
            .await?;
        Ok(())
    }

    /// Organizations whose auto top-up may start again (on, not paused, a card saved,
    /// none pending, the month's limit not reached) but is not armed: a new month, say.
    pub async fn top_ups_to_rearm(&self) -> Result<Vec<String>, LedgerError> {
        let rows = auto_top_up::Entity::find()
            .filter(auto_top_up::Column::Enabled.eq(true))
            .filter(auto_top_up::Column::PausedReason.is_null())
            .filter(auto_top_up::Column::PaymentMethodId.is_not_null())
            .filter(
                auto_top_up::Column::OrganizationId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(entity::credit_balance::Column::OrganizationId)
                        .from(entity::credit_balance::Entity)
                        .and_where(Expr::col(entity::credit_balance::Column::AutoTopUpBelow).is_null())
                        .to_owned(),
                ),
            )
            .all(&self.db)
            .await?;
        let now = self.now();
        let mut due = Vec::new();
        for row in rows {
            let settings = read_settings(&self.db, &row.organization_id, now).await?;
            if armed(&settings, pending(&self.db, &row.organization_id).await?).is_some() {
                due.push(row.organization_id);
            }
        }
        Ok(due)
    }
}

fn blank(organization_id: &str, at: DateTime<Utc>) -> auto_top_up::Model {
    auto_top_up::Model {
        organization_id: organization_id.to_owned(),
        enabled: false,
        threshold: None,
        package_id: None,
        package_credits: None,
        package_amount: None,
        package_currency: None,
        monthly_limit: DEFAULT_MONTHLY_LIMIT,
        paused_reason: None,
        stripe_customer_id: None,
        payment_method_id: None,
        card_brand: None,
        card_last4: None,
        card_exp_month: None,
        card_exp_year: None,
        updated_at: at,
    }
}

/// Writes `model`, inserting it when it is new.
async fn store(conn: &impl ConnectionTrait, model: auto_top_up::Model, exists: bool) -> Result<(), LedgerError> {
    let row = auto_top_up::ActiveModel::from(model).reset_all();
    if exists {
        row.update(conn).await?;
    } else {
        row.insert(conn).await?;
    }
    Ok(())
}

/// How a top-up's payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopUpEnd {
    /// Declined or failed: `FAILED`, auto top-up paused with Stripe's message.
    Failed(String),
    /// Needs the customer: `REQUIRES_ACTION`, paused.
    RequiresAction(String),
}

impl LedgerTx {
    /// Changes the organization's auto top-up. Turning it on needs a threshold, a
    /// package and a saved card; any call clears a pause. When it may start a top-up
    /// at once (`available` already below the threshold), this very change starts it.
    pub async fn set_auto_top_up(
        &mut self,
        organization_id: &str,
        change: AutoTopUpChange,
    ) -> Result<AutoTopUp, LedgerError> {
        self.lock([organization_id]).await?;
        let at = self.at();
        let current = auto_top_up::Entity::find_by_id(organization_id.to_owned()).one(self.conn()).await?;
        let exists = current.is_some();
        let mut model = current.unwrap_or_else(|| blank(organization_id, at));
        if let Some(threshold) = change.threshold {
            if !(0..=crate::MAX_CREDITS).contains(&threshold) {
                return Err(LedgerError::InvalidInput(format!(
                    "threshold must be between 0 and {}",
                    crate::MAX_CREDITS
                )));
            }
            model.threshold = Some(threshold);
        }
        if let Some(package) = change.package {
            model.package_id = Some(package.id);
            model.package_credits = Some(package.credits);
            model.package_amount = Some(package.amount);
            model.package_currency = Some(package.currency);
        }
        if let Some(limit) = change.monthly_limit {
            if !(1..=MAX_MONTHLY_LIMIT).contains(&limit) {
                return Err(LedgerError::InvalidInput(format!(
                    "monthlyLimit must be between 1 and {MAX_MONTHLY_LIMIT}"
                )));
            }
            model.monthly_limit = limit;
        }
        if change.enabled {
            let missing = [
                (model.threshold.is_none(), "a threshold"),
                (model.package_id.is_none(), "a package"),
                (
                    model.payment_method_id.is_none(),
                    "a saved payment method (buy a package with saveForAutoTopUp: true)",
                ),
            ];
            if let Some((_, what)) = missing.iter().find(|(absent, _)| *absent) {
                return Err(LedgerError::InvalidInput(format!("turning auto top-up on needs {what}")));
            }
        }
        let details = serde_json::json!({
            "enabled": change.enabled,
            "threshold": change.threshold,
            "packageId": model.package_id,
            "monthlyLimit": change.monthly_limit,
        });
        self.audit(Some(organization_id), crate::AuditAction::SetAutoTopUp, Some(organization_id), details);
        model.enabled = change.enabled;
        model.paused_reason = None;
        model.updated_at = at;
        store(self.conn(), model, exists).await?;
        self.arm_top_up(organization_id).await?;
        read_settings(self.conn(), organization_id, at).await
    }

    /// Saves the card a paid Checkout charged as the organization's (a later one replaces
    /// it) and lifts a pause.
    pub async fn save_payment_method(
        &mut self,
        organization_id: &str,
        customer_id: Option<&str>,
        method: &SavedPaymentMethod,
    ) -> Result<(), LedgerError> {
        self.lock([organization_id]).await?;
        let at = self.at();
        let current = auto_top_up::Entity::find_by_id(organization_id.to_owned()).one(self.conn()).await?;
        let exists = current.is_some();
        let mut model = current.unwrap_or_else(|| blank(organization_id, at));
        if let Some(customer_id) = customer_id {
            model.stripe_customer_id = Some(customer_id.to_owned());
        }
        model.payment_method_id = Some(method.id.clone());
        model.card_brand = method.brand.clone();
        model.card_last4 = method.last4.clone();
        model.card_exp_month = method.exp_month;
        model.card_exp_year = method.exp_year;
        model.paused_reason = None;
        model.updated_at = at;
        store(self.conn(), model, exists).await?;
        self.arm_top_up(organization_id).await
    }

    /// Sets the organization's balance row to start a top-up below its threshold if one
    /// may start now, or to start none. The organization must be locked.
    pub async fn arm_top_up(&mut self, organization_id: &str) -> Result<(), LedgerError> {
        let settings = read_settings(self.conn(), organization_id, self.at()).await?;
        let below = armed(&settings, pending(self.conn(), organization_id).await?);
        self.set_top_up_below(organization_id, below)
    }

    /// Starts a top-up for the organization, in this transaction, if one may start (the
    /// write path calls it when a change left `available` below the armed threshold).
    /// Returns its id.
    pub(crate) async fn start_top_up(&mut self, organization_id: &str) -> Result<Option<String>, LedgerError> {
        let at = self.at();
        let settings = read_settings(self.conn(), organization_id, at).await?;
        let row = auto_top_up::Entity::find_by_id(organization_id.to_owned()).one(self.conn()).await?;
        let started = match (armed(&settings, pending(self.conn(), organization_id).await?), row) {
            (Some(_), Some(row)) => {
                let (Some(package_id), Some(credits), Some(amount), Some(currency)) =
                    (row.package_id, row.package_credits, row.package_amount, row.package_currency)
                else {
                    return Ok(None);
                };
                let id = new_id("ctu");
                credit_top_up::ActiveModel {
                    id: Set(id.clone()),
                    organization_id: Set(organization_id.to_owned()),
                    package_id: Set(package_id),
                    status: Set(TopUpStatus::Pending.as_str().to_owned()),
                    credits: Set(credits),
                    amount: Set(amount),
                    currency: Set(currency),
                    payment_intent_id: Set(None),
                    failure_message: Set(None),
                    transaction_id: Set(None),
                    refunded_amount: Set(0),
                    attempts: Set(0),
                    next_attempt_at: Set(Some(at)),
                    leased_until: Set(None),
                    created_at: Set(at),
                    updated_at: Set(at),
                }
                .insert(self.conn())
                .await?;
                Some(id)
            }
            _ => None,
        };
        // One at a time: none starts again until this one ends.
        self.set_top_up_below(organization_id, None)?;
        Ok(started)
    }

    /// Takes a pending top-up as paid: marks it `SUCCEEDED` (once: `None` when it was
    /// not pending any more, e.g. credited already by the other report of the payment)
    /// and returns it, so the caller credits it in this same transaction.
    pub async fn take_paid_top_up(
        &mut self,
        id: &str,
        payment_intent_id: &str,
    ) -> Result<Option<CreditTopUp>, LedgerError> {
        self.finish_pending(id, TopUpStatus::Succeeded, Some(payment_intent_id), None).await
    }

    /// Records the `PURCHASE` that credited a top-up taken by [`LedgerTx::take_paid_top_up`],
    /// and lets the next one start.
    pub async fn credited_top_up(&mut self, top_up: &CreditTopUp, transaction_id: &str) -> Result<(), LedgerError> {
        credit_top_up::Entity::update_many()
            .col_expr(credit_top_up::Column::TransactionId, Expr::value(transaction_id))
            .filter(credit_top_up::Column::Id.eq(&top_up.id))
            .exec(self.conn())
            .await?;
        self.arm_top_up(&top_up.organization_id).await
    }

    /// The credited top-up paid through `payment_intent_id`, for settling a refund or a
    /// dispute of its charge; `None` when no credited top-up has that PaymentIntent.
    pub async fn paid_top_up_of_payment(
        &mut self,
        payment_intent_id: &str,
    ) -> Result<Option<CreditTopUp>, LedgerError> {
        let row = credit_top_up::Entity::find()
            .filter(credit_top_up::Column::PaymentIntentId.eq(payment_intent_id))
            .filter(credit_top_up::Column::Status.eq(TopUpStatus::Succeeded.as_str()))
            .one(self.conn())
            .await?;
        row.map(CreditTopUp::try_from).transpose()
    }

    /// Records the refund a settlement applied to a top-up's charge.
    pub async fn set_top_up_refunded(&mut self, id: &str, refunded_amount: i64) -> Result<(), LedgerError> {
        let at = self.at();
        credit_top_up::Entity::update_many()
            .col_expr(credit_top_up::Column::RefundedAmount, Expr::value(refunded_amount))
            .col_expr(credit_top_up::Column::UpdatedAt, Expr::value(at))
            .filter(credit_top_up::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Ends a pending top-up without credits and pauses auto top-up with the reason.
    /// Returns it, or `None` when it was not pending any more.
    pub async fn end_top_up(
        &mut self,
        id: &str,
        payment_intent_id: Option<&str>,
        end: &TopUpEnd,
    ) -> Result<Option<CreditTopUp>, LedgerError> {
        let at = self.at();
        let (status, message) = match end {
            TopUpEnd::Failed(message) => (TopUpStatus::Failed, message),
            TopUpEnd::RequiresAction(message) => (TopUpStatus::RequiresAction, message),
        };
        let message: String = message.chars().take(500).collect();
        let Some(top_up) = self.finish_pending(id, status, payment_intent_id, Some(&message)).await? else {
            return Ok(None);
        };
        auto_top_up::Entity::update_many()
            .col_expr(
                auto_top_up::Column::PausedReason,
                Expr::value(format!(
                    "the last top-up {}: {message}",
                    match status {
                        TopUpStatus::RequiresAction => "needs the customer to authenticate",
                        _ => "failed",
                    }
                )),
            )
            .col_expr(auto_top_up::Column::UpdatedAt, Expr::value(at))
            .filter(auto_top_up::Column::OrganizationId.eq(&top_up.organization_id))
            .exec(self.conn())
            .await?;
        self.arm_top_up(&top_up.organization_id).await?;
        Ok(Some(top_up))
    }

    /// Moves a pending top-up to `status` (once: `None` when it was not pending any
    /// more, another report of the payment having ended it first), with its PaymentIntent
    /// and Stripe's message, and locks its organization for the rest of the ending.
    async fn finish_pending(
        &mut self,
        id: &str,
        status: TopUpStatus,
        payment_intent_id: Option<&str>,
        failure_message: Option<&str>,
    ) -> Result<Option<CreditTopUp>, LedgerError> {
        let updated = credit_top_up::Entity::update_many()
            .col_expr(credit_top_up::Column::Status, Expr::value(status.as_str()))
            .col_expr(credit_top_up::Column::PaymentIntentId, Expr::value(payment_intent_id))
            .col_expr(credit_top_up::Column::FailureMessage, Expr::value(failure_message))
            .col_expr(credit_top_up::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(credit_top_up::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(credit_top_up::Column::UpdatedAt, Expr::value(self.at()))
            .filter(credit_top_up::Column::Id.eq(id))
            .filter(credit_top_up::Column::Status.eq(TopUpStatus::Pending.as_str()))
            .exec_with_returning(self.conn())
            .await?;
        let Some(top_up) = updated.into_iter().next() else { return Ok(None) };
        self.lock([top_up.organization_id.as_str()]).await?;
        CreditTopUp::try_from(top_up).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_at_midnight_utc() {
        let at: DateTime<Utc> = "2026-12-06T13:05:00Z".parse().unwrap();
        assert_eq!(month_start(at), "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
