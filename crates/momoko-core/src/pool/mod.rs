//! The pool (Momoko's `momoko.Pool`).

mod engine;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_core::future::BoxFuture;
use tracing::{debug, warn};

use crate::config::ConnectOptions;
use crate::connection::{Connection, Param, Query};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{maybe_timeout, timeout, Executor};

use engine::{PoolInner, Want};

/// Runs `$op` (an expression using `$conn: &mut Connection`) on a pooled connection, with the
/// statement timeout, and once more on another connection when the retry policy allows.
macro_rules! with_connection {
    ($pool:expr, opens_transaction: $opens:expr, |$conn:ident| $op:expr) => {
        with_connection!($pool, opens_transaction: $opens, retried: false, |$conn| $op)
    };
    ($pool:expr, opens_transaction: $opens:expr, retried: $retried:expr, |$conn:ident| $op:expr) => {{
        let pool: &Pool = $pool;
        let mut retried: bool = $retried;
        loop {
            // A retry runs on a connection proven alive, never on another stale one.
            let mut guard = if retried {
                pool.acquire_verified(false).await?
            } else {
                PooledConnection::new(pool.acquire(Want::Exclusive).await?, &pool.inner, false)
            };
            guard.in_flight = true;
            let result = {
                let $conn: &mut Connection = &mut guard;
                maybe_timeout(
                    &*pool.inner.executor,
                    pool.inner.config.statement_timeout,
                    $op,
                )
                .await
            };
            let outcome = match result {
                Ok(r) => r,
                Err(_) => Err(pool.statement_timed_out(guard.cancel_later())),
            };
            match pool.settle(&mut guard, outcome, &mut retried, $opens) {
                Some(r) => break r,
                // `guard` is dropped with `in_flight` set: the connection is closed.
                None => continue,
            }
        }
    }};
}

/// Runs one autocommit statement `$op`: pipelined on a shared connection when
/// [`PoolBuilder::pipeline`] allows and one has room, otherwise as [`with_connection!`].
macro_rules! with_statement {
    ($pool:expr, opens_transaction: $opens:expr, |$conn:ident| $op:expr) => {{
        let pool: &Pool = $pool;
        let depth = pool.inner.config.pipeline_depth;
        let mut retried = false;
        let mut shared_outcome = None;
        if depth > 1 && !$opens {
            // A share of the least loaded free connection with room, or a place in the queue.
            let guard = SharedConnection {
                conn: Some(pool.acquire(Want::Shared(depth)).await?),
                inner: &pool.inner,
            };
            let result = {
                let $conn: &Connection = guard.connection();
                maybe_timeout(&*pool.inner.executor, pool.inner.config.statement_timeout, $op)
                    .await
            };
            let outcome = match result {
                Ok(r) => r,
                Err(_) => Err(pool.shared_statement_timed_out(&guard)),
            };
            drop(guard);
            match outcome {
                Err(e) if pool.should_retry(&e) => {
                    retried = true;
                    pool.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    debug!(target: "momoko", error = %e, "retrying a pipelined statement on another connection");
                }
                other => shared_outcome = Some(other),
            }
        }
        match shared_outcome {
            Some(outcome) => outcome,
            None => with_connection!(pool, opens_transaction: $opens, retried: retried, |$conn| $op),
        }
    }};
}

/// How long returning a held connection may take to check and reset its transaction state
/// before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a background cancel request may take before it is abandoned.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect timeout of pool connections when neither the DSN nor the builder sets one: a pool
/// must never wait forever on a server that does not answer.
const DEFAULT_POOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// When a statement that failed because its connection died is run again, once, on another
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// Never retry: every failure reaches the caller.
    Never,
    /// Retry only when the statement provably did not take effect: it was never sent, it failed
    /// while being prepared, the server ended the session while running it (which aborts its
    /// transaction), or a `transaction()` failed before its `COMMIT`. Never duplicates a write.
    /// The default.
    #[default]
    Safe,
    /// Retry every statement that failed on a dead connection, as Momoko does. A write whose
    /// connection died after the server committed it but before the reply arrived runs twice.
    Always,
}

