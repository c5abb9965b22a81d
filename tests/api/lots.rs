//! Credit lots over HTTP: draw order, allocations, expiry, void, overdraft.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, spawn_app};
use crate::on_both_engines;

on_both_engines!(
    consumption_draws_lots_in_draw_order_with_one_allocation_each,
    grants_validate_their_lot_and_lots_list_filter_and_resolve_by_node,
    expired_credits_are_never_available_and_leave_as_an_expiry_entry,
    voiding_a_lot_removes_its_remainder_once,
    overdraft_draws_null_lot_down_to_the_limit_and_grants_settle_debt_first,
    balances_from_before_lots_become_one_promotional_lot_when_the_server_upgrades,
    an_idle_organizations_expiry_is_written_within_seconds,
    allocations_keep_their_lots_and_order_across_the_move_into_their_transactions,
    open_lots_are_read_from_the_oldest_open_one_and_no_index_names_what_emptying_changes,
);

/// Allocations of transactions and holds written before they moved into their own rows
/// (one table row per lot) read the same after the move, and the move undone gives the
/// rows back.
async fn allocations_keep_their_lots_and_order_across_the_move_into_their_transactions(engine: Engine) {
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, Statement};
    let Some(database) = crate::helpers::database(engine).await else { return };
    const HISTORY: &str = "{ creditTransactions(first: 10) { edges { node { kind amount allocations { lot { id } amount } } } } \
        creditHolds { edges { node { amount allocations { lot { id } amount } } } } }";
    const HOLD: &str =
        "mutation($amount: Credits!) { createHold(input: { amount: $amount, description: \"job\" }) { hold { id } } }";
    let app = crate::helpers::spawn_app_on(&database.url, &[]).await;
    let org = app.create_org("Mover").await;
    let key = app.create_key(&org).await;
    grant_lot(&app, &org, 2, json!({ "priority": 1 })).await;
    grant_lot(&app, &org, 5, json!({ "priority": 2 })).await;
    let spanning = consume(&app, &key, 4).await;
    assert_eq!(spanning["allocations"].as_array().map(Vec::len), Some(2), "{spanning}");
    app.ok(Some(&key), HOLD, json!({ "amount": 1 })).await;
    let overdraft = "mutation($org: ID!) { setOverdraftLimit(organizationId: $org, limit: 5) { spendable } }";
    app.ok(Some(ADMIN_TOKEN), overdraft, json!({ "org": org })).await;
    let into_debt = consume(&app, &key, 6).await;
    assert_eq!(into_debt["allocations"][1]["lot"], Value::Null, "the overdraft part has no lot: {into_debt}");
    app.ok(Some(&key), HOLD, json!({ "amount": 1 })).await;
    let before = app.ok(Some(&key), HISTORY, json!({})).await;
    drop(app);

    let db = credits::db::connect(&database.url).await.expect("connect");
    let backend = db.get_database_backend();
    let steps = migration::Migrator::migrations();
    let the_move = steps.iter().position(|step| step.name().contains("inline_allocations")).expect("the move");
    migration::Migrator::down(&db, Some((steps.len() - the_move) as u32)).await.expect("undo the move");
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT a.lot_id, a.amount FROM credit_allocations a JOIN credit_transactions t ON t.id = a.transaction_id \
             WHERE t.kind = 'CONSUMPTION' ORDER BY t.seq, a.position",
        ))
        .await
        .expect("allocation rows");
    let rows: Vec<(Option<String>, i64)> = rows
        .iter()
        .map(|row| (row.try_get("", "lot_id").expect("lot_id"), row.try_get("", "amount").expect("amount")))
        .collect();
    let consumed: Vec<i64> = rows.iter().map(|(_, amount)| *amount).collect();
    assert_eq!(consumed, vec![-2, -2, -2, -4], "two consumes, each in draw order, one row a lot: {rows:?}");
    assert_eq!(rows[3].0, None, "the overdraft part");
    let held = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT a.lot_id, a.amount FROM credit_hold_allocations a JOIN credit_holds h ON h.id = a.hold_id \
             ORDER BY h.created_at, a.position",
        ))
        .await
        .expect("hold allocation rows");
    let held: Vec<(bool, i64)> = held
        .iter()
        .map(|row| {
            let lot: Option<String> = row.try_get("", "lot_id").expect("lot_id");
            (lot.is_some(), row.try_get("", "amount").expect("amount"))
        })
        .collect();
    assert_eq!(held, vec![(true, 1), (false, 1)], "one hold in a lot, one in the overdraft");
    migration::Migrator::up(&db, None).await.expect("move again");
    db.close().await.ok();

    let app = crate::helpers::spawn_app_on(&database.url, &[]).await;
    let after = app.ok(Some(&key), HISTORY, json!({})).await;
    assert_eq!(after, before, "the same allocations, lots and order");
    drop(app);
    drop(database);
}

