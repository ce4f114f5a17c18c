//! The pool's settings ([`PoolConfig`], [`RetryPolicy`]) and the defaults stated in one place.

use std::time::Duration;

/// Connect timeout of pool connections when neither the DSN nor the builder sets one: a pool
/// must never wait forever on a server that does not answer.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// See [`PoolBuilder::pipeline_stall`](crate::PoolBuilder::pipeline_stall).
pub(crate) const DEFAULT_PIPELINE_STALL: Duration = Duration::from_millis(5);

/// Most statements per connection with adaptive pipelining unless `pipeline(n)` sets another cap
/// (see [`PoolBuilder::adaptive_pipelining`](crate::PoolBuilder::adaptive_pipelining)).
pub(crate) const DEFAULT_ADAPTIVE_DEPTH: usize = 32;

/// See [`PoolBuilder::liveness_window`](crate::PoolBuilder::liveness_window).
pub(crate) const DEFAULT_LIVENESS_WINDOW: Duration = Duration::from_secs(1);

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

/// The pool's settings, as given to the [`PoolBuilder`](crate::PoolBuilder).
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
    /// How many autocommit statements may share one free connection at once (1: none share); with
    /// adaptive pipelining, the cap of each connection's depth.
    pub pipeline_depth: usize,
    /// Whether the depth of each connection's pipeline and the number of connections carrying
    /// pipelined statements follow measured latency and throughput.
    pub adaptive_pipelining: bool,
    /// A connection the server has not answered for longer than this is proven alive before a
    /// cached statement is sent on it.
    pub liveness_window: Duration,
    /// A connection whose pipelined statements have made no progress for this long takes no new
    /// ones.
    pub pipeline_stall: Duration,
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
            adaptive_pipelining: false,
            liveness_window: DEFAULT_LIVENESS_WINDOW,
            pipeline_stall: DEFAULT_PIPELINE_STALL,
        }
    }
}
