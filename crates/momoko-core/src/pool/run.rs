//! Running one operation on a pooled connection: exclusively, or pipelined on a shared one, with
//! the statement timeout, and once more on another connection when that is provably safe. The
//! retry is decided here and nowhere else.

use std::future::Future;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::connection::held::Held;
use crate::connection::{
    Connection, Liveness, Param, Query, Transaction as TransactionGuard, TransactionOptions,
    TransactionStatus,
};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::executor::maybe_timeout;
use crate::pool::engine::{PoolInner, Want};
use crate::pool::guard::{spawn_cancel, PooledConnection};
use crate::pool::settings::RetryPolicy;

/// Something a pool method runs on one connection.
pub(crate) trait Operation: Sync {
    type Output: Send;

    /// Whether it may be pipelined with other statements on a shared connection: only what is
    /// known to leave a connection idle (a statement that opened a transaction block would pull
    /// the statements sent after it into the block). A statement not seen yet runs alone, and
    /// is remembered when it left its connection idle.
    fn shareable(&self, inner: &PoolInner) -> bool;

    /// The SQL to remember as safe to pipeline when, run alone, it left the connection idle.
    fn learnable(&self) -> Option<&str> {
        None
    }

    fn run<'c>(
        &'c self,
        conn: &'c Connection,
        liveness: Liveness,
    ) -> impl Future<Output = Result<Self::Output>> + Send + 'c;
}

/// One statement (`execute`, `callproc`).
pub(crate) struct Statement<'a> {
    pub(crate) sql: &'a str,
    pub(crate) params: &'a [Param<'a>],
}

impl Operation for Statement<'_> {
    type Output = Cursor;

    fn shareable(&self, inner: &PoolInner) -> bool {
        inner.is_autocommit(self.sql)
    }

    fn learnable(&self) -> Option<&str> {
        Some(self.sql)
    }

    fn run<'c>(
        &'c self,
        conn: &'c Connection,
        liveness: Liveness,
    ) -> impl Future<Output = Result<Cursor>> + Send + 'c {
        conn.execute_proven(self.sql, self.params, liveness)
    }
}

/// `mogrify`: renders a statement, runs none of the caller's SQL.
pub(crate) struct Mogrify<'a> {
    pub(crate) sql: &'a str,
    pub(crate) params: &'a [Param<'a>],
}

impl Operation for Mogrify<'_> {
    type Output = String;

    fn shareable(&self, _: &PoolInner) -> bool {
        true
    }

    fn run<'c>(
        &'c self,
        conn: &'c Connection,
        _: Liveness,
    ) -> impl Future<Output = Result<String>> + Send + 'c {
        conn.mogrify(self.sql, self.params)
    }
}

/// `ping`.
pub(crate) struct Ping;

impl Operation for Ping {
    type Output = ();

    fn shareable(&self, _: &PoolInner) -> bool {
        true
    }

    fn run<'c>(
        &'c self,
        conn: &'c Connection,
        _: Liveness,
    ) -> impl Future<Output = Result<()>> + Send + 'c {
        conn.ping()
    }
}

/// `transaction([...])`.
pub(crate) struct Transaction<'a> {
    pub(crate) statements: Vec<Query<'a>>,
}

impl Operation for Transaction<'_> {
    type Output = Vec<Cursor>;

    fn shareable(&self, _: &PoolInner) -> bool {
        false
    }

    fn run<'c>(
        &'c self,
        conn: &'c Connection,
        _: Liveness,
    ) -> impl Future<Output = Result<Vec<Cursor>>> + Send + 'c {
        conn.run_transaction(&self.statements)
    }
}

/// Runs `op`: pipelined when it may be and the pool pipelines, otherwise on a connection of its
/// own; then, when it failed on a dead connection and the [`RetryPolicy`] allows, once more on
/// a connection proven alive.
pub(crate) async fn run<O: Operation>(inner: &Arc<PoolInner>, op: &O) -> Result<O::Output> {
    let first = if inner.config.pipeline_depth > 1 && op.shareable(inner) {
        shared(inner, op).await
    } else {
        exclusive(inner, op, false).await
    };
    match first {
        Err(e) if should_retry(inner, &e) || inner.read_only_server_refused(&e) => {
            inner.count_retry();
            debug!(target: "momoko", error = %e, status = ?inner.status(), "retrying on another connection");
            // Boxed: the rare path should not double the size of every caller's future.
            Box::pin(exclusive(inner, op, true)).await
        }
        other => other,
    }
}

/// Whether a failed operation may run again elsewhere.
fn should_retry(inner: &PoolInner, e: &Error) -> bool {
    if !e.is_connection_lost() || inner.is_closed() {
        return false;
    }
    match inner.config.retry {
        RetryPolicy::Never => false,
        RetryPolicy::Safe => e.was_not_executed(),
        RetryPolicy::Always => true,
    }
}

