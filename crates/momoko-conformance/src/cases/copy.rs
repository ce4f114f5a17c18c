//! COPY through the pool and on held connections: in (text, CSV, binary) and out, and a COPY
//! that fails or is dropped leaves its connection clean: idle, reused, nothing half-stored.

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use momoko_core::{SqlState, TransactionStatus, Type};

use crate::support::{assert_settled, backend_pid, pool_pid, scalar};
use crate::Ctx;

async fn rows(pool: &momoko_core::Pool, table: &str) -> i64 {
    pool.execute(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .scalar()
        .unwrap()
}

/// COPY in (CSV through the pool, a `Sink` of chunks on a connection, binary typed rows inside
/// a transaction) and out (a stream), each leaving its connection idle at once: the same pooled
/// connection serves the next statement, and a borrowed one reports `Idle`.
pub async fn copy_in_and_out(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    pool.execute("CREATE TABLE c (id int PRIMARY KEY, name text)", &[])
        .await
        .unwrap();
    let pid = pool_pid(&pool).await;
    let discarded = pool.counters().discarded;

    let mut copy = pool
        .copy_in("COPY c (id, name) FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    copy.send("1,pen\n").await.unwrap();
    copy.send(String::from("2,\"ink, blue\"\n")).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 2);
    assert_eq!(pool_pid(&pool).await, pid, "the connection came back idle");

    let mut conn = ctx.connect().await;
    let mut sink = conn.copy_in("COPY c (id, name) FROM STDIN").await.unwrap();
    assert_eq!(
        conn.transaction_status(),
        TransactionStatus::Active,
        "mid-COPY the session is never idle"
    );
    let chunks = futures::stream::iter((3..=1000).map(|i| Ok(Bytes::from(format!("{i}\tn{i}\n")))));
    sink.send_all(&mut chunks.boxed()).await.unwrap();
    sink.close().await.unwrap();
    drop(sink);
    assert_eq!(
        conn.transaction_status(),
        TransactionStatus::Idle,
        "nothing in flight after the COPY"
    );
    assert_eq!(rows(&pool, "c").await, 1000);

    let tx = conn.begin().await.unwrap();
    let mut binary = tx
        .copy_in_binary(
            "COPY c (id, name) FROM STDIN (FORMAT binary)",
            &[Type::INT4, Type::TEXT],
        )
        .await
        .unwrap();
    for id in 1001..=2000i32 {
        binary.write(&[&id, &format!("b{id}")]).await.unwrap();
    }
    assert_eq!(binary.finish().await.unwrap(), 1000);
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    assert_eq!(rows(&pool, "c").await, 1000, "not committed yet");
    tx.commit().await.unwrap();
    assert_eq!(rows(&pool, "c").await, 2000);

    let out: Vec<Bytes> = pool
        .copy_out("COPY (SELECT id, name FROM c WHERE id <= 2 ORDER BY id) TO STDOUT (FORMAT csv)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: String = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text, "1,pen\n2,\"ink, blue\"\n");
    let lines = conn
        .copy_out("COPY c TO STDOUT")
        .await
        .unwrap()
        .try_fold(0usize, |n, chunk| async move {
            Ok(n + chunk.iter().filter(|b| **b == b'\n').count())
        })
        .await
        .unwrap();
    assert_eq!(lines, 2000);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);

    assert_eq!(pool_pid(&pool).await, pid);
    assert_eq!(
        pool.counters().discarded,
        discarded,
        "no connection was lost"
    );
    assert_settled(ctx, &pool).await;
}

