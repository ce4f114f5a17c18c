//! The smallest momoko program: a pool, one query, parallel queries, a transaction.
//!
//! ```text
//! cargo run --example hello
//! ```
//!
//! With `DATABASE_URL` set it uses that server; otherwise it starts a throw-away PostgreSQL
//! cluster from the installed server binaries and removes it afterwards.

use std::time::Duration;

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
        .size(1)
        .max_size(3)
        .acquire_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    let mut cursor = pool.execute("SELECT 1", &[]).await?;
    let one: i32 = cursor.fetchone().map(|row| row.get(0)).unwrap_or_default();
    println!("Results: {one}");

    let (q1, q2, q3) = futures::try_join!(
        pool.execute("SELECT 1", &[]),
        pool.execute("SELECT 2", &[]),
        pool.execute("SELECT 3", &[]),
    )?;
    for (name, cursor) in [("Q1", q1), ("Q2", q2), ("Q3", q3)] {
        println!("{name}: {:?}", cursor.scalar::<i32>()?);
    }

    let cursors = pool
        .transaction([
            "CREATE TEMP TABLE greeting (word text)".into(),
            (
                "INSERT INTO greeting VALUES ($1)",
                &[&"hello" as momoko::Param<'_>][..],
            )
                .into(),
            "SELECT word FROM greeting".into(),
        ])
        .await?;
    println!("transaction: {}", cursors[2].scalar::<&str>()?);
    println!("pool: {:?}", pool.status());
    pool.close().await;
    Ok(())
}
