//! The decision step: given an organization's state, locked, what one change does to it.
//!
//! Pure functions over plain values, so that a batch of requests is decided in memory,
//! one after another, against the state the previous one left, and the results written
//! once (see `write/` and `committer.rs`). Every rule about what a balance,
//! a lot or a hold may become lives here and only here; the database's `CHECK`s are the
//! second line.
//!
//! # The model
//! Credits live in **lots** (one per grant, purchase or adjustment). `balance` is the sum
//! of the organization's transactions, which is the sum of its lots' `remaining` minus
//! the overdraft **debt** (credits drawn beyond the lots). **Holds** reserve credits in
//! lots (raising their `held`) or in the overdraft, without changing the balance.
//! `available = balance − held`; `spendable = available + overdraft_limit`.
//!
//! Time enters only as the `at` each operation is given: every operation first
//! [`settle`]s the state up to `at` (lots past `expires_at` lose their unheld remainder
//! as `EXPIRY` entries dated at that instant, holds past their TTL are released), so no
//! change is ever decided against credits that have already expired.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::{
    Allocation, CreditLot, EventType, HoldStatus, LedgerError, LotSpec, LotStatus, MAX_CREDITS, TransactionKind, new_id,
};

/// What the decision knows of one active hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCredits {
    /// `hld_…`
    pub id: String,
    /// Credits reserved.
    pub amount: i64,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// Where the credits are reserved (positive amounts).
    pub allocations: Vec<Allocation>,
}

/// How a hold was resolved in this decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `hld_…`
    pub id: String,
    /// Captured, released or expired.
    pub status: HoldStatus,
    /// Credits captured (for a capture).
    pub captured: Option<i64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the decision needs to know of an organization, as locked for this transaction.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    /// The sum of its transactions.
    pub balance: i64,
    /// Changes so far: the sequence number of the latest transaction.
    pub version: i64,
    /// How far below zero the balance may go.
    pub overdraft_limit: i64,
    /// Credits reserved by active holds.
    pub held: i64,
    /// Every lot with a `remaining` above zero, and those created or changed here. Only
    /// [`State::add_lot`] and the decisions here change them, so that `facts` stay true.
    lots: Vec<CreditLot>,
    /// What is kept up to date about `lots` as they change.
    facts: LotFacts,
    /// Active holds.
    pub holds: Vec<HeldCredits>,
    /// Entries decided and not yet taken by the caller, in sequence order.
    pub entries: Vec<Entry>,
    /// Lots created by this decision (ids).
    pub created_lots: BTreeSet<String>,
    /// Lots changed by this decision (ids), created ones included.
    pub changed_lots: BTreeSet<String>,
    /// Holds created by this decision.
    pub created_holds: Vec<HeldCredits>,
    /// Holds resolved by this decision.
    pub resolved_holds: Vec<Resolved>,
}

/// Facts about a state's lots, kept up to date as the lots change, so that a change costs
/// the lots it touches and not a walk over every open lot (an organization granted
/// credits one at a time holds tens of thousands). Debug builds check them against the
/// walks they replace ([`State::check_facts`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct LotFacts {
    /// The sum of the lots' `remaining`.
    remaining: i64,
    /// The soonest `expires_at` of an active lot.
    soonest_expiry: Option<DateTime<Utc>>,
    /// Whether the lots are in draw order.
    sorted: bool,
    /// The lowest and highest `seq` of the lots changed since they were last taken.
    touched: Option<(i64, i64)>,
    /// Whether a lot may have nothing left (to be let go when changes are taken).
    emptied: bool,
    /// The lowest `seq` of the lots.
    lowest_seq: Option<i64>,
}

/// One decided entry of the organization's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `ctx_…`
    pub id: String,
    /// Its sequence number (the version after it).
    pub seq: i64,
    /// Why.
    pub kind: TransactionKind,
    /// The signed change.
    pub amount: i64,
    /// The balance right after it.
    pub balance_after: i64,
    /// Its date (the instant of an expiry; otherwise the transaction's time).
    pub at: DateTime<Utc>,
    /// The lots it changed, summing to `amount`.
    pub allocations: Vec<Allocation>,
    /// The hold it captured.
    pub hold_id: Option<String>,
    /// A description the decision wrote (expiries and releases); the caller's otherwise.
    pub description: Option<String>,
}

impl State {
    /// An organization's state with these figures and no lots or holds yet.
    pub fn new(balance: i64, version: i64, overdraft_limit: i64, held: i64) -> Self {
        Self { balance, version, overdraft_limit, held, ..Self::default() }
    }

    /// The lots: every one with a `remaining` above zero, and those changed here.
    pub fn lots(&self) -> &[CreditLot] {
        &self.lots
    }

    /// Adds a lot, read from the database or created by a decision.
    pub fn add_lot(&mut self, lot: CreditLot) {
        let facts = &mut self.facts;
        facts.sorted = self.lots.last().is_none_or(|last| facts.sorted && last.draw_key() <= lot.draw_key());
        facts.remaining += lot.remaining;
        facts.emptied |= lot.remaining == 0;
        facts.lowest_seq = Some(facts.lowest_seq.map_or(lot.seq, |lowest| lowest.min(lot.seq)));
        if lot.status == LotStatus::Active
            && let Some(at) = lot.expires_at
        {
            facts.soonest_expiry = Some(facts.soonest_expiry.map_or(at, |soonest| soonest.min(at)));
        }
        self.lots.push(lot);
    }

