//! The tutorial web app's logic, written once for every runtime: each route is an
//! `async fn(&Pool) -> Result<String>` (the page body), and the HTTP glue in `tutorial.rs`
//! (tokio + axum), `tutorial_async_std.rs` and `tutorial_smol.rs` (hyper) only maps paths to
//! them, errors to `500 Internal Server Error` with the error's `Display`.
//!
//! | route | Momoko tutorial section | body |
//! |---|---|---|
//! | `/` | Using Pool: `"Results: %s" % cursor.fetchone()` | `Results: 1` |
//! | `/parallel` | three queries at once, `yield [f1, f2, f3]` | `Q1: [(1,)]<br>Q2: [(2,)]<br>Q3: [(3,)]<br>` |
//! | `/cursor` | Manual connection management: a server-side cursor | `Read 1000 rows in 100 chunks of 10; sum 500500` |
//! | `/transaction` | `pool.transaction([...])` | `Transaction: inserted 2 rows; tutorial_visits has 2 rows` (2 more per call) |
//! | `/status` | the pool's connection container | `free 1, busy 0, pending 0, dead 0, waiting 0, total 1 (size 1, max_size 4)` |
//! | `/notify` | LISTEN/NOTIFY (psycopg2's `connection.notifies`) | `Notified on tutorial_channel: hello from /notify` |
//! | `/copy` | COPY in and out (psycopg2's `copy_expert`) | `Copied 1000 rows in; COPY out read sum 500500` |
//!
//! `/parallel` prints each `fetchall()` the way Python's `%r` does: a list of one-element
//! tuples, `[(1,)]`, which is exactly Rust's `Debug` of a `Vec<(i32,)>`.

use std::time::Duration;

use futures::TryStreamExt;
use momoko::{Cursor, ListenerEvent, Pool, PoolBuilder, Query, Result, Type};

/// Rows in `unit_test_int_table` (the integers 1 to 1000).
const INT_COUNT: i32 = 1000;
/// Rows read per `FETCH` on the server-side cursor.
const CHUNK: i64 = 10;

/// Port used when neither `--port` nor `PORT` is given (the tutorial's).
const DEFAULT_PORT: u16 = 8888;

/// The port to listen on: `--port N` (or `--port=N`), else the `PORT` environment variable,
/// else 8888. `0` asks the system for a free port.
pub(crate) fn port() -> std::result::Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut from_args = None;
    while let Some(arg) = args.next() {
        if arg == "--port" {
            from_args = Some(args.next().ok_or("--port needs a value")?);
        } else if let Some(value) = arg.strip_prefix("--port=") {
            from_args = Some(value.to_owned());
        } else {
            return Err(format!("unknown argument {arg:?} (usage: [--port N])"));
        }
    }
    let (value, source) = match from_args {
        Some(v) => (v, "--port"),
        None => match std::env::var("PORT") {
            Ok(v) if !v.trim().is_empty() => (v, "PORT"),
            _ => return Ok(DEFAULT_PORT),
        },
    };
    value
        .trim()
        .parse()
        .map_err(|e| format!("{source}: invalid port {value:?}: {e}"))
}

/// The database to use: `DATABASE_URL` when set; otherwise a throw-away PostgreSQL started with
/// `momoko_testkit` from the installed server binaries. Keep the returned guard alive as long as
/// the app runs: dropping it removes the database, and the cluster goes away with the process.
pub(crate) fn database() -> (String, Option<momoko_testkit::TestDb>) {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => {
            let db = momoko_testkit::test_db("tutorial");
            eprintln!(
                "DATABASE_URL is unset: started a throw-away PostgreSQL at {} (removed on exit)",
                db.dsn()
            );
            (db.dsn(), Some(db))
        }
    }
}

/// The tutorial's pool settings, for any runtime's builder.
pub(crate) fn configure(builder: PoolBuilder) -> PoolBuilder {
    builder
        // As in the tutorial: `momoko.Pool(dsn=..., size=1)`.
        .size(1)
        // Stretching: when every connection is busy, open more, up to 4, instead of queueing.
        // `/parallel` runs three queries at once and `/cursor` holds a connection for a while.
        .max_size(4)
        // Close the extras again once they have been idle for a minute.
        .auto_shrink(true)
        .shrink_delay(Duration::from_secs(60))
        .shrink_period(Duration::from_secs(30))
        // A page should fail (500) rather than hang when the database is unreachable.
        .acquire_timeout(Duration::from_secs(5))
}

/// Creates what the routes read, if missing: `unit_test_int_table` holding 1 to 1000, and
/// `tutorial_visits` for `/transaction`. Safe when several instances start at once.
pub(crate) async fn setup(pool: &Pool) -> Result<()> {
    pool.transaction([
        // Serialises concurrent start-ups on the same database.
        "SELECT pg_advisory_xact_lock(20150817)".into(),
        "CREATE TABLE IF NOT EXISTS unit_test_int_table (n integer NOT NULL)".into(),
        Query::new(
            "INSERT INTO unit_test_int_table (n) SELECT g FROM generate_series(1, $1) AS g \
             WHERE NOT EXISTS (SELECT 1 FROM unit_test_int_table)",
            &[&INT_COUNT],
        ),
        "CREATE TABLE IF NOT EXISTS tutorial_visits (id serial PRIMARY KEY, note text NOT NULL)"
            .into(),
    ])
    .await?;
    Ok(())
}

/// `/`: the tutorial's first handler, `SELECT 1` through the pool.
pub(crate) async fn index(pool: &Pool) -> Result<String> {
    let cursor = pool.execute("SELECT 1", &[]).await?;
    // Python's `"Results: %s" % cursor.fetchone()` formats the one-column row as its value.
    Ok(format!("Results: {}", cursor.scalar::<i32>()?))
}

