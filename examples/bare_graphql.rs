//! The limit `bench_throughput` measures against: a bare async-graphql-axum server that
//! answers the same `consumeCredits` mutation and `creditBalance` query as `credits`,
//! with the same request and response shapes, from memory (no database, no
//! authentication). Whatever `credits` reaches is reported as a share of this.
//!
//! Given a database and an organization, it is instead the read anchor: `creditBalance`
//! answered with one sqlx `SELECT` of that organization's balance per request (the same
//! sqlx as `credits`, a pool of its own), still without authentication. What a read costs
//! `credits` beyond this is the server's own.
//!
//! ```sh
//! cargo run --release --example bare_graphql -- 127.0.0.1:8090 [DATABASE_URL ORGANIZATION_ID]
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use async_graphql::{Context, EmptySubscription, ID, InputObject, Object, Schema, SimpleObject};
use async_graphql_axum::GraphQL;
use sea_orm::sqlx;

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

/// The read anchor's database: a pool and the organization whose balance it reads.
enum Balances {
    Sqlite(sqlx::SqlitePool, String),
    Postgres(sqlx::PgPool, String),
}

impl Balances {
    async fn connect(url: &str, organization_id: String) -> Self {
        if url.starts_with("postgres") {
            Self::Postgres(sqlx::PgPool::connect(url).await.expect("connect"), organization_id)
        } else {
            Self::Sqlite(sqlx::SqlitePool::connect(url).await.expect("connect"), organization_id)
        }
    }

    async fn balance(&self) -> async_graphql::Result<i64> {
        let balance = match self {
            Self::Sqlite(pool, organization_id) => {
                sqlx::query_scalar("SELECT balance FROM credit_balances WHERE organization_id = ?")
                    .bind(organization_id)
                    .fetch_one(pool)
                    .await?
            }
            Self::Postgres(pool, organization_id) => {
                sqlx::query_scalar("SELECT balance FROM credit_balances WHERE organization_id = $1")
                    .bind(organization_id)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(balance)
    }
}

struct Query;

#[Object]
impl Query {
    async fn credit_balance(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
    ) -> async_graphql::Result<CreditBalance> {
        let _ = organization_id;
        let balance = match ctx.data_opt::<Balances>() {
            Some(balances) => balances.balance().await?,
            None => BALANCE.load(Ordering::Relaxed),
        };
        Ok(CreditBalance { id: ID::from("bal_bare"), balance })
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
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let mut schema = Schema::build(Query, Mutation, EmptySubscription);
    if let (Some(url), Some(organization_id)) = (args.next(), args.next()) {
        schema = schema.data(Balances::connect(&url, organization_id).await);
    }
    let schema = schema.finish();
    let app = axum::Router::new().route_service("/graphql", GraphQL::new(schema));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