    /// The lots this decision created and those it changed otherwise, to be written; then
    /// they are no longer changes, and lots with nothing left are let go.
    ///
    /// The changed lots are looked for from both ends of the lots at once, until all are
    /// found: a draw changes the first lots in draw order and a grant adds one at the end,
    /// so an organization granted credits one at a time (tens of thousands of open lots)
    /// pays for the lots its change touched, not for a walk over all of them. A lot
    /// changed in the middle still costs a walk to it. They are returned in the lots' order.
    pub fn take_lot_changes(&mut self) -> (Vec<CreditLot>, Vec<CreditLot>) {
        let (mut created, mut changed) = (Vec::new(), Vec::new());
        if let Some((low, high)) = self.facts.touched.take() {
            // Every created lot is a changed one too.
            let wanted = self.changed_lots.len();
            let is_changed = |lot: &CreditLot| (low..=high).contains(&lot.seq) && self.changed_lots.contains(&lot.id);
            let mut found = Vec::with_capacity(wanted);
            let (mut front, mut back) = (0, self.lots.len());
            while front < back && found.len() < wanted {
                if is_changed(&self.lots[front]) {
                    found.push(front);
                }
                front += 1;
                if front < back && found.len() < wanted {
                    back -= 1;
                    if is_changed(&self.lots[back]) {
                        found.push(back);
                    }
                }
            }
            found.sort_unstable();
            for lot in found.into_iter().map(|index| &self.lots[index]) {
                self.facts.emptied |= lot.remaining == 0;
                if self.created_lots.contains(&lot.id) {
                    created.push(lot.clone());
                } else {
                    changed.push(lot.clone());
                }
            }
        }
        self.created_lots.clear();
        self.changed_lots.clear();
        if std::mem::take(&mut self.facts.emptied) {
            let mut lowest: Option<i64> = None;
            self.lots.retain(|lot| {
                let open = lot.remaining > 0;
                if open {
                    lowest = Some(lowest.map_or(lot.seq, |seq| seq.min(lot.seq)));
                }
                open
            });
            self.facts.lowest_seq = lowest;
        }
        self.check_facts();
        (created, changed)
    }

    /// Where reading the open lots will start once changes are taken
    /// ([`State::take_lot_changes`]): the oldest open lot's `seq`, or past the latest change
    /// when none is open (a lot formed later has a higher `seq`; lots only ever empty, so
    /// none below reopens).
    pub fn open_lots_from(&self) -> i64 {
        self.facts.lowest_seq.unwrap_or(self.version + 1)
    }

    /// Debug builds: the kept facts are what walking the lots gives.
    fn check_facts(&self) {
        debug_assert_eq!(self.facts.remaining, self.lots.iter().map(|lot| lot.remaining).sum::<i64>());
        debug_assert_eq!(
            self.facts.soonest_expiry,
            self.lots.iter().filter(|lot| lot.status == LotStatus::Active).filter_map(|lot| lot.expires_at).min()
        );
        debug_assert!(!self.facts.sorted || self.lots.is_sorted_by(|a, b| a.draw_key() <= b.draw_key()));
        debug_assert_eq!(self.facts.lowest_seq, self.lots.iter().map(|lot| lot.seq).min());
    }

    /// A lot's `remaining` went down by `amount`.
    fn took(&mut self, amount: i64) {
        self.facts.remaining -= amount;
    }

    /// A lot that expired at `expires_at` is no longer active (its status already says so).
    fn ended(&mut self, expires_at: Option<DateTime<Utc>>) {
        if expires_at.is_some() && expires_at == self.facts.soonest_expiry {
            self.facts.soonest_expiry =
                self.lots.iter().filter(|lot| lot.status == LotStatus::Active).filter_map(|lot| lot.expires_at).min();
        }
    }

    /// Credits drawn beyond the lots and not paid back yet.
    pub fn debt(&self) -> i64 {
        self.check_facts();
        self.facts.remaining - self.balance
    }

