//! What momoko's data paths cost next to their nearest peers, side by side in one run, on one
//! throw-away cluster (or `DATABASE_URL`): COPY against inserts, row streams, transaction
//! guards, batches, LISTEN/NOTIFY and the query trait, each against tokio-postgres used
//! directly and, where it has the same path, deadpool-postgres.
//!
//! ```text
//! cargo run --release -p momoko-bench --bin data_paths [-- --rows N]
//! ```
//!
//! Quick figures for the notes, not the benchmark proper (`momoko-bench` measures the pools'
//! checkout paths under load): every figure is one run, printed as it is measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt, TryStreamExt};
use momoko_core::{DynQueryable, ListenerEvent, Pool, Query, Queryable};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn rate(rows: u64, took: Duration) -> String {
    format!(
        "{:>12.0} rows/s ({took:.2?})",
        rows as f64 / took.as_secs_f64()
    )
}

fn per_op(n: u32, took: Duration) -> String {
    format!(
        "{:>9.1} µs/op ({n} ops)",
        took.as_secs_f64() * 1e6 / f64::from(n)
    )
}

async fn pg(dsn: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn deadpool(dsn: &str, size: usize) -> Result<deadpool_postgres::Pool, BoxError> {
    let config: tokio_postgres::Config = dsn.parse()?;
    let manager = deadpool_postgres::Manager::new(config, NoTls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut rows: u64 = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows = args.next().ok_or("--rows N")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let (dsn, _db) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => {
            let db = momoko_testkit::test_db("data_paths");
            (db.dsn(), Some(db))
        }
    };
    let pool = momoko_tokio_pool(&dsn, 8).await?;
    let direct = pg(&dsn).await?;
    let dp = deadpool(&dsn, 8)?;
    pool.batch_execute(
        "CREATE UNLOGGED TABLE IF NOT EXISTS bulk (n int4 NOT NULL, word text NOT NULL)",
    )
    .await?;
    println!("data paths, release build, {rows} rows where rows are counted\n");

    copy_vs_insert(&pool, &direct, rows).await?;
    // The machine may be shared: the short measurements run in three interleaved rounds, so
    // that noise hits every contender alike; compare within a round.
    for round in 1..=3 {
        println!("---- round {round} of 3\n");
        streams(&pool, &direct, &dp, rows).await?;
        transactions(&pool, &direct, &dp).await?;
        batches(&pool, &direct).await?;
        notifications(&pool, &dsn).await?;
        trait_dispatch(&pool).await?;
    }
    pool.close().await;
    Ok(())
}

async fn momoko_tokio_pool(dsn: &str, size: usize) -> Result<Pool, BoxError> {
    Ok(Pool::builder(dsn, momoko_tokio::TokioExecutor::shared())
        .size(size)
        .max_size(size)
        .connect()
        .await?)
}

async fn copy_vs_insert(
    pool: &Pool,
    direct: &tokio_postgres::Client,
    rows: u64,
) -> Result<(), BoxError> {
    println!("== COPY against inserts (table bulk (n int4, word text), unlogged)");
    let n = i32::try_from(rows)?;
    let words: Vec<String> = (0..n).map(|i| format!("word {i}")).collect();

    pool.batch_execute("TRUNCATE bulk").await?;
    let t = Instant::now();
    let mut copy = pool
        .copy_in_binary(
            "COPY bulk (n, word) FROM STDIN (FORMAT binary)",
            &[Type::INT4, Type::TEXT],
        )
        .await?;
    for (i, w) in words.iter().enumerate() {
        copy.write(&[&(i as i32), w]).await?;
    }
    let stored = copy.finish().await?;
    println!("momoko copy_in_binary        {}", rate(stored, t.elapsed()));

    direct.batch_execute("TRUNCATE bulk").await?;
    let t = Instant::now();
    let sink = direct
        .copy_in("COPY bulk (n, word) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
    futures::pin_mut!(writer);
    for (i, w) in words.iter().enumerate() {
        let row: [&(dyn ToSql + Sync); 2] = [&(i as i32), w];
        writer.as_mut().write(&row).await?;
    }
    let stored = writer.finish().await?;
    println!("tokio-postgres binary COPY   {}", rate(stored, t.elapsed()));

    pool.batch_execute("TRUNCATE bulk").await?;
    let t = Instant::now();
    let mut copy = pool.copy_in("COPY bulk (n, word) FROM STDIN").await?;
    let mut chunk = String::with_capacity(64 * 1024);
    for (i, w) in words.iter().enumerate() {
        chunk.push_str(&format!("{i}\t{w}\n"));
        if chunk.len() > 60 * 1024 {
            copy.send(std::mem::take(&mut chunk)).await?;
        }
    }
    copy.send(chunk).await?;
    let stored = copy.finish().await?;
    println!("momoko copy_in (text)        {}", rate(stored, t.elapsed()));

    // The same rows through execute: 8 tasks on the pool's 8 connections, one statement each.
    pool.batch_execute("TRUNCATE bulk").await?;
    let t = Instant::now();
    let per_task = words.len().div_ceil(8);
    let tasks = words
        .chunks(per_task)
        .enumerate()
        .map(|(k, part)| async move {
            for (j, w) in part.iter().enumerate() {
                let i = (k * per_task + j) as i32;
                pool.execute("INSERT INTO bulk (n, word) VALUES ($1, $2)", &[&i, w])
                    .await?;
            }
            Ok::<_, momoko_core::Error>(())
        });
    futures::future::try_join_all(tasks).await?;
    println!("momoko execute, 8 tasks      {}", rate(rows, t.elapsed()));

    // And through atomic batches of 1000 statements on one connection.
    pool.batch_execute("TRUNCATE bulk").await?;
    let t = Instant::now();
    let numbers: Vec<i32> = (0..n).collect();
    for (ns, ws) in numbers.chunks(1000).zip(words.chunks(1000)) {
        let params: Vec<[momoko_core::Param<'_>; 2]> = ns
            .iter()
            .zip(ws)
            .map(|(i, w)| [i as momoko_core::Param<'_>, w])
            .collect();
        pool.batch_atomic(
            params
                .iter()
                .map(|p| Query::new("INSERT INTO bulk (n, word) VALUES ($1, $2)", p)),
        )
        .await?;
    }
    println!("momoko batch_atomic of 1000  {}", rate(rows, t.elapsed()));
    pool.batch_execute("TRUNCATE bulk").await?;
    println!();
    Ok(())
}

async fn streams(
    pool: &Pool,
    direct: &tokio_postgres::Client,
    dp: &deadpool_postgres::Pool,
    rows: u64,
) -> Result<(), BoxError> {
    println!("== {rows} rows of SELECT g, repeat('x', 100): streamed against buffered");
    let sql = "SELECT g, repeat('x', 100) FROM generate_series(1, $1::int8) AS g";
    let n = i64::try_from(rows)?;

    let t = Instant::now();
    let count = pool
        .execute_stream(sql, &[&n])
        .await?
        .try_fold(0u64, |c, _| async move { Ok(c + 1) })
        .await?;
    println!("momoko execute_stream        {}", rate(count, t.elapsed()));

    let t = Instant::now();
    let stream = direct.query_raw(sql, [&n as &(dyn ToSql + Sync)]).await?;
    let count = stream
        .try_fold(0u64, |c, _| async move { Ok(c + 1) })
        .await?;
    println!("tokio-postgres query_raw     {}", rate(count, t.elapsed()));

    let t = Instant::now();
    let client = dp.get().await?;
    let stream = client.query_raw(sql, [&n as &(dyn ToSql + Sync)]).await?;
    let count = stream
        .try_fold(0u64, |c, _| async move { Ok(c + 1) })
        .await?;
    drop(client);
    println!("deadpool-postgres query_raw  {}", rate(count, t.elapsed()));

    let t = Instant::now();
    let cursor = pool.execute(sql, &[&n]).await?;
    println!(
        "momoko execute (buffered)    {}",
        rate(cursor.rows().len() as u64, t.elapsed())
    );
    drop(cursor);
    println!();
    Ok(())
}

async fn transactions(
    pool: &Pool,
    direct: &tokio_postgres::Client,
    dp: &deadpool_postgres::Pool,
) -> Result<(), BoxError> {
    const N: u32 = 1000;
    println!("== a transaction: BEGIN, one UPDATE, COMMIT (sequential)");
    pool.batch_execute(
        "CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n int8); \
         INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING",
    )
    .await?;
    let update = "UPDATE counter SET n = n + $1 WHERE id = 1";

    let t = Instant::now();
    for _ in 0..N {
        let tx = pool.begin().await?;
        tx.execute(update, &[&1i64]).await?;
        tx.commit().await?;
    }
    println!("momoko pool.begin guard      {}", per_op(N, t.elapsed()));

    let t = Instant::now();
    for _ in 0..N {
        pool.transaction_with(async |tx| tx.execute(update, &[&1i64]).await)
            .await?;
    }
    println!("momoko transaction_with      {}", per_op(N, t.elapsed()));

    let mut held = pool.getconn().await?;
    let t = Instant::now();
    for _ in 0..N {
        let tx = held.begin().await?;
        tx.execute(update, &[&1i64]).await?;
        tx.commit().await?;
    }
    println!("momoko held conn.begin       {}", per_op(N, t.elapsed()));
    drop(held);

    let mut client = dp.get().await?;
    let t = Instant::now();
    for _ in 0..N {
        let tx = client.transaction().await?;
        let st = tx.prepare_cached(update).await?;
        tx.execute(&st, &[&1i64]).await?;
        tx.commit().await?;
    }
    println!("deadpool-postgres transaction{}", per_op(N, t.elapsed()));
    drop(client);

    let st = direct.prepare(update).await?;
    let t = Instant::now();
    for _ in 0..N {
        direct.batch_execute("BEGIN").await?;
        direct.execute(&st, &[&1i64]).await?;
        direct.batch_execute("COMMIT").await?;
    }
    println!("tokio-postgres BEGIN/COMMIT  {}", per_op(N, t.elapsed()));
    println!();
    Ok(())
}

async fn batches(pool: &Pool, direct: &tokio_postgres::Client) -> Result<(), BoxError> {
    const N: u32 = 700;
    println!("== 10 UPDATEs as one transaction");
    let update = "UPDATE counter SET n = n + $1 WHERE id = 1";
    let one = 1i64;
    let params: [momoko_core::Param<'_>; 1] = [&one];

    let t = Instant::now();
    for _ in 0..N {
        pool.batch_atomic((0..10).map(|_| Query::new(update, &params)))
            .await?;
    }
    println!("momoko batch_atomic          {}", per_op(N, t.elapsed()));

    let t = Instant::now();
    for _ in 0..N {
        pool.batch((0..10).map(|_| Query::new(update, &params)))
            .await?;
    }
    println!("momoko batch (not atomic)    {}", per_op(N, t.elapsed()));

    let t = Instant::now();
    for _ in 0..N {
        let tx = pool.begin().await?;
        for _ in 0..10 {
            tx.execute(update, &[&one]).await?;
        }
        tx.commit().await?;
    }
    println!("momoko begin + 10 execute    {}", per_op(N, t.elapsed()));

    let st = direct.prepare(update).await?;
    let t = Instant::now();
    for _ in 0..N {
        // tokio-postgres pipelines concurrent requests: BEGIN, 10 statements, COMMIT at once.
        let begin = direct.batch_execute("BEGIN");
        let statements =
            futures::future::try_join_all((0..10).map(|_| direct.execute(&st, &params)));
        let commit = direct.batch_execute("COMMIT");
        futures::try_join!(begin, statements, commit)?;
    }
    println!("tokio-postgres pipelined     {}", per_op(N, t.elapsed()));
    println!();
    Ok(())
}

async fn notifications(pool: &Pool, dsn: &str) -> Result<(), BoxError> {
    const N: u32 = 700;
    println!("== NOTIFY sent through the pool, received by a listener (round trip)");
    let mut listener = pool.listener().await?;
    listener.listen("bench").await?;
    let t = Instant::now();
    for i in 0..N {
        let payload = i.to_string();
        pool.execute("SELECT pg_notify('bench', $1)", &[&payload])
            .await?;
        match listener.recv().await? {
            ListenerEvent::Notification(n) => assert_eq!(n.payload(), payload),
            other => panic!("{other:?}"),
        }
    }
    println!("momoko Listener              {}", per_op(N, t.elapsed()));
    drop(listener);

    let (client, mut connection) = tokio_postgres::connect(dsn, NoTls).await?;
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    let driver = futures::stream::poll_fn(move |cx| connection.poll_message(cx))
        .map_err(|e| panic!("{e}"))
        .forward(tx.sink_map_err(|e| panic!("{e}")));
    tokio::spawn(driver);
    client.batch_execute("LISTEN bench").await?;
    let t = Instant::now();
    for i in 0..N {
        let payload = i.to_string();
        pool.execute("SELECT pg_notify('bench', $1)", &[&payload])
            .await?;
        loop {
            match rx.next().await {
                Some(AsyncMessage::Notification(n)) => {
                    assert_eq!(n.payload(), payload);
                    break;
                }
                Some(_) => {}
                None => panic!("the connection ended"),
            }
        }
    }
    println!("tokio-postgres poll_message  {}", per_op(N, t.elapsed()));
    println!();
    Ok(())
}

async fn generic_select(db: &impl Queryable) -> momoko_core::Result<i32> {
    db.fetch_scalar("SELECT 1", &[]).await
}

async fn trait_dispatch(pool: &Pool) -> Result<(), BoxError> {
    const N: u32 = 5000;
    println!("== SELECT 1 on the pool: inherent, generic Queryable, dyn DynQueryable");
    let t = Instant::now();
    for _ in 0..N {
        pool.execute("SELECT 1", &[]).await?.scalar::<i32>()?;
    }
    println!("inherent Pool::execute       {}", per_op(N, t.elapsed()));
    let t = Instant::now();
    for _ in 0..N {
        generic_select(pool).await?;
    }
    println!("generic &impl Queryable      {}", per_op(N, t.elapsed()));
    let object: &dyn DynQueryable = pool;
    let t = Instant::now();
    for _ in 0..N {
        generic_select(&object).await?;
    }
    println!("&dyn DynQueryable (boxed)    {}", per_op(N, t.elapsed()));
    println!();
    Ok(())
}
