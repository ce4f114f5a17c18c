//! The pool's engine: one mutex-protected state, a FIFO of waiters, and a maintenance task.
//!
//! Accounting: every connection the pool owns is exactly one of *idle* (in `State::idle`), *busy*
//! (checked out, counted in `State::busy`, including connections handed to a waiter that has not
//! picked them up yet), *checking* (returned in a state that needs a round trip before reuse:
//! inside a transaction, or with an answer still on its way; see `guard.rs`) or *pending* (a
//! connect in progress). *Dead* is derived: the slots below `size` that are none of those, which
//! the maintenance task reconnects. All four count against `max_size`.
//!
//! Connections live in an `Arc` for their whole life in the pool. An idle connection may carry
//! pipelined statements (clones of its `Arc`, counted in `State::shared_in_flight`); an exclusive
//! checkout takes only an idle connection without any, so a checked-out `Arc` is unique. Clones
//! are made and dropped only under the pool lock.
//!
//! Pipelined statements go where `pipeline.rs` decides: with a fixed depth, the idle connection
//! with the fewest in flight, skipping stalled ones (see `PoolBuilder::pipeline_stall`); with
//! adaptive pipelining, the fullest of the few lanes the pool fills.
//!
//! Fairness: callers are served oldest first. While anyone waits, a newcomer queues behind them
//! even if it could pipeline onto a connection now; each freed connection or finished pipelined
//! statement serves the queue from its front, and the first waiter that cannot be served stops
//! the round (an exclusive waiter at the front lets the connections' pipelined statements drain).
//!
//! Lifecycle: a connection older than `max_lifetime` (plus its own jitter of up to 10 %), or
//! opened before the latest `drain()`, is *expired*. It is never closed under a caller: it is
//! replaced when it is free (found idle by the maintenance pass, or as it comes back). When the
//! pool has room below `max_size`, the replacement is opened first and the old connection stays
//! in service until it arrives (it is *covered*); at `max_size`, the old one closes as its
//! replacement starts. At most [`ROTATION_IN_FLIGHT`] replacements are opened at once, so the
//! jitter and that bound spread them. The clock these decisions read is the one the maintenance
//! pass last read (`State::clock`): returning a connection reads no clock.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, info, warn};

use crate::config::{ConnectOptions, Credentials, TargetSessionAttrs};
use crate::connection::{Connection, Liveness};
use crate::error::{Error, Result};
use crate::executor::{timeout, SharedExecutor};
use crate::pool::metrics::Metrics;
use crate::pool::pipeline::{Candidate, Lane, Learned, Pipelining};
use crate::pool::settings::MIN_DURATION;
use crate::pool::{PoolConfig, PoolCounters, PoolStats, PoolStatus};
use tokio_postgres::error::SqlState;

/// How many connects the whole pool runs at once to grow for waiters. More start only as these
/// finish and while waiters remain that no pending connect will serve.
///
/// Why 2: in a spike of 50 callers with 2 ms statements and 150 ms connects, one connection
/// clears the burst in about 120 ms, before any new connection could be ready; every connect
/// started for it is wasted (a pool that dials one per waiter ends with 50). A long-statement
/// burst still stretches fully: each finished connect serves a waiter and starts the next.
pub(crate) const GROWTH_IN_FLIGHT: usize = 2;

/// How many replacements of expired connections (`max_lifetime`, `drain()`) the pool opens at
/// once.
///
/// Why 2: a pool of 100 connections opened together, with the default 30-minute lifetime,
/// expires them over the 3 minutes of jitter, one every 1.8 s; two connects in flight keep up
/// with that even at 1 s per connect (TLS across a region), and a `drain()` of 100 connections
/// with 20 ms connects takes a second without doubling the server's connection rate.
const ROTATION_IN_FLIGHT: usize = 2;

/// The maintenance pass runs at least this many times per `max_lifetime`, so a connection
/// outlives its deadline by at most 5 % of the lifetime (half the jitter).
const TICKS_PER_LIFETIME: u32 = 20;

/// The maintenance pass runs at least this many times per `leak_threshold`, so a warning comes
/// at most 25 % late.
const TICKS_PER_LEAK_THRESHOLD: u32 = 4;

static POOL_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PoolInner {
    pub(crate) id: u64,
    pub(crate) executor: SharedExecutor,
    pub(crate) options: ConnectOptions,
    pub(crate) config: PoolConfig,
    /// Asked for the password or the whole options of each new connection, if set.
    credentials: Option<Arc<Credentials>>,
    /// The origin of `State::clock` and of connection ages.
    epoch: Instant,
    /// `config.max_lifetime` in nanoseconds.
    lifetime: Option<u64>,
    state: Mutex<State>,
    counters: Counters,
    pub(crate) metrics: Metrics,
    /// Statements seen to leave a connection idle when run alone from idle: only these are
    /// pipelined (see [`Learned`]).
    learned: Learned,
    /// Numbers connect attempts in the order they start.
    connect_seq: AtomicU64,
}

/// An idle connection. Pipelined statements share it through clones of the `Arc` while it stays
/// idle; an exclusive checkout takes it only when no clone exists.
struct Idle {
    conn: Arc<Connection>,
    /// When it last became free; only shrinking reads it, so it is `None` without `auto_shrink`
    /// (no clock read on the hot path).
    since: Option<Instant>,
    /// Its pipeline's measurements.
    lane: Lane,
}

