//! The pool: parallelism, queueing, stretching, shrinking, setsession, getconn, close, status.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use momoko_core::{Pool, RetryPolicy};

use crate::support::{
    assert_settled, await_lock_waiters, backend_pid, eventually, pool_pid, within,
};
use crate::Ctx;

fn builder(ctx: &Ctx) -> momoko_core::PoolBuilder {
    ctx.pool_builder()
}

/// Runs `sql` returning (backend pid, start, end) of a statement that sleeps `secs`.
const TIMED: &str =
    "SELECT pg_backend_pid(), clock_timestamp(), pg_sleep($1::float8), clock_timestamp()";

async fn timed(pool: &Pool, secs: f64) -> (i32, SystemTime, SystemTime) {
    let c = pool.execute(TIMED, &[&secs]).await.expect("timed query");
    (
        c.get(0, 0usize).unwrap(),
        c.get(0, 1usize).unwrap(),
        c.get(0, 3usize).unwrap(),
    )
}

/// Three queries joined together run at the same time on three connections: distinct backends
/// and overlapping server-side intervals.
pub async fn parallel_queries_use_distinct_connections(ctx: &Ctx) {
    let pool = builder(ctx).size(3).connect().await.unwrap();
    let (a, b, c) = futures::join!(timed(&pool, 0.3), timed(&pool, 0.3), timed(&pool, 0.3));
    let pids: HashSet<i32> = [a.0, b.0, c.0].into();
    assert_eq!(pids.len(), 3, "three backends");
    let latest_start = [a.1, b.1, c.1].into_iter().max().unwrap();
    let earliest_end = [a.2, b.2, c.2].into_iter().min().unwrap();
    assert!(
        latest_start < earliest_end,
        "the three statements overlapped on the server"
    );
    assert_settled(ctx, &pool).await;
}

/// With one connection, concurrent callers queue and all succeed, one after the other, in
/// arrival order.
pub async fn queue_serialises_with_size_one(ctx: &Ctx) {
    let pool = builder(ctx).size(1).connect().await.unwrap();
    let results = join_all((0..5).map(|_| timed(&pool, 0.02))).await;
    let pids: HashSet<i32> = results.iter().map(|r| r.0).collect();
    assert_eq!(pids.len(), 1, "one backend served everyone");
    for pair in results.windows(2) {
        assert!(pair[0].2 <= pair[1].1, "first in, first out, no overlap");
    }
    assert_eq!(pool.status().total, 1);
    assert!(pool.counters().acquire_waits >= 4);
    assert_settled(ctx, &pool).await;
}

