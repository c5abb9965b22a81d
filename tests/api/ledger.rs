//! The ledger alone, without GraphQL or HTTP: its rules hold for any adapter.

use credits::ledger::{
    Amount, ConsumeRequest, GrantRequest, Ledger, LedgerError, PageRequest, TransactionFilter, TransactionKind,
};
use futures::future::join_all;

use crate::helpers::{Engine, database};
use crate::on_both_engines;

on_both_engines!(
    ledger_consume_grant_and_history,
    ledger_race_is_exact,
    ledger_refuses_unknown_organizations,
    ledger_a_key_reused_while_its_original_commits_is_answered_inside_the_batch,
    migrations_go_down_and_up_again,
    the_committer_writes_on_connections_of_its_own,
);

async fn migrations_go_down_and_up_again(engine: Engine) {
    use migration::MigratorTrait;
    let Some((ledger, _db)) = ledger(engine).await else { return };
    migration::Migrator::down(ledger.db(), None).await.expect("down");
    credits::db::migrate(ledger.db()).await.expect("up again");
    let org = ledger.create_organization("Again", None).await.expect("usable after re-migration");
    assert_eq!(ledger.balance(&org.id).await.unwrap().balance, 0);
}

/// The committer's connections ([`credits::db::writer_for`]): on PostgreSQL, real ones
/// that plan no sequential scan for their whole session (its batches begin with `BEGIN`
/// alone) while the pool's plan as PostgreSQL does; on a SQLite file, one of its own.
async fn the_committer_writes_on_connections_of_its_own(engine: Engine) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let Some((ledger, _db)) = ledger(engine).await else { return };
    let writer = credits::db::writer_for(ledger.db()).await;
    match engine {
        Engine::Postgres => {
            let setting = |db: sea_orm::DatabaseConnection| async move {
                let show = Statement::from_string(DbBackend::Postgres, "SHOW enable_seqscan");
                let row = db.query_one_raw(show).await.expect("show").expect("a row");
                row.try_get_by_index::<String>(0).expect("a setting")
            };
            assert_eq!(setting(writer).await, "off", "the committer's connection");
            assert_eq!(setting(ledger.db().clone()).await, "on", "the pool's");
        }
        Engine::Sqlite => {
            assert_eq!(writer.get_sqlite_connection_pool().options().get_max_connections(), 1);
        }
    }
    // And the ledger writes through them.
    let org = ledger.create_organization("Own", None).await.expect("organization").id;
    ledger
        .grant(GrantRequest::new(org.clone(), Amount::parse(5).expect("amount"), "g".into(), None).expect("grant"))
        .await
        .expect("granted");
    ledger.consume(consume(&org, 2, Some("own-1"))).await.expect("consumed");
    assert_eq!(ledger.balance(&org).await.expect("balance").balance, 3);
}

