//! [`LedgerTx`]: one database transaction of the ledger, owning what it has locked,
//! what it will write and the live-event hints it will announce once it commits.
//!
//! Every balance change goes through [`LedgerTx::change`] (or [`LedgerTx::clawback`],
//! [`LedgerTx::void_lot`], …): the organization's balance row is locked once, with its
//! open lots and active holds read under that lock (`SELECT … FOR UPDATE` on PostgreSQL,
//! in sorted order so replicas cannot deadlock; SQLite's `BEGIN IMMEDIATE` already holds
//! the whole database), each change is decided in memory by [`super::decide`] against
//! the state the previous one left, and the results are written once at commit: one
//! multi-row `INSERT` of the transactions (and of new lots and holds), one `UPDATE` of
//! the changed lots, and one of the changed balances, each conditional on the version
//! and generation it locked.
//! Callers cannot forget to announce: [`LedgerTx::commit`] does it, after the commit.

mod flush;
mod load;
mod lookups;
mod writes;

pub(crate) use load::load_states;
pub(crate) use writes::{Expect, Writes};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use entity::{credit_balance, credit_hold, credit_lot, credit_transaction};
use sea_orm::{DatabaseTransaction, EntityTrait};

use crate::commit::op::{Done, Op};
use crate::decide::{self, Entry, State};
use crate::events::EventHub;
use crate::model::{allocations_json, parse_allocations};
use crate::outbox::Outbox;
use crate::{Actor, Audit, AuditAction, HoldStatus, LotSpec};
use crate::{Balance, ChangeRequest, CreditLot, CreditTransaction, LedgerError, TransactionKind};
use crate::{CaptureRequest, CreditHold, HoldCaptured, HoldRequest};
use std::sync::Arc;

/// An organization's balance row as locked by this transaction, and its state as decided so far.
struct Locked {
    row: credit_balance::Model,
    state: State,
    /// The low-balance threshold as this transaction leaves it (the row's until changed).
    threshold: Option<i64>,
    /// Below which `available` a change starts a top-up, as this transaction leaves it.
    top_up_below: Option<i64>,
    /// Outgoing events this transaction's callers raised for it (a purchase completed,
    /// say), with what their bodies add; written at commit with the ledger's own.
    raised: Vec<(crate::EventType, serde_json::Map<String, serde_json::Value>)>,
}

/// What a clawback took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clawback {
    /// The `REFUND` transaction, when anything was taken.
    pub transaction: Option<CreditTransaction>,
    /// Credits taken back.
    pub taken: i64,
    /// Credits wanted but already spent, so not recovered.
    pub shortfall: i64,
}

/// A ledger transaction: changes decided under the organizations' locks, written and
/// announced together.
pub struct LedgerTx {
    txn: DatabaseTransaction,
    hub: EventHub,
    at: DateTime<Utc>,
    locked: BTreeMap<String, Locked>,
    /// Organizations looked for and not found.
    missing: BTreeSet<String>,
    /// Transactions decided and not yet written.
    pending: Vec<CreditTransaction>,
    /// Holds created and not yet written, with what the caller said of them.
    pending_holds: Vec<credit_hold::Model>,
    /// Hints to send with the commit.
    outbox: Outbox,
    /// States kept from an earlier transaction, by organization, with the generation
    /// they were written at: used instead of reading lots and holds when the locked row
    /// still shows that generation.
    kept: HashMap<String, KeptState>,
    /// Who acts, for the audit rows of this transaction's audited changes.
    audit: Arc<Audit>,
}

/// An organization's decided state as a committed transaction left it, and the balance
/// row's `generation` it was written at. While the row (read under its lock) still shows
/// that generation, nothing has changed the organization since, and the state is what
/// reading its lots and holds again would give.
#[derive(Debug)]
pub struct KeptState {
    /// The balance row's `generation` when the state was committed.
    pub generation: i64,
    /// The state.
    pub state: State,
}

impl LedgerTx {
    /// Starts a transaction that will write ([`crate::db::begin_write`]), at `at` (the
    /// ledger's clock).
    pub async fn begin(
        db: &sea_orm::DatabaseConnection,
        hub: &EventHub,
        at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        Ok(Self::on(crate::db::begin_write(db).await?, hub, at))
    }