/// Sequential queries never open an extra connection, even with room to stretch.
pub async fn sequential_queries_never_stretch(ctx: &Ctx) {
    let pool = builder(ctx).size(1).max_size(5).connect().await.unwrap();
    for i in 0..10i32 {
        let c = pool.execute("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(c.scalar::<i32>().unwrap(), i);
    }
    assert_eq!(pool.status().total, 1);
    assert_eq!(pool.counters().connections_opened, 1);
    assert_settled(ctx, &pool).await;
}

/// Four concurrent long queries on `size=1, max_size=5` open four connections.
pub async fn concurrent_long_queries_stretch(ctx: &Ctx) {
    let pool = builder(ctx).size(1).max_size(5).connect().await.unwrap();
    let results = join_all((0..4).map(|_| timed(&pool, 0.5))).await;
    let pids: HashSet<i32> = results.iter().map(|r| r.0).collect();
    assert_eq!(pids.len(), 4, "four backends");
    assert_eq!(pool.status().total, 4);
    assert!(pool.status().total <= 5);
    assert_settled(ctx, &pool).await;
}

/// Three concurrent `getconn()` give three connections.
pub async fn concurrent_getconn_stretch(ctx: &Ctx) {
    let pool = builder(ctx).size(1).max_size(5).connect().await.unwrap();
    let held = futures::future::try_join_all((0..3).map(|_| pool.getconn()))
        .await
        .unwrap();
    let mut pids = HashSet::new();
    for conn in &held {
        pids.insert(backend_pid(conn).await);
    }
    assert_eq!(pids.len(), 3);
    let s = pool.status();
    assert_eq!((s.busy, s.total), (3, 3), "{s:?}");
    drop(held);
    assert_settled(ctx, &pool).await;
    assert_eq!(pool.status().free, 3);
}

/// Idle extras are closed after `shrink_delay`, down to `size` and no further; the most
/// recently used connection is the one kept.
pub async fn shrinks_idle_extras_to_size(ctx: &Ctx) {
    let pool = builder(ctx)
        .size(1)
        .max_size(4)
        .auto_shrink(true)
        .shrink_delay(Duration::from_millis(150))
        .shrink_period(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let held = futures::future::try_join_all((0..3).map(|_| pool.getconn()))
        .await
        .unwrap();
    assert_eq!(pool.status().total, 3);
    drop(held);
    // Keep using one connection: it must survive the shrink.
    let mut last_pid = 0;
    for _ in 0..5 {
        last_pid = pool_pid(&pool).await;
    }
    eventually(ctx, "the pool shrank back to size", || {
        pool.status().total == 1
    })
    .await;
    assert_eq!(
        pool_pid(&pool).await,
        last_pid,
        "the recently used connection stayed"
    );
    assert_eq!(pool.counters().shrunk, 2);
    // It never goes below size.
    ctx.sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.status().total, 1);
    assert_settled(ctx, &pool).await;
}

/// `setsession` statements run on every connection, including stretched ones.
pub async fn setsession_applies_to_every_connection(ctx: &Ctx) {
    let pool = builder(ctx)
        .size(2)
        .max_size(4)
        .setsession([
            "SET TIME ZONE 'Pacific/Chatham'",
            "SET application_name = 'momoko-test'",
        ])
        .connect()
        .await
        .unwrap();
    let held = futures::future::try_join_all((0..4).map(|_| pool.getconn()))
        .await
        .unwrap();
    for conn in &held {
        let c = conn
            .execute(
                "SELECT current_setting('TimeZone'), current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(c.get::<&str>(0, 0usize).unwrap(), "Pacific/Chatham");
        assert_eq!(c.get::<&str>(0, 1usize).unwrap(), "momoko-test");
    }
    assert_eq!(pool.status().total, 4);
    drop(held);
    assert_settled(ctx, &pool).await;
}

/// A failing `setsession` statement fails its connection: `connect()` reports it.
pub async fn failing_setsession_fails_the_connection(ctx: &Ctx) {
    let err = builder(ctx)
        .size(2)
        .setsession(["SET no_such_setting_at_all = 1"])
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_partially_connected(), "{err:?}");
    assert!(err.to_string().contains("2 of 2"), "{err}");
    let pool = builder(ctx)
        .size(1)
        .setsession(["SET no_such_setting_at_all = 1"])
        .raise_connect_errors(false)
        .connect()
        .await
        .unwrap();
    let e = pool.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(e.is_database_not_available(), "{e:?}");
    pool.close().await;
}

/// The `getconn` guard returns its connection when dropped, also during a panic, and a
/// transaction left open by the holder is rolled back before anyone else gets the connection.
pub async fn getconn_guard_returns_connection(ctx: &Ctx) {
    let pool = builder(ctx).size(1).connect().await.unwrap();
    pool.execute("CREATE TABLE guard_t (n int)", &[])
        .await
        .unwrap();

    let conn = pool.getconn().await.unwrap();
    assert_eq!((pool.status().busy, pool.status().free), (1, 0));
    drop(conn);
    eventually(ctx, "the guard returned the connection", || {
        pool.status().free == 1
    })
    .await;

    let conn = pool.getconn().await.unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        let _held = conn;
        panic!("the holder panics");
    }));
    assert!(outcome.is_err());
    eventually(ctx, "the connection came back after the panic", || {
        pool.status().free == 1
    })
    .await;

    let conn = pool.getconn().await.unwrap();
    conn.batch_execute("BEGIN; INSERT INTO guard_t VALUES (1)")
        .await
        .unwrap();
    drop(conn);
    let conn = pool.getconn().await.unwrap();
    let c = conn
        .execute("SELECT count(*) FROM guard_t", &[])
        .await
        .unwrap();
    assert_eq!(
        c.scalar::<i64>().unwrap(),
        0,
        "the open transaction was rolled back"
    );
    // SAVEPOINT fails with 25P01 exactly when no transaction block is open.
    let e = conn.execute("SAVEPOINT probe", &[]).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&momoko_core::SqlState::NO_ACTIVE_SQL_TRANSACTION),
        "{e}"
    );
    pool.putconn(conn).unwrap();
    assert_settled(ctx, &pool).await;
}

