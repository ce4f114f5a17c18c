//! The pool's engine: one mutex-protected state, a FIFO of waiters, and a maintenance task.
//!
//! Accounting: every connection the pool owns is exactly one of *idle* (in `State::idle`), *busy*
//! (checked out, counted in `State::busy`, including connections handed to a waiter that has not
//! picked them up yet) or *pending* (a connect in progress). *Dead* is derived: the slots below
//! `size` that are none of those, which the maintenance task reconnects.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::ConnectOptions;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::executor::SharedExecutor;
use crate::pool::{PoolConfig, PoolCounters, PoolStatus};

/// How many connects the pool runs at once to serve waiters beyond the ones already pending.
/// Growing a few at a time keeps a burst of short queries from opening `max_size` connections
/// that are idle again by the time they are ready (freed connections go to waiters first).
pub(crate) const GROWTH_STEP: usize = 2;

static POOL_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PoolInner {
    pub(crate) id: u64,
    pub(crate) executor: SharedExecutor,
    pub(crate) options: ConnectOptions,
    pub(crate) config: PoolConfig,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    /// Numbers connect attempts in the order they start.
    connect_seq: AtomicU64,
}

/// An idle connection. Pipelined statements share it through clones of the `Arc` while it stays
/// idle; an exclusive checkout takes it only when no clone exists (`Arc::try_unwrap`).
struct Idle {
    conn: Arc<Connection>,
    since: Instant,
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
    pending: usize,
    waiters: VecDeque<u64>,
    entries: HashMap<u64, Entry>,
    next_waiter: u64,
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
}

struct Entry {
    waker: Option<Waker>,
    outcome: Option<Result<Connection>>,
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
    fn live(&self) -> usize {
        self.idle.len() + self.busy + self.pending
    }
}

