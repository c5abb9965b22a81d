//! Usage reports: what an organization's transactions add up to per hour, day, week or
//! month of a time zone's calendar, optionally split by reference type or API key.
//!
//! A report reads the usage rollup (`credit_usage`, kept by the write path in the same
//! transaction as the transactions it sums; see `write/flush.rs`), not the transactions:
//! a month of a million transactions is a few thousand rollup rows. The rollup counts per
//! 15-minute slot of UTC, and every boundary of a report (its `from` and `to`, and each
//! local midnight or hour) normally falls on a slot's edge; the rare slot a boundary cuts
//! (a `from` of 12:07, a historic local mean time) is read from its transactions
//! instead, so the sums are exact either way.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use entity::credit_transaction;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement};

use crate::model::{SLOT_SECS, slot_of};
use crate::{Ledger, LedgerError, TransactionKind, UsageTotals};

/// The most buckets a report has per group.
pub const MAX_BUCKETS: usize = 744;

/// How long each bucket is, in the report's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageInterval {
    /// An hour of real time.
    Hour,
    /// A calendar day (23 or 25 hours when daylight saving changes).
    Day,
    /// A week from Monday.
    Week,
    /// A calendar month.
    Month,
}

/// How buckets are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroupBy {
    /// By the transactions' `reference_type`.
    ReferenceType,
    /// By the API key that made them.
    ApiKey,
}

/// What to report.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    /// Whose transactions.
    pub organization_id: String,
    /// From this instant (inclusive).
    pub from: DateTime<Utc>,
    /// To this instant (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket length.
    pub interval: UsageInterval,
    /// The calendar buckets follow.
    pub time_zone: Tz,
    /// How buckets are split, if at all.
    pub group_by: Option<UsageGroupBy>,
}

impl UsageQuery {
    /// The time zone named `name` (IANA), or why not.
    pub fn time_zone(name: &str) -> Result<Tz, LedgerError> {
        Tz::from_str(name).map_err(|_| LedgerError::InvalidInput(format!("unknown time zone {name:?}")))
    }
}

/// One bucket of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBucket {
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// The reference type or API key it holds, when split (none: transactions without).
    pub group: Option<String>,
    /// What its transactions add up to.
    pub totals: UsageTotals,
}

/// A report: buckets in order of start (then group), every one present, and the totals.
#[derive(Clone, Debug)]
pub struct UsageReport {
    /// One per interval (and group).
    pub buckets: Vec<UsageBucket>,
    /// Over the whole range.
    pub totals: UsageTotals,
}