/// `putconn` of a connection from another pool is a clear error, and that connection still
/// goes home.
pub async fn putconn_from_another_pool_is_an_error(ctx: &Ctx) {
    let a = builder(ctx).size(1).connect().await.unwrap();
    let b = builder(ctx).size(1).connect().await.unwrap();
    let conn = a.getconn().await.unwrap();
    let err = b.putconn(conn).unwrap_err();
    assert_eq!(err.kind(), momoko_core::ErrorKind::Usage);
    assert!(err.to_string().contains("another pool"), "{err}");
    eventually(ctx, "the connection returned to its own pool", || {
        a.status().free == 1
    })
    .await;
    assert_eq!(b.status().free, 1);
    assert_settled(ctx, &a).await;
    assert_settled(ctx, &b).await;
}

/// `close()` lets in-flight work finish, fails queued callers with `PoolClosed`, refuses new
/// work, reopens nothing, and can be called twice.
pub async fn close_with_queued_and_in_flight_work(ctx: &Ctx) {
    let pool = builder(ctx).size(1).connect().await.unwrap();
    let in_flight = pool.execute("SELECT 7 FROM pg_sleep(0.4)", &[]);
    let queued = pool.execute("SELECT 8", &[]);
    let closer = async {
        // Close once the first statement runs and the second waits.
        eventually(ctx, "one busy and one waiting", || {
            let s = pool.status();
            s.busy == 1 && s.waiting == 1
        })
        .await;
        pool.close().await;
    };
    let (first, second, ()) = futures::join!(in_flight, queued, closer);
    assert_eq!(
        first.unwrap().scalar::<i32>().unwrap(),
        7,
        "in-flight work finished"
    );
    assert!(second.unwrap_err().is_pool_closed());
    assert!(pool
        .execute("SELECT 1", &[])
        .await
        .unwrap_err()
        .is_pool_closed());
    assert!(pool.getconn().await.unwrap_err().is_pool_closed());
    pool.close().await;
    let s = pool.status();
    assert!(s.closed);
    assert_eq!((s.free, s.busy, s.pending, s.total), (0, 0, 0, 0), "{s:?}");
    let c = pool.counters();
    assert_eq!(c.connections_opened, c.connections_closed);
}

/// Queries made right after `build()`, before the connections are open, wait for them.
pub async fn use_before_connect_waits(ctx: &Ctx) {
    let pool = builder(ctx).size(2).build().unwrap();
    let (a, b) = futures::join!(pool.execute("SELECT 1", &[]), pool.execute("SELECT 2", &[]));
    assert_eq!(a.unwrap().scalar::<i32>().unwrap(), 1);
    assert_eq!(b.unwrap().scalar::<i32>().unwrap(), 2);
    pool.connect().await.unwrap();
    assert_settled(ctx, &pool).await;
}

/// An unreachable server gives `PartiallyConnected` with the count; without
/// `raise_connect_errors` the pool starts dead and fails fast with `DatabaseNotAvailable`.
pub async fn unreachable_server_partially_connected(ctx: &Ctx) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=x");
    let err = Pool::builder(&dsn, ctx.executor.clone())
        .size(3)
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_partially_connected(), "{err:?}");
    assert!(err.to_string().contains("3 of 3"), "{err}");

    let pool = Pool::builder(&dsn, ctx.executor.clone())
        .size(2)
        .raise_connect_errors(false)
        .reconnect_interval(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let s = pool.status();
    assert_eq!((s.dead, s.total, s.free), (2, 2, 0), "{s:?}");
    assert!(s.database_down);
    let e = pool.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(e.is_database_not_available(), "{e:?}");
    pool.close().await;
}

