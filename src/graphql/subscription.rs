//! Subscriptions: live balances and low-balance warnings, from committed changes only.
//!
//! What they deliver is read from the database by a [`Follower`]; live events only say
//! when to read (see `ledger::events`).

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures::Stream;

use super::context::{Access, scope};
use super::errors::ApiError;
use super::scalars::{Credits, DateTime};
use super::views::CreditBalance;
use crate::ledger::events::{Followed, Follower};
use crate::ledger::{Balance, Ledger, MAX_CREDITS};
use crate::metrics::LiveSubscription;

/// A warning that an organization's balance went below its threshold.
#[derive(SimpleObject, Clone)]
pub struct LowBalanceEvent {
    /// The organization.
    pub organization_id: ID,
    /// The balance now.
    pub balance: Credits,
    /// The threshold it is below.
    pub threshold: Credits,
    /// The transaction that crossed it; null for the warning at subscription start or a
    /// raised threshold.
    pub transaction_id: Option<ID>,
    /// When the balance became low (commit time), or now for the first warning.
    pub occurred_at: DateTime,
}

/// The root subscription type.
#[derive(Default)]
pub struct Subscription;

/// Whether `balance` is low against `threshold` ("low" means strictly below).
fn is_low(balance: i64, threshold: Option<i64>) -> bool {
    threshold.is_some_and(|threshold| balance < threshold)
}

#[Subscription]
impl Subscription {
    /// Every committed change of the organization's balance, in commit order.
    async fn credit_balance_changed(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = CreditBalance> + use<>> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let ledger = ctx.data_unchecked::<Ledger>().clone();
        // Subscribe before reading the starting point, so nothing falls in between.
        let receiver = ledger.events().subscribe(&organization_id);
        // Every database read of these streams is boxed (here, in the follower, in
        // `balance_after` and `held_changed`): async-graphql keeps this function's future
        // inside the subscription's stream for its whole life, at its largest size, and an
        // idle subscriber should hold only its wait for a hint (10,000 are the target).
        let start = Box::pin(ledger.balance(&organization_id)).await.map_err(ApiError::from)?;
        let follower = Follower::new(ledger.clone(), organization_id, receiver, start.version);
        let live = LiveSubscription::start("creditBalanceChanged");
        let changes =
            futures::stream::unfold((follower, start, ledger), |(mut follower, mut current, ledger)| async move {
                loop {
                    match follower.next().await? {
                        Followed::Changed { seq, balance, at, .. } => {
                            current = Box::pin(balance_after(&ledger, current, seq, balance, at)).await;
                            return Some((CreditBalance(current.clone()), (follower, current, ledger)));
                        }
                        Followed::Held { .. } => {
                            let Some(now) = Box::pin(held_changed(&ledger, &current)).await else { continue };
                            current = now;
                            return Some((CreditBalance(current.clone()), (follower, current, ledger)));
                        }
                        Followed::Threshold { .. } => continue,
                    }
                }
            });
        Ok(futures::StreamExt::map(changes, move |change| {
            let _counted = &live;
            change
        }))
    }

    /// Warns when the organization's balance is below `threshold` (else its configured
    /// threshold): once at once if it already is, then once per change that takes it from
    /// not low to low.
    async fn low_balance(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        threshold: Option<Credits>,
    ) -> async_graphql::Result<impl Stream<Item = LowBalanceEvent> + use<>> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        if let Some(Credits(value)) = threshold
            && !(0..=MAX_CREDITS).contains(&value)
        {
            return Err(ApiError::BadUserInput(format!("threshold must be between 0 and {MAX_CREDITS}")).into());
        }
        let ledger = ctx.data_unchecked::<Ledger>().clone();
        let receiver = ledger.events().subscribe(&organization_id);
        let organization = Box::pin(ledger.organization(&organization_id))
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("organization"))?;
        let fixed = threshold.map(|Credits(value)| value);
        let watched = fixed.or(organization.low_balance_threshold);
        if watched.is_none() {
            return Err(ApiError::BadUserInput(
                "give a threshold: the organization has no low-balance threshold configured".into(),
            )
            .into());
        }
        let start = Box::pin(ledger.balance(&organization_id)).await.map_err(ApiError::from)?;
        // "Low" compares what is available (held and expired credits are not).
        let balance = start.available;
        let was_low = is_low(balance, watched);
        let first = was_low.then(|| LowBalanceEvent {
            organization_id: ID(organization_id.clone()),
            balance: Credits(balance),
            threshold: Credits(watched.unwrap_or_default()),
            transaction_id: None,
            occurred_at: DateTime(ledger.now()),
        });
        let follower = Follower::new(ledger.clone(), organization_id.clone(), receiver, start.version);
        // Without a threshold argument the organization's is followed, re-read from the
        // database whenever it may have changed (a hint, a lag, a lost `LISTEN`).
        let follower = match fixed {
            Some(_) => follower,
            None => follower.with_threshold(organization.low_balance_threshold),
        };
        let watch =
            LowBalanceWatch { follower, ledger, current: start, organization_id, fixed, watched, balance, was_low };
        let crossings = futures::stream::unfold(watch, |mut watch| async move {
            let event = watch.next_crossing().await?;
            Some((event, watch))
        });
        let live = LiveSubscription::start("lowBalance");
        Ok(futures::StreamExt::map(futures::StreamExt::chain(futures::stream::iter(first), crossings), move |event| {
            let _counted = &live;
            event
        }))
    }
}

