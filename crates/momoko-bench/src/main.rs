//! `momoko-bench`: momoko's pool on tokio, async-std and smol against deadpool-postgres,
//! bb8-postgres, sqlx, raw tokio-postgres and pgbench, on a throw-away PostgreSQL cluster.
//!
//! Every contender gets the same number of connections, runs the same prepared statements, and
//! is measured by the same loop ([`harness::drive`]); contenders are interleaved and every cell is
//! repeated, the median reported. Results go to `results.json`, `results.md` and `chart.svg`.
//! Run `momoko-bench --help` for the options.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod contenders;
mod db;
mod harness;
mod liveness;
mod model;
mod pgbench;
mod report;
mod spike;

use std::collections::HashSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use cli::{Options, Parsed};
use contenders::ContenderId;
use db::{Machine, Server};
use harness::Phase;
use model::{BoxError, Cell, Sample};
use pgbench::Pgbench;

/// How each contender is set up, for the report.
fn notes(opts: &Options) -> Vec<String> {
    let smol_threads = std::env::var("SMOL_THREADS").unwrap_or_else(|_| "1".into());
    let async_std_threads =
        std::env::var("ASYNC_STD_THREAD_COUNT").unwrap_or_else(|_| "the CPU count".into());
    let all = [
        "momoko-*: `Pool::builder(dsn, executor).size(n).max_size(n).connect()`, \
         `pool.execute(sql, params)` (statements prepared and cached per connection by momoko; \
         rows collected into a `Cursor`)."
            .to_owned(),
        "momoko-pipelined: momoko-tokio plus `.pipeline(32)` (up to 32 autocommit statements \
         share one connection, sent back to back)."
            .to_owned(),
        "momoko-tokio, momoko-pipelined, deadpool-postgres, bb8-postgres, sqlx and tokio-postgres-raw share one \
         tokio multi-threaded runtime (worker threads = CPUs); momoko-async-std uses async-std's \
         global executor with ASYNC_STD_THREAD_COUNT="
            .to_owned()
            + &async_std_threads
            + "; momoko-smol uses smol's global executor with SMOL_THREADS="
            + &smol_threads
            + " (both plus async-io's mostly idle fallback reactor thread).",
        "deadpool-postgres 0.14: `Manager::from_config(.., ManagerConfig::default())` \
         (RecyclingMethod::Fast), `max_size(n)`, `client.prepare_cached(sql)` then \
         `query`/`execute`; all n connections opened before the clock starts."
            .to_owned(),
        "bb8-postgres 0.9: bb8 defaults (test_on_check_out = true: `simple_query(\"\")` on every \
         checkout), `max_size(n)`, `min_idle(n)`; bb8-postgres' manager wrapped to prepare the \
         workload's statement once per connection."
            .to_owned(),
        "sqlx 0.8: `PgPoolOptions` defaults with `max_connections(n)`, `min_connections(n)`; \
         `sqlx::query(sql).bind(..).fetch_all/execute` (prepared and cached per connection)."
            .to_owned(),
        "tokio-postgres-raw: n clients, task i always uses client i mod n behind a FIFO \
         `tokio::sync::Mutex` (one query in flight per client), statement prepared once per \
         client: the no-pool floor."
            .to_owned(),
        "pgbench: `pgbench -n -M prepared -c <conns> -j 2 -T <round(secs)> -f <script>` (-h \
         <socket dir> for unix); its tps and \"latency average\" as printed; run once per \
         workload/transport/connections group per repetition, without warm-up (its tables are \
         already cached by the other contenders)."
            .to_owned(),
        "Workloads: select1 = `SELECT 1`; point-read = `SELECT balance FROM bench_accounts \
         WHERE id = $1` (100k rows, int primary key, random ids); insert = `INSERT INTO \
         bench_log (id, v) VALUES ($1, $2)` (no index, random 63-bit ids; truncated at the start \
         of every repetition)."
            .to_owned(),
    ];
    let _ = opts;
    all.into_iter().collect()
}