    /// `balance − held`.
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }

    /// What a consume or hold may take now: `available + overdraft_limit`.
    pub fn spendable(&self) -> i64 {
        self.available() + self.overdraft_limit
    }

    /// The soonest future expiry among active lots, with the unheld remainder that
    /// would expire then (lots expiring at the same instant add up).
    pub fn next_expiration(&self) -> Option<(DateTime<Utc>, i64)> {
        let at = self.lots.iter().filter(|lot| lot.unheld() > 0).filter_map(|lot| lot.expires_at).min()?;
        let amount = self.lots.iter().filter(|lot| lot.expires_at == Some(at)).map(CreditLot::unheld).sum();
        Some((at, amount))
    }

    /// The earliest instant at which [`settle`] will have something to do.
    pub fn next_event(&self) -> Option<DateTime<Utc>> {
        self.facts.soonest_expiry.into_iter().chain(self.holds.iter().map(|hold| hold.expires_at)).min()
    }

    fn lot_mut(&mut self, id: &str) -> Option<&mut CreditLot> {
        self.lots.iter_mut().find(|lot| lot.id == id)
    }

    fn insufficient(&self, required: i64) -> LedgerError {
        LedgerError::InsufficientCredits { balance: self.balance, available: self.available(), required }
    }

    /// Records an entry of `amount` (never zero) and advances the version.
    fn record(
        &mut self,
        kind: TransactionKind,
        amount: i64,
        at: DateTime<Utc>,
        allocations: Vec<Allocation>,
        description: Option<String>,
    ) -> Entry {
        debug_assert_ne!(amount, 0);
        debug_assert_eq!(allocations.iter().map(|a| a.amount).sum::<i64>(), amount);
        self.balance += amount;
        self.version += 1;
        let entry = Entry {
            id: new_id("ctx"),
            seq: self.version,
            kind,
            amount,
            balance_after: self.balance,
            at,
            allocations,
            hold_id: None,
            description,
        };
        self.entries.push(entry.clone());
        entry
    }

    /// Plans drawing `amount` from the lots in draw order, then the overdraft; the
    /// caller has checked that it is spendable.
    fn plan_draw(&mut self, amount: i64) -> Vec<Allocation> {
        // The lots are kept in draw order (the key never changes), so a batch sorts them
        // once, not once per request.
        if !self.facts.sorted {
            self.lots.sort_by(|a, b| a.draw_key().cmp(&b.draw_key()));
            self.facts.sorted = true;
        }
        let mut left = amount;
        let mut plan = Vec::new();
        for lot in self.lots.iter().filter(|lot| lot.unheld() > 0) {
            if left == 0 {
                break;
            }
            let take = left.min(lot.unheld());
            plan.push(Allocation { lot_id: Some(lot.id.clone()), amount: take });
            left -= take;
        }
        if left > 0 {
            plan.push(Allocation { lot_id: None, amount: left });
        }
        plan
    }

    /// Marks lot `lot_id` (of sequence number `seq`) as changed here.
    fn touch(&mut self, lot_id: &str, seq: i64) {
        self.changed_lots.insert(lot_id.to_owned());
        let (low, high) = self.facts.touched.get_or_insert((seq, seq));
        *low = (*low).min(seq);
        *high = (*high).max(seq);
    }
}

fn check_amount(amount: i64) -> Result<(), LedgerError> {
    if amount <= 0 || amount > MAX_CREDITS {
        return Err(LedgerError::InvalidInput(format!("amount must be between 1 and {MAX_CREDITS}, got {amount}")));
    }
    Ok(())
}

/// Where an organization stands, as far as balance alerts care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// `balance − held`.
    pub available: i64,
    /// `available + overdraft_limit`.
    pub spendable: i64,
    /// The low-balance threshold, if any.
    pub threshold: Option<i64>,
}

impl Standing {
    /// Where `state` stands, with `threshold`.
    pub fn of(state: &State, threshold: Option<i64>) -> Self {
        let available = state.available();
        Self { available, spendable: available + state.overdraft_limit, threshold }
    }
}

/// The balance alerts one committed change raises, from where the organization stood
/// before it to where it stands after: `low` when `available` falls from at least the
/// threshold to below it (a threshold raised above `available` counts), `depleted` when
/// `spendable` falls from above zero to zero or below, `recovered` the other way.
pub fn alerts(before: Standing, after: Standing) -> Vec<EventType> {
    let mut raised = Vec::new();
    if let Some(threshold) = after.threshold {
        let was_low = before.threshold.is_some_and(|before_threshold| before.available < before_threshold);
        if after.available < threshold && !was_low {
            raised.push(EventType::BalanceLow);
        }
    }
    if before.spendable > 0 && after.spendable <= 0 {
        raised.push(EventType::BalanceDepleted);
    }
    if before.spendable <= 0 && after.spendable > 0 {
        raised.push(EventType::BalanceRecovered);
    }
    raised
}

/// Brings the state up to `at`: each lot whose `expires_at` has come loses its unheld
/// remainder as an `EXPIRY` entry dated at that instant, and each hold whose TTL has run
/// out is released (`EXPIRED`), in the order these happened.
pub fn settle(state: &mut State, at: DateTime<Utc>) {
    let lot_due = state.facts.soonest_expiry.is_some_and(|soonest| soonest <= at);
    if !lot_due && state.holds.iter().all(|hold| hold.expires_at > at) {
        return;
    }
    loop {
        let lot = state
            .lots
            .iter()
            .filter(|lot| lot.status == LotStatus::Active)
            .filter_map(|lot| Some((lot.expires_at?, lot.seq, lot.id.clone())))
            .filter(|(expires_at, ..)| *expires_at <= at)
            .min();
        let hold = state
            .holds
            .iter()
            .filter(|hold| hold.expires_at <= at)
            .map(|hold| (hold.expires_at, hold.id.clone()))
            .min();
        match (lot, hold) {
            (Some((lot_at, _, lot_id)), hold) if hold.as_ref().is_none_or(|(hold_at, _)| lot_at <= *hold_at) => {
                expire_lot(state, &lot_id, lot_at);
            }
            (_, Some((hold_at, hold_id))) => {
                let _ = release_hold(state, &hold_id, hold_at, HoldStatus::Expired);
            }
            _ => return,
        }
    }
}

