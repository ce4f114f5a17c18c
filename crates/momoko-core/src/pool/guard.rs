//! A connection out of the pool, and how it comes back.
//!
//! Every exclusive use of a pooled connection — a statement run by [`Pool::execute`], a
//! transaction, a `getconn` guard held by the application — holds a [`PooledConnection`], and
//! every return goes through [`give_back`], which decides from the session's exact state (read off
//! the wire, see `connection/wire.rs`) what happens next:
//!
//! | state on return | what happens |
//! |---|---|
//! | idle, nothing in flight | back to the pool at once: no round trip |
//! | inside a transaction (open or failed) | `ROLLBACK` off the caller's path, then back |
//! | an answer still on its way | wait for it off the caller's path, then decide again |
//! | a call was dropped mid-way | a round trip first (its requests may still be queued) |
//! | ended, timed out, or discarded | closed |
//!
//! The checks run in the background, off the caller's path; meanwhile the connection counts as
//! *checking*, not busy. A check that takes longer than [`CHECK_TIMEOUT`] closes the connection
//! and frees its slot, so a lost reply costs a waiting caller at most that long.
//!
//! [`Pool::execute`]: crate::Pool::execute

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::connection::{Connection, TransactionStatus};
use crate::error::{Error, Result};
use crate::executor::{timeout, Executor};
use crate::pool::engine::PoolInner;

/// How long the check of a returned connection may take (a `ROLLBACK`, an empty query, or the
/// answers still on their way) before the connection is closed instead. A session that needs a
/// second for either has met a dead, partitioned or drowning server; the check holds a slot of
/// `max_size` meanwhile, so it must not wait for TCP to give up (minutes).
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a background cancel request may take before it is abandoned.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection taken from a [`Pool`](crate::Pool); it goes back when dropped (Momoko's
/// `manage`).
///
/// Dereferences to [`Connection`], so every query method is available. What happens on return
/// depends on the session's state as the server reported it: an idle connection is free again at
/// once; one left inside a transaction is rolled back first, off your path; one whose statement
/// you abandoned mid-way is checked, or closed.
///
/// The pool's `statement_timeout` does not apply to statements run on a held connection (the
/// pool cannot tell a slow statement from a long-held transaction); set the server's own
/// `statement_timeout` for those, for example with
/// [`setsession`](crate::PoolBuilder::setsession).
pub struct PooledConnection {
    /// Unique while checked out: the pool clones a connection's `Arc` only for pipelined
    /// statements, and only while the connection is idle.
    conn: Option<Arc<Connection>>,
    inner: Arc<PoolInner>,
    /// Close it instead of returning it (`discard()`, a timed-out statement).
    discard: bool,
    /// Its record among the connections watched for leaks (see [`PoolInner::hold`]).
    held: Option<usize>,
    /// When it was taken, for `db.client.connection.use_time`.
    #[cfg(feature = "metrics")]
    taken: std::time::Instant,
}

impl PooledConnection {
    pub(crate) fn new(conn: Arc<Connection>, inner: &Arc<PoolInner>) -> PooledConnection {
        // A mark left by an earlier, shared use does not concern this checkout.
        conn.take_abandoned();
        PooledConnection {
            conn: Some(conn),
            inner: Arc::clone(inner),
            discard: false,
            held: None,
            #[cfg(feature = "metrics")]
            taken: inner.executor.now(),
        }
    }

    /// Watches this connection for leaks on behalf of the caller at `at` (a no-op unless the
    /// pool has a `leak_threshold`). `what` names the guard in the warning.
    pub(crate) fn held_by(&mut self, at: &'static Location<'static>, what: &'static str) {
        if self.held.is_none() {
            self.held = self.inner.hold(at, what);
        }
    }

    pub(crate) fn pool_id(&self) -> u64 {
        self.inner.id
    }

    /// Closes this connection instead of returning it to the pool (the pool opens a replacement
    /// as needed).
    pub fn discard(mut self) {
        self.discard = true;
    }

    /// Close the connection when it comes back (its server is not one the pool may use).
    pub(crate) fn discard_on_return(&mut self) {
        self.discard = true;
    }

    /// The statement on this connection ran past its time: cancel it on the server and close
    /// the connection when it comes back.
    pub(crate) fn timed_out(&mut self) {
        self.discard = true;
        spawn_cancel(&self.inner.executor, self.cancel_later());
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
        if let Some(key) = self.held.take() {
            self.inner.unhold(key);
        }
        #[cfg(feature = "metrics")]
        self.inner.metrics.used_for(
            self.inner
                .executor
                .now()
                .saturating_duration_since(self.taken),
        );
        if let Some(conn) = self.conn.take() {
            give_back(&self.inner, conn, self.discard);
        }
    }
}

/// What a returned connection needs before anyone else may have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Nothing: it is idle and everything sent was answered.
    Nothing,
    /// It cannot be reused.
    Closing,
    /// A round trip: a call was dropped mid-way, so requests may still be queued unwritten.
    Barrier,
    /// The answers still on their way.
    Answers,
    /// A rollback of the open or failed transaction block.
    Rollback,
}

