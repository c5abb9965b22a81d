//! Connecting to the database: pools tuned per engine, how a write transaction begins,
//! the committer's own SQLite connection, the availability probe, and statements whose
//! rows come as one JSON array ([`JsonRows`], [`one_of`]).

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

/// A PostgreSQL connection idle at least this long is pinged before it is used again.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a statement may run on PostgreSQL unless configured otherwise.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool on `url` (`sqlite://…` or `postgres://…`) with the default statement timeout.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, DEFAULT_STATEMENT_TIMEOUT).await
}

/// Opens a pool on `url`. On PostgreSQL every statement is cancelled after
/// `statement_timeout`, so one slow query cannot hold a connection for long.
///
/// Durability: SQLite runs `synchronous=FULL`, so a committed transaction (and the 2xx
/// that follows it) survives a power loss, not only a crash of this process.
pub async fn connect_with(url: &str, statement_timeout: Duration) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.connect_timeout(Duration::from_secs(3)).acquire_timeout(Duration::from_secs(3)).sqlx_logging(false);
    if url.starts_with("sqlite:") {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // An in-memory database lives as long as its one connection.
        options.max_connections(if in_memory { 1 } else { 8 });
        if in_memory {
            options.idle_timeout(None::<Duration>).max_lifetime(None::<Duration>);
        }
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
        });
        options.map_sqlx_sqlite_pool_opts(sqlite_connections);
    } else {
        let timeout_ms = statement_timeout.as_millis().to_string();
        // A connection idle for a while is pinged before use (a server restart or a proxy
        // may have closed it); one in steady use is not: sqlx's default pings before every
        // use, one more round trip to PostgreSQL per statement.
        options
            .max_connections(20)
            .min_connections(1)
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            .map_sqlx_postgres_opts(move |opts| opts.options([("statement_timeout", timeout_ms.as_str())]));
    }
    Database::connect(options).await
}

/// Starts a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of
/// failing when a read lock cannot be upgraded.
///
/// On PostgreSQL it plans no sequential scan: every statement of a write finds its rows
/// by key, and a connection keeps the plan it made for a statement, so one made while
/// the tables were small (a new database) would scan them whole ever after (it did:
/// every lot, every batch, 11 ms at 4,000 lots in the benchmark). A plan made here may
/// serve the same statement outside a write on that connection, and one made outside
/// may serve it here; our writes and reads alike find their rows by index.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    begin_with(db, "").await
}

/// Begins a write; on PostgreSQL with no sequential scans and `more` settings, in one
/// round trip (a simple query may hold several statements).
async fn begin_with(db: &DatabaseConnection, more: &str) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            db.begin_with_options(options).await
        }
        _ => {
            let txn = db.begin().await?;
            txn.execute_unprepared(&format!("SET LOCAL enable_seqscan = off;{more}")).await?;
            Ok(txn)
        }
    }
}

/// How every SQLite connection of ours behaves, the pool's and the committer's own: it
/// plans each statement once ([`stable_plans`]), and it is not pinged before each use
/// (sqlx's default): a file opened by this process does not go away, and a ping is a
/// round trip to the connection's worker thread (half of a read's thread wake-ups).
fn sqlite_connections(pool: SqlitePoolOptions) -> SqlitePoolOptions {
    pool.test_before_acquire(false).after_connect(|connection, _| {
        Box::pin(async move {
            let mut handle = connection.lock_handle().await?;
            stable_plans(&mut handle);
            Ok(())
        })
    })
}

/// Makes a SQLite connection plan each statement once, whatever its bound values (the
/// query-planner stability guarantee). Otherwise SQLite prepares a statement again at
/// every run whose bound values may change its plan, and every `LIMIT ?` is such a value
/// (SeaORM binds the `LIMIT 1` of each `.one()`): a tenth of the server's CPU under
/// `creditBalance` reads went to preparing the same statement again. Our statements find
/// their rows by key, so no plan depends on the values.
fn stable_plans(handle: &mut sea_orm::sqlx::sqlite::LockedSqliteHandle<'_>) {
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the open connection the lock hands out, used on this thread only
    // while the lock is held; the call takes an int and a null out-pointer, as documented
    // for SQLITE_DBCONFIG_ENABLE_QPSG.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        tracing::warn!(rc, "SQLite would not keep its query plans stable; statements are prepared more often");
    }
}

