//! Medians over repetitions, `results.json`, `results.md` and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::Machine;
use crate::model::{BoxError, Group, Sample, Transport, Workload};

/// The contender every ratio is taken against (besides pgbench).
pub(crate) const BASELINE: &str = "deadpool-postgres";
/// The physical reference: one statement per round trip.
pub(crate) const PGBENCH: &str = "pgbench";
/// The server's limit: pgbench in pipeline mode, 32 statements per Sync.
pub(crate) const PGBENCH_PIPELINE: &str = "pgbench-pipeline";
/// The contender the targets are about.
pub(crate) const SUBJECT: &str = "momoko-tokio";
/// momoko's pipelined mode, checked against the same targets.
pub(crate) const PIPELINED: &str = "momoko-pipelined";
/// momoko with adaptive pipelining.
pub(crate) const ADAPTIVE: &str = "momoko-adaptive";
/// momoko's batches of 32.
pub(crate) const BATCHES: [&str; 2] = ["momoko-batch", "momoko-batch-atomic"];

/// Whether `name` is a pgbench reference: run once per group with its clients as the
/// connections, listed after the contenders.
pub(crate) fn is_reference(name: &str) -> bool {
    name == PGBENCH || name == PGBENCH_PIPELINE
}

/// Median figures of one contender in one cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Contender name.
    pub(crate) contender: String,
    /// Workload, transport, connections.
    pub(crate) group: Group,
    /// Tasks (pgbench: its clients).
    pub(crate) concurrency: usize,
    /// Successful repetitions.
    pub(crate) reps_ok: usize,
    /// Median queries per second.
    pub(crate) qps: f64,
    /// Median of the repetitions' p50, microseconds (`None` for pgbench).
    pub(crate) p50_us: Option<f64>,
    /// Median of the repetitions' p99, microseconds (`None` for pgbench).
    pub(crate) p99_us: Option<f64>,
    /// Median of the repetitions' mean latency, microseconds.
    pub(crate) mean_us: Option<f64>,
    /// Median client CPU seconds per 10k queries.
    pub(crate) cpu_s_per_10k: f64,
    /// Smallest and largest q/s over the repetitions.
    pub(crate) qps_range: (f64, f64),
    /// Median q/s over deadpool-postgres' in the same cell.
    pub(crate) vs_deadpool: Option<f64>,
    /// Median q/s over pgbench's in the same group.
    pub(crate) vs_pgbench: Option<f64>,
    /// Median q/s over pgbench pipeline mode's in the same group.
    pub(crate) vs_pipeline: Option<f64>,
    /// Statements per call (latencies are per call).
    pub(crate) per_call: u64,
    /// The last error, if any repetition failed.
    pub(crate) error: Option<String>,
}