fn needs(inner: &PoolInner, conn: &Connection, discard: bool) -> Needs {
    if discard || conn.is_closed() || !inner.serves(conn) {
        return Needs::Closing;
    }
    if conn.take_abandoned() {
        // A statement still running cannot be told apart from a long transaction: close it
        // (as before it was abandoned, nobody waits for its answer).
        if conn.transaction_status() == TransactionStatus::Active {
            return Needs::Closing;
        }
        return Needs::Barrier;
    }
    match conn.transaction_status() {
        TransactionStatus::Idle => Needs::Nothing,
        TransactionStatus::Active => Needs::Answers,
        TransactionStatus::InTransaction | TransactionStatus::InError => Needs::Rollback,
        TransactionStatus::Unknown => Needs::Closing,
    }
}

/// Returns an exclusively used connection to the pool, by its exact state (see the module
/// documentation).
fn give_back(inner: &Arc<PoolInner>, conn: Arc<Connection>, discard: bool) {
    match needs(inner, &conn, discard) {
        Needs::Nothing => inner.release(conn, true),
        Needs::Closing => inner.release(conn, false),
        Needs::Answers => {
            // The answers are on their way (a statement failed before its ReadyForQuery was
            // read): the connection stays busy for the microseconds that takes, then is decided
            // again; no growth is started for it.
            let inner = Arc::clone(inner);
            let executor = Arc::clone(&inner.executor);
            executor.clone().spawn(Box::pin(async move {
                let settled = timeout(&*executor, CHECK_TIMEOUT, conn.settled())
                    .await
                    .is_ok();
                if settled {
                    give_back(&inner, conn, false);
                } else {
                    inner.release(conn, false);
                }
            }));
        }
        first => {
            if inner.is_closed() {
                inner.release(conn, false);
                return;
            }
            inner.check_started();
            let inner = Arc::clone(inner);
            let executor = Arc::clone(&inner.executor);
            executor.clone().spawn(Box::pin(async move {
                let bound = CHECK_TIMEOUT;
                let clean = match timeout(&*executor, bound, make_clean(&inner, &conn, first)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        debug!(target: "momoko", error = %e, "a returned connection could not be cleaned; closing it");
                        false
                    }
                    Err(_) => {
                        debug!(target: "momoko", ?bound, "a returned connection did not answer its check in time; closing it");
                        spawn_cancel(&executor, conn.cancel_later());
                        false
                    }
                };
                inner.check_finished(conn, clean);
            }));
        }
    }
}

/// Brings a returned connection to idle with nothing in flight, starting from what it `needs`.
async fn make_clean(inner: &PoolInner, conn: &Connection, mut next: Needs) -> Result<()> {
    // Each step either ends or moves to a later one: at most three round trips.
    loop {
        next = match next {
            Needs::Nothing => return Ok(()),
            Needs::Closing => return Err(Error::closed("the connection ended")),
            Needs::Barrier => {
                // Answered after everything queued before it: the status is exact afterwards.
                conn.simple("").await?;
                after_round_trip(inner, conn)?
            }
            Needs::Answers => {
                conn.settled().await;
                needs(inner, conn, false)
            }
            Needs::Rollback => {
                conn.simple("ROLLBACK").await?;
                match after_round_trip(inner, conn)? {
                    Needs::Nothing => Needs::Nothing,
                    _ => return Err(Error::closed("still inside a transaction after ROLLBACK")),
                }
            }
        };
    }
}

/// The state after a round trip the checker made itself, where `Active` cannot happen.
fn after_round_trip(inner: &PoolInner, conn: &Connection) -> Result<Needs> {
    match needs(inner, conn, false) {
        Needs::Barrier | Needs::Answers => Err(Error::closed(
            "requests appeared on a connection under check",
        )),
        other => Ok(other),
    }
}

/// Sends a cancel request in the background, given up after [`CANCEL_TIMEOUT`] (a black-holed
/// server never answers it).
pub(crate) fn spawn_cancel(
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