/// [`begin_write`] for the outgoing webhooks' own bookkeeping (claims, attempts, the
/// fan-out of an older version's events): on PostgreSQL its commit does not wait for the
/// WAL to reach the disk. Nothing is lost by a crash before it does: the events and their
/// deliveries were committed durably with their changes; an older version's events not
/// yet fanned out are fanned out again, and an
/// attempt not yet recorded is made again (at least once, as the contract says). What
/// one replica commits is seen by the others at once all the same, so no two send one
/// attempt together. It spares the dispatcher a disk flush per round, which the ledger's
/// own commits would otherwise queue behind.
pub(crate) async fn begin_bookkeeping(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    begin_with(db, " SET LOCAL synchronous_commit = off").await
}

/// After how many pages of write-ahead log the committer's connection copies them into
/// the database file itself (SQLite's default is 1,000): a safety net. The copying is done
/// beside it, every [`CHECKPOINT_EVERY`] ([`checkpoint_beside`]). The log starts again
/// from its beginning whenever a checkpoint has copied all of it and no reader still uses
/// it, so it stays small; a long reader (a backup's `VACUUM INTO`) lets it grow meanwhile,
/// and the file keeps the largest size it reached.
///
/// Before, the committer checkpointed every 600 pages itself, and the batch whose commit
/// crossed that waited for the copy: under 1,000 organizations' consumes (about 120 pages
/// a batch: each organization's rows and index entries are on pages of their own) its
/// `COMMIT` took 3.1 ms on average, 1.7 ms with the copying beside it
/// (docs/performance.md, session 19).
pub const COMMITTER_CHECKPOINT_PAGES: u32 = 16_000;

/// How often the committer's write-ahead log is copied into the database file beside it.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Copies the committer's write-ahead log (`writer`, [`writer_for`]) into the database
/// file every [`CHECKPOINT_EVERY`], on a connection of its own, for as long as `alive`
/// lives, when the log has been written since the last. A passive checkpoint: it never
/// waits for the committer nor makes it wait, and copies what no reader still needs from
/// the log, syncing the file as the connection's `synchronous` setting says. Nothing for
/// PostgreSQL or an in-memory SQLite.
pub(crate) fn checkpoint_beside<T: Send + Sync + 'static>(writer: &DatabaseConnection, alive: std::sync::Weak<T>) {
    use sea_orm::sqlx::ConnectOptions as _;
    if writer.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    let options = (*writer.get_sqlite_connection_pool().connect_options()).clone();
    if in_memory(&options) {
        return;
    }
    let wal = {
        let mut name = options.get_filename().as_os_str().to_owned();
        name.push("-wal");
        std::path::PathBuf::from(name)
    };
    tokio::spawn(async move {
        let mut connection = None;
        // When the log was last written as of the last checkpoint: an idle server's log
        // is not checkpointed again (a stat, not a statement, every tick).
        let mut copied = None;
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if alive.strong_count() == 0 {
                return;
            }
            let written = std::fs::metadata(&wal).ok().map(|metadata| (metadata.len(), metadata.modified().ok()));
            if written.is_some() && written == copied {
                continue;
            }
            let open = match &mut connection {
                Some(open) => open,
                None => match options.connect().await {
                    Ok(open) => connection.insert(open),
                    Err(error) => {
                        tracing::warn!(%error, "cannot open the checkpoint connection; trying again");
                        continue;
                    }
                },
            };
            let checkpoint = sea_orm::sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *open).await;
            match checkpoint {
                Ok(_) => copied = written,
                Err(error) => {
                    tracing::warn!(%error, "checkpoint failed; reconnecting");
                    connection = None;
                }
            }
        }
    });
}

/// Whether a SQLite connection is to an in-memory database (which has no log to copy).
fn in_memory(options: &sea_orm::sqlx::sqlite::SqliteConnectOptions) -> bool {
    let file = options.get_filename().to_string_lossy();
    file == ":memory:" || file.starts_with("file:sqlx-in-memory")
}

