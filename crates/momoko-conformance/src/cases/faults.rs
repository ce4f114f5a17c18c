//! Real faults: server stop/start, terminated backends, a proxy that severs, refuses or black-holes.
//!
//! Every case drives a real PostgreSQL server (a private cluster when the server itself is
//! stopped) or a real TCP proxy, and every wait is bounded: a case that would hang fails with a
//! message instead. Timing figures (error kinds, how long calls took, how the measured timeouts
//! compare with the configured ones) are printed with `eprintln!` so they can be quoted; only
//! lower bounds on timeouts are asserted, never upper bounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{self, BoxFuture, Either};
use momoko_core::{Error, Executor, Param, Pool, PoolBuilder, Query, RetryPolicy};
use momoko_testkit::{ClusterOptions, FaultProxy, StopMode};

use crate::support::{assert_settled, drop_off_thread, eventually, private_cluster, within};
use crate::Ctx;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Time since `t0` on the executor's clock.
fn since(executor: &Arc<dyn Executor>, t0: Instant) -> Duration {
    executor.now().saturating_duration_since(t0)
}

/// A short name for an error's kind, with the SQLSTATE when the server sent one.
pub(crate) fn label(e: &Error) -> String {
    match e.code() {
        Some(code) => format!("{:?} {}", e.kind(), code.code()),
        None => format!("{:?}", e.kind()),
    }
}

/// The errors a caller may see while the server goes away and comes back: the pool has no
/// connection (`DatabaseNotAvailable`), the connection died under the statement (closed, SQLSTATE
/// class 08 or 57P01–57P03), or a wait ran into `acquire_timeout`.
fn is_fault_error(e: &Error) -> bool {
    e.is_database_not_available() || e.is_connection_lost() || e.is_timeout()
}

fn tally(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn ratio(measured: Duration, configured: Duration) -> f64 {
    measured.as_secs_f64() / configured.as_secs_f64()
}

/// Spawns `fut` on the executor under test and returns a receiver for its output. The task never
/// panics on purpose: it reports, and the case asserts on the report.
fn spawn_result<T: Send + 'static>(
    executor: &Arc<dyn Executor>,
    fut: impl Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    executor.spawn(Box::pin(async move {
        let _ = tx.send(fut.await);
    }));
    rx
}

/// Waits for every receiver, under one liveness bound.
async fn join_reports<T>(
    ctx: &Ctx,
    limit: Duration,
    what: &str,
    rxs: Vec<oneshot::Receiver<T>>,
) -> Vec<T> {
    within(ctx, limit, what, future::join_all(rxs))
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|_| panic!("a task of {what} panicked")))
        .collect()
}

/// Waits (bounded) until `counter` has grown by `by` past `from`; returns its new value.
async fn progress(ctx: &Ctx, counter: &AtomicU64, from: u64, by: u64, what: &str) -> u64 {
    eventually(ctx, what, || counter.load(Ordering::SeqCst) >= from + by).await;
    counter.load(Ordering::SeqCst)
}

/// The socket address of the case's database server (for a proxy in front of it).
fn server_addr(ctx: &Ctx) -> SocketAddr {
    let cluster = ctx.db.cluster();
    (cluster.host(), cluster.port())
        .to_socket_addrs()
        .expect("resolve the test server")
        .next()
        .expect("the test server has an address")
}

fn pool_on(dsn: &str, ctx: &Ctx) -> PoolBuilder {
    // Through a pooler when the suite runs through one (harmless on a direct server).
    Pool::builder(dsn, ctx.executor.clone()).transaction_pooler(ctx.pooler.is_some())
}

/// Backend pids of `n` distinct pool connections (held at once).
async fn backend_pids(pool: &Pool, n: usize) -> HashSet<i32> {
    let held = future::try_join_all((0..n).map(|_| pool.getconn()))
        .await
        .expect("check out every connection");
    let mut pids = HashSet::new();
    for conn in &held {
        let c = conn
            .execute("SELECT pg_backend_pid()", &[])
            .await
            .expect("pg_backend_pid()");
        pids.insert(c.scalar::<i32>().expect("a pid"));
    }
    pids
}

/// What one looping query task saw.
#[derive(Debug, Default)]
struct LoopReport {
    ok: u64,
    errors: BTreeMap<String, u64>,
    unexpected: Vec<String>,
    wrong: Vec<String>,
    longest: Duration,
    last: Option<Result<(), String>>,
}

/// `n` tasks running [`query_loop`] on a pool, and the counters they share.
struct QueryLoad {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    tasks: Vec<oneshot::Receiver<LoopReport>>,
}

impl QueryLoad {
    fn start(ctx: &Ctx, pool: &Pool, n: i32) -> QueryLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|t| {
                spawn_result(
                    &ctx.executor,
                    query_loop(
                        pool.clone(),
                        ctx.executor.clone(),
                        t,
                        Arc::clone(&stop),
                        Arc::clone(&successes),
                        Arc::clone(&failures),
                    ),
                )
            })
            .collect();
        QueryLoad {
            stop,
            successes,
            failures,
            tasks,
        }
    }
}

