//! The transaction guard: [`Transaction`], its [`TransactionOptions`], and nested savepoints.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::task::{Context, Waker};

use crate::connection::held::Held;
use crate::connection::{Connection, TransactionStatus};
use crate::error::{Error, Result};

/// The isolation level of a transaction (PostgreSQL's `SET TRANSACTION ISOLATION LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (PostgreSQL runs it as `READ COMMITTED`).
    ReadUncommitted,
    /// `READ COMMITTED`, PostgreSQL's default.
    ReadCommitted,
    /// `REPEATABLE READ`: one snapshot for the whole transaction.
    RepeatableRead,
    /// `SERIALIZABLE`: as if the transactions ran one after another; be ready to retry on
    /// SQLSTATE `40001`.
    Serializable,
}

impl IsolationLevel {
    fn sql(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "ISOLATION LEVEL READ UNCOMMITTED",
            IsolationLevel::ReadCommitted => "ISOLATION LEVEL READ COMMITTED",
            IsolationLevel::RepeatableRead => "ISOLATION LEVEL REPEATABLE READ",
            IsolationLevel::Serializable => "ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// How a transaction starts: isolation level, read-only, deferrable. Every option is unset by
/// default, which leaves the session's defaults (`default_transaction_isolation`, …) in force.
///
/// ```
/// use momoko_core::{IsolationLevel, TransactionOptions};
/// let report = TransactionOptions::new()
///     .isolation(IsolationLevel::Serializable)
///     .read_only(true)
///     .deferrable(true);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TransactionOptions {
    isolation: Option<IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
}

impl TransactionOptions {
    /// Every option unset: a plain `BEGIN`.
    pub fn new() -> TransactionOptions {
        TransactionOptions::default()
    }

    /// The isolation level. Default: unset (the session's `default_transaction_isolation`,
    /// `READ COMMITTED` unless configured).
    pub fn isolation(mut self, level: IsolationLevel) -> TransactionOptions {
        self.isolation = Some(level);
        self
    }

    /// `READ ONLY` (`true`) or `READ WRITE` (`false`). Default: unset (the session's
    /// `default_transaction_read_only`).
    pub fn read_only(mut self, read_only: bool) -> TransactionOptions {
        self.read_only = Some(read_only);
        self
    }

    /// `DEFERRABLE` (`true`) or `NOT DEFERRABLE` (`false`); it matters only for a serializable,
    /// read-only transaction, which then waits for a snapshot that cannot fail. Default: unset.
    pub fn deferrable(mut self, deferrable: bool) -> TransactionOptions {
        self.deferrable = Some(deferrable);
        self
    }

    fn is_default(&self) -> bool {
        *self == TransactionOptions::default()
    }

