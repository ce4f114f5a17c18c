//! The query trait and the transaction guard: code written once over `Queryable` runs on a
//! pool, a connection, a held connection and a transaction alike; a guard commits, rolls back,
//! nests savepoints, takes options, and rolls back when dropped, decided from the session's
//! exact state.

use futures::TryStreamExt;
use momoko_core::{
    Connection, DynQueryable, IsolationLevel, Queryable, SqlState, TransactionOptions,
    TransactionStatus,
};

use crate::support::{assert_settled, scalar};
use crate::Ctx;

/// Rows of `table` another session sees (so only committed ones).
async fn committed(observer: &Connection, table: &str) -> i64 {
    scalar(observer, &format!("SELECT count(*) FROM {table}"), &[]).await
}

/// What the generic function reports, to compare across the targets.
#[derive(Debug, PartialEq)]
struct Report {
    greeting: String,
    sum: i64,
    streamed: Vec<i32>,
    rendered: String,
    called: String,
}

/// Application code written once: every method of the trait, parameters without casts.
async fn exercise(db: &impl Queryable, table: &str) -> Report {
    let greeting = db
        .execute("SELECT $1::text || ' ' || $2::int4", &[&"hello", &42i32])
        .await
        .unwrap()
        .scalar::<String>()
        .unwrap();
    db.batch_execute(&format!("INSERT INTO {table} VALUES (1), (2)"))
        .await
        .unwrap();
    let sum: i64 = db
        .fetch_scalar(&format!("SELECT sum(n) FROM {table}"), &[])
        .await
        .unwrap();
    let streamed: Vec<i32> = db
        .execute_stream("SELECT g FROM generate_series(1, $1) AS g", &[&3i32])
        .await
        .unwrap()
        .map_ok(|row| row.get::<_, i32>(0))
        .try_collect()
        .await
        .unwrap();
    let rendered = db.mogrify("SELECT $1::int4", &[&7i32]).await.unwrap();
    let called = db
        .callproc("lower", &[&"HeLLo"])
        .await
        .unwrap()
        .scalar::<String>()
        .unwrap();
    Report {
        greeting,
        sum,
        streamed,
        rendered,
        called,
    }
}

/// The same generic function on a pool, a connection, a held pooled connection, a transaction
/// and a trait object gives the same results; inside the transaction its writes stay invisible
/// to others until the commit.
pub async fn queryable_is_generic_over_every_target(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(1)
        .max_size(2)
        .connect()
        .await
        .unwrap();
    let conn = ctx.connect().await;
    let observer = ctx.connect().await;
    for t in ["q_pool", "q_conn", "q_held", "q_tx", "q_dyn"] {
        pool.execute(&format!("CREATE TABLE {t} (n int)"), &[])
            .await
            .unwrap();
    }
    let expected = Report {
        greeting: "hello 42".into(),
        sum: 3,
        streamed: vec![1, 2, 3],
        rendered: "SELECT 7::int4".into(),
        called: "hello".into(),
    };
    assert_eq!(exercise(&pool, "q_pool").await, expected, "pool");
    assert_eq!(exercise(&conn, "q_conn").await, expected, "connection");
    {
        let held = pool.getconn().await.unwrap();
        assert_eq!(exercise(&held, "q_held").await, expected, "held");
    }
    let tx = pool.begin().await.unwrap();
    assert_eq!(exercise(&tx, "q_tx").await, expected, "transaction");
    assert_eq!(committed(&observer, "q_tx").await, 0, "not committed yet");
    tx.commit().await.unwrap();
    assert_eq!(committed(&observer, "q_tx").await, 2, "committed");
    let object: &dyn DynQueryable = &pool;
    assert_eq!(exercise(&object, "q_dyn").await, expected, "trait object");
    assert_settled(ctx, &pool).await;
}

