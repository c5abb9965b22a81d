//! The limit `bench_throughput` measures against: a bare async-graphql-axum server that
//! answers the same `consumeCredits` mutation and `creditBalance` query as `credits`,
//! with the same request and response shapes, from memory (no database, no
//! authentication). Whatever `credits` reaches is reported as a share of this.
//!
//! ```sh
//! cargo run --release --example bare_graphql -- 127.0.0.1:8090
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use async_graphql::{EmptySubscription, ID, InputObject, Object, Schema, SimpleObject};
use async_graphql_axum::GraphQL;

static BALANCE: AtomicI64 = AtomicI64::new(1_000_000_000_000);
static SEQ: AtomicI64 = AtomicI64::new(0);

#[derive(InputObject)]
struct ConsumeCreditsInput {
    organization_id: Option<ID>,
    amount: i64,
    description: String,
    reference_type: Option<String>,
    reference_id: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(SimpleObject)]
struct CreditTransaction {
    id: ID,
    amount: i64,
    balance_after: i64,
    description: Option<String>,
}

#[derive(SimpleObject)]
struct CreditBalance {
    id: ID,
    balance: i64,
}

#[derive(SimpleObject)]
struct ConsumeCreditsPayload {
    transaction: CreditTransaction,
    balance: CreditBalance,
    replayed: bool,
}

struct Query;

#[Object]
impl Query {
    async fn credit_balance(&self, organization_id: Option<ID>) -> CreditBalance {
        let _ = organization_id;
        CreditBalance { id: ID::from("bal_bare"), balance: BALANCE.load(Ordering::Relaxed) }
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn consume_credits(&self, input: ConsumeCreditsInput) -> ConsumeCreditsPayload {
        let _ = (&input.organization_id, &input.reference_type, &input.reference_id, &input.idempotency_key);
        let after = BALANCE.fetch_sub(input.amount, Ordering::Relaxed) - input.amount;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        ConsumeCreditsPayload {
            transaction: CreditTransaction {
                id: ID::from(format!("ctx_{seq:032x}")),
                amount: -input.amount,
                balance_after: after,
                description: Some(input.description),
            },
            balance: CreditBalance { id: ID::from("bal_bare"), balance: after },
            replayed: false,
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let schema = Schema::build(Query, Mutation, EmptySubscription).finish();
    let app = axum::Router::new().route_service("/graphql", GraphQL::new(schema));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