    /// A transaction on `txn`, begun for writing, at `at`.
    pub(crate) fn on(txn: DatabaseTransaction, hub: &EventHub, at: DateTime<Utc>) -> Self {
        Self {
            txn,
            hub: hub.clone(),
            at,
            locked: BTreeMap::new(),
            missing: BTreeSet::new(),
            pending: Vec::new(),
            pending_holds: Vec::new(),
            outbox: Outbox::default(),
            kept: HashMap::new(),
            audit: Audit::shared_system(),
        }
    }

    /// Records this transaction's audited changes as `audit`'s actor's.
    pub fn act_for(&mut self, audit: Arc<Audit>) {
        self.audit = audit;
    }

    /// Records `action` in the audit log with this transaction (see [`Audit`]): about
    /// `organization_id`, done to `target_id`, with `details` (never a secret).
    pub fn audit(
        &mut self,
        organization_id: Option<&str>,
        action: AuditAction,
        target_id: Option<&str>,
        details: serde_json::Value,
    ) {
        let audit = self.audit.clone();
        self.outbox.audit(&audit, self.at, organization_id, action, target_id, details);
    }

    /// The database transaction, for the caller's own statements in the same commit.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// The time every change of this transaction is stamped with.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// Stamps this transaction's changes with `at` instead (once its locks are held).
    /// Only before anything is decided: what was decided keeps its time.
    pub fn restamp(&mut self, at: DateTime<Utc>) {
        if self.pending.is_empty() && self.pending_holds.is_empty() {
            self.at = self.at.max(at);
        }
    }

    /// Offers states kept from earlier transactions; [`LedgerTx::lock`] uses each one whose
    /// organization's row still shows its generation, and reads the rest.
    pub fn offer(&mut self, kept: impl IntoIterator<Item = (String, KeptState)>) {
        self.kept.extend(kept);
    }

    fn locked_mut(&mut self, organization_id: &str) -> Result<&mut Locked, LedgerError> {
        self.locked.get_mut(organization_id).ok_or(LedgerError::OrganizationNotFound)
    }

    /// The organization's balance as this transaction sees it (changes included, expiries
    /// up to now settled).
    pub async fn balance(&mut self, organization_id: &str) -> Result<Balance, LedgerError> {
        self.lock([organization_id]).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        decide::settle(&mut locked.state, at);
        let balance = balance_of(locked, at);
        self.take_entries(organization_id, None);
        Ok(balance)
    }

    /// Decides one change against the organization's locked state: a negative `delta`
    /// draws in draw order, a positive one forms a lot. A refusal
    /// ([`LedgerError::InsufficientCredits`], say) changes nothing but the expiries due,
    /// and leaves the transaction usable for other changes. Returns the transaction, the
    /// balance after it and the lot it formed.
    pub async fn change(
        &mut self,
        request: &ChangeRequest,
    ) -> Result<(CreditTransaction, Balance, Option<String>), LedgerError> {
        self.lock([request.organization_id.as_str()]).await?;
        let at = self.at;
        let locked = self.locked_mut(&request.organization_id)?;
        let decided = if request.delta < 0 {
            decide::consume(&mut locked.state, at, -request.delta).map(|entry| (entry, None))
        } else {
            let default = LotSpec::default();
            let spec = request.lot.as_ref().unwrap_or(&default);
            decide::credit(&mut locked.state, at, request.kind, request.delta, spec, &request.organization_id)
                .map(|(entry, lot)| (entry, Some(lot)))
        };
        let balance = balance_of(locked, at);
        let decided = decided.map(|(entry, lot)| (entry.id, lot));
        let main = decided.as_ref().ok().map(|(id, _)| (id.as_str(), request));
        let transaction = self.take_entries(&request.organization_id, main);
        let (_, lot) = decided?;
        let transaction = transaction.ok_or_else(|| LedgerError::internal("decided entry missing"))?;
        if request.kind == TransactionKind::Grant {
            let audit = request.by.audit.clone().unwrap_or_else(|| self.audit.clone());
            let spec = request.lot.clone().unwrap_or_default();
            let details = serde_json::json!({
                "amount": request.delta,
                "description": request.description,
                "category": spec.category.as_str(),
                "priority": spec.priority,
                "expiresAt": spec.expires_at,
                "idempotencyKey": request.idempotency_key,
                "lotId": lot,
            });
            let organization = Some(request.organization_id.as_str());
            self.outbox.audit(&audit, at, organization, AuditAction::GrantCredits, Some(&transaction.id), details);
        }
        Ok((transaction, balance, lot))
    }