/// `acquire_timeout` fires when the pool is exhausted, and the abandoned wait leaves no trace.
pub async fn acquire_timeout_fires_when_exhausted(ctx: &Ctx) {
    let pool = builder(ctx)
        .size(1)
        .acquire_timeout(Duration::from_millis(150))
        .connect()
        .await
        .unwrap();
    let held = pool.getconn().await.unwrap();
    let e = pool.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(pool.counters().acquire_timeouts, 1);
    assert_eq!(pool.status().waiting, 0);
    drop(held);
    assert_eq!(
        pool.execute("SELECT 1", &[])
            .await
            .unwrap()
            .scalar::<i32>()
            .unwrap(),
        1
    );
    assert_settled(ctx, &pool).await;
}

/// `execute`, `callproc`, `transaction`, `transaction_with`, `mogrify` and `ping` on the pool.
pub async fn query_methods_on_the_pool(ctx: &Ctx) {
    let pool = builder(ctx).size(2).connect().await.unwrap();
    pool.execute("CREATE TABLE pm (n int primary key)", &[])
        .await
        .unwrap();
    pool.execute(
        "CREATE FUNCTION sq(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN n * n; END $$",
        &[],
    )
    .await
    .unwrap();
    let c = pool.callproc("sq", &[&9i32]).await.unwrap();
    assert_eq!(c.scalar::<i32>().unwrap(), 81);
    let cursors = pool
        .transaction([
            (
                "INSERT INTO pm VALUES ($1)",
                &[&1i32 as momoko_core::Param<'_>][..],
            )
                .into(),
            "INSERT INTO pm VALUES (2)".into(),
            "SELECT count(*) FROM pm".into(),
        ])
        .await
        .unwrap();
    assert_eq!(cursors.len(), 3);
    assert_eq!(cursors[2].scalar::<i64>().unwrap(), 2);
    let e = pool
        .transaction([
            "INSERT INTO pm VALUES (3)".into(),
            "INSERT INTO pm VALUES (1)".into(),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&momoko_core::SqlState::UNIQUE_VIOLATION));
    let n = pool
        .transaction_with(async |c| {
            c.execute("INSERT INTO pm VALUES (10)", &[]).await?;
            c.execute("SELECT count(*) FROM pm", &[])
                .await?
                .scalar::<i64>()
        })
        .await
        .unwrap();
    assert_eq!(n, 3, "3 was rolled back, 10 inserted");
    let sql = pool.mogrify("SELECT $1::text", &[&"o'k"]).await.unwrap();
    assert_eq!(sql, "SELECT 'o''k'::text");
    pool.ping().await.unwrap();
    assert_settled(ctx, &pool).await;
}

/// The tutorial's server-side cursor over a held connection: 1000 rows in chunks of 10.
pub async fn server_side_cursor_on_held_connection(ctx: &Ctx) {
    let pool = builder(ctx).size(1).connect().await.unwrap();
    pool.execute(
        "CREATE TABLE unit_test_int_table AS SELECT g AS n FROM generate_series(1, 1000) g",
        &[],
    )
    .await
    .unwrap();
    let conn = pool.getconn().await.unwrap();
    conn.execute("BEGIN", &[]).await.unwrap();
    conn.execute(
        "DECLARE all_ints CURSOR FOR SELECT n FROM unit_test_int_table ORDER BY n",
        &[],
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    loop {
        let sql = conn
            .mogrify("FETCH $1 FROM all_ints", &[&10i64])
            .await
            .unwrap();
        let mut cursor = conn.execute(&sql, &[]).await.unwrap();
        if cursor.rowcount() == Some(0) {
            break;
        }
        assert_eq!(cursor.rowcount(), Some(10));
        seen.extend(cursor.fetchall().iter().map(|r| r.get::<_, i32>(0)));
    }
    conn.execute("CLOSE all_ints", &[]).await.unwrap();
    conn.execute("COMMIT", &[]).await.unwrap();
    assert_eq!(seen, (1..=1000).collect::<Vec<i32>>());
    drop(conn);
    assert_settled(ctx, &pool).await;
}

/// A statement past `statement_timeout` is cancelled on the server, its connection is not
/// reused, and the pool goes on.
pub async fn statement_timeout_cancels_on_server(ctx: &Ctx) {
    let pool = builder(ctx)
        .size(1)
        .statement_timeout(Duration::from_millis(200))
        .reconnect_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let pid: i32 = pool_pid(&pool).await;
    let e = pool.execute("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(pool.counters().statement_timeouts, 1);
    let observer = ctx.connect().await;
    for _ in 0..1000 {
        let c = observer
            .execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&pid],
            )
            .await
            .unwrap();
        if c.scalar::<i64>().unwrap() == 0 {
            break;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    let c = observer
        .execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'", &[])
        .await
        .unwrap();
    assert_eq!(
        c.scalar::<i64>().unwrap(),
        0,
        "the statement no longer runs on the server"
    );
    assert_ne!(
        pool_pid(&pool).await,
        pid,
        "the timed-out connection was not reused"
    );
    assert_settled(ctx, &pool).await;
}

/// Dropping a query future mid-statement discards its connection; the next caller gets its own
/// result, never the abandoned one's.
pub async fn dropped_query_future_is_safe(ctx: &Ctx) {
    let pool = builder(ctx).size(1).connect().await.unwrap();
    let observer = ctx.connect().await;
    {
        let slow = pool.execute("SELECT 'abandoned' FROM pg_sleep(5)", &[]);
        // Abandon it once the server shows it running.
        let running = async {
            loop {
                let c = observer
                    .execute(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE query LIKE 'SELECT ''abandoned''%' AND state = 'active'",
                        &[],
                    )
                    .await
                    .unwrap();
                if c.scalar::<i64>().unwrap() == 1 {
                    return;
                }
                ctx.sleep(Duration::from_millis(5)).await;
            }
        };
        futures::pin_mut!(slow);
        futures::pin_mut!(running);
        match futures::future::select(slow, running).await {
            futures::future::Either::Left(_) => panic!("the slow statement should still run"),
            // The abandoned statement's future is dropped at the end of this block.
            futures::future::Either::Right(((), _slow)) => {}
        }
    }
    let c = pool.execute("SELECT 'mine'", &[]).await.unwrap();
    assert_eq!(c.scalar::<&str>().unwrap(), "mine");
    assert!(pool.counters().discarded >= 1);
    assert_settled(ctx, &pool).await;
}

/// After every backend of the pool is terminated, the pool heals without help.
pub async fn heals_after_backends_are_terminated(ctx: &Ctx) {
    let pool = builder(ctx)
        .size(2)
        .reconnect_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let killer = ctx.connect().await;
    let c = killer
        .execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(c.scalar::<i64>().unwrap(), 2);
    for i in 0..20i32 {
        let c = pool.execute("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(c.scalar::<i32>().unwrap(), i);
    }
    eventually(ctx, "the pool is back at size", || {
        let s = pool.status();
        s.free == 2 && s.dead == 0
    })
    .await;
    assert!(pool.counters().reconnects + pool.counters().connections_opened >= 3);
    assert_settled(ctx, &pool).await;
}

/// Ten thousand mixed operations from 32 tasks; afterwards the status and counters balance.
pub async fn mixed_run_balances(ctx: &Ctx) {
    mixed_run(ctx, |b| b.pipeline(1), "no pipelining").await;
}

/// The same mixed run with pipelining on: shared and exclusive use interleave safely.
pub async fn mixed_run_balances_pipelined(ctx: &Ctx) {
    mixed_run(ctx, |b| b.pipeline(4), "pipeline depth 4").await;
}

/// A mixed run (see [`mixed_run_balances`]) on a pool built by `tune` from the case's builder
/// with `size(4).max_size(8)`; `label` names the setting in the printed summary.
pub(crate) async fn mixed_run(
    ctx: &Ctx,
    tune: impl FnOnce(momoko_core::PoolBuilder) -> momoko_core::PoolBuilder,
    label: &str,
) {
    let pool = tune(builder(ctx).size(4).max_size(8).retry(RetryPolicy::Safe))
        .connect()
        .await
        .unwrap();
    pool.execute("CREATE TABLE mix (id int primary key, task int)", &[])
        .await
        .unwrap();
    let per_task: i32 = 10_000 / 32 + 1;
    let tasks = (0..32i32).map(|t| {
        let pool = pool.clone();
        async move {
            for i in 0..per_task {
                match i % 10 {
                    0 => {
                        let id = t * 100_000 + i;
                        pool.transaction([(
                            "INSERT INTO mix VALUES ($1, $2)",
                            &[&id as momoko_core::Param<'_>, &t][..],
                        )
                            .into()])
                            .await
                            .unwrap();
                    }
                    1 => {
                        let conn = pool.getconn().await.unwrap();
                        let c = conn.execute("SELECT $1::int4 + 1", &[&i]).await.unwrap();
                        assert_eq!(c.scalar::<i32>().unwrap(), i + 1);
                    }
                    _ => {
                        let c = pool
                            .execute("SELECT $1::int4, $2::int4", &[&t, &i])
                            .await
                            .unwrap();
                        assert_eq!(c.get::<i32>(0, 0usize).unwrap(), t);
                        assert_eq!(c.get::<i32>(0, 1usize).unwrap(), i);
                    }
                }
            }
        }
    });
    join_all(tasks).await;
    let c = pool.execute("SELECT count(*) FROM mix", &[]).await.unwrap();
    assert_eq!(
        c.scalar::<i64>().unwrap(),
        32 * ((i64::from(per_task) + 9) / 10)
    );
    assert_settled(ctx, &pool).await;
    eprintln!(
        "mixed run ({label}): {} operations; status {:?}; counters {:?}",
        32 * per_task,
        pool.status(),
        pool.counters()
    );
}

/// With pipelining, sixteen concurrent statements share two connections: nobody waits, no
/// connection is added, and every caller gets its own result.
pub async fn pipelined_statements_share_connections(ctx: &Ctx) {
    let pool = builder(ctx).size(2).pipeline(8).connect().await.unwrap();
    // Fast statements: issued together, all 16 are in flight at once on 2 connections (a
    // round trip is far longer than issuing them), and each finished one keeps its connection
    // from counting as stalled (a 50 ms sleep made the case depend on all 16 being placed
    // within the 5 ms stall window, which a loaded machine does not always manage).
    const SQL: &str = "SELECT $1::int4, pg_backend_pid()";
    // Once seen to leave its connection idle, a statement pipelines freely.
    pool.execute(SQL, &[&-1i32]).await.unwrap();
    let results = join_all((0..16i32).map(|i| {
        let pool = &pool;
        async move {
            let c = pool.execute(SQL, &[&i]).await.unwrap();
            (
                c.get::<i32>(0, 0usize).unwrap(),
                c.get::<i32>(0, 1usize).unwrap(),
            )
        }
    }))
    .await;
    for (i, (echo, _)) in results.iter().enumerate() {
        assert_eq!(*echo, i as i32, "each caller read its own row");
    }
    let pids: HashSet<i32> = results.iter().map(|r| r.1).collect();
    assert!(pids.len() <= 2, "{pids:?}");
    assert_eq!(
        pool.counters().acquire_waits,
        0,
        "nobody waited: the statements were pipelined"
    );
    assert_eq!(pool.status().total, 2);
    assert_settled(ctx, &pool).await;
}

/// A pipelined statement never runs inside another caller's open transaction.
pub async fn pipelining_never_joins_a_transaction(ctx: &Ctx) {
    let pool = builder(ctx).size(2).pipeline(8).connect().await.unwrap();
    pool.execute("CREATE TABLE pj (n int)", &[]).await.unwrap();
    let (inserted_tx, inserted_rx) = futures::channel::oneshot::channel::<()>();
    let (release_tx, release_rx) = futures::channel::oneshot::channel::<()>();
    let signals = std::sync::Mutex::new(Some((inserted_tx, release_rx)));
    let transaction = pool.transaction_with(async |c| {
        let taken = signals.lock().unwrap().take();
        c.execute("INSERT INTO pj VALUES (1)", &[]).await?;
        if let Some((inserted, release)) = taken {
            let _ = inserted.send(());
            let _ = release.await;
        }
        Ok(())
    });
    let observer = async {
        inserted_rx.await.unwrap();
        let counts = join_all((0..20).map(|_| pool.execute("SELECT count(*) FROM pj", &[]))).await;
        for c in counts {
            assert_eq!(
                c.unwrap().scalar::<i64>().unwrap(),
                0,
                "saw an uncommitted row"
            );
        }
        release_tx.send(()).unwrap();
    };
    let (committed, ()) = futures::join!(transaction, observer);
    committed.unwrap();
    let c = pool.execute("SELECT count(*) FROM pj", &[]).await.unwrap();
    assert_eq!(c.scalar::<i64>().unwrap(), 1);
    assert_settled(ctx, &pool).await;
}

/// An exclusive caller waits while statements are pipelined on the only connection and gets
/// it as soon as they finish.
pub async fn exclusive_caller_waits_for_pipelined_statements(ctx: &Ctx) {
    // A long stall window: all three are pipelined even when the machine is too loaded to place
    // them within the default 5 ms.
    let pool = builder(ctx)
        .size(1)
        .pipeline(4)
        .pipeline_stall(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    pool.execute("SELECT 1 FROM pg_sleep(0.2)", &[])
        .await
        .unwrap();
    let shared = join_all((0..3).map(|_| pool.execute("SELECT 1 FROM pg_sleep(0.2)", &[])));
    let exclusive = async {
        eventually(ctx, "three statements pipelined", || {
            pool.status().pipelined == 3
        })
        .await;
        let conn = pool.getconn().await.unwrap();
        assert_eq!(
            pool.status().pipelined,
            0,
            "got the connection only once they finished"
        );
        conn.execute("SELECT 2", &[])
            .await
            .unwrap()
            .scalar::<i32>()
            .unwrap()
    };
    let (results, two) = futures::join!(shared, exclusive);
    assert!(results.into_iter().all(|r| r.is_ok()));
    assert_eq!(two, 2);
    assert_eq!(pool.status().total, 1);
    assert_settled(ctx, &pool).await;
}

/// Pipelined statements that had to queue keep their turn: the room a finished statement leaves
/// goes to the oldest waiter, and a newcomer queues behind it instead of overtaking it.
pub async fn pipelined_waiters_keep_their_turn(ctx: &Ctx) {
    // A long stall window: what is under test is the queue's order, not the stall rule.
    let pool = builder(ctx)
        .size(1)
        .pipeline(2)
        .pipeline_stall(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    // Prepared in advance, c and d are sent the moment they get their place (no prepare round
    // trip in between), so the order they finish in is the order they were served in; and all
    // four are known to leave their connection idle, so they pipeline freely.
    for sql in [
        "SELECT 'c'",
        "SELECT 'd'",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_advisory_xact_lock(2)",
    ] {
        pool.execute(sql, &[]).await.unwrap();
    }
    let locker = ctx.connect().await;
    locker
        .execute("SELECT pg_advisory_lock(1), pg_advisory_lock(2)", &[])
        .await
        .unwrap();
    let stage = AtomicU32::new(0);
    let finished = Mutex::new(Vec::new());
    let run = |name: &'static str, after: u32, sql: &'static str| {
        let (stage, finished, pool) = (&stage, &finished, &pool);
        async move {
            eventually(ctx, "its turn to start", || {
                stage.load(Ordering::SeqCst) >= after
            })
            .await;
            pool.execute(sql, &[]).await.unwrap();
            finished.lock().unwrap().push(name);
        }
    };
    let control = async {
        // x and y start together, so y is pipelined right behind x (a connection stuck for
        // longer takes no new statements); x waits on the server for lock 1, and the
        // connection is full.
        await_lock_waiters(ctx, &locker, 1).await;
        assert_eq!(pool.status().pipelined, 2, "y is pipelined behind x");
        stage.store(2, Ordering::SeqCst);
        eventually(ctx, "c queued", || pool.status().waiting == 1).await;
        locker
            .execute("SELECT pg_advisory_unlock(1)", &[])
            .await
            .unwrap();
        // x finished and y now waits for lock 2: c takes the room x left.
        eventually(ctx, "c pipelined behind y", || {
            let s = pool.status();
            s.waiting == 0 && s.pipelined == 2
        })
        .await;
        assert_eq!(*finished.lock().unwrap(), ["x"]);
        stage.store(3, Ordering::SeqCst);
        eventually(ctx, "d queued", || pool.status().waiting == 1).await;
        locker
            .execute("SELECT pg_advisory_unlock(2)", &[])
            .await
            .unwrap();
    };
    futures::join!(
        run("x", 0, "SELECT pg_advisory_xact_lock(1)"),
        run("y", 0, "SELECT pg_advisory_xact_lock(2)"),
        run("c", 2, "SELECT 'c'"),
        run("d", 3, "SELECT 'd'"),
        control,
    );
    assert_eq!(*finished.lock().unwrap(), ["x", "y", "c", "d"]);
    assert_eq!(pool.status().total, 1);
    assert_settled(ctx, &pool).await;
}

/// New pipelined statements avoid a connection whose pipeline is held up by a slow statement:
/// they run on the other connection while the slow one still waits.
pub async fn pipelining_avoids_a_stalled_connection(ctx: &Ctx) {
    stalled_connection_is_avoided(ctx, |b| b.pipeline(4), false).await;
}

/// The stalled-connection case (see [`pipelining_avoids_a_stalled_connection`]) on a pool of two
/// built by `tune` from the case's builder. With `may_run_alone`, the locking statement may run
/// on a connection of its own instead of being pipelined (adaptive pipelining does that when its
/// last lone run was slower than the wait budget, as on a loaded machine); the case then starts
/// over, up to 20 times.
pub(crate) async fn stalled_connection_is_avoided(
    ctx: &Ctx,
    tune: impl FnOnce(momoko_core::PoolBuilder) -> momoko_core::PoolBuilder,
    may_run_alone: bool,
) {
    const LOCK: &str = "SELECT pg_advisory_xact_lock(7)";
    let pool = tune(builder(ctx).size(2)).connect().await.unwrap();
    let locker = ctx.connect().await;
    for attempt in 1..=20 {
        // Both statements are seen to leave their connection idle, and timed alone while the
        // lock is free, so both are pipelined.
        for _ in 0..10 {
            for sql in [LOCK, "SELECT 12"] {
                pool.execute(sql, &[]).await.unwrap();
            }
        }
        locker
            .execute("SELECT pg_advisory_lock(7)", &[])
            .await
            .unwrap();
        let slow = pool.execute(LOCK, &[]);
        let rest = async {
            await_lock_waiters(ctx, &locker, 1).await;
            let pipelined = pool.status().pipelined;
            if pipelined == 0 && may_run_alone && attempt < 20 {
                locker
                    .execute("SELECT pg_advisory_unlock(7)", &[])
                    .await
                    .unwrap();
                return false;
            }
            assert_eq!(pipelined, 1, "the slow statement is pipelined");
            // The stall rule is about time: let the slow statement's connection be stuck for
            // longer than it allows (5 ms; adaptive pipelining's wait budget is at most that).
            ctx.sleep(Duration::from_millis(20)).await;
            let fast = join_all((0..12).map(|_| pool.execute("SELECT 12", &[])));
            let fast = within(
                ctx,
                Duration::from_secs(10),
                "statements on the other connection",
                fast,
            )
            .await;
            assert!(fast.iter().all(|r| r.is_ok()));
            assert_eq!(
                pool.status().pipelined,
                1,
                "only the slow statement is left"
            );
            locker
                .execute("SELECT pg_advisory_unlock(7)", &[])
                .await
                .unwrap();
            true
        };
        let (slow, done) = futures::join!(slow, rest);
        slow.unwrap();
        if done {
            eprintln!("stalled connection avoided (attempt {attempt})");
            break;
        }
    }
    assert_eq!(pool.status().total, 2);
    assert_settled(ctx, &pool).await;
}

/// Sequential statements rotate over the free connections (least recently used first) when the
/// pool does not shrink, so each finds a backend that settled since its last statement.
pub async fn sequential_statements_rotate_over_connections(ctx: &Ctx) {
    rotation(ctx, 1).await;
}

/// The same with pipelining on: a statement alone on the pool is placed like a checkout.
pub async fn sequential_pipelined_statements_rotate(ctx: &Ctx) {
    rotation(ctx, 4).await;
}

async fn rotation(ctx: &Ctx, depth: usize) {
    let pool = builder(ctx)
        .size(3)
        .pipeline(depth)
        .connect()
        .await
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(pool_pid(&pool).await);
    }
    let distinct: HashSet<i32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert_eq!(pids[..3], pids[3..], "the same order each round: {pids:?}");
    assert_eq!(pool.status().total, 3, "rotation never stretches");
    assert_settled(ctx, &pool).await;
}