/// The median of the values that are present.
fn median_of(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    if v.is_empty() {
        None
    } else {
        Some(median(v))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians per (cell, contender), in the order `order` gives contenders.
pub(crate) fn summarise(samples: &[Sample], order: &[&str]) -> Vec<Summary> {
    let mut cells: BTreeMap<(Group, usize, usize), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let group = Group {
            workload: s.workload,
            transport: s.transport,
            conns: s.conns,
        };
        let rank = order
            .iter()
            .position(|c| *c == s.contender)
            .unwrap_or(order.len());
        cells
            .entry((group, s.concurrency, rank))
            .or_default()
            .push(s);
    }
    let mut out: Vec<Summary> = cells
        .into_iter()
        .map(|((group, concurrency, _), runs)| {
            let ok: Vec<&&Sample> = runs.iter().filter(|s| s.error.is_none()).collect();
            let qps: Vec<f64> = ok.iter().map(|s| s.qps).collect();
            let min = qps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = qps.iter().copied().fold(0.0, f64::max);
            Summary {
                contender: runs[0].contender.clone(),
                group,
                concurrency,
                reps_ok: ok.len(),
                qps: median(qps),
                p50_us: median_of(ok.iter().map(|s| s.p50_us)),
                p99_us: median_of(ok.iter().map(|s| s.p99_us)),
                mean_us: median_of(ok.iter().map(|s| s.mean_us)),
                cpu_s_per_10k: median(ok.iter().map(|s| s.cpu_s_per_10k).collect()),
                qps_range: (if min.is_finite() { min } else { 0.0 }, max),
                vs_deadpool: None,
                vs_pgbench: None,
                vs_pipeline: None,
                per_call: runs[0].per_call.max(1),
                error: runs.iter().rev().find_map(|s| s.error.clone()),
            }
        })
        .collect();
    // Ratios against deadpool (same cell) and pgbench (same group).
    let lookup: Vec<(Group, usize, String, f64)> = out
        .iter()
        .map(|s| (s.group, s.concurrency, s.contender.clone(), s.qps))
        .collect();
    for s in &mut out {
        let base = lookup
            .iter()
            .find(|(g, c, n, q)| *g == s.group && *c == s.concurrency && n == BASELINE && *q > 0.0);
        let reference = |name: &str| {
            lookup
                .iter()
                .find(|(g, _, n, q)| *g == s.group && n == name && *q > 0.0)
                .map(|r| r.3)
        };
        let (pg, pipe) = (reference(PGBENCH), reference(PGBENCH_PIPELINE));
        if s.qps > 0.0 {
            s.vs_deadpool = base.map(|b| s.qps / b.3);
            s.vs_pgbench = pg.map(|p| s.qps / p);
            s.vs_pipeline = pipe.map(|p| s.qps / p);
        }
    }
    out
}

/// Everything `results.json` holds.
#[derive(Debug, Serialize)]
pub(crate) struct Results<'a> {
    /// The machine and server.
    pub(crate) machine: &'a Machine,
    /// How the run was set up.
    pub(crate) settings: &'a Settings,
    /// Medians per cell and contender.
    pub(crate) summaries: &'a [Summary],
    /// Every repetition of every cell.
    pub(crate) samples: &'a [Sample],
}

/// The run's settings, for the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Settings {
    /// Measured seconds per cell.
    pub(crate) secs: f64,
    /// Warm-up seconds per cell.
    pub(crate) warmup_secs: f64,
    /// Repetitions.
    pub(crate) reps: usize,
    /// Which matrix.
    pub(crate) matrix: String,
    /// Contenders in base order.
    pub(crate) contenders: Vec<String>,
    /// The command line.
    pub(crate) command: String,
    /// Wall-clock seconds the run took.
    pub(crate) elapsed_secs: f64,
    /// Notes on how each contender is configured.
    pub(crate) notes: Vec<String>,
}

