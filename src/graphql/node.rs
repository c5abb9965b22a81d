//! The Relay `Node` interface and the `node(id:)` query, which refetches any object by
//! its type-prefixed id.

use async_graphql::{Context, ID, Interface, Object};

use super::audit::AuditEvent;
use super::billing::CreditPurchase;
use super::client_sessions::ClientSession;
use super::context::caller;
use super::errors::ApiError;
use super::holds::CreditHold;
use super::keys::ApiKey;
use super::topups::CreditTopUp;
use super::views::{CreditBalance, CreditLot, CreditTransaction, Organization};
use super::webhooks::{WebhookEndpoint, WebhookEvent};
use crate::billing::Purchases;
use crate::ledger::Ledger;

/// An object with a globally unique, type-prefixed id (Relay refetching).
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Opaque id with a type prefix."))]
pub enum Node {
    /// An organization.
    Organization(Organization),
    /// A balance.
    CreditBalance(CreditBalance),
    /// A transaction.
    CreditTransaction(CreditTransaction),
    /// An API key.
    ApiKey(ApiKey),
    /// A purchase.
    CreditPurchase(CreditPurchase),
    /// A client session.
    ClientSession(ClientSession),
    /// A lot.
    CreditLot(CreditLot),
    /// A hold.
    CreditHold(CreditHold),
    /// A webhook endpoint.
    WebhookEndpoint(WebhookEndpoint),
    /// A webhook event.
    WebhookEvent(WebhookEvent),
    /// An automatic top-up.
    CreditTopUp(CreditTopUp),
    /// An audit row.
    AuditEvent(AuditEvent),
}

/// The `node` query.
#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object by id (Relay refetch); null when unknown or not visible to the caller.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>, ApiError> {
        let caller = caller(ctx);
        caller.require_any()?;
        let ledger = ctx.data_unchecked::<Ledger>();
        let (prefix, _) = id.split_once('_').unwrap_or_default();
        let node = match prefix {
            "org" => ledger.organization(&id).await?.map(|o| (o.id.clone(), Node::Organization(Organization(o)))),
            "bal" => ledger
                .balance_by_id(&id)
                .await?
                .map(|b| (b.organization_id.clone(), Node::CreditBalance(CreditBalance(b)))),
            "ctx" => ledger
                .transaction(&id)
                .await?
                .map(|t| (t.organization_id.clone(), Node::CreditTransaction(CreditTransaction(t)))),
            // Credentials are for their managers only, never for a client session.
            "key" => ledger
                .api_key(&id)
                .await?
                .filter(|k| caller.manages(&k.organization_id))
                .map(|k| (k.organization_id.clone(), Node::ApiKey(ApiKey(k)))),
            "cses" => {
                ledger.client_session(&id).await?.filter(|s| caller.manages(&s.organization_id)).map(|s| {
                    (s.organization_id.clone(), Node::ClientSession(ClientSession { session: s, token: None }))
                })
            }
            "lot" => ledger
                .lots_by_id(&[id.to_string()])
                .await?
                .pop()
                .map(|lot| (lot.organization_id.clone(), Node::CreditLot(CreditLot(lot)))),
            "hld" => {
                ledger.hold(&id).await?.map(|hold| (hold.organization_id.clone(), Node::CreditHold(CreditHold(hold))))
            }
            "pur" => ctx
                .data_unchecked::<Purchases>()
                .get(&id)
                .await?
                .map(|p| (p.organization_id.clone(), Node::CreditPurchase(CreditPurchase(p)))),
            // Webhooks are for their managers only: an endpoint of every organization for
            // the admin alone.
            "whe" => ledger
                .webhook_endpoint(&id)
                .await?
                .filter(|endpoint| match &endpoint.organization_id {
                    Some(organization_id) => caller.manages(organization_id),
                    None => matches!(caller, super::context::Caller::Admin),
                })
                .map(|endpoint| {
                    let organization_id = endpoint.organization_id.clone().unwrap_or_default();
                    (organization_id, Node::WebhookEndpoint(WebhookEndpoint(endpoint)))
                }),
            "evt" => ledger
                .webhook_event(&id)
                .await?
                .filter(|event| caller.manages(&event.organization_id))
                .map(|event| (event.organization_id.clone(), Node::WebhookEvent(WebhookEvent(event)))),
            "ctu" => ledger
                .top_up(&id)
                .await?
                .map(|top_up| (top_up.organization_id.clone(), Node::CreditTopUp(CreditTopUp(top_up)))),
            // The audit log is for its managers only; a row of no organization, the admin's.
            "aud" => ledger.audit_event(&id).await?.and_then(|event| {
                let organization_id = event.organization_id.clone().unwrap_or_default();
                let visible = if organization_id.is_empty() {
                    matches!(caller, super::context::Caller::Admin)
                } else {
                    caller.manages(&organization_id)
                };
                visible.then_some((organization_id, Node::AuditEvent(AuditEvent(event))))
            }),
            _ => None,
        };
        let admin = matches!(caller, super::context::Caller::Admin);
        Ok(node
            .filter(|(organization_id, _)| (admin && organization_id.is_empty()) || caller.can_see(organization_id))
            .map(|(_, node)| node))
    }
}