    /// `BEGIN` with the options, like `BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY`.
    pub(crate) fn begin_sql(&self) -> String {
        let mut modes: Vec<&str> = Vec::new();
        if let Some(level) = self.isolation {
            modes.push(level.sql());
        }
        match self.read_only {
            Some(true) => modes.push("READ ONLY"),
            Some(false) => modes.push("READ WRITE"),
            None => {}
        }
        match self.deferrable {
            Some(true) => modes.push("DEFERRABLE"),
            Some(false) => modes.push("NOT DEFERRABLE"),
            None => {}
        }
        if modes.is_empty() {
            "BEGIN".to_owned()
        } else {
            format!("BEGIN {}", modes.join(", "))
        }
    }
}

/// An open transaction block (or, nested, a savepoint) on one connection.
///
/// Opened by [`Pool::begin`](crate::Pool::begin), [`Connection::begin`] (also on a held
/// [`PooledConnection`](crate::PooledConnection), which dereferences to a connection), or
/// [`Transaction::begin`] for a savepoint inside it. Every query method of [`Connection`] is
/// available on it (it dereferences to its connection), and it implements
/// [`Queryable`](crate::Queryable).
///
/// End it with [`commit`](Transaction::commit) or [`rollback`](Transaction::rollback). Dropped
/// without either (an early `?` return, a panic, a cancelled task), it rolls back without
/// waiting, decided from the session's exact state as the server reported it:
///
/// | guard dropped | what happens |
/// |---|---|
/// | holding a pool's connection ([`Pool::begin`](crate::Pool::begin)) | the connection goes back to its pool, which rolls it back off your path |
/// | on a borrowed connection | `ROLLBACK` is queued behind everything sent so far; its answer is discarded, and the connection's next statement waits behind it |
/// | a savepoint | `ROLLBACK TO SAVEPOINT` and `RELEASE SAVEPOINT`, queued the same way |
/// | the server reports no transaction block (it ended already) | nothing |
///
/// ```no_run
/// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
/// let mut tx = pool.begin().await?;
/// tx.execute("UPDATE account SET balance = balance - $1 WHERE id = $2", &[&10i64, &1i32]).await?;
/// {
///     // A savepoint: its work is undone alone if it fails.
///     let sp = tx.begin().await?;
///     if sp.execute("INSERT INTO audit (note) VALUES ($1)", &[&"moved 10"]).await.is_err() {
///         sp.rollback().await?;
///     } else {
///         sp.commit().await?;
///     }
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct Transaction<'c> {
    held: Held<'c>,
    /// The savepoint's name for a nested guard; `None` for a transaction block.
    savepoint: Option<String>,
    /// How many guards enclose this one (0 for a transaction block).
    depth: usize,
    /// Neither committed nor rolled back yet (as far as the server's answers tell).
    open: bool,
}

