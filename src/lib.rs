//! credits: a GraphQL server for credit-based usage billing.
pub mod ledger;
