//! The exact-state engine: what the pool knows about each connection comes from the server, so
//! a connection handed to the next caller is idle, alive and clean, whatever the SQL text said,
//! and a failure on a connection that died silently is never ambiguous when it could have been
//! avoided.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures::future::join_all;
use momoko_core::{Connection, Pool, TransactionStatus};
use momoko_testkit::FaultProxy;

use crate::support::{
    assert_settled, backend_pid, drop_off_thread, eventually, pool_pid, scalar, within,
};
use crate::Ctx;

fn server_addr(ctx: &Ctx) -> SocketAddr {
    let cluster = ctx.db.cluster();
    (cluster.host(), cluster.port())
        .to_socket_addrs()
        .expect("resolve the test server")
        .next()
        .expect("the test server has an address")
}

fn proxy(ctx: &Ctx) -> FaultProxy {
    FaultProxy::start(server_addr(ctx)).expect("start the proxy")
}

/// Rows of `table` that another session sees (so only committed ones).
async fn committed_rows(ctx: &Ctx, table: &str) -> i64 {
    let observer = ctx.connect().await;
    scalar(&observer, &format!("SELECT count(*) FROM {table}"), &[]).await
}

/// Statements that open a transaction block without starting with `BEGIN` (a comment first, a
/// multi-statement string, `START TRANSACTION` in lower case after blanks) leave the connection
/// inside the block; the pool sees it from the server's ReadyForQuery and rolls it back before
/// anyone else gets the connection, so the next caller's write is committed, not swallowed.
pub async fn transaction_opened_by_any_text_is_never_handed_on(ctx: &Ctx) {
    for pipeline in [1, 8] {
        let pool = ctx
            .pool_builder()
            .size(1)
            .pipeline(pipeline)
            .connect()
            .await
            .unwrap();
        let table = format!("handed_on_{pipeline}");
        pool.execute(&format!("CREATE TABLE {table} (n int)"), &[])
            .await
            .unwrap();
        let insert = format!("INSERT INTO {table} VALUES (1)");
        let openers = [
            "/* a comment first */ BEGIN",
            "-- a line comment\nBEGIN",
            "   start transaction isolation level serializable",
            "SELECT 1; BEGIN",
        ];
        for (i, opener) in openers.iter().enumerate() {
            pool.execute(opener, &[]).await.unwrap();
            let c = pool.execute(&insert, &[]).await.unwrap();
            assert_eq!(c.rowcount(), Some(1));
            assert_eq!(
                committed_rows(ctx, &table).await,
                i as i64 + 1,
                "pipeline {pipeline}: after {opener:?} the next caller's INSERT was committed"
            );
        }
        // The same through a held connection that is given back inside the block.
        let conn = pool.getconn().await.unwrap();
        conn.batch_execute("/* hidden */ BEGIN").await.unwrap();
        conn.execute(&insert, &[]).await.unwrap();
        assert_eq!(conn.transaction_status(), TransactionStatus::InTransaction);
        drop(conn);
        let conn = pool.getconn().await.unwrap();
        assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
        drop(conn);
        assert_eq!(
            committed_rows(ctx, &table).await,
            openers.len() as i64,
            "pipeline {pipeline}: the held connection's open transaction was rolled back"
        );
        assert!(pool.counters().checks >= 1, "{:?}", pool.counters());
        assert_settled(ctx, &pool).await;
        pool.close().await;
    }
}

/// With pipelining, a statement the pool has not yet seen leave a connection idle goes last in
/// its pipeline: when it opens a transaction block, no statement of another caller was sent
/// behind it, and every concurrent write is committed.
pub async fn pipelined_opener_never_captures_other_statements(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(2)
        .pipeline(16)
        .connect()
        .await
        .unwrap();
    pool.execute("CREATE TABLE captured (n int)", &[])
        .await
        .unwrap();
    const INSERT: &str = "INSERT INTO captured VALUES ($1)";
    pool.execute(INSERT, &[&0i32]).await.unwrap();
    let writes = (1..=40i32).map(|i| {
        let pool = &pool;
        async move {
            if i % 10 == 0 {
                // A different opener each time, so none is known yet.
                pool.execute(&format!("/* {i} */ BEGIN"), &[])
                    .await
                    .unwrap();
            }
            pool.execute(INSERT, &[&i]).await.unwrap();
        }
    });
    join_all(writes).await;
    assert_eq!(
        committed_rows(ctx, "captured").await,
        41,
        "every acknowledged write is visible to another session"
    );
    assert_settled(ctx, &pool).await;
}