impl PoolInner {
    pub(crate) fn new(
        executor: SharedExecutor,
        options: ConnectOptions,
        config: PoolConfig,
    ) -> Arc<PoolInner> {
        let inner = Arc::new(PoolInner {
            id: POOL_IDS.fetch_add(1, Ordering::Relaxed),
            executor,
            options,
            config,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            connect_seq: AtomicU64::new(0),
        });
        {
            let mut st = inner.lock();
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
        let mut to_fail: Vec<Waker> = Vec::new();
        let mut st = self.lock();
        st.pending -= 1;
        if reason == Reason::Initial {
            st.initial.0 += 1;
            if result.is_err() {
                st.initial.1 += 1;
            }
        }
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
                    drop(conn);
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
                    self.put_back(&mut st, conn);
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
                if st.busy == 0 && st.pending == 0 && st.idle.is_empty() {
                    to_fail = self.fail_waiters(&mut st, || Error::not_available(Some(&e)));
                }
                // A failure says the database is down only if the attempt started after the
                // latest success (a late-finishing older attempt must not undo newer news) and
                // the pool holds no live connection (one that works proves the database is up;
                // if it is in fact dead, its return leads to another attempt).
                let live_connection = st.busy > 0 || st.idle.iter().any(|i| !i.conn.is_closed());
                if seq > st.last_success_seq && !live_connection {
                    st.down = Some(e);
                }
            }
        }
        to_fail.append(&mut st.watchers);
        self.grow_if_needed(&mut st);
        drop(st);
        for w in to_fail {
            w.wake();
        }
    }

    fn fail_waiters(&self, st: &mut State, err: impl Fn() -> Error) -> Vec<Waker> {
        let mut wakers = Vec::new();
        while let Some(id) = st.waiters.pop_front() {
            if let Some(entry) = st.entries.get_mut(&id) {
                entry.outcome = Some(Err(err()));
                if let Some(w) = entry.waker.take() {
                    wakers.push(w);
                }
            }
        }
        wakers
    }

    /// Gives a usable connection to the longest waiter, or makes it idle.
    fn put_back(&self, st: &mut State, conn: Connection) {
        let Some(conn) = self.put_back_to_waiter(st, conn) else {
            return;
        };
        let since = self.executor.now();
        st.idle.push_back(Idle {
            conn: Arc::new(conn),
            since,
        });
    }

    /// Hands `conn` to the longest waiter (counting it busy); gives it back when nobody waits.
    fn put_back_to_waiter(&self, st: &mut State, conn: Connection) -> Option<Connection> {
        while let Some(id) = st.waiters.pop_front() {
            if let Some(entry) = st.entries.get_mut(&id) {
                st.busy += 1;
                entry.outcome = Some(Ok(conn));
                if let Some(w) = entry.waker.take() {
                    w.wake();
                }
                return None;
            }
        }
        Some(conn)
    }

    /// Opens connections for waiters that no pending connect will serve, a few at a time, up to
    /// `max_size`.
    fn grow_if_needed(self: &Arc<Self>, st: &mut State) {
        if st.closed || st.down.is_some() {
            return;
        }
        let mut started = 0;
        while st.waiters.len() > st.pending
            && st.live() < self.config.max_size
            && started < GROWTH_STEP
        {
            st.pending += 1;
            started += 1;
            self.spawn_connect(Reason::Grow);
        }
    }

    /// Checks a connection out: the most recently used idle one, or a place in the FIFO queue.
    pub(crate) fn try_take(self: &Arc<Self>, st: &mut State) -> Option<Result<Connection>> {
        if st.closed {
            return Some(Err(Error::pool_closed()));
        }
        // Most recently used first, skipping connections that pipelined statements still use.
        while let Some(pos) = st.idle.iter().rposition(|i| i.shared() == 0) {
            let Some(idle) = st.idle.remove(pos) else {
                break;
            };
            let conn = match Arc::try_unwrap(idle.conn) {
                Ok(conn) => conn,
                // Unreachable: no clone exists and clones are only made under this lock.
                Err(conn) => {
                    st.idle.insert(
                        pos,
                        Idle {
                            conn,
                            since: idle.since,
                        },
                    );
                    break;
                }
            };
            if conn.is_closed() {
                bump(&self.counters.discarded);
                bump(&self.counters.closed);
                continue;
            }
            st.busy += 1;
            return Some(Ok(conn));
        }
        None
    }

    /// A connection to run one pipelined statement on without checking it out: the idle one
    /// with the fewest statements in flight, below `depth`. `None` when none has room.
    pub(crate) fn share(&self, depth: usize) -> Option<Arc<Connection>> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let best = st
            .idle
            .iter()
            .filter(|i| i.shared() < depth && !i.conn.is_closed())
            .min_by_key(|i| i.shared())?;
        let conn = Arc::clone(&best.conn);
        st.shared_in_flight += 1;
        Some(conn)
    }

    /// Turns a connection checked out for a pipelinable statement into a shared one: it becomes
    /// free again (most recently used) so other statements can pipeline onto it, and the caller
    /// keeps one share of it.
    pub(crate) fn convert_to_shared(&self, conn: Connection) -> Arc<Connection> {
        let mut st = self.lock();
        st.busy -= 1;
        st.shared_in_flight += 1;
        let conn = Arc::new(conn);
        if st.closed {
            // Not put back: it closes when the statement's share ends.
            bump(&self.counters.closed);
        } else {
            let since = self.executor.now();
            st.idle.push_back(Idle {
                conn: Arc::clone(&conn),
                since,
            });
        }
        conn
    }

    /// Ends a pipelined statement. A connection left unused goes to the longest waiter.
    pub(crate) fn release_shared(self: &Arc<Self>, conn: Arc<Connection>) {
        let mut st = self.lock();
        st.shared_in_flight -= 1;
        drop(conn);
        if !st.waiters.is_empty() {
            if let Some(Ok(conn)) = self.try_take(&mut st) {
                st.busy -= 1;
                if let Some(conn) = self.put_back_to_waiter(&mut st, conn) {
                    self.put_back(&mut st, conn);
                }
            }
        }
        let watchers: Vec<Waker> = st.watchers.drain(..).collect();
        drop(st);
        for w in watchers {
            w.wake();
        }
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

    pub(crate) fn acquire(self: &Arc<Self>) -> Acquire {
        Acquire {
            inner: Arc::clone(self),
            id: None,
        }
    }

    /// Returns a checked-out connection. `reusable` is false when the connection may be in an
    /// unknown state (abandoned mid-query, timed out): it is then closed.
    pub(crate) fn release(self: &Arc<Self>, conn: Connection, reusable: bool) {
        let mut st = self.lock();
        st.busy -= 1;
        let keep = reusable && !st.closed && !conn.is_closed();
        if keep {
            self.put_back(&mut st, conn);
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
            drop(conn);
            self.replace_if_needed(&mut st);
        }
        let watchers: Vec<Waker> = st.watchers.drain(..).collect();
        drop(st);
        for w in watchers {
            w.wake();
        }
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
            self.spawn_connect(if st.live() <= self.config.size {
                Reason::Reconnect
            } else {
                Reason::Grow
            });
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
        }
    }

    /// Closes the pool: no new work, waiters get `PoolClosed`, idle connections close now, busy
    /// ones when they come back.
    pub(crate) fn begin_close(&self) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.closed = true;
        let mut wakers = self.fail_waiters(&mut st, Error::pool_closed);
        let idle: Vec<Idle> = st.idle.drain(..).collect();
        for _ in &idle {
            bump(&self.counters.closed);
        }
        wakers.append(&mut st.watchers);
        drop(st);
        drop(idle);
        for w in wakers {
            w.wake();
        }
        info!(target: "momoko", pool = self.id, "pool closing");
        true
    }

    /// Resolves once nothing is busy or pending (after `begin_close`).
    pub(crate) fn drained(self: &Arc<Self>) -> Watch<impl Fn(&State) -> bool> {
        Watch {
            inner: Arc::clone(self),
            done: |st: &State| st.busy == 0 && st.pending == 0 && st.shared_in_flight == 0,
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
        self.lock()
            .down
            .as_ref()
            .map(|e| Error::new(e.kind(), e.to_string()))
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
                                && now.saturating_duration_since(i.since)
                                    >= self.config.shrink_delay =>
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
async fn open_session(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    setsession: &[String],
) -> Result<Connection> {
    let conn = Connection::connect_with(options, executor.clone()).await?;
    for statement in setsession {
        conn.batch_execute(statement).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!("setsession statement {statement:?} failed: {e}"),
            )
            .with_source(e)
        })?;
    }
    Ok(conn)
}