/// `commit` keeps the work, `rollback` undoes it, on a pool's guard, a connection's and a held
/// pooled connection's.
pub async fn guard_commits_and_rolls_back(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let mut conn = ctx.connect().await;
    let observer = ctx.connect().await;
    conn.batch_execute("CREATE TABLE g (n int)").await.unwrap();

    let tx = pool.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&1i32])
        .await
        .unwrap();
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    assert_eq!(committed(&observer, "g").await, 0);
    tx.commit().await.unwrap();
    assert_eq!(committed(&observer, "g").await, 1, "pool guard committed");

    let tx = pool.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&2i32])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(committed(&observer, "g").await, 1, "pool guard rolled back");

    let tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&3i32])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&4i32])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(committed(&observer, "g").await, 2, "connection guard");

    let mut held = pool.getconn().await.unwrap();
    let tx = held.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&5i32])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = held.begin().await.unwrap();
    tx.execute("INSERT INTO g VALUES ($1)", &[&6i32])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    drop(held);
    assert_eq!(committed(&observer, "g").await, 3, "held connection guard");
    let kept: Vec<i32> = observer
        .execute("SELECT n FROM g ORDER BY n", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [1, 3, 5]);
    assert_settled(ctx, &pool).await;
}

/// A guard dropped uncommitted rolls back off the caller's path: on a borrowed connection the
/// `ROLLBACK` is queued without waiting and the next statement runs outside any transaction
/// (its write is visible to others at once); on a pool's guard the pool rolls the connection
/// back before anyone else gets it.
pub async fn dropped_guard_rolls_back(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let mut conn = ctx.connect().await;
    let observer = ctx.connect().await;
    conn.batch_execute("CREATE TABLE d (n int)").await.unwrap();

    // A borrowed connection: nothing awaited at the drop.
    {
        let tx = conn.begin().await.unwrap();
        tx.execute("INSERT INTO d VALUES (1)", &[]).await.unwrap();
    }
    conn.execute("INSERT INTO d VALUES (2)", &[]).await.unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    let seen: Vec<i32> = observer
        .execute("SELECT n FROM d ORDER BY n", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, [2], "1 rolled back; 2 committed on its own");

    // The same with an error inside: the block is aborted, the rollback still ends it.
    {
        let tx = conn.begin().await.unwrap();
        tx.execute("SELECT 1/0", &[]).await.unwrap_err();
        // The error is in; its ReadyForQuery (failed block) may still be on its way.
        assert_ne!(tx.transaction_status(), TransactionStatus::Idle);
    }
    conn.execute("INSERT INTO d VALUES (3)", &[]).await.unwrap();
    assert_eq!(committed(&observer, "d").await, 2);

    // A pool's guard: the connection goes back and is rolled back before it is reused.
    let checks = pool.counters().checks;
    {
        let tx = pool.begin().await.unwrap();
        tx.execute("INSERT INTO d VALUES (4)", &[]).await.unwrap();
    }
    let n: i64 = pool
        .execute("SELECT count(*) FROM d WHERE n = 4", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(n, 0, "the next caller does not see the dropped work");
    pool.execute("INSERT INTO d VALUES (5)", &[]).await.unwrap();
    assert_eq!(committed(&observer, "d").await, 3, "5 committed on its own");
    assert!(pool.counters().checks > checks, "{:?}", pool.counters());

    // A held pooled connection, borrowed by the guard.
    {
        let mut held = pool.getconn().await.unwrap();
        {
            let tx = held.begin().await.unwrap();
            tx.execute("INSERT INTO d VALUES (6)", &[]).await.unwrap();
        }
        held.execute("INSERT INTO d VALUES (7)", &[]).await.unwrap();
        assert_eq!(held.transaction_status(), TransactionStatus::Idle);
    }
    let seen: Vec<i32> = observer
        .execute("SELECT n FROM d ORDER BY n", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, [2, 3, 5, 7]);
    assert_settled(ctx, &pool).await;
}

/// Savepoints nest: each level commits or rolls back alone, a dropped one rolls back to its
/// savepoint, an error inside one is undone without aborting the enclosing transaction, and a
/// guard opened on a session already inside a transaction block is a savepoint, never a
/// `COMMIT` of the block it did not open.
pub async fn savepoints_nest(ctx: &Ctx) {
    let mut conn = ctx.connect().await;
    let observer = ctx.connect().await;
    conn.batch_execute("CREATE TABLE s (n int)").await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    assert_eq!(tx.depth(), 0);
    tx.execute("INSERT INTO s VALUES (1)", &[]).await.unwrap();
    {
        let mut sp = tx.begin().await.unwrap();
        assert_eq!(sp.depth(), 1);
        sp.execute("INSERT INTO s VALUES (2)", &[]).await.unwrap();
        {
            let inner = sp.savepoint().await.unwrap();
            assert_eq!(inner.depth(), 2);
            inner
                .execute("INSERT INTO s VALUES (3)", &[])
                .await
                .unwrap();
            // Dropped: back to its savepoint.
        }
        sp.commit().await.unwrap();
    }
    {
        let sp = tx.begin().await.unwrap();
        sp.execute("INSERT INTO s VALUES (4)", &[]).await.unwrap();
        sp.rollback().await.unwrap();
    }
    {
        let sp = tx.begin().await.unwrap();
        sp.execute("INSERT INTO s VALUES (5)", &[]).await.unwrap();
        let e = sp.execute("SELECT 1/0", &[]).await.unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
        // Releasing a failed savepoint fails, and undoes it.
        let e = sp.commit().await.unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    }
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.execute("INSERT INTO s VALUES (6)", &[]).await.unwrap();
    assert_eq!(committed(&observer, "s").await, 0);
    tx.commit().await.unwrap();
    let kept: Vec<i32> = observer
        .execute("SELECT n FROM s ORDER BY n", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [1, 2, 6]);

    // A block opened with SQL: the guard is a savepoint inside it.
    conn.batch_execute("BEGIN; INSERT INTO s VALUES (7)")
        .await
        .unwrap();
    let tx = conn.begin().await.unwrap();
    assert_eq!(tx.depth(), 1);
    tx.execute("INSERT INTO s VALUES (8)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        conn.transaction_status(),
        TransactionStatus::InTransaction,
        "the guard did not commit the block it did not open"
    );
    assert_eq!(committed(&observer, "s").await, 3);
    let e = conn
        .begin_with(TransactionOptions::new().read_only(true))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), momoko_core::ErrorKind::Usage, "{e:?}");
    conn.batch_execute("COMMIT").await.unwrap();
    assert_eq!(committed(&observer, "s").await, 5);
}