/// Runs `SELECT $1::int4` with values unique to this task until `stop`, checking every result,
/// then one last query whose result must be right.
async fn query_loop(
    pool: Pool,
    executor: Arc<dyn Executor>,
    task: i32,
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> LoopReport {
    let mut r = LoopReport::default();
    let mut i: i32 = 0;
    let mut next = || {
        i = (i + 1) % 100_000;
        task * 100_000 + i
    };
    while !stop.load(Ordering::SeqCst) {
        let value = next();
        let t0 = executor.now();
        let result = pool.execute("SELECT $1::int4", &[&value]).await;
        r.longest = r.longest.max(since(&executor, t0));
        match result {
            Ok(c) => match c.scalar::<i32>() {
                Ok(v) if v == value => {
                    r.ok += 1;
                    successes.fetch_add(1, Ordering::SeqCst);
                }
                other => r.wrong.push(format!("sent {value}, read {other:?}")),
            },
            Err(e) => {
                *r.errors.entry(label(&e)).or_default() += 1;
                failures.fetch_add(1, Ordering::SeqCst);
                if !is_fault_error(&e) {
                    r.unexpected.push(format!("{e} ({e:?})"));
                }
                // Pace the retries of this task while the server is away.
                executor.sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let value = next();
    r.last = Some(match pool.execute("SELECT $1::int4", &[&value]).await {
        Ok(c) => match c.scalar::<i32>() {
            Ok(v) if v == value => Ok(()),
            other => Err(format!("sent {value}, read {other:?}")),
        },
        Err(e) => Err(format!("{e} ({e:?})")),
    });
    r
}

/// Merges and checks the reports of looping tasks; returns (successes, errors by kind, longest).
fn check_loop_reports(
    what: &str,
    reports: &[LoopReport],
) -> (u64, BTreeMap<String, u64>, Duration) {
    let mut errors = BTreeMap::new();
    let mut ok = 0;
    let mut longest = Duration::ZERO;
    for (task, r) in reports.iter().enumerate() {
        assert!(
            r.unexpected.is_empty(),
            "{what}: task {task} saw errors of unexpected kinds: {:?}",
            r.unexpected
        );
        assert!(
            r.wrong.is_empty(),
            "{what}: task {task} read a wrong result: {:?}",
            r.wrong
        );
        assert_eq!(
            r.last,
            Some(Ok(())),
            "{what}: task {task}'s final query after the server is back must succeed"
        );
        assert!(r.ok > 0, "{what}: task {task} never succeeded");
        ok += r.ok;
        tally(&mut errors, &r.errors);
        longest = longest.max(r.longest);
    }
    (ok, errors, longest)
}

// ---------------------------------------------------------------------------------------------
// Server stop and start
// ---------------------------------------------------------------------------------------------

async fn restart_while_idle(ctx: &Ctx, mode: StopMode) {
    let interval = Duration::from_millis(100);
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = pool_on(&cluster.dsn("postgres"), ctx)
        .size(3)
        .reconnect_interval(interval)
        .connect()
        .await
        .expect("connect the pool");
    let before = backend_pids(&pool, 3).await;
    assert_eq!(before.len(), 3, "three connections");
    assert_settled(ctx, &pool).await;

    cluster.stop(mode).await.expect("stop the server");

    // The first call fails (it does not hang) with an error that says what happened.
    let t0 = ctx.executor.now();
    let err = within(
        ctx,
        Duration::from_secs(10),
        "a query against the stopped server",
        pool.execute("SELECT 1", &[]),
    )
    .await
    .expect_err("the server is down");
    let first = since(&ctx.executor, t0);
    assert!(
        err.is_database_not_available() || err.is_connection_lost(),
        "DatabaseNotAvailable or a lost connection, got {err:?}"
    );
    if err.is_database_not_available() {
        assert!(
            std::error::Error::source(&err).is_some(),
            "DatabaseNotAvailable carries the connect error as its cause: {err:?}"
        );
    }
    eventually(ctx, "the pool knows the database is down", || {
        pool.status().database_down
    })
    .await;

    // Now calls fail with DatabaseNotAvailable, at once within the reconnect interval.
    let t1 = ctx.executor.now();
    let err2 = within(
        ctx,
        Duration::from_secs(10),
        "a second query against the stopped server",
        pool.execute("SELECT 1", &[]),
    )
    .await
    .expect_err("the server is still down");
    let second = since(&ctx.executor, t1);
    assert!(err2.is_database_not_available(), "{err2:?}");

    cluster.start().await.expect("start the server again");
    let t2 = ctx.executor.now();
    // No user call: the maintenance task alone reopens every connection.
    eventually(ctx, "the pool healed to size without user calls", || {
        let s = pool.status();
        s.free == 3 && s.dead == 0 && !s.database_down
    })
    .await;
    let healed = since(&ctx.executor, t2);
    let after = backend_pids(&pool, 3).await;
    assert_eq!(after.len(), 3);
    assert!(
        after.is_disjoint(&before),
        "every connection was reopened: {before:?} vs {after:?}"
    );
    let c = pool.counters();
    assert!(c.reconnects >= 3, "{c:?}");
    for i in 0..5i32 {
        let v: i32 = pool
            .execute("SELECT $1::int4", &[&i])
            .await
            .expect("queries work after the restart")
            .scalar()
            .expect("an int");
        assert_eq!(v, i);
    }
    assert_settled(ctx, &pool).await;
    eprintln!(
        "restart_while_idle ({mode:?}): first call {} after {first:?}; then {} after {second:?}; \
         healed {healed:?} after start; counters {c:?}",
        label(&err),
        label(&err2),
    );
    pool.close().await;
    drop_off_thread(cluster).await;
}

/// After a fast shutdown (`pg_ctl stop -m fast`) of an idle pool's server, a call fails at once
/// with `DatabaseNotAvailable` or a lost connection (never hangs); once the server is back the
/// pool reopens all its connections by itself, without any user call.
pub async fn restart_fast_while_idle_heals(ctx: &Ctx) {
    restart_while_idle(ctx, StopMode::Fast).await;
}

/// The same after an immediate (crash-like) shutdown: calls fail cleanly and the pool heals by
/// itself once the server has recovered.
pub async fn restart_immediate_while_idle_heals(ctx: &Ctx) {
    restart_while_idle(ctx, StopMode::Immediate).await;
}

/// 64 tasks query a `size=4, max_size=8` pool while the server is stopped and started twice:
/// every call resolves, with the right value or an error of an expected kind
/// (`DatabaseNotAvailable`, a lost connection, `Timeout`), every task succeeds once the server
/// is back, and the pool's books balance.
pub async fn restart_under_load(ctx: &Ctx) {
    let acquire_timeout = Duration::from_secs(2);
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = pool_on(&cluster.dsn("postgres"), ctx)
        .size(4)
        .max_size(8)
        .reconnect_interval(Duration::from_millis(100))
        .acquire_timeout(acquire_timeout)
        .connect()
        .await
        .expect("connect the pool");
    let QueryLoad {
        stop,
        successes,
        failures,
        tasks,
    } = QueryLoad::start(ctx, &pool, 64);

    let mut seen = progress(ctx, &successes, 0, 200, "the tasks make progress").await;
    let mut outages = Vec::new();
    for round in 0..2 {
        let failed = failures.load(Ordering::SeqCst);
        cluster.stop(StopMode::Fast).await.expect("stop the server");
        // Let the tasks run into the outage (every task sees it at least once).
        progress(ctx, &failures, failed, 64, "the tasks notice the outage").await;
        let t0 = ctx.executor.now();
        cluster.start().await.expect("start the server");
        seen = progress(
            ctx,
            &successes,
            seen,
            200,
            &format!("the tasks succeed again after restart {round}"),
        )
        .await;
        outages.push(since(&ctx.executor, t0));
    }
    stop.store(true, Ordering::SeqCst);
    let reports = join_reports(ctx, Duration::from_secs(60), "restart_under_load", tasks).await;
    let (ok, errors, longest) = check_loop_reports("restart_under_load", &reports);
    assert_settled(ctx, &pool).await;
    let s = pool.status();
    assert!(s.total <= 8 && s.free >= 4, "{s:?}");
    let errs: u64 = errors.values().sum();
    eprintln!(
        "restart_under_load: 2 restarts survived; {} requests, {ok} ok, {errs} errors by kind \
         {errors:?}; longest call {longest:?} ({:.2}x acquire_timeout); back to success after \
         start in {outages:?}; counters {:?}",
        ok + errs + 64,
        ratio(longest, acquire_timeout),
        pool.counters()
    );
    pool.close().await;
    drop_off_thread(cluster).await;
}

/// `pg_terminate_backend` of every pool backend, three times, while 16 tasks query: no call
/// hangs, errors are only lost connections or timeouts, results are never mixed up, and the
/// pool heals to its size.
pub async fn terminate_every_backend_under_load(ctx: &Ctx) {
    let pool = pool_on(&ctx.dsn(), ctx)
        .size(4)
        .reconnect_interval(Duration::from_millis(50))
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect the pool");
    let killer = ctx.connect().await;
    let QueryLoad {
        stop,
        successes,
        tasks,
        ..
    } = QueryLoad::start(ctx, &pool, 16);
    let mut seen = 0;
    let mut killed = Vec::new();
    for round in 0..3 {
        seen = progress(
            ctx,
            &successes,
            seen,
            100,
            &format!("progress before termination {round}"),
        )
        .await;
        // The pool may be between connections right after the previous round: kill again
        // until some backend existed to be killed (bounded).
        let mut n: i64 = 0;
        for _ in 0..500 {
            n = killer
                .execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND backend_type = 'client backend'",
                    &[],
                )
                .await
                .expect("terminate the pool's backends")
                .scalar()
                .expect("a count");
            if n >= 1 {
                break;
            }
            ctx.sleep(Duration::from_millis(10)).await;
        }
        assert!(n >= 1, "round {round}: some pool backend was terminated");
        killed.push(n);
    }
    progress(
        ctx,
        &successes,
        seen,
        100,
        "progress after the last termination",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let reports = join_reports(
        ctx,
        Duration::from_secs(30),
        "terminate_every_backend_under_load",
        tasks,
    )
    .await;
    let (ok, errors, longest) = check_loop_reports("terminate_every_backend_under_load", &reports);
    assert!(
        !errors.keys().any(|k| k.starts_with("DatabaseNotAvailable")),
        "the server stayed up: no DatabaseNotAvailable expected, got {errors:?}"
    );
    eventually(ctx, "the pool healed to its size", || {
        let s = pool.status();
        s.free == 4 && s.dead == 0 && !s.database_down
    })
    .await;
    assert_settled(ctx, &pool).await;
    let c = pool.counters();
    assert!(c.connections_opened >= 4 + 3, "{c:?}");
    eprintln!(
        "terminate_every_backend_under_load: terminated {killed:?} backends; {ok} ok, errors by \
         kind {errors:?}; longest call {longest:?}; counters {c:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Network faults through the proxy
// ---------------------------------------------------------------------------------------------

/// When every connection is severed by the network, the next statements still succeed: under
/// `RetryPolicy::Safe` a statement that could not have run (not yet prepared on the dead
/// connection) is retried on a live one, under `RetryPolicy::Always` any statement is; the pool
/// reopens its connections by itself and closes its sockets on `close()`.
pub async fn proxy_sever_recovers(ctx: &Ctx) {
    let proxy = FaultProxy::start(server_addr(ctx)).expect("start the proxy");
    let dsn = proxy.dsn_for(&ctx.db);
    let safe = pool_on(&dsn, ctx)
        .size(3)
        .reconnect_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect through the proxy");
    let always = pool_on(&dsn, ctx)
        .size(2)
        .reconnect_interval(Duration::from_millis(100))
        .retry(RetryPolicy::Always)
        .connect()
        .await
        .expect("connect through the proxy");
    assert_eq!(backend_pids(&safe, 3).await.len(), 3);
    assert_eq!(backend_pids(&always, 2).await.len(), 2);
    // Cache a statement on every `always` connection.
    let held = future::try_join_all((0..2).map(|_| always.getconn()))
        .await
        .expect("hold both");
    for conn in &held {
        conn.execute("SELECT $1::int4 AS cached", &[&0i32])
            .await
            .expect("prepare the cached statement");
    }
    drop(held);
    assert_settled(ctx, &always).await;
    assert_eq!(proxy.open_connections(), 5);

    proxy.sever_all();
    let t0 = ctx.executor.now();
    for i in 0..6i32 {
        let sql = format!("SELECT {i}::int4 AS after_sever_{i}");
        let v: i32 = within(
            ctx,
            Duration::from_secs(10),
            "a query after the sever",
            safe.execute(&sql, &[]),
        )
        .await
        .unwrap_or_else(|e| panic!("{sql} after the sever (Safe retry): {e:?}"))
        .scalar()
        .expect("an int");
        assert_eq!(v, i);
    }
    for i in 0..4i32 {
        let v: i32 = within(
            ctx,
            Duration::from_secs(10),
            "a cached query after the sever",
            always.execute("SELECT $1::int4 AS cached", &[&i]),
        )
        .await
        .unwrap_or_else(|e| panic!("cached statement after the sever (Always retry): {e:?}"))
        .scalar()
        .expect("an int");
        assert_eq!(v, i);
    }
    let recovered = since(&ctx.executor, t0);
    let (cs, ca) = (safe.counters(), always.counters());
    assert!(
        cs.retries + cs.discarded >= 1,
        "the severed connections were noticed: {cs:?}"
    );
    assert!(ca.retries + ca.discarded >= 1, "{ca:?}");
    eventually(ctx, "both pools are back at size", || {
        let (a, b) = (safe.status(), always.status());
        a.free == 3 && a.dead == 0 && b.free == 2 && b.dead == 0
    })
    .await;
    assert_settled(ctx, &safe).await;
    assert_settled(ctx, &always).await;
    eventually(
        ctx,
        "the proxy carries exactly the pools' connections",
        || proxy.open_connections() == 5,
    )
    .await;
    safe.close().await;
    always.close().await;
    eventually(ctx, "closed pools leave no socket open", || {
        proxy.open_connections() == 0
    })
    .await;
    eprintln!(
        "proxy_sever_recovers: 10 queries after the sever in {recovered:?}; Safe {cs:?}; Always \
         {ca:?}"
    );
    drop_off_thread(proxy).await;
}

/// A pool built while the server refuses connections starts dead (`dead == size`,
/// `database_down`), fails calls fast with `DatabaseNotAvailable`, and fills itself to exactly
/// `size` once connections are accepted again, without user calls.
pub async fn proxy_refuse_then_allow_fills_pool(ctx: &Ctx) {
    let proxy = FaultProxy::start(server_addr(ctx)).expect("start the proxy");
    proxy.set_refuse(true);
    let pool = pool_on(&proxy.dsn_for(&ctx.db), ctx)
        .size(3)
        .reconnect_interval(Duration::from_millis(100))
        .raise_connect_errors(false)
        .build()
        .expect("build the pool");
    within(ctx, Duration::from_secs(10), "connect()", pool.connect())
        .await
        .expect("without raise_connect_errors, connect() succeeds");
    let s = pool.status();
    assert_eq!(s.free + s.busy, 0, "{s:?}");
    assert_eq!(s.dead + s.pending, 3, "{s:?}");
    assert!(s.database_down, "{s:?}");
    eventually(ctx, "all three slots are dead", || {
        let s = pool.status();
        s.dead == 3 && s.total == 3 && s.database_down
    })
    .await;
    let mut elapsed = Vec::new();
    for _ in 0..5 {
        let t0 = ctx.executor.now();
        let e = within(
            ctx,
            Duration::from_secs(10),
            "a query while refused",
            pool.execute("SELECT 1", &[]),
        )
        .await
        .expect_err("no connection can be made");
        elapsed.push(since(&ctx.executor, t0));
        assert!(e.is_database_not_available(), "{e:?}");
    }
    let c = pool.counters();
    assert_eq!(c.connections_opened, 0, "{c:?}");
    assert!(c.connect_failures >= 3, "{c:?}");

    proxy.set_refuse(false);
    let t0 = ctx.executor.now();
    eventually(ctx, "the pool fills itself", || {
        let s = pool.status();
        s.free == 3 && s.dead == 0 && !s.database_down
    })
    .await;
    let filled = since(&ctx.executor, t0);
    let c = pool.counters();
    assert_eq!(c.connections_opened, 3, "exactly size connections: {c:?}");
    assert_eq!(
        proxy.accepted(),
        3,
        "exactly size connections reached the server"
    );
    let v: i32 = pool
        .execute("SELECT 41 + 1", &[])
        .await
        .expect("query")
        .scalar()
        .expect("an int");
    assert_eq!(v, 42);
    assert_settled(ctx, &pool).await;
    eprintln!(
        "proxy_refuse_then_allow_fills_pool: DatabaseNotAvailable after {elapsed:?}; filled \
         {filled:?} after refuse was lifted; counters {c:?}"
    );
    pool.close().await;
    drop_off_thread(proxy).await;
}

/// Behind a black-holed network, timeouts hold and never fire early: `statement_timeout` on
/// statements whose connection went silent, `acquire_timeout` for a caller queued behind them,
/// `connect_timeout` for a new pool; `close()` then completes and nothing is left open.
pub async fn blackhole_timeouts_hold(ctx: &Ctx) {
    let statement_timeout = Duration::from_millis(300);
    let acquire_timeout = Duration::from_millis(400);
    let connect_timeout = Duration::from_millis(300);
    let liveness = Duration::from_secs(3);
    let proxy = FaultProxy::start(server_addr(ctx)).expect("start the proxy");
    let dsn = proxy.dsn_for(&ctx.db);
    let pool = pool_on(&dsn, ctx)
        .size(2)
        .statement_timeout(statement_timeout)
        .acquire_timeout(acquire_timeout)
        .connect_timeout(connect_timeout)
        .reconnect_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect through the proxy");
    assert_settled(ctx, &pool).await;

    proxy.set_blackhole(true);
    let timed = |v: i32| {
        let pool = &pool;
        let executor = &ctx.executor;
        async move {
            let t0 = executor.now();
            let r = pool.execute("SELECT $1::int4", &[&v]).await;
            (r, since(executor, t0))
        }
    };
    // Two statements hang on the two connections; the third caller waits for a connection.
    let ((r1, d1), (r2, d2), (r3, d3)) =
        within(ctx, liveness, "three calls behind the blackhole", async {
            futures::join!(timed(1), timed(2), timed(3))
        })
        .await;
    for (r, d) in [(&r1, d1), (&r2, d2)] {
        let e = r.as_ref().expect_err("the statement cannot complete");
        assert!(e.is_timeout(), "{e:?}");
        assert!(e.to_string().contains("statement_timeout"), "{e}");
        assert!(
            d >= statement_timeout,
            "statement_timeout fired early: {d:?}"
        );
    }
    let e3 = r3.as_ref().expect_err("no connection can become free");
    assert!(e3.is_timeout(), "{e3:?}");
    assert!(e3.to_string().contains("acquire_timeout"), "{e3}");
    assert!(d3 >= acquire_timeout, "acquire_timeout fired early: {d3:?}");
    let c = pool.counters();
    assert_eq!(c.statement_timeouts, 2, "{c:?}");
    assert_eq!(c.acquire_timeouts, 1, "{c:?}");
    let t0 = ctx.executor.now();
    within(ctx, liveness, "close() behind the blackhole", pool.close()).await;
    let closed_in = since(&ctx.executor, t0);
    let s = pool.status();
    assert!(s.closed && s.total == 0, "{s:?}");
    let c = pool.counters();
    assert_eq!(c.connections_opened, c.connections_closed, "{c:?}");

    // A new pool cannot connect through the blackhole: connect_timeout ends every attempt.
    let t0 = ctx.executor.now();
    let err = within(
        ctx,
        liveness,
        "connect() through the blackhole",
        pool_on(&dsn, ctx)
            .size(2)
            .connect_timeout(connect_timeout)
            .connect(),
    )
    .await
    .expect_err("no connection can be made");
    let dc = since(&ctx.executor, t0);
    assert!(err.is_partially_connected(), "{err:?}");
    let cause = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("the connect error is the cause: {err:?}"));
    assert!(cause.is_timeout(), "{cause:?}");
    assert!(dc >= connect_timeout, "connect_timeout fired early: {dc:?}");

    eprintln!(
        "blackhole_timeouts_hold: statement_timeout {statement_timeout:?} fired after {d1:?} and \
         {d2:?} (ratios {:.2}, {:.2}); acquire_timeout {acquire_timeout:?} after {d3:?} (ratio \
         {:.2}); connect_timeout {connect_timeout:?}: connect() failed after {dc:?} (ratio \
         {:.2}); close() took {closed_in:?}; {} proxied connections open at the end",
        ratio(d1, statement_timeout),
        ratio(d2, statement_timeout),
        ratio(d3, acquire_timeout),
        ratio(dc, connect_timeout),
        proxy.open_connections(),
    );

    // Both pools are closed, so their sockets must be closed too. The only proxied connections
    // that may still be open are the cancel requests sent after the statement timeouts (they
    // wait on the blackhole and are abandoned after 10 s).
    // A discarded connection's I/O task gets a 1 s grace period after its client is dropped,
    // then it and its socket are dropped even though the server never answers.
    let cancels = c.statement_timeouts as usize;
    let t0 = ctx.executor.now();
    let mut open = proxy.open_connections();
    while open > cancels && since(&ctx.executor, t0) < Duration::from_secs(3) {
        ctx.sleep(Duration::from_millis(20)).await;
        open = proxy.open_connections();
    }
    drop_off_thread(proxy).await;
    assert!(
        open <= cancels,
        "{open} proxied connections still open 3 s after both pools closed; at most {cancels} \
         (the cancel requests) may be: the sockets of discarded connections were left open"
    );
}

// ---------------------------------------------------------------------------------------------
// Writes across restarts
// ---------------------------------------------------------------------------------------------

/// One insert and what became of it.
#[derive(Debug)]
struct Write {
    id: i64,
    outcome: Result<(), String>,
    took: Duration,
}

async fn writer(
    pool: Pool,
    executor: Arc<dyn Executor>,
    task: i64,
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicU64>,
) -> Vec<Write> {
    let mut log = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::SeqCst) {
        let id = task * 1_000_000 + i;
        i += 1;
        let note = format!("task {task} write {i}");
        let t0 = executor.now();
        let result = pool
            .execute("INSERT INTO lost (id, note) VALUES ($1, $2)", &[&id, &note])
            .await;
        let took = since(&executor, t0);
        let outcome = match result {
            Ok(_) => {
                successes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(if is_fault_error(&e) {
                label(&e)
            } else {
                format!("UNEXPECTED {}: {e}", label(&e))
            }),
        };
        let failed = outcome.is_err();
        log.push(Write { id, outcome, took });
        if failed {
            executor.sleep(Duration::from_millis(5)).await;
        }
    }
    log
}

/// Eight writers insert unique ids (no unique constraint) while the server is restarted three
/// times: under `RetryPolicy::Safe` no acknowledged insert is lost and none is duplicated. Failed
/// inserts whose row exists anyway (ambiguous failures) are counted and reported.
pub async fn nothing_lost_across_restarts(ctx: &Ctx) {
    let acquire_timeout = Duration::from_secs(2);
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = pool_on(&cluster.dsn("postgres"), ctx)
        .size(4)
        .max_size(8)
        .reconnect_interval(Duration::from_millis(100))
        .acquire_timeout(acquire_timeout)
        .retry(RetryPolicy::Safe)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE lost (id bigint, note text)", &[])
        .await
        .expect("create the table");
    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            spawn_result(
                &ctx.executor,
                writer(
                    pool.clone(),
                    ctx.executor.clone(),
                    t,
                    Arc::clone(&stop),
                    Arc::clone(&successes),
                ),
            )
        })
        .collect();
    let mut seen = 0;
    let mut restarts = 0;
    for round in 0..3 {
        progress(
            ctx,
            &successes,
            seen,
            100,
            &format!("the writers make progress before restart {round}"),
        )
        .await;
        cluster
            .restart(StopMode::Fast)
            .await
            .expect("restart the server");
        restarts += 1;
        // Progress counts from here: successes from before the stop prove nothing.
        seen = successes.load(Ordering::SeqCst);
    }
    progress(
        ctx,
        &successes,
        seen,
        100,
        "the writers make progress after the last restart",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let logs = join_reports(
        ctx,
        Duration::from_secs(60),
        "nothing_lost_across_restarts",
        writers,
    )
    .await;

    // Within reconnect_interval of a failed attempt the pool fails fast by design; read once it
    // reports the database reachable.
    eventually(ctx, "the pool sees the database up", || {
        !pool.status().database_down
    })
    .await;
    let stored: HashMap<i64, i64> = pool
        .execute("SELECT id, count(*) FROM lost GROUP BY id", &[])
        .await
        .expect("read the table")
        .rows()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect();
    let mut requests = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut ambiguous = Vec::new();
    let mut unexpected = Vec::new();
    let mut attempted = HashSet::new();
    let mut longest = Duration::ZERO;
    for w in logs.iter().flatten() {
        requests += 1;
        attempted.insert(w.id);
        longest = longest.max(w.took);
        let present = stored.get(&w.id).copied().unwrap_or(0);
        match &w.outcome {
            Ok(()) if present == 0 => lost.push(w.id),
            Ok(()) => {}
            Err(kind) => {
                *errors.entry(kind.clone()).or_default() += 1;
                if kind.starts_with("UNEXPECTED") {
                    unexpected.push(kind.clone());
                }
                if present > 0 {
                    ambiguous.push((w.id, kind.clone()));
                }
            }
        }
    }
    let duplicates: Vec<(i64, i64)> = stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let phantoms: Vec<i64> = stored
        .keys()
        .filter(|id| !attempted.contains(id))
        .copied()
        .collect();
    let ok = logs.iter().flatten().filter(|w| w.outcome.is_ok()).count();
    eprintln!(
        "nothing_lost_across_restarts: {restarts} restarts survived; {requests} requests, {ok} \
         ok; errors by kind {errors:?}; lost {}; duplicates {}; ambiguous failures {} {:?}; \
         longest call {longest:?}, {:?} past acquire_timeout {acquire_timeout:?}; counters {:?}",
        lost.len(),
        duplicates.len(),
        ambiguous.len(),
        ambiguous.iter().take(10).collect::<Vec<_>>(),
        longest.saturating_sub(acquire_timeout),
        pool.counters()
    );
    assert_eq!(restarts, 3);
    assert!(
        unexpected.is_empty(),
        "errors of unexpected kinds: {unexpected:?}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged inserts are missing: {lost:?}"
    );
    assert!(
        duplicates.is_empty(),
        "inserts were applied twice: {duplicates:?}"
    );
    assert!(phantoms.is_empty(), "rows nobody inserted: {phantoms:?}");
    assert!(ok > 300, "the writers made progress: {ok}");
    assert_settled(ctx, &pool).await;
    pool.close().await;
    drop_off_thread(cluster).await;
}

// ---------------------------------------------------------------------------------------------
// Queued callers and close during a fault
// ---------------------------------------------------------------------------------------------

/// Momoko issue #147: with one connection busy on a long statement and five callers queued, an
/// immediate shutdown of the server fails every queued caller with an error instead of leaving
/// it waiting forever.
pub async fn queued_callers_fail_when_db_dies(ctx: &Ctx) {
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = pool_on(&cluster.dsn("postgres"), ctx)
        .size(1)
        .reconnect_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect the pool");
    let executor = &ctx.executor;
    let timed = |sql: &'static str| {
        let pool = &pool;
        async move {
            let r = pool.execute(sql, &[]).await;
            (r, executor.now())
        }
    };
    let long = timed("SELECT pg_sleep(30)");
    let queued = future::join_all((0..5).map(|_| timed("SELECT 1")));
    let killer = async {
        eventually(ctx, "one statement runs and five callers wait", || {
            let s = pool.status();
            s.busy == 1 && s.waiting == 5
        })
        .await;
        let t0 = executor.now();
        cluster
            .stop(StopMode::Immediate)
            .await
            .expect("stop the server");
        t0
    };
    let ((long_r, _), queued_r, t0) = within(
        ctx,
        Duration::from_secs(15),
        "the queued callers after the server died",
        async { futures::join!(long, queued, killer) },
    )
    .await;
    let long_err = long_r.expect_err("the long statement cannot finish");
    assert!(is_fault_error(&long_err), "{long_err:?}");
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut waits = Vec::new();
    for (r, at) in &queued_r {
        let e = r.as_ref().expect_err("a queued caller cannot be served");
        assert!(
            e.is_database_not_available() || e.is_connection_lost(),
            "{e:?}"
        );
        *kinds.entry(label(e)).or_default() += 1;
        waits.push(at.saturating_duration_since(t0));
    }
    eprintln!(
        "queued_callers_fail_when_db_dies: in-flight got {}; queued got {kinds:?}, resolved \
         {waits:?} after the stop began",
        label(&long_err)
    );
    within(ctx, Duration::from_secs(10), "close()", pool.close()).await;
    drop_off_thread(cluster).await;
}

/// Momoko #140/#141: `close()` while a statement runs, callers are queued and the server is
/// being stopped: `close()` completes, the in-flight call gets its result or an error, queued
/// callers get `PoolClosed`, and nothing is reconnected afterwards, not even once the server is
/// back.
pub async fn close_with_in_flight_and_queued_during_fault(ctx: &Ctx) {
    let interval = Duration::from_millis(100);
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = pool_on(&cluster.dsn("postgres"), ctx)
        .size(1)
        .reconnect_interval(interval)
        .connect()
        .await
        .expect("connect the pool");
    let in_flight = pool.execute("SELECT 7 FROM pg_sleep(30)", &[]);
    let queued = future::join_all((0..2).map(|i| {
        let pool = &pool;
        async move { pool.execute("SELECT $1::int4", &[&i]).await }
    }));
    let closer = async {
        eventually(ctx, "one busy and two waiting", || {
            let s = pool.status();
            s.busy == 1 && s.waiting == 2
        })
        .await;
        // The stop starts first (its pg_ctl runs on a thread), close() begins while it runs.
        let t0 = ctx.executor.now();
        let (stopped, ()) = futures::join!(cluster.stop(StopMode::Fast), pool.close());
        stopped.expect("stop the server");
        since(&ctx.executor, t0)
    };
    let (first, rest, closed_in) = within(
        ctx,
        Duration::from_secs(15),
        "close() during the shutdown",
        async { futures::join!(in_flight, queued, closer) },
    )
    .await;
    let first_label = match &first {
        Ok(c) => {
            assert_eq!(c.scalar::<i32>().expect("an int"), 7);
            "Ok".to_owned()
        }
        Err(e) => {
            assert!(e.is_connection_lost(), "{e:?}");
            label(e)
        }
    };
    for r in &rest {
        let e = r
            .as_ref()
            .expect_err("queued callers are failed by close()");
        assert!(e.is_pool_closed(), "{e:?}");
    }
    let s = pool.status();
    assert!(s.closed, "{s:?}");
    assert_eq!((s.free, s.busy, s.pending, s.total), (0, 0, 0, 0), "{s:?}");
    let at_close = pool.counters();
    assert_eq!(
        at_close.connections_opened, at_close.connections_closed,
        "{at_close:?}"
    );

    // Nothing tries to reconnect: not while the server is down...
    ctx.sleep(interval * 3).await;
    assert_eq!(
        pool.counters(),
        at_close,
        "no connect attempt after close()"
    );
    // ...and not once it is back.
    cluster.start().await.expect("start the server");
    ctx.sleep(interval * 3).await;
    assert_eq!(pool.counters(), at_close, "no reconnect after close()");
    assert!(pool
        .execute("SELECT 1", &[])
        .await
        .expect_err("the pool is closed")
        .is_pool_closed());
    eprintln!(
        "close_with_in_flight_and_queued_during_fault: in-flight got {first_label}; queued got \
         PoolClosed; stop + close took {closed_in:?}; counters {at_close:?}"
    );
    drop_off_thread(cluster).await;
}

// ---------------------------------------------------------------------------------------------
// Dropped futures
// ---------------------------------------------------------------------------------------------

/// xorshift64: a fixed seed gives the same run every time.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls the inner future at most `left` times (yielding to the executor in between, with the
/// waker re-armed), then gives up: `None`. With `left == 0` the future is never polled.
struct PollN<F> {
    fut: F,
    left: u32,
}

impl<F: Future + Unpin> Future for PollN<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        match Pin::new(&mut self.fut).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if self.left == 0 => Poll::Ready(None),
            Poll::Pending => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

#[derive(Debug, Default)]
struct LaneReport {
    completed: u64,
    dropped: u64,
    failures: Vec<String>,
    max_total: usize,
    checks: u64,
}

async fn fresh_check(pool: &Pool, value: i32) -> Result<(), String> {
    match pool.execute("SELECT $1::int4", &[&value]).await {
        Ok(c) => match c.scalar::<i32>() {
            Ok(v) if v == value => Ok(()),
            other => Err(format!("fresh check sent {value}, read {other:?}")),
        },
        Err(e) => Err(format!("fresh check {value} failed: {e:?}")),
    }
}

/// One operation of the drop stress, checking its own result when it completes.
fn stress_op(pool: &Pool, op: u64, v: i32, sleep_ms: i32) -> BoxFuture<'_, Result<(), String>> {
    match op {
        0 => Box::pin(async move {
            let secs = f64::from(sleep_ms) * 0.001;
            let c = pool
                .execute("SELECT $1::int4, pg_sleep($2::float8)", &[&v, &secs])
                .await
                .map_err(|e| format!("execute: {e:?}"))?;
            match c.get::<i32>(0, 0usize) {
                Ok(x) if x == v => Ok(()),
                other => Err(format!("execute sent {v}, read {other:?}")),
            }
        }),
        1 => Box::pin(async move {
            let sql = "INSERT INTO drop_stress (tx, part) VALUES ($1, $2)";
            let (one, two) = (1i32, 2i32);
            let p1: [Param<'_>; 2] = [&v, &one];
            let p2: [Param<'_>; 2] = [&v, &two];
            let cursors = pool
                .transaction([Query::new(sql, &p1), Query::new(sql, &p2)])
                .await
                .map_err(|e| format!("transaction: {e:?}"))?;
            if cursors.len() == 2 && cursors.iter().all(|c| c.rowcount() == Some(1)) {
                Ok(())
            } else {
                Err(format!("transaction {v}: {cursors:?}"))
            }
        }),
        2 => Box::pin(async move {
            let conn = pool
                .getconn()
                .await
                .map_err(|e| format!("getconn: {e:?}"))?;
            let c = conn
                .execute("SELECT $1::int4 + 1", &[&v])
                .await
                .map_err(|e| format!("getconn + execute: {e:?}"))?;
            match c.scalar::<i32>() {
                Ok(x) if x == v + 1 => Ok(()),
                other => Err(format!("getconn sent {v}, read {other:?}")),
            }
        }),
        3 => Box::pin(async move {
            let c = pool
                .callproc("drop_stress_add", &[&v, &sleep_ms])
                .await
                .map_err(|e| format!("callproc: {e:?}"))?;
            match c.scalar::<i32>() {
                Ok(x) if x == v + sleep_ms => Ok(()),
                other => Err(format!("callproc sent {v}+{sleep_ms}, read {other:?}")),
            }
        }),
        _ => Box::pin(async move {
            let text = pool
                .mogrify("SELECT $1::int4, $2::text", &[&v, &"it's"])
                .await
                .map_err(|e| format!("mogrify: {e:?}"))?;
            let expected = format!("SELECT {v}::int4, 'it''s'::text");
            if text == expected {
                Ok(())
            } else {
                Err(format!("mogrify gave {text:?}, expected {expected:?}"))
            }
        }),
    }
}

async fn drop_lane(
    pool: Pool,
    executor: Arc<dyn Executor>,
    lane: i32,
    seed: u64,
    iterations: i32,
) -> LaneReport {
    let mut rng = XorShift(seed);
    let mut r = LaneReport::default();
    for it in 0..iterations {
        let v = lane * 1_000_000 + it;
        let op = rng.below(5);
        let sleep_ms = rng.below(4) as i32;
        let fut = stress_op(&pool, op, v, sleep_ms);
        let outcome = if rng.below(2) == 0 {
            PollN {
                fut,
                left: rng.below(7) as u32,
            }
            .await
        } else {
            // Mostly within a statement's round trip, sometimes long enough to finish.
            let wait = if rng.below(2) == 0 {
                Duration::from_micros(rng.below(2000))
            } else {
                Duration::from_millis(rng.below(15))
            };
            match future::select(fut, executor.sleep(wait)).await {
                Either::Left((out, _)) => Some(out),
                Either::Right(((), fut)) => {
                    drop(fut);
                    None
                }
            }
        };
        match outcome {
            Some(Ok(())) => r.completed += 1,
            Some(Err(e)) => r.failures.push(format!("lane {lane} iteration {it}: {e}")),
            None => r.dropped += 1,
        }
        r.max_total = r.max_total.max(pool.status().total);
        if (it + 1) % 100 == 0 {
            let value = -(lane * 1_000_000 + it);
            let check = pin!(fresh_check(&pool, value));
            match future::select(check, executor.sleep(Duration::from_secs(10))).await {
                Either::Left((Ok(()), _)) => r.checks += 1,
                Either::Left((Err(e), _)) => r.failures.push(format!("lane {lane}: {e}")),
                Either::Right(_) => r
                    .failures
                    .push(format!("lane {lane}: fresh check {value} took over 10 s")),
            }
        }
    }
    r
}

/// 2000 pool operations (execute, transaction, getconn + query, callproc, mogrify) from four
/// concurrent lanes, each polled a random number of times or raced against a random short sleep
/// and dropped when it loses (seeded, so runs repeat): completed operations return their own
/// results, fresh queries always read exactly their own value, no transaction is half applied,
/// the pool never exceeds `max_size`, and it balances afterwards.
pub async fn drop_stress_seeded(ctx: &Ctx) {
    const SEED: u64 = 0x6d6f_6d6f_6b6f_2024;
    const LANES: i32 = 4;
    const PER_LANE: i32 = 500;
    let pool = pool_on(&ctx.dsn(), ctx)
        .size(3)
        .max_size(5)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE drop_stress (tx int, part int)", &[])
        .await
        .expect("create the table");
    pool.execute(
        "CREATE FUNCTION drop_stress_add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'",
        &[],
    )
    .await
    .expect("create the function");
    let t0 = ctx.executor.now();
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let seed =
                SEED ^ (u64::from(lane.unsigned_abs()) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            spawn_result(
                &ctx.executor,
                drop_lane(pool.clone(), ctx.executor.clone(), lane, seed, PER_LANE),
            )
        })
        .collect();
    let reports = join_reports(ctx, Duration::from_secs(60), "drop_stress_seeded", lanes).await;
    let took = since(&ctx.executor, t0);
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    assert!(failures.is_empty(), "seed {SEED:#x}: {failures:?}");
    let completed: u64 = reports.iter().map(|r| r.completed).sum();
    let dropped: u64 = reports.iter().map(|r| r.dropped).sum();
    let checks: u64 = reports.iter().map(|r| r.checks).sum();
    let max_total = reports.iter().map(|r| r.max_total).max().unwrap_or(0);
    assert_eq!(completed + dropped, (LANES * PER_LANE) as u64);
    assert_eq!(checks, (LANES * PER_LANE / 100) as u64);
    assert!(max_total <= 5, "the pool exceeded max_size: {max_total}");
    assert!(
        dropped > 0 && completed > 0,
        "{completed} completed, {dropped} dropped"
    );

    within(
        ctx,
        Duration::from_secs(10),
        "the final fresh check",
        fresh_check(&pool, 424_242),
    )
    .await
    .unwrap_or_else(|e| panic!("seed {SEED:#x}: {e}"));
    assert_settled(ctx, &pool).await;
    let s = pool.status();
    assert_eq!((s.busy, s.waiting, s.pending), (0, 0, 0), "{s:?}");
    let half: i64 = pool
        .execute(
            "SELECT count(*) FROM (SELECT tx FROM drop_stress GROUP BY tx HAVING count(*) <> 2) t",
            &[],
        )
        .await
        .expect("count half-applied transactions")
        .scalar()
        .expect("a count");
    assert_eq!(half, 0, "seed {SEED:#x}: no transaction is half applied");
    let committed: i64 = pool
        .execute("SELECT count(DISTINCT tx) FROM drop_stress", &[])
        .await
        .expect("count transactions")
        .scalar()
        .expect("a count");
    eprintln!(
        "drop_stress_seeded: seed {SEED:#x}; {} operations in {took:?}: {completed} completed, \
         {dropped} dropped; {checks} fresh checks ok; {committed} transactions committed, none \
         half applied; max total {max_total}; status {s:?}; counters {:?}",
        LANES * PER_LANE,
        pool.counters()
    );
}
