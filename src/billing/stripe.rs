//! Stripe through async-stripe: the only code that talks to Stripe's API. Checkout
//! Sessions with the generated request types of `async-stripe-checkout`; Customers and
//! PaymentIntents (auto top-up) through the same client with `async-stripe-shared`'s
//! response types and our own three small request forms: the generated request types
//! for those live in `async-stripe-core`, which would more than double the build of the
//! Stripe crates on this two-core machine for three calls.

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionPaymentIntentDataSetupFutureUsage, ProductData,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_shared::{ApiErrorsCode, PaymentIntentStatus};

use crate::ledger::topups::SavedPaymentMethod;

/// The Checkout Session metadata that says its card is to be saved for auto top-up.
pub const SAVE_CARD_METADATA: &str = "save_for_auto_top_up";

/// One top-up's charge: a PaymentIntent confirmed off-session with the saved card.
#[derive(Clone, Debug)]
pub struct TopUpCharge<'a> {
    /// `ctu_…`: also the `Idempotency-Key`, so a retried or raced call makes one.
    pub top_up_id: &'a str,
    /// Whose.
    pub organization_id: &'a str,
    /// The package bought.
    pub package_id: &'a str,
    /// In the currency's smallest unit.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: &'a str,
    /// `cus_…`
    pub customer: &'a str,
    /// `pm_…`
    pub payment_method: &'a str,
}

/// What Stripe said of a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid.
    Succeeded {
        /// `pi_…`
        payment_intent: String,
    },
    /// Not paid yet (processing): the webhook will tell.
    Processing {
        /// `pi_…`
        payment_intent: String,
    },
    /// The customer must authenticate (3-D Secure).
    RequiresAction {
        /// `pi_…`, when Stripe named it.
        payment_intent: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// Declined.
    Declined {
        /// `pi_…`, when Stripe named it.
        payment_intent: Option<String>,
        /// Stripe's message.
        message: String,
    },
}

#[derive(serde::Serialize)]
struct CreateCustomer<'a> {
    description: String,
    metadata: HashMap<&'a str, &'a str>,
}

#[derive(serde::Serialize)]
struct CreatePaymentIntent<'a> {
    amount: i64,
    currency: &'a str,
    customer: &'a str,
    payment_method: &'a str,
    off_session: bool,
    confirm: bool,
    metadata: HashMap<&'a str, &'a str>,
}

#[derive(serde::Serialize)]
struct Expand<'a> {
    expand: [&'a str; 1],
}

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
    /// The organization's Stripe Customer, with the card kept for off-session payments
    /// (auto top-up), when saving it.
    pub save_for_customer: Option<&'a str>,
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
    #[tracing::instrument(name = "stripe", skip_all, fields(otel.name = "stripe POST /v1/checkout/sessions", otel.kind = "client"))]
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
        let mut metadata = HashMap::from([
            ("organization_id".to_owned(), request.organization_id.to_owned()),
            ("package_id".to_owned(), package.id.clone()),
            ("purchase_id".to_owned(), request.purchase_id.to_owned()),
        ]);
        let key = IdempotencyKey::new(format!("credits-checkout-{}", request.purchase_id))
            .map_err(|error| GatewayError::Config(error.to_string()))?;
        let mut session = CreateCheckoutSession::new();
        if let Some(customer) = request.save_for_customer {
            metadata.insert(SAVE_CARD_METADATA.to_owned(), "true".to_owned());
            let mut intent = CreateCheckoutSessionPaymentIntentData::new();
            intent.setup_future_usage = Some(CreateCheckoutSessionPaymentIntentDataSetupFutureUsage::OffSession);
            session = session.customer(customer).payment_intent_data(intent);
        }
        let session = session
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

impl StripeGateway {
    /// Creates the organization's Stripe Customer (idempotent per organization).
    #[tracing::instrument(name = "stripe", skip_all, fields(otel.name = "stripe POST /v1/customers", otel.kind = "client"))]
    pub async fn create_customer(&self, organization_id: &str) -> Result<String, GatewayError> {
        let form = CreateCustomer {
            description: format!("credits organization {organization_id}"),
            metadata: HashMap::from([("organization_id", organization_id)]),
        };
        let key = IdempotencyKey::new(format!("credits-customer-{organization_id}"))
            .map_err(|error| GatewayError::Config(error.to_string()))?;
        let customer: stripe_shared::Customer = RequestBuilder::new(StripeMethod::Post, "/customers")
            .form(&form)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(|error| GatewayError::Request(describe(&error)))?;
        Ok(customer.id.to_string())
    }

