//! `--liveness`: what momoko's liveness proof costs at light load. Before a cached statement is
//! sent on a connection the server has not answered for longer than `liveness_window`, momoko
//! sends an empty query first (one round trip). One caller issues a cached `SELECT 1`, sleeping D
//! on tokio's timer after each call, with the window off, 1 s (the default, as pgx's pool), 500
//! ms (HikariCP's) and 0 (every call proven); the empty query's own round trip and a pool-less
//! prepared `SELECT 1` run alongside as references, and a pool of 8 connections with the default
//! window shows what spreading one caller over several connections does.
//!
//! All series run in one schedule, so that load from elsewhere on the machine falls on all of
//! them alike; how they share it is in [`measure`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use momoko_core::Pool;
use serde::Serialize;
use tokio_postgres::{Client, NoTls, Statement};

use crate::db::{Endpoint, Machine, Server};
use crate::model::BoxError;
use crate::spike::nearest_rank;

/// The statement the pools run (cached after its first call on a connection).
const STATEMENT: &str = "SELECT 1";

/// What runs, at which pacing.
#[derive(Debug, Clone)]
pub(crate) struct LivenessSettings {
    /// (D, measured calls per series); D = 0 means back to back.
    pub(crate) intervals: Vec<(Duration, usize)>,
}

impl LivenessSettings {
    /// The full run, about 3 minutes: D = 0 (back to back), 10 ms, 100 ms, 500 ms, 1.5 s, 3 s.
    /// Fewer calls at long D (10 at 3 s take 33 s already). Below 100 calls p99 is the slowest
    /// call.
    pub(crate) fn full() -> LivenessSettings {
        LivenessSettings {
            intervals: vec![
                (Duration::ZERO, 1000),
                (Duration::from_millis(10), 200),
                (Duration::from_millis(100), 70),
                (Duration::from_millis(500), 70),
                (Duration::from_millis(1500), 20),
                (Duration::from_secs(3), 10),
            ],
        }
    }

    /// For `--smoke`: a fraction of a second.
    pub(crate) fn smoke() -> LivenessSettings {
        LivenessSettings {
            intervals: vec![
                (Duration::ZERO, 40),
                (Duration::from_millis(2), 10),
                (Duration::from_millis(10), 5),
            ],
        }
    }

    /// Rough wall-clock time, for the banner (see [`measure`] for the schedule).
    pub(crate) fn estimate(&self) -> Duration {
        let k = SERIES.len() as u32;
        let connections: u32 = SERIES.iter().map(|s| s.kind.connections() as u32).sum();
        self.intervals
            .iter()
            .map(|&(d, n)| {
                if d / k >= STAGGER_MIN_IDLE {
                    (d + STAGGER_SLACK) * (n as u32 + 1)
                } else {
                    d * (k * n as u32 + n.div_ceil(TURN) as u32 * connections)
                }
            })
            .sum::<Duration>()
            + Duration::from_secs(2)
    }
}

/// What one series runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// momoko's pool of `size` connections; `window: None` leaves the builder's default.
    Momoko {
        window: Option<Duration>,
        size: usize,
    },
    /// One tokio-postgres client, `SELECT 1` prepared once: no pool, no proof.
    RawSelect1,
    /// One tokio-postgres client, an empty query: the proof's round trip alone.
    RawEmpty,
}