/// Emptying a lot changes no indexed column (so PostgreSQL rewrites the row in place),
/// and the open lots are read from the balance's `open_lots_from`: the oldest open lot's
/// `seq` (past the latest change when none is open), kept by every write, read by a new
/// process, and set by the migration that introduced it.
async fn open_lots_are_read_from_the_oldest_open_one_and_no_index_names_what_emptying_changes(engine: Engine) {
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
    let Some(database) = crate::helpers::database(engine).await else { return };
    let db = credits::db::connect(&database.url).await.expect("connect");
    let backend = db.get_database_backend();
    let query = |sql: &str| Statement::from_string(backend, sql.to_owned());
    let indexes = match engine {
        Engine::Postgres => "SELECT indexdef AS text FROM pg_indexes WHERE tablename = 'credit_lots'",
        Engine::Sqlite => {
            "SELECT sql AS text FROM sqlite_master WHERE type = 'index' AND tbl_name = 'credit_lots' AND sql IS NOT NULL"
        }
    };
    let app = crate::helpers::spawn_app_on(&database.url, &[]).await;
    let indexes: Vec<String> = db
        .query_all_raw(query(indexes))
        .await
        .expect("indexes")
        .iter()
        .map(|row| row.try_get("", "text").expect("text"))
        .collect();
    assert!(indexes.len() >= 2, "{indexes:?}");
    for index in &indexes {
        for column in ["remaining", "held", "status"] {
            assert!(!index.contains(column), "an index names {column}, which emptying a lot changes: {index}");
        }
    }

    // (open_lots_from, the oldest open lot's seq, version) as the database has them.
    async fn marks(db: &DatabaseConnection, org: &str) -> (i64, Option<i64>, i64) {
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT b.open_lots_from AS mark, b.version AS version, \
                 (SELECT MIN(l.seq) FROM credit_lots l WHERE l.organization_id = b.organization_id AND l.remaining > 0) AS oldest \
                 FROM credit_balances b WHERE b.organization_id = $1",
                [org.into()],
            ))
            .await
            .expect("balance")
            .expect("a balance row");
        (row.try_get("", "mark").unwrap(), row.try_get("", "oldest").unwrap(), row.try_get("", "version").unwrap())
    }
    let org = app.create_org("Oldest open").await;
    let key = app.create_key(&org).await;
    assert_eq!(marks(&db, &org).await, (1, None, 0), "a new organization reads from its first lot on");
    // Drawn last (seq 1), then two drawn first (seq 2 and 3).
    let last = grant_lot(&app, &org, 5, json!({ "priority": 90 })).await;
    grant_lot(&app, &org, 2, json!({ "priority": 10 })).await;
    grant_lot(&app, &org, 2, json!({ "priority": 10 })).await;
    assert_eq!(marks(&db, &org).await, (1, Some(1), 3));
    consume(&app, &key, 4).await;
    assert_eq!(marks(&db, &org).await, (1, Some(1), 4), "the oldest lot is still open");
    consume(&app, &key, 5).await;
    assert_eq!(marks(&db, &org).await, (6, None, 5), "nothing open: from past the latest change");
    let next = grant_lot(&app, &org, 3, json!({})).await;
    assert_eq!(marks(&db, &org).await, (6, Some(6), 6));
    consume(&app, &key, 1).await;
    drop(app);

    // A new process (nothing kept) finds the open lot from the mark.
    let app = crate::helpers::spawn_app_on(&database.url, &[]).await;
    let spent = consume(&app, &key, 1).await;
    assert_eq!(spent["allocations"], json!([{ "lot": { "id": next["lot"]["id"] }, "amount": -1 }]));
    assert_eq!(balance(&app, &key).await["available"], 1);
    let old = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { ... on CreditLot { remaining status } } }",
            json!({ "id": last["lot"]["id"] }),
        )
        .await;
    assert_eq!(old["node"], json!({ "remaining": 0, "status": "DEPLETED" }));
    drop(app);
    assert_eq!(marks(&db, &org).await, (6, Some(6), 8));

    // The migration that introduced the mark sets it from the lots.
    let steps = migration::Migrator::migrations();
    let step = steps.iter().position(|step| step.name().contains("rewrite_lots_in_place")).expect("the step");
    migration::Migrator::down(&db, Some((steps.len() - step) as u32)).await.expect("down");
    migration::Migrator::up(&db, None).await.expect("up");
    assert_eq!(marks(&db, &org).await, (6, Some(6), 8));
    db.close().await.ok();
    drop(database);
}

