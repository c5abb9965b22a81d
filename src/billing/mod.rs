//! Selling credits: the package catalogue, Stripe Checkout, and the webhook events that
//! turn paid sessions into credits (and refunds into clawbacks).

pub mod packages;
pub mod purchases;
pub mod service;
pub mod stripe;
pub mod webhook;

pub use packages::{CreditPackage, PackageCatalog, PackageError};
pub use purchases::{CreditPurchase, Purchases};
pub use service::{Billing, BillingError, EventOutcome, StartedPurchase};
