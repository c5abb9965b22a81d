//! Selling credits: the package catalogue and purchases (Stripe Checkout comes next).

pub mod packages;
pub mod purchases;

pub use packages::{CreditPackage, PackageCatalog, PackageError};
pub use purchases::{CreditPurchase, Purchases};