/// The pool's settings, as given to the [`PoolBuilder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections kept open (Momoko's `size`).
    pub size: usize,
    /// Upper bound when stretching (Momoko's `max_size`).
    pub max_size: usize,
    /// Minimum time between reconnect attempts (Momoko's `reconnect_interval`).
    pub reconnect_interval: Duration,
    /// Statements run on every new connection (Momoko's `setsession`).
    pub setsession: Vec<String>,
    /// Whether `connect()` fails when an initial connection fails.
    pub raise_connect_errors: bool,
    /// Whether idle connections above `size` are closed.
    pub auto_shrink: bool,
    /// Idle time after which an extra connection may be closed.
    pub shrink_delay: Duration,
    /// How often idle extras are looked for.
    pub shrink_period: Duration,
    /// Longest wait for a connection, if bounded.
    pub acquire_timeout: Option<Duration>,
    /// Longest a statement may run on the pool before it is cancelled, if bounded.
    pub statement_timeout: Option<Duration>,
    /// Which failed statements are retried.
    pub retry: RetryPolicy,
    /// How many autocommit statements may share one free connection at once (1: none share).
    pub pipeline_depth: usize,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            size: 1,
            max_size: 1,
            reconnect_interval: Duration::from_millis(500),
            setsession: Vec::new(),
            raise_connect_errors: true,
            auto_shrink: false,
            shrink_delay: Duration::from_secs(120),
            shrink_period: Duration::from_secs(120),
            acquire_timeout: None,
            statement_timeout: None,
            retry: RetryPolicy::Safe,
            pipeline_depth: 1,
        }
    }
}

/// Builds a [`Pool`]: Momoko's knobs with Momoko's defaults, plus timeouts.
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn momoko_core::Executor>) -> momoko_core::Result<()> {
/// use std::time::Duration;
/// use momoko_core::Pool;
///
/// let pool = Pool::builder("host=localhost dbname=app user=app", executor)
///     .size(2)
///     .max_size(10)
///     .setsession(["SET TIME ZONE 'UTC'"])
///     .acquire_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// let mut cursor = pool.execute("SELECT 1", &[]).await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `connect` or `build` is called"]
pub struct PoolBuilder {
    dsn: Result<ConnectOptions>,
    executor: Arc<dyn Executor>,
    config: PoolConfig,
    max_size_set: bool,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("options", &self.dsn.as_ref().ok())
            .field("config", &self.config)
            .finish()
    }
}

impl PoolBuilder {
    /// Connections opened by `connect()` and kept open: the pool reconnects dead ones back up
    /// to this number. Must be at least 1. Defaults to 1.
    pub fn size(mut self, size: usize) -> PoolBuilder {
        self.config.size = size;
        if !self.max_size_set {
            self.config.max_size = size;
        }
        self
    }

    /// The most connections the pool opens when callers would otherwise wait ("stretching").
    /// Must be at least `size`. Defaults to `size` (no stretching).
    pub fn max_size(mut self, max_size: usize) -> PoolBuilder {
        self.config.max_size = max_size;
        self.max_size_set = true;
        self
    }

    /// Minimum time between attempts to reopen dead connections. While the database is down and
    /// the last attempt is more recent than this, callers get
    /// [`ErrorKind::DatabaseNotAvailable`] at once. Defaults to 500 ms.
    pub fn reconnect_interval(mut self, interval: Duration) -> PoolBuilder {
        self.config.reconnect_interval = interval;
        self
    }