/// A COPY refused by the server, one dropped mid-way (in and out), and a bad value in a binary
/// COPY: nothing half-stored, and the connection comes back clean and is reused.
pub async fn failed_and_dropped_copy_leave_the_pool_clean(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    pool.execute("CREATE TABLE f (id int PRIMARY KEY)", &[])
        .await
        .unwrap();
    let pid = pool_pid(&pool).await;
    let discarded = pool.counters().discarded;

    // Bad data: the server refuses the whole COPY.
    let mut copy = pool.copy_in("COPY f FROM STDIN").await.unwrap();
    copy.send("1\n2\nnot a number\n").await.unwrap();
    let e = copy.finish().await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION),
        "{e}"
    );
    assert_eq!(rows(&pool, "f").await, 0, "nothing of the failed COPY");

    // A duplicate key found at the end.
    let mut copy = pool.copy_in("COPY f FROM STDIN").await.unwrap();
    copy.send("1\n1\n").await.unwrap();
    let e = copy.finish().await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");

    // Dropped before `finish`: abandoned.
    {
        let mut copy = pool.copy_in("COPY f FROM STDIN").await.unwrap();
        for i in 0..10_000 {
            copy.send(format!("{i}\n")).await.unwrap();
        }
    }
    assert_eq!(rows(&pool, "f").await, 0, "nothing of the dropped COPY");

    // Refused at its start (a missing table): the server answers tokio-postgres' two Syncs
    // with two ReadyForQuery, one more than tokio-postgres expects, so the connection is
    // closed rather than let that answer reach the next statement.
    let closed = pool.counters().discarded;
    let e = pool
        .copy_in("COPY no_such_table FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e}");
    assert_eq!(
        rows(&pool, "f").await,
        0,
        "the next statement gets its own answer"
    );
    assert_eq!(
        pool.counters().discarded,
        closed + 1,
        "{:?}",
        pool.counters()
    );

    // A binary COPY with a value of the wrong type: that row is refused, the rest stored.
    let mut binary = pool
        .copy_in_binary("COPY f FROM STDIN (FORMAT binary)", &[Type::INT4])
        .await
        .unwrap();
    binary.write(&[&1i32]).await.unwrap();
    let e = binary.write(&[&"two"]).await.unwrap_err();
    assert!(e.is_parameter(), "{e:?}");
    let e = binary.write(&[&2i32, &3i32]).await.unwrap_err();
    assert!(e.is_parameter(), "{e:?}");
    binary.write(&[&2i32]).await.unwrap();
    assert_eq!(binary.finish().await.unwrap(), 2);

    // A COPY out dropped after its first chunk of a large result.
    {
        let mut out = pool
            .copy_out(
                "COPY (SELECT g, repeat('z', 100) FROM generate_series(1, 2000000) g) TO STDOUT",
            )
            .await
            .unwrap();
        out.next().await.unwrap().unwrap();
    }
    assert_eq!(rows(&pool, "f").await, 2);
    assert_settled(ctx, &pool).await;
    // Reuse is bounded by the return check's second: a dropped COPY whose rest takes longer to
    // arrive (2 million rows out, or a loaded machine) costs its connection instead. Never
    // asserted: what counts is that nobody got a connection mid-COPY (the answers above).
    let lost = pool.counters().discarded - discarded;
    eprintln!("failed_and_dropped_copy_leave_the_pool_clean: {lost} connection(s) closed instead of reused (pid {pid})");

    // On a borrowed connection inside a transaction: a failed COPY fails the transaction block,
    // which rolls back cleanly; a dropped one is discarded before the next statement.
    let mut conn = ctx.connect().await;
    let conn_pid = backend_pid(&conn).await;
    {
        let copy = conn.copy_in("COPY f FROM STDIN").await.unwrap();
        drop(copy);
    }
    let n: i32 = scalar(&conn, "SELECT 5", &[]).await;
    assert_eq!(n, 5);
    let tx = conn.begin().await.unwrap();
    let mut copy = tx.copy_in("COPY f FROM STDIN").await.unwrap();
    copy.send("7\nseven\n").await.unwrap();
    copy.finish().await.unwrap_err();
    // The error is in; the failed block's ReadyForQuery may still be on its way.
    assert!(
        matches!(
            tx.transaction_status(),
            TransactionStatus::InError | TransactionStatus::Active
        ),
        "{:?}",
        tx.transaction_status()
    );
    tx.rollback().await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(backend_pid(&conn).await, conn_pid);
    assert_eq!(rows(&pool, "f").await, 2);

    // A refused COPY on a borrowed connection: the connection reports itself closed, and its
    // next statement fails as such instead of reading the other COPY's answer.
    let e = conn
        .copy_in("COPY no_such_table FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e}");
    assert!(conn.is_closed());
    assert_eq!(conn.transaction_status(), TransactionStatus::Unknown);
    let e = conn.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(e.is_closed(), "{e:?}");
}