/// `/parallel`: three queries at once, on distinct connections (Momoko's `yield [f1, f2, f3]`).
pub(crate) async fn parallel(pool: &Pool) -> Result<String> {
    let (cursor1, cursor2, cursor3) = futures::try_join!(
        pool.execute("select 1", &[]),
        pool.execute("select 2", &[]),
        pool.execute("select 3", &[]),
    )?;
    Ok(format!(
        "Q1: {}<br>Q2: {}<br>Q3: {}<br>",
        fetchall_repr(&cursor1)?,
        fetchall_repr(&cursor2)?,
        fetchall_repr(&cursor3)?,
    ))
}

/// A one-integer-column result as Python's `repr(cursor.fetchall())`: `[(1,)]`.
fn fetchall_repr(cursor: &Cursor) -> Result<String> {
    let rows = (0..cursor.rows().len())
        .map(|row| cursor.get::<i32>(row, 0usize).map(|n| (n,)))
        .collect::<Result<Vec<(i32,)>>>()?;
    Ok(format!("{rows:?}"))
}

/// `/cursor`: reads `unit_test_int_table` through a server-side cursor on a connection held
/// with `getconn()` (the tutorial's "Manual connection management"), 10 rows per `FETCH`.
pub(crate) async fn server_side_cursor(pool: &Pool) -> Result<String> {
    // Goes back to the pool when dropped, on every path (Momoko's `with pool.manage(conn)`);
    // a transaction left open by an error is rolled back first.
    let conn = pool.getconn().await?;
    conn.execute("BEGIN", &[]).await?;
    conn.execute(
        "DECLARE all_ints CURSOR FOR SELECT * FROM unit_test_int_table",
        &[],
    )
    .await?;
    // FETCH takes no parameters server-side: render the count into the statement once.
    let fetch = conn.mogrify("FETCH $1 FROM all_ints", &[&CHUNK]).await?;
    let (mut rows, mut chunks, mut sum) = (0usize, 0usize, 0i64);
    loop {
        let cursor = conn.execute(&fetch, &[]).await?;
        let n = cursor.rows().len();
        if n == 0 {
            break;
        }
        for row in 0..n {
            sum += i64::from(cursor.get::<i32>(row, 0usize)?);
        }
        rows += n;
        chunks += 1;
    }
    conn.execute("CLOSE all_ints", &[]).await?;
    conn.execute("COMMIT", &[]).await?;
    Ok(format!(
        "Read {rows} rows in {chunks} chunks of {CHUNK}; sum {sum}"
    ))
}

/// `/transaction`: two inserts and a count in one transaction (`pool.transaction([...])`);
/// all or nothing.
pub(crate) async fn transaction(pool: &Pool) -> Result<String> {
    let cursors = pool
        .transaction([
            Query::new(
                "INSERT INTO tutorial_visits (note) VALUES ($1)",
                &[&"first"],
            ),
            Query::new(
                "INSERT INTO tutorial_visits (note) VALUES ($1)",
                &[&"second"],
            ),
            "SELECT count(*) FROM tutorial_visits".into(),
        ])
        .await?;
    // One cursor per statement, in order.
    let inserted: u64 = cursors[..2].iter().filter_map(|c| c.rowcount()).sum();
    let count: i64 = cursors[2].scalar()?;
    Ok(format!(
        "Transaction: inserted {inserted} rows; tutorial_visits has {count} rows"
    ))
}

/// `/status`: the pool's connections right now.
pub(crate) async fn status(pool: &Pool) -> Result<String> {
    let s = pool.status();
    Ok(format!(
        "free {}, busy {}, pending {}, dead {}, waiting {}, total {} (size {}, max_size {})",
        s.free, s.busy, s.pending, s.dead, s.waiting, s.total, s.size, s.max_size
    ))
}

/// The channel `/notify` listens on.
const CHANNEL: &str = "tutorial_channel";

/// `/notify`: a LISTEN/NOTIFY round trip. A listener (a dedicated connection with the pool's
/// settings, not one of the pool's) listens on a channel, a notification is sent through the
/// pool, and the listener receives it.
pub(crate) async fn notify(pool: &Pool) -> Result<String> {
    let mut listener = pool.listener().await?;
    listener.listen(CHANNEL).await?;
    pool.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &"hello from /notify"],
    )
    .await?;
    loop {
        // A reconnect in between (not expected here) would be reported first: wait on.
        if let ListenerEvent::Notification(n) = listener.recv().await? {
            return Ok(format!("Notified on {}: {}", n.channel(), n.payload()));
        }
    }
}

/// `/copy`: 1000 rows in with a binary COPY, then their sum out with `COPY … TO STDOUT`, in
/// one transaction whose temporary table goes away at the commit.
pub(crate) async fn copy(pool: &Pool) -> Result<String> {
    let tx = pool.begin().await?;
    tx.batch_execute("CREATE TEMP TABLE tutorial_copy (n int4 NOT NULL) ON COMMIT DROP")
        .await?;
    let mut rows_in = tx
        .copy_in_binary(
            "COPY tutorial_copy (n) FROM STDIN (FORMAT binary)",
            &[Type::INT4],
        )
        .await?;
    for n in 1..=INT_COUNT {
        rows_in.write(&[&n]).await?;
    }
    let copied = rows_in.finish().await?;
    let mut out = Vec::new();
    let mut chunks = tx
        .copy_out("COPY (SELECT sum(n) FROM tutorial_copy) TO STDOUT")
        .await?;
    while let Some(chunk) = chunks.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    drop(chunks);
    tx.commit().await?;
    Ok(format!(
        "Copied {copied} rows in; COPY out read sum {}",
        String::from_utf8_lossy(&out).trim_end()
    ))
}