    /// SQL statements run, in order, on every new or reopened connection (time zone, search
    /// path, …). If one fails, that connection is closed and counts as a failed connect.
    /// Defaults to none.
    pub fn setsession<I, S>(mut self, statements: I) -> PoolBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.setsession = statements.into_iter().map(Into::into).collect();
        self
    }

    /// Whether `connect()` fails with [`ErrorKind::PartiallyConnected`] when any initial
    /// connection fails. When false, the pool starts with dead connections and reopens them in
    /// the background. Defaults to true.
    pub fn raise_connect_errors(mut self, raise: bool) -> PoolBuilder {
        self.config.raise_connect_errors = raise;
        self
    }

    /// Whether idle connections above `size` are closed once idle for `shrink_delay`. Defaults to
    /// false.
    ///
    /// It also sets the checkout order: with shrinking, the most recently used free connection is
    /// taken (as in Momoko), so extras stay idle and age; without, the least recently used, so
    /// sequential callers rotate over the connections (faster: each statement meets a backend
    /// that has settled since its previous one).
    pub fn auto_shrink(mut self, on: bool) -> PoolBuilder {
        self.config.auto_shrink = on;
        self
    }

    /// How long a connection above `size` must be idle before it may be closed. Defaults to
    /// 2 minutes.
    pub fn shrink_delay(mut self, delay: Duration) -> PoolBuilder {
        self.config.shrink_delay = delay;
        self
    }

    /// How often idle extras are looked for. Defaults to 2 minutes.
    pub fn shrink_period(mut self, period: Duration) -> PoolBuilder {
        self.config.shrink_period = period;
        self
    }

    /// Longest a caller waits for a connection before failing with
    /// [`ErrorKind::Timeout`]. Defaults to no limit.
    pub fn acquire_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.config.acquire_timeout = Some(timeout);
        self
    }

    /// Longest each connection attempt may take (per host). Defaults to the DSN's
    /// `connect_timeout`, or 10 seconds (a pool never waits forever on a silent server).
    pub fn connect_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.dsn = self.dsn.map(|o| o.connect_timeout(timeout));
        self
    }

    /// Longest a statement run through the pool may take. When it elapses the statement is
    /// cancelled on the server, its connection is closed (never reused in an unknown state) and
    /// the caller gets [`ErrorKind::Timeout`]. Defaults to no limit.
    pub fn statement_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.config.statement_timeout = Some(timeout);
        self
    }

    /// Which statements that failed on a dead connection are run again on another one.
    /// Defaults to [`RetryPolicy::Safe`].
    pub fn retry(mut self, policy: RetryPolicy) -> PoolBuilder {
        self.config.retry = policy;
        self
    }

    /// Lets up to `depth` autocommit statements from [`Pool::execute`], [`Pool::callproc`],
    /// [`Pool::mogrify`] and [`Pool::ping`] share one free connection at once: they are sent back
    /// to back (pipelined) and answered in order, so a few connections carry many concurrent
    /// callers. Transactions, statements that open one (`BEGIN`), and `getconn` stay exclusive;
    /// an exclusive caller only takes a connection no statement is pipelined on.
    ///
    /// A statement goes to the free connection with the fewest statements in flight, skipping a
    /// connection that has finished none of its pipelined statements for 5 ms (a slow statement
    /// holds its pipeline up; new statements then go elsewhere, or wait, and the pool grows up to
    /// `max_size` for them). When no connection can take it, a statement queues with the other
    /// callers, first come first served: the room a finished statement leaves goes to the oldest
    /// waiter, never to a newcomer, and an exclusive caller at the head of the queue lets the
    /// pipelined statements drain.
    ///
    /// Trade-offs: a statement can still be sent behind one that turns out to be slow, and waits
    /// for it;
    /// a pipelined statement whose future is dropped still runs to completion on the server; and
    /// a statement that exceeds `statement_timeout` is cancelled only when it was alone on its
    /// connection (a cancel request cannot pick one statement), while its connection is retired
    /// either way. `1` turns pipelining off: one statement per connection, as in Momoko. Defaults
    /// to 1.
    pub fn pipeline(mut self, depth: usize) -> PoolBuilder {
        self.config.pipeline_depth = depth.max(1);
        self
    }

    /// Replaces the connection settings parsed from the DSN.
    pub fn options(mut self, options: ConnectOptions) -> PoolBuilder {
        self.dsn = Ok(options);
        self
    }

    /// Creates the pool and starts opening its `size` connections in the background, without
    /// waiting. Queries made before they are open wait for them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for an invalid DSN or settings (`size` of 0, `max_size < size`).
    pub fn build(self) -> Result<Pool> {
        let mut options = self.dsn?;
        if options.get_connect_timeout().is_none() {
            options = options.connect_timeout(DEFAULT_POOL_CONNECT_TIMEOUT);
        }
        let c = &self.config;
        if c.size == 0 {
            return Err(Error::config("pool size must be at least 1"));
        }
        if c.max_size < c.size {
            return Err(Error::config(format!(
                "max_size ({}) must be at least size ({})",
                c.max_size, c.size
            )));
        }
        Ok(Pool {
            inner: PoolInner::new(self.executor, options, self.config),
        })
    }

    /// Creates the pool and waits until its `size` connections are open.
    ///
    /// # Errors
    ///
    /// As [`build`](PoolBuilder::build), and [`ErrorKind::PartiallyConnected`] when
    /// `raise_connect_errors` is on and some connection failed (the pool is closed then).
    pub async fn connect(self) -> Result<Pool> {
        let pool = self.build()?;
        match pool.connect().await {
            Ok(()) => Ok(pool),
            Err(e) => {
                pool.close().await;
                Err(e)
            }
        }
    }
}