impl Kind {
    /// Connections a series of this kind uses.
    fn connections(self) -> usize {
        match self {
            Kind::Momoko { size, .. } => size,
            Kind::RawSelect1 | Kind::RawEmpty => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    kind: Kind,
}

/// The series, in report order. The first is the baseline every extra is taken against.
const SERIES: [Spec; 7] = [
    Spec {
        name: "momoko, window off (MAX)",
        kind: Kind::Momoko {
            window: Some(Duration::MAX),
            size: 1,
        },
    },
    Spec {
        name: "momoko, window 1 s (default)",
        kind: Kind::Momoko {
            window: None,
            size: 1,
        },
    },
    Spec {
        name: "momoko, window 500 ms",
        kind: Kind::Momoko {
            window: Some(Duration::from_millis(500)),
            size: 1,
        },
    },
    Spec {
        name: "momoko, window 0 (always)",
        kind: Kind::Momoko {
            window: Some(Duration::ZERO),
            size: 1,
        },
    },
    // A pool of several connections hands a sequential caller's statements round the
    // connections (least recently used first), so each connection is quiet for 8 × D.
    Spec {
        name: "momoko, 8 connections, window 1 s",
        kind: Kind::Momoko {
            window: None,
            size: 8,
        },
    },
    Spec {
        name: "tokio-postgres, prepared SELECT 1",
        kind: Kind::RawSelect1,
    },
    Spec {
        name: "tokio-postgres, empty query",
        kind: Kind::RawEmpty,
    },
];

/// A connected series.
enum Caller {
    Momoko(Pool),
    Raw {
        client: Client,
        statement: Option<Statement>,
    },
}

impl Caller {
    async fn open(kind: Kind, ep: &Endpoint) -> Result<Caller, BoxError> {
        match kind {
            Kind::Momoko { window, size } => {
                let mut builder = Pool::builder(&ep.dsn, momoko_tokio::TokioExecutor::shared())
                    .size(size)
                    .max_size(size);
                if let Some(w) = window {
                    builder = builder.liveness_window(w);
                }
                Ok(Caller::Momoko(builder.connect().await?))
            }
            Kind::RawSelect1 | Kind::RawEmpty => {
                let (client, connection) = ep.pg_config()?.connect(NoTls).await?;
                tokio::spawn(connection);
                let statement = match kind {
                    Kind::RawSelect1 => Some(client.prepare(STATEMENT).await?),
                    _ => None,
                };
                Ok(Caller::Raw { client, statement })
            }
        }
    }

    /// The window in force (`None` when no proof is made).
    fn window(&self) -> Option<Duration> {
        match self {
            Caller::Momoko(pool) => Some(pool.config().liveness_window),
            Caller::Raw { .. } => None,
        }
    }

    /// Connections a sequential caller rotates over.
    fn rotation(&self) -> usize {
        match self {
            Caller::Momoko(pool) => pool.config().size,
            Caller::Raw { .. } => 1,
        }
    }

    async fn call(&self) -> Result<(), BoxError> {
        match self {
            Caller::Momoko(pool) => {
                let cursor = pool.execute(STATEMENT, &[]).await?;
                std::hint::black_box(cursor.scalar::<i32>()?);
            }
            Caller::Raw {
                client,
                statement: Some(statement),
            } => {
                let rows = client.query(statement, &[]).await?;
                std::hint::black_box(rows.len());
            }
            Caller::Raw {
                client,
                statement: None,
            } => client.batch_execute("").await?,
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Caller::Momoko(pool) => pool.close().await,
            Caller::Raw { client, .. } => drop(client),
        }
    }
}

/// One series at one pacing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    /// Series name.
    pub(crate) series: String,
    /// D in milliseconds (0: back to back).
    pub(crate) interval_ms: f64,
    /// The liveness window in force, ms (`None` for the pool-less references; `f64::MAX`-like
    /// values mean off).
    pub(crate) window_ms: Option<f64>,
    /// Measured calls.
    pub(crate) calls: usize,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency (nearest rank; the slowest call below 100 calls), µs.
    pub(crate) p99_us: f64,
    /// Mean latency, µs.
    pub(crate) mean_us: f64,
    /// Calls whose connection had been quiet longer than the window: momoko proved them
    /// (computed from the schedule: the time since the same connection's previous call).
    pub(crate) proved: Option<usize>,
    /// Median time between two calls on the same connection, ms.
    pub(crate) quiet_ms: f64,
    /// Median idle time before a call (since any series' previous call ended), ms.
    pub(crate) idle_ms: f64,
    /// Every call's latency in µs, in call order.
    pub(crate) latencies_us: Vec<f64>,
}

/// Series are interleaved call by call only when every call still follows at least this much
/// idle time: a process, backend and CPU idle for a few ms answer faster than after longer
/// (a first run that interleaved 7 series at D = 100 ms, 14 ms apart, gave bimodal latencies,
/// 60–70 µs or 250–300 µs, depending on how close the previous series' call happened to be).
const STAGGER_MIN_IDLE: Duration = Duration::from_millis(50);

/// Measured calls per turn when the series take turns.
const TURN: usize = 10;

/// When staggered, a series' next call is due D after its previous call ended, but no earlier
/// than its slot on a fixed grid of period D + this, so the series keep their distance. Sleeping
/// just D after each call let them drift apart at their own pace (a proven call is ~30 µs
/// longer): in a 500 ms run the always-proving series ended up right behind another one (median
/// idle before its calls 0 ms instead of 71) and ran 50 µs faster than the rest, warm.
const STAGGER_SLACK: Duration = Duration::from_millis(5);

/// One series' figures at one pacing, as they are gathered.
#[derive(Default)]
struct Track {
    /// Start of the last call on each of the series' connections, oldest first.
    ring: VecDeque<Instant>,
    /// Measured latencies, µs.
    lat: Vec<f64>,
    /// Time since the same connection's previous call, per measured call.
    gaps: Vec<Duration>,
    /// Time since any series' previous call ended, per measured call.
    idle: Vec<Duration>,
}

/// Runs one call of `caller`, recording it in `track` if `measured`.
async fn timed(
    caller: &Caller,
    track: &mut Track,
    last_end: &mut Instant,
    measured: bool,
) -> Result<(), BoxError> {
    let t0 = Instant::now();
    caller.call().await?;
    let t1 = Instant::now();
    let prev = previous_start(&mut track.ring, caller.rotation(), t0);
    if measured {
        track.lat.push((t1 - t0).as_secs_f64() * 1e6);
        track.gaps.push(prev.map_or(Duration::MAX, |p| t0 - p));
        track.idle.push(t0.saturating_duration_since(*last_end));
    }
    *last_end = t1;
    Ok(())
}

/// Records a call started at `t0` on a series of `rotation` connections and returns when the
/// same connection's previous call started. `ring` keeps one start per connection: a lone caller
/// goes round them in order (least recently used first), so the oldest is this call's.
fn previous_start(ring: &mut VecDeque<Instant>, rotation: usize, t0: Instant) -> Option<Instant> {
    let prev = if ring.len() >= rotation {
        ring.pop_front()
    } else {
        None
    };
    ring.push_back(t0);
    prev
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Runs every pacing. Every call sleeps D after the previous call of its series completed (on
/// tokio's timer), so each connection is quiet for D plus one call.
///
/// * D < 7 × [`STAGGER_MIN_IDLE`]: the series take turns, [`TURN`] measured calls each, so
///   every measured call follows D of idle time, as for a lone caller. A turn starts with one
///   unmeasured call per connection of the series at the same pace: after the other series'
///   turns its connections have been quiet much longer than D.
/// * Longer D: the series are staggered D / 7 apart and interleaved call by call (one after
///   the other would take seven times as long); every call still follows ≥ 50 ms of idle time.
///   A series sleeps at least D after each call, a little more to keep its place on the grid
///   (see [`STAGGER_SLACK`]).
async fn measure(
    ep: &Endpoint,
    s: &LivenessSettings,
    progress: fn(&str),
) -> Result<Vec<Cell>, BoxError> {
    let mut callers = Vec::with_capacity(SERIES.len());
    for spec in SERIES {
        callers.push(
            Caller::open(spec.kind, ep)
                .await
                .map_err(|e| format!("{}: cannot connect: {e}", spec.name))?,
        );
    }
    let k = callers.len();
    let mut cells = Vec::new();
    for &(d, n) in &s.intervals {
        let mut tracks: Vec<Track> = (0..k).map(|_| Track::default()).collect();
        let mut last_end = Instant::now();
        // Every connection prepares the statement (a first call needs no proof: its Parse is
        // one) and has answered just now.
        for (c, t) in callers.iter().zip(&mut tracks) {
            for _ in 0..c.rotation() {
                timed(c, t, &mut last_end, false).await?;
            }
        }
        if d / k as u32 >= STAGGER_MIN_IDLE {
            let start = Instant::now();
            let mut slot: Vec<Instant> = (0..k)
                .map(|i| start + d + d * i as u32 / k as u32)
                .collect();
            let mut due = slot.clone();
            // The series due first (that still has calls to make) goes next.
            while let Some(i) = (0..k)
                .filter(|&i| tracks[i].lat.len() < n)
                .min_by_key(|&i| due[i])
            {
                tokio::time::sleep_until(tokio::time::Instant::from_std(due[i])).await;
                timed(&callers[i], &mut tracks[i], &mut last_end, true).await?;
                slot[i] += d + STAGGER_SLACK;
                due[i] = slot[i].max(last_end + d);
            }
        } else {
            while tracks.iter().any(|t| t.lat.len() < n) {
                for (c, t) in callers.iter().zip(&mut tracks) {
                    let m = TURN.min(n - t.lat.len());
                    if m == 0 {
                        continue;
                    }
                    for _ in 0..c.rotation() {
                        pause(d).await;
                        timed(c, t, &mut last_end, false).await?;
                    }
                    for _ in 0..m {
                        pause(d).await;
                        timed(c, t, &mut last_end, true).await?;
                    }
                }
            }
        }
        for (i, (c, t)) in callers.iter().zip(&tracks).enumerate() {
            let window = c.window();
            let mean = t.lat.iter().sum::<f64>() / t.lat.len().max(1) as f64;
            let mut v = t.lat.clone();
            v.sort_by(f64::total_cmp);
            let ms = |d: &[Duration]| {
                let mut m: Vec<f64> = d.iter().map(|g| g.as_secs_f64() * 1e3).collect();
                m.sort_by(f64::total_cmp);
                nearest_rank(&m, 0.5)
            };
            cells.push(Cell {
                series: SERIES[i].name.to_owned(),
                interval_ms: d.as_secs_f64() * 1e3,
                window_ms: window.map(|w| w.as_secs_f64() * 1e3),
                calls: v.len(),
                p50_us: nearest_rank(&v, 0.5),
                p99_us: nearest_rank(&v, 0.99),
                mean_us: mean,
                proved: window.map(|w| t.gaps.iter().filter(|&&g| g > w).count()),
                quiet_ms: ms(&t.gaps),
                idle_ms: ms(&t.idle),
                latencies_us: t.lat.iter().map(|x| x.round()).collect(),
            });
        }
        let line = |name: &str| {
            cells
                .iter()
                .rev()
                .find(|c| c.series == name)
                .map_or(f64::NAN, |c| c.p50_us)
        };
        progress(&format!(
            "[liveness] D = {:>6} ms, {n:>4} calls: p50 off {:.0} µs · 1 s {:.0} µs · 500 ms {:.0} \
             µs · always {:.0} µs · 8 conns {:.0} µs · raw {:.0} µs · empty query {:.0} µs",
            d.as_millis(),
            line(SERIES[0].name),
            line(SERIES[1].name),
            line(SERIES[2].name),
            line(SERIES[3].name),
            line(SERIES[4].name),
            line(SERIES[5].name),
            line(SERIES[6].name),
        ));
    }
    for c in callers {
        c.close().await;
    }
    Ok(cells)
}

/// Runs the measurement on the benchmark's tokio runtime (the schedule itself is one task on it,
/// as a caller in an application would be).
///
/// # Errors
///
/// Connect and query errors.
pub(crate) fn run(
    server: &Server,
    s: &LivenessSettings,
    tokio: &tokio::runtime::Runtime,
    progress: fn(&str),
) -> Result<Vec<Cell>, BoxError> {
    let ep = server.tcp.clone();
    let s = s.clone();
    tokio.block_on(
        async move { tokio::spawn(async move { measure(&ep, &s, progress).await }).await },
    )?
}

fn fmt_window(w: Option<f64>) -> String {
    match w {
        None => "–".to_owned(),
        Some(ms) if ms > 1e12 => "off".to_owned(),
        Some(ms) if ms >= 1000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

fn fmt_interval(ms: f64) -> String {
    if ms == 0.0 {
        "back to back".to_owned()
    } else if ms >= 1000.0 {
        format!("every {:.1} s", ms / 1000.0)
    } else {
        format!("every {ms:.0} ms")
    }
}

/// The tables (also printed to stdout): one per pacing, then the extra per call at a glance.
pub(crate) fn tables(cells: &[Cell]) -> String {
    let mut intervals: Vec<f64> = cells.iter().map(|c| c.interval_ms).collect();
    intervals.dedup();
    let mut out = String::new();
    let base = |d: f64| {
        cells
            .iter()
            .find(|c| c.interval_ms == d && c.series == SERIES[0].name)
            .map(|c| c.p50_us)
    };
    for &d in &intervals {
        let _ = writeln!(
            out,
            "### `SELECT 1` {}\n\n| series | window | calls | idle before | quiet per connection | proved | p50 | p99 | mean | p50 − window off |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            fmt_interval(d)
        );
        for c in cells.iter().filter(|c| c.interval_ms == d) {
            let extra = match (base(d), c.window_ms) {
                (Some(b), Some(_)) => format!("{:+.0} µs", c.p50_us - b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} ms | {:.1} ms | {} | {:.0} µs | {:.0} µs | {:.0} µs | {} |",
                c.series,
                fmt_window(c.window_ms),
                c.calls,
                c.idle_ms,
                c.quiet_ms,
                c.proved
                    .map_or_else(|| "–".to_owned(), |p| format!("{p}/{}", c.calls)),
                c.p50_us,
                c.p99_us,
                c.mean_us,
                extra
            );
        }
        out.push('\n');
    }
    // At a glance: p50 per series and pacing.
    let _ = write!(out, "### p50 / p99 (µs) at a glance\n\n| series |");
    for &d in &intervals {
        let _ = write!(out, " {} |", fmt_interval(d));
    }
    out.push_str("\n|---|");
    for _ in &intervals {
        out.push_str("---:|");
    }
    out.push('\n');
    for spec in SERIES {
        let _ = write!(out, "| {} |", spec.name);
        for &d in &intervals {
            match cells
                .iter()
                .find(|c| c.interval_ms == d && c.series == spec.name)
            {
                Some(c) => {
                    let mark = match c.proved {
                        Some(p) if p * 2 > c.calls => " ✱",
                        _ => "",
                    };
                    let _ = write!(out, " {:.0} / {:.0}{mark} |", c.p50_us, c.p99_us);
                }
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out.push_str("\n✱ = most calls were proven first (an empty query before the statement).\n");
    out
}

/// Writes `liveness.json` and `liveness.md` into `dir`.
///
/// # Errors
///
/// I/O errors.
pub(crate) fn write(
    dir: &Path,
    machine: &Machine,
    command: &str,
    elapsed_secs: f64,
    cells: &[Cell],
) -> Result<(), BoxError> {
    #[derive(Serialize)]
    struct Json<'a> {
        machine: &'a Machine,
        command: &'a str,
        elapsed_secs: f64,
        statement: &'a str,
        cells: &'a [Cell],
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(
        dir.join("liveness.json"),
        serde_json::to_string_pretty(&Json {
            machine,
            command,
            elapsed_secs,
            statement: STATEMENT,
            cells,
        })?,
    )?;
    let mut md = String::from("# Liveness window: what the proof costs at light load\n\n");
    md.push_str(&crate::report::machine_line(machine, command));
    let _ = writeln!(
        md,
        "One caller (a task on the benchmark's tokio runtime) runs `{STATEMENT}` through each \
         series, sleeping D on tokio's timer after every call; every series has its own \
         connection(s) over TCP loopback. All series share one schedule, so load from elsewhere \
         falls on all of them alike. Below D = 350 ms they take turns, {TURN} measured calls \
         each (a turn starts with one unmeasured call per connection, at the same pace, since \
         the connections idled through the other series' turns), so every call follows D of \
         idle time as for a lone caller. From 350 ms on they are staggered D / 7 apart and \
         interleaved call by call (one after the other would take seven times as long), every \
         call still following ≥ 50 ms of idle time; to keep that distance a series' call waits \
         for its slot on a grid of period D + 5 ms when that is later than D after its previous \
         call: a first version that interleaved at \
         D = 100 ms (calls 14 ms apart) gave bimodal latencies, fast or slow depending on how \
         recently another series had run. Before each D, every connection runs the statement \
         once (so it is cached everywhere). Run took {elapsed_secs:.0} s.\n"
    );
    md.push_str(
        "* momoko: `Pool::builder(dsn, TokioExecutor).size(1).max_size(1)` plus \
         `.liveness_window(w)` (none for the default, 1 s); `pool.execute(\"SELECT 1\", &[])`, a \
         cached statement after the first call. When the connection has not been answered for \
         longer than `w`, an empty query goes first (one round trip).\n\
         * momoko, 8 connections: `size(8)`, default window. A sequential caller's statements go \
         round the 8 connections (least recently used first), so each connection is quiet for \
         8 × D.\n\
         * tokio-postgres, prepared SELECT 1: one client, the statement prepared once, \
         `client.query`: the floor without a pool.\n\
         * tokio-postgres, empty query: one client, `batch_execute(\"\")`: the proof's round trip \
         alone, paced like the rest.\n\n\
         Columns: idle before = median time between the end of the previous call (of any \
         series) and the call; quiet per connection = median time between two calls on the same connection \
         (start to start: momoko dates the server's last answer by the start of the statement it \
         answered, so this is what it compares with the window); proved = calls whose connection had been quiet longer than \
         the window (counted from the schedule: the calls momoko proved, give or take the few µs \
         between this clock reading and momoko's); p50 / p99 / mean \
         = the caller's latency of one call (p99 by nearest rank: the slowest call when there are \
         fewer than 100); p50 − window off = the median's extra over the same pacing with the \
         proof off.\n\n",
    );
    md.push_str(&tables(cells));
    std::fs::write(dir.join("liveness.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_start_goes_round_the_connections() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let mut ring = VecDeque::new();
        // Three connections: the 4th call is back on the first one.
        assert_eq!(previous_start(&mut ring, 3, at(0)), None);
        assert_eq!(previous_start(&mut ring, 3, at(10)), None);
        assert_eq!(previous_start(&mut ring, 3, at(20)), None);
        assert_eq!(previous_start(&mut ring, 3, at(30)), Some(at(0)));
        assert_eq!(previous_start(&mut ring, 3, at(40)), Some(at(10)));
        let mut one = VecDeque::new();
        assert_eq!(previous_start(&mut one, 1, at(0)), None);
        assert_eq!(previous_start(&mut one, 1, at(5)), Some(at(0)));
    }
}