/// Nothing happens to the organization after its grant: the sweeper still writes the
/// expiry entry within a few seconds of the instant, with its live event.
async fn an_idle_organizations_expiry_is_written_within_seconds(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Idle").await;
    let key = app.create_key(&org).await;
    let expiring = grant_lot(&app, &org, 30, json!({ "expiresAt": in_seconds(1) })).await;
    let mut socket = crate::ws_client::WsClient::connect(&app.base, crate::ws_client::TRANSPORT_WS, &key).await;
    socket.subscribe(false, "s", "subscription { creditBalanceChanged { balance available } }", json!({})).await;
    let started = std::time::Instant::now();
    let event = socket.message().await;
    assert_eq!(event["payload"]["data"]["creditBalanceChanged"], json!({ "balance": 0, "available": 0 }), "{event}");
    assert!(started.elapsed() < std::time::Duration::from_secs(7), "written within seconds of the instant");
    let data = app
        .ok(
            Some(&key),
            "{ creditTransactions(first: 5, filter: { kinds: [EXPIRY] }) { edges { node { amount createdAt } } } }",
            json!({}),
        )
        .await;
    let expiry = &data["creditTransactions"]["edges"][0]["node"];
    assert_eq!(expiry["amount"], -30);
    assert_eq!(expiry["createdAt"], expiring["lot"]["expiresAt"]);
    assert_eq!(app.transaction_sum(&key).await, (0, 2));
}

/// A database as the previous version left it (every migration before lots), with an
/// organization holding 120 credits, upgraded by starting the server on it.
async fn balances_from_before_lots_become_one_promotional_lot_when_the_server_upgrades(engine: Engine) {
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, Statement};
    let Some(database) = crate::helpers::database(engine).await else { return };
    let db = credits::db::connect(&database.url).await.expect("connect");
    let before_lots = migration::Migrator::migrations()
        .iter()
        .position(|step| step.name().contains("create_credit_lots_and_holds"))
        .expect("the lots migration") as u32;
    migration::Migrator::up(&db, Some(before_lots)).await.expect("migrate to the previous version");
    let backend = db.get_database_backend();
    let at = chrono::Utc::now();
    let placeholders = |n: usize| -> String {
        (1..=n)
            .map(|i| if backend == sea_orm::DbBackend::Postgres { format!("${i}") } else { "?".to_owned() })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (sql, values) in [
        (
            format!(
                "INSERT INTO organizations (id, name, low_balance_threshold, created_at) VALUES ({})",
                placeholders(4)
            ),
            vec!["org_legacy".into(), "Legacy".into(), sea_orm::Value::BigInt(None), at.into()],
        ),
        (
            format!(
                "INSERT INTO credit_balances (id, organization_id, balance, version, updated_at) VALUES ({})",
                placeholders(5)
            ),
            vec!["bal_legacy".into(), "org_legacy".into(), 120i64.into(), 2i64.into(), at.into()],
        ),
        (
            format!(
                "INSERT INTO credit_transactions (id, organization_id, seq, kind, amount, balance_after, description, created_at) VALUES ({})",
                placeholders(8)
            ),
            vec![
                "ctx_legacy1".into(),
                "org_legacy".into(),
                1i64.into(),
                "GRANT".into(),
                150i64.into(),
                150i64.into(),
                "welcome".into(),
                at.into(),
            ],
        ),
        (
            format!(
                "INSERT INTO credit_transactions (id, organization_id, seq, kind, amount, balance_after, description, created_at) VALUES ({})",
                placeholders(8)
            ),
            vec![
                "ctx_legacy2".into(),
                "org_legacy".into(),
                2i64.into(),
                "CONSUMPTION".into(),
                (-30i64).into(),
                120i64.into(),
                "use".into(),
                at.into(),
            ],
        ),
    ] {
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await.expect("legacy row");
    }
    db.close().await.ok();

    let app = crate::helpers::spawn_app_on(&database.url, &[]).await;
    let key = app.create_key("org_legacy").await;
    // The open lots are read from the legacy lot on (its `seq` is 0).
    let db = credits::db::connect(&database.url).await.expect("connect");
    let open_lots_from: i64 = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT open_lots_from FROM credit_balances WHERE organization_id = 'org_legacy'",
        ))
        .await
        .expect("query")
        .expect("the balance")
        .try_get("", "open_lots_from")
        .expect("open_lots_from");
    assert_eq!(open_lots_from, 0);
    db.close().await.ok();
    let data = app
        .ok(
            Some(&key),
            "{ creditBalance { balance available } creditLots { totalCount edges { node { category priority original remaining expiresAt status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["creditBalance"]["balance"], 120);
    assert_eq!(data["creditBalance"]["available"], 120);
    assert_eq!(data["creditLots"]["totalCount"], 1, "{data}");
    let lot = &data["creditLots"]["edges"][0]["node"];
    assert_eq!(lot["category"], "PROMOTIONAL");
    assert_eq!((lot["original"].as_i64(), lot["remaining"].as_i64()), (Some(120), Some(120)));
    assert_eq!(lot["expiresAt"], Value::Null);
    // The upgraded organization spends from its lot like any other.
    let consumed = consume(&app, &key, 20).await;
    assert_eq!(consumed["allocations"][0]["amount"], -20, "{consumed}");
    assert_eq!(app.balance(&key).await, 100);
    assert_eq!(app.transaction_sum(&key).await, (100, 3));
    drop(database);
}

