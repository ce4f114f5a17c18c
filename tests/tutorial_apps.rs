//! The tutorial web apps (`examples/tutorial.rs` on tokio + axum, `tutorial_async_std.rs` and
//! `tutorial_smol.rs` on hyper), run as real processes against a throw-away database: every
//! route over real HTTP, an error mapped to `500`, and a graceful exit on SIGTERM.
//!
//! `cargo test` builds the examples with the tests; with a `--test` filter it does not, and this
//! test builds them itself with `cargo build` (every runtime feature, this test's profile).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The examples under test.
const APPS: [&str; 3] = ["tutorial", "tutorial_async_std", "tutorial_smol"];

/// How long an app may take from start to its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an app may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the pool to return to idle after the requests.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one HTTP response.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn tutorial_on_tokio_with_axum() {
    exercise("tutorial");
}

#[test]
fn tutorial_on_async_std_with_hyper() {
    exercise("tutorial_async_std");
}

#[test]
fn tutorial_on_smol_with_hyper() {
    exercise("tutorial_smol");
}

fn exercise(app: &str) {
    let db = momoko_testkit::test_db(app);
    let mut server = Server::start(app, &db.dsn());

    // Right after start-up the pool holds its one connection, idle.
    let idle = "free 1, busy 0, pending 0, dead 0, waiting 0, total 1 (size 1, max_size 4)";
    assert_eq!(server.get("/status"), (200, idle.to_owned()));

    assert_eq!(server.get("/"), (200, "Results: 1".to_owned()));
    assert_eq!(
        server.get("/parallel"),
        (200, "Q1: [(1,)]<br>Q2: [(2,)]<br>Q3: [(3,)]<br>".to_owned())
    );
    assert_eq!(
        server.get("/cursor"),
        (
            200,
            "Read 1000 rows in 100 chunks of 10; sum 500500".to_owned()
        )
    );
    for count in [2, 4] {
        assert_eq!(
            server.get("/transaction"),
            (
                200,
                format!("Transaction: inserted 2 rows; tutorial_visits has {count} rows")
            )
        );
    }
    assert_eq!(
        db.psql("SELECT count(*) FROM tutorial_visits").unwrap(),
        "4\n"
    );
    for _ in 0..2 {
        assert_eq!(
            server.get("/notify"),
            (
                200,
                "Notified on tutorial_channel: hello from /notify".to_owned()
            )
        );
        assert_eq!(
            server.get("/copy"),
            (
                200,
                "Copied 1000 rows in; COPY out read sum 500500".to_owned()
            )
        );
    }

    // The pool may have stretched for `/parallel`; every connection comes back idle.
    let total = server.settled_total();
    assert!((1..=4).contains(&total), "{total}");

    // A database error is a 500 with the error's message; the held connection goes back.
    db.psql("DROP TABLE unit_test_int_table").unwrap();
    let (code, body) = server.get("/cursor");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("unit_test_int_table") && body.contains("does not exist"),
        "{body}"
    );
    assert_eq!(server.get("/"), (200, "Results: 1".to_owned()));
    server.settled_total();

    assert_eq!(server.get("/no/such/page").0, 404);

    // An idle keep-alive connection must not hold up the shutdown.
    let mut idle_client = server.connect();
    let (code, body) = request(&mut idle_client, "/", false);
    assert_eq!((code, body.as_str()), (200, "Results: 1"));

    let status = server.terminate();
    assert!(
        status.success(),
        "{app} exited with {status} after SIGTERM; stderr:\n{}",
        server.stderr()
    );
    let mut rest = Vec::new();
    let closed = idle_client.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)) || closed.is_err(),
        "the idle connection was closed: {closed:?}"
    );
    let stderr = server.stderr();
    assert!(stderr.contains("SIGTERM: shutting down"), "{stderr}");
    assert!(stderr.contains("pool closed"), "{stderr}");
}

/// If the `/status` page shows a settled pool (nothing busy, pending, dead or waiting; every
/// connection free), its total.
fn settled_total(status: &str) -> Option<usize> {
    let fields: Vec<(&str, usize)> = status
        .split([',', '(', ')'])
        .filter_map(|part| {
            let (name, value) = part.trim().split_once(' ')?;
            Some((name, value.parse().ok()?))
        })
        .collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} in {status:?}"))
    };
    assert_eq!((get("size"), get("max_size")), (1, 4), "{status:?}");
    let idle = ["busy", "pending", "dead", "waiting"]
        .iter()
        .all(|name| get(name) == 0);
    (idle && get("free") == get("total")).then(|| get("total"))
}