    /// Moves the organization's decided entries to the writes of this transaction; the
    /// entry `main` names gets the request's description, references and key. Returns it.
    fn take_entries(
        &mut self,
        organization_id: &str,
        main: Option<(&str, &ChangeRequest)>,
    ) -> Option<CreditTransaction> {
        let at = self.at;
        let locked = self.locked.get_mut(organization_id)?;
        let mut found = None;
        for entry in std::mem::take(&mut locked.state.entries) {
            let request = main.filter(|(id, _)| *id == entry.id).map(|(_, request)| request);
            let transaction = transaction_of(organization_id, &entry, request, at);
            if request.is_some() {
                found = Some(transaction.clone());
            }
            self.pending.push(transaction);
        }
        found
    }

    /// Takes back up to `wanted` credits as a `REFUND` from the lots formed under
    /// `reference` (a purchase and its reinstated disputes; for a purchase from before
    /// lots, from every lot in draw order), but never more than their unheld remainder
    /// nor the balance below zero: credits already spent are not
    /// recovered, and the shortfall is written in the transaction's description.
    pub async fn clawback(
        &mut self,
        organization_id: &str,
        wanted: i64,
        description: &str,
        reference: (&str, &str),
    ) -> Result<Clawback, LedgerError> {
        self.lock([organization_id]).await?;
        let lots = self.lots_of_reference(organization_id, reference).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        let (entry, taken, shortfall) = decide::clawback(&mut locked.state, at, lots.as_deref(), wanted);
        let description = if shortfall > 0 {
            format!("{description}; {shortfall} credits were already spent and not recovered")
        } else {
            description.to_owned()
        };
        let request = ChangeRequest {
            organization_id: organization_id.to_owned(),
            kind: TransactionKind::Refund,
            delta: -taken,
            description: Some(description),
            reference_type: Some(reference.0.to_owned()),
            reference_id: Some(reference.1.to_owned()),
            idempotency_key: None,
            lot: None,
            by: Actor::default(),
        };
        let main = entry.as_ref().map(|entry| (entry.id.as_str(), &request));
        let transaction = self.take_entries(organization_id, main);
        Ok(Clawback { transaction, taken, shortfall })
    }

    /// Voids a lot: its unheld remainder leaves as a `VOID` transaction. Voiding a voided
    /// (or expired) lot changes nothing. Returns the lot after and the transaction.
    pub async fn void_lot(
        &mut self,
        lot_id: &str,
        description: &str,
    ) -> Result<(CreditLot, Option<CreditTransaction>, Balance), LedgerError> {
        let row = credit_lot::Entity::find_by_id(lot_id.to_owned())
            .one(&self.txn)
            .await?
            .ok_or(LedgerError::NotFound("credit lot"))?;
        let organization_id = row.organization_id.clone();
        self.lock([organization_id.as_str()]).await?;
        let at = self.at;
        let locked = self.locked_mut(&organization_id)?;
        if !locked.state.lots().iter().any(|lot| lot.id == lot_id) {
            // Not open (remaining 0): read again under the lock.
            let row = credit_lot::Entity::find_by_id(lot_id.to_owned())
                .one(&self.txn)
                .await?
                .ok_or(LedgerError::NotFound("credit lot"))?;
            let locked = self.locked_mut(&organization_id)?;
            locked.state.add_lot(CreditLot::try_from(row)?);
        }
        let locked = self.locked_mut(&organization_id)?;
        let entry = decide::void(&mut locked.state, at, lot_id)?;
        let lot = locked.state.lots().iter().find(|lot| lot.id == lot_id).cloned();
        let balance = balance_of(locked, at);
        let request = ChangeRequest {
            organization_id: organization_id.clone(),
            kind: TransactionKind::Void,
            delta: entry.as_ref().map_or(0, |entry| entry.amount),
            description: Some(description.to_owned()),
            reference_type: Some("credit_lot".into()),
            reference_id: Some(lot_id.to_owned()),
            idempotency_key: None,
            lot: None,
            by: Actor::default(),
        };
        let main = entry.as_ref().map(|entry| (entry.id.as_str(), &request));
        let transaction = self.take_entries(&organization_id, main);
        let lot = lot.ok_or(LedgerError::NotFound("credit lot"))?;
        let details = serde_json::json!({ "description": description, "voided": -request.delta });
        self.audit(Some(&organization_id), AuditAction::VoidCreditLot, Some(lot_id), details);
        Ok((lot, transaction, balance))
    }

