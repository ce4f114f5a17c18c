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