/// One running app.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `app` on an ephemeral port against `dsn` and waits for its `listening on` line.
    fn start(app: &str, dsn: &str) -> Server {
        let binary = example_binary(app);
        let mut child = Command::new(&binary)
            .env("PORT", "0")
            .env("DATABASE_URL", dsn)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        // The line is the first thing the app prints on stdout.
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{app} did not print `listening on` within {START_TIMEOUT:?}; stderr:\n{}",
                server.stderr()
            )
        });
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("{app} printed {line:?} instead of `listening on`"));
        server.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("{app} printed a bad address {addr:?}: {e}"));
        assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
        assert_ne!(server.addr.port(), 0, "the real port is printed");
        server
    }

    /// A fresh TCP connection to the app.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
        stream
    }

    /// `GET path` on a connection of its own: the status code and the body.
    fn get(&self, path: &str) -> (u16, String) {
        request(&mut self.connect(), path, true)
    }

    /// Polls `/status` until the pool has settled (a connection held by a failed request is
    /// returned after its rollback; a stretch connect may still be finishing) and returns its
    /// total.
    fn settled_total(&self) -> usize {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let (code, status) = self.get("/status");
            assert_eq!(code, 200, "{status}");
            if let Some(total) = settled_total(&status) {
                return total;
            }
            assert!(
                Instant::now() < deadline,
                "the pool did not settle within {SETTLE_TIMEOUT:?}: {status}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with the id of a child process we own and have not reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the app wrote to stderr so far.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After a failed assertion: never leave a server behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 client: `GET path`, then the status code and the body (by
/// `Content-Length`). With `close`, asks the server to close the connection afterwards.
fn request(stream: &mut TcpStream, path: &str, close: bool) -> (u16, String) {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n"
    )
    .unwrap();
    stream.flush().unwrap();

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().unwrap());
        }
        assert!(
            !name.eq_ignore_ascii_case("transfer-encoding"),
            "unexpected {line:?}: the pages have a known length"
        );
    }
    let mut body = vec![0; length.expect("a Content-Length header")];
    reader.read_exact(&mut body).unwrap();
    (code, String::from_utf8(body).unwrap())
}

/// The path of the built example `app`.
///
/// `cargo test` builds the examples along with the tests unless a `--test` filter is given: a
/// binary newer than every source of the workspace is used as it is. Otherwise the three apps
/// are built once per test process with `cargo build` (which also catches what the timestamps
/// cannot tell, such as a binary built from older sources).
fn example_binary(app: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> → target/<profile>/examples/<app>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let candidate = profile_dir.join("examples").join(app);
    if is_fresh(&candidate) {
        return candidate;
    }
    static BUILT: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build_examples(profile_dir));
    built
        .iter()
        .find(|(name, _)| name == app)
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| panic!("cargo built no example {app}: {built:?}"))
}

/// Whether `binary` exists and is newer than every Rust source, manifest and lock file of the
/// workspace.
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else {
                return false;
            };
            if meta.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(path);
                }
            } else if (name.ends_with(".rs") || name.ends_with(".toml") || name == "Cargo.lock")
                && meta.modified().map_or(true, |m| m > built)
            {
                return false;
            }
        }
    }
    true
}

/// `cargo build` of the three apps with every runtime feature, in this test's profile; returns
/// each example's executable as cargo reports it.
fn build_examples(profile_dir: &Path) -> Vec<(String, PathBuf)> {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--message-format=json"]);
    // Build with the features this test was built with when they include every runtime (so
    // `cargo test --all-features` shares its artifacts), else with those three.
    if cfg!(all(
        feature = "tokio",
        feature = "async-std",
        feature = "smol"
    )) {
        cmd.arg("--all-features");
    } else {
        cmd.args(["--features", "tokio,async-std,smol"]);
    }
    for app in APPS {
        cmd.args(["--example", app]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build of the examples failed");
    eprintln!("built the tutorial apps in {:?}", started.elapsed());
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter_map(|line| {
            let name = json_string(line, r#""target":{"#, r#""name":""#)?;
            let exe = json_string(line, "", r#""executable":""#)?;
            Some((name, PathBuf::from(exe)))
        })
        .filter(|(name, _)| APPS.contains(&name.as_str()))
        .collect()
}

/// The string value following `key` (after `scope`, if given) in one line of cargo's JSON output.
/// Enough for target names and paths, which contain no escaped characters here.
fn json_string(line: &str, scope: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(scope)?..];
    let start = rest.find(key)? + key.len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_owned())
}
