//! Command-line options, parsed by hand.

use std::path::PathBuf;
use std::time::Duration;

use crate::contenders::ContenderId;
use crate::model::{BoxError, Cell, Group, Transport, Workload};

/// The help text.
pub(crate) const USAGE: &str = "\
momoko-bench: momoko's Pool against deadpool-postgres, bb8-postgres, sqlx, raw tokio-postgres
and pgbench, on a throw-away PostgreSQL cluster (or DATABASE_URL).

USAGE: momoko-bench [OPTIONS]

  --smoke               a few seconds: SELECT 1, TCP, 1 and 16 tasks, 8 connections, 1 repetition,
                        0.3 s per cell, plus a small spike (16 callers, 50 ms connects) and a
                        short liveness run; writes to a temporary directory unless --out is given
  --spike               only the spike (HikariCP's): a pool of 1 (max 50) behind a proxy adding
                        150 ms to every connect meets 50 callers at once, one `SELECT
                        pg_sleep(0.002)` each; connections dialled, burst time, latencies;
                        5 repetitions unless --reps; contenders momoko-tokio, deadpool-postgres,
                        bb8-postgres, sqlx unless --contenders. Writes spike.md/json (~20 s)
  --liveness            only the liveness-window cost: one caller, a cached SELECT 1 every D
                        (back to back, 10 ms, 100 ms, 500 ms, 1.5 s, 3 s) with the window off,
                        1 s, 500 ms and 0. Writes liveness.md/json (~3 min)
  --matrix              with --spike or --liveness: run the throughput matrix as well, in the
                        same invocation (one machine state, one report folder)
  --intervals <list>    the liveness run's pacings instead: D in ms and calls per series, e.g.
                        100:200,750:60 (0 = back to back)
  --secs <f>            measured seconds per cell (default 3)
  --warmup <f>          warm-up seconds per cell before measuring (default 0.5)
  --reps <n>            repetitions of every cell; the median is reported (default 3)
  --out <dir>           results folder (default ./bench-results of the workspace)
  --contenders <list>   comma-separated, from: {contenders}
                        (default: all but momoko-pipelined-4 and -8, the depth study)
  --workloads <list>    comma-separated, from: select1, point-read, insert
  --transports <list>   comma-separated, from: tcp, unix
  --concurrency <list>  tasks, e.g. 1,16,64,256
  --conns <list>        connections per contender, e.g. 8,16
  --render <json>       only re-render results.md and chart.svg from a saved results.json
                        (into --out, or the file's folder)
  --full                the full cartesian matrix (every workload × transport × 1,16,64,256 tasks
                        × 8,16 connections)
  -h, --help            this text

--spike and --liveness may be combined (with each other and with --smoke, which shrinks them);
neither runs the matrix unless --matrix is given too (then the spike runs the --contenders
that have a spike version).

Without --full or any of --workloads/--transports/--concurrency/--conns, the standard matrix runs:
  select1    × tcp,unix × 8 conns  × 1,16,64,256 tasks
  point-read × tcp      × 8 conns  × 16,64 tasks;  × unix × 8 conns × 64 tasks
  insert     × tcp      × 8 conns  × 16,64 tasks;  × unix × 8 conns × 64 tasks
  select1    × tcp      × 16 conns × 64,256 tasks
Any of those options switches to the cartesian product of the given lists (defaults: all
workloads, both transports, 1,16,64,256 tasks, 8 connections).
";

/// Resolved settings of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Measured time per cell.
    pub(crate) secs: Duration,
    /// Warm-up time per cell.
    pub(crate) warmup: Duration,
    /// Repetitions.
    pub(crate) reps: usize,
    /// Results folder; `None` means a fresh temporary directory.
    pub(crate) out: Option<PathBuf>,
    /// Who runs, in base order (rotated per repetition).
    pub(crate) contenders: Vec<ContenderId>,
    /// The cells, in run order.
    pub(crate) cells: Vec<Cell>,
    /// Whether this is `--smoke`.
    pub(crate) smoke: bool,
    /// How the matrix was chosen, for the report.
    pub(crate) matrix: String,
    /// Whether the throughput matrix runs (not when only `--spike`/`--liveness` were asked).
    pub(crate) run_matrix: bool,
    /// Whether the spike runs.
    pub(crate) spike: bool,
    /// Repetitions of the spike.
    pub(crate) spike_reps: usize,
    /// Who runs in the spike, in base order.
    pub(crate) spike_contenders: Vec<ContenderId>,
    /// Whether the liveness measurement runs.
    pub(crate) liveness: bool,
    /// The liveness run's pacings (D, calls per series), when given.
    pub(crate) intervals: Option<Vec<(Duration, usize)>>,
}

fn list<T>(flag: &str, value: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, BoxError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match parse(part) {
            Some(v) => out.push(v),
            None => return Err(format!("{flag}: unknown value {part:?}").into()),
        }
    }
    if out.is_empty() {
        return Err(format!("{flag}: empty list").into());
    }
    Ok(out)
}