async fn ledger(engine: Engine) -> Option<(Ledger, crate::helpers::TestDatabase)> {
    let database = database(engine).await?;
    let db = credits::db::connect(&database.url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    // Migrating twice is a no-op.
    credits::db::migrate(&db).await.expect("migrate again");
    Some((Ledger::new(db), database))
}

fn consume(org: &str, amount: i64, key: Option<&str>) -> ConsumeRequest {
    ConsumeRequest::new(
        org.to_owned(),
        Amount::parse(amount).expect("amount"),
        "use".into(),
        Some("job".into()),
        None,
        key.map(str::to_owned),
    )
    .expect("request")
}

async fn ledger_consume_grant_and_history(engine: Engine) {
    let Some((ledger, _db)) = ledger(engine).await else {
        return;
    };
    let org = ledger.create_organization("Ledger", Some(10)).await.expect("org");
    let grant =
        GrantRequest::new(org.id.clone(), Amount::parse(100).unwrap(), "welcome".into(), Some("g1".into())).unwrap();
    let granted = ledger.grant(grant.clone()).await.expect("grant");
    assert_eq!((granted.balance.balance, granted.transaction.seq, granted.replayed), (100, 1, false));
    assert!(ledger.grant(grant).await.expect("replay").replayed);

    let used = ledger.consume(consume(&org.id, 40, Some("c1"))).await.expect("consume");
    assert_eq!((used.transaction.amount, used.transaction.balance_after, used.transaction.seq), (-40, 60, 2));
    assert_eq!(used.transaction.kind, TransactionKind::Consumption);
    // A grant key and a consume key live in one namespace per organization.
    assert!(matches!(ledger.consume(consume(&org.id, 1, Some("g1"))).await, Err(LedgerError::IdempotencyConflict)));
    assert!(matches!(
        ledger.consume(consume(&org.id, 61, None)).await,
        Err(LedgerError::InsufficientCredits { balance: 60, available: 60, required: 61 })
    ));

    let all = TransactionFilter::default();
    let page = ledger.transactions(&org.id, &all, PageRequest::Forward { count: 10, after: None }).await.unwrap();
    assert_eq!(page.items.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert!(!page.has_next);
    let grants = TransactionFilter { kinds: Some(vec![TransactionKind::Grant]), ..Default::default() };
    assert_eq!(ledger.count_transactions(&org.id, &grants).await.unwrap(), 1);
    let jobs = TransactionFilter { reference_type: Some("job".into()), ..Default::default() };
    assert_eq!(ledger.count_transactions(&org.id, &jobs).await.unwrap(), 1);
    let back = ledger.transactions(&org.id, &all, PageRequest::Backward { count: 1, before: None }).await.unwrap();
    assert_eq!((back.items[0].seq, back.has_previous), (1, true));
    assert_eq!(ledger.balance(&org.id).await.unwrap().balance, 60);
}

async fn ledger_race_is_exact(engine: Engine) {
    let Some((ledger, _db)) = ledger(engine).await else {
        return;
    };
    let org = ledger.create_organization("Race", None).await.unwrap();
    ledger
        .grant(GrantRequest::new(org.id.clone(), Amount::parse(500).unwrap(), "seed".into(), None).unwrap())
        .await
        .unwrap();
    let outcomes = join_all((0..200).map(|i| {
        let ledger = ledger.clone();
        let request = consume(&org.id, 3, Some(&format!("k{}", i % 100)));
        tokio::spawn(async move { ledger.consume(request).await })
    }))
    .await;
    let mut fresh = 0;
    for outcome in outcomes {
        match outcome.expect("task") {
            Ok(applied) if !applied.replayed => fresh += 1,
            Ok(_) => {}
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    assert_eq!(fresh, 100, "one charge per key");
    let balance = ledger.balance(&org.id).await.unwrap();
    assert_eq!(balance.balance, 500 - 300);
    assert_eq!(balance.version, 101, "one version per transaction, no gaps");
}

/// Callers retrying one key at once check for its original before they queue, so many
/// reach the committer after the original's batch has committed, in a later batch with
/// other work. Each of those is answered as a replay from inside its
/// batch: no batch ever fails on the unique key and falls back to committing its
/// members one by one.
async fn ledger_a_key_reused_while_its_original_commits_is_answered_inside_the_batch(engine: Engine) {
    let Some((ledger, _db)) = ledger(engine).await else {
        return;
    };
    let org = ledger.create_organization("Batched", None).await.unwrap();
    let seed = GrantRequest::new(org.id.clone(), Amount::parse(100_000).unwrap(), "seed".into(), None).unwrap();
    ledger.grant(seed).await.unwrap();
    let (rounds, callers) = (20usize, 60usize);
    for round in 0..rounds {
        let key = format!("shared-{round}");
        let outcomes = join_all((0..callers).map(|i| {
            let ledger = ledger.clone();
            // Every other caller retries the shared key; the rest consume without one.
            let request = if i % 2 == 0 { consume(&org.id, 3, Some(&key)) } else { consume(&org.id, 1, None) };
            tokio::spawn(async move { (i % 2 == 0, ledger.consume(request).await) })
        }))
        .await;
        let (mut shared_ids, mut fresh) = (std::collections::HashSet::new(), 0);
        for outcome in outcomes {
            let (shared, applied) = outcome.expect("task");
            let applied = applied.unwrap_or_else(|error| panic!("round {round}: unexpected {error:?}"));
            if shared {
                shared_ids.insert(applied.transaction.id);
                fresh += usize::from(!applied.replayed);
            }
        }
        assert_eq!((shared_ids.len(), fresh), (1, 1), "round {round}: the shared key charged once, then replayed");
    }
    let balance = ledger.balance(&org.id).await.unwrap();
    assert_eq!(balance.balance, 100_000 - (rounds * (3 + callers / 2)) as i64);
    assert_eq!(balance.version, 1 + (rounds * (1 + callers / 2)) as i64, "one transaction per charge");
    assert_eq!(ledger.batch_fallbacks(), 0, "no batch fell back to committing its members one by one");
}

async fn ledger_refuses_unknown_organizations(engine: Engine) {
    let Some((ledger, _db)) = ledger(engine).await else {
        return;
    };
    assert!(matches!(ledger.consume(consume("org_missing", 1, None)).await, Err(LedgerError::OrganizationNotFound)));
    assert!(matches!(ledger.balance("org_missing").await, Err(LedgerError::OrganizationNotFound)));
    assert!(matches!(ledger.create_api_key("org_missing", "k").await, Err(LedgerError::OrganizationNotFound)));
    assert!(Amount::parse(0).is_err() && Amount::parse(-1).is_err() && Amount::parse(1 << 53).is_err());
}
