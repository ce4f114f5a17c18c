//! What the pool reports about itself: [`PoolStatus`] (a snapshot of its connections),
//! [`PoolCounters`] (totals since it was created) and [`PoolStats`] (both in psycopg_pool's
//! terms).

use std::time::Duration;

/// A snapshot of the pool's connections (Momoko's `ConnectionContainer`).
///
/// `total = free + busy + checking + pending + dead`; `dead` are the missing connections below
/// `size` that the pool is reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Idle connections ready for use.
    pub free: usize,
    /// Connections checked out (running a statement or held by `getconn`).
    pub busy: usize,
    /// Returned connections being checked before reuse (left inside a transaction, or with an
    /// answer still on its way); they do not count against `max_size`.
    pub checking: usize,
    /// Connects in progress.
    pub pending: usize,
    /// Missing connections below `size`, waiting to be reopened.
    pub dead: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// `free + busy + checking + pending + dead`.
    pub total: usize,
    /// The `size` in force (as built, or as [`Pool::resize`](crate::Pool::resize) last set it).
    pub size: usize,
    /// The `max_size` in force (as built, or as [`Pool::resize`](crate::Pool::resize) last set
    /// it).
    pub max_size: usize,
    /// Whether `close()` was called.
    pub closed: bool,
    /// Whether the last connect attempt failed.
    pub database_down: bool,
    /// Pipelined statements in flight on free connections (see [`PoolBuilder::pipeline`](crate::PoolBuilder::pipeline)).
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
    /// Connections closed because they were dead or in an unknown state (lost).
    pub discarded: u64,
    /// Statements cancelled after `statement_timeout`.
    pub statement_timeouts: u64,
    /// Idle extras closed by auto-shrink.
    pub shrunk: u64,
    /// Returned connections that needed a check (a rollback or a wait for an answer) before
    /// reuse.
    pub checks: u64,
    /// Connections closed and replaced because they reached `max_lifetime`.
    pub rotated: u64,
    /// Connections closed and replaced by [`Pool::drain`](crate::Pool::drain).
    pub replaced: u64,
    /// Connections closed because [`Pool::resize`](crate::Pool::resize) made the pool smaller.
    pub trimmed: u64,
    /// Checkouts that failed: timed out, refused (`max_waiting`), database not available, pool
    /// closed.
    pub acquire_errors: u64,
    /// Checkouts refused at once because `max_waiting` callers were already waiting (part of
    /// `acquire_errors`).
    pub rejected: u64,
    /// Total time callers spent waiting in the queue (served or not).
    pub wait_time: Duration,
    /// Leak warnings given (held connections past `leak_threshold`).
    pub leaks: u64,
}

/// The pool's numbers in the terms of psycopg_pool's `get_stats()`, for dashboards and
/// operators coming from it (see [`Pool::stats`](crate::Pool::stats)).
///
/// Gauges (`pool_*`, `requests_waiting`) are read at one moment; the rest are totals since the
/// pool was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections kept open (`size`).
    pub pool_min: usize,
    /// Most connections (`max_size`).
    pub pool_max: usize,
    /// Connections open or being opened now.
    pub pool_size: usize,
    /// Idle connections now.
    pub pool_available: usize,
    /// Callers waiting now.
    pub requests_waiting: usize,
    /// Connection requests (checkouts, including those of `execute` and friends).
    pub requests_num: u64,
    /// Requests that had to wait.
    pub requests_queued: u64,
    /// Total time requests spent waiting.
    pub requests_wait_time: Duration,
    /// Requests that failed (timed out, refused by `max_waiting`, database not available, pool
    /// closed).
    pub requests_errors: u64,
    /// Connections opened.
    pub connections_num: u64,
    /// Connect attempts that failed.
    pub connections_errors: u64,
    /// Connections found dead or in an unknown state, and closed.
    pub connections_lost: u64,
    /// Connections replaced by [`Pool::drain`](crate::Pool::drain).
    pub connections_replaced: u64,
    /// Connections replaced because they reached `max_lifetime`.
    pub connections_rotated: u64,
}
