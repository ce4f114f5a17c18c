//! momoko connections in a [deadpool](https://docs.rs/deadpool) pool: a
//! [`deadpool::managed::Manager`] that opens momoko
//! [`Connection`]s (any executor, TLS, multi-host, `target_session_attrs`) and recycles them by
//! their exact state, as momoko's own pool does.
//!
//! ```no_run
//! # async fn demo(executor: std::sync::Arc<dyn momoko_core::Executor>) -> Result<(), Box<dyn std::error::Error>> {
//! use momoko_core::deadpool::{Manager, Pool};
//! use momoko_core::Queryable;
//!
//! let manager = Manager::new("host=localhost dbname=app user=app", executor)?;
//! let pool = Pool::builder(manager).max_size(8).build()?;
//! let conn = pool.get().await?;
//! let n: i64 = conn.fetch_scalar("SELECT count(*) FROM item", &[]).await?;
//! # Ok(()) }
//! ```
//!
//! Choosing between the two pools: see `docs/data-paths.md` in the repository.

use std::sync::Arc;
use std::time::Duration;

use ::deadpool::managed::{Metrics, RecycleError, RecycleResult};

use crate::config::ConnectOptions;
use crate::connection::{Connection, TransactionStatus};
use crate::error::{Error, Result};
use crate::executor::{timeout, Executor};

/// The deadpool crate, re-exported (build the pool with `deadpool::managed::Pool`).
pub use ::deadpool;

/// A deadpool pool of momoko connections.
pub type Pool = ::deadpool::managed::Pool<Manager>;

/// A connection taken from a [`Pool`]; dereferences to [`Connection`].
pub type Object = ::deadpool::managed::Object<Manager>;

/// How long recycling may wait for answers still on their way or a `ROLLBACK`, before the
/// connection is dropped instead (deadpool runs recycling on the caller's path).
const RECYCLE_BOUND: Duration = Duration::from_secs(1);

/// Opens and recycles momoko [`Connection`]s for deadpool.
///
/// Recycling reads the session's exact state (as the server reported it, see
/// [`Connection::transaction_status`]), never the SQL that ran:
///
/// | state | recycle |
/// |---|---|
/// | idle, nothing in flight | reused at once, no round trip |
/// | inside a transaction block (open or failed) | `ROLLBACK`, then reused |
/// | answers still on their way | waited for (at most a second), then decided again |
/// | a call was dropped mid-way | one empty round trip first (its requests may still be queued) |
/// | ended | an error: deadpool drops it and opens another |
#[derive(Debug, Clone)]
pub struct Manager {
    options: ConnectOptions,
    executor: Arc<dyn Executor>,
    setsession: Vec<String>,
}

impl Manager {
    /// A manager for `dsn` (see [`ConnectOptions`] for the formats), with I/O and timers from
    /// `executor`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a bad connection string.
    pub fn new(dsn: &str, executor: Arc<dyn Executor>) -> Result<Manager> {
        Ok(Manager::with_options(ConnectOptions::parse(dsn)?, executor))
    }

    /// A manager for already parsed options.
    pub fn with_options(options: ConnectOptions, executor: Arc<dyn Executor>) -> Manager {
        Manager {
            options,
            executor,
            setsession: Vec::new(),
        }
    }

    /// Statements run on every new connection (like [`PoolBuilder::setsession`](crate::PoolBuilder::setsession)).
    /// Default: none.
    pub fn setsession<I, S>(mut self, statements: I) -> Manager
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.setsession = statements.into_iter().map(Into::into).collect();
        self
    }
}

impl ::deadpool::managed::Manager for Manager {
    type Type = Connection;
    type Error = Error;

    async fn create(&self) -> Result<Connection> {
        crate::pool::open_session(&self.options, &self.executor, &self.setsession).await
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<Error> {
        match timeout(&*self.executor, RECYCLE_BOUND, make_idle(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RecycleError::Backend(e)),
            Err(_) => Err(RecycleError::message(
                "the connection did not become idle within a second",
            )),
        }
    }
}

/// Brings `conn` to idle with nothing in flight, or fails.
async fn make_idle(conn: &Connection) -> Result<()> {
    if conn.take_abandoned() {
        // Answered after everything queued before it: the state is exact afterwards.
        conn.simple("").await?;
    }
    // Each pass ends or moves on: at most a wait and a rollback.
    for _ in 0..3 {
        if conn.is_closed() {
            return Err(Error::closed("the connection ended"));
        }
        match conn.transaction_status() {
            TransactionStatus::Idle => return Ok(()),
            TransactionStatus::Active => conn.settled().await,
            TransactionStatus::InTransaction | TransactionStatus::InError => {
                conn.simple("ROLLBACK").await?;
            }
            _ => return Err(Error::closed("the session's state is unknown")),
        }
    }
    Err(Error::closed("the connection did not become idle"))
}