const GRANT: &str = r#"mutation($org: ID!, $amount: Credits!, $category: CreditCategory, $priority: Int, $expiresAt: DateTime) {
    grantCredits(input: { organizationId: $org, amount: $amount, description: "lot", category: $category, priority: $priority, expiresAt: $expiresAt }) {
        lot { id category priority original remaining held status expiresAt source { id kind } }
        transaction { id allocations { lot { id } amount } } } }"#;

async fn grant_lot(app: &TestApp, org: &str, amount: i64, extra: Value) -> Value {
    let mut variables = json!({ "org": org, "amount": amount });
    variables.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    app.ok(Some(ADMIN_TOKEN), GRANT, variables).await["grantCredits"].clone()
}

async fn consume(app: &TestApp, key: &str, amount: i64) -> Value {
    app.ok(
        Some(key),
        "mutation($amount: Credits!) { consumeCredits(input: { amount: $amount, description: \"use\" }) { transaction { kind amount allocations { lot { id } amount } } } }",
        json!({ "amount": amount }),
    )
    .await["consumeCredits"]["transaction"]
        .clone()
}

async fn balance(app: &TestApp, key: &str) -> Value {
    app.ok(
        Some(key),
        "{ creditBalance { balance available held overdraftLimit spendable nextExpiration { at amount } } }",
        json!({}),
    )
    .await["creditBalance"]
        .clone()
}

