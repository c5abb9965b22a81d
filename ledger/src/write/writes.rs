//! The statements of one commit, sent together where that saves round trips.
//!
//! A batch of consumes writes four tables and sends its hints: five statements, each a
//! round trip to PostgreSQL and a wake-up on either side, while the committer's lane
//! (and every request in its batch) waits. On PostgreSQL [`Writes`] holds them and sends
//! them as one statement, each an arm of a `WITH` whose primary query counts every arm's
//! rows. The arms run against one snapshot, in no set order, so no two may touch one row
//! and none may read another's writes: the transactions, the usage rollup, the balances,
//! the outgoing events, their deliveries and the audit rows each have an arm of their own
//! table; the lots have two, the new ones inserted and the changed ones updated, which
//! [`State::take_lot_changes`](crate::decide::State::take_lot_changes) never lets share a
//! lot; the notifications read nothing written, and the deliveries read only the webhook
//! endpoints, which no arm writes (each delivery names its event, written by another
//! arm, by id alone: no foreign key checks it). Whatever is written at once instead (the
//! holds, an auto top-up's start) must not refer to a row still held, and nothing does:
//! no table of ours refers to transactions, lots or balances. On SQLite there is no
//! network, but each statement is still a trip to the connection's worker thread and
//! back, two thread wake-ups on a busy machine: there [`Writes`] sends the held
//! statements as one text of several, in the order pushed, each followed by
//! `SELECT changes()` for its count. They run one after another, so each sees the ones
//! before it, which is more than the rules above need.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use crate::LedgerError;
use crate::commit::idempotency::duplicate_key_or;

/// Statements written in one transaction, held until [`Writes::send`]. Dropped unsent,
/// the held ones are lost, the transaction committing without them: whoever has one must
/// send it.
#[derive(Debug)]
#[must_use = "the writes are held until sent"]
pub(crate) struct Writes {
    backend: DbBackend,
    held: Vec<(Statement, Expect)>,
}

/// What a statement must do for the transaction to go on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    /// Anything.
    Any,
    /// Touch exactly this many rows, or else fail the transaction with this message (a
    /// row changed under its lock).
    Rows(u64, &'static str),
}

impl Writes {
    /// None yet, for a transaction on `backend`.
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self { backend, held: Vec::new() }
    }

    /// Writes `statement` (a data-modifying one, or a `SELECT` for its side effects) with
    /// the next [`Writes::send`]; on SQLite a `SELECT` at once (its rows would be read as
    /// counts). Answers where it is held, to find its count in what [`Writes::send`]
    /// answers (none for a `SELECT` run at once). A taken idempotency key is
    /// [`LedgerError::DuplicateIdempotencyKey`].
    pub(crate) async fn push(
        &mut self,
        txn: &DatabaseTransaction,
        statement: Statement,
        expect: Expect,
    ) -> Result<Option<Held>, LedgerError> {
        if self.backend == DbBackend::Sqlite
            && statement.sql.trim_start().get(..6).is_some_and(|word| word.eq_ignore_ascii_case("SELECT"))
        {
            let rows = txn.execute_raw(statement).await.map_err(duplicate_key_or)?.rows_affected();
            return check(expect, rows).map(|()| None);
        }
        self.held.push((statement, expect));
        Ok(Some(Held(self.held.len() - 1)))
    }

    /// Sends every statement held, as one; answers the rows each touched.
    pub(crate) async fn send(&mut self, txn: &DatabaseTransaction) -> Result<Counts, LedgerError> {
        if self.held.len() < 2 {
            let Some((statement, expect)) = self.held.pop() else { return Ok(Counts(Vec::new())) };
            let rows = txn.execute_raw(statement).await.map_err(duplicate_key_or)?.rows_affected();
            return check(expect, rows).map(|()| Counts(vec![rows]));
        }
        let held = std::mem::take(&mut self.held);
        if self.backend == DbBackend::Sqlite {
            let (statement, expects) = in_sequence(held);
            let rows = txn.query_all_raw(statement).await.map_err(duplicate_key_or)?;
            let counts = rows.iter().map(|row| row.try_get_by_index::<i64>(0)).collect::<Result<Vec<_>, _>>()?;
            return check_all(&expects, &counts);
        }
        let (statement, expects) = one_statement(held);
        let row = txn.query_one_raw(statement).await.map_err(duplicate_key_or)?;
        let row = row.ok_or_else(|| LedgerError::internal("the writes answered no row"))?;
        let counts = (0..expects.len()).map(|i| row.try_get_by_index::<i64>(i)).collect::<Result<Vec<_>, _>>()?;
        check_all(&expects, &counts)
    }
}