    /// Sets (or clears) the organization's low-balance threshold, on the organization and
    /// on its balance row; a threshold raised above `available` raises
    /// `credits.balance.low` at commit, and live subscribers hear of it.
    pub async fn set_low_balance_threshold(
        &mut self,
        organization_id: &str,
        threshold: Option<i64>,
    ) -> Result<(crate::Organization, Balance), LedgerError> {
        use sea_orm::{ColumnTrait, QueryFilter};
        self.lock([organization_id]).await?;
        let updated = entity::organization::Entity::update_many()
            .col_expr(entity::organization::Column::LowBalanceThreshold, threshold.into())
            .filter(entity::organization::Column::Id.eq(organization_id))
            .exec_with_returning(&self.txn)
            .await?;
        let organization =
            updated.into_iter().next().map(crate::Organization::from).ok_or(LedgerError::OrganizationNotFound)?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        locked.threshold = threshold;
        let balance = balance_of(locked, at);
        let event = crate::events::BalanceEvent::Threshold { organization_id: organization.id.clone(), threshold, at };
        self.outbox.hint(event.hint());
        let details = serde_json::json!({ "threshold": threshold });
        self.audit(Some(organization_id), AuditAction::SetLowBalanceThreshold, Some(organization_id), details);
        Ok((organization, balance))
    }

    /// Sets below which `available` a change of the (locked) organization starts a
    /// top-up; none: no top-up may start.
    pub(crate) fn set_top_up_below(&mut self, organization_id: &str, below: Option<i64>) -> Result<(), LedgerError> {
        self.locked_mut(organization_id)?.top_up_below = below;
        Ok(())
    }

    /// Raises the outgoing event `kind` about the organization (locking it), its body
    /// carrying `fields` beside the balance as this transaction commits it.
    pub async fn raise(
        &mut self,
        organization_id: &str,
        kind: crate::EventType,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), LedgerError> {
        self.lock([organization_id]).await?;
        self.locked_mut(organization_id)?.raised.push((kind, fields));
        Ok(())
    }

    /// Sets the organization's overdraft limit; below the current debt is refused.
    pub async fn set_overdraft_limit(&mut self, organization_id: &str, limit: i64) -> Result<Balance, LedgerError> {
        self.lock([organization_id]).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        let decided = decide::set_overdraft_limit(&mut locked.state, at, limit);
        let balance = balance_of(locked, at);
        self.take_entries(organization_id, None);
        decided?;
        let details = serde_json::json!({ "limit": limit });
        self.audit(Some(organization_id), AuditAction::SetOverdraftLimit, Some(organization_id), details);
        Ok(balance)
    }

    /// Reserves credits for a new hold (in draw order, then overdraft), if spendable. A
    /// refusal changes nothing but the expiries due.
    pub async fn create_hold(&mut self, request: &HoldRequest) -> Result<(CreditHold, Balance), LedgerError> {
        let organization_id = request.organization_id.as_str();
        self.lock([organization_id]).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        let expires_at = at + chrono::Duration::seconds(request.ttl_seconds);
        let decided = decide::hold(&mut locked.state, at, request.amount, expires_at);
        let balance = balance_of(locked, at);
        self.take_entries(organization_id, None);
        let held = decided?;
        let row = request.row(held.id.clone(), at, allocations_json(&held.allocations));
        self.pending_holds.push(row.clone());
        Ok((CreditHold::from_row(row, held.allocations, at)?, balance))
    }