/// Runs `op` on a connection of its own; with `verified`, the connection is proven alive first
/// (a dead one is closed and the next tried).
async fn exclusive<O: Operation>(
    inner: &Arc<PoolInner>,
    op: &O,
    verified: bool,
) -> Result<O::Output> {
    let mut conn = if verified {
        Box::pin(checkout_verified(inner)).await?
    } else {
        checkout(inner).await?
    };
    let liveness = inner.liveness();
    // How long a statement that may be learned takes alone (adaptive pipelining keeps slow ones
    // exclusive); no clock is read when the pool does not pipeline.
    let started =
        (inner.config.pipeline_depth > 1 && op.learnable().is_some()).then(|| inner.executor.now());
    let outcome = maybe_timeout(
        &*inner.executor,
        inner.config.statement_timeout,
        op.run(&conn, liveness),
    )
    .await;
    match outcome {
        Ok(result) => {
            if let Err(e) = &result {
                if inner.read_only_server_refused(e) {
                    // The server is not writable any more (demoted, or made read-only): leave
                    // it; a statement that failed with 25006 took no effect and may run again.
                    inner.forget_server(&conn);
                    conn.discard_on_return();
                }
            }
            if let (Ok(_), Some(sql), Some(started)) = (&result, op.learnable(), started) {
                if conn.transaction_status() == TransactionStatus::Idle {
                    let now = inner.executor.now();
                    inner.learn_autocommit(sql, now.saturating_duration_since(started), now);
                }
            }
            result
        }
        Err(_) => {
            conn.timed_out();
            Err(statement_timed_out(inner, "the statement was cancelled"))
        }
    }
}

/// A connection of one's own (counted busy until the guard drops).
pub(crate) async fn checkout(inner: &Arc<PoolInner>) -> Result<PooledConnection> {
    let conn = inner.checkout(Want::Exclusive).await?;
    Ok(PooledConnection::new(conn, inner))
}

/// A connection of one's own that just answered a liveness check; dead ones found on the way are
/// closed (Momoko's `getconn(ping=True)`).
pub(crate) async fn checkout_verified(inner: &Arc<PoolInner>) -> Result<PooledConnection> {
    let bound = inner.check_bound();
    loop {
        let conn = checkout(inner).await?;
        match conn.prove_alive(bound).await {
            Ok(()) => return Ok(conn),
            Err(e) if e.is_connection_lost() => {
                debug!(target: "momoko", error = %e, "closing a dead connection found by its liveness check");
                conn.discard();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `op` pipelined: on a share of the least loaded idle connection with room, or after
/// waiting in line for one.
async fn shared<O: Operation>(inner: &Arc<PoolInner>, op: &O) -> Result<O::Output> {
    let conn = inner
        .checkout(Want::Shared(inner.config.pipeline_depth))
        .await?;
    // The idle list's reference and ours: anything more is statements ahead of this one.
    let alone = Arc::strong_count(&conn) <= 2;
    let share = Share {
        conn: Some(conn),
        sent: (inner.executor.now(), alone),
        inner,
    };
    let conn = share.connection();
    let outcome = maybe_timeout(
        &*inner.executor,
        inner.config.statement_timeout,
        op.run(conn, inner.liveness()),
    )
    .await;
    if let Ok(Err(e)) = &outcome {
        if inner.read_only_server_refused(e) {
            inner.forget_server(conn);
            share.retire();
        }
    }
    if let (Ok(Ok(_)), (sent, true), Some(sql)) = (&outcome, share.sent, op.learnable()) {
        // Alone on its connection: how long it takes now (it may have become slow).
        if inner.config.adaptive_pipelining {
            let now = inner.executor.now();
            inner.learn_autocommit(sql, now.saturating_duration_since(sent), now);
        }
    }
    if !inner.serves(conn) {
        // The server changed role under the pool (a promotion, a demotion): no new statement
        // goes to it, and it closes once its statements are done.
        share.retire();
    }
    if !conn.last_reported_idle() && !conn.is_closed() {
        // Never expected (only statements seen to leave a connection idle are pipelined); if it
        // happens, no further statement joins what this one left behind, and the connection
        // closes once its statements are done (which ends the block).
        warn!(target: "momoko", "a pipelined statement left its connection inside a transaction; retiring it");
        share.retire();
    }
    match outcome {
        Ok(result) => result,
        Err(_) => {
            // A cancel request cannot pick one statement: send it only when ours was alone.
            if share.retire() {
                spawn_cancel(&inner.executor, conn.cancel_later());
            }
            Err(statement_timed_out(
                inner,
                "the pipelined statement was abandoned",
            ))
        }
    }
}

fn statement_timed_out(inner: &PoolInner, what: &str) -> Error {
    inner.count_statement_timeout();
    let limit = inner.config.statement_timeout.unwrap_or_default();
    warn!(target: "momoko", ?limit, status = ?inner.status(), "statement_timeout elapsed; {what}");
    Error::timeout(format!("statement_timeout ({limit:?}) elapsed; {what}"))
}

/// One pipelined statement's share of an idle connection; ends the share when dropped.
struct Share<'p> {
    conn: Option<Arc<Connection>>,
    /// When the statement went out, and whether nothing was ahead of it.
    sent: (std::time::Instant, bool),
    inner: &'p Arc<PoolInner>,
}

impl Share<'_> {
    fn connection(&self) -> &Connection {
        match &self.conn {
            Some(c) => c,
            // Invariant: `conn` is only taken in `drop`.
            None => unreachable!("Share used after drop"),
        }
    }

    /// Takes the connection out of rotation; whether this statement was the only one on it.
    fn retire(&self) -> bool {
        match &self.conn {
            Some(c) => self.inner.retire(c),
            None => false,
        }
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.release_shared(conn, Some(self.sent.0));
        }
    }
}

/// A transaction guard holding a pooled connection (`Pool::begin`): `BEGIN` on a connection of
/// its own, and once more on a connection proven alive when the first one turned out dead
/// (nothing had been sent then but the `BEGIN`, which took no effect).
pub(crate) async fn begin(
    inner: &Arc<PoolInner>,
    options: &TransactionOptions,
    at: &'static std::panic::Location<'static>,
) -> Result<TransactionGuard<'static>> {
    let mut conn = checkout(inner).await?;
    // With a leak threshold, a transaction held too long is reported with the line of `begin`.
    conn.held_by(at, "transaction");
    match TransactionGuard::start(Held::Pooled(conn), options).await {
        Err(e) if should_retry(inner, &e) => {
            inner.count_retry();
            debug!(target: "momoko", error = %e, "BEGIN failed on a dead connection; retrying on another");
            Box::pin(async {
                let mut conn = checkout_verified(inner).await?;
                conn.held_by(at, "transaction");
                TransactionGuard::start(Held::Pooled(conn), options).await
            })
            .await
        }
        other => other,
    }
}