/// Where a held statement stands among those [`Writes::send`] sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held(usize);

/// The rows each held statement touched, in the order held.
#[derive(Debug)]
pub(crate) struct Counts(Vec<u64>);

impl Counts {
    /// The rows the statement `held` touched.
    pub(crate) fn of(&self, held: Held) -> u64 {
        self.0.get(held.0).copied().unwrap_or(0)
    }
}

/// SQLite statements as one text of several, each followed by `SELECT changes()` (the
/// rows it changed, inserted or deleted), their parameters (plain `?`, bound in order
/// across the statements) one list.
fn in_sequence(held: Vec<(Statement, Expect)>) -> (Statement, Vec<Expect>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    let mut expects = Vec::with_capacity(held.len());
    for (statement, expect) in held {
        sql.push_str(statement.sql.trim_end().trim_end_matches(';'));
        sql.push_str("; SELECT changes(); ");
        values.extend(statement.values.map(|values| values.0).unwrap_or_default());
        expects.push(expect);
    }
    (Statement::from_sql_and_values(DbBackend::Sqlite, sql, values), expects)
}

/// Whether a statement that touched `rows` rows did what `expect` asks.
fn check(expect: Expect, rows: u64) -> Result<(), LedgerError> {
    match expect {
        Expect::Rows(wanted, message) if rows != wanted => Err(LedgerError::internal(message)),
        _ => Ok(()),
    }
}

/// [`check`] for each arm of one statement, by its count.
fn check_all(expects: &[Expect], counts: &[i64]) -> Result<Counts, LedgerError> {
    if expects.len() != counts.len() {
        return Err(LedgerError::internal("the writes answered another number of counts"));
    }
    let mut rows = Vec::with_capacity(counts.len());
    for (expect, count) in expects.iter().zip(counts) {
        let count = u64::try_from(*count).map_err(|_| LedgerError::internal("a negative count"))?;
        check(*expect, count)?;
        rows.push(count);
    }
    Ok(Counts(rows))
}

/// PostgreSQL statements as the arms `w0`, `w1`, … of one `WITH`, each data-modifying
/// one `RETURNING 1`, their parameters numbered on; the primary query answers one row of
/// each arm's count (which also makes a `SELECT` arm run: only data-modifying arms run
/// unread).
fn one_statement(held: Vec<(Statement, Expect)>) -> (Statement, Vec<Expect>) {
    let mut arms = Vec::with_capacity(held.len());
    let mut counts = Vec::with_capacity(held.len());
    let mut values = Vec::new();
    let mut expects = Vec::with_capacity(held.len());
    for (i, (statement, expect)) in held.into_iter().enumerate() {
        let sql = renumbered(&statement.sql, values.len());
        let returning = if sql.trim_start().starts_with("SELECT") { "" } else { " RETURNING 1" };
        arms.push(format!("w{i} AS ({sql}{returning})"));
        counts.push(format!("(SELECT count(*) FROM w{i})"));
        values.extend(statement.values.map(|values| values.0).unwrap_or_default());
        expects.push(expect);
    }
    let sql = format!("WITH {} SELECT {}", arms.join(", "), counts.join(", "));
    (Statement::from_sql_and_values(DbBackend::Postgres, sql, values), expects)
}