fn positive(flag: &str, value: &str) -> Result<usize, BoxError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: expected a positive integer, got {value:?}").into()),
    }
}

fn seconds(flag: &str, value: &str) -> Result<Duration, BoxError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag}: expected seconds, got {value:?}").into()),
    }
}

/// The standard matrix (see [`USAGE`]).
fn standard_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    let mut add = |workload, transports: &[Transport], conns, tasks: &[usize]| {
        cells.extend(product(&[workload], transports, &[conns], tasks));
    };
    let both = [Transport::Tcp, Transport::Unix];
    add(Workload::Select1, &both, 8, &[1, 16, 64, 256]);
    add(Workload::PointRead, &[Transport::Tcp], 8, &[16, 64]);
    add(Workload::PointRead, &[Transport::Unix], 8, &[64]);
    add(Workload::Insert, &[Transport::Tcp], 8, &[16, 64]);
    add(Workload::Insert, &[Transport::Unix], 8, &[64]);
    add(Workload::Select1, &[Transport::Tcp], 16, &[64, 256]);
    cells
}

fn product(
    workloads: &[Workload],
    transports: &[Transport],
    conns: &[usize],
    tasks: &[usize],
) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &workload in workloads {
        for &transport in transports {
            for &conns in conns {
                for &concurrency in tasks {
                    cells.push(Cell {
                        group: Group {
                            workload,
                            transport,
                            conns,
                        },
                        concurrency,
                    });
                }
            }
        }
    }
    cells
}

/// What `parse` found: options to run, or a request for help.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Run with these options.
    Run(Box<Options>),
    /// Print [`USAGE`] and exit.
    Help,
    /// Re-render the report from a saved `results.json` into the given folder (or its own).
    Render(PathBuf, Option<PathBuf>),
}

/// Parses `args` (without the program name).
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, BoxError> {
    let mut smoke = false;
    let mut full = false;
    let mut secs = None;
    let mut warmup = None;
    let mut reps = None;
    let mut out = None;
    let mut contenders = None;
    let mut workloads = None;
    let mut transports = None;
    let mut concurrency = None;
    let mut conns = None;
    let mut render = None;
    let mut spike = false;
    let mut liveness = false;
    let mut matrix_too = false;
    let mut intervals = None;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, BoxError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(format!("{flag} needs a value").into()),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--smoke" => smoke = true,
            "--full" => full = true,
            "--spike" => spike = true,
            "--matrix" => matrix_too = true,
            "--liveness" => liveness = true,
            "--intervals" => {
                intervals = Some(list("--intervals", &value()?, |s| {
                    let (d, n) = s.split_once(':')?;
                    let d = Duration::from_millis(d.trim().parse().ok()?);
                    let n: usize = n.trim().parse().ok().filter(|&n| n > 0)?;
                    Some((d, n))
                })?);
            }
            "--render" => render = Some(PathBuf::from(value()?)),
            "--secs" => secs = Some(seconds("--secs", &value()?)?),
            "--warmup" => warmup = Some(seconds("--warmup", &value()?)?),
            "--reps" => reps = Some(positive("--reps", &value()?)?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--contenders" => {
                contenders = Some(list("--contenders", &value()?, ContenderId::parse)?);
            }
            "--workloads" => workloads = Some(list("--workloads", &value()?, Workload::parse)?),
            "--transports" => {
                transports = Some(list("--transports", &value()?, Transport::parse)?);
            }
            "--concurrency" => {
                concurrency = Some(list("--concurrency", &value()?, |s| {
                    s.parse().ok().filter(|&n: &usize| n > 0)
                })?);
            }
            "--conns" => {
                conns = Some(list("--conns", &value()?, |s| {
                    s.parse().ok().filter(|&n: &usize| n > 0)
                })?);
            }
            other => return Err(format!("unknown option {other:?} (see --help)").into()),
        }
    }

    if let Some(json) = render {
        return Ok(Parsed::Render(json, out));
    }
    let custom =
        workloads.is_some() || transports.is_some() || concurrency.is_some() || conns.is_some();
    let (cells, matrix) = if smoke && !custom && !full {
        (
            product(&[Workload::Select1], &[Transport::Tcp], &[8], &[1, 16]),
            "smoke: select1 × tcp × 8 conns × 1,16 tasks".to_owned(),
        )
    } else if full || custom {
        let w = workloads.unwrap_or_else(|| Workload::ALL.to_vec());
        let t = transports.unwrap_or_else(|| Transport::ALL.to_vec());
        let c = conns.unwrap_or_else(|| if full { vec![8, 16] } else { vec![8] });
        let k = concurrency.unwrap_or_else(|| vec![1, 16, 64, 256]);
        let label = format!(
            "{}: {} × {} × {} conns × {} tasks",
            if full { "full" } else { "custom" },
            w.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
            t.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
            c.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            k.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        (product(&w, &t, &c, &k), label)
    } else {
        (standard_cells(), "standard (see --help)".to_owned())
    };

    let spike_contenders = match &contenders {
        None => crate::spike::default_contenders(),
        Some(list) if spike && matrix_too => list
            .iter()
            .copied()
            .filter(|c| crate::spike::supports(*c))
            .collect(),
        Some(list) if spike => {
            if let Some(c) = list.iter().find(|c| !crate::spike::supports(**c)) {
                return Err(format!(
                    "--spike: {} has no spike version (momoko on tokio, deadpool-postgres, \
                     bb8-postgres and sqlx have)",
                    c.name()
                )
                .into());
            }
            list.clone()
        }
        Some(_) => Vec::new(),
    };
    let modes = spike || liveness;
    let options = Options {
        secs: secs.unwrap_or(if smoke {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        }),
        warmup: warmup.unwrap_or(if smoke {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        }),
        reps: reps.unwrap_or(if smoke { 1 } else { 3 }),
        out: match out {
            Some(dir) => Some(dir),
            None if smoke => None,
            None => Some(default_out_dir()),
        },
        contenders: contenders.unwrap_or_else(ContenderId::standard),
        cells,
        smoke,
        matrix,
        run_matrix: !modes || matrix_too,
        spike: spike || (smoke && !modes),
        spike_reps: reps.unwrap_or(if smoke { 1 } else { 5 }),
        spike_contenders,
        liveness: liveness || (smoke && !modes),
        intervals,
    };
    Ok(Parsed::Run(Box::new(options)))
}

