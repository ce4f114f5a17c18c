//! The pool (Momoko's `momoko.Pool`).
//!
//! * `builder.rs`, `settings.rs`: how a pool is configured, and its defaults;
//! * `engine.rs`: the state machine: idle, busy, checking and pending connections, the queue of
//!   waiters, paced growth, reconnects, shrinking, lifetimes, drain, resize and leak watch;
//! * `run.rs`: running one operation on a connection (exclusive or pipelined), with the retry
//!   decided in one place;
//! * `guard.rs`: [`PooledConnection`], and how every connection comes back, by its exact state;
//! * `status.rs`: what the pool reports about itself;
//! * `metrics.rs`: the same numbers through the `metrics` facade (with the `metrics` feature).

mod builder;
mod engine;
mod guard;
mod metrics;
mod pipeline;
mod run;
mod settings;
mod status;

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

pub use builder::PoolBuilder;
pub use guard::PooledConnection;
pub use settings::{PoolConfig, RetryPolicy};
pub use status::{PoolCounters, PoolStats, PoolStatus};

#[cfg(doc)]
use crate::connection::Connection;
use crate::connection::{Param, Query};
use crate::cursor::Cursor;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::sql;
pub(crate) use engine::open_session;
use engine::PoolInner;
use run::{Mogrify, Ping, Statement, Transaction};

/// A pool of PostgreSQL connections, usable from any runtime (Momoko's `momoko.Pool`).
///
/// * Queries are spread over up to `max_size` connections; when all are busy, callers queue
///   first-in, first-out, and a freed connection goes to the longest waiter.
/// * `size` connections are kept open; dead ones are reopened in the background every
///   `reconnect_interval`. While the database is down, callers fail fast with
///   [`ErrorKind::DatabaseNotAvailable`].
/// * A statement that failed because its connection died is retried once on another connection
///   when that is safe (see [`RetryPolicy`]).
/// * Connections older than `max_lifetime` (30 minutes by default) are replaced while free;
///   [`drain`](Pool::drain) replaces them all, [`resize`](Pool::resize) changes the sizes, at run
///   time.
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

impl Pool {
    /// A builder for a pool on `dsn` (see [`ConnectOptions`](crate::ConnectOptions) for the formats), with I/O and
    /// timers from `executor`.
    pub fn builder(dsn: &str, executor: Arc<dyn Executor>) -> PoolBuilder {
        PoolBuilder::new(dsn, executor)
    }

