//! pgbench as the physical reference:
//! `pgbench -n -M prepared -c <conns> -j 2 -T <secs> -f <script>`, its tps and average latency parsed from its output, and its CPU from
//! `getrusage(RUSAGE_CHILDREN)` around the process.
//!
//! In pipeline mode ([`PIPELINE`] statements between `\startpipeline` and `\endpipeline`) each
//! client sends the statements back to back as Bind/Execute with one Sync for all of them, and
//! one pipeline counts as [`PIPELINE`] statements: the most the server can answer through the
//! extended protocol.
//!
//! pgbench's per-transaction log (`-l`) is not used for percentiles: its threads stamp
//! transactions with a lazily refreshed clock, so at these speeds most entries read 0–50 µs while
//! the true average is several times that.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::db::Endpoint;
use crate::harness::cpu_children;
use crate::model::{BoxError, Group, RawRun, Workload};

/// Statements per pgbench pipeline (and per momoko batch, to compare like with like).
pub(crate) const PIPELINE: usize = 32;

/// The script of one pipeline of [`PIPELINE`] statements of `workload` (each with its own
/// random arguments).
pub(crate) fn pipeline_script(workload: Workload) -> String {
    let one = workload.pgbench_script();
    let mut script = String::from("\\startpipeline\n");
    for _ in 0..PIPELINE {
        script.push_str(&one);
    }
    script.push_str("\\endpipeline\n");
    script
}

/// A located pgbench binary and a scratch directory for its scripts.
#[derive(Debug)]
pub(crate) struct Pgbench {
    /// The binary.
    pub(crate) bin: PathBuf,
    scratch: PathBuf,
    runs: AtomicU64,
}

impl Pgbench {
    /// Finds pgbench (`$PATH`, then `/usr/lib/postgresql/*/bin`, newest first) and creates a
    /// scratch directory.
    ///
    /// # Errors
    ///
    /// When the scratch directory cannot be created.
    pub(crate) fn locate() -> Result<Pgbench, BoxError> {
        let scratch = std::env::temp_dir().join(format!("momoko-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        Ok(Pgbench {
            bin: find_pgbench(),
            scratch,
            runs: AtomicU64::new(0),
        })
    }

    /// Runs pgbench for `group` over `ep` for `measure` (rounded to whole seconds, at least 1:
    /// pgbench's `-T` takes an integer); with `pipeline`, in pipeline mode (see
    /// [`pipeline_script`]).
    ///
    /// # Errors
    ///
    /// When pgbench cannot start, fails, or prints no tps.
    pub(crate) fn run(
        &self,
        ep: &Endpoint,
        group: Group,
        measure: Duration,
        pipeline: bool,
    ) -> Result<RawRun, BoxError> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let (name, text, per_call) = if pipeline {
            (
                format!("{}-pipeline.sql", group.workload.name()),
                pipeline_script(group.workload),
                PIPELINE as u64,
            )
        } else {
            (
                format!("{}.sql", group.workload.name()),
                group.workload.pgbench_script(),
                1,
            )
        };
        let script = self.scratch.join(name);
        std::fs::write(&script, text)?;
        let work_dir = self.scratch.join(format!("run-{n}"));
        std::fs::create_dir_all(&work_dir)?;
        let secs = measure.as_secs_f64().round().max(1.0) as u64;
        let threads = group.conns.min(2);
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&work_dir)
            .args(["-n", "-M", "prepared"])
            .arg("-c")
            .arg(group.conns.to_string())
            .arg("-j")
            .arg(threads.to_string())
            .arg("-T")
            .arg(secs.to_string())
            .arg("-f")
            .arg(&script)
            .arg("-h")
            .arg(ep.host_arg())
            .arg("-p")
            .arg(ep.port.to_string())
            .arg("-U")
            .arg(&ep.user)
            .arg(&ep.dbname);
        if let Some(p) = &ep.password {
            cmd.env("PGPASSWORD", p);
        }
        let before = cpu_children();
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let cpu = cpu_children().since(before);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let tps = parse_after(&stdout, "tps = ")
            .ok_or_else(|| format!("no tps in pgbench's output:\n{stdout}"))?;
        let processed = parse_after(&stdout, "number of transactions actually processed: ")
            .map_or(0, |v| v as u64);
        let mean_ms = parse_after(&stdout, "latency average = ");
        let _ = std::fs::remove_dir_all(&work_dir);
        Ok(RawRun {
            latencies_ns: Vec::new(),
            queries: processed * per_call,
            per_call,
            seconds: secs as f64,
            cpu,
            reported_qps: Some(tps * per_call as f64),
            reported_mean_us: mean_ms.map(|ms| ms * 1000.0),
        })
    }
}

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The number that follows `key` on its line.
fn parse_after(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(key))?;
    let rest = &line[line.find(key)? + key.len()..];
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

fn find_pgbench() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return p;
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin/pgbench")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from("pgbench"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_output() {
        let out = "number of transactions actually processed: 61234\n\
                   latency average = 0.261 ms\n\
                   tps = 30617.012345 (without initial connection time)\n";
        assert_eq!(parse_after(out, "tps = "), Some(30617.012345));
        assert_eq!(
            parse_after(out, "number of transactions actually processed: "),
            Some(61234.0)
        );
        let script = pipeline_script(Workload::Select1);
        assert!(script.starts_with("\\startpipeline\n") && script.ends_with("\\endpipeline\n"));
        assert_eq!(script.matches("SELECT 1;").count(), PIPELINE);
    }
}
