//! Row streams: rows yielded as they arrive, memory flat whatever the result's size, and a
//! stream dropped halfway never leaves its connection to anyone mid-result.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use momoko_core::{Connection, SqlState, TransactionStatus};

use crate::support::{assert_settled, backend_pid, pool_pid, scalar, within};
use crate::Ctx;

/// Rows in the big result.
const MILLION: i64 = 1_000_000;

/// How far the server may run ahead of the application, in rows of ~120 bytes. The operating
/// system's socket buffers hold the bulk of it (on loopback, up to a few megabytes each way),
/// then one read of the client and the server's 8 kB output buffer. A buffered result would be
/// a million rows ahead when the first row is read; measured on Linux loopback: 36,916 rows.
const AHEAD_BOUND: i64 = 150_000;

/// How many rows the server has produced so far (a sequence another session reads: sequences
/// are not transactional, so every `nextval` is visible at once).
async fn produced(observer: &Connection) -> i64 {
    scalar(observer, "SELECT last_value FROM produced", &[]).await
}

/// A million-row result streamed through a pool: the server never runs more than 150,000 rows
/// (`AHEAD_BOUND`) ahead of the rows the application has taken, measured every 100,000 rows
/// from the server's side (rows produced minus rows taken covers every buffer in between), and
/// every row arrives, in order.
pub async fn million_row_stream_stays_flat(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let observer = ctx.connect().await;
    observer
        .batch_execute("CREATE SEQUENCE produced")
        .await
        .unwrap();
    let mut rows = pool
        .execute_stream(
            "SELECT nextval('produced') AS n, repeat('x', 100) AS filler \
             FROM generate_series(1, $1::int8) AS g",
            &[&MILLION],
        )
        .await
        .unwrap();
    assert_eq!(rows.columns()[0].name(), "n");
    let mut taken = 0i64;
    let mut most_ahead = 0i64;
    while let Some(row) = within(ctx, Duration::from_secs(300), "the next row", rows.next()).await {
        let row = row.unwrap();
        taken += 1;
        assert_eq!(row.get::<_, i64>(0), taken, "rows arrive in order");
        if taken == 1 || taken % 100_000 == 0 {
            // The application pauses here: the server fills the buffers in between and waits.
            let ahead = produced(&observer).await - taken;
            most_ahead = most_ahead.max(ahead);
            assert!(
                ahead <= AHEAD_BOUND,
                "after {taken} rows the server is {ahead} rows ahead"
            );
        }
    }
    assert_eq!(taken, MILLION);
    assert_eq!(rows.rows_affected(), Some(MILLION as u64));
    eprintln!("million_row_stream_stays_flat: the server ran at most {most_ahead} rows ahead");
    drop(rows);
    assert_settled(ctx, &pool).await;
}

/// A stream dropped before its end: on a pool, a small remainder is drained and the connection
/// reused, a large one costs the connection; either way the next caller gets its own answer.
/// On a borrowed connection or inside a transaction, the next statement waits behind the rest
/// and gets its own answer, outside any leftover state. An error in the middle of a result
/// comes out of the stream and leaves the connection usable.
pub async fn stream_dropped_halfway(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let pid = pool_pid(&pool).await;

    // A small remainder: drained off the caller's path; the same connection serves on.
    {
        let mut rows = pool
            .execute_stream("SELECT g FROM generate_series(1, 1000) AS g", &[])
            .await
            .unwrap();
        for expected in 1..=10 {
            let n: i32 = rows.next().await.unwrap().unwrap().get(0);
            assert_eq!(n, expected);
        }
    }
    let discarded = pool.counters().discarded;
    assert_eq!(echo(&pool, 42).await, 42, "the next caller's own answer");
    assert_eq!(
        pool_pid(&pool).await,
        pid,
        "the drained connection was reused"
    );
    assert_eq!(pool.counters().discarded, discarded);

    // A large remainder: never handed on mid-result (drained or closed).
    {
        let mut rows = pool
            .execute_stream(
                "SELECT g, repeat('y', 200) FROM generate_series(1, 5000000) AS g",
                &[],
            )
            .await
            .unwrap();
        for _ in 0..10 {
            rows.next().await.unwrap().unwrap();
        }
    }
    for k in 0..5 {
        assert_eq!(echo(&pool, k).await, k, "the next caller's own answer");
    }
    assert_settled(ctx, &pool).await;

    // A borrowed connection: the rest is read and discarded; the next statement waits behind.
    let conn = ctx.connect().await;
    let conn_pid = backend_pid(&conn).await;
    {
        let mut rows = conn
            .execute_stream("SELECT g FROM generate_series(1, 200000) AS g", &[])
            .await
            .unwrap();
        rows.next().await.unwrap().unwrap();
    }
    let n: i32 = scalar(&conn, "SELECT 42", &[]).await;
    assert_eq!(n, 42);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(backend_pid(&conn).await, conn_pid);

    // Inside a transaction: the transaction goes on after the dropped stream.
    let mut conn = conn;
    conn.batch_execute("CREATE TABLE st (n int)").await.unwrap();
    let tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO st VALUES (1)", &[]).await.unwrap();
    {
        let mut rows = tx
            .execute_stream("SELECT g FROM generate_series(1, 50000) AS g", &[])
            .await
            .unwrap();
        rows.next().await.unwrap().unwrap();
    }
    tx.execute("INSERT INTO st VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let n: i64 = scalar(&conn, "SELECT count(*) FROM st", &[]).await;
    assert_eq!(n, 2);

    // An error in the middle of the result comes out of the stream.
    let outcome: Vec<Result<i32, momoko_core::Error>> = conn
        .execute_stream(
            "SELECT 1000 / (500 - g) FROM generate_series(1, 1000) AS g",
            &[],
        )
        .await
        .unwrap()
        .map_ok(|row| row.get::<_, i32>(0))
        .collect()
        .await;
    assert_eq!(outcome.len(), 500, "499 rows, then the error, then nothing");
    let e = outcome.last().unwrap().as_ref().unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO), "{e}");
    let n: i32 = scalar(&conn, "SELECT 7", &[]).await;
    assert_eq!(n, 7);
    let total = conn
        .execute_stream("SELECT g FROM generate_series(1, 3) AS g", &[])
        .await
        .unwrap()
        .try_fold(
            0i32,
            |sum, row| async move { Ok(sum + row.get::<_, i32>(0)) },
        )
        .await
        .unwrap();
    assert_eq!(total, 6);
}

/// `SELECT $1` on the pool, read back.
async fn echo(pool: &momoko_core::Pool, n: i32) -> i32 {
    pool.execute("SELECT $1::int4", &[&n])
        .await
        .unwrap()
        .scalar()
        .unwrap()
}