impl Ledger {
    /// What the organization's transactions created in `[from, to)` add up to, per
    /// bucket. More than [`MAX_BUCKETS`] buckets, or an empty range, is
    /// [`LedgerError::InvalidInput`].
    pub async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, LedgerError> {
        let edges = boundaries(query)?;
        let slot = Duration::seconds(SLOT_SECS);
        // The slots a boundary cuts: read from their transactions.
        let cut: BTreeSet<DateTime<Utc>> =
            edges.iter().filter(|edge| slot_of(**edge) != **edge).map(|edge| slot_of(*edge)).collect();
        let mut groups: BTreeMap<Option<String>, Vec<UsageTotals>> = BTreeMap::new();
        let mut count = |at: DateTime<Utc>, group: Option<String>, totals: &UsageTotals| {
            // The bucket holding `at`: the last edge at or before it.
            let index = edges.partition_point(|edge| *edge <= at) - 1;
            groups.entry(group).or_insert_with(|| vec![UsageTotals::default(); edges.len() - 1])[index].add(totals);
        };
        let group_of = |reference_type: String, api_key_id: String| {
            let group = match query.group_by {
                None => return None,
                Some(UsageGroupBy::ReferenceType) => reference_type,
                Some(UsageGroupBy::ApiKey) => api_key_id,
            };
            (!group.is_empty()).then_some(group)
        };
        // The database adds up the slots wholly inside each bucket, bucket by bucket (one
        // statement, an index range per bucket): a year of slots never leaves it.
        let group_column = match query.group_by {
            None => "''",
            Some(UsageGroupBy::ReferenceType) => "u.reference_type",
            Some(UsageGroupBy::ApiKey) => "u.api_key_id",
        };
        let backend = self.db.get_database_backend();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        let mut placeholder = |value: sea_orm::Value, cast: &str| {
            values.push(value);
            match backend {
                DbBackend::Postgres => format!("${}::{cast}", values.len()),
                _ => "?".to_owned(),
            }
        };
        let mut ranges = Vec::with_capacity(edges.len());
        for (index, pair) in edges.windows(2).enumerate() {
            // Slots wholly inside the bucket: from the first slot edge at or after its
            // start to the last one at or before its end.
            let (from, to) = (slot_of(pair[0] + slot - Duration::microseconds(1)), slot_of(pair[1]));
            if from < to {
                let index = placeholder((index as i64).into(), "bigint");
                ranges.push(format!(
                    "({index}, {}, {})",
                    placeholder(from.into(), "timestamptz"),
                    placeholder(to.into(), "timestamptz")
                ));
            }
        }
        // After the ranges: SQLite's `?` are numbered in the order they appear.
        let organization = placeholder(query.organization_id.clone().into(), "text");
        if !ranges.is_empty() {
            let sql = format!(
                "SELECT b.column1 AS bucket, {group_column} AS grp, CAST(SUM(u.consumed) AS BIGINT) AS consumed, \
                 CAST(SUM(u.added) AS BIGINT) AS added, CAST(SUM(u.expired) AS BIGINT) AS expired, \
                 CAST(SUM(u.refunded) AS BIGINT) AS refunded, CAST(SUM(u.transactions) AS BIGINT) AS transactions \
                 FROM (VALUES {}) AS b JOIN credit_usage u ON u.organization_id = {organization} \
                 AND u.slot_start >= b.column2 AND u.slot_start < b.column3 GROUP BY b.column1{grouped}",
                ranges.join(", "),
                grouped = if query.group_by.is_some() { format!(", {group_column}") } else { String::new() },
            );
            let rows = self.db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
            for row in rows {
                let bucket: i64 = row.try_get("", "bucket")?;
                let group: String = row.try_get("", "grp")?;
                let sum = |column: &str| row.try_get::<i64>("", column);
                let totals = UsageTotals {
                    consumed: sum("consumed")?,
                    added: sum("added")?,
                    expired: sum("expired")?,
                    refunded: sum("refunded")?,
                    transactions: sum("transactions")?,
                };
                let at = edges[usize::try_from(bucket).unwrap_or_default()];
                count(at, (!group.is_empty()).then_some(group), &totals);
            }
        }
        if !cut.is_empty() {
            use credit_transaction::Column;
            let slots = cut.iter().fold(Condition::any(), |any, start| {
                any.add(Condition::all().add(Column::CreatedAt.gte(*start)).add(Column::CreatedAt.lt(*start + slot)))
            });
            let rows: Vec<CutRow> = credit_transaction::Entity::find()
                .select_only()
                .columns([Column::Kind, Column::Amount, Column::ReferenceType, Column::ApiKeyId, Column::CreatedAt])
                .filter(Column::OrganizationId.eq(&query.organization_id))
                .filter(Column::CreatedAt.gte(query.from))
                .filter(Column::CreatedAt.lt(query.to))
                .filter(slots)
                .into_tuple()
                .all(&self.db)
                .await?;
            for (kind, amount, reference_type, api_key_id, created_at) in rows {
                let mut totals = UsageTotals::default();
                totals.count(TransactionKind::parse(&kind)?, amount);
                count(
                    created_at,
                    group_of(reference_type.unwrap_or_default(), api_key_id.unwrap_or_default()),
                    &totals,
                );
            }
        }
        if groups.is_empty() {
            groups.insert(None, vec![UsageTotals::default(); edges.len() - 1]);
        }
        let mut totals = UsageTotals::default();
        let mut buckets = Vec::with_capacity(groups.len() * (edges.len() - 1));
        for (index, start) in edges[..edges.len() - 1].iter().enumerate() {
            for (group, sums) in &groups {
                totals.add(&sums[index]);
                buckets.push(UsageBucket { start: *start, group: group.clone(), totals: sums[index] });
            }
        }
        Ok(UsageReport { buckets, totals })
    }
}

/// A transaction of a cut slot: kind, amount, reference type, key, creation time.
type CutRow = (String, i64, Option<String>, Option<String>, DateTime<Utc>);

/// The edges of a report's buckets: `from`, each interval's first instant in the time
/// zone after it, and `to`.
fn boundaries(query: &UsageQuery) -> Result<Vec<DateTime<Utc>>, LedgerError> {
    if query.from >= query.to {
        return Err(LedgerError::InvalidInput("from must be before to".into()));
    }
    let zone = query.time_zone;
    let mut edges = vec![query.from];
    let local = query.from.with_timezone(&zone).naive_local();
    let mut start = match query.interval {
        UsageInterval::Hour => local.date().and_hms_opt(local.hour(), 0, 0),
        UsageInterval::Day => local.date().and_hms_opt(0, 0, 0),
        UsageInterval::Week => {
            let monday = local.date() - Duration::days(i64::from(local.weekday().num_days_from_monday()));
            monday.and_hms_opt(0, 0, 0)
        }
        UsageInterval::Month => {
            NaiveDate::from_ymd_opt(local.year(), local.month(), 1).and_then(|day| day.and_hms_opt(0, 0, 0))
        }
    }
    .ok_or_else(|| LedgerError::InvalidInput("from is out of range".into()))?;
    // Hours are counted in real time (a repeated hour is its own bucket); days, weeks
    // and months on the calendar.
    let mut instant = resolve(zone, start)?;
    loop {
        instant = match query.interval {
            UsageInterval::Hour => instant + Duration::hours(1),
            interval => {
                start = next(start, interval)?;
                resolve(zone, start)?
            }
        };
        if instant >= query.to {
            break;
        }
        if instant > query.from {
            edges.push(instant);
        }
        if edges.len() > MAX_BUCKETS {
            return Err(LedgerError::InvalidInput(format!("a report has at most {MAX_BUCKETS} buckets per group")));
        }
    }
    edges.push(query.to);
    Ok(edges)
}

