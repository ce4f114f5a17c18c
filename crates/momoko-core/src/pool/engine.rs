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

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, info, warn};

use crate::config::{ConnectOptions, TargetSessionAttrs};
use crate::connection::{Connection, Liveness};
use crate::error::{Error, Result};
use crate::executor::{timeout, SharedExecutor};
use crate::pool::pipeline::{Candidate, Lane, Learned, Pipelining};
use crate::pool::{PoolConfig, PoolCounters, PoolStatus};
use tokio_postgres::error::SqlState;

/// How many connects the whole pool runs at once to grow for waiters. More start only as these
/// finish and while waiters remain that no pending connect will serve.
///
/// Why 2: in a spike of 50 callers with 2 ms statements and 150 ms connects, one connection
/// clears the burst in about 120 ms, before any new connection could be ready; every connect
/// started for it is wasted (a pool that dials one per waiter ends with 50). A long-statement
/// burst still stretches fully: each finished connect serves a waiter and starts the next.
pub(crate) const GROWTH_IN_FLIGHT: usize = 2;

static POOL_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PoolInner {
    pub(crate) id: u64,
    pub(crate) executor: SharedExecutor,
    pub(crate) options: ConnectOptions,
    pub(crate) config: PoolConfig,
    state: Mutex<State>,
    counters: Counters,
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
}

impl State {
    /// Connections the pool has or is opening: what `max_size` bounds.
    fn live(&self) -> usize {
        self.idle.len() + self.busy + self.checking + self.pending
    }
}

impl PoolInner {
    pub(crate) fn new(
        executor: SharedExecutor,
        options: ConnectOptions,
        config: PoolConfig,
    ) -> Arc<PoolInner> {
        let learned = Learned::new(config.adaptive_pipelining, config.pipeline_stall);
        let inner = Arc::new(PoolInner {
            id: POOL_IDS.fetch_add(1, Ordering::Relaxed),
            executor,
            options,
            config,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            learned,
            connect_seq: AtomicU64::new(0),
        });
        {
            let mut st = inner.lock();
            if inner.config.adaptive_pipelining {
                st.pipelining = Pipelining::adaptive();
            }
            st.pending = inner.config.size;
            st.last_attempt = Some(inner.executor.now());
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
        let seq = self.connect_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.executor.spawn(Box::pin(async move {
            let result = open_session(&options, &executor, &setsession).await;
            match weak.upgrade() {
                Some(inner) => inner.connect_finished(result, reason, seq),
                None => drop(result),
            }
        }));
    }

    /// Books the outcome of connect attempt number `seq`.
    fn connect_finished(self: &Arc<Self>, result: Result<Connection>, reason: Reason, seq: u64) {
        let mut wake = WakeList::default();
        let mut st = self.lock();
        st.pending -= 1;
        if reason == Reason::Grow {
            st.growing -= 1;
        }
        if reason == Reason::Initial {
            st.initial.0 += 1;
            if result.is_err() {
                st.initial.1 += 1;
            }
        }
        let mut unused = None;
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
                    let missing = self.config.size.saturating_sub(st.live() + 1);
                    if !st.closed && missing > 0 {
                        st.pending += missing;
                        for _ in 0..missing {
                            self.spawn_connect(Reason::Reconnect);
                        }
                    }
                }
                if st.closed {
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
        drop(st);
        drop(unused);
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
                        bump(&self.counters.discarded);
                        bump(&self.counters.closed);
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
        let free_without_statements = st.idle.iter().any(|i| i.shared() == 0);
        if st.pipelining.holds_back(free_without_statements) {
            return;
        }
        while st.waiters.len() > st.pending
            && st.live() < self.config.max_size
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
                    st.idle.push_back(idle);
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
            st.idle.remove(pos);
            bump(&self.counters.closed);
            bump(&self.counters.discarded);
            self.replace_if_needed(&mut st);
            alone
        } else {
            false
        }
    }