/// The connection the group committer writes through (and on SQLite the background
/// workers' bookkeeping, [`crate::Ledger::bookkeeper`]): on a SQLite file, one of its own
/// that it keeps, so that its page cache stays warm from batch to batch. SQLite drops a
/// connection's whole cache whenever another connection has committed since its last
/// transaction, and a pool hands out its connections in turn, so every batch would
/// otherwise read again, from the file, each page it touches. For an in-memory SQLite,
/// which [`connect_with`] gives exactly one connection because the database lives in it,
/// the pool itself. On PostgreSQL, a pool of its own: a connection a lane, planning no
/// sequential scan.
///
/// Its statement journals stay in memory (`temp_store = memory`). A batch is one
/// transaction of many statements, and each statement that writes many rows keeps a copy
/// of every page it changes that an earlier statement of the batch had changed, so that
/// it alone can be undone; on a file that copy was a `pwrite` of 4 KiB each time, about a
/// fifth of the committer's SQLite time under 1,000 organizations (`docs/performance.md`,
/// session 14). Such a journal holds one statement's pages, a few hundred KiB at most. Only
/// this connection: reports sort on the pool's, and their sorts may still spill to disk.
///
/// Its write-ahead log is copied into the database file beside it ([`checkpoint_beside`]),
/// and by itself only at [`COMMITTER_CHECKPOINT_PAGES`].
pub async fn writer_for(db: &DatabaseConnection) -> DatabaseConnection {
    match db.get_database_backend() {
        DbBackend::Postgres => return committer_pool(db),
        DbBackend::Sqlite => {}
        _ => return db.clone(),
    }
    let pool = db.get_sqlite_connection_pool();
    let options = pool.connect_options();
    if pool.options().get_max_connections() <= 1 || in_memory(&options) {
        return db.clone();
    }
    let own = sqlite_connections(SqlitePoolOptions::new())
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_with(
            (*options)
                .clone()
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", COMMITTER_CHECKPOINT_PAGES.to_string()),
        )
        .await;
    match own {
        Ok(own) => sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(own),
        Err(error) => {
            tracing::warn!(%error, "the committer writes through the shared pool");
            db.clone()
        }
    }
}

/// The committer's connections on PostgreSQL: one for each of its lanes, made when first
/// used, each planning no sequential scan for its whole session (asked for when it
/// connects), so that a batch begins with `BEGIN` alone ([`begin_committing`]) where
/// [`begin_write`] needs a second statement. The rest as the pool's: its address and
/// statement timeout, pinged only after an idle second.
fn committer_pool(db: &DatabaseConnection) -> DatabaseConnection {
    use sea_orm::sqlx::Connection;
    let pool = db.get_postgres_connection_pool();
    let options = (*pool.connect_options()).clone().options([("enable_seqscan", "off")]);
    let own = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(crate::commit::POSTGRES_LANES as u32)
        .min_connections(0)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options);
    sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(own)
}

/// Starts a batch's transaction on the committer's connections ([`writer_for`]): as
/// [`begin_write`], but on PostgreSQL `BEGIN` alone, those connections planning no
/// sequential scan already ([`committer_pool`]).
pub(crate) async fn begin_committing(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => db.begin().await,
        _ => begin_write(db).await,
    }
}

/// The columns of `credit_balances`, in [`credit_balance::Model`]'s order.
///
/// [`credit_balance::Model`]: entity::credit_balance::Model
macro_rules! balance_columns {
    () => {
        "id, organization_id, balance, held, overdraft_limit, next_event_at, version, generation, \
         open_lots_from, low_balance_threshold, auto_top_up_below, updated_at"
    };
}

