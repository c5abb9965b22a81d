//! The one place where a balance changes.

use chrono::{DateTime, Utc};
use entity::{credit_balance, credit_transaction};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, SqlErr};

use super::events::{BalanceEvent, notify};
use super::{Balance, ChangeRequest, CreditTransaction, LedgerError, MAX_CREDITS, TransactionKind, new_id};

/// Applies one change of balance on `conn`, which should be a transaction the caller
/// commits (or a batch of changes a group-committer decides in order).
///
/// The balance row is changed by a single conditional `UPDATE … RETURNING`: the range
/// check and the write are one statement, so racing writers serialize on the row lock and
/// each sees the balance its predecessor left; no read-then-write window exists. Then
/// exactly one transaction row is inserted, numbered with the row's new version.
///
/// Errors leave the balance as it was: [`LedgerError::InsufficientCredits`] or
/// [`LedgerError::BalanceLimitExceeded`] when the result would leave 0 ..= `MAX_CREDITS`,
/// [`LedgerError::OrganizationNotFound`], or [`LedgerError::DuplicateIdempotencyKey`]
/// when the key was taken meanwhile (the caller must roll back: the update happened).
pub async fn apply_change<C: ConnectionTrait>(
    conn: &C,
    request: &ChangeRequest,
    at: DateTime<Utc>,
) -> Result<(CreditTransaction, Balance), LedgerError> {
    let delta = request.delta;
    if delta == 0 || delta.unsigned_abs() > MAX_CREDITS as u64 {
        return Err(LedgerError::InvalidInput(format!("change of {delta} credits is out of range")));
    }
    // The balance before the change must lie in [lowest, highest] for the result to
    // stay within 0 ..= MAX_CREDITS; written so that no bound can overflow.
    let (lowest, highest) = if delta < 0 { (-delta, MAX_CREDITS) } else { (0, MAX_CREDITS - delta) };
    let updated = credit_balance::Entity::update_many()
        .col_expr(credit_balance::Column::Balance, Expr::col(credit_balance::Column::Balance).add(delta))
        .col_expr(credit_balance::Column::Version, Expr::col(credit_balance::Column::Version).add(1))
        .col_expr(credit_balance::Column::UpdatedAt, Expr::value(at))
        .filter(credit_balance::Column::OrganizationId.eq(&request.organization_id))
        .filter(credit_balance::Column::Balance.between(lowest, highest))
        .exec_with_returning(conn)
        .await?;
    let Some(row) = updated.into_iter().next() else {
        return Err(refusal(conn, request).await?);
    };

    let transaction = CreditTransaction {
        id: new_id("ctx"),
        organization_id: request.organization_id.clone(),
        seq: row.version,
        kind: request.kind,
        amount: delta,
        balance_after: row.balance,
        description: request.description.clone(),
        reference_type: request.reference_type.clone(),
        reference_id: request.reference_id.clone(),
        idempotency_key: request.idempotency_key.clone(),
        created_at: at,
    };
    let insert = credit_transaction::Entity::insert(credit_transaction::ActiveModel {
        id: Set(transaction.id.clone()),
        organization_id: Set(transaction.organization_id.clone()),
        seq: Set(transaction.seq),
        kind: Set(transaction.kind.as_str().to_owned()),
        amount: Set(transaction.amount),
        balance_after: Set(transaction.balance_after),
        description: Set(transaction.description.clone()),
        reference_type: Set(transaction.reference_type.clone()),
        reference_id: Set(transaction.reference_id.clone()),
        idempotency_key: Set(transaction.idempotency_key.clone()),
        created_at: Set(at),
    })
    .exec_without_returning(conn)
    .await;
    match insert {
        Ok(_) => {
            // On PostgreSQL: delivered to every replica if and when this commits.
            notify(conn, &BalanceEvent::changed(&transaction)).await?;
            Ok((transaction, Balance::from(row)))
        }
        Err(error) => match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(message))
                if request.idempotency_key.is_some() && message.contains("idempotency_key") =>
            {
                Err(LedgerError::DuplicateIdempotencyKey)
            }
            _ => Err(error.into()),
        },
    }
}

/// Why the conditional update matched no row.
async fn refusal<C: ConnectionTrait>(conn: &C, request: &ChangeRequest) -> Result<LedgerError, LedgerError> {
    let current = credit_balance::Entity::find()
        .filter(credit_balance::Column::OrganizationId.eq(&request.organization_id))
        .one(conn)
        .await?;
    Ok(match current {
        None => LedgerError::OrganizationNotFound,
        Some(row) if request.delta < 0 => {
            LedgerError::InsufficientCredits { balance: row.balance, required: -request.delta }
        }
        Some(_) => LedgerError::BalanceLimitExceeded { max: MAX_CREDITS },
    })
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

/// Takes back up to `wanted` credits as a `REFUND`, but never more than the balance:
/// credits already spent are not recovered, and the shortfall is written in the
/// transaction's description. Runs inside the caller's transaction; the balance row is
/// locked first so the amount taken is decided against a balance nobody else changes.
pub async fn clawback<C: ConnectionTrait>(
    conn: &C,
    organization_id: &str,
    wanted: i64,
    description: &str,
    reference: (&str, &str),
    at: DateTime<Utc>,
) -> Result<Clawback, LedgerError> {
    let balance = credit_balance::Entity::find()
        .filter(credit_balance::Column::OrganizationId.eq(organization_id))
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or(LedgerError::OrganizationNotFound)?;
    let taken = Ord::clamp(wanted, 0, balance.balance);
    let shortfall = Ord::max(wanted, 0) - taken;
    if taken == 0 {
        return Ok(Clawback { transaction: None, taken, shortfall });
    }
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
    };
    let (transaction, _) = apply_change(conn, &request, at).await?;
    Ok(Clawback { transaction: Some(transaction), taken, shortfall })
}
