//! Adaptive pipelining: statements fill few connections, slow ones keep a connection of their
//! own (so the pool still stretches for them), a stalled connection is routed around, and a
//! mixed load stays correct.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use momoko_core::Pool;

use crate::support::{assert_settled, within};
use crate::Ctx;

fn adaptive(ctx: &Ctx) -> momoko_core::PoolBuilder {
    ctx.pool_builder().adaptive_pipelining(true)
}

/// Echoes its argument and names the backend that ran it.
const ECHO: &str = "SELECT $1::int4, pg_backend_pid()";

/// Runs `n` echo statements at once; returns the backends that ran them, after checking that
/// every caller read its own row.
async fn echo_round(pool: &Pool, n: i32) -> HashSet<i32> {
    let results = join_all((0..n).map(|i| async move {
        let c = pool.execute(ECHO, &[&i]).await.unwrap();
        (
            c.get::<i32>(0, 0usize).unwrap(),
            c.get::<i32>(0, 1usize).unwrap(),
        )
    }))
    .await;
    for (i, (echo, _)) in results.iter().enumerate() {
        assert_eq!(*echo, i as i32, "each caller read its own row");
    }
    results.into_iter().map(|r| r.1).collect()
}

/// Fast concurrent statements fill a connection before the next is used, instead of spreading
/// over all of them, and the connections left free serve an exclusive caller at once. (With a
/// fixed depth, the same rounds spread over every connection.)
pub async fn adaptive_pipelining_fills_few_connections(ctx: &Ctx) {
    let pool = adaptive(ctx).size(4).connect().await.unwrap();
    // Learned: it leaves its connection idle.
    pool.execute(ECHO, &[&-1i32]).await.unwrap();
    // The first rounds measure how fast the statements are (a connection not measured yet takes
    // one at a time).
    for _ in 0..5 {
        echo_round(&pool, 16).await;
    }
    // How deep a connection's pipeline may be depends on how fast this machine answers: a lane
    // whose statements finish slowly (a loaded machine: other tests running) holds one at a time
    // and is routed around, as it should be, and a lane that drains mid-round reopens on the
    // least recently used connection, so a round may take two, three or all four connections.
    // Rounds run until one takes fewer than four (at most 200, a fraction of a second each).
    // Spread evenly (a fixed depth: the connection with the fewest statements first), every
    // round takes all four.
    let mut used = Vec::new();
    while used.len() < 200 && used.last().is_none_or(|&n| n == 4) {
        used.push(echo_round(&pool, 16).await.len());
    }
    eprintln!(
        "connections per round of sixteen statements: {:?} ({} rounds)",
        &used[used.len().saturating_sub(10)..],
        used.len()
    );
    assert!(
        used.iter().any(|&n| n < 4),
        "every round spread over every connection: {} rounds",
        used.len()
    );
    // While a round is pipelined, a free connection is there for an exclusive caller.
    let round = echo_round(&pool, 16);
    let exclusive = async {
        let conn = within(
            ctx,
            Duration::from_secs(5),
            "a free connection",
            pool.getconn(),
        )
        .await
        .unwrap();
        conn.execute("SELECT 1", &[])
            .await
            .unwrap()
            .scalar::<i32>()
            .unwrap()
    };
    let (_, one) = futures::join!(round, exclusive);
    assert_eq!(one, 1);
    assert_eq!(pool.status().total, 4);
    assert_settled(ctx, &pool).await;
}

/// A statement that takes longer than the wait budget runs on a connection of its own even
/// once it is known to leave its connection idle: concurrent long statements stretch the pool
/// and overlap on the server, as without pipelining, even after fast statements made the
/// connection's pipeline deep. (With a fixed depth they queue on the one connection.)
pub async fn adaptive_pipelining_keeps_long_statements_apart(ctx: &Ctx) {
    const LONG: &str =
        "SELECT pg_backend_pid(), clock_timestamp(), pg_sleep($1::float8), clock_timestamp()";
    // A long stall bound lets the wait budget follow this machine's round trip (a debug build
    // on a loaded machine may take a millisecond), so the connection's pipeline is deep.
    let pool = adaptive(ctx)
        .size(1)
        .max_size(4)
        .pipeline_stall(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    // Learned (it leaves its connection idle) and timed (alone: 0.2 s).
    pool.execute(LONG, &[&0.2f64]).await.unwrap();
    // Fast statements, one after the other: the connection's pipeline is measured deep, and
    // the pool does not grow.
    for i in 0..20 {
        pool.execute(ECHO, &[&i]).await.unwrap();
    }
    assert_eq!(pool.status().total, 1);
    let long = |secs: f64| {
        let pool = &pool;
        async move {
            let c = pool.execute(LONG, &[&secs]).await.unwrap();
            let pid: i32 = c.get(0, 0usize).unwrap();
            let start: SystemTime = c.get(0, 1usize).unwrap();
            let end: SystemTime = c.get(0, 3usize).unwrap();
            (pid, start, end)
        }
    };
    let results = join_all((0..3).map(|_| long(0.3))).await;
    let pids: HashSet<i32> = results.iter().map(|r| r.0).collect();
    assert_eq!(pids.len(), 3, "three backends: the pool stretched");
    let latest_start = results.iter().map(|r| r.1).max().unwrap();
    let earliest_end = results.iter().map(|r| r.2).min().unwrap();
    assert!(
        latest_start < earliest_end,
        "the three long statements overlapped on the server"
    );
    assert_eq!(pool.status().total, 3);
    assert_settled(ctx, &pool).await;
}

/// New statements avoid a connection whose pipeline is held up: fast statements finish on
/// another connection while a statement waits for a lock on the first (see
/// [`pipelining_avoids_a_stalled_connection`](super::pool::pipelining_avoids_a_stalled_connection)).
pub async fn adaptive_pipelining_routes_around_a_stalled_connection(ctx: &Ctx) {
    super::pool::stalled_connection_is_avoided(ctx, |b| b.adaptive_pipelining(true), true).await;
}

/// Transactions, held connections and pipelined statements from 32 tasks at once, with
/// adaptive pipelining: every operation succeeds and counts add up (see
/// [`mixed_run_balances`](super::pool::mixed_run_balances)).
pub async fn mixed_run_balances_adaptive(ctx: &Ctx) {
    super::pool::mixed_run(ctx, |b| b.adaptive_pipelining(true), "adaptive pipelining").await;
}