fn expire_lot(state: &mut State, lot_id: &str, expires_at: DateTime<Utc>) {
    let Some(lot) = state.lot_mut(lot_id) else { return };
    // A lot created after its own expiry (a reinstated dispute) expires as it is created.
    let at = expires_at.max(lot.created_at);
    let unheld = lot.unheld();
    lot.status = LotStatus::Expired;
    lot.remaining -= unheld;
    let (seq, expired) = (lot.seq, lot.expires_at);
    state.took(unheld);
    state.ended(expired);
    state.touch(lot_id, seq);
    if unheld > 0 {
        let allocation = Allocation { lot_id: Some(lot_id.to_owned()), amount: -unheld };
        let description = Some(format!("Expiry of lot {lot_id}"));
        state.record(TransactionKind::Expiry, -unheld, at, vec![allocation], description);
    }
}

/// Decides a draw of `amount` credits (a consumption): from the lots in draw order,
/// then the overdraft; or why not (`state` untouched but for settling).
pub fn consume(state: &mut State, at: DateTime<Utc>, amount: i64) -> Result<Entry, LedgerError> {
    check_amount(amount)?;
    settle(state, at);
    if amount > state.spendable() {
        return Err(state.insufficient(amount));
    }
    let plan = state.plan_draw(amount);
    let allocations = apply_draw(state, &plan);
    Ok(state.record(TransactionKind::Consumption, -amount, at, allocations, None))
}

/// Takes `plan` out of the lots (lowering `remaining`); returns the allocations, negative.
fn apply_draw(state: &mut State, plan: &[Allocation]) -> Vec<Allocation> {
    for part in plan {
        if let Some(lot_id) = &part.lot_id
            && let Some(lot) = state.lot_mut(lot_id)
        {
            lot.remaining -= part.amount;
            let depleted = lot.remaining == 0 && lot.status == LotStatus::Active;
            if depleted {
                lot.status = LotStatus::Depleted;
            }
            let (seq, expires_at) = (lot.seq, lot.expires_at);
            state.took(part.amount);
            if depleted {
                state.ended(expires_at);
            }
            state.touch(lot_id, seq);
        }
    }
    plan.iter().map(|part| Allocation { lot_id: part.lot_id.clone(), amount: -part.amount }).collect()
}

/// Decides credits entering the balance (grant, purchase, adjustment) as a new lot; the
/// overdraft debt is paid first. Returns the entry and the new lot's id.
pub fn credit(
    state: &mut State,
    at: DateTime<Utc>,
    kind: TransactionKind,
    amount: i64,
    spec: &LotSpec,
    organization_id: &str,
) -> Result<(Entry, String), LedgerError> {
    check_amount(amount)?;
    settle(state, at);
    if state.balance > MAX_CREDITS - amount {
        return Err(LedgerError::BalanceLimitExceeded { max: MAX_CREDITS });
    }
    let settled = state.debt().min(amount);
    let lot_id = new_id("lot");
    let mut allocations = Vec::new();
    if settled > 0 {
        allocations.push(Allocation { lot_id: None, amount: settled });
    }
    if amount > settled {
        allocations.push(Allocation { lot_id: Some(lot_id.clone()), amount: amount - settled });
    }
    let entry = state.record(kind, amount, at, allocations, None);
    let seq = entry.seq;
    state.add_lot(CreditLot {
        id: lot_id.clone(),
        organization_id: organization_id.to_owned(),
        category: spec.category,
        priority: spec.priority,
        original: amount,
        remaining: amount - settled,
        held: 0,
        expires_at: spec.expires_at,
        status: if amount > settled { LotStatus::Active } else { LotStatus::Depleted },
        source_transaction_id: entry.id.clone(),
        seq: entry.seq,
        created_at: at,
    });
    state.created_lots.insert(lot_id.clone());
    state.touch(&lot_id, seq);
    // An expiry already past (a reinstated dispute) takes effect at once.
    settle(state, at);
    Ok((entry, lot_id))
}

/// Decides a clawback of up to `wanted` credits from a purchase's own lots (a refund or
/// dispute): never more than their unheld remainder, never the balance below zero.
/// `None` (a purchase from before lots) draws from every lot in draw order. Returns the
/// `REFUND` entry (if anything was taken), what was taken and the shortfall.
pub fn clawback(
    state: &mut State,
    at: DateTime<Utc>,
    lots: Option<&[String]>,
    wanted: i64,
) -> (Option<Entry>, i64, i64) {
    settle(state, at);
    let wanted = wanted.max(0);
    let own = |lot: &&CreditLot| lots.is_none_or(|lots| lots.contains(&lot.id));
    let room: i64 = state.lots.iter().filter(own).map(CreditLot::unheld).sum();
    let taken = wanted.min(room).min(state.balance.max(0));
    if taken == 0 {
        return (None, 0, wanted);
    }
    let mut order: Vec<&CreditLot> = state.lots.iter().filter(own).filter(|lot| lot.unheld() > 0).collect();
    order.sort_by(|a, b| a.draw_key().cmp(&b.draw_key()));
    let mut left = taken;
    let mut plan = Vec::new();
    for lot in order {
        let take = left.min(lot.unheld());
        if take > 0 {
            plan.push(Allocation { lot_id: Some(lot.id.clone()), amount: take });
            left -= take;
        }
    }
    let allocations = apply_draw(state, &plan);
    let entry = state.record(TransactionKind::Refund, -taken, at, allocations, None);
    (Some(entry), taken, wanted - taken)
}

