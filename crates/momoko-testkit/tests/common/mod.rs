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

/// A minimal PostgreSQL protocol 3 client over TCP (trust authentication, simple queries), to
/// send exactly the startup parameters a test wants.
pub struct RawConn {
    stream: std::net::TcpStream,
}

impl RawConn {
    /// Connects and sends a startup message with `params` (`user`, `database`, ...); returns
    /// the server's error message if it refuses.
    pub fn connect(port: u16, params: &[(&str, &str)]) -> Result<RawConn, String> {
        use std::io::Write;
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = (i32::try_from(body.len()).unwrap() + 4)
            .to_be_bytes()
            .to_vec();
        msg.extend_from_slice(&body);
        let mut conn = RawConn { stream };
        conn.stream.write_all(&msg).map_err(|e| e.to_string())?;
        loop {
            let (tag, payload) = conn.read_message()?;
            match tag {
                b'R' if payload[..4] == [0, 0, 0, 0] => {}
                b'R' => return Err(format!("authentication requested: {payload:?}")),
                b'E' => return Err(error_message(&payload)),
                b'Z' => return Ok(conn),
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
        }
    }

    fn read_message(&mut self) -> Result<(u8, Vec<u8>), String> {
        use std::io::Read;
        let mut header = [0_u8; 5];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| format!("reading: {e}"))?;
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
        let mut payload = vec![0_u8; usize::try_from(len - 4).unwrap()];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| format!("reading: {e}"))?;
        Ok((header[0], payload))
    }

    /// Runs `sql` (simple query protocol) and returns the rows of its last result as text
    /// (`None` for NULL), or the server's error message.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        use std::io::Write;
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&(i32::try_from(sql.len()).unwrap() + 5).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.stream.write_all(&msg).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, payload) = self.read_message()?;
            match tag {
                b'T' => rows.clear(),
                b'D' => {
                    let n = u16::from_be_bytes([payload[0], payload[1]]);
                    let mut at = 2;
                    let mut row = Vec::new();
                    for _ in 0..n {
                        let len = i32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
                        at += 4;
                        if len < 0 {
                            row.push(None);
                        } else {
                            let end = at + usize::try_from(len).unwrap();
                            row.push(Some(
                                String::from_utf8_lossy(&payload[at..end]).into_owned(),
                            ));
                            at = end;
                        }
                    }
                    rows.push(row);
                }
                b'E' => error = Some(error_message(&payload)),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {} // CommandComplete, notices, ...
            }
        }
    }

    /// The single value of a one-row, one-column query.
    pub fn value(&mut self, sql: &str) -> String {
        let rows = self.query(sql).unwrap();
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone().unwrap()
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

/// The `M` (message) field of an ErrorResponse.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map_or_else(
            || String::from("error without a message"),
            |m| String::from_utf8_lossy(m).into_owned(),
        )
}