/// A pool of PostgreSQL connections, usable from any runtime (Momoko's `momoko.Pool`).
///
/// * Queries are spread over up to `max_size` connections; when all are busy, callers queue
///   first-in, first-out, and a freed connection goes to the longest waiter.
/// * `size` connections are kept open; dead ones are reopened in the background every
///   `reconnect_interval`. While the database is down, callers fail fast with
///   [`ErrorKind::DatabaseNotAvailable`].
/// * A statement that failed because its connection died is retried once on another connection
///   when that is safe (see [`RetryPolicy`]).
/// * Cloning is cheap: clones share the same connections. Run queries concurrently with
///   `futures::try_join!` on clones or references.
///
/// Dropping a future of any pool method at any point leaves the pool consistent; a connection
/// abandoned mid-statement is closed, never handed to the next caller.
///
/// ```no_run
/// # async fn demo(pool: momoko_core::Pool) -> momoko_core::Result<()> {
/// let (a, b, c) = futures_util::try_join!(
///     pool.execute("SELECT 1", &[]),
///     pool.execute("SELECT 2", &[]),
///     pool.execute("SELECT 3", &[]),
/// )?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.inner.id)
            .field("status", &self.status())
            .finish()
    }
}

/// A snapshot of the pool's connections (Momoko's `ConnectionContainer`).
///
/// `total = free + busy + pending + dead`; `dead` are the missing connections below `size` that
/// the pool is reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Idle connections ready for use.
    pub free: usize,
    /// Connections checked out (running a statement or held by `getconn`).
    pub busy: usize,
    /// Connects in progress.
    pub pending: usize,
    /// Missing connections below `size`, waiting to be reopened.
    pub dead: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// `free + busy + pending + dead`.
    pub total: usize,
    /// The configured `size`.
    pub size: usize,
    /// The configured `max_size`.
    pub max_size: usize,
    /// Whether `close()` was called.
    pub closed: bool,
    /// Whether the last connect attempt failed.
    pub database_down: bool,
    /// Pipelined statements in flight on free connections (see [`PoolBuilder::pipeline`]).
    pub pipelined: usize,
}

/// Counters since the pool was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolCounters {
    /// Connections opened successfully.
    pub connections_opened: u64,
    /// Connections closed (shrunk, dead, discarded, or closed with the pool).
    pub connections_closed: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Connections reopened to replace dead ones.
    pub reconnects: u64,
    /// Statements run again after their connection died.
    pub retries: u64,
    /// Checkouts requested.
    pub acquires: u64,
    /// Checkouts that had to wait.
    pub acquire_waits: u64,
    /// Checkouts that gave up after `acquire_timeout`.
    pub acquire_timeouts: u64,
    /// Connections closed because they were dead or in an unknown state.
    pub discarded: u64,
    /// Statements cancelled after `statement_timeout`.
    pub statement_timeouts: u64,
    /// Idle extras closed by auto-shrink.
    pub shrunk: u64,
}

impl Pool {
    /// A builder for a pool on `dsn` (see [`ConnectOptions`] for the formats), with I/O and
    /// timers from `executor`.
    pub fn builder(dsn: &str, executor: Arc<dyn Executor>) -> PoolBuilder {
        PoolBuilder {
            dsn: ConnectOptions::parse(dsn),
            executor,
            config: PoolConfig::default(),
            max_size_set: false,
        }
    }

