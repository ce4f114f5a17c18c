//! [`PoolBuilder`]: Momoko's knobs with Momoko's defaults, plus timeouts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConnectOptions;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::pool::engine::PoolInner;
use crate::pool::settings::{
    PoolConfig, RetryPolicy, DEFAULT_ADAPTIVE_DEPTH, DEFAULT_CONNECT_TIMEOUT,
};
use crate::pool::Pool;

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
    pub(crate) fn new(dsn: &str, executor: Arc<dyn Executor>) -> PoolBuilder {
        PoolBuilder {
            dsn: ConnectOptions::parse(dsn),
            executor,
            config: PoolConfig::default(),
            max_size_set: false,
        }
    }

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
    /// connection that has finished none of its pipelined statements for 5 ms (see
    /// [`pipeline_stall`](PoolBuilder::pipeline_stall)) (a slow statement
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

    /// Pipelining with no depth to pick: autocommit statements share connections as with
    /// [`pipeline`](PoolBuilder::pipeline), and the pool decides from what it measures how deep
    /// each connection's pipeline is and how many connections carry pipelined statements.
    ///
    /// * Each connection holds as many statements as it finishes within eight unloaded round
    ///   trips (the fastest a lone statement came back recently; at least 500 µs, at most
    ///   [`pipeline_stall`](PoolBuilder::pipeline_stall)), up to the cap: fast statements
    ///   pipeline deep, and a connection whose statements take milliseconds holds one at a time.
    /// * Statements fill one connection before the next is used; when the connections in use are
    ///   full, callers queue (first come, first served) rather than spread over more
    ///   connections. The number of connections used grows only while that raises throughput
    ///   (tried for 100 ms at a time, kept when statements per second rose by 25 %), and shrinks
    ///   when fewer do nearly as well (within 10 %). Waiting in the pool, a statement is not exposed to one backend's
    ///   stall, and fewer busy backends compete less for the server's CPU.
    /// * A connection that finished nothing for that budget takes no new statements, and
    ///   statements go to other connections.
    ///
    /// The cap is [`pipeline`](PoolBuilder::pipeline)'s depth if set above 1, else 32. The
    /// trade-offs of pipelining apply (see [`pipeline`](PoolBuilder::pipeline)). The free
    /// connections the pool leaves out of its lanes serve exclusive callers at once; the pool
    /// does not grow for callers that wait for a lane's room. Defaults to false.
    pub fn adaptive_pipelining(mut self, on: bool) -> PoolBuilder {
        self.config.adaptive_pipelining = on;
        self
    }

    /// With pipelining, a connection whose statements have finished none of theirs for this
    /// long is stalled (a slow statement at the head of its pipeline, or a backend starved of
    /// CPU): new statements go to other connections, or wait, rather than queue behind it.
    /// Shorter avoids more slow pipelines; longer packs more statements per connection.
    /// Defaults to 5 ms (an A/B against no rule showed no throughput cost and no p99 change).
    pub fn pipeline_stall(mut self, stall: Duration) -> PoolBuilder {
        self.config.pipeline_stall = stall;
        self
    }

    /// Before a statement already prepared on a connection is sent (as Bind/Execute, at once),
    /// a connection the server has not answered for longer than `window` is proven alive with
    /// an empty query. Without the proof, a statement sent on a connection that died silently
    /// fails ambiguously (it may or may not have run) and cannot be retried; after a failed
    /// proof nothing was sent, so the statement runs on another connection. A statement
    /// prepared anew needs no proof: its Parse round trip is one. The proof may take as long as
    /// the connect timeout. `Duration::MAX` turns it off; `Duration::ZERO` proves every time.
    /// Defaults to 1 second.
    pub fn liveness_window(mut self, window: Duration) -> PoolBuilder {
        self.config.liveness_window = window;
        self
    }

    /// Changes the connection settings parsed from the DSN (a bad DSN stays an error for
    /// `build()`).
    pub(crate) fn map_options(
        mut self,
        f: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> PoolBuilder {
        self.dsn = self.dsn.map(f);
        self
    }

    /// For a pooler in transaction mode without prepared-statement support (pgbouncer before
    /// 1.21): see [`ConnectOptions::transaction_pooler`]. Defaults to false.
    pub fn transaction_pooler(self, on: bool) -> PoolBuilder {
        self.map_options(|o| o.transaction_pooler(on))
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
            options = options.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let mut config = self.config;
        if config.adaptive_pipelining && config.pipeline_depth <= 1 {
            config.pipeline_depth = DEFAULT_ADAPTIVE_DEPTH;
        }
        let c = &config;
        if options.is_transaction_pooler() && !c.setsession.is_empty() {
            return Err(Error::config(
                "setsession cannot be used with transaction_pooler: a transaction-mode pooler \
                 hands each transaction to any server session, so settings made on one would not \
                 apply to the next (set them on the pooler's server side, per role or database)",
            ));
        }
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
            inner: PoolInner::new(self.executor, options, config),
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
