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
/// The physical reference.
pub(crate) const PGBENCH: &str = "pgbench";
/// The contender the targets are about.
pub(crate) const SUBJECT: &str = "momoko-tokio";
/// momoko's pipelined mode, checked against the same targets.
pub(crate) const PIPELINED: &str = "momoko-pipelined";

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
        let pg = lookup
            .iter()
            .find(|(g, _, n, q)| *g == s.group && n == PGBENCH && *q > 0.0);
        if s.qps > 0.0 {
            s.vs_deadpool = base.map(|b| s.qps / b.3);
            s.vs_pgbench = pg.map(|p| s.qps / p.3);
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
        .filter(|s| s.group == group && s.concurrency == concurrency && s.contender != PGBENCH)
        .chain(
            summaries
                .iter()
                .filter(|s| with_pgbench && s.group == group && s.contender == PGBENCH),
        );
    for s in rows {
        let tasks = if s.contender == PGBENCH {
            format!("{} clients", s.concurrency)
        } else {
            concurrency.to_string()
        };
        if s.reps_ok == 0 {
            let _ = writeln!(
                out,
                "| {tasks} | {} | failed: {} | | | | | | |",
                s.contender,
                s.error.as_deref().unwrap_or("?").replace('|', "/")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {tasks} | {} | {} | {} | {} | {} | {:.3} | {} | {} |",
            s.contender,
            fmt_qps(s.qps),
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            fmt_us(s.mean_us),
            s.cpu_s_per_10k,
            fmt_ratio(s.vs_deadpool),
            fmt_ratio(s.vs_pgbench),
        );
    }
}

const TABLE_HEAD: &str =
    "| tasks | contender | q/s | p50 | p99 | mean | CPU s/10k | ×deadpool | ×pgbench |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|\n";

/// The markdown tables of every group (also printed to stdout).
pub(crate) fn tables(summaries: &[Summary]) -> String {
    let mut groups: Vec<Group> = summaries.iter().map(|s| s.group).collect();
    groups.sort();
    groups.dedup();
    let mut out = String::new();
    for group in groups {
        let mut levels: Vec<usize> = summaries
            .iter()
            .filter(|s| s.group == group && s.contender != PGBENCH)
            .map(|s| s.concurrency)
            .collect();
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
        names.sort_by_key(|n| *n == PGBENCH);
        let _ = write!(out, "| q/s (median) |");
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
                        && (s.concurrency == *l || s.contender == PGBENCH)
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
            && (s.concurrency == tasks || name == PGBENCH)
            && s.reps_ok > 0
    })
}

/// The performance targets, checked on the headline cell (reported, never asserted).
pub(crate) fn targets(summaries: &[Summary]) -> String {
    let (group, tasks) = HEADLINE;
    if find(summaries, SUBJECT, group, tasks).is_none() {
        return "(the headline cell select1 · tcp · 8 connections · 64 tasks was not run)\n".into();
    }
    let mut out = String::from(
        "| target (select1 · tcp · 8 conns · 64 tasks) | measured | verdict |\n|---|---:|---|\n",
    );
    let mut line = |what: &str, value: Option<f64>, goal: f64| {
        let verdict = match value {
            Some(v) if v >= goal => "met",
            Some(_) => "NOT met",
            None => "n/a",
        };
        let shown = value.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
        let _ = writeln!(out, "| {what} | {shown} | {verdict} |");
    };
    let qps = |name: &str| find(summaries, name, group, tasks).map(|s| s.qps);
    let ratio = |a: &str, b: &str| match (qps(a), qps(b)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let p99 = |name: &str| find(summaries, name, group, tasks).and_then(|s| s.p99_us);
    for subject in [SUBJECT, PIPELINED] {
        if qps(subject).is_none() {
            continue;
        }
        line(
            &format!("{subject} ≥ 1.5× deadpool-postgres q/s"),
            ratio(subject, BASELINE),
            1.5,
        );
        line(
            &format!("{subject} ≥ 1.5× bb8-postgres q/s"),
            ratio(subject, "bb8-postgres"),
            1.5,
        );
        line(
            &format!("{subject} ≥ 1.0× pgbench (8 clients) q/s"),
            ratio(subject, PGBENCH),
            1.0,
        );
        let p99_ratio = match (p99(BASELINE), p99(subject)) {
            (Some(d), Some(m)) if m > 0.0 => Some(d / m),
            _ => None,
        };
        line(
            &format!("{subject} p99 ≤ deadpool's (shown: deadpool p99 / {subject} p99, ≥ 1)"),
            p99_ratio,
            1.0,
        );
    }
    for rt in ["momoko-async-std", "momoko-smol"] {
        line(
            &format!("{rt} ≥ 0.9× momoko-tokio q/s"),
            ratio(rt, SUBJECT),
            0.9,
        );
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
        "Columns: q/s = completed queries per second in the window; p50/p99/mean = per-query latency \
         seen by the task (including waiting for a connection; pgbench: only its own \
         \"latency average\", as its per-transaction log uses a lazily refreshed clock); CPU s/10k = the client process's \
         user+sys CPU seconds per 10,000 queries (`getrusage(RUSAGE_SELF)` around the window; \
         pgbench: `RUSAGE_CHILDREN` around its process, including connection set-up); ×deadpool \
         = q/s over deadpool-postgres' in the same cell; ×pgbench = q/s over pgbench's \
         (`-c <conns> -j 2`) in the same workload/transport/connections group.\n"
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
    chart(&dir.join("chart.svg"), summaries)?;
    Ok(())
}

/// q/s by concurrency for SELECT 1 over TCP with 8 connections; pgbench as a dashed line.
fn chart(path: &Path, summaries: &[Summary]) -> Result<(), BoxError> {
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
            .filter(|s| s.contender != PGBENCH)
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
    let ymax = rows.iter().map(|s| s.qps).fold(1.0, f64::max) * 1.15;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("q/s by concurrency — {group}"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(xmin..xmax, 0.0..ymax)?;
    let labels = tasks.clone();
    chart
        .configure_mesh()
        .x_desc("concurrent tasks (log scale)")
        .y_desc("queries per second")
        .x_labels(((xmax - xmin).ceil() as usize + 1).max(2))
        .x_label_formatter(&move |x| {
            labels
                .iter()
                .find(|&&t| (log2(t) - x).abs() < 1e-6)
                .map_or_else(String::new, ToString::to_string)
        })
        .y_label_formatter(&|y| fmt_qps(*y))
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
        if *name == PGBENCH {
            let Some(pg) = rows.iter().find(|s| s.contender == PGBENCH) else {
                continue;
            };
            let style = BLACK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(xmin, pg.qps), (xmax, pg.qps)],
                    8,
                    6,
                    style,
                ))?
                .label(format!("pgbench (-c {})", pg.concurrency))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            continue;
        }
        let points: Vec<(f64, f64)> = tasks
            .iter()
            .filter_map(|&t| {
                rows.iter()
                    .find(|s| s.contender == *name && s.concurrency == t)
                    .map(|s| (log2(t), s.qps))
            })
            .collect();
        let width = if *name == SUBJECT { 4 } else { 2 };
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