    /// Captures an active hold (see [`decide::capture`]); a hold that has ended is
    /// answered as a replay of its capture or [`LedgerError::HoldNotActive`].
    pub async fn capture_hold(&mut self, request: &CaptureRequest) -> Result<HoldCaptured, LedgerError> {
        let organization_id = request.organization_id.as_str();
        self.lock([organization_id]).await?;
        let row = self.hold_row(organization_id, &request.hold_id).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        decide::settle(&mut locked.state, at);
        if !locked.state.holds.iter().any(|hold| hold.id == request.hold_id) {
            self.take_entries(organization_id, None);
            let hold = self.hold_as_decided(row).await?;
            if !request.replays(&hold) {
                return Err(LedgerError::HoldNotActive { status: hold.status.as_str() });
            }
            let transaction = self.capture_of(&hold).await?;
            let balance = balance_of(self.locked_mut(organization_id)?, at);
            return Ok(HoldCaptured { hold, transaction, balance, replayed: true });
        }
        let decided = decide::capture(&mut locked.state, at, &request.hold_id, request.amount);
        let balance = balance_of(locked, at);
        let change = ChangeRequest {
            organization_id: organization_id.to_owned(),
            kind: TransactionKind::Consumption,
            delta: decided.as_ref().map_or(0, |entry| entry.amount),
            description: Some(request.description.clone().unwrap_or_else(|| row.description.clone())),
            reference_type: row.reference_type.clone(),
            reference_id: row.reference_id.clone(),
            idempotency_key: None,
            lot: None,
            by: request.by.clone(),
        };
        let main = decided.as_ref().ok().map(|entry| (entry.id.as_str(), &change));
        let transaction = self.take_entries(organization_id, main);
        decided?;
        let transaction = transaction.ok_or_else(|| LedgerError::internal("decided capture missing"))?;
        let hold = self.hold_as_decided(row).await?;
        Ok(HoldCaptured { hold, transaction, balance, replayed: false })
    }

    /// Releases an active hold; a released or expired one is returned as it is, a
    /// captured one is [`LedgerError::HoldNotActive`].
    pub async fn release_hold(
        &mut self,
        organization_id: &str,
        hold_id: &str,
    ) -> Result<(CreditHold, Balance), LedgerError> {
        self.lock([organization_id]).await?;
        let row = self.hold_row(organization_id, hold_id).await?;
        let at = self.at;
        let locked = self.locked_mut(organization_id)?;
        decide::settle(&mut locked.state, at);
        if locked.state.holds.iter().any(|hold| hold.id == hold_id) {
            decide::release_hold(&mut locked.state, hold_id, at, HoldStatus::Released)?;
        }
        let balance = balance_of(locked, at);
        self.take_entries(organization_id, None);
        let hold = self.hold_as_decided(row).await?;
        if hold.status == HoldStatus::Captured {
            return Err(LedgerError::HoldNotActive { status: hold.status.as_str() });
        }
        Ok((hold, balance))
    }

    /// The stored (or just decided) row of an organization's hold.
    async fn hold_row(&self, organization_id: &str, hold_id: &str) -> Result<credit_hold::Model, LedgerError> {
        let row = match self.pending_holds.iter().find(|row| row.id == hold_id) {
            Some(row) => Some(row.clone()),
            None => credit_hold::Entity::find_by_id(hold_id.to_owned()).one(&self.txn).await?,
        };
        row.filter(|row| row.organization_id == organization_id).ok_or(LedgerError::NotFound("credit hold"))
    }

    /// A hold as this transaction leaves it: its stored row with what was decided here.
    async fn hold_as_decided(&self, mut row: credit_hold::Model) -> Result<CreditHold, LedgerError> {
        let state = self.locked.get(&row.organization_id).map(|locked| &locked.state);
        if let Some(resolved) = state.and_then(|state| state.resolved_holds.iter().rev().find(|r| r.id == row.id)) {
            row.status = resolved.status.as_str().to_owned();
            row.captured = resolved.captured;
            row.updated_at = resolved.at;
            row.transaction_id = self
                .pending
                .iter()
                .find(|transaction| transaction.hold_id.as_deref() == Some(row.id.as_str()))
                .map(|transaction| transaction.id.clone());
        }
        let known = state.and_then(|state| {
            state
                .holds
                .iter()
                .chain(&state.created_holds)
                .find(|hold| hold.id == row.id)
                .map(|hold| hold.allocations.clone())
        });
        let allocations = match known {
            Some(allocations) => allocations,
            None => parse_allocations(&row.allocations)?,
        };
        CreditHold::from_row(row, allocations, self.at)
    }

