//! Helpers shared by the integration tests: running the real `psql` client.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The psql client: `$PATH`, else `/usr/lib/postgresql/*/bin`.
pub fn psql_bin() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("psql"))
            .find(|p| p.is_file())
    });
    from_path
        .or_else(|| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|e| e.path().join("bin/psql"))
                .filter(|p| p.is_file())
                .collect();
            dirs.sort();
            dirs.pop()
        })
        .expect("psql not found")
}

/// A `psql -X -A -t -c <sql>` command against `dsn`.
pub fn psql_command(dsn: &str, sql: &str) -> Command {
    let mut cmd = Command::new(psql_bin());
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        dsn,
        "-c",
        sql,
    ])
    .env_remove("PGCONNECT_TIMEOUT")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs one SQL command; `Ok(stdout)` or `Err(stderr)`.
pub fn psql(dsn: &str, sql: &str) -> Result<String, String> {
    let out = psql_command(dsn, sql).output().expect("spawn psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Polls `cond` every 20 ms for at most `limit`; returns whether it became true.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(state, ppid)` of `pid` from `/proc`, `None` once it is gone.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The postmaster pid of the server in `data_dir` (first line of `postmaster.pid`).
pub fn postmaster_pid(data_dir: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// A postmaster and its live children (checkpointer, walwriter, backends, ...).
pub fn server_processes(data_dir: &std::path::Path) -> Vec<i32> {
    let pm = postmaster_pid(data_dir);
    let mut pids = vec![pm];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if proc_stat(pid).is_some_and(|(state, ppid)| ppid == pm && state != 'Z') {
            pids.push(pid);
        }
    }
    pids
}