/// Decides voiding a lot: its unheld remainder leaves as a `VOID` entry, and it is never
/// drawn again. A voided or expired lot is left as it is (no entry). The lot must be in
/// the state (the caller loads it).
pub fn void(state: &mut State, at: DateTime<Utc>, lot_id: &str) -> Result<Option<Entry>, LedgerError> {
    settle(state, at);
    let lot = state.lot_mut(lot_id).ok_or(LedgerError::NotFound("credit lot"))?;
    if matches!(lot.status, LotStatus::Voided | LotStatus::Expired) {
        return Ok(None);
    }
    let unheld = lot.unheld();
    let was_active = lot.status == LotStatus::Active;
    lot.status = LotStatus::Voided;
    lot.remaining -= unheld;
    let (seq, expires_at) = (lot.seq, lot.expires_at);
    state.took(unheld);
    if was_active {
        state.ended(expires_at);
    }
    state.touch(lot_id, seq);
    if unheld == 0 {
        return Ok(None);
    }
    let allocation = Allocation { lot_id: Some(lot_id.to_owned()), amount: -unheld };
    Ok(Some(state.record(TransactionKind::Void, -unheld, at, vec![allocation], None)))
}

/// Decides a hold of `amount` credits: reserved in the lots in draw order, then in the
/// overdraft, if spendable; the balance does not change.
pub fn hold(
    state: &mut State,
    at: DateTime<Utc>,
    amount: i64,
    expires_at: DateTime<Utc>,
) -> Result<HeldCredits, LedgerError> {
    check_amount(amount)?;
    settle(state, at);
    if amount > state.spendable() {
        return Err(state.insufficient(amount));
    }
    let plan = state.plan_draw(amount);
    for part in &plan {
        if let Some(lot_id) = &part.lot_id
            && let Some(lot) = state.lot_mut(lot_id)
        {
            lot.held += part.amount;
            let seq = lot.seq;
            state.touch(lot_id, seq);
        }
    }
    state.held += amount;
    let hold = HeldCredits { id: new_id("hld"), amount, expires_at, allocations: plan };
    state.holds.push(hold.clone());
    state.created_holds.push(hold.clone());
    Ok(hold)
}

/// Ends an active hold without capturing: its credits go back to their lots, and those
/// in an expired or voided lot leave at once (an `EXPIRY` or `VOID` entry per lot).
pub fn release_hold(
    state: &mut State,
    hold_id: &str,
    at: DateTime<Utc>,
    status: HoldStatus,
) -> Result<Vec<Entry>, LedgerError> {
    let index = state.holds.iter().position(|hold| hold.id == hold_id).ok_or(LedgerError::NotFound("credit hold"))?;
    let hold = state.holds.remove(index);
    state.held -= hold.amount;
    let entries = unreserve(state, &hold.allocations, at);
    state.resolved_holds.push(Resolved { id: hold.id, status, captured: None, at });
    Ok(entries)
}

/// Gives reserved credits back to their lots; those of a lot that has ended leave.
fn unreserve(state: &mut State, allocations: &[Allocation], at: DateTime<Utc>) -> Vec<Entry> {
    let mut entries = Vec::new();
    for part in allocations {
        let Some(lot_id) = &part.lot_id else { continue };
        let Some(lot) = state.lot_mut(lot_id) else { continue };
        lot.held -= part.amount;
        let ended = match lot.status {
            LotStatus::Expired => Some(TransactionKind::Expiry),
            LotStatus::Voided => Some(TransactionKind::Void),
            LotStatus::Active | LotStatus::Depleted => None,
        };
        let seq = lot.seq;
        state.touch(lot_id, seq);
        if let Some(kind) = ended {
            if let Some(lot) = state.lot_mut(lot_id) {
                lot.remaining -= part.amount;
                state.took(part.amount);
            }
            let allocation = Allocation { lot_id: Some(lot_id.clone()), amount: -part.amount };
            let description = Some(format!("Released hold credits of ended lot {lot_id}"));
            entries.push(state.record(kind, -part.amount, at, vec![allocation], description));
        }
    }
    entries
}

