//! Helpers shared by the cases.

use std::future::Future;
use std::net::TcpListener;
use std::pin::pin;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{self, Either};
use momoko_core::{Connection, FromSql, Param, Pool, PoolStatus};
use momoko_testkit::{Cluster, ClusterOptions};

use crate::Ctx;

/// Runs blocking `work` on a new OS thread and awaits its result without blocking the executor.
pub(crate) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.await
        .expect("the helper thread finished without panicking")
}

/// Starts a private cluster (initdb + server start, blocking) on a std thread.
pub(crate) async fn private_cluster(options: ClusterOptions) -> Cluster {
    off_thread(move || Cluster::start_new(options))
        .await
        .expect("start a private cluster")
}

/// Drops `value` on a std thread: a private [`Cluster`] stops its server and a [`FaultProxy`]
/// joins its accept thread when dropped, both blocking.
pub(crate) async fn drop_off_thread<T: Send + 'static>(value: T) {
    off_thread(move || drop(value)).await;
}

/// Runs `fut` under a liveness bound: if it has not finished after `limit` the case fails
/// (instead of hanging). Never used as a performance assertion: limits are generous.
pub(crate) async fn within<F: Future>(ctx: &Ctx, limit: Duration, what: &str, fut: F) -> F::Output {
    let fut = pin!(fut);
    match future::select(fut, ctx.executor.sleep(limit)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("{what} did not finish within {limit:?} (liveness bound)"),
    }
}

/// Runs `sql` and returns the first column of its first row.
pub(crate) async fn scalar<T>(conn: &Connection, sql: &str, params: &[Param<'_>]) -> T
where
    T: for<'a> FromSql<'a>,
{
    let cursor = conn
        .execute(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    cursor
        .scalar::<T>()
        .unwrap_or_else(|e| panic!("reading the result of {sql}: {e}"))
}

/// The server process id of `conn`'s session.
pub(crate) async fn backend_pid(conn: &Connection) -> i32 {
    scalar(conn, "SELECT pg_backend_pid()", &[]).await
}

/// The server process id of the session the pool's next statement runs on.
pub(crate) async fn pool_pid(pool: &Pool) -> i32 {
    pool.execute("SELECT pg_backend_pid()", &[])
        .await
        .and_then(|c| c.scalar::<i32>())
        .unwrap_or_else(|e| panic!("SELECT pg_backend_pid() on the pool: {e}"))
}

/// A port on 127.0.0.1 on which nothing listens (bound, then released).
pub(crate) fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}

/// Waits (bounded, 15 s) until `cond` holds, re-checking every 10 ms on the executor's timer.
pub(crate) async fn eventually(ctx: &Ctx, what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The status fields add up, nothing is checked out, under a return check or waiting, and the
/// counters agree with the connections that exist.
pub(crate) async fn assert_settled(ctx: &Ctx, pool: &Pool) {
    // A connection whose caller dropped its call mid-way is checked after it comes back (at
    // most a second): the pool is settled once those checks ended too.
    eventually(ctx, "the pool is idle", || {
        let s = pool.status();
        s.busy == 0 && s.checking == 0 && s.waiting == 0 && s.pending == 0
    })
    .await;
    let s: PoolStatus = pool.status();
    assert_eq!(
        s.total,
        s.free + s.busy + s.checking + s.pending + s.dead,
        "{s:?}"
    );
    let c = pool.counters();
    assert_eq!(
        c.connections_opened - c.connections_closed,
        s.free as u64,
        "open connections match the counters: {s:?} {c:?}"
    );
}

/// Waits (bounded, 15 s) until `n` statements of the case's database wait for an advisory lock,
/// asking through `observer`.
pub(crate) async fn await_lock_waiters(ctx: &Ctx, observer: &Connection, n: i32) {
    let waiting = || {
        scalar::<i32>(
            observer,
            "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
    };
    for _ in 0..1500 {
        if waiting().await == n {
            return;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        waiting().await,
        n,
        "statements waiting for an advisory lock"
    );
}
