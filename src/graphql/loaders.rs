//! DataLoaders: resolvers that would query once per row (a transaction's organization, a
//! balance's threshold, an organization's balance) batch through these instead.

use std::collections::HashMap;

use std::sync::OnceLock;

use async_graphql::dataloader::{DataLoader, Loader};

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

/// A request's DataLoaders, each made on its first use: most requests need none (a
/// balance read, a consume), and a subscription would otherwise hold four for its life.
pub struct Loaders {
    ledger: Ledger,
    organizations: OnceLock<DataLoader<OrganizationLoader>>,
    balances: OnceLock<DataLoader<BalanceLoader>>,
    lots: OnceLock<DataLoader<LotLoader>>,
    transactions: OnceLock<DataLoader<TransactionLoader>>,
}

impl Loaders {
    /// Loaders over `ledger`, none made yet.
    pub fn new(ledger: &Ledger) -> Self {
        Self {
            ledger: ledger.clone(),
            organizations: OnceLock::new(),
            balances: OnceLock::new(),
            lots: OnceLock::new(),
            transactions: OnceLock::new(),
        }
    }

    /// Organizations by id.
    pub fn organizations(&self) -> &DataLoader<OrganizationLoader> {
        self.organizations.get_or_init(|| DataLoader::new(OrganizationLoader(self.ledger.clone()), tokio::spawn))
    }

    /// Balances by organization id.
    pub fn balances(&self) -> &DataLoader<BalanceLoader> {
        self.balances.get_or_init(|| DataLoader::new(BalanceLoader(self.ledger.clone()), tokio::spawn))
    }

    /// Lots by id.
    pub fn lots(&self) -> &DataLoader<LotLoader> {
        self.lots.get_or_init(|| DataLoader::new(LotLoader(self.ledger.clone()), tokio::spawn))
    }

    /// Transactions by id.
    pub fn transactions(&self) -> &DataLoader<TransactionLoader> {
        self.transactions.get_or_init(|| DataLoader::new(TransactionLoader(self.ledger.clone()), tokio::spawn))
    }
}