    /// Waits until the initial `size` connects have finished (Momoko's `Pool.connect()`). Calling
    /// it again returns the same outcome without opening more connections.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PartiallyConnected`] when `raise_connect_errors` is on and some initial
    /// connection failed; [`Error::failed_connections`] gives the count, the source the last
    /// connect error.
    pub async fn connect(&self) -> Result<()> {
        let (_, failed) = self.inner.initial_round().await;
        if failed > 0 && self.inner.config.raise_connect_errors {
            let e = Error::partially_connected(failed, self.inner.config.size);
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
        run::run(&self.inner, &Statement { sql, params }).await
    }

    /// Calls a function by name on a pooled connection (see [`Connection::callproc`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`].
    pub async fn callproc(&self, name: &str, params: &[Param<'_>]) -> Result<Cursor> {
        let sql =
            sql::callproc_sql(name, params.len()).map_err(|e| Error::parameter(e.to_string()))?;
        run::run(&self.inner, &Statement { sql: &sql, params }).await
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
        run::run(&self.inner, &Transaction { statements }).await
    }

    /// Runs `body` in a transaction on one pooled connection (see
    /// [`Connection::transaction_with`]): `body` is an async closure that gets the
    /// [`Transaction`](crate::Transaction). `body` may run twice if the connection died before
    /// the `COMMIT` and the retry policy allows it, so keep side effects outside the database out
    /// of it. The pool's `statement_timeout` bounds the whole transaction.
    ///
    /// ```no_run
    /// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
    /// let id: i32 = pool
    ///     .transaction_with(async |tx| {
    ///         let id = tx.execute("INSERT INTO item (name) VALUES ($1) RETURNING id", &[&"pen"]).await?.scalar()?;
    ///         tx.execute("INSERT INTO stock (item, n) VALUES ($1, $2)", &[&id, &10i32]).await?;
    ///         Ok(id)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `body`'s error, or the error of `BEGIN`/`COMMIT`.
    pub async fn transaction_with<T, F>(&self, body: F) -> Result<T>
    where
        F: AsyncFnMut(&mut crate::Transaction<'_>) -> Result<T>,
    {
        run::transaction_with(&self.inner, body).await
    }

    /// Renders the query with its parameters as literals (see [`Connection::mogrify`]); uses a
    /// pooled connection to learn the parameter types, as Momoko does.
    ///
    /// # Errors
    ///
    /// As [`Connection::mogrify`].
    pub async fn mogrify(&self, sql: &str, params: &[Param<'_>]) -> Result<String> {
        run::run(&self.inner, &Mogrify { sql, params }).await
    }

    /// Runs `SELECT 1 AS ping` on a pooled connection.
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`].
    pub async fn ping(&self) -> Result<()> {
        run::run(&self.inner, &Ping).await
    }

    /// Takes a connection for exclusive use (Momoko's `getconn`): for server-side cursors,
    /// session settings, or several statements in a row. The connection returns to the pool when
    /// the guard is dropped (Momoko's `manage`), even during a panic; if it is inside a
    /// transaction then, the transaction is rolled back first (off your path).
    ///
    /// Like Momoko's `getconn(ping=True)`, the connection is proven alive first (an empty query:
    /// one round trip); one that died silently is closed and another taken. Use
    /// [`getconn_unverified`](Pool::getconn_unverified) to skip the round trip.
    ///
    /// ```no_run
    /// # async fn demo(pool: momoko_core::Pool) -> momoko_core::Result<()> {
    /// let conn = pool.getconn().await?;
    /// conn.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM generate_series(1, 1000)").await?;
    /// loop {
    ///     let cursor = conn.execute("FETCH 10 FROM c", &[]).await?;
    ///     if cursor.rowcount() == Some(0) { break; }
    /// }
    /// conn.batch_execute("CLOSE c; COMMIT").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With a [`leak_threshold`](crate::PoolBuilder::leak_threshold), a connection held longer
    /// than the threshold is reported with the line that called `getconn`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] after `acquire_timeout`, [`ErrorKind::DatabaseNotAvailable`],
    /// [`ErrorKind::TooManyWaiting`] past `max_waiting`, [`ErrorKind::PoolClosed`], and the
    /// liveness check's error when it failed for another reason than a dead connection.
    #[track_caller]
    pub fn getconn(&self) -> impl Future<Output = Result<PooledConnection>> + Send + '_ {
        let at = Location::caller();
        async move {
            let mut conn = run::checkout_verified(&self.inner).await?;
            conn.held_by(at, "getconn");
            Ok(conn)
        }
    }

    /// Like [`getconn`](Pool::getconn) (Momoko's `getconn(ping=False)`), without proving the
    /// connection alive first: it is known not to be closed, but one that died silently is
    /// found out only by its first statement.
    ///
    /// # Errors
    ///
    /// As [`getconn`](Pool::getconn).
    #[track_caller]
    pub fn getconn_unverified(&self) -> impl Future<Output = Result<PooledConnection>> + Send + '_ {
        let at = Location::caller();
        async move {
            let mut conn = run::checkout(&self.inner).await?;
            conn.held_by(at, "getconn");
            Ok(conn)
        }
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

    /// The pool's settings: as built, except `size` and `max_size`, which are those in force
    /// (see [`resize`](Pool::resize)).
    pub fn config(&self) -> PoolConfig {
        let mut config = self.inner.config.clone();
        let status = self.status();
        config.size = status.size;
        config.max_size = status.max_size;
        config
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

    /// Opens a transaction on a pooled connection, held until the guard is committed, rolled
    /// back or dropped (see [`Transaction`](crate::Transaction)); dropped uncommitted, the
    /// connection goes back to the pool, which rolls it back off your path.
    ///
    /// ```no_run
    /// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
    /// let tx = pool.begin().await?;
    /// tx.execute("INSERT INTO greeting VALUES ($1)", &[&"hello"]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`getconn`](Pool::getconn), and the server's error for `BEGIN`.
    #[track_caller]
    pub fn begin(&self) -> impl Future<Output = Result<crate::Transaction<'static>>> + Send + '_ {
        let at = Location::caller();
        async move { run::begin(&self.inner, &crate::TransactionOptions::default(), at).await }
    }

    /// [`begin`](Pool::begin) with an isolation level, read-only or deferrable mode.
    ///
    /// # Errors
    ///
    /// As [`begin`](Pool::begin).
    #[track_caller]
    pub fn begin_with(
        &self,
        options: crate::TransactionOptions,
    ) -> impl Future<Output = Result<crate::Transaction<'static>>> + Send + '_ {
        let at = Location::caller();
        async move { run::begin(&self.inner, &options, at).await }
    }

    /// Runs statements separated by semicolons, without parameters, on a pooled connection,
    /// discarding results (see [`Connection::batch_execute`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`].
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        run::hold(&self.inner, move |conn| async move {
            conn.batch_execute(sql).await
        })
        .await
    }

    /// Runs one statement and streams its rows as they arrive (see
    /// [`Connection::execute_stream`]); the stream holds a pooled connection until it is
    /// dropped. Dropped before its end, the rest of the result is discarded and the connection
    /// is never reused mid-result (see [`RowStream`](crate::RowStream)).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`], for starting the statement.
    pub async fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<crate::RowStream<'static>> {
        run::hold(&self.inner, move |conn| {
            crate::RowStream::start(crate::connection::held::Held::Pooled(conn), sql, params)
        })
        .await
    }

    /// Starts a `COPY … FROM STDIN` on a pooled connection, held until the sink is finished or
    /// dropped (see [`CopyIn`](crate::CopyIn)).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`], for starting the COPY.
    pub async fn copy_in(&self, sql: &str) -> Result<crate::CopyIn<'static>> {
        run::hold(&self.inner, move |conn| {
            crate::CopyIn::start(crate::connection::held::Held::Pooled(conn), sql)
        })
        .await
    }

    /// Starts a `COPY … FROM STDIN (FORMAT binary)` fed with typed rows, on a pooled
    /// connection held until it is finished or dropped (see
    /// [`BinaryCopyIn`](crate::BinaryCopyIn)).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`], for starting the COPY.
    pub async fn copy_in_binary(
        &self,
        sql: &str,
        types: &[crate::Type],
    ) -> Result<crate::BinaryCopyIn<'static>> {
        run::hold(&self.inner, move |conn| {
            crate::BinaryCopyIn::start(crate::connection::held::Held::Pooled(conn), sql, types)
        })
        .await
    }