impl Idle {
    /// Pipelined statements running on it now.
    fn shared(&self) -> usize {
        Arc::strong_count(&self.conn) - 1
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// Connections kept open (`resize` changes it).
    size: usize,
    /// Most connections (`resize` changes it).
    max_size: usize,
    /// Connections above `size` to close as they come back while nobody waits (after `resize`
    /// made the pool smaller).
    trim: usize,
    /// The executor's clock as the maintenance pass last read it, in nanoseconds after
    /// `PoolInner::epoch`. Lifetimes are compared with it, so no clock is read on the way back.
    clock: u64,
    /// Connections opened at or before this (nanoseconds after the epoch) are replaced: the
    /// latest `drain()`.
    drain_at: Option<u64>,
    /// Connects started up to this number were started before the latest `drain()`.
    drain_seq: u64,
    /// Connections and connects from before the latest `drain()` still in the pool.
    stale: usize,
    /// Replacement connects of expired connections in flight (part of `pending`).
    rotating: usize,
    /// Expired connections still in service whose replacement is being opened (addresses).
    covered: Vec<usize>,
    /// No replacement starts before this (nanoseconds after the epoch): a replacement connect
    /// failed, so retry after `reconnect_interval`.
    rotation_paused_until: u64,
    /// `getconn` guards held now, when `leak_threshold` is set.
    held: Slab<Held>,
    idle: VecDeque<Idle>,
    busy: usize,
    /// Returned connections being checked before reuse.
    checking: usize,
    pending: usize,
    /// Growth connects in flight (part of `pending`).
    growing: usize,
    /// Keys of `entries`, oldest first.
    waiters: VecDeque<usize>,
    entries: Slab<Entry>,
    closed: bool,
    /// Set when the last connect attempt failed (cleared by a success): the database is down.
    down: Option<Error>,
    last_attempt: Option<Instant>,
    last_shrink: Option<Instant>,
    /// Woken when `busy` or `pending` drops, for `close()` and `connect()`.
    watchers: Vec<Waker>,
    /// Start number of the most recent connect attempt that succeeded.
    last_success_seq: u64,
    /// Outcome of the initial round of connects: (done, failed).
    initial: (usize, usize),
    /// Pipelined statements in flight on idle connections.
    shared_in_flight: usize,
    /// Where pipelined statements go.
    pipelining: Pipelining,
}

struct Entry {
    waker: Option<Waker>,
    want: Want,
    outcome: Option<Result<Arc<Connection>>>,
    /// When it started waiting.
    since: Instant,
}

/// A connection held by a caller, watched for leaks (see
/// [`PoolBuilder::leak_threshold`](crate::PoolBuilder::leak_threshold)). Guards that keep a
/// connection for their owner register one with [`PoolInner::hold`] and remove it with
/// [`PoolInner::unhold`].
struct Held {
    /// Where the caller took the connection.
    at: &'static Location<'static>,
    /// What holds it (`"getconn"`, `"transaction"`), for the warning.
    what: &'static str,
    since: Instant,
    warned: bool,
}

/// What a caller waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Want {
    /// A connection of its own: an idle one that no statement is pipelined on.
    Exclusive,
    /// A share of an idle connection that has fewer than this many pipelined statements.
    Shared(usize),
}

/// Wakers collected under the lock and woken after it is released (a woken task often runs at
/// once on another thread and would otherwise find the lock still held).
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    fn append(&mut self, wakers: &mut Vec<Waker>) {
        for w in wakers.drain(..) {
            self.push(w);
        }
    }

    fn wake(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

/// Counters, updated without the lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) acquires: AtomicU64,
    pub(crate) acquire_waits: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) checks: AtomicU64,
    pub(crate) statement_timeouts: AtomicU64,
    pub(crate) shrunk: AtomicU64,
    pub(crate) rotated: AtomicU64,
    pub(crate) replaced: AtomicU64,
    pub(crate) trimmed: AtomicU64,
    pub(crate) acquire_errors: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Total time callers waited in the queue, in nanoseconds.
    pub(crate) wait_nanos: AtomicU64,
    pub(crate) leaks: AtomicU64,
}

/// Why a connection leaves the pool (for the counters).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leaving {
    /// Dead, or in an unknown state.
    Lost,
    /// An idle extra closed by auto-shrink.
    Shrunk,
    /// Expired (`max_lifetime`) or drained.
    Expired,
    /// Above the sizes `resize` set.
    Trimmed,
    /// The pool closed.
    Closing,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's own share of the jitter, from `0` to a tenth of `lifetime`, drawn from its