    /// Waits until the initial `size` connects have finished (Momoko's `Pool.connect()`). Calling
    /// it again returns the same outcome without opening more connections.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PartiallyConnected`] when `raise_connect_errors` is on and some initial
    /// connection failed; the message gives the count, the source the last connect error.
    pub async fn connect(&self) -> Result<()> {
        let (_, failed) = self.inner.initial_round().await;
        if failed > 0 && self.inner.config.raise_connect_errors {
            let e = Error::new(
                ErrorKind::PartiallyConnected,
                format!(
                    "{failed} of {} connection(s) failed to connect",
                    self.inner.config.size
                ),
            );
            let last = self.status().database_down;
            return Err(if last {
                match self.last_connect_error() {
                    Some(cause) => e.with_source(cause),
                    None => e,
                }
            } else {
                e
            });
        }
        Ok(())
    }

    fn last_connect_error(&self) -> Option<Error> {
        self.inner.last_down_error()
    }

    /// Runs one statement on a pooled connection (see [`Connection::execute`]).
    ///
    /// # Errors
    ///
    /// The statement's error; [`ErrorKind::Timeout`] after `acquire_timeout` or
    /// `statement_timeout`; [`ErrorKind::DatabaseNotAvailable`] while the database is down;
    /// [`ErrorKind::PoolClosed`] after `close()`.
    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<Cursor> {
        with_statement!(self, opens_transaction: opens_transaction(sql), |c| c.execute(sql, params))
    }

    /// Calls a function by name on a pooled connection (see [`Connection::callproc`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`].
    pub async fn callproc(&self, name: &str, params: &[Param<'_>]) -> Result<Cursor> {
        with_statement!(self, opens_transaction: false, |c| c.callproc(name, params))
    }

    /// Runs `statements` in one transaction on one pooled connection (see
    /// [`Connection::transaction`]); one [`Cursor`] per statement.
    ///
    /// # Errors
    ///
    /// The first failing statement's error, after the rollback.
    pub async fn transaction<'q, I>(&self, statements: I) -> Result<Vec<Cursor>>
    where
        I: IntoIterator<Item = Query<'q>>,
    {
        let statements: Vec<Query<'q>> = statements.into_iter().collect();
        with_connection!(self, opens_transaction: false, |c| c.transaction(statements.iter().copied()))
    }

    /// Runs `body` in a transaction on one pooled connection (see
    /// [`Connection::transaction_with`]). `body` may run twice if the connection died before the
    /// `COMMIT` and the retry policy allows it, so keep side effects outside the database out of it.
    ///
    /// # Errors
    ///
    /// `body`'s error, or the error of `BEGIN`/`COMMIT`.
    pub async fn transaction_with<T, F>(&self, body: F) -> Result<T>
    where
        F: for<'c> Fn(&'c Connection) -> BoxFuture<'c, Result<T>>,
    {
        with_connection!(self, opens_transaction: false, |c| c.transaction_with(&body))
    }