/// The future of a checkout. Dropping it at any point leaves the pool consistent: a connection
/// already handed to it goes back to the pool.
pub(crate) struct Acquire {
    inner: Arc<PoolInner>,
    id: Option<u64>,
}

impl Future for Acquire {
    type Output = Result<Connection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Connection>> {
        let this = self.get_mut();
        let inner = &this.inner;
        let mut st = inner.lock();
        match this.id {
            None => {
                bump(&inner.counters.acquires);
                if let Some(out) = inner.try_take(&mut st) {
                    return Poll::Ready(out);
                }
                // Nothing idle. If the database is known down and no connection can come back
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
                let id = st.next_waiter;
                st.next_waiter += 1;
                st.entries.insert(
                    id,
                    Entry {
                        waker: Some(cx.waker().clone()),
                        outcome: None,
                    },
                );
                st.waiters.push_back(id);
                this.id = Some(id);
                // Grow for this waiter, unless the database is down (reconnects handle that).
                let down = st.down.is_some();
                if !down {
                    inner.grow_if_needed(&mut st);
                }
                Poll::Pending
            }
            Some(id) => {
                let ready = st.entries.get_mut(&id).and_then(|e| e.outcome.take());
                match ready {
                    Some(out) => {
                        st.entries.remove(&id);
                        this.id = None;
                        Poll::Ready(out)
                    }
                    None => {
                        if let Some(e) = st.entries.get_mut(&id) {
                            match &e.waker {
                                Some(w) if w.will_wake(cx.waker()) => {}
                                _ => e.waker = Some(cx.waker().clone()),
                            }
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut st = self.inner.lock();
        st.waiters.retain(|w| *w != id);
        let entry = st.entries.remove(&id);
        drop(st);
        if let Some(Entry {
            outcome: Some(Ok(conn)),
            ..
        }) = entry
        {
            // Handed over but never picked up: give it to the next waiter or back to idle.
            self.inner.release(conn, true);
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
