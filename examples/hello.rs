//! The smallest momoko program: a pool, one query, parallel queries, a transaction.
//!
//! ```text
//! cargo run --example hello
//! ```
//!
//! With `DATABASE_URL` set it uses that server; otherwise it starts a throw-away PostgreSQL
//! cluster from the installed server binaries and removes it afterwards.

use std::time::Duration;

use momoko::Queryable;

#[tokio::main]
async fn main() -> momoko::Result<()> {
    let (dsn, _cluster_guard) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = momoko_testkit::test_db("hello");
            eprintln!(
                "DATABASE_URL is unset: started a throw-away PostgreSQL at {}",
                db.dsn()
            );
            (db.dsn(), Some(db))
        }
    };

    let pool = momoko::tokio::pool(&dsn)
        .max_size(5)
        .acquire_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    // Placeholders are `$1, $2, …`; values go in as `&[&value, …]`.
    let n: i64 = pool.fetch_scalar("SELECT $1::int8", &[&150i64]).await?;
    assert_eq!(n, 150);
    println!("Results: {n}");

    // Three queries at once, on up to three connections.
    let (q1, q2, q3) = futures::try_join!(
        pool.execute("SELECT 1", &[]),
        pool.execute("SELECT 2", &[]),
        pool.execute("SELECT 3", &[]),
    )?;
    for (name, cursor) in [("Q1", q1), ("Q2", q2), ("Q3", q3)] {
        println!("{name}: {:?}", cursor.scalar::<i32>()?);
    }

    // A transaction: committed, or rolled back if anything returns early.
    let tx = pool.begin().await?;
    tx.execute("CREATE TEMP TABLE greeting (word text, n int)", &[])
        .await?;
    tx.execute("INSERT INTO greeting VALUES ($1, $2)", &[&"hello", &42i32])
        .await?;
    let word: String = tx.fetch_scalar("SELECT word FROM greeting", &[]).await?;
    tx.commit().await?;
    println!("transaction: {word}");

    println!("pool: {:?}", pool.status());
    pool.close().await;
    Ok(())
}