/// An organization's balance row, read with one fixed statement straight through sqlx:
/// `creditBalance` is the hottest read, and building the statement with SeaORM's query
/// builder and mapping its columns by name cost it more than the statement itself
/// (`docs/performance.md`, session 12). Values decode as SeaORM decodes them.
pub(crate) async fn balance_row(
    db: &DatabaseConnection,
    organization_id: &str,
) -> Result<Option<entity::credit_balance::Model>, DbErr> {
    use sea_orm::sqlx;
    let query_error = |error: sqlx::Error| DbErr::Query(sea_orm::RuntimeErr::SqlxError(error.into()));
    // The same statement and mapping on either engine's pool (their row types differ).
    macro_rules! read {
        ($pool:expr, $sql:expr) => {{
            use sqlx::Row as _;
            let row = sqlx::query($sql).bind(organization_id).fetch_optional($pool).await?;
            row.map(|row| -> Result<_, sqlx::Error> {
                Ok(entity::credit_balance::Model {
                    id: row.try_get(0)?,
                    organization_id: row.try_get(1)?,
                    balance: row.try_get(2)?,
                    held: row.try_get(3)?,
                    overdraft_limit: row.try_get(4)?,
                    next_event_at: row.try_get(5)?,
                    version: row.try_get(6)?,
                    generation: row.try_get(7)?,
                    open_lots_from: row.try_get(8)?,
                    low_balance_threshold: row.try_get(9)?,
                    auto_top_up_below: row.try_get(10)?,
                    updated_at: row.try_get(11)?,
                })
            })
            .transpose()
        }};
    }
    let found = async {
        match db.get_database_backend() {
            DbBackend::Sqlite => read!(
                db.get_sqlite_connection_pool(),
                concat!("SELECT ", balance_columns!(), " FROM credit_balances WHERE organization_id = ?")
            ),
            _ => read!(
                db.get_postgres_connection_pool(),
                concat!("SELECT ", balance_columns!(), " FROM credit_balances WHERE organization_id = $1")
            ),
        }
    }
    .await;
    found.map_err(query_error)
}

/// Whether the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// Whether the database is reachable, as a background probe last found it; shared by
/// every request so that, during an outage, each is refused at once (503) instead of
/// waiting for the pool's acquire timeout, and by the committer, which stops waiting for
/// a connection the moment the probe finds the database gone ([`Availability::unless_down`]).
/// The probe opens its own connection, outside the pool, so a pool busy with slow queries
/// is never mistaken for an outage.
#[derive(Clone, Debug)]
pub struct Availability {
    down: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Availability {
    fn default() -> Self {
        Self { down: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)) }
    }
}

/// How often the probe connects.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

impl Availability {
    /// Whether the last probe failed.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Runs `work` (the start of a transaction: nothing written yet), unless the probe
    /// finds the database gone first: then the answer is
    /// [`LedgerError::Unavailable`](crate::LedgerError::Unavailable) at once, and `work`
    /// finishes in a task of its own, whatever it began dropped (a transaction whose
    /// `BEGIN` was already sent is rolled back, not left open on its connection). A pool
    /// asked for a connection during an outage keeps trying to connect until its acquire
    /// timeout; whatever queued behind that wait would wait too.
    pub async fn unless_down<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, DbErr>> + Send + 'static,
    ) -> Result<T, crate::LedgerError> {
        let mut down = self.down.subscribe();
        let mut work = Box::pin(work);
        tokio::select! {
            biased;
            result = &mut work => Ok(result?),
            _ = down.wait_for(|down| *down) => {
                tokio::spawn(async move { drop(work.await) });
                Err(unavailable())
            }
        }
    }

    /// Starts probing `db` (PostgreSQL only: an embedded SQLite file does not go away).
    /// Needs a Tokio runtime; ends when every clone of this handle is dropped.
    pub fn start_probe(&self, db: &DatabaseConnection) {
        if db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        let options = db.get_postgres_connection_pool().connect_options();
        let weak = std::sync::Arc::downgrade(&self.down);
        tokio::spawn(async move {
            use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let Some(down) = weak.upgrade() else { return };
                let reachable = match tokio::time::timeout(Duration::from_secs(2), options.connect()).await {
                    Ok(Ok(connection)) => {
                        let _ = connection.close().await;
                        true
                    }
                    _ => false,
                };
                let was_down = down.send_replace(!reachable);
                match (was_down, reachable) {
                    (false, false) => tracing::error!("database unreachable; answering 503 until it is back"),
                    (true, true) => tracing::info!("database reachable again"),
                    _ => {}
                }
            }
        });
    }
}

