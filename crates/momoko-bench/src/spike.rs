//! `--spike`: HikariCP's spike test. A pool holding one open connection (allowed 50) meets 50
//! callers at once, each running one ~2 ms statement, while every new connection takes 150 ms
//! to connect (momoko-testkit's `FaultProxy` with a connect delay). A pool that dials one
//! connection per waiting caller ends with 50 connections it never needed: one connection clears
//! 50 × 2 ms in about 100 ms, before any new connection could be ready. Measured per contender:
//! connections dialled (accepted at the proxy, the same count for everyone), the burst's wall
//! time and the callers' latencies.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use momoko_core::Pool;
use momoko_testkit::FaultProxy;
use serde::Serialize;
use tokio_postgres::NoTls;

use crate::contenders::{ContenderId, PreparingManager, Runtime, MOMOKO_VARIANTS};
use crate::db::{Endpoint, Machine, Server};
use crate::harness::Target;
use crate::model::{Args, BoxError};

/// The statement every caller runs once: about 2 ms on the server.
pub(crate) const STATEMENT: &str = "SELECT pg_sleep(0.002)";

/// How big the spike is.
#[derive(Debug, Clone)]
pub(crate) struct SpikeSettings {
    /// Callers released at once, each running [`STATEMENT`] once.
    pub(crate) callers: usize,
    /// The pools' maximum size (all start with one open connection).
    pub(crate) max_size: usize,
    /// The proxy's delay before each new connection reaches the server.
    pub(crate) connect_delay: Duration,
    /// Repetitions (contenders interleaved, order rotated).
    pub(crate) reps: usize,
    /// Wait after the last caller finished before the proxy's count is read again, on top of
    /// `connect_delay`: connects started during the burst have been accepted by then.
    pub(crate) settle: Duration,
    /// Pause between runs, for the server's backends to exit.
    pub(crate) pause: Duration,
}

impl SpikeSettings {
    /// The full spike: 50 callers, at most 50 connections, 150 ms connect latency.
    pub(crate) fn full(reps: usize) -> SpikeSettings {
        SpikeSettings {
            callers: 50,
            max_size: 50,
            connect_delay: Duration::from_millis(150),
            reps,
            settle: Duration::from_millis(250),
            // Up to 50 backends exit.
            pause: Duration::from_millis(300),
        }
    }

    /// A small one for `--smoke` (well under a second per contender): 16 callers, 50 ms
    /// connects, one repetition.
    pub(crate) fn smoke() -> SpikeSettings {
        SpikeSettings {
            callers: 16,
            max_size: 16,
            connect_delay: Duration::from_millis(50),
            reps: 1,
            settle: Duration::from_millis(100),
            pause: Duration::from_millis(100),
        }
    }
}

/// The contenders that have a spike version, in the default order.
pub(crate) fn default_contenders() -> Vec<ContenderId> {
    ["momoko-tokio", "deadpool-postgres", "bb8-postgres", "sqlx"]
        .into_iter()
        .filter_map(ContenderId::parse)
        .collect()
}

/// Whether `id` has a spike version (momoko on tokio, deadpool, bb8, sqlx).
pub(crate) fn supports(id: ContenderId) -> bool {
    match id {
        ContenderId::Momoko(i) => MOMOKO_VARIANTS
            .get(i)
            .is_some_and(|v| v.runtime == Runtime::Tokio),
        ContenderId::Deadpool | ContenderId::Bb8 | ContenderId::Sqlx => true,
        ContenderId::Raw | ContenderId::Pgbench | ContenderId::PgbenchPipeline => false,
    }
}

/// One spike of one contender.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SpikeRun {
    /// Contender name.
    pub(crate) contender: String,
    /// Repetition, from 0.
    pub(crate) rep: usize,
    /// Connections accepted by the proxy before the burst (the initial one).
    pub(crate) initial: usize,
    /// Connections accepted by the proxy when the last caller finished.
    pub(crate) dialled_by_end: usize,
    /// Connections accepted by the proxy `connect_delay + settle` after that: everything the
    /// pool dialled for the burst, the initial connection included.
    pub(crate) dialled: usize,
    /// momoko's own count (`pool.counters().connections_opened`), read at the same time.
    pub(crate) opened: Option<u64>,
    /// From the first caller's start to the last caller's completion, milliseconds.
    pub(crate) burst_ms: f64,
    /// Median caller latency, milliseconds.
    pub(crate) p50_ms: f64,
    /// 99th percentile caller latency (nearest rank: the slowest caller of 50), milliseconds.
    pub(crate) p99_ms: f64,
    /// Why the run failed, if it did.
    pub(crate) error: Option<String>,
}