/// A cached statement goes out as Bind/Execute at once; on a connection that died silently its
/// failure would be ambiguous. A connection quiet for longer than the liveness window is proven
/// alive first: here the proof fails, nothing was sent, and the statement runs once on a new
/// connection.
pub async fn cached_statement_on_a_silently_dead_connection(ctx: &Ctx) {
    let proxy = proxy(ctx);
    let pool = Pool::builder(&proxy.dsn_for(&ctx.db), ctx.executor.clone())
        .size(1)
        .connect_timeout(Duration::from_secs(1))
        // Every cached statement is preceded by a proof (the window is what is under test, not
        // the time it takes to pass).
        .liveness_window(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    pool.execute("CREATE TABLE silent (n int)", &[])
        .await
        .unwrap();
    const INSERT: &str = "INSERT INTO silent VALUES ($1)";
    pool.execute(INSERT, &[&1i32]).await.unwrap();
    let first_pid = pool_pid(&pool).await;
    proxy.silence_all();
    let c = within(
        ctx,
        Duration::from_secs(20),
        "the insert on a silently dead connection",
        pool.execute(INSERT, &[&2i32]),
    )
    .await
    .expect("retried on a live connection");
    assert_eq!(c.rowcount(), Some(1));
    assert_ne!(pool_pid(&pool).await, first_pid, "a new connection");
    let observer = ctx.connect().await;
    let rows: Vec<i32> = observer
        .execute("SELECT n FROM silent ORDER BY n", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [1, 2], "the second insert ran exactly once");
    let counters = pool.counters();
    assert_eq!(counters.retries, 1, "{counters:?}");
    pool.close().await;
    drop_off_thread(proxy).await;
}

/// `getconn` proves its connection alive, like Momoko's `getconn(ping=True)`: after a silent
/// disconnect it hands out a working connection, not the dead one.
pub async fn getconn_after_a_silent_disconnect(ctx: &Ctx) {
    let proxy = proxy(ctx);
    let pool = Pool::builder(&proxy.dsn_for(&ctx.db), ctx.executor.clone())
        .size(1)
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let first = pool_pid(&pool).await;
    proxy.silence_all();
    let conn = within(
        ctx,
        Duration::from_secs(20),
        "getconn after a silent disconnect",
        pool.getconn(),
    )
    .await
    .expect("a live connection");
    let second = within(
        ctx,
        Duration::from_secs(5),
        "a statement on the connection getconn gave",
        backend_pid(&conn),
    )
    .await;
    assert_ne!(first, second);
    drop(conn);
    assert_settled(ctx, &pool).await;
    pool.close().await;
    drop_off_thread(proxy).await;
}

/// A held connection given back inside a transaction is rolled back off the caller's path. When
/// that `ROLLBACK`'s answer is lost (the connection went silent), the check is bounded by the
/// pool itself, counted as checking (not busy), and the next caller gets a new connection in
/// far less than the connect timeout or its own `acquire_timeout`.
pub async fn lost_reply_of_the_return_check_costs_no_wait(ctx: &Ctx) {
    let proxy = proxy(ctx);
    let pool = Pool::builder(&proxy.dsn_for(&ctx.db), ctx.executor.clone())
        .size(1)
        .max_size(1)
        // Long enough that waiting for either would show.
        .connect_timeout(Duration::from_secs(30))
        .acquire_timeout(Duration::from_secs(4))
        .connect()
        .await
        .unwrap();
    let conn = pool.getconn().await.unwrap();
    let first = backend_pid(&conn).await;
    conn.batch_execute("BEGIN").await.unwrap();
    proxy.silence_all();
    drop(conn);
    let s = pool.status();
    assert_eq!(
        (s.busy, s.checking),
        (0, 1),
        "a connection being checked is not busy: {s:?}"
    );
    let conn = pool
        .getconn()
        .await
        .expect("a new connection before acquire_timeout");
    assert_ne!(backend_pid(&conn).await, first);
    drop(conn);
    assert_settled(ctx, &pool).await;
    assert_eq!(pool.status().checking, 0);
    pool.close().await;
    drop_off_thread(proxy).await;
}

/// Concurrent callers of one new statement on one connection share one Parse: the server holds
/// one prepared statement, not one per caller.
pub async fn concurrent_prepare_is_single_flight(ctx: &Ctx) {
    const SQL: &str = "SELECT 1 AS single_flight";
    let count = "SELECT count(*)::int FROM pg_prepared_statements WHERE statement = $1";
    // A connection used by many callers at once.
    let conn = ctx.connect().await;
    let results = join_all((0..32).map(|_| conn.execute(SQL, &[]))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(scalar::<i32>(&conn, count, &[&SQL]).await, 1);
    // And through a pipelining pool on a fresh connection.
    let pool = ctx
        .pool_builder()
        .size(1)
        .pipeline(32)
        .connect()
        .await
        .unwrap();
    let results = join_all((0..32).map(|_| pool.execute(SQL, &[]))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let n: i32 = pool
        .execute(count, &[&SQL])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(n, 1, "one prepared statement on the pool's connection");
    assert_settled(ctx, &pool).await;
}

/// A spike of short statements that the existing connection clears before a new one could be
/// ready opens few connections (connect latency 150 ms, 50 callers, 2 ms statements: a pool
/// that dials once per waiter opens 50), while a burst of long statements still stretches fully.
pub async fn growth_is_paced_pool_wide(ctx: &Ctx) {
    let proxy = proxy(ctx);
    proxy.set_connect_delay(Duration::from_millis(150));
    let pool = Pool::builder(&proxy.dsn_for(&ctx.db), ctx.executor.clone())
        .size(1)
        .max_size(50)
        .connect()
        .await
        .unwrap();
    pool.execute("SELECT pg_sleep(0.002)", &[]).await.unwrap();
    let spike = join_all((0..50).map(|_| pool.execute("SELECT pg_sleep(0.002)", &[]))).await;
    assert!(spike.iter().all(|r| r.is_ok()));
    eventually(ctx, "connects settle", || pool.status().pending == 0).await;
    let opened = pool.counters().connections_opened;
    assert!(
        opened <= 5,
        "a spike of 50 short statements dialled {opened} connections"
    );
    pool.close().await;

    let pool = Pool::builder(&proxy.dsn_for(&ctx.db), ctx.executor.clone())
        .size(1)
        .max_size(4)
        .connect()
        .await
        .unwrap();
    let pids = join_all((0..4).map(|_| async {
        pool.execute("SELECT pg_backend_pid() FROM pg_sleep(1)", &[])
            .await
            .unwrap()
            .scalar::<i32>()
            .unwrap()
    }))
    .await;
    let distinct: std::collections::HashSet<i32> = pids.into_iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "four long statements ran on four connections"
    );
    pool.close().await;
    drop_off_thread(proxy).await;
}

/// A parameterless string of several statements runs like in Momoko and psycopg2: on the simple
/// protocol, as one implicit transaction, with the last statement's count and rows (as text).
/// A statement without a count reports none.
pub async fn multi_statement_execute(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let c = pool
        .execute(
            "CREATE TABLE multi (n int); INSERT INTO multi VALUES (1), (2); \
             SELECT n FROM multi ORDER BY n",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(c.rowcount(), Some(2));
    let texts: Vec<Option<&str>> = c.text_rows().iter().map(|r| r.get(0)).collect();
    assert_eq!(texts, [Some("1"), Some("2")]);
    let c = pool
        .execute(
            "INSERT INTO multi VALUES (3); UPDATE multi SET n = n + 10",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(c.rowcount(), Some(3), "the last statement's count");
    // One implicit transaction: a failure undoes the statements before it.
    let e = pool
        .execute("INSERT INTO multi VALUES (4); SELECT 1/0", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22012"));
    let n: i64 = pool
        .execute("SELECT count(*) FROM multi", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(n, 3);
    let c = pool
        .execute("CREATE TABLE no_count (n int)", &[])
        .await
        .unwrap();
    assert_eq!(c.rowcount(), None, "CREATE TABLE reports no count");
    assert_settled(ctx, &pool).await;
}

/// The connection's transaction status follows the server's ReadyForQuery messages, including
/// for statements sent through the raw tokio-postgres client.
pub async fn transaction_status_follows_the_server(ctx: &Ctx) {
    let conn: Connection = ctx.connect().await;
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    conn.batch_execute("BEGIN").await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::InTransaction);
    assert!(conn.execute("SELECT 1/0", &[]).await.is_err());
    conn.batch_execute("").await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::InError);
    conn.client().batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(
        conn.parameter_status("server_version").is_some(),
        "the server reports its version at start-up"
    );
    conn.batch_execute("SET application_name = 'state-case'")
        .await
        .unwrap();
    assert_eq!(
        conn.parameter_status("application_name").as_deref(),
        Some("state-case"),
        "a reported setting's change is seen"
    );
}