fn in_seconds(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn consumption_draws_lots_in_draw_order_with_one_allocation_each(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Draw").await;
    let key = app.create_key(&org).await;
    let paid = grant_lot(&app, &org, 10, json!({ "category": "PAID" })).await;
    let promo = grant_lot(&app, &org, 10, json!({})).await;
    let far = grant_lot(&app, &org, 10, json!({ "category": "PAID", "expiresAt": in_seconds(7200) })).await;
    let soon = grant_lot(&app, &org, 10, json!({ "category": "PAID", "expiresAt": in_seconds(3600) })).await;
    let urgent = grant_lot(&app, &org, 10, json!({ "category": "PAID", "priority": 10 })).await;
    let promo_later = grant_lot(&app, &org, 10, json!({})).await;
    assert_eq!(paid["lot"]["category"], "PAID");
    assert_eq!(promo["lot"]["category"], "PROMOTIONAL");
    assert_eq!(promo["lot"]["priority"], 50);
    assert_eq!(promo["lot"]["source"]["kind"], "GRANT");
    assert_eq!(promo["transaction"]["allocations"], json!([{ "lot": { "id": promo["lot"]["id"] }, "amount": 10 }]));

    let transaction = consume(&app, &key, 55).await;
    let id = |grant: &Value| grant["lot"]["id"].clone();
    assert_eq!(
        transaction["allocations"],
        json!([
            { "lot": { "id": id(&urgent) }, "amount": -10 },
            { "lot": { "id": id(&soon) }, "amount": -10 },
            { "lot": { "id": id(&far) }, "amount": -10 },
            { "lot": { "id": id(&promo) }, "amount": -10 },
            { "lot": { "id": id(&promo_later) }, "amount": -10 },
            { "lot": { "id": id(&paid) }, "amount": -5 },
        ])
    );
    let data = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { ... on CreditLot { id remaining status } } }",
            json!({ "id": id(&paid) }),
        )
        .await;
    assert_eq!(data["node"]["remaining"], 5);
    assert_eq!(data["node"]["status"], "ACTIVE");
    let data = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { ... on CreditLot { status } } }",
            json!({ "id": id(&urgent) }),
        )
        .await;
    assert_eq!(data["node"]["status"], "DEPLETED");
    // Not enough: nothing changes, and the error carries `available`.
    let error = app
        .fails(
            Some(&key),
            "mutation { consumeCredits(input: { amount: 6, description: \"x\" }) { replayed } }",
            json!({}),
            "INSUFFICIENT_CREDITS",
        )
        .await;
    assert_eq!(error["extensions"]["available"], 5);
    assert_eq!(error["extensions"]["required"], 6);
}

async fn grants_validate_their_lot_and_lots_list_filter_and_resolve_by_node(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Lots").await;
    let key = app.create_key(&org).await;
    for bad in [json!({ "priority": 101 }), json!({ "priority": -1 }), json!({ "expiresAt": in_seconds(-5) })] {
        let mut variables = json!({ "org": org, "amount": 5 });
        variables.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        app.fails(Some(ADMIN_TOKEN), GRANT, variables, "BAD_USER_INPUT").await;
    }
    grant_lot(&app, &org, 5, json!({ "category": "PAID" })).await;
    let promo = grant_lot(&app, &org, 7, json!({ "priority": 3 })).await;
    let query = "query($filter: CreditLotFilter) { creditLots(first: 10, filter: $filter) { totalCount edges { cursor node { id category original } } } }";
    let all = app.ok(Some(&key), query, json!({})).await;
    assert_eq!(all["creditLots"]["totalCount"], 2);
    assert_eq!(all["creditLots"]["edges"][0]["node"]["id"], promo["lot"]["id"], "newest first");
    let paid = app.ok(Some(&key), query, json!({ "filter": { "categories": ["PAID"] } })).await;
    assert_eq!(paid["creditLots"]["totalCount"], 1);
    assert_eq!(paid["creditLots"]["edges"][0]["node"]["original"], 5);
    let depleted = app.ok(Some(&key), query, json!({ "filter": { "statuses": ["DEPLETED"] } })).await;
    assert_eq!(depleted["creditLots"]["totalCount"], 0);
    // Another organization cannot see the lot.
    let other = app.create_org("Other").await;
    let other_key = app.create_key(&other).await;
    let data =
        app.ok(Some(&other_key), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": promo["lot"]["id"] })).await;
    assert_eq!(data["node"], Value::Null);
}

async fn expired_credits_are_never_available_and_leave_as_an_expiry_entry(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Expiry").await;
    let key = app.create_key(&org).await;
    let expiring = grant_lot(&app, &org, 30, json!({ "expiresAt": in_seconds(2) })).await;
    grant_lot(&app, &org, 5, json!({ "category": "PAID" })).await;
    let before = balance(&app, &key).await;
    assert_eq!(before["available"], 35);
    assert_eq!(before["nextExpiration"]["amount"], 30);
    assert_eq!(before["nextExpiration"]["at"], expiring["lot"]["expiresAt"]);
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    // Past the instant: not available, even before anything is written.
    let after = balance(&app, &key).await;
    assert_eq!(after["available"], 5);
    assert_eq!(after["nextExpiration"], Value::Null);
    app.fails(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 6, description: \"x\" }) { replayed } }",
        json!({}),
        "INSUFFICIENT_CREDITS",
    )
    .await;
    let data = app
        .ok(
            Some(&key),
            "{ creditTransactions(first: 5, filter: { kinds: [EXPIRY] }) { edges { node { amount createdAt allocations { lot { id status remaining } amount } } } } creditBalance { balance available } }",
            json!({}),
        )
        .await;
    let expiry = &data["creditTransactions"]["edges"][0]["node"];
    assert_eq!(expiry["amount"], -30);
    assert_eq!(expiry["createdAt"], expiring["lot"]["expiresAt"], "dated at the lot's expiry");
    assert_eq!(expiry["allocations"][0]["lot"]["id"], expiring["lot"]["id"]);
    assert_eq!(expiry["allocations"][0]["lot"]["status"], "EXPIRED");
    assert_eq!(data["creditBalance"], json!({ "balance": 5, "available": 5 }));
    let (sum, _) = app.transaction_sum(&key).await;
    assert_eq!(sum, 5);
}

async fn voiding_a_lot_removes_its_remainder_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Void").await;
    let key = app.create_key(&org).await;
    let lot = grant_lot(&app, &org, 20, json!({ "priority": 0 })).await;
    consume(&app, &key, 8).await;
    let void = "mutation($id: ID!) { voidCreditLot(id: $id, description: \"mistake\") { lot { status remaining } transaction { kind amount allocations { amount } } balance { balance } } }";
    app.fails(Some(&key), void, json!({ "id": lot["lot"]["id"] }), "FORBIDDEN").await;
    let data = app.ok(Some(ADMIN_TOKEN), void, json!({ "id": lot["lot"]["id"] })).await;
    assert_eq!(
        data["voidCreditLot"],
        json!({ "lot": { "status": "VOIDED", "remaining": 0 }, "transaction": { "kind": "VOID", "amount": -12, "allocations": [{ "amount": -12 }] }, "balance": { "balance": 0 } })
    );
    let again = app.ok(Some(ADMIN_TOKEN), void, json!({ "id": lot["lot"]["id"] })).await;
    assert_eq!(again["voidCreditLot"]["transaction"], Value::Null);
    assert_eq!(again["voidCreditLot"]["balance"]["balance"], 0);
    app.fails(Some(ADMIN_TOKEN), void, json!({ "id": "lot_missing" }), "NOT_FOUND").await;
}