/// What a request refused during an outage is answered with.
pub(crate) fn unavailable() -> crate::LedgerError {
    crate::LedgerError::Unavailable(DbErr::Custom("the database is unreachable".into()))
}

/// Leases up to `limit` rows of `table`'s table that are due (`status = 'PENDING'`,
/// `next_attempt_at` past, no live lease), meet `also` (a fixed SQL condition) and whose
/// `skip.0` column is none of `skip.1`, until `now + lease`: until then no other worker,
/// of this process or another replica, takes them. PostgreSQL skips rows another claim
/// has locked; SQLite's writer lock serializes claims. Returns the leased rows (no read
/// after the claim) and the lease's end (whole microseconds, what PostgreSQL stores, so
/// that it compares equal later). How outgoing webhooks and auto top-ups are claimed.
pub(crate) async fn lease_due<E: sea_orm::EntityTrait>(
    db: &DatabaseConnection,
    table: E,
    also: &str,
    skip: (&str, &[String]),
    limit: u64,
    now: chrono::DateTime<chrono::Utc>,
    lease: chrono::Duration,
) -> Result<(Vec<E::Model>, chrono::DateTime<chrono::Utc>), DbErr> {
    use chrono::SubsecRound;
    use sea_orm::FromQueryResult;
    let table = table.table_name();
    let until = (now + lease).trunc_subsecs(6);
    let backend = db.get_database_backend();
    let postgres = backend == DbBackend::Postgres;
    let mut values: Vec<sea_orm::Value> = vec![until.into(), now.into()];
    let mut placeholder = |value: sea_orm::Value| {
        values.push(value);
        if postgres { format!("${}", values.len()) } else { "?".to_owned() }
    };
    let (until_at, now_at) =
        if postgres { ("$1".to_owned(), "$2".to_owned()) } else { ("?".to_owned(), "?".to_owned()) };
    // SQLite numbers its `?` in order, so `now` is bound again where it is used again.
    let now_again = if postgres { "$2".to_owned() } else { placeholder(now.into()) };
    // One JSON array parameter, so the text is the same for any number skipped: it runs on
    // the committer's connection (`Ledger::bookkeeper`), whose prepared statements it
    // would otherwise push out, one text per length.
    let skipped = if skip.1.is_empty() {
        String::new()
    } else {
        let at = placeholder(serde_json::Value::from(skip.1.to_vec()).to_string().into());
        format!("AND NOT ({})", in_json_array(backend, skip.0, &at))
    };
    let limit_at = placeholder((limit as i64).into());
    let locking = if postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "UPDATE {table} SET leased_until = {until_at} WHERE id IN (SELECT id FROM {table} WHERE status = 'PENDING' \
         AND next_attempt_at <= {now_at} AND (leased_until IS NULL OR leased_until <= {now_again}) {also} {skipped} \
         ORDER BY next_attempt_at LIMIT {limit_at}{locking}) RETURNING *"
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(backend, sql, values))
        .await?
        .iter()
        .map(|row| E::Model::from_query_result(row, ""))
        .collect::<Result<_, _>>()?;
    Ok((rows, until))
}

/// A pool's connections now: (idle, in use).
pub fn pool_connections(db: &DatabaseConnection) -> (u32, u32) {
    let (size, idle) = match db.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX);
    (idle, size.saturating_sub(idle))
}

/// Writes a consistent copy of a SQLite database to `out` while others keep reading and
/// writing it (`VACUUM INTO`: one read transaction, so the copy is one committed state).
/// `out` must not exist.
pub async fn vacuum_into(db: &DatabaseConnection, out: &std::path::Path) -> Result<(), DbErr> {
    let path = out.to_str().ok_or_else(|| DbErr::Custom(format!("{} is not UTF-8", out.display())))?;
    let statement = sea_orm::Statement::from_sql_and_values(DbBackend::Sqlite, "VACUUM INTO ?", [path.into()]);
    db.execute_raw(statement).await.map(drop)
}