/// opening time (SplitMix64's finalizer: consecutive nanoseconds land far apart).
fn jitter(born: u64, lifetime: u64) -> u64 {
    let mut z = born.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % (lifetime / 10 + 1)
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why a connect was started (for counters and logs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reason {
    Initial,
    Grow,
    Reconnect,
    /// Replaces an expired connection.
    Rotate,
}

impl State {
    /// Connections the pool has or is opening: what `max_size` bounds.
    fn live(&self) -> usize {
        self.open() + self.pending
    }

    /// Connections the pool has open.
    fn open(&self) -> usize {
        self.idle.len() + self.busy + self.checking
    }
}

impl PoolInner {
    pub(crate) fn new(
        executor: SharedExecutor,
        options: ConnectOptions,
        config: PoolConfig,
        credentials: Option<Arc<Credentials>>,
    ) -> Arc<PoolInner> {
        let learned = Learned::new(config.adaptive_pipelining, config.pipeline_stall);
        let epoch = executor.now();
        let metrics = Metrics::new(&config);
        let inner = Arc::new(PoolInner {
            id: POOL_IDS.fetch_add(1, Ordering::Relaxed),
            executor,
            options,
            lifetime: config.max_lifetime.map(nanos),
            credentials,
            epoch,
            config,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            metrics,
            learned,
            connect_seq: AtomicU64::new(0),
        });
        {
            let mut st = inner.lock();
            if inner.config.adaptive_pipelining {
                st.pipelining = Pipelining::adaptive();
            }
            st.size = inner.config.size;
            st.max_size = inner.config.max_size;
            st.pending = inner.config.size;
            st.last_attempt = Some(epoch);
            inner.metrics.sizes(st.size, st.max_size);
        }
        for _ in 0..inner.config.size {
            inner.spawn_connect(Reason::Initial);
        }
        inner.spawn_maintenance();
        inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State updates never panic midway; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts one connect (the caller already counted it in `pending`).
    fn spawn_connect(self: &Arc<Self>, reason: Reason) {
        let weak = Arc::downgrade(self);
        let executor = self.executor.clone();
        let options = self.options.clone();
        let setsession = self.config.setsession.clone();
        let credentials = self.credentials.clone();
        let seq = self.connect_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let timed = self.metrics.enabled();
        self.executor.spawn(Box::pin(async move {
            let start = timed.then(|| executor.now());
            let result = match &credentials {
                None => open_session(&options, &executor, &setsession).await,
                Some(credentials) => match credentials.options(&options, &executor).await {
                    Ok((fresh, generation)) => {
                        let result = open_session(&fresh, &executor, &setsession).await;
                        if result.as_ref().is_err_and(Error::is_auth) {
                            // The server refused what the provider gave: ask it again next time
                            // rather than reuse it until the refresh interval ends.
                            credentials.forget(generation);
                        }
                        result
                    }
                    Err(e) => Err(e),
                },
            };
            match weak.upgrade() {
                Some(inner) => {
                    if let (Some(start), Ok(_)) = (start, &result) {
                        inner
                            .metrics
                            .create_time(executor.now().saturating_duration_since(start));
                    }
                    inner.connect_finished(result, reason, seq)
                }
                None => drop(result),
            }
        }));
    }

    /// Books the outcome of connect attempt number `seq`.
    fn connect_finished(self: &Arc<Self>, result: Result<Connection>, reason: Reason, seq: u64) {
        let mut wake = WakeList::default();
        let mut st = self.lock();
        if seq <= st.drain_seq {
            // Started before the latest drain(): its session may carry what the drain is meant
            // to leave behind (an old password's grant, a dropped role's settings).
            st.stale = st.stale.saturating_sub(1);
            if result.is_ok() && !st.closed {
                bump(&self.counters.opened);
                bump(&self.counters.closed);
                bump(&self.counters.replaced);
                // The same slot, opened again (it still counts as pending, and as growing or
                // rotating if it did).
                self.spawn_connect(reason);
                wake.append(&mut st.watchers);
                drop(st);
                drop(result);
                wake.wake();
                return;
            }
        }
        st.pending -= 1;
        if reason == Reason::Grow {
            st.growing -= 1;
        }
        if reason == Reason::Rotate {
            st.rotating -= 1;
            // The oldest covered connection's replacement arrived (or failed): it is no longer
            // waiting for one.
            if !st.covered.is_empty() {
                st.covered.remove(0);
            }
            if result.is_err() {
                st.rotation_paused_until = st
                    .clock
                    .saturating_add(nanos(self.config.reconnect_interval));
            }
        }
        if reason == Reason::Initial {
            st.initial.0 += 1;
            if result.is_err() {
                st.initial.1 += 1;
            }
        }
        let mut unused = None;
        let mut closing = Vec::new();
        match result {
            Ok(conn) => {
                st.last_success_seq = st.last_success_seq.max(seq);
                bump(&self.counters.opened);
                if reason == Reason::Reconnect {
                    bump(&self.counters.reconnects);
                }
                if st.down.take().is_some() {
                    info!(target: "momoko", pool = self.id, "database reachable again");
                    // The probe answered: reopen the other missing connections now.
                    let missing = st.size.saturating_sub(st.live() + 1);
                    if !st.closed && missing > 0 {
                        st.pending += missing;
                        for _ in 0..missing {
                            self.spawn_connect(Reason::Reconnect);
                        }
                    }
                }
                if st.closed || (reason != Reason::Rotate && st.open() >= st.max_size) {
                    // Closed, or the pool filled up while it was opening (`resize` lowered
                    // `max_size`, or replacements of expired connections took the room); a
                    // replacement stays: the connection it replaces closes when free.
                    bump(&self.counters.closed);
                    unused = Some(conn);
                } else {
                    debug!(
                        target: "momoko",
                        pool = self.id,
                        ?reason,
                        free = st.idle.len(),
                        busy = st.busy,
                        pending = st.pending,
                        waiting = st.waiters.len(),
                        "connection opened"
                    );
                    self.put_back(&mut st, Arc::new(conn), &mut wake);
                    if reason == Reason::Rotate {
                        // The spare is here: an expired connection that is free now can go.
                        self.rotate_idle(&mut st, &mut closing);
                    }
                }
            }
            Err(e) => {
                bump(&self.counters.connect_failures);
                warn!(
                    target: "momoko",
                    pool = self.id,
                    ?reason,
                    error = %e,
                    free = st.idle.len(),
                    busy = st.busy,
                    pending = st.pending,
                    waiting = st.waiters.len(),
                    "connect failed"
                );
                // With nothing busy and nothing pending, no connection can come for the waiters
                // now: fail them rather than let them hang (they may retry after the interval).
                if st.busy == 0 && st.pending == 0 && st.checking == 0 && st.idle.is_empty() {
                    self.fail_waiters(&mut st, || Error::not_available(Some(&e)), &mut wake);
                }
                // A failure says the database is down only if the attempt started after the
                // latest success (a late-finishing older attempt must not undo newer news) and
                // the pool holds no live connection (one that works proves the database is up;
                // if it is in fact dead, its return leads to another attempt).
                let live_connection =
                    st.busy > 0 || st.checking > 0 || st.idle.iter().any(|i| !i.conn.is_closed());
                if seq > st.last_success_seq && !live_connection {
                    st.down = Some(e);
                }
            }
        }
        wake.append(&mut st.watchers);
        self.grow_if_needed(&mut st);
        self.publish(&st);
        drop(st);
        drop(unused);
        drop(closing);
        wake.wake();
    }

    fn fail_waiters(&self, st: &mut State, err: impl Fn() -> Error, wake: &mut WakeList) {
        while let Some(key) = st.waiters.pop_front() {
            if let Some(entry) = st.entries.get_mut(key) {
                entry.outcome = Some(Err(err()));
                if let Some(w) = entry.waker.take() {
                    wake.push(w);
                }
            }
        }
    }

    /// Makes `conn` free (the most recently used, at the back) and serves the waiters it can
    /// serve.
    fn put_back(&self, st: &mut State, conn: Arc<Connection>, wake: &mut WakeList) {
        let since = self.config.auto_shrink.then(|| self.executor.now());
        st.idle.push_back(Idle {
            conn,
            since,
            lane: Lane::default(),
        });
        self.dispatch(st, wake);
    }

    /// Serves waiters oldest first: an exclusive waiter gets an idle connection without
    /// pipelined statements, a shared one a share of the least loaded idle connection with room.
    /// Stops at the first waiter that cannot be served, so nobody is overtaken.
    fn dispatch(&self, st: &mut State, wake: &mut WakeList) {
        while let Some(&key) = st.waiters.front() {
            let Some(want) = st.entries.get(key).map(|e| e.want) else {
                st.waiters.pop_front();
                continue;
            };
            let Some(conn) = self.take(st, want) else {
                break;
            };
            st.waiters.pop_front();
            if let Some(entry) = st.entries.get_mut(key) {
                entry.outcome = Some(Ok(conn));
                if let Some(w) = entry.waker.take() {
                    wake.push(w);
                }
            }
        }
    }

    /// Takes what `want` asks for from the idle connections, counting it busy or shared.
    fn take(&self, st: &mut State, want: Want) -> Option<Arc<Connection>> {
        match want {
            Want::Exclusive => {
                // Skipping connections that pipelined statements use: the least recently used
                // (sequential callers rotate over the connections, so each statement finds a
                // backend that has settled since its last one), or, when idle extras are to be
                // shrunk, the most recently used (so the extras stay idle), as Momoko does.
                let free = |i: &Idle| i.shared() == 0;
                while let Some(pos) = if self.config.auto_shrink {
                    st.idle.iter().rposition(free)
                } else {
                    st.idle.iter().position(free)
                } {
                    let idle = st.idle.remove(pos)?;
                    if idle.conn.is_closed() || !self.serves(&idle.conn) {
                        self.leaving(st, &idle.conn, Leaving::Lost);
                        continue;
                    }
                    st.busy += 1;
                    return Some(idle.conn);
                }
                None
            }
            Want::Shared(depth) => {
                let now = self.executor.now();
                let State {
                    idle, pipelining, ..
                } = &mut *st;
                let candidates = idle.iter().map(|i| Candidate {
                    shared: i.shared(),
                    lane: &i.lane,
                    eligible: i.conn.last_reported_idle() && self.serves(&i.conn),
                });
                // Adaptive pipelining's wait budget, or the fixed stall rule.
                let stall = self.learned.budget().unwrap_or(self.config.pipeline_stall);
                // In the same order as exclusive checkouts (least recently used first, or most
                // recently used with shrinking).
                let pos = if self.config.auto_shrink {
                    let n = idle.len();
                    n - 1 - pipelining.choose(now, depth, stall, candidates.rev())?
                } else {
                    pipelining.choose(now, depth, stall, candidates)?
                };
                let best = idle.get_mut(pos)?;
                let shared = best.shared();
                pipelining.sent(now, &mut best.lane, shared);
                let conn = Arc::clone(&best.conn);
                st.shared_in_flight += 1;
                Some(conn)
            }
        }
    }

    /// Opens connections for waiters that no pending connect will serve, up to `max_size`, with
    /// at most [`GROWTH_IN_FLIGHT`] growth connects under way pool-wide.
    fn grow_if_needed(self: &Arc<Self>, st: &mut State) {
        if st.closed || st.down.is_some() {
            return;
        }
        // Adaptive pipelining leaves free connections out of its lanes on purpose: callers
        // waiting for a lane's room are not served by one more connection.
        if st.pipelining.is_adaptive() && st.idle.iter().any(|i| i.shared() == 0) {
            return;
        }
        while st.waiters.len() > st.pending
            && st.live() < st.max_size
            && st.growing < GROWTH_IN_FLIGHT
        {
            st.pending += 1;
            st.growing += 1;
            self.spawn_connect(Reason::Grow);
        }
    }

    /// Serves a new caller at once if it can be served without overtaking a waiter.
    fn try_now(&self, st: &mut State, want: Want) -> Option<Result<Arc<Connection>>> {
        if st.closed {
            return Some(Err(Error::pool_closed()));
        }
        if !st.waiters.is_empty() {
            return None;
        }
        self.take(st, want).map(Ok)
    }

    /// Ends a pipelined statement's share; the room it leaves serves the waiters. `sent`: when
    /// the statement went out (`None` for a share handed over but never used).
    pub(crate) fn release_shared(self: &Arc<Self>, conn: Arc<Connection>, sent: Option<Instant>) {
        let mut wake = WakeList::default();
        let now = self.executor.now();
        let mut st = self.lock();
        st.shared_in_flight -= 1;
        if let Some(pos) = st.idle.iter().position(|i| Arc::ptr_eq(&i.conn, &conn)) {
            // The idle list's reference plus this one: its last statement just finished.
            let last = Arc::strong_count(&conn) == 2;
            let State {
                idle, pipelining, ..
            } = &mut *st;
            if let Some(idle) = idle.get_mut(pos) {
                pipelining.finished(now, &mut idle.lane, sent);
                if last && self.config.auto_shrink {
                    idle.since = Some(now);
                }
            }
            if last {
                // It becomes the most recently used free connection, as after a checkout.
                if let Some(idle) = st.idle.remove(pos) {
                    let born = self.age_key(&idle.conn);
                    // Out of the idle list for now: not counted (`uncounted` is 1).
                    if self.expired(&st, born) && self.rotate_one(&mut st, &idle.conn, 1) {
                        // Its statements are done and it is past its lifetime: replaced now.
                        self.leaving(&mut st, &idle.conn, Leaving::Expired);
                    } else {
                        st.idle.push_back(idle);
                    }
                }
            }
        }
        // The last share of a retired connection (or of one a closed pool let go) closes it,
        // outside the lock.
        let unused = Arc::try_unwrap(conn).ok();
        if !st.waiters.is_empty() {
            self.dispatch(&mut st, &mut wake);
        }
        wake.append(&mut st.watchers);
        drop(st);
        drop(unused);
        wake.wake();
    }

    /// Takes a shared connection out of rotation (after a statement timeout): no new statements
    /// go to it, and it closes when the statements still on it finish.
    /// Returns whether the caller's statement was the only one on it (so a cancel request can
    /// only hit that statement).
    pub(crate) fn retire(self: &Arc<Self>, conn: &Arc<Connection>) -> bool {
        let mut st = self.lock();
        // The idle list's reference plus the caller's.
        let alone = Arc::strong_count(conn) == 2;
        if let Some(pos) = st.idle.iter().position(|i| Arc::ptr_eq(&i.conn, conn)) {
            if let Some(idle) = st.idle.remove(pos) {
                self.leaving(&mut st, &idle.conn, Leaving::Lost);
            }
            self.replace_if_needed(&mut st);
            self.publish(&st);
            let mut wake = WakeList::default();
            wake.append(&mut st.watchers);
            drop(st);
            wake.wake();
            alone
        } else {
            false
        }
    }

    /// Checks a connection out (exclusive, or a pipelined share), waiting at most
    /// `acquire_timeout`.
    pub(crate) async fn checkout(self: &Arc<Self>, want: Want) -> Result<Arc<Connection>> {
        let acquire = self.acquire(want);
        let result = match self.config.acquire_timeout {
            None => acquire.await,
            Some(limit) => match timeout(&*self.executor, limit, acquire).await {
                Ok(r) => r,
                Err(_) => {
                    self.count_acquire_timeout();
                    Err(Error::timeout(format!(
                        "no connection became free within acquire_timeout ({limit:?})"
                    )))
                }
            },
        };
        if result.is_err() {
            bump(&self.counters.acquire_errors);
        }
        result
    }

    /// When statements must prove their connection alive first (see
    /// [`PoolBuilder::liveness_window`](crate::PoolBuilder::liveness_window)).
    pub(crate) fn liveness(&self) -> Liveness {
        Liveness {
            window: self.config.liveness_window,
            bound: self.check_bound(),
        }
    }

    /// How long a liveness check or the check of a returned connection may take: the pool's
    /// connect timeout (a server that cannot answer an empty query in the time it may take to
    /// accept a connection is treated as gone).
    pub(crate) fn check_bound(&self) -> Duration {
        self.options
            .get_connect_timeout()
            .unwrap_or(crate::pool::settings::DEFAULT_CONNECT_TIMEOUT)
    }

    fn acquire(self: &Arc<Self>, want: Want) -> Acquire {
        Acquire {
            inner: Arc::clone(self),
            want,
            key: None,
        }
    }

    /// Returns an exclusively checked-out connection. `reusable` is false when the connection
    /// may be in an unknown state (abandoned mid-query, timed out): it is then closed.
    pub(crate) fn release(self: &Arc<Self>, conn: Arc<Connection>, reusable: bool) {
        self.finish_return(conn, reusable, false);
    }

    /// A returned connection needs a check before reuse: it leaves `busy` for `checking`.
    pub(crate) fn check_started(&self) {
        let mut st = self.lock();
        st.busy -= 1;
        st.checking += 1;
        bump(&self.counters.checks);
        self.publish(&st);
    }

    /// The check of a returned connection ended: it is reused when it came out clean, closed
    /// otherwise.
    pub(crate) fn check_finished(self: &Arc<Self>, conn: Arc<Connection>, clean: bool) {
        self.finish_return(conn, clean, true);
    }

    fn finish_return(self: &Arc<Self>, conn: Arc<Connection>, reusable: bool, checked: bool) {
        let mut wake = WakeList::default();
        let mut st = self.lock();
        if checked {
            st.checking -= 1;
        } else {
            st.busy -= 1;
        }
        let keep = reusable && !st.closed && !conn.is_closed();
        let mut unused = None;
        let retire = if !keep {
            None
        } else if self.rotates(&st)
            && self.expired(&st, self.age_key(&conn))
            && self.rotate_one(&mut st, &conn, 1)
        {
            Some(Leaving::Expired)
        } else if self.trims(&mut st) {
            Some(Leaving::Trimmed)
        } else {
            None
        };
        if let Some(why) = retire {
            self.leaving(&mut st, &conn, why);
            unused = Some(conn);
            self.replace_if_needed(&mut st);
        } else if keep {
            self.put_back(&mut st, conn, &mut wake);
        } else {
            self.leaving(
                &mut st,
                &conn,
                if reusable {
                    Leaving::Closing
                } else {
                    Leaving::Lost
                },
            );
            debug!(
                target: "momoko",
                pool = self.id,
                reusable,
                free = st.idle.len(),
                busy = st.busy,
                pending = st.pending,
                waiting = st.waiters.len(),
                "connection discarded"
            );
            unused = Some(conn);
            self.replace_if_needed(&mut st);
        }
        wake.append(&mut st.watchers);
        self.publish(&st);
        drop(st);
        drop(unused);
        wake.wake();
    }

    /// After a connection was lost: waiters must not starve, so open a replacement right away
    /// when someone is waiting (otherwise the maintenance task restores `size`).
    fn replace_if_needed(self: &Arc<Self>, st: &mut State) {
        if st.closed {
            return;
        }
        if !st.waiters.is_empty() && st.pending < st.waiters.len() && st.live() < st.max_size {
            st.pending += 1;
            if st.live() <= st.size {
                self.spawn_connect(Reason::Reconnect);
            } else {
                st.growing += 1;
                self.spawn_connect(Reason::Grow);
            }
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let st = self.lock();
        let live = st.live();
        let dead = if st.closed {
            0
        } else {
            st.size.saturating_sub(live)
        };
        PoolStatus {
            free: st.idle.len(),
            busy: st.busy,
            checking: st.checking,
            pending: st.pending,
            dead,
            waiting: st.waiters.len(),
            total: live + dead,
            size: st.size,
            max_size: st.max_size,
            closed: st.closed,
            database_down: st.down.is_some(),
            pipelined: st.shared_in_flight,
        }
    }

    pub(crate) fn counters(&self) -> PoolCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolCounters {
            connections_opened: get(&c.opened),
            connections_closed: get(&c.closed),
            connect_failures: get(&c.connect_failures),
            reconnects: get(&c.reconnects),
            retries: get(&c.retries),
            acquires: get(&c.acquires),
            acquire_waits: get(&c.acquire_waits),
            acquire_timeouts: get(&c.acquire_timeouts),
            discarded: get(&c.discarded),
            statement_timeouts: get(&c.statement_timeouts),
            shrunk: get(&c.shrunk),
            checks: get(&c.checks),
            rotated: get(&c.rotated),
            replaced: get(&c.replaced),
            trimmed: get(&c.trimmed),
            acquire_errors: get(&c.acquire_errors),
            rejected: get(&c.rejected),
            wait_time: Duration::from_nanos(get(&c.wait_nanos)),
            leaks: get(&c.leaks),
        }
    }

    /// psycopg_pool's `get_stats()`: the status and the counters in its terms.
    pub(crate) fn stats(&self) -> PoolStats {
        let s = self.status();
        let c = self.counters();
        PoolStats {
            pool_min: s.size,
            pool_max: s.max_size,
            pool_size: s.free + s.busy + s.checking + s.pending,
            pool_available: s.free,
            requests_waiting: s.waiting,
            requests_num: c.acquires,
            requests_queued: c.acquire_waits,
            requests_wait_time: c.wait_time,
            requests_errors: c.acquire_errors,
            connections_num: c.connections_opened,
            connections_errors: c.connect_failures,
            connections_lost: c.discarded,
            connections_replaced: c.replaced,
            connections_rotated: c.rotated,
        }
    }

    /// A statement is run again after its connection died.
    pub(crate) fn count_retry(&self) {
        bump(&self.counters.retries);
    }

    /// A statement ran past `statement_timeout`.
    pub(crate) fn count_statement_timeout(&self) {
        bump(&self.counters.statement_timeouts);
    }

    /// A caller gave up waiting after `acquire_timeout`.
    pub(crate) fn count_acquire_timeout(&self) {
        bump(&self.counters.acquire_timeouts);
        self.metrics.timeout();
    }

    /// A caller stopped waiting in the queue: served (`obtained`), failed, timed out or gone.
    /// Every wait counts in the total; only those that obtained a connection are a sample of
    /// `db.client.connection.wait_time`.
    fn waited(&self, since: Instant, obtained: bool) {
        let waited = self.executor.now().saturating_duration_since(since);
        self.counters
            .wait_nanos
            .fetch_add(nanos(waited), Ordering::Relaxed);
        if obtained {
            self.metrics.waited(waited);
        }
    }

    /// Whether `conn`'s server, as it last reported its role, still qualifies for the pool's
    /// `target_session_attrs` (a read-write pool's server that turned read-only or became a
    /// standby does not; nor a standby pool's server that was promoted). A server that does not
    /// report its role (before PostgreSQL 14) is trusted until a write fails with 25006.
    pub(crate) fn serves(&self, conn: &Connection) -> bool {
        match self.options.get_target_session_attrs() {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
            attrs => conn.server_role().is_none_or(|role| attrs.accepts(role)),
        }
    }

    /// Whether `e` says the pool's server refused a write because it is read-only (SQLSTATE
    /// 25006, `read_only_sql_transaction`) while the pool wants a writable one. Such a statement
    /// took no effect.
    pub(crate) fn read_only_server_refused(&self, e: &Error) -> bool {
        matches!(
            self.options.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary
        ) && e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
            && !self.is_closed()
    }

    /// Leaves `conn`'s server: its idle connections close now (the others when they come back
    /// or fail), and connections opened from now on walk the hosts again, skipping servers that
    /// do not qualify. While no host qualifies, callers get `DatabaseNotAvailable` after each
    /// connect round, paced by `reconnect_interval`.
    pub(crate) fn forget_server(self: &Arc<Self>, conn: &Connection) {
        let target = conn.target();
        let mut st = self.lock();
        let before = st.idle.len();
        let mut closed = Vec::new();
        let mut kept = VecDeque::with_capacity(before);
        for idle in st.idle.drain(..) {
            if idle.shared() == 0 && idle.conn.target() == target {
                closed.push(idle);
            } else {
                kept.push_back(idle);
            }
        }
        st.idle = kept;
        for idle in &closed {
            self.leaving(&mut st, &idle.conn, Leaving::Lost);
        }
        warn!(target: "momoko", pool = self.id, server = %target, closed = closed.len(), "the server refused a write: it is read-only now; leaving it");
        self.replace_if_needed(&mut st);
        self.publish(&st);
        drop(st);
        drop(closed);
    }

    /// Remembers that `sql`, run alone on an idle connection, left it idle, taking `took` (read
    /// at `now`): it may be pipelined.
    pub(crate) fn learn_autocommit(&self, sql: &str, took: Duration, now: Instant) {
        self.learned.learn(sql, took, now);
    }

    /// Whether `sql` may be pipelined (see [`Learned`]).
    pub(crate) fn is_autocommit(&self, sql: &str) -> bool {
        self.learned.shareable(sql)
    }

    /// Closes the pool: no new work, waiters get `PoolClosed`, idle connections close now, busy
    /// ones when they come back.
    pub(crate) fn begin_close(&self) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.closed = true;
        let mut wake = WakeList::default();
        self.fail_waiters(&mut st, Error::pool_closed, &mut wake);
        let idle: Vec<Idle> = st.idle.drain(..).collect();
        for i in &idle {
            self.leaving(&mut st, &i.conn, Leaving::Closing);
        }
        wake.append(&mut st.watchers);
        self.publish(&st);
        drop(st);
        drop(idle);
        wake.wake();
        info!(target: "momoko", pool = self.id, "pool closing");
        true
    }

    /// Resolves once nothing is busy or pending (after `begin_close`).
    pub(crate) fn drained(self: &Arc<Self>) -> Watch<impl Fn(&State) -> bool> {
        Watch {
            inner: Arc::clone(self),
            done: |st: &State| {
                st.busy == 0 && st.checking == 0 && st.pending == 0 && st.shared_in_flight == 0
            },
        }
    }

    /// Resolves once every initial connect finished; gives (finished, failed).
    pub(crate) async fn initial_round(self: &Arc<Self>) -> (usize, usize) {
        // The initial round opens the size the pool was built with (`resize` does not change it).
        let size = self.config.size;
        Watch {
            inner: Arc::clone(self),
            done: move |st: &State| st.initial.0 >= size || st.closed,
        }
        .await;
        self.lock().initial
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// A copy of the error of the last failed connect, while the database is considered down.
    pub(crate) fn last_down_error(&self) -> Option<Error> {
        self.lock().down.as_ref().map(Error::copy)
    }

    /// How often the maintenance pass runs: often enough for what it watches (reconnects,
    /// shrinking, lifetimes, leaks), and never more than every [`MIN_DURATION`].
    fn tick(&self) -> Duration {
        let c = &self.config;
        let mut tick = c.reconnect_interval;
        if c.auto_shrink {
            tick = tick.min(c.shrink_period);
        }
        if let Some(lifetime) = c.max_lifetime {
            tick = tick.min(lifetime / TICKS_PER_LIFETIME);
        }
        if let Some(threshold) = c.leak_threshold {
            tick = tick.min(threshold / TICKS_PER_LEAK_THRESHOLD);
        }
        tick.max(MIN_DURATION)
    }

    fn spawn_maintenance(self: &Arc<Self>) {
        let weak: Weak<PoolInner> = Arc::downgrade(self);
        let executor = self.executor.clone();
        let tick = self.tick();
        self.executor.spawn(Box::pin(async move {
            loop {
                executor.sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                if !inner.maintain() {
                    return;
                }
            }
        }));
    }

    /// One maintenance pass: drop dead idle connections, reconnect up to `size`, replace expired
    /// idle connections, shrink idle extras, report leaks. Returns false once the pool is
    /// closed.
    fn maintain(self: &Arc<Self>) -> bool {
        let now = self.executor.now();
        let mut wake = WakeList::default();
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.clock = nanos(now.saturating_duration_since(self.epoch));
        let mut closing: Vec<Arc<Connection>> = Vec::new();
        // Health sweep: closed idle connections leave (they become dead slots).
        let mut i = 0;
        while i < st.idle.len() {
            if st.idle[i].conn.is_closed() {
                if let Some(dead) = st.idle.remove(i) {
                    self.leaving(&mut st, &dead.conn, Leaving::Lost);
                    closing.push(dead.conn);
                }
            } else {
                i += 1;
            }
        }
        // Reconnect dead slots, at most once per reconnect_interval. While the database is down,
        // one probe per interval is enough; once it answers, the rest follow at once.
        let missing = st.size.saturating_sub(st.live());
        let due = st
            .last_attempt
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.reconnect_interval);
        if missing > 0 && due && (st.down.is_none() || st.pending == 0) {
            let n = if st.down.is_some() { 1 } else { missing };
            st.last_attempt = Some(now);
            st.pending += n;
            for _ in 0..n {
                self.spawn_connect(Reason::Reconnect);
            }
        }
        self.rotate_idle(&mut st, &mut closing);
        // Shrink idle extras above size, least recently used first.
        if self.config.auto_shrink {
            let shrink_due = st
                .last_shrink
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.shrink_period);
            if shrink_due {
                st.last_shrink = Some(now);
                let mut shrunk = 0;
                while st.live() > st.size {
                    match st.idle.front() {
                        Some(i)
                            if i.shared() == 0
                                && i.since.is_some_and(|since| {
                                    now.saturating_duration_since(since) >= self.config.shrink_delay
                                }) =>
                        {
                            if let Some(i) = st.idle.pop_front() {
                                self.leaving(&mut st, &i.conn, Leaving::Shrunk);
                                closing.push(i.conn);
                                shrunk += 1;
                            }
                        }
                        _ => break,
                    }
                }
                if shrunk > 0 {
                    debug!(target: "momoko", pool = self.id, n = shrunk, "shrank idle connections");
                }
            }
        }
        let leaks = self.overdue(&mut st, now);
        wake.append(&mut st.watchers);
        self.publish(&st);
        drop(st);
        drop(closing);
        wake.wake();
        for (held, for_) in leaks {
            warn!(
                target: "momoko",
                pool = %self.config.name,
                acquired_at = %held.0,
                held_for = ?for_,
                "a {} connection has been held for {for_:?}, longer than leak_threshold \
                 ({:?}); it was taken at {}",
                held.1,
                self.config.leak_threshold.unwrap_or_default(),
                held.0,
            );
        }
        true
    }

    /// Held connections past `leak_threshold` not reported yet: where they were taken, by what,
    /// and for how long they have been held. Each is reported once.
    #[allow(clippy::type_complexity)]
    fn overdue(
        &self,
        st: &mut State,
        now: Instant,
    ) -> Vec<((&'static Location<'static>, &'static str), Duration)> {
        let Some(threshold) = self.config.leak_threshold else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, h) in st.held.iter_mut() {
            let for_ = now.saturating_duration_since(h.since);
            if !h.warned && for_ >= threshold {
                h.warned = true;
                bump(&self.counters.leaks);
                out.push(((h.at, h.what), for_));
            }
        }
        out
    }

    /// Watches a connection a caller holds for leaks (when `leak_threshold` is set): `at` is
    /// where the caller took it, `what` names the guard. Returns the key for
    /// [`unhold`](PoolInner::unhold), or `None` when leaks are not watched (no lock is taken
    /// then).
    ///
    /// Any guard that keeps a pooled connection for its owner (a `getconn` guard, a transaction
    /// guard) calls this when it is created and `unhold` when it is dropped.
    pub(crate) fn hold(&self, at: &'static Location<'static>, what: &'static str) -> Option<usize> {
        self.config.leak_threshold?;
        let since = self.executor.now();
        Some(self.lock().held.insert(Held {
            at,
            what,
            since,
            warned: false,
        }))
    }

    /// The connection registered with [`hold`](PoolInner::hold) under `key` went back.
    pub(crate) fn unhold(&self, key: usize) {
        self.lock().held.try_remove(key);
    }

    /// Books a connection leaving the pool (it closes when its last reference drops, outside
    /// the lock).
    fn leaving(&self, st: &mut State, conn: &Arc<Connection>, why: Leaving) {
        bump(&self.counters.closed);
        let stale = st.drain_at.is_some_and(|at| self.age_key(conn) <= at);
        if stale {
            st.stale = st.stale.saturating_sub(1);
        }
        match why {
            Leaving::Lost => bump(&self.counters.discarded),
            Leaving::Shrunk => bump(&self.counters.shrunk),
            Leaving::Trimmed => bump(&self.counters.trimmed),
            Leaving::Expired if stale => bump(&self.counters.replaced),
            Leaving::Expired => bump(&self.counters.rotated),
            Leaving::Closing => {}
        }
        if !st.covered.is_empty() {
            let addr = Arc::as_ptr(conn) as usize;
            st.covered.retain(|a| *a != addr);
        }
    }

    /// When `conn` opened, in nanoseconds after the epoch.
    fn age_key(&self, conn: &Connection) -> u64 {
        nanos(conn.born().saturating_duration_since(self.epoch))
    }

    /// Whether connections can expire at all (a lifetime is set, or `drain()` was called).
    fn rotates(&self, st: &State) -> bool {
        self.lifetime.is_some() || st.drain_at.is_some()
    }

    /// Whether a connection opened at `born` (see [`age_key`](PoolInner::age_key)) is to be
    /// replaced: it was opened before the latest drain, or it is past its lifetime and jitter.
    fn expired(&self, st: &State, born: u64) -> bool {
        if st.drain_at.is_some_and(|at| born <= at) {
            return true;
        }
        match self.lifetime {
            // Checked without the jitter first: it can only postpone.
            Some(life) => {
                born.saturating_add(life) <= st.clock
                    && born.saturating_add(life).saturating_add(jitter(born, life)) <= st.clock
            }
            None => false,
        }
    }

    /// An expired connection is free (idle, or coming back): whether to close it now. Starts
    /// its replacement when none covers it yet. `uncounted` is 1 when `conn` is counted in
    /// neither `idle`, `busy` nor `checking` (it is being returned), 0 otherwise.
    fn rotate_one(
        self: &Arc<Self>,
        st: &mut State,
        conn: &Arc<Connection>,
        uncounted: usize,
    ) -> bool {
        if st.closed {
            return false;
        }
        if st.open() + uncounted > st.size {
            // A spare is open (a replacement that arrived, or a stretched extra): no new connect.
            return true;
        }
        let addr = Arc::as_ptr(conn) as usize;
        if st.covered.contains(&addr)
            || st.rotating >= ROTATION_IN_FLIGHT
            || st.clock < st.rotation_paused_until
            || st.down.is_some()
        {
            return false;
        }
        // Room for both when the open connections and the replacements fit in `max_size`
        // (growth connects under way are not counted: one that arrives to a full pool closes).
        // The last connection is always replaced first, one over `max_size` for the duration of
        // a connect: closing it first would leave callers with nothing if the replacement fails
        // (a rotated password), and keeping it would never rotate a pool of one (the default
        // `size = max_size = 1`: `drain()` would never finish).
        let room = st.open() + uncounted + st.rotating < st.max_size
            || (st.open() + uncounted <= 1 && st.rotating == 0);
        st.pending += 1;
        st.rotating += 1;
        self.spawn_connect(Reason::Rotate);
        if room {
            // The old connection serves until its replacement is open.
            st.covered.push(addr);
            false
        } else {
            // At `max_size`: the old one closes as its replacement starts.
            true
        }
    }

    /// Replaces the expired connections that are free now. One with pipelined statements
    /// running takes no new ones and closes when they finish (a connection that always carries
    /// some would otherwise never be free).
    fn rotate_idle(self: &Arc<Self>, st: &mut State, closing: &mut Vec<Arc<Connection>>) {
        if !self.rotates(st) {
            return;
        }
        let mut i = 0;
        while i < st.idle.len() {
            let idle = &st.idle[i];
            if self.expired(st, self.age_key(&idle.conn)) {
                let conn = Arc::clone(&idle.conn);
                let close = self.rotate_one(st, &conn, 0);
                drop(conn);
                if close {
                    if let Some(old) = st.idle.remove(i) {
                        self.leaving(st, &old.conn, Leaving::Expired);
                        closing.push(old.conn);
                    }
                    continue;
                }
            }
            i += 1;
        }
    }

    /// A connection is coming back while the pool is above the sizes `resize` set: whether to
    /// close it (above `max_size` always; above `size` only while nobody waits).
    fn trims(&self, st: &mut State) -> bool {
        let open = st.open() + 1;
        if open > st.max_size {
            st.trim = st.trim.saturating_sub(1);
            return true;
        }
        if st.trim > 0 && open > st.size && st.waiters.is_empty() {
            st.trim -= 1;
            return true;
        }
        false
    }

    /// Replaces every connection: those open now and those being opened. Idle ones go at once
    /// (within [`ROTATION_IN_FLIGHT`] replacements at a time), busy ones as they come back.
    pub(crate) fn begin_drain(self: &Arc<Self>) {
        let now = self.executor.now();
        let mut wake = WakeList::default();
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.clock = nanos(now.saturating_duration_since(self.epoch));
        st.drain_at = Some(st.clock);
        st.drain_seq = self.connect_seq.load(Ordering::Relaxed);
        st.stale = st.live();
        // A paused rotation must not hold the drain back, nor cached credentials (a drain often
        // follows a password rotation).
        st.rotation_paused_until = 0;
        if let Some(credentials) = &self.credentials {
            credentials.forget_all();
        }
        info!(target: "momoko", pool = self.id, connections = st.stale, "draining");
        let mut closing = Vec::new();
        self.rotate_idle(&mut st, &mut closing);
        wake.append(&mut st.watchers);
        self.publish(&st);
        drop(st);
        drop(closing);
        wake.wake();
    }

    /// Resolves once nothing from before the latest drain is left and its replacements have
    /// been opened (or the pool closed).
    pub(crate) fn drained_old(self: &Arc<Self>) -> Watch<impl Fn(&State) -> bool> {
        Watch {
            inner: Arc::clone(self),
            done: |st: &State| st.closed || (st.stale == 0 && st.rotating == 0),
        }
    }

    /// Sets new sizes: the pool opens connections up to `size` now and closes those above: idle
    /// ones now, busy ones as they come back (above `max_size` always, above `size` while
    /// nobody waits).
    pub(crate) fn resize(self: &Arc<Self>, size: usize, max_size: usize) -> Result<()> {
        crate::pool::settings::check_sizes(size, max_size)?;
        let mut wake = WakeList::default();
        let mut st = self.lock();
        if st.closed {
            return Err(Error::pool_closed());
        }
        info!(target: "momoko", pool = self.id, from = st.size, to = size, max_size, "resizing");
        st.size = size;
        st.max_size = max_size;
        let mut closing = Vec::new();
        // Idle extras go now, least recently used first.
        while st.open() > size {
            let Some(pos) = st.idle.iter().position(|i| i.shared() == 0) else {
                break;
            };
            if let Some(extra) = st.idle.remove(pos) {
                self.leaving(&mut st, &extra.conn, Leaving::Trimmed);
                closing.push(extra.conn);
            }
        }
        st.trim = st.open().saturating_sub(size);
        let missing = size.saturating_sub(st.live());
        if missing > 0 && st.down.is_none() {
            st.pending += missing;
            for _ in 0..missing {
                self.spawn_connect(Reason::Reconnect);
            }
        }
        // A larger max_size may serve waiters now.
        self.grow_if_needed(&mut st);
        self.metrics.sizes(size, max_size);
        wake.append(&mut st.watchers);
        self.publish(&st);
        drop(st);
        drop(closing);
        wake.wake();
        Ok(())
    }

    /// Sends the connection counts to the metrics recorder (with the `metrics` feature).
    #[inline]
    fn publish(&self, st: &State) {
        self.metrics
            .connections(st.idle.len(), st.busy + st.checking, st.waiters.len());
    }
}

/// Opens one session and runs the `setsession` statements on it; a failing statement fails the
/// connection (it is closed, not used).
pub(crate) async fn open_session(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    setsession: &[String],
) -> Result<Connection> {
    let conn = Connection::connect_with(options, executor.clone()).await?;
    for statement in setsession {
        conn.batch_execute(statement).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!("setsession statement {statement:?} failed: {}", e.message()),
            )
            .with_source(e)
        })?;
    }
    Ok(conn)
}