/// `transaction_with(body)` on a pooled connection, under the statement timeout; run once more
/// on another connection when it failed on a dead one and the retry policy allows.
pub(crate) async fn transaction_with<T, F>(inner: &Arc<PoolInner>, mut body: F) -> Result<T>
where
    F: AsyncFnMut(&mut TransactionGuard<'_>) -> Result<T>,
{
    match transaction_attempt(inner, &mut body, false).await {
        Err(e) if should_retry(inner, &e) => {
            inner.count_retry();
            debug!(target: "momoko", error = %e, status = ?inner.status(), "retrying the transaction on another connection");
            Box::pin(transaction_attempt(inner, &mut body, true)).await
        }
        other => other,
    }
}

async fn transaction_attempt<T, F>(
    inner: &Arc<PoolInner>,
    body: &mut F,
    verified: bool,
) -> Result<T>
where
    F: AsyncFnMut(&mut TransactionGuard<'_>) -> Result<T>,
{
    let conn = if verified {
        Box::pin(checkout_verified(inner)).await?
    } else {
        checkout(inner).await?
    };
    let mut tx =
        TransactionGuard::start(Held::Pooled(conn), &TransactionOptions::default()).await?;
    let outcome = maybe_timeout(
        &*inner.executor,
        inner.config.statement_timeout,
        crate::connection::run_body(&mut tx, async |tx| body(tx).await),
    )
    .await;
    match outcome {
        Ok(result) => result,
        Err(_) => {
            tx.timed_out();
            Err(statement_timed_out(inner, "the transaction was cancelled"))
        }
    }
}

/// Starts something that holds a pooled connection for its life (a row stream, a COPY):
/// `start` gets a connection of its own, and once more a connection proven alive when the
/// first one turned out dead before anything took effect.
pub(crate) async fn hold<T, F, Fut>(inner: &Arc<PoolInner>, start: F) -> Result<T>
where
    F: Fn(PooledConnection) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let conn = checkout(inner).await?;
    match start(conn).await {
        Err(e) if should_retry(inner, &e) => {
            inner.count_retry();
            debug!(target: "momoko", error = %e, "retrying on another connection");
            let conn = Box::pin(checkout_verified(inner)).await?;
            Box::pin(start(conn)).await
        }
        other => other,
    }
}
