//! Stripe Checkout through async-stripe: the only code that talks to Stripe's API.

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData, ProductData,
};

use super::CreditPackage;
use crate::config::StripeConfig;

/// A Checkout Session to create for one purchase.
#[derive(Clone, Debug)]
pub struct CheckoutRequest<'a> {
    /// Our purchase id; also the Stripe idempotency key, so a retried call makes one session.
    pub purchase_id: &'a str,
    /// The buyer.
    pub organization_id: &'a str,
    /// What is bought.
    pub package: &'a CreditPackage,
    /// Where Stripe sends the buyer after paying.
    pub success_url: &'a str,
    /// Where Stripe sends the buyer after cancelling.
    pub cancel_url: &'a str,
}

/// The session Stripe created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_…`
    pub id: String,
    /// The hosted Checkout page.
    pub url: String,
}

/// Why Stripe could not be used. Messages never contain the secret key.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The client could not be built from the configuration.
    #[error("Stripe client configuration: {0}")]
    Config(String),
    /// Stripe answered with an error, or did not answer in time.
    #[error("Stripe request failed: {0}")]
    Request(String),
}

/// Creates Checkout Sessions.
#[derive(Clone)]
pub struct StripeGateway {
    client: Client,
    livemode: bool,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeGateway")
    }
}

impl StripeGateway {
    /// A client for the configured API origin.
    pub fn new(config: &StripeConfig) -> Result<Self, GatewayError> {
        let mut builder = ClientBuilder::new(config.secret_key.expose()).timeout(config.timeout);
        if let Some(base) = &config.api_base {
            // async-stripe appends `v1/…` to the origin.
            builder = builder.url(format!("{}/", base.trim_end_matches('/')));
        }
        let client = builder.build().map_err(|error| GatewayError::Config(error.to_string()))?;
        Ok(Self { client, livemode: is_live_key(config.secret_key.expose()) })
    }

    /// Whether the key acts in live mode, so which webhook events are meant for us.
    pub fn livemode(&self) -> bool {
        self.livemode
    }

    /// Creates a `payment` mode Checkout Session for one package. The package's Stripe
    /// Price is charged when configured, else inline price data from its price.
    pub async fn create_checkout_session(
        &self,
        request: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, GatewayError> {
        let package = request.package;
        let mut item = CreateCheckoutSessionLineItems::new();
        item.quantity = Some(1);
        match &package.stripe_price_id {
            Some(price) => item.price = Some(price.clone()),
            None => {
                // The catalogue only admits currencies Stripe knows.
                let currency = package.currency.parse().unwrap_or(stripe_types::Currency::USD);
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
                price.unit_amount = Some(package.price_amount);
                price.product_data = Some(ProductData::new(format!("{} credits", package.name)));
                item.price_data = Some(price);
            }
        }
        let metadata = HashMap::from([
            ("organization_id".to_owned(), request.organization_id.to_owned()),
            ("package_id".to_owned(), package.id.clone()),
            ("purchase_id".to_owned(), request.purchase_id.to_owned()),
        ]);
        let key = IdempotencyKey::new(format!("credits-checkout-{}", request.purchase_id))
            .map_err(|error| GatewayError::Config(error.to_string()))?;
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![item])
            .client_reference_id(request.organization_id)
            .metadata(metadata)
            .success_url(request.success_url)
            .cancel_url(request.cancel_url)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(|error| GatewayError::Request(describe(&error)))?;
        let url = session.url.ok_or_else(|| GatewayError::Request("Stripe returned a session without a URL".into()))?;
        Ok(CheckoutSession { id: session.id.to_string(), url })
    }
}

/// Whether a secret (`sk_live_…`) or restricted (`rk_live_…`) key is a live-mode one;
/// every other key, `sk_test_…` included, acts in test mode.
pub fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

/// A log-safe description of a Stripe failure (Stripe's own error message, never our key).
fn describe(error: &stripe::StripeError) -> String {
    match error {
        stripe::StripeError::Stripe(errors, status) => {
            format!("status {status}: {}", errors.message.as_deref().unwrap_or("no message"))
        }
        stripe::StripeError::Timeout => "timed out".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_keys_are_live() {
        assert!(is_live_key("sk_live_abc") && is_live_key("rk_live_abc"));
        assert!(!is_live_key("sk_test_abc") && !is_live_key("") && !is_live_key("sk_livex"));
    }
}
