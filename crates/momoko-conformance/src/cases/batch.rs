//! Batches: N statements in one round trip, run in order, one result per statement; the
//! non-atomic form isolates each statement's error, the atomic form undoes everything when one
//! fails and says which.

use momoko_core::{Connection, Param, Query, SqlState, TransactionStatus};

use crate::support::{assert_settled, scalar};
use crate::Ctx;

async fn values(observer: &Connection, sql: &str) -> Vec<i32> {
    observer
        .execute(sql, &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect()
}

/// Each statement is its own implicit transaction: an error in the middle (a duplicate key, a
/// statement the server cannot prepare) is that statement's result only; the others run, in
/// the order given, and are committed.
pub async fn batch_isolates_errors(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let conn = ctx.connect().await;
    let observer = ctx.connect().await;
    conn.batch_execute("CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE seq (k serial, v int)")
        .await
        .unwrap();

    let results = conn
        .batch([
            Query::new("INSERT INTO b VALUES ($1)", &[&1i32]),
            Query::new("INSERT INTO b VALUES ($1)", &[&1i32]),
            "SELEC oops".into(),
            Query::new("INSERT INTO b VALUES ($1)", &[&2i32]),
            Query::new("INSERT INTO b VALUES ($1, $2)", &[&3i32]),
            "SELECT count(*) FROM b".into(),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().unwrap().rowcount(), Some(1));
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(e.batch_statement(), Some(1));
    let e = results[2].as_ref().unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e}");
    assert_eq!(e.batch_statement(), Some(2));
    assert!(results[3].is_ok());
    let e = results[4].as_ref().unwrap_err();
    assert!(e.is_parameter() || e.is_db(), "{e:?}");
    assert_eq!(e.batch_statement(), Some(4));
    assert_eq!(results[5].as_ref().unwrap().scalar::<i64>().unwrap(), 2);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        values(&observer, "SELECT id FROM b ORDER BY id").await,
        [1, 2]
    );

    // Order: 200 inserts through the pool, numbered by a serial as the server runs them.
    let numbers: Vec<i32> = (0..200).collect();
    let params: Vec<[Param<'_>; 1]> = numbers.iter().map(|v| [v as Param<'_>]).collect();
    let results = pool
        .batch(
            params
                .iter()
                .map(|p| Query::new("INSERT INTO seq (v) VALUES ($1)", p)),
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        values(&observer, "SELECT v FROM seq ORDER BY k").await,
        numbers,
        "the server ran them in the order given"
    );
    assert_settled(ctx, &pool).await;
}

/// All or nothing: a failing statement in the middle undoes the statements before it (the
/// server answers the pipelined `COMMIT` of the aborted block with a rollback), the error names
/// the statement, and the connection is idle; success commits every statement; inside a
/// transaction block the batch is a savepoint, and its failure leaves the block usable.
pub async fn batch_atomic_is_all_or_nothing(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let mut conn = ctx.connect().await;
    let observer = ctx.connect().await;
    conn.batch_execute("CREATE TABLE a (id int PRIMARY KEY)")
        .await
        .unwrap();

    let e = conn
        .batch_atomic([
            Query::new("INSERT INTO a VALUES ($1)", &[&1i32]),
            Query::new("INSERT INTO a VALUES ($1)", &[&2i32]),
            Query::new("INSERT INTO a VALUES ($1)", &[&1i32]),
            Query::new("INSERT INTO a VALUES ($1)", &[&3i32]),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(e.batch_statement(), Some(2));
    assert!(e.to_string().contains("statement 3 of 4"), "{e}");
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        scalar::<i64>(&observer, "SELECT count(*) FROM a", &[]).await,
        0
    );

    // A statement the server cannot prepare: refused before anything runs.
    let e = conn
        .batch_atomic([
            Query::new("INSERT INTO a VALUES ($1)", &[&1i32]),
            "INSERT INTO no_such_table VALUES (1)".into(),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e}");
    assert_eq!(e.batch_statement(), Some(1));
    assert_eq!(
        scalar::<i64>(&observer, "SELECT count(*) FROM a", &[]).await,
        0
    );

    let cursors = pool
        .batch_atomic([
            Query::new("INSERT INTO a VALUES ($1)", &[&1i32]),
            Query::new("INSERT INTO a VALUES ($1)", &[&2i32]),
            "SELECT count(*) FROM a".into(),
        ])
        .await
        .unwrap();
    assert_eq!(cursors.len(), 3);
    assert_eq!(
        cursors[2].scalar::<i64>().unwrap(),
        2,
        "seen inside the batch"
    );
    assert_eq!(
        values(&observer, "SELECT id FROM a ORDER BY id").await,
        [1, 2]
    );

    // Inside a transaction: a savepoint.
    let tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO a VALUES (10)", &[]).await.unwrap();
    let e = tx
        .batch_atomic([
            Query::new("INSERT INTO a VALUES ($1)", &[&11i32]),
            Query::new("INSERT INTO a VALUES ($1)", &[&10i32]),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.batch_statement(), Some(1));
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.batch_atomic([Query::new("INSERT INTO a VALUES ($1)", &[&12i32])])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        values(&observer, "SELECT id FROM a ORDER BY id").await,
        [1, 2, 10, 12]
    );
    assert_settled(ctx, &pool).await;
}