impl SpikeRun {
    fn failed(contender: &str, rep: usize, error: String) -> SpikeRun {
        SpikeRun {
            contender: contender.to_owned(),
            rep,
            initial: 0,
            dialled_by_end: 0,
            dialled: 0,
            opened: None,
            burst_ms: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            error: Some(error),
        }
    }
}

/// What a burst measured, before the contender's name is attached.
struct Measured {
    initial: usize,
    dialled_by_end: usize,
    dialled: usize,
    burst: Duration,
    latencies: Vec<Duration>,
}

/// Releases `callers` tasks at once (a barrier), each running one statement through `target`.
/// Returns the burst's wall time and every caller's latency.
async fn burst<T: Target>(
    target: Arc<T>,
    callers: usize,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let gate = Arc::new(tokio::sync::Barrier::new(callers));
    let args = Args {
        key: 1,
        id: 1,
        v: 1,
    };
    let mut handles = Vec::with_capacity(callers);
    for task in 0..callers {
        let target = Arc::clone(&target);
        let gate = Arc::clone(&gate);
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let t0 = Instant::now();
            let result = target.query(task, args).await;
            (t0, Instant::now(), result)
        }));
    }
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut latencies = Vec::with_capacity(callers);
    let mut error = None;
    for h in handles {
        let (t0, t1, result) = h.await?;
        if let Err(e) = result {
            error.get_or_insert(e);
        }
        first = Some(first.map_or(t0, |f| f.min(t0)));
        last = Some(last.map_or(t1, |l| l.max(t1)));
        latencies.push(t1 - t0);
    }
    if let Some(e) = error {
        return Err(e);
    }
    let burst = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    Ok((burst, latencies))
}

/// Lets the pool settle, counts, runs the burst, counts again at its end and after the
/// connects it started have had time to land.
async fn measure<T: Target>(
    target: Arc<T>,
    proxy: &FaultProxy,
    s: &SpikeSettings,
) -> Result<Measured, BoxError> {
    // A background top-up of the initial connection (sqlx's min_connections) lands first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let initial = proxy.accepted();
    let (burst, latencies) = burst(target, s.callers).await?;
    let dialled_by_end = proxy.accepted();
    // The proxy counts a connection when it accepts it, before the delay, so this only waits
    // for connects the pool starts late (e.g. topping up after the burst).
    tokio::time::sleep(s.connect_delay + s.settle).await;
    Ok(Measured {
        initial,
        dialled_by_end,
        dialled: proxy.accepted(),
        burst,
        latencies,
    })
}

// ---------------------------------------------------------------------------------------------
// The contenders' spike versions: one statement per call, nothing prepared ahead.

struct MomokoSpike(Pool);

impl Target for MomokoSpike {
    async fn query(&self, _task: usize, _a: Args) -> Result<i64, BoxError> {
        let cursor = self.0.execute(STATEMENT, &[]).await?;
        Ok(cursor.rows().len() as i64)
    }
}

struct DeadpoolSpike(deadpool_postgres::Pool);

impl Target for DeadpoolSpike {
    async fn query(&self, _task: usize, _a: Args) -> Result<i64, BoxError> {
        let client = self.0.get().await?;
        let statement = client.prepare_cached(STATEMENT).await?;
        Ok(client.execute(&statement, &[]).await? as i64)
    }
}

struct Bb8Spike(bb8::Pool<PreparingManager>);

impl Target for Bb8Spike {
    async fn query(&self, _task: usize, _a: Args) -> Result<i64, BoxError> {
        let conn = self.0.get().await?;
        Ok(conn.client.execute(&conn.statement, &[]).await? as i64)
    }
}

struct SqlxSpike(sqlx::PgPool);

impl Target for SqlxSpike {
    async fn query(&self, _task: usize, _a: Args) -> Result<i64, BoxError> {
        Ok(sqlx::query(STATEMENT)
            .execute(&self.0)
            .await?
            .rows_affected() as i64)
    }
}