    /// Renders the query with its parameters as literals (see [`Connection::mogrify`]); uses a
    /// pooled connection to learn the parameter types, as Momoko does.
    ///
    /// # Errors
    ///
    /// As [`Connection::mogrify`].
    pub async fn mogrify(&self, sql: &str, params: &[Param<'_>]) -> Result<String> {
        with_statement!(self, opens_transaction: false, |c| c.mogrify(sql, params))
    }

    /// Runs `SELECT 1 AS ping` on a pooled connection.
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`].
    pub async fn ping(&self) -> Result<()> {
        with_statement!(self, opens_transaction: false, |c| c.ping())
    }

    /// Takes a connection for exclusive use (Momoko's `getconn`): for server-side cursors,
    /// session settings, or several statements in a row. The connection returns to the pool when
    /// the guard is dropped (Momoko's `manage`), even during a panic; if it is inside a
    /// transaction then, the transaction is rolled back first.
    ///
    /// The connection is checked for being closed but not pinged; see
    /// [`getconn_verified`](Pool::getconn_verified).
    ///
    /// ```no_run
    /// # async fn demo(pool: momoko_core::Pool) -> momoko_core::Result<()> {
    /// let conn = pool.getconn().await?;
    /// conn.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM generate_series(1, 1000)").await?;
    /// loop {
    ///     let cursor = conn.execute("FETCH 10 FROM c", &[]).await?;
    ///     if cursor.rowcount() == 0 { break; }
    /// }
    /// conn.batch_execute("CLOSE c; COMMIT").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] after `acquire_timeout`, [`ErrorKind::DatabaseNotAvailable`],
    /// [`ErrorKind::PoolClosed`].
    pub async fn getconn(&self) -> Result<PooledConnection> {
        let conn = self.acquire(Want::Exclusive).await?;
        Ok(PooledConnection::new(conn, &self.inner, true))
    }

    /// Like [`getconn`](Pool::getconn), but proves the connection works with a ping first
    /// (Momoko's `getconn(ping=True)`); a dead connection is replaced by another, once.
    ///
    /// # Errors
    ///
    /// As [`getconn`](Pool::getconn), and the ping's error.
    pub async fn getconn_verified(&self) -> Result<PooledConnection> {
        self.acquire_verified(true).await
    }

    /// Returns a held connection to the pool now (Momoko's `putconn`); the same as dropping the
    /// guard.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Usage`] when the connection belongs to another pool (it still goes back to
    /// its own pool).
    pub fn putconn(&self, conn: PooledConnection) -> Result<()> {
        if conn.pool_id() != self.inner.id {
            drop(conn);
            return Err(Error::usage(
                "putconn: this connection belongs to another pool; it was returned to that pool",
            ));
        }
        drop(conn);
        Ok(())
    }

    /// A snapshot of the pool's connections.
    pub fn status(&self) -> PoolStatus {
        self.inner.status()
    }

    /// The pool's counters.
    pub fn counters(&self) -> PoolCounters {
        self.inner.counters()
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The executor the pool runs on.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.inner.executor
    }

    /// Whether `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes the pool gracefully: new calls and queued callers get [`ErrorKind::PoolClosed`],
    /// idle connections close at once, statements in flight finish and their connections close
    /// when returned, and nothing is reopened. Resolves when every connection is closed. Calling
    /// it again is harmless.
    pub async fn close(&self) {
        self.inner.begin_close();
        self.inner.drained().await;
    }

    async fn acquire(&self, want: Want) -> Result<Arc<Connection>> {
        let acquire = self.inner.acquire(want);
        match self.inner.config.acquire_timeout {
            None => acquire.await,
            Some(limit) => match timeout(&*self.inner.executor, limit, acquire).await {
                Ok(r) => r,
                Err(_) => {
                    self.inner
                        .counters
                        .acquire_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    Err(Error::timeout(format!(
                        "no connection became free within acquire_timeout ({limit:?})"
                    )))
                }
            },
        }
    }

    /// Checks a connection out and pings it; dead ones are closed and the next one tried, so the
    /// result is a connection that just answered. Cancel-safe: the connection is guarded during
    /// the ping.
    async fn acquire_verified(&self, held: bool) -> Result<PooledConnection> {
        loop {
            let mut guard =
                PooledConnection::new(self.acquire(Want::Exclusive).await?, &self.inner, held);
            guard.in_flight = true;
            match guard.ping().await {
                Ok(()) => {
                    guard.in_flight = false;
                    guard.activity_at_checkout = guard.activity();
                    return Ok(guard);
                }
                Err(e) if e.is_connection_lost() => {
                    debug!(target: "momoko", error = %e, "closing a dead connection found by ping");
                    drop(guard);
                }
                Err(e) => {
                    guard.in_flight = false;
                    return Err(e);
                }
            }
        }
    }

    /// Decides what happens after an operation: `None` to retry on another connection (the
    /// current one is discarded when `guard` drops), `Some` to return the outcome.
    fn settle<T>(
        &self,
        guard: &mut PooledConnection,
        outcome: Result<T>,
        retried: &mut bool,
        opens_transaction: bool,
    ) -> Option<Result<T>> {
        match outcome {
            Err(e) if !*retried && self.should_retry(&e) => {
                *retried = true;
                self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                debug!(target: "momoko", error = %e, status = ?self.status(), "retrying on another connection");
                None
            }
            // The connection is gone or in an unknown state: leave `in_flight` set.
            Err(e) if e.is_timeout() || e.is_connection_lost() => Some(Err(e)),
            other => {
                guard.in_flight = false;
                if opens_transaction && other.is_ok() {
                    guard.held = true;
                }
                Some(other)
            }
        }
    }

    fn statement_timed_out(
        &self,
        cancel: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) -> Error {
        self.inner
            .counters
            .statement_timeouts
            .fetch_add(1, Ordering::Relaxed);
        spawn_cancel(&self.inner.executor, cancel);
        let limit = self.inner.config.statement_timeout.unwrap_or_default();
        warn!(target: "momoko", ?limit, status = ?self.status(), "statement_timeout elapsed; statement cancelled");
        Error::timeout(format!(
            "statement_timeout ({limit:?}) elapsed; the statement was cancelled"
        ))
    }

    fn shared_statement_timed_out(&self, guard: &SharedConnection<'_>) -> Error {
        self.inner
            .counters
            .statement_timeouts
            .fetch_add(1, Ordering::Relaxed);
        let conn = guard.connection();
        if let Some(arc) = &guard.conn {
            if self.inner.retire(arc) {
                spawn_cancel(&self.inner.executor, conn.cancel_later());
            }
        }
        let limit = self.inner.config.statement_timeout.unwrap_or_default();
        warn!(target: "momoko", ?limit, status = ?self.status(), "statement_timeout elapsed on a pipelined statement");
        Error::timeout(format!(
            "statement_timeout ({limit:?}) elapsed; the pipelined statement was abandoned"
        ))
    }

    fn should_retry(&self, e: &Error) -> bool {
        if !e.is_connection_lost() || self.inner.is_closed() {
            return false;
        }
        match self.inner.config.retry {
            RetryPolicy::Never => false,
            RetryPolicy::Safe => e.was_not_executed(),
            RetryPolicy::Always => true,
        }
    }
}

/// Whether a statement sent through `Pool::execute` opens a transaction block that would leak
/// to the next user of the connection (`BEGIN`, `START TRANSACTION`).
fn opens_transaction(sql: &str) -> bool {
    let s = sql.trim_start();
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let word = &s[..end];
    word.eq_ignore_ascii_case("BEGIN") || word.eq_ignore_ascii_case("START")
}

/// One pipelined statement's share of a free connection; ends the share when dropped.
struct SharedConnection<'p> {
    conn: Option<Arc<Connection>>,
    inner: &'p Arc<PoolInner>,
}