    /// Checks a connection out (exclusive, or a pipelined share), waiting at most
    /// `acquire_timeout`.
    pub(crate) async fn checkout(self: &Arc<Self>, want: Want) -> Result<Arc<Connection>> {
        let acquire = self.acquire(want);
        match self.config.acquire_timeout {
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
        }
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
        if keep {
            self.put_back(&mut st, conn, &mut wake);
        } else {
            bump(&self.counters.closed);
            if !reusable {
                bump(&self.counters.discarded);
            }
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
        if !st.waiters.is_empty()
            && st.pending < st.waiters.len()
            && st.live() < self.config.max_size
        {
            st.pending += 1;
            if st.live() <= self.config.size {
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
            self.config.size.saturating_sub(live)
        };
        PoolStatus {
            free: st.idle.len(),
            busy: st.busy,
            checking: st.checking,
            pending: st.pending,
            dead,
            waiting: st.waiters.len(),
            total: live + dead,
            size: self.config.size,
            max_size: self.config.max_size,
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
        for _ in &closed {
            bump(&self.counters.closed);
            bump(&self.counters.discarded);
        }
        warn!(target: "momoko", pool = self.id, server = %target, closed = closed.len(), "the server refused a write: it is read-only now; leaving it");
        self.replace_if_needed(&mut st);
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
        for _ in &idle {
            bump(&self.counters.closed);
        }
        wake.append(&mut st.watchers);
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

    fn spawn_maintenance(self: &Arc<Self>) {
        let weak: Weak<PoolInner> = Arc::downgrade(self);
        let executor = self.executor.clone();
        let mut tick = self.config.reconnect_interval;
        if self.config.auto_shrink {
            tick = tick.min(self.config.shrink_period);
        }
        let tick = tick.max(Duration::from_millis(10));
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

    /// One maintenance pass: drop dead idle connections, reconnect up to `size`, shrink idle
    /// extras. Returns false once the pool is closed.
    fn maintain(self: &Arc<Self>) -> bool {
        let now = self.executor.now();
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        // Health sweep: closed idle connections leave (they become dead slots).
        let before = st.idle.len();
        st.idle.retain(|i| !i.conn.is_closed());
        let removed = before - st.idle.len();
        for _ in 0..removed {
            bump(&self.counters.closed);
            bump(&self.counters.discarded);
        }
        // Reconnect dead slots, at most once per reconnect_interval. While the database is down,
        // one probe per interval is enough; once it answers, the rest follow at once.
        let missing = self.config.size.saturating_sub(st.live());
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
        // Shrink idle extras above size, least recently used first.
        if self.config.auto_shrink {
            let shrink_due = st
                .last_shrink
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.shrink_period);
            if shrink_due {
                st.last_shrink = Some(now);
                let mut shrunk = Vec::new();
                while st.live() > self.config.size {
                    match st.idle.front() {
                        Some(i)
                            if i.shared() == 0
                                && i.since.is_some_and(|since| {
                                    now.saturating_duration_since(since) >= self.config.shrink_delay
                                }) =>
                        {
                            if let Some(i) = st.idle.pop_front() {
                                shrunk.push(i);
                            }
                        }
                        _ => break,
                    }
                }
                for _ in &shrunk {
                    bump(&self.counters.shrunk);
                    bump(&self.counters.closed);
                }
                if !shrunk.is_empty() {
                    debug!(target: "momoko", pool = self.id, n = shrunk.len(), "shrank idle connections");
                }
                drop(st);
                drop(shrunk);
                return true;
            }
        }
        true
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
                return Poll::Ready(out);
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
            });
            st.waiters.push_back(key);
            this.key = Some(key);
            // Grow for this waiter, unless the database is down (reconnects handle that).
            inner.grow_if_needed(&mut st);
            return Poll::Pending;
        };
        let Some(entry) = st.entries.get_mut(key) else {
            // Unreachable: the entry leaves only here and in `drop`, which both clear `key`.
            this.key = None;
            return Poll::Ready(Err(Error::pool_closed()));
        };
        match entry.outcome.take() {
            Some(out) => {
                st.entries.remove(key);
                this.key = None;
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
        drop(st);
        wake.wake();
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