/// The future of a checkout (exclusive or a pipelined share). Dropping it at any point leaves
/// the pool consistent: a connection already handed to it goes back to the pool.
pub(crate) struct Acquire {
    inner: Arc<PoolInner>,
    want: Want,
    /// Its entry among the waiters, once it waits.
    key: Option<usize>,
}

impl Future for Acquire {
    type Output = Result<Arc<Connection>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Arc<Connection>>> {
        let this = self.get_mut();
        let inner = &this.inner;
        let mut st = inner.lock();
        let Some(key) = this.key else {
            bump(&inner.counters.acquires);
            if let Some(out) = inner.try_now(&mut st, this.want) {
                if out.is_ok() {
                    inner.metrics.waited(Duration::ZERO);
                    inner.publish(&st);
                }
                return Poll::Ready(out);
            }
            if let Some(limit) = inner.config.max_waiting {
                if st.waiters.len() >= limit {
                    bump(&inner.counters.rejected);
                    return Poll::Ready(Err(Error::too_many_waiting(limit)));
                }
            }
            // Nothing free. If the database is known down and no connection can come back
            // soon, fail fast (Momoko's DatabaseNotAvailable), unless the reconnect interval
            // has passed: then try now and wait for that attempt.
            if st.busy == 0 && st.pending == 0 {
                if let Some(down) = &st.down {
                    let now = inner.executor.now();
                    let recent = st.last_attempt.is_some_and(|t| {
                        now.saturating_duration_since(t) < inner.config.reconnect_interval
                    });
                    if recent {
                        return Poll::Ready(Err(Error::not_available(Some(down))));
                    }
                    st.last_attempt = Some(now);
                    st.pending += 1;
                    inner.spawn_connect(Reason::Reconnect);
                }
            }
            bump(&inner.counters.acquire_waits);
            let key = st.entries.insert(Entry {
                waker: Some(cx.waker().clone()),
                want: this.want,
                outcome: None,
                since: inner.executor.now(),
            });
            st.waiters.push_back(key);
            this.key = Some(key);
            // Grow for this waiter, unless the database is down (reconnects handle that).
            inner.grow_if_needed(&mut st);
            inner.publish(&st);
            return Poll::Pending;
        };
        let Some(entry) = st.entries.get_mut(key) else {
            // Unreachable: the entry leaves only here and in `drop`, which both clear `key`.
            this.key = None;
            return Poll::Ready(Err(Error::pool_closed()));
        };
        match entry.outcome.take() {
            Some(out) => {
                let since = st.entries.remove(key).since;
                this.key = None;
                inner.publish(&st);
                drop(st);
                inner.waited(since, out.is_ok());
                Poll::Ready(out)
            }
            None => {
                match &entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => entry.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut wake = WakeList::default();
        let mut st = self.inner.lock();
        let queued = st.waiters.len();
        st.waiters.retain(|w| *w != key);
        let entry = st.entries.try_remove(key);
        if st.waiters.len() != queued {
            // It may have held up the waiters behind it (an exclusive caller lets pipelined
            // statements drain): serve them now.
            self.inner.dispatch(&mut st, &mut wake);
        }
        self.inner.publish(&st);
        drop(st);
        wake.wake();
        if let Some(e) = &entry {
            self.inner.waited(e.since, false);
        }
        if let Some(Entry {
            outcome: Some(Ok(conn)),
            ..
        }) = entry
        {
            // Handed over but never picked up: give it back (to the next waiter or idle).
            match self.want {
                Want::Exclusive => self.inner.release(conn, true),
                Want::Shared(_) => self.inner.release_shared(conn, None),
            }
        }
    }
}

/// Resolves when `done(state)` holds; re-checked whenever busy/pending drop.
pub(crate) struct Watch<F> {
    inner: Arc<PoolInner>,
    done: F,
}

impl<F: Fn(&State) -> bool + Unpin> Future for Watch<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.inner.lock();
        if (self.done)(&st) {
            return Poll::Ready(());
        }
        st.watchers.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The jitter stays within a tenth of the lifetime and spreads connections opened a few
    /// nanoseconds apart over that range.
    #[test]
    fn jitter_is_bounded_and_spread() {
        let life = nanos(Duration::from_secs(1800));
        let draws: Vec<u64> = (0..1000u64).map(|i| jitter(1_000_000 + i, life)).collect();
        assert!(draws.iter().all(|&j| j <= life / 10));
        let tenth = life / 10;
        // Each fifth of the range gets some of the thousand draws.
        for fifth in 0..5 {
            let (lo, hi) = (tenth * fifth / 5, tenth * (fifth + 1) / 5);
            let n = draws.iter().filter(|&&j| j >= lo && j < hi).count();
            assert!(n > 100, "fifth {fifth}: {n} of 1000");
        }
        assert_eq!(jitter(42, 0), 0);
    }
}