/// Decides capturing an active hold for `amount` credits (the whole hold when `None`):
/// one `CONSUMPTION` entry; less releases the rest, more draws the excess in draw order
/// (or fails with [`LedgerError::InsufficientCredits`], the hold staying active).
pub fn capture(state: &mut State, at: DateTime<Utc>, hold_id: &str, amount: Option<i64>) -> Result<Entry, LedgerError> {
    settle(state, at);
    let index = state.holds.iter().position(|hold| hold.id == hold_id).ok_or(LedgerError::NotFound("credit hold"))?;
    let amount = amount.unwrap_or(state.holds[index].amount);
    check_amount(amount)?;
    let excess = amount - state.holds[index].amount;
    // The excess must be spendable besides what the hold already reserves.
    if excess > 0 && excess > state.spendable() {
        return Err(state.insufficient(excess));
    }
    let hold = state.holds.remove(index);
    state.held -= hold.amount;
    // Take from the hold's own reservations in their order; release what is left.
    let mut left = amount;
    let mut taken = Vec::new();
    let mut released = Vec::new();
    for part in &hold.allocations {
        let take = left.min(part.amount);
        left -= take;
        if take > 0 {
            taken.push(Allocation { lot_id: part.lot_id.clone(), amount: take });
        }
        if part.amount > take {
            released.push(Allocation { lot_id: part.lot_id.clone(), amount: part.amount - take });
        }
    }
    for part in &taken {
        if let Some(lot_id) = &part.lot_id
            && let Some(lot) = state.lot_mut(lot_id)
        {
            lot.held -= part.amount;
        }
    }
    let mut allocations = apply_draw(state, &taken);
    if left > 0 {
        let plan = state.plan_draw(left);
        allocations.extend(apply_draw(state, &plan));
    }
    let allocations = merge(allocations);
    let mut entry = state.record(TransactionKind::Consumption, -amount, at, allocations, None);
    entry.hold_id = Some(hold.id.clone());
    if let Some(last) = state.entries.last_mut() {
        last.hold_id = Some(hold.id.clone());
    }
    unreserve(state, &released, at);
    state.resolved_holds.push(Resolved { id: hold.id, status: HoldStatus::Captured, captured: Some(amount), at });
    Ok(entry)
}

/// One allocation per lot (and one for the overdraft), in first-seen order.
fn merge(allocations: Vec<Allocation>) -> Vec<Allocation> {
    let mut merged: Vec<Allocation> = Vec::new();
    for part in allocations {
        match merged.iter_mut().find(|seen| seen.lot_id == part.lot_id) {
            Some(seen) => seen.amount += part.amount,
            None => merged.push(part),
        }
    }
    merged
}