async fn overdraft_draws_null_lot_down_to_the_limit_and_grants_settle_debt_first(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Overdraft").await;
    let key = app.create_key(&org).await;
    grant_lot(&app, &org, 10, json!({})).await;
    let set = "mutation($org: ID!, $limit: Credits!) { setOverdraftLimit(organizationId: $org, limit: $limit) { balance overdraftLimit spendable } }";
    app.fails(Some(&key), set, json!({ "org": org, "limit": 50 }), "FORBIDDEN").await;
    let data = app.ok(Some(ADMIN_TOKEN), set, json!({ "org": org, "limit": 50 })).await;
    assert_eq!(data["setOverdraftLimit"], json!({ "balance": 10, "overdraftLimit": 50, "spendable": 60 }));
    let transaction = consume(&app, &key, 40).await;
    assert_eq!(transaction["allocations"][1], json!({ "lot": null, "amount": -30 }));
    app.fails(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 21, description: \"x\" }) { replayed } }",
        json!({}),
        "INSUFFICIENT_CREDITS",
    )
    .await;
    consume(&app, &key, 20).await;
    assert_eq!(balance(&app, &key).await["balance"], -50);
    let error = app.fails(Some(ADMIN_TOKEN), set, json!({ "org": org, "limit": 49 }), "BAD_USER_INPUT").await;
    assert_eq!(error["extensions"]["debt"], 50);
    // Equal to the debt: spending stops at once, nothing is taken back.
    let data = app.ok(Some(ADMIN_TOKEN), set, json!({ "org": org, "limit": 50 })).await;
    assert_eq!(data["setOverdraftLimit"]["spendable"], 0);
    let grant = grant_lot(&app, &org, 80, json!({})).await;
    assert_eq!(grant["lot"]["original"], 80);
    assert_eq!(grant["lot"]["remaining"], 30);
    assert_eq!(
        grant["transaction"]["allocations"],
        json!([{ "lot": null, "amount": 50 }, { "lot": { "id": grant["lot"]["id"] }, "amount": 30 }])
    );
    assert_eq!(balance(&app, &key).await["balance"], 30);
}