impl SharedConnection<'_> {
    fn connection(&self) -> &Connection {
        match &self.conn {
            Some(c) => c,
            // Invariant: `conn` is only taken in `drop`.
            None => unreachable!("SharedConnection used after drop"),
        }
    }
}

impl Drop for SharedConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.release_shared(conn);
        }
    }
}

/// A connection taken from a [`Pool`]; it goes back when dropped (Momoko's `manage`).
///
/// Dereferences to [`Connection`], so every query method is available. If the holder leaves the
/// connection inside a transaction, it is rolled back before anyone else gets the connection;
/// if a statement was abandoned mid-flight, the connection is checked (waiting for the abandoned
/// statement) or closed.
pub struct PooledConnection {
    /// Unique while checked out: the pool clones a connection's `Arc` only for pipelined
    /// statements, and only while the connection is free.
    conn: Option<Arc<Connection>>,
    inner: Arc<PoolInner>,
    /// Held by a user (`getconn`): check the transaction state on return.
    held: bool,
    /// A pool operation is running on it: if dropped now, the connection is in an unknown state.
    in_flight: bool,
    /// Set by `discard()`.
    discard: AtomicBool,
    /// The connection's statement count at checkout: unchanged means nothing ran.
    activity_at_checkout: u64,
}

impl PooledConnection {
    fn new(conn: Arc<Connection>, inner: &Arc<PoolInner>, held: bool) -> PooledConnection {
        PooledConnection {
            activity_at_checkout: conn.activity(),
            conn: Some(conn),
            inner: Arc::clone(inner),
            held,
            in_flight: false,
            discard: AtomicBool::new(false),
        }
    }