fn fmt_qps(q: f64) -> String {
    let n = q.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

fn fmt_us(us: Option<f64>) -> String {
    let Some(us) = us else {
        return "–".to_owned();
    };
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The rows of `group` at `concurrency`, then pgbench's row of the group if `with_pgbench`.
fn cell_rows(
    out: &mut String,
    summaries: &[Summary],
    group: Group,
    concurrency: usize,
    with_pgbench: bool,
) {
    let rows = summaries
        .iter()
        .filter(|s| s.group == group && s.concurrency == concurrency && !is_reference(&s.contender))
        .chain(
            summaries
                .iter()
                .filter(|s| with_pgbench && s.group == group && is_reference(&s.contender)),
        );
    for s in rows {
        let tasks = if is_reference(&s.contender) {
            format!("{} clients", s.concurrency)
        } else {
            concurrency.to_string()
        };
        let name = if s.per_call > 1 {
            format!("{} (×{} per call)", s.contender, s.per_call)
        } else {
            s.contender.clone()
        };
        if s.reps_ok == 0 {
            let _ = writeln!(
                out,
                "| {tasks} | {name} | failed: {} | | | | | | | |",
                s.error.as_deref().unwrap_or("?").replace('|', "/")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {tasks} | {name} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            fmt_qps(s.qps),
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            fmt_us(s.mean_us),
            s.cpu_s_per_10k,
            fmt_ratio(s.vs_deadpool),
            fmt_ratio(s.vs_pgbench),
            fmt_ratio(s.vs_pipeline),
        );
    }
}

const TABLE_HEAD: &str =
    "| tasks | contender | statements/s | p50 | p99 | mean | CPU s/10k | ×deadpool | ×pgbench | ×pgbench-pipeline |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// The markdown tables of every group (also printed to stdout).
pub(crate) fn tables(summaries: &[Summary]) -> String {
    let mut groups: Vec<Group> = summaries.iter().map(|s| s.group).collect();
    groups.sort();
    groups.dedup();
    let mut out = String::new();
    for group in groups {
        let mut levels: Vec<usize> = summaries
            .iter()
            .filter(|s| s.group == group && !is_reference(&s.contender))
            .map(|s| s.concurrency)
            .collect();
        if levels.is_empty() {
            // Only the references ran: their clients are the level.
            levels.push(group.conns);
        }
        levels.sort_unstable();
        levels.dedup();
        let _ = writeln!(out, "### {group}\n");
        // q/s matrix: contenders × tasks.
        let mut names: Vec<&str> = Vec::new();
        for s in summaries.iter().filter(|s| s.group == group) {
            if !names.contains(&s.contender.as_str()) {
                names.push(&s.contender);
            }
        }
        // pgbench, the reference, goes last.
        names.sort_by_key(|n| is_reference(n));
        let _ = write!(out, "| statements/s (median) |");
        for l in &levels {
            let _ = write!(out, " {l} tasks |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &levels {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for name in &names {
            let _ = write!(out, "| {name} |");
            for l in &levels {
                let s = summaries.iter().find(|s| {
                    s.group == group
                        && s.contender == *name
                        && (s.concurrency == *l || is_reference(&s.contender))
                });
                let _ = match s {
                    Some(s) if s.reps_ok > 0 => write!(out, " {} |", fmt_qps(s.qps)),
                    Some(_) => write!(out, " failed |"),
                    None => write!(out, " |"),
                };
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(TABLE_HEAD);
        for (i, l) in levels.iter().enumerate() {
            cell_rows(&mut out, summaries, group, *l, i + 1 == levels.len());
        }
        out.push('\n');
    }
    out
}

/// The headline cell: SELECT 1 over TCP, 8 connections, 64 tasks.
pub(crate) const HEADLINE: (Group, usize) = (
    Group {
        workload: Workload::Select1,
        transport: Transport::Tcp,
        conns: 8,
    },
    64,
);

fn find<'a>(
    summaries: &'a [Summary],
    name: &str,
    group: Group,
    tasks: usize,
) -> Option<&'a Summary> {
    summaries.iter().find(|s| {
        s.group == group
            && s.contender == name
            && (s.concurrency == tasks || is_reference(name))
            && s.reps_ok > 0
    })
}

/// The performance targets (reported, never asserted), on every cell they are about that ran:
/// SELECT 1 and point read, both transports, 8 connections, 64 and 256 tasks. Ratios ≥ 1 of the
/// goal are met; p99 and CPU are shown as the reference's over the subject's (≥ 1 is met).
pub(crate) fn targets(summaries: &[Summary]) -> String {
    let mut groups: Vec<Group> = summaries
        .iter()
        .map(|s| s.group)
        .filter(|g| g.conns == 8 && g.workload != Workload::Insert)
        .collect();
    groups.sort();
    groups.dedup();
    let mut out =
        String::from("| target | cell | measured | goal | verdict |\n|---|---|---:|---:|---|\n");
    let mut lines = 0;
    for group in groups {
        for tasks in [64, 256] {
            let get = |name: &str| find(summaries, name, group, tasks);
            if get(BASELINE).is_none() {
                continue;
            }
            let cell = format!("{} · {} · {tasks} tasks", group.workload, group.transport);
            let mut line = |what: String, value: Option<f64>, goal: f64| {
                let Some(v) = value else { return };
                let verdict = if v >= goal { "met" } else { "NOT met" };
                let _ = writeln!(
                    out,
                    "| {what} | {cell} | {v:.2}× | {goal:.2}× | {verdict} |"
                );
                lines += 1;
            };
            let ratio = |a: &str, b: &str| match (get(a), get(b)) {
                (Some(a), Some(b)) if b.qps > 0.0 => Some(a.qps / b.qps),
                _ => None,
            };
            // Reference p99 (or CPU) over the subject's: ≥ 1 when the subject is no worse.
            let inverse = |a: &str, b: &str, f: fn(&Summary) -> Option<f64>| match (
                get(a).and_then(f),
                get(b).and_then(f),
            ) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            };
            let p99 = |s: &Summary| s.p99_us;
            let cpu = |s: &Summary| Some(s.cpu_s_per_10k).filter(|c| *c > 0.0);
            let speedup = if tasks == 64 { 1.5 } else { 2.0 };
            for subject in [ADAPTIVE, PIPELINED] {
                line(
                    format!("{subject} ≥ {speedup}× deadpool-postgres"),
                    ratio(subject, BASELINE),
                    speedup,
                );
                line(
                    format!("{subject} p99 ≤ deadpool's (deadpool p99 / {subject} p99)"),
                    inverse(subject, BASELINE, p99),
                    1.0,
                );
            }
            if tasks != 64 {
                continue;
            }
            for subject in [ADAPTIVE, PIPELINED] {
                line(
                    format!("{subject} client CPU per statement ≤ pgbench's (pgbench / {subject})"),
                    inverse(subject, PGBENCH, cpu),
                    1.0,
                );
            }
            for batch in BATCHES {
                line(
                    format!("{batch} ≥ 0.5× pgbench-pipeline statements/s"),
                    ratio(batch, PGBENCH_PIPELINE),
                    0.5,
                );
                line(
                    format!(
                        "{batch} client CPU per statement ≤ pgbench-pipeline's (pgbench-pipeline / {batch})"
                    ),
                    inverse(batch, PGBENCH_PIPELINE, cpu),
                    1.0,
                );
            }
            for rt in ["momoko-async-std", "momoko-smol"] {
                line(
                    format!("{rt} ≥ 0.95× momoko-tokio"),
                    ratio(rt, SUBJECT),
                    0.95,
                );
            }
        }
    }
    if lines == 0 {
        return "(no cell with deadpool-postgres at 64 or 256 tasks and 8 connections ran)\n"
            .into();
    }
    out
}

/// The opening paragraphs of a report: when, on what machine, which momoko, the command, the
/// server and the load (the machine is small and shared, so the load matters).
pub(crate) fn machine_line(machine: &Machine, command: &str) -> String {
    format!(
        "{} · {} · nproc {} · kernel {} · momoko {} · `{}`\n\nServer: {} ({}). Load average \
         (1, 5, 15 min) at start / end: {} / {}.\n\n",
        machine.date,
        machine.cpu_model,
        machine.nproc,
        machine.kernel,
        machine.git,
        command,
        machine.postgres,
        machine.server,
        machine.loadavg_start,
        machine.loadavg_end
    )
}

/// Writes `results.json`, `results.md` and `chart.svg` into `dir`.
///
/// # Errors
///
/// I/O and chart errors.
pub(crate) fn write_all(
    dir: &Path,
    machine: &Machine,
    settings: &Settings,
    summaries: &[Summary],
    samples: &[Sample],
) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let results = Results {
        machine,
        settings,
        summaries,
        samples,
    };
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;

    let mut md = String::new();
    let _ = writeln!(md, "# momoko-bench results\n");
    let _ = writeln!(
        md,
        "{} · {} · nproc {} · kernel {} · momoko {} · `{}`\n\nServer: {} ({}). pgbench: {}. \
         Load average at start / end: {} / {}.\n",
        machine.date,
        machine.cpu_model,
        machine.nproc,
        machine.kernel,
        machine.git,
        settings.command,
        machine.postgres,
        machine.server,
        machine.pgbench,
        machine.loadavg_start,
        machine.loadavg_end
    );
    let _ = writeln!(
        md,
        "Matrix: {}. {} s measured per cell after {} s warm-up, {} repetition(s), contenders \
         interleaved (order rotated every repetition); every figure is the median over the \
         repetitions. Run took {:.0} s. The machine is small and shared with the server, so \
         treat differences under ~10% as noise.\n",
        settings.matrix, settings.secs, settings.warmup_secs, settings.reps, settings.elapsed_secs
    );
    let _ = writeln!(md, "## How each contender runs\n");
    for n in &settings.notes {
        let _ = writeln!(md, "* {n}");
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "Columns: statements/s = statements completed per second in the window (a batch or a \
         pgbench pipeline counts as its 32 statements); p50/p99/mean = latency of one call as seen \
         by the task (including waiting for a connection; for batches and pipelines, the whole \
         call of 32 statements; pgbench: only its own \"latency average\", as its \
         per-transaction log uses a lazily refreshed clock); CPU s/10k = the client process's \
         user+sys CPU seconds per 10,000 statements (`getrusage(RUSAGE_SELF)` around the window; \
         pgbench: `RUSAGE_CHILDREN` around its process, including connection set-up); ×deadpool \
         = statements/s over deadpool-postgres' in the same cell; ×pgbench and \
         ×pgbench-pipeline = statements/s over pgbench's (`-c <conns> -j 2`, one statement per \
         transaction) and over pgbench's in pipeline mode (32 statements between \
         `\\startpipeline` and `\\endpipeline`) in the same workload/transport/connections \
         group.\n"
    );
    let (group, tasks) = HEADLINE;
    if summaries.iter().any(|s| s.group == group) {
        let _ = writeln!(md, "## Headline: {group} · {tasks} tasks\n");
        md.push_str(TABLE_HEAD);
        cell_rows(&mut md, summaries, group, tasks, true);
        md.push('\n');
        md.push_str(&targets(summaries));
        md.push('\n');
    }
    let _ = writeln!(md, "## All cells\n");
    md.push_str(&tables(summaries));
    let failures: Vec<&Sample> = samples.iter().filter(|s| s.error.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "## Failed runs\n");
        for s in failures {
            let _ = writeln!(
                md,
                "* {} {} {} {}c {}t rep {}: {}",
                s.contender,
                s.workload,
                s.transport,
                s.conns,
                s.concurrency,
                s.rep,
                s.error.as_deref().unwrap_or("")
            );
        }
    }
    std::fs::write(dir.join("results.md"), md)?;
    chart(&dir.join("chart.svg"), machine, summaries)?;
    Ok(())
}

/// Statements/s by concurrency for SELECT 1 over TCP with 8 connections, both axes on a log
/// scale (pgbench's pipeline mode is several times the rest); the pgbench references as
/// dashed lines.
fn chart(path: &Path, machine: &Machine, summaries: &[Summary]) -> Result<(), BoxError> {
    let group = HEADLINE.0;
    let rows: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.group == group && s.reps_ok > 0)
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for s in &rows {
        if !names.contains(&s.contender.as_str()) {
            names.push(&s.contender);
        }
    }
    let tasks: Vec<usize> = {
        let mut t: Vec<usize> = rows
            .iter()
            .filter(|s| !is_reference(&s.contender))
            .map(|s| s.concurrency)
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    // x is log2(tasks), labelled with the task counts that were run.
    let log2 = |t: usize| (t.max(1) as f64).log2();
    let (xmin, xmax) = match (tasks.first(), tasks.last()) {
        (Some(&a), Some(&b)) => (log2(a) - 0.3, log2(b) + 0.3),
        _ => (-0.3, 8.3),
    };
    // y is log10(statements/s).
    let qps_max = rows.iter().map(|s| s.qps).fold(1.0, f64::max);
    let qps_min = rows.iter().map(|s| s.qps).fold(qps_max, f64::min);
    let (ymin, ymax) = ((qps_min * 0.7).log10(), (qps_max * 1.6).log10());

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, footer) = root.split_vertically(600);
    footer.draw_text(
        &format!(
            "{} · {} · {} CPUs · momoko {} · load average {} → {}",
            machine.date,
            machine.cpu_model,
            machine.nproc,
            machine.git,
            machine
                .loadavg_start
                .split(' ')
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            machine
                .loadavg_end
                .split(' ')
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        &("sans-serif", 14).into_text_style(&footer),
        (16, 12),
    )?;
    let mut chart = ChartBuilder::on(&title)
        .caption(
            format!("statements/s by concurrency — {group}"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(xmin..xmax, ymin..ymax)?;
    let labels = tasks.clone();
    chart
        .configure_mesh()
        .x_desc("concurrent tasks (log scale)")
        .y_desc("statements per second (log scale)")
        .x_labels(((xmax - xmin).ceil() as usize + 1).max(2))
        .x_label_formatter(&move |x| {
            labels
                .iter()
                .find(|&&t| (log2(t) - x).abs() < 1e-6)
                .map_or_else(String::new, ToString::to_string)
        })
        .y_label_formatter(&|y| fmt_qps(round2(10f64.powf(*y))))
        .light_line_style(WHITE)
        .draw()?;
    const COLORS: [RGBColor; 10] = [
        RGBColor(220, 20, 60),
        RGBColor(255, 140, 0),
        RGBColor(46, 139, 87),
        RGBColor(148, 0, 211),
        RGBColor(30, 144, 255),
        RGBColor(139, 69, 19),
        RGBColor(112, 128, 144),
        RGBColor(0, 139, 139),
        RGBColor(199, 21, 133),
        RGBColor(85, 107, 47),
    ];
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if is_reference(name) {
            let Some(pg) = rows.iter().find(|s| s.contender == *name) else {
                continue;
            };
            let style = if *name == PGBENCH {
                BLACK.stroke_width(2)
            } else {
                RGBColor(90, 90, 90).stroke_width(2)
            };
            let y = pg.qps.log10();
            chart
                .draw_series(DashedLineSeries::new([(xmin, y), (xmax, y)], 8, 6, style))?
                .label(format!("{name} (-c {})", pg.concurrency))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            continue;
        }
        let points: Vec<(f64, f64)> = tasks
            .iter()
            .filter_map(|&t| {
                rows.iter()
                    .find(|s| s.contender == *name && s.concurrency == t)
                    .map(|s| (log2(t), s.qps.log10()))
            })
            .collect();
        let width = if *name == SUBJECT || *name == ADAPTIVE {
            4
        } else {
            2
        };
        let style = color.stroke_width(width);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `v` rounded to two significant digits (axis labels on a log scale).
fn round2(v: f64) -> f64 {
    if v <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(v.log10().floor() as i32 - 1);
    (v / scale).round() * scale
}

/// What `results.json` is read back as (summaries are recomputed).
#[derive(Debug, Deserialize)]
struct Loaded {
    machine: Machine,
    settings: Settings,
    samples: Vec<Sample>,
}

/// Re-renders `results.md` and `chart.svg` (and rewrites `results.json`) from a saved
/// `results.json`, into `out` or the file's own folder. Returns the tables and targets text.
///
/// # Errors
///
/// When the file cannot be read or parsed, or the outputs cannot be written.
pub(crate) fn render(json: &Path, out: Option<&Path>) -> Result<String, BoxError> {
    let text = std::fs::read_to_string(json)
        .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    let loaded: Loaded =
        serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", json.display()))?;
    let order: Vec<&str> = loaded
        .settings
        .contenders
        .iter()
        .map(String::as_str)
        .collect();
    let summaries = summarise(&loaded.samples, &order);
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => json
            .parent()
            .map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf),
    };
    write_all(
        &dir,
        &loaded.machine,
        &loaded.settings,
        &summaries,
        &loaded.samples,
    )?;
    Ok(format!("{}\n{}", tables(&summaries), targets(&summaries)))
}