    /// Charges a top-up: one PaymentIntent, confirmed off-session with the saved card,
    /// its `Idempotency-Key` the top-up id. `Err` when Stripe failed or timed out (try
    /// again with the same key); a decline or 3-D Secure is an outcome.
    #[tracing::instrument(name = "stripe", skip_all, fields(otel.name = "stripe POST /v1/payment_intents", otel.kind = "client", top_up = charge.top_up_id))]
    pub async fn charge(&self, charge: &TopUpCharge<'_>) -> Result<ChargeOutcome, GatewayError> {
        let form = CreatePaymentIntent {
            amount: charge.amount,
            currency: charge.currency,
            customer: charge.customer,
            payment_method: charge.payment_method,
            off_session: true,
            confirm: true,
            metadata: HashMap::from([
                ("organization_id", charge.organization_id),
                ("package_id", charge.package_id),
                ("topup_id", charge.top_up_id),
            ]),
        };
        let key = IdempotencyKey::new(charge.top_up_id).map_err(|error| GatewayError::Config(error.to_string()))?;
        let sent: Result<stripe_shared::PaymentIntent, _> = RequestBuilder::new(StripeMethod::Post, "/payment_intents")
            .form(&form)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await;
        match sent {
            Ok(intent) => Ok(outcome_of(&intent)),
            Err(stripe::StripeError::Stripe(error, 402)) => {
                let payment_intent = error.payment_intent.as_ref().map(|intent| intent.id.to_string());
                let message = error.message.clone().unwrap_or_else(|| "the card was declined".into());
                Ok(match error.code {
                    Some(ApiErrorsCode::AuthenticationRequired) => {
                        ChargeOutcome::RequiresAction { payment_intent, message }
                    }
                    _ => ChargeOutcome::Declined { payment_intent, message },
                })
            }
            Err(error) => Err(GatewayError::Request(describe(&error))),
        }
    }

    /// The card a PaymentIntent was paid with: brand, last four digits and expiry.
    #[tracing::instrument(name = "stripe", skip_all, fields(otel.name = "stripe GET /v1/payment_intents", otel.kind = "client"))]
    pub async fn card_of(&self, payment_intent: &str) -> Result<Option<SavedPaymentMethod>, GatewayError> {
        let intent: stripe_shared::PaymentIntent =
            RequestBuilder::new(StripeMethod::Get, format!("/payment_intents/{payment_intent}"))
                .query(&Expand { expand: ["payment_method"] })
                .customize()
                .send(&self.client)
                .await
                .map_err(|error| GatewayError::Request(describe(&error)))?;
        let Some(method) = intent.payment_method else { return Ok(None) };
        Ok(Some(match method {
            stripe_types::Expandable::Object(method) => {
                let card = method.card.as_ref();
                SavedPaymentMethod {
                    id: method.id.to_string(),
                    brand: card.map(|card| card.brand.clone()),
                    last4: card.map(|card| card.last4.clone()),
                    exp_month: card.and_then(|card| i32::try_from(card.exp_month).ok()),
                    exp_year: card.and_then(|card| i32::try_from(card.exp_year).ok()),
                }
            }
            stripe_types::Expandable::Id(id) => {
                SavedPaymentMethod { id: id.to_string(), brand: None, last4: None, exp_month: None, exp_year: None }
            }
        }))
    }
}

/// What a PaymentIntent's status means for its top-up.
pub fn outcome_of(intent: &stripe_shared::PaymentIntent) -> ChargeOutcome {
    let payment_intent = intent.id.to_string();
    let message = || {
        intent
            .last_payment_error
            .as_ref()
            .and_then(|error| error.message.clone())
            .unwrap_or_else(|| format!("the payment is {}", intent.status.as_str()))
    };
    match intent.status {
        PaymentIntentStatus::Succeeded => ChargeOutcome::Succeeded { payment_intent },
        PaymentIntentStatus::RequiresAction | PaymentIntentStatus::RequiresConfirmation => {
            ChargeOutcome::RequiresAction { payment_intent: Some(payment_intent), message: message() }
        }
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            ChargeOutcome::Declined { payment_intent: Some(payment_intent), message: message() }
        }
        _ => ChargeOutcome::Processing { payment_intent },
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
