//! The GraphQL API: a thin adapter from the contract in `API.md` to the ledger.
//!
//! Resolvers parse arguments into domain values, check the caller's scope
//! ([`context`]) and map domain errors to contract codes ([`errors`]) in one place.
//! Fields that lead from a payload to other objects check the scope again with a guard
//! (`guards`), whose refusals get GraphQL's null propagation (`nulls`).
//!
//! Types and resolvers are split by area (`ledger`, `lots`, `holds`, `billing`, `keys`
//! with `client_sessions`, `node`); each area adds its fields to the root [`Query`] and
//! [`Mutation`], merged here.

mod audit;
mod billing;
mod client_sessions;
pub mod context;
pub mod errors;
mod guards;
mod holds;
mod keys;
mod ledger;
pub mod limits;
mod loaders;
mod lots;
mod node;
mod nulls;
mod pagination;
pub mod scalars;
mod subscription;
mod topups;
mod usage;
mod views;
mod webhooks;

use async_graphql::Schema;

pub use context::{Access, Caller, Origin, RequestSpan};

/// The root query type, merged from each area's queries.
#[derive(async_graphql::MergedObject, Default)]
pub struct Query(
    ledger::LedgerQuery,
    billing::BillingQuery,
    node::NodeQuery,
    lots::LotsQuery,
    holds::HoldsQuery,
    usage::UsageReportQuery,
    webhooks::WebhooksQuery,
    topups::TopUpsQuery,
    audit::AuditQuery,
);

/// The root mutation type, merged from each area's mutations.
#[derive(async_graphql::MergedObject, Default)]
pub struct Mutation(
    ledger::LedgerMutation,
    billing::BillingMutation,
    keys::KeysMutation,
    lots::LotsMutation,
    holds::HoldsMutation,
    webhooks::WebhooksMutation,
    topups::TopUpsMutation,
);
pub use subscription::Subscription;

use crate::billing::{Billing, PackageCatalog, Purchases};
use crate::config::Limits;
use crate::ledger::Ledger;

/// The executable schema.
pub type CreditsSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema over the ledger and billing, with the abuse limits applied.
pub fn build_schema(
    ledger: Ledger,
    packages: PackageCatalog,
    billing: Billing,
    limits: &Limits,
    webhooks: crate::config::WebhookConfig,
) -> CreditsSchema {
    let purchases = Purchases::new(ledger.db().clone());
    // Depth and cost are measured by [`limits`] before a request gets here (HTTP and
    // WebSocket alike); the parser's own recursion bound stays as a second line.
    let builder = Schema::build(Query::default(), Mutation::default(), Subscription)
        .data(ledger)
        .data(packages)
        .data(purchases)
        .data(billing)
        .data(webhooks)
        .limit_recursive_depth(limits.query_depth * 2 + 8)
        .limit_directives(10)
        .extension(errors::ErrorCodes)
        .extension(nulls::NullPropagation);
    if limits.introspection { builder.finish() } else { builder.disable_introspection().finish() }
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), Subscription).finish().sdl()
}

/// Per-request data: the caller, where it came from, the request span and fresh
/// DataLoaders, made on first use (their caches must not outlive one request).
pub fn request_data(
    request: async_graphql::Request,
    ledger: &Ledger,
    caller: Caller,
    origin: Origin,
    span: tracing::Span,
) -> async_graphql::Request {
    request.data(caller).data(origin).data(RequestSpan(span)).data(loaders::Loaders::new(ledger))
}