/// Runs one spike of `id` through a fresh proxy in front of `server`.
async fn run_one(
    id: ContenderId,
    server: &Endpoint,
    s: &SpikeSettings,
    rep: usize,
) -> Result<SpikeRun, BoxError> {
    let proxy = FaultProxy::start(server.tcp_addr()?)?;
    proxy.set_connect_delay(s.connect_delay);
    let ep = server.via_proxy(proxy.port())?;
    let name = id.name();
    let mut opened = None;
    let measured = match id {
        ContenderId::Momoko(i) => {
            let variant = MOMOKO_VARIANTS.get(i).ok_or("unknown momoko variant")?;
            let builder = Pool::builder(&ep.dsn, momoko_tokio::TokioExecutor::shared())
                .size(1)
                .max_size(s.max_size);
            let pool = (variant.tune)(builder)
                .connect()
                .await
                .map_err(|e| format!("{name}: cannot open the pool: {e}"))?;
            let result = measure(Arc::new(MomokoSpike(pool.clone())), &proxy, s).await;
            opened = Some(pool.counters().connections_opened);
            pool.close().await;
            result?
        }
        ContenderId::Deadpool => {
            let manager = deadpool_postgres::Manager::from_config(
                ep.pg_config()?,
                NoTls,
                deadpool_postgres::ManagerConfig::default(),
            );
            let pool = deadpool_postgres::Pool::builder(manager)
                .max_size(s.max_size)
                .build()
                .map_err(|e| format!("{name}: cannot build the pool: {e}"))?;
            // Pre-warm one connection: deadpool has no minimum, it opens on demand.
            drop(
                pool.get()
                    .await
                    .map_err(|e| format!("{name}: cannot connect: {e}"))?,
            );
            let result = measure(Arc::new(DeadpoolSpike(pool.clone())), &proxy, s).await;
            pool.close();
            result?
        }
        ContenderId::Bb8 => {
            let manager = PreparingManager {
                inner: PostgresConnectionManager::new(ep.pg_config()?, NoTls),
                sql: STATEMENT,
            };
            let pool = bb8::Pool::builder()
                .max_size(u32::try_from(s.max_size)?)
                .min_idle(Some(1))
                .build(manager)
                .await
                .map_err(|e| format!("{name}: cannot build the pool: {e}"))?;
            measure(Arc::new(Bb8Spike(pool)), &proxy, s).await?
        }
        ContenderId::Sqlx => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(u32::try_from(s.max_size)?)
                .min_connections(1)
                .connect_with(ep.sqlx_options())
                .await
                .map_err(|e| format!("{name}: cannot open the pool: {e}"))?;
            let result = measure(Arc::new(SqlxSpike(pool.clone())), &proxy, s).await;
            pool.close().await;
            result?
        }
        ContenderId::Raw | ContenderId::Pgbench | ContenderId::PgbenchPipeline => {
            return Err(format!("{name} has no spike version").into());
        }
    };
    let mut lat: Vec<f64> = measured
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok(SpikeRun {
        contender: name.to_owned(),
        rep,
        initial: measured.initial,
        dialled_by_end: measured.dialled_by_end,
        dialled: measured.dialled,
        opened,
        burst_ms: measured.burst.as_secs_f64() * 1e3,
        p50_ms: nearest_rank(&lat, 0.50),
        p99_ms: nearest_rank(&lat, 0.99),
        error: None,
    })
}

/// The `p` quantile of sorted `v` by nearest rank (0 when empty).
pub(crate) fn nearest_rank(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs every repetition of every contender, printing a line per run.
pub(crate) fn run(
    server: &Server,
    contenders: &[ContenderId],
    s: &SpikeSettings,
    tokio: &tokio::runtime::Runtime,
    progress: fn(&str),
) -> Vec<SpikeRun> {
    let mut runs = Vec::new();
    let k = contenders.len().max(1);
    for rep in 0..s.reps {
        let mut order = contenders.to_vec();
        order.rotate_left(rep % k);
        for id in order {
            let run = tokio
                .block_on(run_one(id, &server.tcp, s, rep))
                .unwrap_or_else(|e| SpikeRun::failed(id.name(), rep, e.to_string()));
            progress(&match &run.error {
                None => format!(
                    "[spike {}/{}] {:<18} dialled {:>2} (initial {}, {} by the end)  burst \
                     {:>6.1} ms  p50 {:>6.1} ms  p99 {:>6.1} ms{}",
                    rep + 1,
                    s.reps,
                    run.contender,
                    run.dialled,
                    run.initial,
                    run.dialled_by_end,
                    run.burst_ms,
                    run.p50_ms,
                    run.p99_ms,
                    run.opened
                        .map_or_else(String::new, |o| format!("  (opened {o})"))
                ),
                Some(e) => format!(
                    "[spike {}/{}] {}: FAILED: {e}",
                    rep + 1,
                    s.reps,
                    run.contender
                ),
            });
            runs.push(run);
            std::thread::sleep(s.pause);
        }
    }
    runs
}

/// min / median / max of the successful runs of one contender.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    /// Smallest.
    pub(crate) min: f64,
    /// Median (mean of the middle two for an even count).
    pub(crate) median: f64,
    /// Largest.
    pub(crate) max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// One contender's figures over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SpikeSummary {
    /// Contender name.
    pub(crate) contender: String,
    /// Successful repetitions.
    pub(crate) reps_ok: usize,
    /// Connections before the burst (min / median / max).
    pub(crate) initial: Option<Spread>,
    /// Connections dialled, the initial one included.
    pub(crate) dialled: Option<Spread>,
    /// Burst wall time, ms.
    pub(crate) burst_ms: Option<Spread>,
    /// Callers' median latency, ms.
    pub(crate) p50_ms: Option<Spread>,
    /// Callers' p99 latency, ms.
    pub(crate) p99_ms: Option<Spread>,
}

