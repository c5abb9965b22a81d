//! DataLoaders: resolvers that would query once per row (a transaction's organization, a
//! balance's threshold, an organization's balance) batch through these instead.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;

use super::errors::ApiError;
use crate::ledger::{Balance, CreditLot, CreditTransaction, Ledger, Organization};

/// Loads organizations by id.
pub struct OrganizationLoader(pub Ledger);

impl Loader<String> for OrganizationLoader {
    type Value = Organization;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Organization>, ApiError> {
        let found = self.0.organizations(ids).await?;
        Ok(found.into_iter().map(|organization| (organization.id.clone(), organization)).collect())
    }
}

/// Loads balances by organization id.
pub struct BalanceLoader(pub Ledger);

impl Loader<String> for BalanceLoader {
    type Value = Balance;
    type Error = ApiError;

    async fn load(&self, organization_ids: &[String]) -> Result<HashMap<String, Balance>, ApiError> {
        let found = self.0.balances(organization_ids).await?;
        Ok(found.into_iter().map(|balance| (balance.organization_id.clone(), balance)).collect())
    }
}

/// Loads lots by id (as of now).
pub struct LotLoader(pub Ledger);

impl Loader<String> for LotLoader {
    type Value = CreditLot;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, CreditLot>, ApiError> {
        let found = self.0.lots_by_id(ids).await?;
        Ok(found.into_iter().map(|lot| (lot.id.clone(), lot)).collect())
    }
}

/// Loads transactions by id.
pub struct TransactionLoader(pub Ledger);

impl Loader<String> for TransactionLoader {
    type Value = CreditTransaction;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, CreditTransaction>, ApiError> {
        let found = self.0.transactions_by_id(ids).await?;
        Ok(found.into_iter().map(|transaction| (transaction.id.clone(), transaction)).collect())
    }
}
