//! DataLoaders: resolvers that would query once per row (a transaction's organization, a
//! balance's threshold, an organization's balance) batch through these instead.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;

use super::errors::ApiError;
use crate::ledger::{Balance, Ledger, Organization};

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
