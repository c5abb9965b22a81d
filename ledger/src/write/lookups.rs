//! What billing asks a [`LedgerTx`] about a purchase's entries, under its locks: what
//! clawbacks under a reference hold now, and which lots a purchase or transaction formed.

use entity::{credit_lot, credit_transaction};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{CreditLot, LedgerError, TransactionKind};

use super::LedgerTx;

impl LedgerTx {
    /// What clawbacks under `reference` hold now, net: the credits its `REFUND`s took
    /// less those its `ADJUSTMENT`s gave back, written or decided in this transaction.
    /// Read from the entries themselves, so what a reinstated dispute gives back is never
    /// more than was really taken (credits already spent were never taken).
    pub async fn clawed_back(&self, organization_id: &str, reference: (&str, &str)) -> Result<i64, LedgerError> {
        let corrections = [TransactionKind::Refund, TransactionKind::Adjustment];
        let written: Vec<i64> = credit_transaction::Entity::find()
            .select_only()
            .column(credit_transaction::Column::Amount)
            .filter(credit_transaction::Column::OrganizationId.eq(organization_id))
            .filter(credit_transaction::Column::Kind.is_in(corrections.map(TransactionKind::as_str)))
            .filter(credit_transaction::Column::ReferenceType.eq(reference.0))
            .filter(credit_transaction::Column::ReferenceId.eq(reference.1))
            .into_tuple()
            .all(&self.txn)
            .await?;
        let decided = self
            .pending
            .iter()
            .filter(|transaction| transaction.organization_id == organization_id)
            .filter(|transaction| corrections.contains(&transaction.kind))
            .filter(|transaction| {
                transaction.reference_type.as_deref() == Some(reference.0)
                    && transaction.reference_id.as_deref() == Some(reference.1)
            })
            .map(|transaction| transaction.amount);
        Ok(-written.into_iter().chain(decided).sum::<i64>())
    }

    /// The lot formed by transaction `source_transaction_id` (a purchase's), if any.
    pub async fn lot_of_transaction(&self, source_transaction_id: &str) -> Result<Option<CreditLot>, LedgerError> {
        credit_lot::Entity::find()
            .filter(credit_lot::Column::SourceTransactionId.eq(source_transaction_id))
            .order_by_desc(credit_lot::Column::Seq)
            .one(&self.txn)
            .await?
            .map(CreditLot::try_from)
            .transpose()
    }

    /// The lots credits entered under `reference` formed (a purchase's, and its
    /// reinstated disputes'), written or decided in this transaction; `None` when those
    /// credits entered before lots existed. The organization must be locked.
    pub(super) async fn lots_of_reference(
        &self,
        organization_id: &str,
        reference: (&str, &str),
    ) -> Result<Option<Vec<String>>, LedgerError> {
        let credited = |kind: TransactionKind| matches!(kind, TransactionKind::Purchase | TransactionKind::Adjustment);
        let mut sources: Vec<String> = credit_transaction::Entity::find()
            .filter(credit_transaction::Column::OrganizationId.eq(organization_id))
            .filter(credit_transaction::Column::Kind.is_in(["PURCHASE", "ADJUSTMENT"]))
            .filter(credit_transaction::Column::ReferenceType.eq(reference.0))
            .filter(credit_transaction::Column::ReferenceId.eq(reference.1))
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        sources.extend(
            self.pending
                .iter()
                .filter(|transaction| transaction.organization_id == organization_id && credited(transaction.kind))
                .filter(|transaction| {
                    transaction.reference_type.as_deref() == Some(reference.0)
                        && transaction.reference_id.as_deref() == Some(reference.1)
                })
                .map(|transaction| transaction.id.clone()),
        );
        let locked = self.locked.get(organization_id).ok_or(LedgerError::OrganizationNotFound)?;
        let open: Vec<String> = locked
            .state
            .lots()
            .iter()
            .filter(|lot| sources.contains(&lot.source_transaction_id))
            .map(|lot| lot.id.clone())
            .collect();
        if !open.is_empty() {
            return Ok(Some(open));
        }
        let any_lot = credit_lot::Entity::find()
            .filter(credit_lot::Column::SourceTransactionId.is_in(sources.iter().cloned()))
            .one(&self.txn)
            .await?;
        Ok(if any_lot.is_some() || sources.is_empty() { Some(Vec::new()) } else { None })
    }

    /// The lot a purchase formed: that of its `PURCHASE` transaction (none for a
    /// purchase credited before lots existed).
    pub async fn lot_of_purchase(
        &self,
        organization_id: &str,
        reference: (&str, &str),
    ) -> Result<Option<CreditLot>, LedgerError> {
        let purchase = credit_transaction::Entity::find()
            .filter(credit_transaction::Column::OrganizationId.eq(organization_id))
            .filter(credit_transaction::Column::Kind.eq(TransactionKind::Purchase.as_str()))
            .filter(credit_transaction::Column::ReferenceType.eq(reference.0))
            .filter(credit_transaction::Column::ReferenceId.eq(reference.1))
            .one(&self.txn)
            .await?;
        match purchase {
            Some(purchase) => self.lot_of_transaction(&purchase.id).await,
            None => Ok(None),
        }
    }
}
