//! Usage reports in GraphQL: `creditUsage`, what an organization's credits went to per
//! hour, day, week or month of a time zone, optionally split by reference type or API
//! key. The ledger computes the report (`ledger::read::usage`); this file maps names.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};

use super::context::{Access, scope};
use super::errors::ApiError;
use super::scalars::{Credits, DateTime};
use crate::ledger::{self, Ledger, UsageQuery, UsageTotals};

/// The most buckets one report returns, over all its groups: a report split into many
/// groups is refused rather than answered with a response of unbounded size.
const MAX_TOTAL_BUCKETS: usize = 20_000;

/// How long each bucket of a usage report is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "ledger::UsageInterval")]
pub enum UsageInterval {
    /// An hour.
    Hour,
    /// A calendar day of the time zone (23 or 25 hours when daylight saving changes).
    Day,
    /// A week from Monday.
    Week,
    /// A calendar month.
    Month,
}

/// How a usage report splits its buckets.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "ledger::UsageGroupBy")]
pub enum UsageGroupBy {
    /// By the transactions' `referenceType` (`group` null for none).
    ReferenceType,
    /// By the API key that made them (`group` null for admin, Stripe and system entries).
    ApiKey,
}

/// What transactions add up to. Credit sums are positive numbers.
#[derive(SimpleObject)]
pub struct CreditUsageTotals {
    /// Credits of `CONSUMPTION` transactions (captures included).
    consumed: Credits,
    /// Credits of `PURCHASE`, `GRANT` and positive `ADJUSTMENT` transactions.
    added: Credits,
    /// Credits of `EXPIRY` and `VOID` transactions.
    expired: Credits,
    /// Credits of `REFUND` transactions.
    refunded: Credits,
    /// Transactions of every kind.
    transactions: i32,
}

impl From<UsageTotals> for CreditUsageTotals {
    fn from(totals: UsageTotals) -> Self {
        Self {
            consumed: Credits(totals.consumed),
            added: Credits(totals.added),
            expired: Credits(totals.expired),
            refunded: Credits(totals.refunded),
            transactions: i32::try_from(totals.transactions).unwrap_or(i32::MAX),
        }
    }
}

/// One bucket of a usage report: the transactions created in `[start, next start)`.
#[derive(SimpleObject)]
pub struct CreditUsageBucket {
    /// Its first instant.
    start: DateTime,
    /// The reference type or API key id it holds when the report is split (null: none).
    group: Option<String>,
    /// What its transactions add up to.
    #[graphql(flatten)]
    totals: CreditUsageTotals,
}

/// Where an organization's credits went over `[from, to)`.
#[derive(SimpleObject)]
pub struct CreditUsageReport {
    /// First instant covered.
    from: DateTime,
    /// First instant not covered.
    to: DateTime,
    /// Bucket length.
    interval: UsageInterval,
    /// The IANA time zone whose calendar the buckets follow.
    time_zone: String,
    /// In order of start (then group), empty ones included.
    buckets: Vec<CreditUsageBucket>,
    /// Over the whole range.
    totals: CreditUsageTotals,
}

/// The usage report query.
#[derive(Default)]
pub struct UsageReportQuery;

#[Object]
impl UsageReportQuery {
    /// What the organization's transactions created in `[from, to)` add up to, per
    /// `interval` of `timeZone` (default `UTC`), optionally split. At most 744 buckets
    /// per group.
    #[allow(clippy::too_many_arguments)] // the contract's arguments
    async fn credit_usage(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        from: DateTime,
        to: DateTime,
        interval: UsageInterval,
        time_zone: Option<String>,
        group_by: Option<UsageGroupBy>,
    ) -> Result<CreditUsageReport, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let time_zone = time_zone.unwrap_or_else(|| "UTC".to_owned());
        let query = UsageQuery {
            organization_id,
            from: from.0,
            to: to.0,
            interval: interval.into(),
            time_zone: UsageQuery::time_zone(&time_zone)?,
            group_by: group_by.map(Into::into),
        };
        let ledger = ctx.data_unchecked::<Ledger>();
        // An unknown organization is NOT_FOUND, not an empty report.
        ledger.balance(&query.organization_id).await?;
        let report = ledger.usage(&query).await?;
        if report.buckets.len() > MAX_TOTAL_BUCKETS {
            return Err(ApiError::BadUserInput(format!(
                "the report would have {} buckets (at most {MAX_TOTAL_BUCKETS}): narrow the range or the interval",
                report.buckets.len()
            )));
        }
        let buckets = report
            .buckets
            .into_iter()
            .map(|bucket| CreditUsageBucket {
                start: DateTime(bucket.start),
                group: bucket.group,
                totals: bucket.totals.into(),
            })
            .collect();
        Ok(CreditUsageReport { from, to, interval, time_zone, buckets, totals: report.totals.into() })
    }
}