/// Summaries per contender, in `order`.
pub(crate) fn summarise(runs: &[SpikeRun], order: &[ContenderId]) -> Vec<SpikeSummary> {
    order
        .iter()
        .map(|id| {
            let ok: Vec<&SpikeRun> = runs
                .iter()
                .filter(|r| r.contender == id.name() && r.error.is_none())
                .collect();
            let spread = |f: fn(&SpikeRun) -> f64| Spread::of(ok.iter().map(|r| f(r)).collect());
            SpikeSummary {
                contender: id.name().to_owned(),
                reps_ok: ok.len(),
                initial: spread(|r| r.initial as f64),
                dialled: spread(|r| r.dialled as f64),
                burst_ms: spread(|r| r.burst_ms),
                p50_ms: spread(|r| r.p50_ms),
                p99_ms: spread(|r| r.p99_ms),
            }
        })
        .collect()
}

fn spread_cell(s: Option<Spread>, decimals: usize) -> String {
    s.map_or_else(
        || "–".to_owned(),
        |s| {
            format!(
                "{:.d$} / {:.d$} / {:.d$}",
                s.min,
                s.median,
                s.max,
                d = decimals
            )
        },
    )
}

/// The summary table (also printed to stdout).
pub(crate) fn table(summaries: &[SpikeSummary]) -> String {
    let mut out = String::from(
        "| contender | runs | connections before | dialled (incl. initial) | burst ms | p50 ms | p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.contender,
            s.reps_ok,
            spread_cell(s.initial, 0),
            spread_cell(s.dialled, 0),
            spread_cell(s.burst_ms, 1),
            spread_cell(s.p50_ms, 1),
            spread_cell(s.p99_ms, 1),
        );
    }
    out
}

/// momoko against deadpool, in words, from the medians.
pub(crate) fn verdict(summaries: &[SpikeSummary]) -> String {
    let find = |name: &str| summaries.iter().find(|s| s.contender == name);
    let (Some(m), Some(d)) = (find("momoko-tokio"), find("deadpool-postgres")) else {
        return String::new();
    };
    let (Some(mb), Some(db), Some(mc), Some(dc)) = (m.burst_ms, d.burst_ms, m.dialled, d.dialled)
    else {
        return String::new();
    };
    let speed = if mb.median <= db.median {
        format!(
            "no slower than deadpool's ({:.1} vs {:.1} ms, {:.2}×)",
            mb.median,
            db.median,
            mb.median / db.median
        )
    } else {
        format!(
            "SLOWER than deadpool's ({:.1} vs {:.1} ms, {:.2}×)",
            mb.median,
            db.median,
            mb.median / db.median
        )
    };
    format!(
        "Medians: momoko-tokio dialled {:.0} connection(s) (expected ≤ 5) against deadpool's {:.0}; \
         its burst was {speed}.\n",
        mc.median, dc.median
    )
}