/// Decides a new overdraft limit: never below the current debt (plus what holds reserve
/// in the overdraft), which is refused with the debt.
pub fn set_overdraft_limit(state: &mut State, at: DateTime<Utc>, limit: i64) -> Result<(), LedgerError> {
    settle(state, at);
    if !(0..=MAX_CREDITS).contains(&limit) {
        return Err(LedgerError::InvalidInput(format!("limit must be between 0 and {MAX_CREDITS}, got {limit}")));
    }
    // What holds reserve in the overdraft will be owed when captured: a capture must
    // never take the balance below the floor, so the limit covers it too.
    let reserved: i64 = state
        .holds
        .iter()
        .flat_map(|hold| &hold.allocations)
        .filter(|part| part.lot_id.is_none())
        .map(|part| part.amount)
        .sum();
    let debt = state.debt() + reserved;
    if limit < debt {
        return Err(LedgerError::OverdraftBelowDebt { debt });
    }
    state.overdraft_limit = limit;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    #[test]
    fn alerts_fire_on_crossings_only() {
        let at = |available: i64, overdraft: i64, threshold: Option<i64>| Standing {
            available,
            spendable: available + overdraft,
            threshold,
        };
        let low = Some(100);
        assert_eq!(alerts(at(150, 0, low), at(90, 0, low)), [EventType::BalanceLow]);
        assert!(alerts(at(90, 0, low), at(80, 0, low)).is_empty(), "already low");
        assert!(alerts(at(150, 0, None), at(10, 0, None)).is_empty(), "no threshold, no low");
        assert_eq!(alerts(at(50, 0, None), at(50, 0, low)), [EventType::BalanceLow], "a threshold raised above");
        assert_eq!(alerts(at(50, 0, Some(40)), at(50, 0, low)), [EventType::BalanceLow], "raised past available");
        assert!(alerts(at(50, 0, Some(60)), at(50, 0, low)).is_empty(), "low before and after");
        assert_eq!(alerts(at(5, 0, low), at(0, 0, low)), [EventType::BalanceDepleted]);
        assert_eq!(alerts(at(150, 0, low), at(0, 0, low)), [EventType::BalanceLow, EventType::BalanceDepleted]);
        assert!(alerts(at(5, 10, None), at(0, 10, None)).is_empty(), "overdraft still spendable");
        assert_eq!(alerts(at(-5, 10, None), at(-10, 10, None)), [EventType::BalanceDepleted]);
        assert_eq!(alerts(at(0, 0, None), at(10, 0, None)), [EventType::BalanceRecovered], "a first credit");
        assert!(alerts(at(10, 0, None), at(20, 0, None)).is_empty());
    }

    use super::*;
    use crate::LotCategory;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn spec(category: LotCategory, priority: i32, expires: Option<i64>) -> LotSpec {
        LotSpec { category, priority, expires_at: expires.map(t) }
    }

    fn grant(state: &mut State, amount: i64, spec: &LotSpec) -> String {
        credit(state, t(0), TransactionKind::Grant, amount, spec, "org_1").unwrap().1
    }

    fn check(state: &State) {
        for lot in state.lots() {
            assert!(0 <= lot.held && lot.held <= lot.remaining && lot.remaining <= lot.original, "{lot:?}");
        }
        assert!(state.debt() >= 0, "debt {}", state.debt());
        assert!(state.balance >= -state.overdraft_limit);
        let lot_held: i64 = state.lots().iter().map(|lot| lot.held).sum();
        let od_held: i64 =
            state.holds.iter().flat_map(|h| &h.allocations).filter(|a| a.lot_id.is_none()).map(|a| a.amount).sum();
        assert_eq!(state.held, lot_held + od_held);
        assert_eq!(state.held, state.holds.iter().map(|h| h.amount).sum::<i64>());
        assert_eq!(state.balance, state.entries.iter().map(|e| e.amount).sum::<i64>());
        for entry in &state.entries {
            assert_eq!(entry.allocations.iter().map(|a| a.amount).sum::<i64>(), entry.amount);
        }
    }

    #[test]
    fn lot_changes_are_found_at_either_end_and_in_the_middle() {
        let paid = spec(LotCategory::Paid, 50, None);
        let mut state = State::default();
        let lots: Vec<String> = (0..200).map(|_| grant(&mut state, 2, &paid)).collect();
        let ids = |lots: &[CreditLot]| lots.iter().map(|lot| lot.id.clone()).collect::<Vec<_>>();
        let (created, changed) = state.take_lot_changes();
        assert_eq!((ids(&created), changed.len()), (lots.clone(), 0), "all created, in order");
        assert_eq!(state.open_lots_from(), 1);
        // A grant adds one at the end; a consume of 3 empties the first lot and draws on the second.
        let newest = grant(&mut state, 5, &paid);
        consume(&mut state, t(1), 3).unwrap();
        let (created, changed) = state.take_lot_changes();
        assert_eq!(ids(&created), [newest]);
        assert_eq!(ids(&changed), [lots[0].clone(), lots[1].clone()]);
        assert_eq!(state.lots().len(), 200, "the emptied lot is let go");
        assert_eq!(state.open_lots_from(), 2, "the oldest open lot is the second");
        // A lot in the middle, voided.
        void(&mut state, t(2), &lots[120]).unwrap();
        let (created, changed) = state.take_lot_changes();
        assert!(created.is_empty());
        assert_eq!(ids(&changed), [lots[120].clone()]);
        assert!(state.lots().iter().all(|lot| lot.id != lots[120]));
        // Nothing changed: nothing taken.
        assert_eq!(state.take_lot_changes(), (Vec::new(), Vec::new()));
        // Every lot emptied: reading would start past the latest change.
        let all = state.balance;
        consume(&mut state, t(3), all).unwrap();
        let (_, changed) = state.take_lot_changes();
        assert_eq!(changed.len(), 199);
        assert!(state.lots().is_empty());
        assert_eq!(state.open_lots_from(), state.version + 1);
    }

    #[test]
    fn draw_order_is_priority_expiry_category_creation() {
        let mut state = State::default();
        let paid_late = grant(&mut state, 10, &spec(LotCategory::Paid, 50, None));
        let promo_late = grant(&mut state, 10, &spec(LotCategory::Promotional, 50, None));
        let expiring_far = grant(&mut state, 10, &spec(LotCategory::Paid, 50, Some(2000)));
        let expiring_soon = grant(&mut state, 10, &spec(LotCategory::Paid, 50, Some(1000)));
        let urgent = grant(&mut state, 10, &spec(LotCategory::Paid, 10, None));
        let promo_second = grant(&mut state, 10, &spec(LotCategory::Promotional, 50, None));
        let entry = consume(&mut state, t(1), 55).unwrap();
        let order: Vec<_> = entry.allocations.iter().map(|a| (a.lot_id.clone().unwrap(), a.amount)).collect();
        assert_eq!(
            order,
            vec![
                (urgent, -10),
                (expiring_soon, -10),
                (expiring_far, -10),
                (promo_late, -10),
                (promo_second, -10),
                (paid_late, -5)
            ]
        );
        check(&state);
    }

    #[test]
    fn refusals_leave_the_state_and_overdraft_draws_null_lot() {
        let mut state = State::default();
        grant(&mut state, 10, &spec(LotCategory::Promotional, 50, None));
        let before = state.clone();
        assert!(matches!(
            consume(&mut state, t(1), 11),
            Err(LedgerError::InsufficientCredits { balance: 10, available: 10, required: 11 })
        ));
        assert_eq!(state, before);
        set_overdraft_limit(&mut state, t(1), 5).unwrap();
        let entry = consume(&mut state, t(1), 13).unwrap();
        assert_eq!(entry.allocations.last(), Some(&Allocation { lot_id: None, amount: -3 }));
        assert_eq!((state.balance, state.debt()), (-3, 3));
        assert!(matches!(set_overdraft_limit(&mut state, t(1), 2), Err(LedgerError::OverdraftBelowDebt { debt: 3 })));
        let (entry, lot) =
            credit(&mut state, t(2), TransactionKind::Grant, 10, &spec(LotCategory::Paid, 50, None), "o").unwrap();
        assert_eq!(
            entry.allocations,
            vec![Allocation { lot_id: None, amount: 3 }, Allocation { lot_id: Some(lot.clone()), amount: 7 }]
        );
        assert_eq!(state.debt(), 0);
        assert_eq!(state.lots().iter().find(|l| l.id == lot).unwrap().remaining, 7);
        check(&state);
    }

    #[test]
    fn expiry_is_an_entry_dated_at_the_instant_before_any_later_change() {
        let mut state = State::default();
        let soon = grant(&mut state, 10, &spec(LotCategory::Promotional, 50, Some(100)));
        grant(&mut state, 5, &spec(LotCategory::Paid, 50, None));
        assert_eq!(state.next_expiration(), Some((t(100), 10)));
        assert!(consume(&mut state, t(101), 6).is_err());
        let expiry = state.entries.iter().find(|e| e.kind == TransactionKind::Expiry).unwrap();
        assert_eq!((expiry.amount, expiry.at), (-10, t(100)));
        assert_eq!(expiry.allocations, vec![Allocation { lot_id: Some(soon), amount: -10 }]);
        assert_eq!(state.available(), 5);
        check(&state);
    }

    #[test]
    fn holds_reserve_capture_less_or_more_and_release() {
        let mut state = State::default();
        let a = grant(&mut state, 10, &spec(LotCategory::Promotional, 10, None));
        let b = grant(&mut state, 10, &spec(LotCategory::Paid, 50, None));
        let held = hold(&mut state, t(1), 15, t(900)).unwrap();
        assert_eq!((state.balance, state.held, state.available()), (20, 15, 5));
        assert!(matches!(hold(&mut state, t(1), 6, t(900)), Err(LedgerError::InsufficientCredits { .. })));
        // More than held, beyond what is spendable: refused, hold stays.
        assert!(capture(&mut state, t(2), &held.id, Some(21)).is_err());
        assert_eq!(state.holds.len(), 1);
        let entry = capture(&mut state, t(2), &held.id, Some(18)).unwrap();
        assert_eq!(
            entry.allocations,
            vec![Allocation { lot_id: Some(a.clone()), amount: -10 }, Allocation { lot_id: Some(b), amount: -8 }]
        );
        assert_eq!(entry.hold_id.as_deref(), Some(held.id.as_str()));
        assert_eq!((state.balance, state.held), (2, 0));
        assert!(matches!(capture(&mut state, t(3), &held.id, None), Err(LedgerError::NotFound(_))));
        let small = hold(&mut state, t(3), 2, t(900)).unwrap();
        capture(&mut state, t(4), &small.id, Some(1)).unwrap();
        assert_eq!((state.balance, state.held, state.available()), (1, 0, 1));
        check(&state);
    }

    #[test]
    fn held_credits_of_an_expired_lot_stay_capturable_and_expire_at_release() {
        let mut state = State::default();
        let lot = grant(&mut state, 10, &spec(LotCategory::Promotional, 50, Some(100)));
        let first = hold(&mut state, t(1), 4, t(1000)).unwrap();
        let second = hold(&mut state, t(1), 3, t(1000)).unwrap();
        settle(&mut state, t(200));
        assert_eq!((state.balance, state.held), (7, 7));
        capture(&mut state, t(201), &first.id, Some(2)).unwrap();
        let expiries: Vec<_> = state.entries.iter().filter(|e| e.kind == TransactionKind::Expiry).collect();
        assert_eq!(expiries.iter().map(|e| (e.amount, e.at)).collect::<Vec<_>>(), vec![(-3, t(100)), (-2, t(201))]);
        release_hold(&mut state, &second.id, t(202), HoldStatus::Released).unwrap();
        assert_eq!((state.balance, state.held), (0, 0));
        let lot = state.lots().iter().find(|l| l.id == lot).unwrap();
        assert_eq!((lot.remaining, lot.held, lot.status), (0, 0, LotStatus::Expired));
        check(&state);
    }

    #[test]
    fn a_hold_past_its_ttl_is_released_and_its_credits_available_again() {
        let mut state = State::default();
        grant(&mut state, 10, &spec(LotCategory::Promotional, 50, None));
        let held = hold(&mut state, t(1), 10, t(1) + Duration::seconds(60)).unwrap();
        assert_eq!(state.available(), 0);
        settle(&mut state, t(61));
        assert_eq!(state.available(), 10);
        assert_eq!(state.resolved_holds.last().map(|r| (r.id.clone(), r.status)), Some((held.id, HoldStatus::Expired)));
        check(&state);
    }

    #[test]
    fn voids_and_clawbacks_take_only_the_unheld_remainder_of_their_lot() {
        let mut state = State::default();
        let purchase =
            credit(&mut state, t(0), TransactionKind::Purchase, 10, &spec(LotCategory::Paid, 50, None), "o").unwrap().1;
        let other = grant(&mut state, 10, &spec(LotCategory::Promotional, 50, None));
        hold(&mut state, t(1), 12, t(900)).unwrap();
        // The promotional lot is drawn first, so the purchase lot has 8 unheld.
        let (entry, taken, shortfall) = clawback(&mut state, t(2), Some(std::slice::from_ref(&purchase)), 10);
        assert_eq!((taken, shortfall), (8, 2));
        assert_eq!(entry.unwrap().allocations, vec![Allocation { lot_id: Some(purchase), amount: -8 }]);
        assert_eq!(void(&mut state, t(3), &other).unwrap(), None, "all of it is held");
        assert_eq!(void(&mut state, t(3), &other).unwrap(), None);
        check(&state);
    }
}