impl<'c> Transaction<'c> {
    /// Opens a transaction block on `held`, or a savepoint when the server reports the session
    /// inside one already (so a guard never commits a block it did not open).
    pub(crate) async fn start(
        held: Held<'c>,
        options: &TransactionOptions,
    ) -> Result<Transaction<'c>> {
        if held.is_closed() {
            return Err(Error::closed("the connection is closed").not_executed());
        }
        if held.transaction_status() == TransactionStatus::Active {
            // Answers of the caller's earlier statements are on their way: the state is exact
            // once they are in.
            held.settled().await;
        }
        let inside = matches!(
            held.transaction_status(),
            TransactionStatus::InTransaction | TransactionStatus::InError
        );
        if inside && !options.is_default() {
            return Err(Error::usage(
                "begin: the session is inside a transaction block already, where isolation \
                 level, read-only and deferrable cannot be chosen",
            ));
        }
        let (savepoint, depth) = if inside {
            (Some(savepoint_name(1)), 1)
        } else {
            (None, 0)
        };
        Transaction::open(held, savepoint, depth, options).await
    }

    async fn open(
        held: Held<'c>,
        savepoint: Option<String>,
        depth: usize,
        options: &TransactionOptions,
    ) -> Result<Transaction<'c>> {
        let sql = match &savepoint {
            Some(name) => format!("SAVEPOINT {name}"),
            None => options.begin_sql(),
        };
        // The guard exists before the request goes out: if this future is dropped while the
        // answer is on its way, the guard's drop undoes what the request may have opened.
        let mut tx = Transaction {
            held,
            savepoint,
            depth,
            open: true,
        };
        match tx.held.simple(&sql).await {
            Ok(()) => Ok(tx),
            Err(e) => {
                // Nothing was opened.
                tx.open = false;
                Err(e.not_executed())
            }
        }
    }

    /// Opens a savepoint inside this transaction: a nested guard whose work can be committed
    /// (`RELEASE SAVEPOINT`) or rolled back (`ROLLBACK TO SAVEPOINT`) alone. Dropped without
    /// either, it rolls back to the savepoint. Nests to any depth.
    ///
    /// # Errors
    ///
    /// The server's error for `SAVEPOINT` (in a failed transaction: SQLSTATE `25P02`).
    pub async fn begin(&mut self) -> Result<Transaction<'_>> {
        let depth = self.depth + 1;
        let held = Held::Borrowed(&self.held);
        Transaction::open(
            held,
            Some(savepoint_name(depth)),
            depth,
            &TransactionOptions::default(),
        )
        .await
    }

    /// The same as [`begin`](Transaction::begin): a savepoint inside this transaction.
    ///
    /// # Errors
    ///
    /// As [`begin`](Transaction::begin).
    pub async fn savepoint(&mut self) -> Result<Transaction<'_>> {
        self.begin().await
    }

    /// Commits the transaction (for a savepoint: releases it, keeping its work in the enclosing
    /// transaction).
    ///
    /// A transaction that an earlier error aborted is not reported as committed: the server
    /// answers a `COMMIT` there with a silent `ROLLBACK`, so momoko checks first, rolls back, and
    /// returns the server's error (SQLSTATE `25P02`).
    ///
    /// # Errors
    ///
    /// The server's error (a deferred constraint, a serialization failure, an aborted
    /// transaction), after the rollback; [`ErrorKind::Closed`](crate::ErrorKind::Closed) when
    /// the connection is gone.
    pub async fn commit(mut self) -> Result<()> {
        self.end(true).await
    }

    /// Rolls the transaction back (for a savepoint: to the savepoint, which is then released).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the connection is gone (the server
    /// then rolled back by itself).
    pub async fn rollback(mut self) -> Result<()> {
        self.end(false).await
    }

    /// Nesting depth: 0 for a transaction block, 1 for a savepoint inside it, and so on.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Commits or rolls back, in place (the pool's `transaction_with` keeps the guard to mark
    /// it timed out).
    pub(crate) async fn end(&mut self, commit: bool) -> Result<()> {
        let sql = match (&self.savepoint, commit) {
            // `SELECT 1` first: in a transaction aborted by an error the caller swallowed it
            // fails with 25P02 and the COMMIT is skipped, instead of a COMMIT answered with a
            // silent ROLLBACK.
            (None, true) => "SELECT 1; COMMIT".to_owned(),
            (Some(name), true) => format!("RELEASE SAVEPOINT {name}"),
            (_, false) => self.undo_sql(),
        };
        match self.held.simple(&sql).await {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                if commit && self.inside_block() {
                    let undo = self.undo_sql();
                    if let Err(undo_error) = self.held.simple(&undo).await {
                        tracing::warn!(target: "momoko", error = %undo_error, "failed to roll back after a failed commit");
                    }
                }
                self.open = false;
                Err(if e.is_server_termination() {
                    e.not_executed()
                } else {
                    e
                })
            }
        }
    }

    /// Whether the server reports the session inside a transaction block (or has answers on
    /// their way, which may leave it there).
    fn inside_block(&self) -> bool {
        matches!(
            self.held.transaction_status(),
            TransactionStatus::InTransaction
                | TransactionStatus::InError
                | TransactionStatus::Active
        )
    }

    fn undo_sql(&self) -> String {
        match &self.savepoint {
            None => "ROLLBACK".to_owned(),
            Some(name) => format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"),
        }
    }

    /// The statement ran past the pool's `statement_timeout`: the pooled connection is
    /// cancelled and closed when the guard drops.
    pub(crate) fn timed_out(&mut self) {
        if let Held::Pooled(p) = &mut self.held {
            p.timed_out();
        }
        self.open = false;
    }
}

fn savepoint_name(depth: usize) -> String {
    format!("momoko_savepoint_{depth}")
}

impl Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.held
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.open || !self.inside_block() {
            return;
        }
        if self.held.is_pooled() && self.savepoint.is_none() {
            // The pooled connection goes back to its pool right after this, which reads the
            // open transaction off the wire and rolls it back off the caller's path.
            return;
        }
        let undo = self.undo_sql();
        self.held.send_detached(&undo);
    }
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("connection", &*self.held)
            .field("depth", &self.depth)
            .field("open", &self.open)
            .finish()
    }
}