    /// Starts a `COPY … TO STDOUT` on a pooled connection, held until the stream is dropped
    /// (see [`CopyOut`](crate::CopyOut)).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`], for starting the COPY.
    pub async fn copy_out(&self, sql: &str) -> Result<crate::CopyOut<'static>> {
        run::hold(&self.inner, move |conn| {
            crate::CopyOut::start(crate::connection::held::Held::Pooled(conn), sql)
        })
        .await
    }

    /// Runs `statements` in one round trip on one pooled connection, each on its own: one
    /// result per statement (see [`Connection::batch`]).
    ///
    /// # Errors
    ///
    /// As [`Pool::execute`] for taking the connection; every statement's own failure is in its
    /// slot.
    pub async fn batch<'q, I>(&self, statements: I) -> Result<Vec<Result<Cursor>>>
    where
        I: IntoIterator<Item = Query<'q>>,
    {
        let statements: Vec<Query<'q>> = statements.into_iter().collect();
        let statements = &statements;
        run::hold(&self.inner, move |conn| async move {
            conn.run_batch(statements).await
        })
        .await
    }

    /// Runs `statements` as one transaction in one round trip on one pooled connection (see
    /// [`Connection::batch_atomic`]).
    ///
    /// # Errors
    ///
    /// As [`Connection::batch_atomic`], and as [`Pool::execute`] for taking the connection.
    pub async fn batch_atomic<'q, I>(&self, statements: I) -> Result<Vec<Cursor>>
    where
        I: IntoIterator<Item = Query<'q>>,
    {
        let statements: Vec<Query<'q>> = statements.into_iter().collect();
        let statements = &statements;
        run::hold(&self.inner, move |conn| async move {
            conn.run_batch_atomic(statements).await
        })
        .await
    }

    /// A [`Listener`](crate::Listener) for LISTEN/NOTIFY, on a connection of its own opened
    /// with this pool's settings (not taken from the pool, and not counted in it).
    ///
    /// # Errors
    ///
    /// As [`Connection::connect`], and a failing `setsession` statement.
    pub async fn listener(&self) -> Result<crate::Listener> {
        if self.inner.options.is_transaction_pooler() {
            return Err(Error::usage(
                "LISTEN needs a session of its own, which a transaction-mode pooler does not \
                 keep: a listener is not available with transaction_pooler on (connect it to the \
                 server directly)",
            ));
        }
        crate::Listener::open(self).await
    }

    /// A connection outside the pool, opened as the pool opens its own (options and
    /// `setsession`).
    pub(crate) async fn connect_dedicated(&self) -> Result<crate::Connection> {
        open_session(
            &self.inner.options,
            &self.inner.executor,
            &self.inner.config.setsession,
        )
        .await
    }

    /// Replaces every connection gracefully (psycopg_pool's `drain`): statements and held
    /// connections finish undisturbed and their connections are replaced as they come back;
    /// idle connections are closed and reopened in the background, at most two at a time, each
    /// replacement opened before its old connection closes while the pool has room below
    /// `max_size`. Connects under way when it is called are redone too. Resolves when no
    /// connection from before the call is left and the replacements are open (or failed to
    /// open); or at once after `close()`. The pool serves callers throughout.
    ///
    /// Use it after a change that only new sessions see: a password rotation, a changed role or
    /// `search_path`, a new extension, a failover behind a load balancer. Dropping the future
    /// does not stop the replacement.
    pub async fn drain(&self) {
        self.inner.begin_drain();
        self.inner.drained_old().await;
    }

    /// Changes `size` and `max_size` at run time. Connections up to the new `size` are opened at
    /// once; connections above the new bounds are closed without dropping work: idle ones now,
    /// busy ones as they come back (above `max_size` always, above `size` once nobody waits).
    /// [`status`](Pool::status) and [`config`](Pool::config) report the new sizes at once;
    /// `status().total` reaches them as connections open and close.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `size` is 0 or `max_size < size` (nothing changes);
    /// [`ErrorKind::PoolClosed`] after `close()`.
    pub fn resize(&self, size: usize, max_size: usize) -> Result<()> {
        self.inner.resize(size, max_size)
    }

    /// The pool's numbers in psycopg_pool's terms (its `get_stats()`): sizes, waiting requests,
    /// requests served, queued and failed, total wait time, connections opened, failed, lost,
    /// replaced by [`drain`](Pool::drain) and rotated by `max_lifetime`.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connection;

    fn assert_send<T: Send>(_: &T) {}

    /// Pool futures can be spawned on multi-threaded executors.
    #[allow(dead_code)]
    fn futures_are_send(pool: &Pool, conn: &mut Connection) {
        assert_send(&pool.execute("SELECT $1", &[&1i32]));
        assert_send(&pool.callproc("f", &[]));
        assert_send(&pool.transaction(["SELECT 1".into()]));
        assert_send(&pool.transaction_with(async |tx| tx.ping().await));
        assert_send(&pool.begin());
        assert_send(&pool.mogrify("SELECT 1", &[]));
        assert_send(&pool.getconn());
        assert_send(&pool.getconn_unverified());
        assert_send(&pool.close());
        assert_send(&pool.connect());
        assert_send(&conn.transaction(["SELECT 1".into()]));
        assert_send(&conn.execute("SELECT 1", &[]));
    }
}
#[cfg(test)]
mod future_sizes {
    use super::*;

    fn size<T: 'static, R>(_: impl FnOnce(&'static T) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Pool futures stay small: applications nest several in one task (`join!`, `select!`), and
    /// a task's future is moved on the stack while it starts. In a debug build, doubling them
    /// (an `async fn` wrapper that keeps two copies of its argument) overflowed a 2 MiB test
    /// thread. Measured with rustc 1.95, debug: execute 1760 B, transaction 3576 B, getconn
    /// 312 B.
    #[test]
    fn pool_futures_stay_small() {
        let execute = size(|p: &'static Pool| p.execute("SELECT 1", &[]));
        let transaction = size(|p: &'static Pool| p.transaction(["SELECT 1".into()]));
        let getconn = size(|p: &'static Pool| p.getconn());
        assert!(execute <= 3 * 1024, "Pool::execute: {execute} bytes");
        assert!(
            transaction <= 6 * 1024,
            "Pool::transaction: {transaction} bytes"
        );
        assert!(getconn <= 1024, "Pool::getconn: {getconn} bytes");
    }
}
