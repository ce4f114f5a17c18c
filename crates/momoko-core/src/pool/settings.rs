//! The pool's settings ([`PoolConfig`], [`RetryPolicy`]) and the defaults stated in one place.

use std::time::Duration;

use crate::error::{Error, Result};

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

/// See [`PoolBuilder::max_lifetime`](crate::PoolBuilder::max_lifetime): 30 minutes, as HikariCP
/// and sqlx use; well below the idle timeouts of the load balancers and NAT tables that sit in
/// front of databases (AWS NLB: 350 s idle, but connections are seldom idle that long in a pool
/// that rotates them least recently used first).
pub(crate) const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// See [`PoolBuilder::reconnect_interval`](crate::PoolBuilder::reconnect_interval).
pub(crate) const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// See [`PoolBuilder::shrink_delay`](crate::PoolBuilder::shrink_delay) and
/// [`PoolBuilder::shrink_period`](crate::PoolBuilder::shrink_period).
pub(crate) const DEFAULT_SHRINK: Duration = Duration::from_secs(120);

/// The shortest duration a pool setting accepts where zero makes no sense (a lifetime, an
/// interval, a timeout): below this the maintenance task would spin and every connection would
/// be replaced as soon as it opened.
pub(crate) const MIN_DURATION: Duration = Duration::from_millis(10);

/// The longest duration a pool setting accepts: a year. Longer values are typing mistakes (a
/// value in seconds given as milliseconds, `Duration::MAX` where `None` was meant) and would
/// overflow the clock arithmetic of deadlines.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most connections a pool may be configured with: PostgreSQL's `max_connections` is an
/// `int` below 2^18 (262 143); a larger pool cannot be served by any server.
pub(crate) const MAX_POOL_SIZE: usize = 262_143;

/// Checks a pair of sizes (at `build()` and in `resize`).
pub(crate) fn check_sizes(size: usize, max_size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::config("pool size must be at least 1"));
    }
    if max_size < size {
        return Err(Error::config(format!(
            "max_size ({max_size}) must be at least size ({size})"
        )));
    }
    if max_size > MAX_POOL_SIZE {
        return Err(Error::config(format!(
            "max_size ({max_size}) is above {MAX_POOL_SIZE}, more connections than any PostgreSQL \
             server accepts"
        )));
    }
    Ok(())
}

/// Checks a duration setting: `None` passes, zero or below [`MIN_DURATION`] and above
/// [`MAX_DURATION`] are configuration errors naming the setting.
pub(crate) fn check_duration(name: &str, value: Option<Duration>) -> Result<()> {
    match value {
        Some(d) if d < MIN_DURATION => Err(Error::config(format!(
            "{name} ({d:?}) must be at least {MIN_DURATION:?}"
        ))),
        Some(d) if d > MAX_DURATION => Err(Error::config(format!(
            "{name} ({d:?}) must be at most {MAX_DURATION:?} (a year); leave it unset for no limit"
        ))),
        _ => Ok(()),
    }
}

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
    /// Age after which an idle connection is closed and replaced (plus up to 10 % of jitter), if
    /// bounded.
    pub max_lifetime: Option<Duration>,
    /// Most callers that may wait for a connection at once, if bounded.
    pub max_waiting: Option<usize>,
    /// A `getconn` guard held longer than this is reported once with a warning, if set.
    pub leak_threshold: Option<Duration>,
    /// The pool's name in metrics and logs.
    pub name: String,
    /// How long the credentials a provider gave are reused for new connections.
    pub credentials_refresh: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            size: 1,
            max_size: 1,
            reconnect_interval: DEFAULT_RECONNECT_INTERVAL,
            setsession: Vec::new(),
            raise_connect_errors: true,
            auto_shrink: false,
            shrink_delay: DEFAULT_SHRINK,
            shrink_period: DEFAULT_SHRINK,
            acquire_timeout: None,
            statement_timeout: None,
            retry: RetryPolicy::Safe,
            pipeline_depth: 1,
            adaptive_pipelining: false,
            liveness_window: DEFAULT_LIVENESS_WINDOW,
            pipeline_stall: DEFAULT_PIPELINE_STALL,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            max_waiting: None,
            leak_threshold: None,
            name: String::new(),
            credentials_refresh: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_setting() {
        let zero = check_duration("acquire_timeout", Some(Duration::ZERO)).unwrap_err();
        assert!(zero.is_config() && zero.to_string().contains("acquire_timeout"));
        let huge = check_duration("max_lifetime", Some(Duration::MAX)).unwrap_err();
        assert!(huge.to_string().contains("max_lifetime"));
        assert!(check_duration("x", None).is_ok());
        assert!(check_duration("x", Some(MIN_DURATION)).is_ok());
        assert!(check_duration("x", Some(MAX_DURATION)).is_ok());
        assert!(check_sizes(0, 1).is_err());
        assert!(check_sizes(2, 1).is_err());
        assert!(check_sizes(1, MAX_POOL_SIZE + 1).is_err());
        assert!(check_sizes(1, 1).is_ok());
    }
}