/// `<workspace>/bench-results`, found from this crate's manifest directory at build time, or
/// `./bench-results` when that directory is gone.
fn default_out_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent().and_then(|p| p.parent()) {
        Some(root) if root.join("Cargo.toml").exists() => root.join("bench-results"),
        _ => PathBuf::from("bench-results"),
    }
}

impl Options {
    /// A rough wall-clock estimate of the run, for the banner.
    pub(crate) fn estimate(&self) -> Duration {
        let per_run = self.warmup + self.secs + Duration::from_millis(150);
        let rust = self.contenders.iter().filter(|c| !c.is_pgbench()).count();
        let mut groups: Vec<Group> = self.cells.iter().map(|c| c.group).collect();
        groups.sort();
        groups.dedup();
        let pg = (self.contenders.iter().filter(|c| c.is_pgbench()).count() * groups.len()) as u32;
        let pg_secs = self.secs.as_secs_f64().round().max(1.0) + 0.3;
        (per_run * (rust * self.cells.len()) as u32 + Duration::from_secs_f64(pg_secs) * pg)
            * self.reps as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Options {
        match parse(args.iter().map(|s| (*s).to_owned())).unwrap() {
            Parsed::Run(o) => *o,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn modes() {
        let o = options(&[]);
        assert!(o.run_matrix && !o.spike && !o.liveness);
        let o = options(&["--smoke"]);
        assert!(o.run_matrix && o.spike && o.liveness);
        assert_eq!(o.spike_reps, 1);
        let o = options(&["--spike"]);
        assert!(!o.run_matrix && o.spike && !o.liveness);
        assert_eq!(o.spike_reps, 5);
        assert_eq!(o.spike_contenders.len(), 4);
        let o = options(&["--matrix", "--spike", "--contenders", "momoko,raw,deadpool"]);
        assert!(o.run_matrix && o.spike && !o.liveness);
        assert_eq!(o.spike_contenders.len(), 2);
        let o = options(&["--liveness", "--smoke"]);
        assert!(!o.run_matrix && !o.spike && o.liveness);
        let o = options(&["--spike", "--reps", "2", "--contenders", "momoko,deadpool"]);
        assert_eq!(o.spike_reps, 2);
        assert_eq!(o.spike_contenders.len(), 2);
        assert!(parse(["--spike", "--contenders", "raw"].map(String::from)).is_err());
        let o = options(&["--liveness", "--intervals", "0:50,1500:30"]);
        assert_eq!(
            o.intervals,
            Some(vec![
                (Duration::ZERO, 50),
                (Duration::from_millis(1500), 30)
            ])
        );
        assert!(parse(["--intervals", "100"].map(String::from)).is_err());
    }
}
