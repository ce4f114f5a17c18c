//! What the pool reports about itself: [`PoolStatus`] (a snapshot of its connections) and
//! [`PoolCounters`] (totals since it was created).

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
    /// The configured `size`.
    pub size: usize,
    /// The configured `max_size`.
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
    /// Connections closed because they were dead or in an unknown state.
    pub discarded: u64,
    /// Statements cancelled after `statement_timeout`.
    pub statement_timeouts: u64,
    /// Idle extras closed by auto-shrink.
    pub shrunk: u64,
    /// Returned connections that needed a check (a rollback or a wait for an answer) before
    /// reuse.
    pub checks: u64,
}