/// Rows handed to one statement as a single JSON array parameter (each row an array of
/// its values), so that the statement's text is the same for any number of rows: each
/// engine prepares it once per connection and plans it once. A statement whose text grows
/// with its rows (a `VALUES` list, an `IN` list) is a new statement for every count, and
/// batches come in every count: with many organizations the transactions, usage and
/// balance writes of each size pushed one another out of every connection's statement
/// cache (100 statements), and most batches prepared them again (SQLite compiling them,
/// PostgreSQL parsing and planning them).
pub(crate) struct JsonRows(DbBackend);

impl JsonRows {
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self(backend)
    }

    /// The `FROM` item yielding the rows of parameter `n` (counted from 1), as `r`.
    pub(crate) fn source(&self, n: usize) -> String {
        match self.0 {
            DbBackend::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS r(item)"),
            _ => "json_each(?) AS r".to_owned(),
        }
    }

    /// Value `i` of a row as `sql_type` (PostgreSQL's name for it; SQLite takes a JSON
    /// value as it is: text, integer or NULL).
    pub(crate) fn column(&self, i: usize, sql_type: &str) -> String {
        match self.0 {
            DbBackend::Postgres => format!("(r.item ->> {i})::{sql_type}"),
            _ => format!("json_extract(r.value, '$[{i}]')"),
        }
    }

    /// A condition that finds the rows to update by `key`, which each row's value 0 names:
    /// on PostgreSQL an `= ANY` over those values of parameter `n` (joined to the rows
    /// alone, it may plan a scan of the whole table, every batch: it did, 17,000 lots
    /// deep, in the lots benchmark); nothing on SQLite, which looks each one up by key.
    pub(crate) fn found_by(&self, key: &str, n: usize) -> String {
        match self.0 {
            DbBackend::Postgres => {
                format!(" AND {key} = ANY (ARRAY(SELECT e ->> 0 FROM jsonb_array_elements(${n}::jsonb) AS e))")
            }
            _ => String::new(),
        }
    }

    /// The values of a row, in order, as `types`, comma-separated.
    pub(crate) fn columns(&self, types: &[&str]) -> String {
        types.iter().enumerate().map(|(i, sql_type)| self.column(i, sql_type)).collect::<Vec<_>>().join(", ")
    }

    /// A statement inserting into `table` the rows of `rows`, each the values of
    /// `columns` (name, type) in order.
    pub(crate) fn insert(&self, table: &str, columns: &[(&str, &str)], rows: Vec<serde_json::Value>) -> Statement {
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let types: Vec<&str> = columns.iter().map(|(_, sql_type)| *sql_type).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {}",
            names.join(", "),
            self.columns(&types),
            self.source(1)
        );
        Statement::from_sql_and_values(self.0, sql, [serde_json::Value::Array(rows).to_string().into()])
    }
}

/// A time as the statements of [`JsonRows`] take it: the text sqlx writes for a bound
/// time on SQLite (RFC 3339, `+00:00`, as many fraction digits as needed), where times
/// are stored as text and compared as text (the usage rollup's key, the sweeper's
/// `next_event_at`), so a row written either way is the same; PostgreSQL reads it as a
/// `timestamptz`.
pub(crate) fn sql_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// `column = value` as a term no index is chosen for (SQLite `+column`, SQLite's way to
/// keep a term out of index selection; PostgreSQL `column || ''`, an expression no index
/// is on): for a condition that only narrows rows another term finds by key. Recording
/// a burst of webhook attempts (`id` one of a few, `status = 'PENDING'`) otherwise walked
/// every pending delivery: SQLite, which keeps no statistics here, rated an equality on
/// the first column of an index above the primary key of a [`one_of`] list (1.6 ms a
/// burst under a storm's backlog), and PostgreSQL's generic plan for it read that index
/// whole to intersect it with the key's (1.25 ms a burst; `docs/performance.md`, session
/// 18).
pub(crate) fn unindexed_eq(
    backend: DbBackend,
    column: &str,
    value: impl Into<sea_orm::Value>,
) -> sea_orm::sea_query::SimpleExpr {
    let sql = if backend == DbBackend::Postgres { format!("{column} || '' = $1") } else { format!("+{column} = ?") };
    sea_orm::sea_query::Expr::cust_with_values(sql, [value.into()])
}