    fn pool_id(&self) -> u64 {
        self.inner.id
    }

    /// Closes this connection instead of returning it to the pool (the pool opens a replacement
    /// as needed).
    pub fn discard(self) {
        self.discard.store(true, Ordering::Relaxed);
    }
}

impl Deref for PooledConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.conn {
            Some(c) => c,
            // Invariant: `conn` is only taken in `drop`.
            None => unreachable!("PooledConnection used after drop"),
        }
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        match self.conn.as_mut().and_then(Arc::get_mut) {
            Some(c) => c,
            // Invariants: `conn` is only taken in `drop`, and a checked-out `Arc` is unique
            // (see the field).
            None => unreachable!("PooledConnection used after drop or shared"),
        }
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("pool", &self.inner.id)
            .field("connection", &self.conn)
            .finish()
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.in_flight || self.discard.load(Ordering::Relaxed) || conn.is_closed() {
            self.inner.release(conn, false);
            return;
        }
        // Cheap checks first: `release` itself handles a closed pool.
        if !self.held || conn.activity() == self.activity_at_checkout || self.inner.is_closed() {
            self.inner.release(conn, true);
            return;
        }
        // A held connection may be inside a transaction or still running an abandoned statement:
        // check it off the caller's path, then return it.
        let inner = Arc::clone(&self.inner);
        let executor = self.inner.executor.clone();
        self.inner.executor.spawn(Box::pin(async move {
            let clean = maybe_timeout(&*executor, Some(RESET_TIMEOUT), reset(&conn)).await;
            match clean {
                Ok(Ok(())) => inner.release(conn, true),
                Ok(Err(e)) => {
                    debug!(target: "momoko", error = %e, "could not reset a returned connection; closing it");
                    inner.release(conn, false);
                }
                Err(_) => {
                    spawn_cancel(&executor, conn.cancel_later());
                    inner.release(conn, false);
                }
            }
        }));
    }
}

/// Sends a cancel request in the background, given up after [`CANCEL_TIMEOUT`] (a black-holed
/// server never answers it).
fn spawn_cancel(
    executor: &Arc<dyn Executor>,
    cancel: impl std::future::Future<Output = Result<()>> + Send + 'static,
) {
    let timer = Arc::clone(executor);
    executor.spawn(Box::pin(async move {
        match timeout(&*timer, CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(target: "momoko", error = %e, "cancel request failed"),
            Err(_) => debug!(target: "momoko", "cancel request timed out"),
        }
    }));
}

/// Leaves the connection outside any transaction block (rolling back an open or failed one).
async fn reset(conn: &Connection) -> Result<()> {
    if conn.in_transaction_block().await? {
        conn.batch_execute("ROLLBACK").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Pool futures can be spawned on multi-threaded executors.
    #[allow(dead_code)]
    fn futures_are_send(pool: &Pool, conn: &mut Connection) {
        assert_send(&pool.execute("SELECT $1", &[&1i32]));
        assert_send(&pool.callproc("f", &[]));
        assert_send(&pool.transaction(["SELECT 1".into()]));
        assert_send(&pool.transaction_with(|c| Box::pin(async move { c.ping().await })));
        assert_send(&pool.mogrify("SELECT 1", &[]));
        assert_send(&pool.getconn());
        assert_send(&pool.getconn_verified());
        assert_send(&pool.close());
        assert_send(&pool.connect());
        assert_send(&conn.transaction(["SELECT 1".into()]));
        assert_send(&conn.execute("SELECT 1", &[]));
    }

    #[test]
    fn transaction_openers_are_recognised() {
        assert!(opens_transaction("BEGIN"));
        assert!(opens_transaction("  begin isolation level serializable"));
        assert!(opens_transaction("START TRANSACTION"));
        assert!(!opens_transaction("SELECT 'BEGIN'"));
        assert!(!opens_transaction("BEGINNING"));
        assert!(opens_transaction("BEGIN;"));
        assert!(!opens_transaction(""));
        assert!(!opens_transaction("SELECT 1"));
    }
}