/// Isolation level, read-only and deferrable reach the server; a transaction an earlier error
/// aborted is never reported as committed.
pub async fn guard_options_and_aborted_commit(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    pool.execute("CREATE TABLE o (n int)", &[]).await.unwrap();
    let tx = pool
        .begin_with(
            TransactionOptions::new()
                .isolation(IsolationLevel::Serializable)
                .read_only(true)
                .deferrable(true),
        )
        .await
        .unwrap();
    let setting = async |name: &str| -> String {
        tx.execute(&format!("SHOW {name}"), &[])
            .await
            .unwrap()
            .scalar::<String>()
            .unwrap()
    };
    assert_eq!(setting("transaction_isolation").await, "serializable");
    assert_eq!(setting("transaction_read_only").await, "on");
    assert_eq!(setting("transaction_deferrable").await, "on");
    let e = tx
        .execute("INSERT INTO o VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    tx.rollback().await.unwrap();

    let tx = pool
        .begin_with(TransactionOptions::new().isolation(IsolationLevel::RepeatableRead))
        .await
        .unwrap();
    let level: String = tx
        .fetch_scalar("SHOW transaction_isolation", &[])
        .await
        .unwrap();
    assert_eq!(level, "repeatable read");
    tx.execute("INSERT INTO o VALUES (1)", &[]).await.unwrap();
    // Swallowed: the block is aborted now.
    let _ = tx.execute("SELECT * FROM no_such_table", &[]).await;
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    let n: i64 = pool
        .fetch_scalar("SELECT count(*) FROM o", &[])
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing of the aborted transaction was committed");
    assert_settled(ctx, &pool).await;
}
