//! [`PoolBuilder`]: Momoko's knobs with Momoko's defaults, plus timeouts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConnectOptions, Credentials, Provided};
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::pool::engine::PoolInner;
use crate::pool::settings::{
    check_duration, check_sizes, PoolConfig, RetryPolicy, DEFAULT_ADAPTIVE_DEPTH,
    DEFAULT_CONNECT_TIMEOUT, MAX_DURATION,
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
    credentials: Option<Credentials>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("options", &self.dsn.as_ref().ok())
            .field("config", &self.config)
            .field("credential_provider", &self.credentials.is_some())
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
            credentials: None,
        }
    }

    /// Connections opened by `connect()` and kept open: the pool reconnects dead ones back up
    /// to this number. Must be at least 1. Defaults to 1. [`Pool::resize`] changes it at run
    /// time.
    pub fn size(mut self, size: usize) -> PoolBuilder {
        self.config.size = size;
        if !self.max_size_set {
            self.config.max_size = size;
        }
        self
    }

    /// The most connections the pool opens when callers would otherwise wait ("stretching").
    /// Must be at least `size`, and at most 262 143 (PostgreSQL's own limit). Defaults to
    /// `size` (no stretching). [`Pool::resize`] changes it at run time.
    pub fn max_size(mut self, max_size: usize) -> PoolBuilder {
        self.config.max_size = max_size;
        self.max_size_set = true;
        self
    }

    /// Minimum time between attempts to reopen dead connections. While the database is down and
    /// the last attempt is more recent than this, callers get
    /// [`ErrorKind::DatabaseNotAvailable`] at once. Defaults to 500 ms; from 10 ms to a year.
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
    /// 2 minutes; from 10 ms to a year.
    pub fn shrink_delay(mut self, delay: Duration) -> PoolBuilder {
        self.config.shrink_delay = delay;
        self
    }

    /// How often idle extras are looked for. Defaults to 2 minutes; from 10 ms to a year.
    pub fn shrink_period(mut self, period: Duration) -> PoolBuilder {
        self.config.shrink_period = period;
        self
    }

    /// Longest a caller waits for a connection before failing with
    /// [`ErrorKind::Timeout`]. Defaults to no limit; from 10 ms to a year.
    pub fn acquire_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.config.acquire_timeout = Some(timeout);
        self
    }

    /// Longest each connection attempt may take (per host), and longest a credential provider
    /// may take to answer. Defaults to the DSN's `connect_timeout`, or 10 seconds (a pool never
    /// waits forever on a silent server); from 10 ms to a year.
    pub fn connect_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.dsn = self.dsn.map(|o| o.connect_timeout(timeout));
        self
    }

    /// Longest a statement run through the pool may take. When it elapses the statement is
    /// cancelled on the server, its connection is closed (never reused in an unknown state) and
    /// the caller gets [`ErrorKind::Timeout`]. Defaults to no limit; from 10 ms to a year.
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

    /// Age after which a connection is replaced: once older than this plus a jitter of up to
    /// 10 % (its own, so connections opened together are not replaced together), it is closed
    /// and reopened in the background the next time it is free. It is never closed under a
    /// caller, and at most two replacements are opened at once.
    ///
    /// This spreads connections again over the servers behind a load balancer after a failover
    /// or a scale-out, lets the server free what long sessions accumulate, and follows
    /// credential rotation. `None` keeps connections until they die. Defaults to 30 minutes;
    /// from 1 second to a year.
    ///
    /// While the pool is below `max_size`, a replacement is opened before the old connection
    /// closes; at `max_size` the old one closes as its replacement starts (the pool never
    /// exceeds `max_size`).
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> PoolBuilder {
        self.config.max_lifetime = lifetime.into();
        self
    }

    /// The most callers that may wait for a connection at once: past it, a caller fails at once
    /// with [`ErrorKind::TooManyWaiting`] instead of queueing (psycopg_pool's `max_waiting`).
    /// Shedding load early keeps a saturated service answering within its deadlines rather than
    /// queueing work whose callers have given up. At least 1. Defaults to no limit.
    pub fn max_waiting(mut self, max_waiting: usize) -> PoolBuilder {
        self.config.max_waiting = Some(max_waiting);
        self
    }

    /// Warns once, through `tracing` (target `momoko`, level WARN), about a connection taken with
    /// [`Pool::getconn`] and held longer than `threshold`: the warning names the line that took
    /// it and how long it has been held (HikariCP's `leakDetectionThreshold`). Only a warning:
    /// the connection is not taken back. The pool's maintenance pass looks for such connections
    /// at least four times per threshold, so a warning comes at most a quarter of the threshold
    /// late. Defaults to off; from 10 ms to a year.
    pub fn leak_threshold(mut self, threshold: Duration) -> PoolBuilder {
        self.config.leak_threshold = Some(threshold);
        self
    }

    /// The pool's name in its metrics (`db.client.connection.pool.name`) and leak warnings.
    /// Defaults to `host:port/dbname` of the first host.
    pub fn name(mut self, name: impl Into<String>) -> PoolBuilder {
        self.config.name = name.into();
        self
    }

    /// Asks `provider` for the password of each new connection (AWS IAM authentication tokens,
    /// Vault leases, a rotated secret): the password of the DSN, if any, is replaced by its
    /// answer. The answer is reused for [`credentials_refresh`](PoolBuilder::credentials_refresh)
    /// (by default it is asked every time), and forgotten when the server refuses it.
    ///
    /// A provider that fails, or takes longer than the connect timeout, fails that connect with
    /// [`ErrorKind::Connect`] and the provider's message; the pool retries as for any failed
    /// connect. The password is never printed (in `Debug`, errors or logs).
    ///
    /// ```no_run
    /// # async fn fetch_token() -> Result<String, std::io::Error> { Ok(String::new()) }
    /// # fn demo(executor: std::sync::Arc<dyn momoko_core::Executor>) -> momoko_core::Result<()> {
    /// use std::time::Duration;
    ///
    /// let pool = momoko_core::Pool::builder("host=db.internal user=app dbname=app", executor)
    ///     .password_provider(|| fetch_token())
    ///     .credentials_refresh(Duration::from_secs(600))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn password_provider<F, Fut, E>(mut self, provider: F) -> PoolBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.credentials = Some(Credentials::new(move || {
            let answer = provider();
            async move { answer.await.map(Provided::Password).map_err(Into::into) }
        }));
        self
    }

    /// Asks `provider` for the whole [`ConnectOptions`] of each new connection (hosts, user and
    /// password together, for a secret store that hands out whole credentials). It replaces
    /// the DSN's settings; a connect timeout the answer lacks is taken from the builder or the
    /// DSN. Cached and failing as with
    /// [`password_provider`](PoolBuilder::password_provider).
    pub fn options_provider<F, Fut, E>(mut self, provider: F) -> PoolBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<ConnectOptions, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.credentials = Some(Credentials::new(move || {
            let answer = provider();
            async move {
                answer
                    .await
                    .map(|o| Provided::Options(Box::new(o)))
                    .map_err(Into::into)
            }
        }));
        self
    }

    /// How long an answer of the credential provider is reused for new connections before the
    /// provider is asked again. An answer the server refused is never reused. Zero asks for
    /// every connection. Defaults to zero; at most a year.
    pub fn credentials_refresh(mut self, refresh: Duration) -> PoolBuilder {
        self.config.credentials_refresh = refresh;
        self
    }

    /// Creates the pool and starts opening its `size` connections in the background, without
    /// waiting. Queries made before they are open wait for them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for an invalid DSN or settings: `size` of 0, `max_size < size`, a
    /// duration outside the bounds its setter states, `max_waiting` of 0.
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
        check_sizes(c.size, c.max_size)?;
        check_duration("connect_timeout", options.get_connect_timeout())?;
        check_duration("reconnect_interval", Some(c.reconnect_interval))?;
        check_duration("shrink_delay", Some(c.shrink_delay))?;
        check_duration("shrink_period", Some(c.shrink_period))?;
        check_duration("acquire_timeout", c.acquire_timeout)?;
        check_duration("statement_timeout", c.statement_timeout)?;
        check_duration("leak_threshold", c.leak_threshold)?;
        check_duration("max_lifetime", c.max_lifetime)?;
        if let Some(lifetime) = c.max_lifetime {
            if lifetime < MIN_LIFETIME {
                return Err(Error::config(format!(
                    "max_lifetime ({lifetime:?}) must be at least {MIN_LIFETIME:?}: shorter, \
                     connections would be replaced about as fast as they open"
                )));
            }
        }
        if c.credentials_refresh > MAX_DURATION {
            return Err(Error::config(format!(
                "credentials_refresh ({:?}) must be at most a year",
                c.credentials_refresh
            )));
        }
        if c.max_waiting == Some(0) {
            return Err(Error::config(
                "max_waiting must be at least 1 (leave it unset for no limit)",
            ));
        }
        if config.name.is_empty() {
            config.name = default_name(&options);
        }
        let credentials = self
            .credentials
            .map(|c| Arc::new(c.refresh(config.credentials_refresh)));
        Ok(Pool {
            inner: PoolInner::new(self.executor, options, config, credentials),
        })
    }

    /// Creates the pool and waits until its `size` connections are open.
    ///
    /// With a credential provider, the provider is asked during this call (and the pool's
    /// connects fail with its error if it fails).
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

/// The shortest `max_lifetime`: a connection opens in milliseconds on a LAN but may take a
/// second across regions with TLS; a shorter lifetime would spend the pool's time reconnecting.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// `host:port/dbname` of the first host (or its socket directory).
fn default_name(options: &ConnectOptions) -> String {
    let pg = options.as_tokio_postgres();
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => pg
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".to_owned(), ToString::to_string),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg.get_dbname().or(pg.get_user()).unwrap_or_default();
    format!("{host}:{port}/{db}")
}