/// `sql` with each parameter `$n` outside a quoted string or name made `$(n + by)`. Our
/// statements use no dollar-quoted bodies, `E''` strings or comments, which it does not
/// read as such.
fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + digit as usize;
                    chars.next();
                }
                out.push('$');
                out.push_str(&(n + by).to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_on_outside_quotes() {
        assert_eq!(renumbered("SELECT $1, $2::jsonb, '$1', \"$2\", $10", 3), "SELECT $4, $5::jsonb, '$1', \"$2\", $13");
        assert_eq!(
            renumbered("UPDATE t SET a = 'it''s $1' WHERE b = $1", 1),
            "UPDATE t SET a = 'it''s $1' WHERE b = $2"
        );
        assert_eq!(renumbered("SELECT $ 1, $x", 5), "SELECT $ 1, $x");
    }

    #[test]
    fn statements_become_arms_of_one_with() {
        let a = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE a SET x = $1 WHERE id = $2",
            [1.into(), "a".into()],
        );
        let b = Statement::from_sql_and_values(DbBackend::Postgres, "SELECT pg_notify($1, 'x')", ["c".into()]);
        let (statement, expects) = one_statement(vec![(a, Expect::Rows(1, "a")), (b, Expect::Any)]);
        assert_eq!(
            statement.sql,
            "WITH w0 AS (UPDATE a SET x = $1 WHERE id = $2 RETURNING 1), w1 AS (SELECT pg_notify($3, 'x')) \
             SELECT (SELECT count(*) FROM w0), (SELECT count(*) FROM w1)"
        );
        assert_eq!(statement.values.map(|values| values.0.len()), Some(3));
        assert_eq!(expects.len(), 2);
    }

    /// On SQLite the held statements run as one text, in order (each sees the ones
    /// before it), their plain `?` parameters bound in order across them, each held to
    /// its own count; a statement pushed is not run before the send.
    #[tokio::test]
    async fn sqlite_runs_the_held_statements_as_one_text_in_order() {
        use sea_orm::TransactionTrait;
        let db = crate::db::connect("sqlite::memory:").await.expect("in-memory SQLite");
        db.execute_unprepared("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL)").await.expect("table");
        let statement =
            |sql: &str, values: Vec<sea_orm::Value>| Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
        let txn = db.begin().await.expect("begin");
        let mut writes = Writes::new(DbBackend::Sqlite);
        let insert =
            statement("INSERT INTO t (id, n) VALUES (?, ?), (?, ?)", vec!["a".into(), 1.into(), "b".into(), 2.into()]);
        let inserted = writes.push(&txn, insert, Expect::Any).await.expect("held").expect("held, not run");
        let rows = txn.query_one_raw(statement("SELECT count(*) FROM t", vec![])).await.expect("count").expect("a row");
        assert_eq!(rows.try_get_by_index::<i64>(0).expect("count"), 0, "held, not run");
        let update = statement("UPDATE t SET n = n + ? WHERE id = ?", vec![10.into(), "b".into()]);
        let updated = writes.push(&txn, update, Expect::Rows(1, "one row")).await.expect("held").expect("held");
        let counts = writes.send(&txn).await.expect("sent");
        assert_eq!((counts.of(inserted), counts.of(updated)), (2, 1), "each statement's own count");
        let sum = txn.query_one_raw(statement("SELECT sum(n) FROM t", vec![])).await.expect("sum").expect("a row");
        assert_eq!(
            sum.try_get_by_index::<i64>(0).expect("sum"),
            13,
            "the update saw the insert, its values bound in order"
        );

        let mut writes = Writes::new(DbBackend::Sqlite);
        writes
            .push(&txn, statement("UPDATE t SET n = 0 WHERE n > ?", vec![0.into()]), Expect::Any)
            .await
            .expect("held");
        writes
            .push(&txn, statement("DELETE FROM t WHERE n = ?", vec![0.into()]), Expect::Rows(1, "one gone"))
            .await
            .expect("held");
        let error = writes.send(&txn).await.expect_err("two rows deleted, one expected");
        assert!(error.to_string().contains("one gone"), "{error}");
        txn.rollback().await.expect("rollback");
    }

    #[test]
    fn every_arm_is_held_to_its_own_count() {
        let expects = [Expect::Any, Expect::Rows(2, "lots"), Expect::Rows(1, "balances")];
        assert!(check_all(&expects, &[5, 2, 1]).is_ok());
        let lots = check_all(&expects, &[5, 1, 1]).expect_err("a lot short");
        assert!(lots.to_string().contains("lots"), "{lots}");
        let balances = check_all(&expects, &[0, 2, 2]).expect_err("a balance over");
        assert!(balances.to_string().contains("balances"), "{balances}");
        assert!(check_all(&expects, &[5, 2]).is_err(), "a count missing");
        assert!(check_all(&[Expect::Rows(0, "none")], &[-1]).is_err(), "a negative count");
    }
}
