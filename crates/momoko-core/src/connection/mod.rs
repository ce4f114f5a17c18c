//! A single PostgreSQL session (Momoko's `momoko.Connection`).

mod batch;
mod copy;
pub(crate) mod held;
mod notifications;
mod open;
mod query;
mod select;
mod statement_cache;
mod stream;
#[cfg(feature = "tls")]
mod tls_tap;
mod transaction;
mod unnamed;
mod wire;

pub use copy::{BinaryCopyIn, CopyIn, CopyOut};
pub use query::{Param, Query};
pub use stream::RowStream;
pub(crate) use transaction::run_body;
pub use transaction::{IsolationLevel, Transaction, TransactionOptions};
pub use wire::TransactionStatus;

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::config::{ConnectOptions, Target};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::executor::{Executor, SharedExecutor};
use crate::mogrify;
use crate::sql;
use statement_cache::{Lookup, StatementCache};
use wire::Wire;

/// One PostgreSQL session, usable from any runtime (Momoko's `momoko.Connection`).
///
/// Every query method takes `&self`: several queries issued concurrently on one connection are
/// pipelined (sent back to back, answered in order). [`begin`](Connection::begin),
/// [`transaction`](Connection::transaction) and [`transaction_with`](Connection::transaction_with)
/// take `&mut self`, so nothing else can run inside the transaction by accident.
///
/// Statements are prepared once per connection and cached (see
/// [`ConnectOptions::statement_cache_capacity`]), so a repeated query costs one round trip.
///
/// Dropping a `Connection` closes the session.
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn momoko_core::Executor>) -> momoko_core::Result<()> {
/// use momoko_core::Connection;
/// let conn = Connection::connect("host=localhost dbname=app user=app", executor).await?;
/// let mut cursor = conn.execute("SELECT $1::int + 1", &[&41i32]).await?;
/// assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(42));
/// # Ok(()) }
/// ```
pub struct Connection {
    client: Client,
    shared: Arc<Shared>,
    cache: Mutex<StatementCache>,
    server_version: AtomicI32,
    /// What the server said about the session, read off the stream.
    wire: Arc<Wire>,
    /// When the connection opened (on the executor's clock).
    born: Instant,
    /// When the server last answered a statement of a pool, in nanoseconds after `born`
    /// (pools read it to decide whether to prove the connection alive).
    heard: AtomicU64,
    /// A call was dropped before its answer arrived (or the raw client was lent out): requests
    /// may still be queued for the socket, so the wire's count cannot yet be trusted.
    abandoned: AtomicBool,
    /// Calls in progress (see [`Connection::tracked`]).
    calls: AtomicUsize,
    /// The session can no longer be used safely although its socket is open (see
    /// [`Connection::break_off`]).
    broken: AtomicBool,
    /// Stops the I/O task (after a grace period) when the connection is dropped.
    _driver: open::DriverGuard,
}

/// What a connection shares with helpers that outlive a borrow (cancel requests).
struct Shared {
    executor: SharedExecutor,
    options: ConnectOptions,
    target: Target,
}

impl Connection {
    /// Connects to the server described by `dsn` (see [`ConnectOptions`] for the formats), with
    /// I/O and timers from `executor`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a bad connection string,
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when no host could be reached,
    /// [`ErrorKind::Auth`](crate::ErrorKind::Auth) when the server refused the credentials,
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when `connect_timeout` elapsed.
    pub async fn connect(dsn: &str, executor: Arc<dyn Executor>) -> Result<Connection> {
        let options = ConnectOptions::parse(dsn)?;
        Connection::connect_with(&options, executor).await
    }

    /// Connects with already parsed options.
    ///
    /// # Errors
    ///
    /// As [`Connection::connect`], minus the parse errors.
    pub async fn connect_with(
        options: &ConnectOptions,
        executor: Arc<dyn Executor>,
    ) -> Result<Connection> {
        let opened = select::open(options, &executor).await?;
        Ok(Connection {
            client: opened.client,
            _driver: opened.driver,
            cache: Mutex::new(StatementCache::new(options.statement_cache_capacity)),
            wire: opened.wire,
            born: executor.now(),
            heard: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            shared: Arc::new(Shared {
                executor,
                options: options.clone(),
                target: opened.target,
            }),
            server_version: AtomicI32::new(0),
        })
    }

    /// Runs one statement and returns its result.
    ///
    /// Placeholders are PostgreSQL's own: `$1`, `$2`, … (not `%s`). The statement is prepared and
    /// cached on this connection.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) for a wrong number or type of
    /// parameters (nothing is sent), [`ErrorKind::Db`](crate::ErrorKind::Db) for an SQL error
    /// (the connection stays usable), [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the
    /// connection is gone.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<Cursor> {
        self.run(sql, params, None).await
    }

    /// [`execute`](Connection::execute) for a pool: before a cached statement goes out on a
    /// connection the server has not answered for longer than `liveness.window`, the connection
    /// is proven alive (an empty query, bounded by `liveness.bound`). A cached statement is sent
    /// as Bind/Execute at once, so if the connection had died silently its failure would be
    /// ambiguous; after a failed proof nothing was sent, and the statement may run elsewhere.
    pub(crate) async fn execute_proven(
        &self,
        sql: &str,
        params: &[Param<'_>],
        liveness: Liveness,
    ) -> Result<Cursor> {
        self.run(sql, params, Some(liveness)).await
    }

    async fn run(
        &self,
        sql: &str,
        params: &[Param<'_>],
        liveness: Option<Liveness>,
    ) -> Result<Cursor> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if params.is_empty() && sql::has_several_statements(sql) {
            // Several statements cannot be prepared; like psycopg2 (and Momoko), run them with
            // the simple protocol, as one implicit transaction.
            // Boxed here and on the other rare paths below: an inline future would make every
            // caller's future larger (measured: `Pool::execute` 2.7 kB → 5.5 kB in a debug
            // build, enough to overflow a 2 MiB test thread that nests a few of them).
            return Box::pin(self.simple_cursor(sql)).await;
        }
        if self.shared.options.transaction_pooler {
            // Boxed: a mode few use should not enlarge everyone's future.
            return Box::pin(self.run_unnamed(sql, params, liveness)).await;
        }
        let started = liveness.map(|_| self.shared.executor.now());
        // Preparing executes nothing: a failure here is always safe to retry elsewhere.
        let (statement, fresh) = self.statement(sql).await.map_err(Error::not_executed)?;
        check_param_count(&statement, params)?;
        if let (Some(liveness), Some(now), false) = (liveness, started, fresh) {
            if self.quiet_for(now) > liveness.window {
                Box::pin(self.prove_alive(liveness.bound))
                    .await
                    .map_err(Error::not_executed)?;
            }
        }
        let outcome = match self.query_statement(&statement, params).await {
            Err(e) if is_stale_statement(&e) => {
                // The server forgot or changed the statement (DISCARD ALL, ALTER TABLE, …):
                // prepare it afresh once.
                self.forget(sql);
                let (statement, _) = Box::pin(self.statement(sql))
                    .await
                    .map_err(Error::not_executed)?;
                self.query_statement(&statement, params).await
            }
            Err(e) if e.is_server_termination() => Err(e.not_executed()),
            other => other,
        };
        if let (Ok(_), Some(now)) = (&outcome, started) {
            self.heard_at(now);
        }
        outcome
    }

    /// One statement as an unnamed one, in one round trip (see `unnamed.rs`).
    async fn run_unnamed(
        &self,
        sql: &str,
        params: &[Param<'_>],
        liveness: Option<Liveness>,
    ) -> Result<Cursor> {
        // Checked here as the server would (nothing prepared tells the count): the same errors
        // as for a prepared statement, before anything is sent.
        if sql.contains('\0') {
            return Err(Error::parameter(
                "error encoding message to server: string contains embedded null",
            )
            .not_executed());
        }
        param_count_matches(sql::max_placeholder(sql)?, params)?;
        let types = unnamed::param_types(params)?;
        let started = liveness.map(|_| self.shared.executor.now());
        if let (Some(liveness), Some(now)) = (liveness, started) {
            // Parse and Execute go out together: as for a cached statement, a quiet
            // connection is proven alive first.
            if self.quiet_for(now) > liveness.window {
                self.prove_alive(liveness.bound)
                    .await
                    .map_err(Error::not_executed)?;
            }
        }
        let typed: Vec<(Param<'_>, Type)> = params.iter().copied().zip(types).collect();
        let outcome: Result<Cursor> = self
            .tracked(async {
                let stream = self
                    .client
                    .query_typed_raw(sql, typed)
                    .await
                    .map_err(Error::from_pg)?;
                let mut stream = pin!(stream);
                let mut rows = Vec::new();
                while let Some(row) = stream.next().await {
                    rows.push(row.map_err(Error::from_pg)?);
                }
                let affected = self.count_or_none(stream.rows_affected(), rows.is_empty());
                Ok(Cursor::new(rows, affected, None))
            })
            .await;
        let outcome = match outcome {
            Err(e) if e.is_server_termination() => Err(e.not_executed()),
            other => other,
        };
        if let (Ok(_), Some(now)) = (&outcome, started) {
            self.heard_at(now);
        }
        outcome
    }

    /// Runs several statements on the simple protocol; the cursor describes the last one.
    async fn simple_cursor(&self, sql: &str) -> Result<Cursor> {
        let messages = self
            .tracked(self.client.simple_query(sql))
            .await
            .map_err(Error::from_pg)?;
        Ok(Cursor::from_simple(messages))
    }

    /// Sends an empty query and waits for its answer, at most `bound`: proof that the session
    /// works end to end, at the cost of one round trip and no statement.
    pub(crate) async fn prove_alive(&self, bound: Duration) -> Result<()> {
        let ping = self.tracked(self.client.batch_execute(""));
        match crate::executor::timeout(&*self.shared.executor, bound, ping).await {
            Ok(Ok(())) => {
                self.heard_at(self.shared.executor.now());
                Ok(())
            }
            Ok(Err(e)) => Err(Error::from_pg(e)),
            Err(_) => Err(Error::closed(format!(
                "the server did not answer a liveness check within {bound:?}"
            ))),
        }
    }

    fn quiet_for(&self, now: Instant) -> Duration {
        let heard = self.born + Duration::from_nanos(self.heard.load(Ordering::Relaxed));
        now.saturating_duration_since(heard)
    }

    /// When the connection opened, on its executor's clock (pools replace connections past their
    /// lifetime).
    pub(crate) fn born(&self) -> Instant {
        self.born
    }

    fn heard_at(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.born).as_nanos();
        self.heard
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Calls a function or procedure by name, like DB-API's `callproc`:
    /// `SELECT * FROM name($1, …)`. The name may be schema-qualified; it is quoted safely.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) for an invalid name, and everything
    /// [`execute`](Connection::execute) reports.
    pub async fn callproc(&self, name: &str, params: &[Param<'_>]) -> Result<Cursor> {
        let sql = sql::callproc_sql(name, params.len())?;
        self.execute(&sql, params).await
    }

    /// Returns the query with every `$n` replaced by the literal value of `params[n-1]`, like
    /// psycopg2's `mogrify`. Each literal reads back as exactly the value
    /// [`execute`](Connection::execute) would bind for that parameter; when that cannot be
    /// guaranteed, `mogrify` fails instead of guessing. Values are quoted by momoko, never pasted
    /// raw, so no value can change the statement's structure.
    ///
    /// How each value's SQL type is decided:
    ///
    /// * **The statement's parameter types**, which are what `execute` binds, when they can be
    ///   learnt without disturbing the session: the statement is already in this connection's
    ///   cache, or the connection is idle outside any transaction block (as the server last
    ///   reported it), where preparing it (and caching it, as `execute` does) costs one round trip
    ///   and a failure aborts nothing. Inside a transaction block a statement that is not cached
    ///   is never prepared: a failing Parse would abort the transaction. The value is encoded
    ///   exactly as `execute` encodes it, and bytes the server would reject are an error.
    /// * **The value's Rust type** otherwise: when the statement cannot be prepared (`FETCH $1
    ///   FROM c` takes no parameters server-side), is not cached inside a transaction, or the
    ///   value does not accept the statement's type at all (`SELECT $1` is prepared with a text
    ///   parameter, which `execute` would refuse an integer for; `mogrify` writes the integer,
    ///   as psycopg2 does). Every SQL type the value accepts (`bool`, integers, floats, text,
    ///   `Vec<u8>` as bytea, JSON, timestamps, UUIDs and arrays of those) is tried, and if they
    ///   would not all read back as the same value, the type is ambiguous and `mogrify` fails:
    ///   cast the placeholder (`$1::text`) in a statement that can be prepared, or pass a value of
    ///   a concrete Rust type.
    ///
    /// Text is written as an untyped string literal so it fits any context. Booleans, numbers,
    /// text, bytea and JSON are rendered locally; other values (timestamps, arrays, …) are
    /// converted to text by the server from the same bytes bound as the same type, with one
    /// `SELECT $1::text` round trip (inside a transaction block, between a savepoint and its
    /// release, so that a value the server rejects does not abort the transaction), and written
    /// with an explicit cast. The caller's statement itself is never run.
    ///
    /// ```no_run
    /// # async fn demo(conn: &momoko_core::Connection) -> momoko_core::Result<()> {
    /// let sql = conn.mogrify("SELECT $1::text, $2::int", &[&"it's", &7i32]).await?;
    /// assert_eq!(sql, "SELECT 'it''s'::text, 7::int");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) when the number of parameters does
    /// not match the placeholders, a value cannot be encoded, its bytes are not a valid value of
    /// its type, text contains a NUL byte, or a value's type is ambiguous;
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the connection is gone and the
    /// server was needed.
    pub async fn mogrify(&self, sql: &str, params: &[Param<'_>]) -> Result<String> {
        mogrify::check_count(sql, params.len())?;
        if params.is_empty() {
            return Ok(sql.to_owned());
        }
        let types = self.mogrify_types(sql).await?;
        let rendering = mogrify::Rendering::start(sql, params, types.as_deref())?;
        let texts = self.mogrify_texts(&rendering, params).await?;
        rendering.finish(texts)
    }

    /// The parameter types `execute` would bind `sql` with, when they can be learnt without
    /// disturbing the session (see [`Connection::mogrify`]); `None` when the values must decide.
    async fn mogrify_types(&self, sql: &str) -> Result<Option<Vec<Type>>> {
        if self.shared.options.transaction_pooler {
            // Nothing is prepared behind a transaction pooler.
            return Ok(None);
        }
        if let Some(statement) = self.cached_statement(sql) {
            return Ok(Some(statement.params().to_vec()));
        }
        if self.transaction_status() != TransactionStatus::Idle {
            return Ok(None);
        }
        match self.statement(sql).await {
            Ok((statement, _)) => Ok(Some(statement.params().to_vec())),
            // The server cannot prepare it (FETCH $1, a missing table, …): the values decide.
            Err(e) if e.as_db_error().is_some() && !e.is_connection_lost() => Ok(None),
            Err(e) => Err(e.not_executed()),
        }
    }

    /// The server's text for each of `rendering`'s conversions.
    async fn mogrify_texts(
        &self,
        rendering: &mogrify::Rendering<'_>,
        params: &[Param<'_>],
    ) -> Result<Vec<Option<String>>> {
        const SAVEPOINT: &str = "momoko_mogrify";
        if rendering.conversions().is_empty() {
            return Ok(Vec::new());
        }
        let typed = rendering.conversion_params(params)?;
        // Inside a transaction block, a value the server rejects would abort the caller's
        // transaction: the savepoint confines the failure to the conversion.
        let fenced = self.transaction_status() == TransactionStatus::InTransaction;
        if fenced {
            self.simple(&format!("SAVEPOINT {SAVEPOINT}")).await?;
        }
        let rows = self
            .tracked(self.client.query_typed(&rendering.conversion_sql(), &typed))
            .await
            .map_err(Error::from_pg);
        if fenced {
            let undo = if rows.is_ok() {
                format!("RELEASE SAVEPOINT {SAVEPOINT}")
            } else {
                format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
            };
            let undone = self.simple(&undo).await;
            if rows.is_ok() {
                undone?;
            }
        }
        let rows = rows.map_err(|e| match e.as_db_error() {
            // The bytes themselves were refused (bad binary format, too short, bad encoding,
            // too long a name): the value's fault, like the same bytes bound by execute.
            Some(db) if is_rejected_value(db.code().code()) => {
                rendering.rejected(&format!("{}: {}", db.code().code(), db.message()))
            }
            _ => e,
        })?;
        let row = rows.first().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Protocol,
                "mogrify: no row from the server",
            )
        })?;
        (0..rendering.conversions().len())
            .map(|k| row.try_get::<_, Option<String>>(k).map_err(Error::from_pg))
            .collect()
    }

    /// Runs `statements` in one transaction: `BEGIN`, each statement, `COMMIT`, and returns one
    /// [`Cursor`] per statement.
    ///
    /// When any statement (or the `COMMIT`) fails, the transaction is rolled back and the original
    /// error is returned: nothing is half-applied.
    ///
    /// ```no_run
    /// # async fn demo(conn: &mut momoko_core::Connection) -> momoko_core::Result<()> {
    /// let cursors = conn
    ///     .transaction([
    ///         "UPDATE account SET balance = balance - 10 WHERE id = 1".into(),
    ///         "UPDATE account SET balance = balance + 10 WHERE id = 2".into(),
    ///         momoko_core::Query::new("SELECT balance FROM account WHERE id = $1", &[&2i32]),
    ///     ])
    ///     .await?;
    /// assert_eq!(cursors.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The first failing statement's error (after the rollback).
    pub async fn transaction<'q, I>(&mut self, statements: I) -> Result<Vec<Cursor>>
    where
        I: IntoIterator<Item = Query<'q>>,
    {
        let statements: Vec<Query<'q>> = statements.into_iter().collect();
        let this: &Connection = self;
        this.run_transaction(&statements).await
    }

    /// [`transaction`](Connection::transaction) on a shared borrow: the pool holds the
    /// connection exclusively already.
    pub(crate) async fn run_transaction(&self, statements: &[Query<'_>]) -> Result<Vec<Cursor>> {
        self.in_transaction(async {
            let mut cursors = Vec::with_capacity(statements.len());
            for q in statements {
                cursors.push(self.execute(q.sql, q.params).await?);
            }
            Ok(cursors)
        })
        .await
    }

    /// `BEGIN`, `body`, then `COMMIT` or `ROLLBACK`. `body` is not polled before `BEGIN` is done.
    ///
    /// A failure before `COMMIT` was sent, or a `COMMIT` the server aborted by ending the session,
    /// is marked as not executed: nothing of the transaction took effect.
    pub(crate) async fn in_transaction<T>(
        &self,
        body: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.simple("BEGIN").await.map_err(Error::not_executed)?;
        match body.await {
            // `SELECT 1` first: in a transaction aborted by an error the body swallowed, it fails
            // with 25P02 and the COMMIT is skipped (the server would answer a bare COMMIT with a
            // silent ROLLBACK, and the caller would believe the work was saved).
            Ok(value) => match self.simple("SELECT 1; COMMIT").await {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.rollback_quietly().await;
                    Err(if e.is_server_termination() {
                        e.not_executed()
                    } else {
                        e
                    })
                }
            },
            Err(e) => {
                self.rollback_quietly().await;
                Err(e.not_executed())
            }
        }
    }

    async fn rollback_quietly(&self) {
        if self.client.is_closed() {
            return;
        }
        if let Err(e) = self.simple("ROLLBACK").await {
            tracing::warn!(target: "momoko", error = %e, "failed to ROLLBACK transaction");
        }
    }

    /// Runs `SELECT 1 AS ping`: proves the connection works end to end.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the connection is gone.
    pub async fn ping(&self) -> Result<()> {
        self.execute("SELECT 1 AS ping", &[]).await.map(|_| ())
    }

    /// Runs one or more SQL statements separated by semicolons with the simple query protocol,
    /// discarding results. Takes no parameters; useful for DDL and session settings.
    ///
    /// # Errors
    ///
    /// The first failing statement's error.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.simple(sql).await
    }

    /// The server's version as a number, like `150018` for 15.18 (`server_version_num`). Asked
    /// once per connection, then remembered.
    ///
    /// # Errors
    ///
    /// When the connection is gone.
    pub async fn server_version(&self) -> Result<i32> {
        let known = self.server_version.load(Ordering::Relaxed);
        if known != 0 {
            return Ok(known);
        }
        let cursor = self
            .execute("SELECT current_setting('server_version_num')::int4", &[])
            .await?;
        let v: i32 = cursor.scalar()?;
        self.server_version.store(v, Ordering::Relaxed);
        Ok(v)
    }

    /// Whether the session has ended (the server closed it, the network failed, or it errored).
    pub fn is_closed(&self) -> bool {
        self.broken.load(Ordering::SeqCst) || self.wire.ended() || self.client.is_closed()
    }

    /// Takes the session out of use for good: it reports itself closed, a pool closes it, and
    /// every later call fails with [`ErrorKind::Closed`](crate::ErrorKind::Closed) without being
    /// sent. For a session whose protocol state tokio-postgres has lost track of.
    pub(crate) fn break_off(&self, why: &str) {
        tracing::debug!(target: "momoko", reason = why, "the session can no longer be used");
        self.broken.store(true, Ordering::SeqCst);
    }

    fn closed_error(&self) -> Error {
        if self.broken.load(Ordering::SeqCst) {
            Error::closed(
                "the session can no longer be used: a COPY the server refused at its start left \
                 the protocol one answer behind",
            )
            .not_executed()
        } else {
            Error::closed("the connection is closed").not_executed()
        }
    }

    /// The session's transaction status as the server last reported it, like libpq's
    /// `PQtransactionStatus`: [`Idle`](TransactionStatus::Idle),
    /// [`InTransaction`](TransactionStatus::InTransaction) or
    /// [`InError`](TransactionStatus::InError) from the latest ReadyForQuery message,
    /// [`Active`](TransactionStatus::Active) while an answer is still on its way, and
    /// [`Unknown`](TransactionStatus::Unknown) once the session has ended. Read from the
    /// protocol, never guessed from SQL text; costs no round trip.
    pub fn transaction_status(&self) -> TransactionStatus {
        if self.broken.load(Ordering::SeqCst) {
            return TransactionStatus::Unknown;
        }
        self.wire.status()
    }

    /// The value the server reported for a run-time parameter it reports to clients
    /// (`server_version`, `in_hot_standby`, `default_transaction_read_only`, `TimeZone`,
    /// `application_name`, `is_superuser`, …), like libpq's `PQparameterStatus`. Up to date
    /// with every change the server announced. `None` for a parameter the server does not
    /// report.
    pub fn parameter_status(&self, name: &str) -> Option<String> {
        self.wire.parameter(name)
    }

    /// The server's role as it last reported it (`None` before PostgreSQL 14, which does not
    /// report it).
    pub(crate) fn server_role(&self) -> Option<crate::config::ServerRole> {
        self.wire.role()
    }

    /// Every notification this session reads from now on, until it ends (then the receiver
    /// ends too). For a dedicated listening connection.
    pub(crate) fn notifications(
        &self,
    ) -> futures_channel::mpsc::UnboundedReceiver<tokio_postgres::Notification> {
        self.wire.notifications.subscribe()
    }

    /// Resolves once the server has answered everything sent so far (or the session ended).
    pub(crate) fn settled(&self) -> wire::Settled {
        self.wire.settled()
    }

    /// Whether the latest ReadyForQuery said idle, whatever is in flight since (a pipelined
    /// connection is shared only while this holds).
    pub(crate) fn last_reported_idle(&self) -> bool {
        self.wire.last_reported_idle()
    }

    /// Closes the session.
    pub fn close(self) {
        drop(self);
    }

    /// Asks the server to cancel whatever this connection is running now, over a separate stream.
    /// The running statement then fails with SQLSTATE `57014` (query canceled).
    ///
    /// # Errors
    ///
    /// When the cancel request cannot be delivered.
    pub async fn cancel(&self) -> Result<()> {
        let token = self.client.cancel_token();
        let shared = Arc::clone(&self.shared);
        open::cancel(&shared.executor, &shared.options, &shared.target, &token).await
    }

    /// A future that cancels the running statement even after this connection is gone or
    /// borrowed elsewhere.
    pub(crate) fn cancel_later(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let token = self.client.cancel_token();
        let shared = Arc::clone(&self.shared);
        async move { open::cancel(&shared.executor, &shared.options, &shared.target, &token).await }
    }

    /// The executor this connection runs on.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.shared.executor
    }

    /// The underlying tokio-postgres client, for features momoko does not wrap (COPY, LISTEN,
    /// typed queries). Statements you run through it bypass momoko's cache, but not its view of
    /// the session: the transaction status is read off the wire either way.
    pub fn client(&self) -> &Client {
        // What is sent through it, and whether its futures finish, is not seen here.
        self.abandoned.store(true, Ordering::Relaxed);
        &self.client
    }

    /// Whether a call was dropped before its answer arrived since the last time this was asked
    /// (see [`Connection::tracked`]); clears the mark.
    pub(crate) fn take_abandoned(&self) -> bool {
        self.abandoned.swap(false, Ordering::Relaxed)
    }

    /// Runs one exchange with the server, marking the connection when the future is dropped
    /// before it finishes: its requests may then still sit in tokio-postgres' queue, unwritten,
    /// and the pool must not trust the wire's "nothing in flight" until a round trip proves it.
    fn tracked<F: Future>(&self, exchange: F) -> Tracked<'_, F> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Tracked {
            exchange,
            mark: Mark {
                conn: self,
                finished: false,
            },
        }
    }

    /// Where this connection went, like `"host 127.0.0.1 port 5432"`.
    pub fn target(&self) -> String {
        self.shared.target.to_string()
    }

    pub(crate) async fn simple(&self, sql: &str) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        self.tracked(self.client.batch_execute(sql))
            .await
            .map_err(Error::from_pg)
    }

    /// Prepares `sql`, or takes it from the cache; `true` with a statement prepared just now
    /// (its Parse round trip proved the session alive). Concurrent callers of one new statement
    /// share one Parse.
    pub(crate) async fn statement(&self, sql: &str) -> Result<(Statement, bool)> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        if self.shared.options.transaction_pooler {
            return Err(Error::usage(
                "this needs a prepared statement (row streams, COPY, batches), which a \
                 transaction-mode pooler does not keep: it is not available with \
                 transaction_pooler on",
            )
            .not_executed());
        }
        loop {
            let lookup = self.lock_cache().lookup(sql);
            match lookup {
                Lookup::Ready(s) => return Ok((s, false)),
                Lookup::Wait(rx) => {
                    if let Ok(s) = rx.await {
                        return Ok((s, false));
                    }
                    // The preparing caller failed or was dropped: try again (or ourselves).
                }
                Lookup::Prepare => {
                    let mut lead = PrepareLead {
                        conn: self,
                        sql,
                        done: false,
                    };
                    // Boxed: a cache miss is the rare path, and tokio-postgres' prepare future is
                    // the largest part of an execute.
                    let prepared = Box::pin(self.tracked(self.client.prepare(sql)))
                        .await
                        .map_err(Error::from_pg);
                    lead.done = true;
                    let mut cache = self.lock_cache();
                    return match prepared {
                        Ok(s) => {
                            cache.prepared(sql, &s);
                            Ok((s, true))
                        }
                        Err(e) => {
                            cache.abandon(sql);
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// The statement for `sql` if this connection has it prepared already; never prepares.
    pub(crate) fn cached_statement(&self, sql: &str) -> Option<Statement> {
        self.lock_cache().get(sql)
    }

    fn forget(&self, sql: &str) {
        self.lock_cache().remove(sql);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, StatementCache> {
        // A poisoned cache only means another thread panicked mid-update of a map of statements;
        // the map itself is still valid.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) async fn query_statement(
        &self,
        statement: &Statement,
        params: &[Param<'_>],
    ) -> Result<Cursor> {
        self.tracked(async {
            let stream = self
                .client
                .query_raw(statement, params.iter().copied())
                .await
                .map_err(Error::from_pg)?;
            let mut stream = pin!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await {
                rows.push(row.map_err(Error::from_pg)?);
            }
            let affected =
                self.count_or_none(stream.rows_affected(), statement.columns().is_empty());
            Ok(Cursor::new(rows, affected, Some(statement.clone())))
        })
        .await
    }

    /// The row count of a statement that just finished: tokio-postgres reads a tag without a
    /// count as 0. When this is the only call on the connection, the latest CommandComplete the
    /// wire saw is this statement's, and says whether the server gave a count at all (DB-API's
    /// rowcount of -1). `no_rows`: the statement returned no rows (a count of 0 from a
    /// statement that returns rows is a real 0).
    fn count_or_none(&self, affected: Option<u64>, no_rows: bool) -> Option<u64> {
        if affected == Some(0)
            && no_rows
            && self.calls.load(Ordering::Relaxed) == 1
            && self.wire.last_tag_without_count()
        {
            None
        } else {
            affected
        }
    }

    /// Number of statements in the cache (for tests and status).
    #[doc(hidden)]
    pub fn cached_statements(&self) -> usize {
        self.lock_cache().ready_len()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Connection::tracked`] (named, not an `async fn`: that would keep two
    /// copies of `exchange` in its state).
    struct Tracked<'c, F> {
        #[pin]
        exchange: F,
        mark: Mark<'c>,
    }
}

/// Counts a call in progress; marks the connection if the call is dropped before it finished.
struct Mark<'c> {
    conn: &'c Connection,
    finished: bool,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        self.conn.calls.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.conn.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl<F: Future> Future for Tracked<'_, F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.exchange.poll(cx));
        this.mark.finished = true;
        std::task::Poll::Ready(out)
    }
}

/// What a pool asks before a cached statement goes out (see [`Connection::execute_proven`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Liveness {
    /// Prove the connection alive when the server has not answered for longer than this.
    pub(crate) window: Duration,
    /// How long the proof may take.
    pub(crate) bound: Duration,
}

/// The caller preparing a statement for everyone; if it is dropped mid-way, the waiters are
/// released to try themselves.
struct PrepareLead<'c> {
    conn: &'c Connection,
    sql: &'c str,
    done: bool,
}

impl Drop for PrepareLead<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.lock_cache().abandon(self.sql);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.shared.target.to_string())
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

pub(crate) fn check_param_count(statement: &Statement, params: &[Param<'_>]) -> Result<()> {
    param_count_matches(statement.params().len(), params)
}

fn param_count_matches(expected: usize, params: &[Param<'_>]) -> Result<()> {
    if expected != params.len() {
        return Err(Error::parameter(format!(
            "the statement takes {expected} parameter{} but {} {} given",
            if expected == 1 { "" } else { "s" },
            params.len(),
            if params.len() == 1 { "was" } else { "were" },
        )));
    }
    Ok(())
}

fn is_stale_statement(e: &Error) -> bool {
    match e.code() {
        Some(c) => {
            let c = c.code();
            // 26000 invalid_sql_statement_name: the prepared statement is gone.
            // 0A000 feature_not_supported: "cached plan must not change result type".
            c == "26000"
                || (c == "0A000"
                    && e.as_db_error()
                        .is_some_and(|d| d.message().contains("cached plan")))
        }
        None => false,
    }
}

/// Whether a server error refusing a bound value is about the value's bytes (SQLSTATE class 22
/// data exception, `08P01` for too few bytes, `42622` for too long a name).
fn is_rejected_value(code: &str) -> bool {
    code.starts_with("22") || code == "08P01" || code == "42622"
}