impl Connection {
    /// Opens a transaction block (`BEGIN`) and returns its guard; see [`Transaction`].
    ///
    /// When the server reports the session inside a transaction block already (a `BEGIN` sent
    /// as SQL), the guard is a savepoint inside it instead, so it never commits a block it did
    /// not open.
    ///
    /// ```no_run
    /// # async fn demo(conn: &mut momoko_core::Connection) -> momoko_core::Result<()> {
    /// let tx = conn.begin().await?;
    /// tx.execute("INSERT INTO greeting VALUES ($1)", &[&"hello"]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The server's error for `BEGIN`; [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the
    /// connection is gone.
    pub async fn begin(&mut self) -> Result<Transaction<'_>> {
        self.begin_with(TransactionOptions::default()).await
    }

    /// [`begin`](Connection::begin) with an isolation level, read-only or deferrable mode.
    ///
    /// # Errors
    ///
    /// As [`begin`](Connection::begin); [`ErrorKind::Usage`](crate::ErrorKind::Usage) when the
    /// session is inside a transaction block already (options cannot apply to a savepoint).
    pub async fn begin_with(&mut self, options: TransactionOptions) -> Result<Transaction<'_>> {
        let this: &Connection = self;
        Transaction::start(Held::Borrowed(this), &options).await
    }

    /// Runs `body` in a transaction: `BEGIN`, then `body`, then `COMMIT` if it returned `Ok`,
    /// `ROLLBACK` if it returned `Err` (the error is passed on). `body` is an async closure; it
    /// gets the [`Transaction`], on which it can also open savepoints.
    ///
    /// If the future is dropped before it finishes, the transaction is rolled back (see
    /// [`Transaction`]).
    ///
    /// ```no_run
    /// # async fn demo(conn: &mut momoko_core::Connection) -> momoko_core::Result<()> {
    /// let moved: u64 = conn
    ///     .transaction_with(async |tx| {
    ///         let n = tx.execute("UPDATE stock SET n = n - 1 WHERE n > 0", &[]).await?.rowcount().unwrap_or(0);
    ///         tx.execute("INSERT INTO log (moved) VALUES ($1)", &[&(n as i64)]).await?;
    ///         Ok(n)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `body`'s error, or the error of `BEGIN`/`COMMIT`.
    pub async fn transaction_with<T, F>(&mut self, body: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T>,
    {
        let mut tx = self.begin().await?;
        run_body(&mut tx, body).await
    }

    /// Queues `sql` (simple protocol) behind everything queued on this session so far, without
    /// waiting for its answer, which the session's I/O task reads and discards. For the work a
    /// drop must do, where nothing can be awaited: the session's next statement waits behind it,
    /// and the wire shows it in flight until its answer is in.
    pub(crate) fn send_detached(&self, sql: &str) {
        if self.is_closed() {
            return;
        }
        let request = pin!(self.client.batch_execute(sql));
        // tokio-postgres puts the request in the session's queue on the first poll, before its
        // first await; dropping the future then only discards the answer.
        let mut cx = Context::from_waker(Waker::noop());
        if let std::task::Poll::Ready(Err(e)) = request.poll(&mut cx) {
            tracing::debug!(target: "momoko", error = %e, "could not queue {sql:?}");
        }
    }
}

/// `body`, then `COMMIT` after `Ok` or `ROLLBACK` after `Err`; a failure before the `COMMIT` is
/// marked as not executed (nothing of the transaction took effect).
pub(crate) async fn run_body<T, F>(tx: &mut Transaction<'_>, body: F) -> Result<T>
where
    F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T>,
{
    match body(tx).await {
        Ok(value) => tx.end(true).await.map(|()| value),
        Err(e) => {
            if let Err(undo) = tx.end(false).await {
                tracing::warn!(target: "momoko", error = %undo, "failed to ROLLBACK transaction");
            }
            Err(e.not_executed())
        }
    }
}
