//! momoko on a runtime none of its backends provide: a hand-made [`momoko::Executor`] built from a
//! `futures` thread pool (tasks), async-io (timers and sockets) and `blocking` (name resolution).
//!
//! ```text
//! cargo run --example custom_executor
//! ```
//!
//! The executor lives in `examples/support/custom_runtime.rs`; `tests/custom_executor.rs` runs
//! the whole conformance suite on the very same code. No tokio runtime, no async-std, no smol:
//! the main thread just blocks on a future with `futures::executor::block_on`.
//!
//! With `DATABASE_URL` set it uses that server; otherwise it starts a throw-away PostgreSQL
//! cluster from the installed server binaries and removes it afterwards.

#[path = "support/custom_runtime.rs"]
mod custom_runtime;

use std::time::Duration;

use custom_runtime::CustomExecutor;
use momoko::{Pool, Query};

fn main() -> momoko::Result<()> {
    let (dsn, _cluster_guard) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = momoko_testkit::test_db("custom_executor");
            eprintln!(
                "DATABASE_URL is unset: started a throw-away PostgreSQL at {}",
                db.dsn()
            );
            (db.dsn(), Some(db))
        }
    };
    // The main thread only waits; every spawned task runs on the executor's thread pool and
    // every socket is driven by async-io's reactor thread.
    futures::executor::block_on(run(&dsn))
}

async fn run(dsn: &str) -> momoko::Result<()> {
    let pool = Pool::builder(dsn, CustomExecutor::shared())
        .size(1)
        // Stretch up to three connections when callers would otherwise queue.
        .max_size(3)
        .acquire_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    let cursor = pool.execute("SELECT 1", &[]).await?;
    println!("Results: {}", cursor.scalar::<i32>()?);

    let (q1, q2, q3) = futures::try_join!(
        pool.execute("SELECT 1", &[]),
        pool.execute("SELECT 2", &[]),
        pool.execute("SELECT 3", &[]),
    )?;
    for (name, cursor) in [("Q1", q1), ("Q2", q2), ("Q3", q3)] {
        println!("{name}: {}", cursor.scalar::<i32>()?);
    }

    let cursors = pool
        .transaction([
            "CREATE TEMP TABLE runtime (name text)".into(),
            Query::new(
                "INSERT INTO runtime VALUES ($1)",
                &[&"futures ThreadPool + async-io"],
            ),
            "SELECT name FROM runtime".into(),
        ])
        .await?;
    println!("transaction: {}", cursors[2].scalar::<&str>()?);

    // Stretching may still be finishing a connect for the parallel queries: `pending`.
    println!("pool: {:?}", pool.status());
    pool.close().await;
    println!("closed: {}", pool.is_closed());
    Ok(())
}