/// `column` is one of the strings of a JSON array (`values`, serialized into one
/// parameter): an `IN` whose text is the same for any number of values (see
/// [`JsonRows`]). On PostgreSQL an `= ANY` over the array, so the rows are found by
/// their index.
pub(crate) fn one_of<'a>(
    backend: DbBackend,
    column: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> sea_orm::sea_query::SimpleExpr {
    let values: Vec<&str> = values.into_iter().collect();
    let json = serde_json::Value::from(values).to_string();
    let parameter = if backend == DbBackend::Postgres { "$1" } else { "?" };
    sea_orm::sea_query::Expr::cust_with_values(in_json_array(backend, column, parameter), [json])
}

/// The text of [`one_of`], with the JSON array at `parameter`.
pub(crate) fn in_json_array(backend: DbBackend, column: &str, parameter: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("{column} = ANY (ARRAY(SELECT jsonb_array_elements_text({parameter}::jsonb)))"),
        _ => format!("{column} IN (SELECT value FROM json_each({parameter}))"),
    }
}

/// For tests: a fresh, migrated SQLite file in a temporary directory (removed when the
/// directory is dropped), and its URL, to open connections on.
#[cfg(test)]
pub(crate) async fn migrated_sqlite() -> (tempfile::TempDir, String) {
    use migration::MigratorTrait;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("credits.db").display());
    migration::Migrator::up(&connect(&url).await.expect("connect"), None).await.expect("migrate");
    (dir, url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use sea_orm::Statement;

    /// Every SQLite connection of ours, the pool's and the committer's own, is set up by
    /// [`sqlite_connections`]: none is pinged before each use. The committer's own keeps
    /// its statement journals in memory and checkpoints sooner ([`writer_for`]).
    #[tokio::test]
    async fn sqlite_connections_are_set_up_as_documented() {
        let dir = std::env::temp_dir().join(format!("credits-db-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
        let db = connect(&url).await.expect("connect");
        assert!(!db.get_sqlite_connection_pool().options().get_test_before_acquire());
        let writer = writer_for(&db).await;
        assert!(!writer.get_sqlite_connection_pool().options().get_test_before_acquire());
        assert_eq!(writer.get_sqlite_connection_pool().options().get_max_connections(), 1, "its own connection");
        // Its statement journals are kept in memory (2); the pool's connections keep the default (0).
        let pragma = |db: DatabaseConnection, name: &'static str| async move {
            let sql = format!("PRAGMA {name}");
            let row = db.query_one_raw(sea_orm::Statement::from_string(DbBackend::Sqlite, sql)).await;
            row.expect("pragma").expect("a row").try_get_by_index::<i32>(0).expect("a number")
        };
        assert_eq!(pragma(writer.clone(), "temp_store").await, 2, "the committer's journals in memory");
        assert_eq!(pragma(db.clone(), "temp_store").await, 0, "the pool's as configured");
        let checkpoint = i32::try_from(COMMITTER_CHECKPOINT_PAGES).expect("small");
        assert_eq!(pragma(writer.clone(), "wal_autocheckpoint").await, checkpoint, "the committer's checkpoints");
        assert_eq!(pragma(db.clone(), "wal_autocheckpoint").await, 1000, "SQLite's default");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The committer's log is copied into the database file beside it, long before the
    /// committer would copy it itself ([`checkpoint_beside`]), and no longer once the
    /// committer is gone.
    #[tokio::test]
    async fn the_committers_log_is_copied_into_the_database_file_beside_it_while_it_lives() {
        let dir = std::env::temp_dir().join(format!("credits-db-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("ledger.db");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display())).await.expect("connect");
        let writer = writer_for(&db).await;
        let alive = std::sync::Arc::new(());
        checkpoint_beside(&writer, std::sync::Arc::downgrade(&alive));
        let run = |sql: &'static str| {
            let writer = writer.clone();
            async move { writer.execute_unprepared(sql).await.expect(sql) }
        };
        let fill = "INSERT INTO filler SELECT randomblob(4000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 256) SELECT i FROM n)";
        run("CREATE TABLE filler (x BLOB)").await;
        run(fill).await; // about 260 pages, far below the committer's own 16,000
        let size = || std::fs::metadata(&file).map(|meta| meta.len()).unwrap_or(0);
        let started = std::time::Instant::now();
        while size() < 1_000_000 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the log was not copied: the file has {} bytes",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(alive);
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let copied = size();
        run(fill).await;
        tokio::time::sleep(CHECKPOINT_EVERY * 4).await;
        assert_eq!(size(), copied, "nothing more is copied once the committer is gone");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// On a SQLite file the background workers' bookkeeping writes through the committer's own
    /// connection ([`crate::Ledger::bookkeeper`]), made once: bookkeeping and batches
    /// queue for it in turn.
    #[tokio::test]
    async fn bookkeeping_on_sqlite_writes_through_the_committers_connection() {
        let dir = std::env::temp_dir().join(format!("credits-db-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
        let ledger = crate::Ledger::new(connect(&url).await.expect("connect"));
        let bookkeeper = ledger.bookkeeper().await;
        let pool = bookkeeper.get_sqlite_connection_pool();
        assert_eq!(pool.options().get_max_connections(), 1, "one connection");
        let sql = Statement::from_string(DbBackend::Sqlite, "PRAGMA temp_store");
        let row = bookkeeper.query_one_raw(sql).await.expect("pragma").expect("a row");
        assert_eq!(row.try_get_by_index::<i32>(0).expect("a number"), 2, "the committer's connection");
        // The same connection each time: while one handle holds it, another cannot have it.
        let held = pool.acquire().await.expect("acquire");
        let again = ledger.bookkeeper().await;
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), again.get_sqlite_connection_pool().acquire())
                .await;
        assert!(waited.is_err(), "a second connection was made");
        drop(held);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// On PostgreSQL the committer has connections of its own, one a lane, made when
    /// first used, that plan no sequential scan for their whole session (so its batches
    /// begin with `BEGIN` alone) and keep the pool's statement timeout; the bookkeeping
    /// stays on the pool.
    #[tokio::test]
    async fn the_committers_postgres_connections_plan_no_sequential_scan() {
        let mut options = ConnectOptions::new("postgres://nobody@127.0.0.1:9/none");
        options.connect_lazy(true).map_sqlx_postgres_opts(|opts| opts.options([("statement_timeout", "5000")]));
        let db = Database::connect(options).await.expect("a pool that connects when used");
        let writer = writer_for(&db).await;
        let pool = writer.get_postgres_connection_pool();
        assert_eq!(pool.options().get_max_connections(), crate::commit::POSTGRES_LANES as u32);
        assert_eq!(pool.options().get_min_connections(), 0, "none until used");
        let startup = pool.connect_options().get_options().unwrap_or_default().to_owned();
        assert!(startup.contains("statement_timeout=5000"), "{startup}");
        assert!(startup.contains("enable_seqscan=off"), "{startup}");
        let plans = |db: &DatabaseConnection| {
            let options = db.get_postgres_connection_pool().connect_options();
            !options.get_options().unwrap_or_default().contains("enable_seqscan")
        };
        assert!(plans(&db), "the pool plans as PostgreSQL does");
        assert!(plans(&crate::Ledger::new(db.clone()).bookkeeper().await), "bookkeeping on the pool");
    }

    /// The statements of [`JsonRows`] write times as [`sql_time`] spells them; sqlx
    /// writes a bound time its own way. On SQLite both must be the same text, or a usage
    /// slot written one way would not meet the same slot written the other.
    #[tokio::test]
    async fn a_time_is_written_as_sqlx_writes_a_bound_one() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.expect("connect");
        let times = [
            DateTime::from_timestamp(1_796_600_000, 0),
            DateTime::from_timestamp(1_796_600_000, 120_000_000),
            DateTime::from_timestamp(1_796_600_000, 123_456_000),
            DateTime::from_timestamp(1_796_600_000, 123_456_789),
        ];
        for at in times.into_iter().map(|at| at.expect("a time")) {
            let bound = Statement::from_sql_and_values(DbBackend::Sqlite, "SELECT ? AS t", [at.into()]);
            let row = db.query_one_raw(bound).await.expect("query").expect("a row");
            let text: String = row.try_get("", "t").expect("text");
            assert_eq!(text, sql_time(at));
        }
    }
}