    /// The `CONSUMPTION` transaction that captured `hold` (decided here or stored).
    async fn capture_of(&self, hold: &CreditHold) -> Result<CreditTransaction, LedgerError> {
        if let Some(transaction) =
            self.pending.iter().find(|transaction| transaction.hold_id.as_deref() == Some(hold.id.as_str()))
        {
            return Ok(transaction.clone());
        }
        let id = hold.transaction_id.clone().ok_or_else(|| LedgerError::internal("capture unrecorded"))?;
        credit_transaction::Entity::find_by_id(id)
            .one(&self.txn)
            .await?
            .map(CreditTransaction::try_from)
            .transpose()?
            .ok_or(LedgerError::NotFound("credit transaction"))
    }

    /// Decides one operation of the committer.
    pub async fn apply(&mut self, op: &Op) -> Result<Done, LedgerError> {
        match op {
            Op::Change(request) => {
                self.change(request).await.map(|(transaction, balance, lot)| Done::Changed(transaction, balance, lot))
            }
            Op::CreateHold(request) => self.create_hold(request).await.map(|(hold, balance)| Done::Held(hold, balance)),
            Op::Capture(request) => self.capture_hold(request).await.map(|captured| Done::Captured(Box::new(captured))),
            Op::Release { organization_id, hold_id } => {
                self.release_hold(organization_id, hold_id).await.map(|(hold, balance)| Done::Released(hold, balance))
            }
        }
    }

    /// Writes, commits and announces. Nothing is announced unless the commit succeeded.
    pub async fn commit(self) -> Result<(), LedgerError> {
        self.commit_keeping().await.map(drop)
    }

    /// [`LedgerTx::commit`], returning each locked organization's state as committed,
    /// for a later transaction to be [offered](LedgerTx::offer).
    pub async fn commit_keeping(mut self) -> Result<Vec<(String, KeptState)>, LedgerError> {
        let writes = self.flush().await?;
        self.outbox.commit_with(self.txn, writes, &self.hub).await?;
        Ok(self
            .locked
            .into_iter()
            .map(|(organization_id, locked)| {
                (organization_id, KeptState { generation: locked.row.generation, state: locked.state })
            })
            .collect())
    }

    /// Commits when `result` is a success and rolls back when it is a refusal; answers
    /// `result` (or the commit's failure). Callers of any layer pass their own errors.
    pub async fn finish<T, E: From<LedgerError>>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(done) => {
                self.commit().await?;
                Ok(done)
            }
            Err(error) => {
                self.rollback().await?;
                Err(error)
            }
        }
    }

    /// Abandons everything decided; nothing is written or announced.
    pub async fn rollback(self) -> Result<(), LedgerError> {
        Ok(self.txn.rollback().await?)
    }
}

fn balance_of(locked: &Locked, at: DateTime<Utc>) -> Balance {
    let state = &locked.state;
    let changed = state.version != locked.row.version || state.held != locked.row.held;
    Balance {
        id: locked.row.id.clone(),
        organization_id: locked.row.organization_id.clone(),
        balance: state.balance,
        held: state.held,
        available: state.available(),
        overdraft_limit: state.overdraft_limit,
        version: state.version,
        updated_at: if changed { at } else { locked.row.updated_at },
        next_event_at: state.next_event(),
    }
}

fn transaction_of(
    organization_id: &str,
    entry: &Entry,
    request: Option<&ChangeRequest>,
    _at: DateTime<Utc>,
) -> CreditTransaction {
    CreditTransaction {
        id: entry.id.clone(),
        organization_id: organization_id.to_owned(),
        seq: entry.seq,
        kind: entry.kind,
        amount: entry.amount,
        balance_after: entry.balance_after,
        description: request.map_or_else(|| entry.description.clone(), |request| request.description.clone()),
        reference_type: request.and_then(|request| request.reference_type.clone()),
        reference_id: request.and_then(|request| request.reference_id.clone()),
        idempotency_key: request.and_then(|request| request.idempotency_key.clone()),
        hold_id: entry.hold_id.clone(),
        api_key_id: request.and_then(|request| request.by.api_key_id.clone()),
        client_session_id: request.and_then(|request| request.by.client_session_id.clone()),
        created_at: entry.at,
        allocations: entry.allocations.clone(),
    }
}