fn next(start: NaiveDateTime, interval: UsageInterval) -> Result<NaiveDateTime, LedgerError> {
    let next = match interval {
        UsageInterval::Hour => start.checked_add_signed(Duration::hours(1)),
        UsageInterval::Day => start.checked_add_signed(Duration::days(1)),
        UsageInterval::Week => start.checked_add_signed(Duration::weeks(1)),
        UsageInterval::Month => start.checked_add_months(chrono::Months::new(1)),
    };
    next.ok_or_else(|| LedgerError::InvalidInput("to is out of range".into()))
}

/// The instant a local time names: the earlier of a repeated time, and for a time
/// skipped by a change of offset, the first instant after the gap.
fn resolve(zone: Tz, local: NaiveDateTime) -> Result<DateTime<Utc>, LedgerError> {
    let mut probe = local;
    for _ in 0..=16 {
        match zone.from_local_datetime(&probe) {
            // After a gap, the first local time that exists is where the gap ends (gaps
            // are whole quarter hours).
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => return Ok(at.with_timezone(&Utc)),
            LocalResult::None => probe += Duration::minutes(15),
        }
    }
    Err(LedgerError::InvalidInput("a local time could not be placed in the time zone".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: &str, to: &str, interval: UsageInterval, zone: &str) -> UsageQuery {
        UsageQuery {
            organization_id: "org".into(),
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            interval,
            time_zone: UsageQuery::time_zone(zone).unwrap(),
            group_by: None,
        }
    }

    fn hours(edges: &[DateTime<Utc>]) -> Vec<i64> {
        edges.windows(2).map(|pair| (pair[1] - pair[0]).num_hours()).collect()
    }

    #[test]
    fn days_follow_daylight_saving() {
        // Europe/Berlin: clocks go forward on 2026-03-29 and back on 2026-10-25.
        let spring = query("2026-03-27T23:00:00Z", "2026-03-31T22:00:00Z", UsageInterval::Day, "Europe/Berlin");
        assert_eq!(hours(&boundaries(&spring).unwrap()), [24, 23, 24, 24]);
        let autumn = query("2026-10-23T22:00:00Z", "2026-10-27T23:00:00Z", UsageInterval::Day, "Europe/Berlin");
        assert_eq!(hours(&boundaries(&autumn).unwrap()), [24, 25, 24, 24]);
        let hourly = query("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", UsageInterval::Hour, "Europe/Berlin");
        assert_eq!(boundaries(&hourly).unwrap().len() - 1, 25);
    }

    #[test]
    fn a_range_is_cut_at_its_ends_and_months_are_calendar_months() {
        let months = query("2026-01-15T00:00:00Z", "2026-04-01T00:00:00Z", UsageInterval::Month, "UTC");
        let edges = boundaries(&months).unwrap();
        let expected: Vec<DateTime<Utc>> =
            ["2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]
                .iter()
                .map(|at| at.parse().unwrap())
                .collect();
        assert_eq!(edges, expected);
        let weeks = query("2026-12-02T00:00:00Z", "2026-12-15T00:00:00Z", UsageInterval::Week, "UTC");
        // Wednesday, then Mondays 7 and 14.
        assert_eq!(hours(&boundaries(&weeks).unwrap()), [120, 168, 24]);
    }

    #[test]
    fn bad_ranges_and_zones_are_refused() {
        let backwards = query("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z", UsageInterval::Day, "UTC");
        assert!(matches!(boundaries(&backwards), Err(LedgerError::InvalidInput(_))));
        let too_long = query("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", UsageInterval::Hour, "UTC");
        assert!(matches!(boundaries(&too_long), Err(LedgerError::InvalidInput(_))));
        let longest = query("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", UsageInterval::Hour, "UTC");
        assert_eq!(boundaries(&longest).unwrap().len() - 1, 744);
        assert!(UsageQuery::time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn a_midnight_skipped_by_daylight_saving_starts_the_day_when_the_gap_ends() {
        // America/Santiago skipped 2026-09-06 00:00 (clocks went from 00:00 to 01:00).
        let day = query("2026-09-05T04:00:00Z", "2026-09-07T03:00:00Z", UsageInterval::Day, "America/Santiago");
        let edges = boundaries(&day).unwrap();
        assert_eq!(edges[1], "2026-09-06T04:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