/// Writes `spike.json` and `spike.md` into `dir`.
///
/// # Errors
///
/// I/O errors.
pub(crate) fn write(
    dir: &Path,
    machine: &Machine,
    command: &str,
    s: &SpikeSettings,
    runs: &[SpikeRun],
    summaries: &[SpikeSummary],
) -> Result<(), BoxError> {
    #[derive(Serialize)]
    struct Json<'a> {
        machine: &'a Machine,
        command: &'a str,
        callers: usize,
        max_size: usize,
        connect_delay_ms: f64,
        statement: &'a str,
        summaries: &'a [SpikeSummary],
        runs: &'a [SpikeRun],
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(
        dir.join("spike.json"),
        serde_json::to_string_pretty(&Json {
            machine,
            command,
            callers: s.callers,
            max_size: s.max_size,
            connect_delay_ms: s.connect_delay.as_secs_f64() * 1e3,
            statement: STATEMENT,
            summaries,
            runs,
        })?,
    )?;

    let mut md = format!(
        "# Spike: {} callers at once on a pool of one\n\n",
        s.callers
    );
    md.push_str(&crate::report::machine_line(machine, command));
    let _ = writeln!(
        md,
        "Scenario (HikariCP's spike test): every pool starts with one open connection and may grow \
         to {max}. Connections go through momoko-testkit's `FaultProxy` with a {delay} ms connect \
         delay (each new connection reaches the server {delay} ms after the client dialled). \
         Then {callers} callers are released at once (a barrier) and each runs `{STATEMENT}` \
         once. {reps} repetition(s), contenders interleaved (order rotated every repetition), a \
         fresh pool and proxy per run; cells show min / median / max over the repetitions.\n",
        max = s.max_size,
        delay = s.connect_delay.as_millis(),
        callers = s.callers,
        reps = s.reps,
    );
    let _ = writeln!(
        md,
        "* momoko-tokio: `Pool::builder(dsn, TokioExecutor).size(1).max_size({max}).connect()`, \
         otherwise defaults (growth paced pool-wide: at most 2 growth connects in flight); \
         `pool.execute`.\n\
         * deadpool-postgres 0.14: `max_size({max})`, one connection opened (and returned) before \
         the burst; `get()`, `prepare_cached`, `execute`.\n\
         * bb8-postgres 0.9: `max_size({max})`, `min_idle(Some(1))`, defaults otherwise (a \
         `simple_query(\"\")` test on every checkout); statement prepared once per connection.\n\
         * sqlx 0.8: `max_connections({max})`, `min_connections(1)`, defaults otherwise (a ping \
         before every acquire of an idle connection); `sqlx::query(..).execute(&pool)`.\n",
        max = s.max_size
    );
    let _ = writeln!(
        md,
        "Columns: connections before = accepted by the proxy before the burst (the initial \
         connection); dialled = accepted by the proxy by the time the burst's connects have \
         landed (the last caller's completion + connect delay + settle), **including the initial \
         connection**; burst = first caller's start to last caller's completion; p50 / p99 = the \
         callers' latencies (nearest rank over the callers: p99 of {} is the slowest caller). The \
         proxy counts every contender the same way; momoko's own count \
         (`counters().connections_opened`, read with the last proxy count) is shown beside it. The machine has 2 cores shared by client, server, \
         proxy and other work, so read the load average above with the figures.\n",
        s.callers
    );
    md.push_str(&table(summaries));
    md.push('\n');
    md.push_str(&verdict(summaries));
    md.push_str("\n## Every run\n\n| rep | contender | before | dialled by the end | dialled | momoko's own count | burst ms | p50 ms | p99 ms |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        match &r.error {
            None => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                    r.rep + 1,
                    r.contender,
                    r.initial,
                    r.dialled_by_end,
                    r.dialled,
                    r.opened.map_or_else(|| "–".to_owned(), |o| o.to_string()),
                    r.burst_ms,
                    r.p50_ms,
                    r.p99_ms
                );
            }
            Some(e) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | failed: {} | | | | | | |",
                    r.rep + 1,
                    r.contender,
                    e.replace('|', "/")
                );
            }
        }
    }
    std::fs::write(dir.join("spike.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_and_spread() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), 25.0);
        // p99 of 50 callers is the slowest one.
        assert_eq!(nearest_rank(&v, 0.99), 50.0);
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
        let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0, 4.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 10.0));
        assert!(Spread::of(Vec::new()).is_none());
    }

    #[test]
    fn spike_contenders() {
        let names: Vec<&str> = default_contenders().iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["momoko-tokio", "deadpool-postgres", "bb8-postgres", "sqlx"]
        );
        assert!(!supports(ContenderId::Raw));
        assert!(!supports(ContenderId::parse("momoko-smol").unwrap()));
    }
}