fn progress(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn run(opts: Options) -> Result<(), BoxError> {
    let started = Instant::now();
    let out_dir = match &opts.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("momoko-bench-smoke-{}", std::process::id())),
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;

    progress("momoko-bench: starting the server …");
    let server = Server::start()?;
    // The matrix's tables; the spike and the liveness run need none.
    let version = if opts.run_matrix {
        tokio.block_on(server.prepare_schema())?
    } else {
        tokio.block_on(server.version())?
    };
    let pgbench = Pgbench::locate()?;
    let machine = Machine::probe(version, server.origin.clone(), &pgbench.bin);
    progress(&format!(
        "momoko-bench: {} · {} CPUs · {}",
        machine.postgres, machine.nproc, machine.cpu_model
    ));
    let command = format!(
        "momoko-bench {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    )
    .trim_end()
    .to_owned();

    let mut failures = Vec::new();
    if opts.run_matrix {
        failures.extend(run_matrix(
            &opts,
            &server,
            &tokio,
            &pgbench,
            machine.clone(),
            &command,
            &out_dir,
        )?);
    }
    if opts.spike {
        failures.extend(run_spike(
            &opts,
            &server,
            &tokio,
            machine.clone(),
            &command,
            &out_dir,
        )?);
    }
    if opts.liveness {
        run_liveness(&opts, &server, &tokio, machine, &command, &out_dir)?;
    }
    writeln!(
        std::io::stdout().lock(),
        "results in {} ({:.0} s)",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    )?;
    if !failures.is_empty() && opts.smoke {
        return Err(format!(
            "{} run(s) failed: {}; see {}",
            failures.len(),
            failures.join("; "),
            out_dir.display()
        )
        .into());
    }
    Ok(())
}

/// The same machine facts with the load average around one mode only.
fn for_mode(mut machine: Machine) -> Machine {
    machine.date = db::utc_now();
    machine.loadavg_start = db::loadavg();
    machine
}

/// The throughput matrix. Returns the failed runs' descriptions.
fn run_matrix(
    opts: &Options,
    server: &Server,
    tokio: &tokio::runtime::Runtime,
    pgbench: &Pgbench,
    machine: Machine,
    command: &str,
    out_dir: &std::path::Path,
) -> Result<Vec<String>, BoxError> {
    let started = Instant::now();
    let mut machine = for_mode(machine);
    progress(&format!(
        "matrix: {} · {} cells · contenders: {} · {:.1} s/cell + {:.1} s warm-up · {} rep(s) · \
         about {:.0} s",
        opts.matrix,
        opts.cells.len(),
        opts.contenders
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(","),
        opts.secs.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.reps,
        opts.estimate().as_secs_f64()
    ));

    let mut samples: Vec<Sample> = Vec::new();
    let k = opts.contenders.len().max(1);
    for rep in 0..opts.reps {
        if let Err(e) = tokio.block_on(server.truncate_log()) {
            progress(&format!("warning: cannot truncate bench_log: {e}"));
        }
        let mut order = opts.contenders.clone();
        order.rotate_left(rep % k);
        let mut pgbench_done = HashSet::new();
        for (ci, cell) in opts.cells.iter().enumerate() {
            for &id in &order {
                let cell = if id.is_pgbench() {
                    // Once per group: its clients are the connections.
                    if !pgbench_done.insert((cell.group, id)) {
                        continue;
                    }
                    Cell {
                        group: cell.group,
                        concurrency: cell.group.conns,
                    }
                } else {
                    *cell
                };
                let phase = Phase {
                    warmup: opts.warmup,
                    measure: opts.secs,
                    concurrency: cell.concurrency,
                    seed: (rep as u64) << 32 | ci as u64,
                };
                let sample = match id.run(cell, server, phase, tokio, pgbench) {
                    Ok(raw) => Sample::from_run(id.name(), cell, rep, raw),
                    Err(e) => Sample::failed(id.name(), cell, rep, e.to_string()),
                };
                let line = match &sample.error {
                    None => format!(
                        "[rep {}/{}] {:<38} {:>4} tasks  {:<20} {:>9.0} q/s  p50 {:>8.1} µs  p99 \
                         {:>8.1} µs  mean {:>8.1} µs  cpu {:.3} s/10k",
                        rep + 1,
                        opts.reps,
                        cell.group.to_string(),
                        cell.concurrency,
                        sample.contender,
                        sample.qps,
                        sample.p50_us.unwrap_or(f64::NAN),
                        sample.p99_us.unwrap_or(f64::NAN),
                        sample.mean_us.unwrap_or(f64::NAN),
                        sample.cpu_s_per_10k
                    ),
                    Some(e) => format!(
                        "[rep {}/{}] {} {} tasks {}: FAILED: {e}",
                        rep + 1,
                        opts.reps,
                        cell.group,
                        cell.concurrency,
                        sample.contender
                    ),
                };
                progress(&line);
                samples.push(sample);
                // Let the server settle (backends exit, autovacuum) between runs.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    machine.loadavg_end = db::loadavg();
    let order: Vec<&str> = opts.contenders.iter().map(|c| c.name()).collect();
    let summaries = report::summarise(&samples, &order);
    let settings = report::Settings {
        secs: opts.secs.as_secs_f64(),
        warmup_secs: opts.warmup.as_secs_f64(),
        reps: opts.reps,
        matrix: opts.matrix.clone(),
        contenders: order.iter().map(|s| (*s).to_owned()).collect(),
        command: command.to_owned(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        notes: notes(opts),
    };
    report::write_all(out_dir, &machine, &settings, &summaries, &samples)?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", report::tables(&summaries))?;
    if summaries
        .iter()
        .any(|s| s.group == report::HEADLINE.0 && s.concurrency == report::HEADLINE.1)
    {
        writeln!(stdout, "{}", report::targets(&summaries))?;
    }
    writeln!(
        stdout,
        "matrix: results.json, results.md, chart.svg in {:.0} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(samples
        .iter()
        .filter_map(|s| {
            s.error.as_ref().map(|e| {
                format!(
                    "{} {} {} tasks: {e}",
                    s.contender, s.workload, s.concurrency
                )
            })
        })
        .collect())
}

/// The spike (`--spike`). Returns the failed runs' descriptions.
fn run_spike(
    opts: &Options,
    server: &Server,
    tokio: &tokio::runtime::Runtime,
    machine: Machine,
    command: &str,
    out_dir: &std::path::Path,
) -> Result<Vec<String>, BoxError> {
    let started = Instant::now();
    let mut machine = for_mode(machine);
    let settings = if opts.smoke {
        spike::SpikeSettings::smoke()
    } else {
        spike::SpikeSettings::full(opts.spike_reps)
    };
    let settings = spike::SpikeSettings {
        reps: opts.spike_reps,
        ..settings
    };
    progress(&format!(
        "spike: {} callers · pool of 1 (max {}) · {} ms connects · {} rep(s) · contenders: {}",
        settings.callers,
        settings.max_size,
        settings.connect_delay.as_millis(),
        settings.reps,
        opts.spike_contenders
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(",")
    ));
    let runs = spike::run(server, &opts.spike_contenders, &settings, tokio, progress);
    machine.loadavg_end = db::loadavg();
    let summaries = spike::summarise(&runs, &opts.spike_contenders);
    spike::write(out_dir, &machine, command, &settings, &runs, &summaries)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}\n{}spike: spike.md, spike.json in {:.0} s",
        spike::table(&summaries),
        spike::verdict(&summaries),
        started.elapsed().as_secs_f64()
    )?;
    Ok(runs
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("spike {}: {e}", r.contender))
        })
        .collect())
}

