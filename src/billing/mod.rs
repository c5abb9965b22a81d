//! Selling credits: the package catalogue, Stripe Checkout, and the webhook events that
//! turn paid sessions into credits (and refunds and disputes into clawbacks).
//!
//! # Layout
//! - `packages.rs`: the credit-package catalogue.
//! - `purchases.rs`: purchases as recorded locally, and their [`PurchaseStatus`].
//! - `checkout.rs`: the [`Billing`] service; starting a purchase through Checkout.
//! - `payment_events.rs`: the webhook state machine: which events count, paid sessions,
//!   closed sessions, orphans and refunds, each applied exactly once in any order.
//! - `disputes.rs`: disputed payments (funds withdrawn, funds reinstated).
//! - `settlement.rs`: refunds and disputes as one rule: what a purchase has taken back,
//!   and its status, from the facts reported, whatever their order.
//! - `stripe.rs`: the one async-stripe call; `webhook.rs`: signatures and event views.

pub mod checkout;
mod disputes;
pub mod packages;
pub mod payment_events;
pub mod purchases;
mod settlement;
pub mod stripe;
pub mod topups;
pub mod webhook;

pub use checkout::{Billing, BillingError, PURCHASE_REFERENCE, StartedPurchase};
pub use packages::{CreditPackage, PackageCatalog, PackageError};
pub use payment_events::EventOutcome;
pub use purchases::{CreditPurchase, PurchaseStatus, Purchases};
pub use webhook::parse_event;