/// The balance right after committed change `seq` (`balance` after it, at `at`): what of
/// it is not available (held, or expired and not yet written) is taken from the balance
/// as the database has it now, which is exact for the latest change; on a database
/// hiccup, the previous figures carry over.
async fn balance_after(
    ledger: &Ledger,
    previous: Balance,
    seq: i64,
    balance: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Balance {
    let now = ledger.balance(&previous.organization_id).await.unwrap_or_else(|_| previous.clone());
    let unavailable = now.balance - now.available;
    Balance { balance, version: seq, updated_at: at, available: balance - unavailable, ..now }
}

/// The balance now, if only its held credits differ from `previous` (a hold created,
/// released or expired). When transactions were committed since, their own steps carry
/// the change, in order, so nothing is delivered here.
async fn held_changed(ledger: &Ledger, previous: &Balance) -> Option<Balance> {
    // A database hiccup must not lose the step: read again, backing off, a few times.
    let mut attempt = 0u32;
    let now = loop {
        match ledger.balance(&previous.organization_id).await {
            Ok(now) => break now,
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, "live events: held-credits read failed; retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(_) => return None,
        }
    };
    let differs = now.held != previous.held || now.available != previous.available;
    (now.version == previous.version && differs).then_some(now)
}

/// The state of one `lowBalance` subscription.
struct LowBalanceWatch {
    follower: Follower,
    ledger: Ledger,
    /// The balance as last delivered.
    current: Balance,
    organization_id: String,
    /// The threshold given as argument, if any; else the organization's is followed.
    fixed: Option<i64>,
    watched: Option<i64>,
    balance: i64,
    was_low: bool,
}

impl LowBalanceWatch {
    /// Waits for the next change that takes the balance from not low to low.
    async fn next_crossing(&mut self) -> Option<LowBalanceEvent> {
        loop {
            let (transaction_id, at) = match self.follower.next().await? {
                Followed::Changed { seq, balance, transaction_id, at } => {
                    self.current = Box::pin(balance_after(&self.ledger, self.current.clone(), seq, balance, at)).await;
                    self.balance = self.current.available;
                    (Some(transaction_id), at)
                }
                // A threshold given as argument ignores the organization's setting.
                Followed::Threshold { threshold, at } if self.fixed.is_none() => {
                    self.watched = threshold;
                    (None, at)
                }
                Followed::Held { at } => {
                    let Some(now) = Box::pin(held_changed(&self.ledger, &self.current)).await else { continue };
                    self.current = now;
                    self.balance = self.current.available;
                    (None, at)
                }
                Followed::Threshold { .. } => continue,
            };
            let low = is_low(self.balance, self.watched);
            let crossed = low && !self.was_low;
            self.was_low = low;
            if crossed {
                return Some(LowBalanceEvent {
                    organization_id: ID(self.organization_id.clone()),
                    balance: Credits(self.balance),
                    threshold: Credits(self.watched.unwrap_or_default()),
                    transaction_id: transaction_id.map(ID),
                    occurred_at: DateTime(at),
                });
            }
        }
    }
}