/// The liveness-window cost (`--liveness`).
fn run_liveness(
    opts: &Options,
    server: &Server,
    tokio: &tokio::runtime::Runtime,
    machine: Machine,
    command: &str,
    out_dir: &std::path::Path,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut machine = for_mode(machine);
    let mut settings = if opts.smoke {
        liveness::LivenessSettings::smoke()
    } else {
        liveness::LivenessSettings::full()
    };
    if let Some(intervals) = &opts.intervals {
        settings.intervals.clone_from(intervals);
    }
    progress(&format!(
        "liveness: one caller, SELECT 1 every D in {} · about {:.0} s",
        settings
            .intervals
            .iter()
            .map(|(d, n)| format!("{} ms ×{n}", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
        settings.estimate().as_secs_f64()
    ));
    let cells = liveness::run(server, &settings, tokio, progress)?;
    machine.loadavg_end = db::loadavg();
    let elapsed = started.elapsed().as_secs_f64();
    liveness::write(out_dir, &machine, command, elapsed, &cells)?;
    writeln!(
        std::io::stdout().lock(),
        "{}liveness: liveness.md, liveness.json in {elapsed:.0} s",
        liveness::tables(&cells)
    )?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let opts = match cli::parse(std::env::args().skip(1))? {
        Parsed::Help => {
            let names: Vec<&str> = ContenderId::all().iter().map(|c| c.name()).collect();
            print!("{}", cli::USAGE.replace("{contenders}", &names.join(", ")));
            return Ok(());
        }
        Parsed::Render(json, out) => {
            let text = report::render(&json, out.as_deref())?;
            println!("{text}");
            return Ok(());
        }
        Parsed::Run(opts) => *opts,
    };
    // Every runtime gets as many executor threads as tokio's multi-threaded runtime (the CPU
    // count), unless the caller chose. smol's global executor defaults to 1 thread
    // (SMOL_THREADS); async-std's already defaults to the CPU count (ASYNC_STD_THREAD_COUNT), set
    // here too so the report states it. Both also start async-io's fallback reactor thread
    // ("async-io"), which only polls when no executor thread does (their executor threads drive
    // the reactor themselves through `async_io::block_on`). Set before any thread starts.
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    for var in ["SMOL_THREADS", "ASYNC_STD_THREAD_COUNT"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, n.to_string());
        }
    }
    run(opts)
}
