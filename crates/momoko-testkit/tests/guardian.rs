//! Tests that re-run this test binary as a child process: cleanup after `kill -9`, and external
//! clusters given by environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{is_alive, server_processes, wait_until};
use momoko_testkit::{
    test_db, Cluster, PgBouncer, PgBouncerOptions, ReplicatedCluster, ReplicationOptions, StopMode,
    SyncStandby,
};

const CHILD_ENV: &str = "MOMOKO_TESTKIT_TEST_CHILD";

/// Not a test on its own: the entry point of the child processes started by the tests below.
/// Without the environment variable it does nothing.
#[test]
fn child_entry() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("guardian") => {
            let c = Cluster::shared();
            let mut out = std::io::stdout().lock();
            writeln!(out, "\nDATADIR={}", c.data_dir().unwrap().display()).unwrap();
            writeln!(out, "PORT={}", c.port()).unwrap();
            out.flush().unwrap();
            drop(out);
            loop {
                std::thread::park();
            }
        }
        Ok("replicated") => {
            let mut options = ReplicationOptions::default();
            options.sync = SyncStandby::Flush;
            let rc = ReplicatedCluster::start(options).unwrap();
            let bouncer = PgBouncer::start(rc.primary(), PgBouncerOptions::default()).unwrap();
            let mut out = std::io::stdout().lock();
            for server in [rc.primary(), rc.standby()] {
                let data = server.data_dir().unwrap();
                writeln!(out, "\nDIR={}", data.parent().unwrap().display()).unwrap();
                writeln!(out, "PORT={}", server.port()).unwrap();
                for pid in server_processes(data) {
                    writeln!(out, "PID={pid}").unwrap();
                }
            }
            writeln!(out, "DIR={}", bouncer.dir().display()).unwrap();
            writeln!(out, "PORT={}", bouncer.port()).unwrap();
            writeln!(out, "PID={}", bouncer.pid().unwrap()).unwrap();
            writeln!(out, "READY").unwrap();
            out.flush().unwrap();
            drop(out);
            loop {
                std::thread::park();
            }
        }
        Ok("external") => {
            let c = Cluster::shared();
            assert!(!c.is_owned());
            assert!(c.data_dir().is_none());
            assert!(c.socket_dir().is_none());
            assert!(c.unix_dsn("x").is_none());
            let expected_port: u16 = std::env::var("EXPECTED_PORT").unwrap().parse().unwrap();
            assert_eq!(c.port(), expected_port);
            assert_eq!(c.host(), std::env::var("EXPECTED_HOST").unwrap());
            let e = c.stop_blocking(StopMode::Fast).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            let e = futures::executor::block_on(c.start()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            let e = c.reload_with(&[], None).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            let e = c.kill().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            let e = c.set_read_only(true).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            let e = PgBouncer::start(c, PgBouncerOptions::default()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);

            let db = test_db("external");
            assert_eq!(db.psql("SELECT 5").unwrap(), "5\n");
            assert!(
                db.dsn().contains(&format!("dbname={}", db.name())),
                "{}",
                db.dsn()
            );
            assert_eq!(
                common::psql(&db.dsn(), "SELECT current_database()").unwrap(),
                db.name()
            );
            println!("\nEXTERNAL-OK {}", db.name());
        }
        _ => {}
    }
}

fn child(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env_remove("MOMOKO_TEST_DSN")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Kills the child process if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text after `marker` in `line` (libtest may print its own text before ours on a line).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

#[test]
fn guardian_cleans_up_after_kill_9() {
    let mut proc = KillOnDrop(child("guardian").spawn().unwrap());
    let stdout = proc.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut data_dir = None;
    let mut port = None;
    while data_dir.is_none() || port.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child printed its data directory");
        if let Some(d) = after(&line, "DATADIR=") {
            data_dir = Some(PathBuf::from(d));
        }
        if let Some(p) = after(&line, "PORT=") {
            port = Some(p.parse::<u16>().unwrap());
        }
    }
    let data_dir = data_dir.unwrap();
    let base = data_dir.parent().unwrap().to_path_buf();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap()));
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(TcpStream::connect(addr).is_ok(), "the child's server is up");

    proc.0.kill().unwrap(); // SIGKILL: no destructor runs in the child.
    proc.0.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || !base.exists()),
        "{} still exists 15 s after kill -9",
        base.display()
    );
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "the child's server still accepts connections"
    );
}

/// The replicated pair and a pgbouncer in front of the primary: after `kill -9` of the test
/// process every server process and pgbouncer are gone, and so are their directories.
#[test]
fn guardians_clean_up_replicated_cluster_and_pgbouncer_after_kill_9() {
    let mut proc = KillOnDrop(child("replicated").spawn().unwrap());
    let stdout = proc.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut dirs, mut ports, mut pids) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child reported its servers");
        if let Some(d) = after(&line, "DIR=") {
            dirs.push(PathBuf::from(d));
        } else if let Some(p) = after(&line, "PORT=") {
            ports.push(SocketAddr::from((
                [127, 0, 0, 1],
                p.parse::<u16>().unwrap(),
            )));
        } else if let Some(p) = after(&line, "PID=") {
            pids.push(p.parse::<i32>().unwrap());
        } else if line.contains("READY") {
            break;
        }
    }
    assert_eq!(dirs.len(), 3, "primary, standby, pgbouncer: {dirs:?}");
    assert_eq!(ports.len(), 3);
    assert!(pids.len() > 8, "{pids:?}");
    assert!(dirs.iter().all(|d| d.is_dir()));
    assert!(pids.iter().all(|&p| is_alive(p)));
    for addr in &ports {
        assert!(TcpStream::connect(addr).is_ok(), "{addr} is up");
    }

    proc.0.kill().unwrap(); // SIGKILL: no destructor runs in the child.
    proc.0.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || dirs.iter().all(|d| !d.exists())),
        "left behind 15 s after kill -9: {:?}",
        dirs.iter().filter(|d| d.exists()).collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|&p| !is_alive(p))),
        "processes left behind: {:?}",
        pids.iter().filter(|&&p| is_alive(p)).collect::<Vec<_>>()
    );
    for addr in &ports {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts");
    }
}

#[test]
fn external_cluster_from_env() {
    let shared = Cluster::shared();
    let mut cmd = child("external");
    // A URL, to exercise the URL form; MOMOKO_TEST_DSN wins over DATABASE_URL.
    let url = if shared.is_owned() {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", shared.port())
    } else {
        shared.dsn("postgres")
    };
    cmd.env("MOMOKO_TEST_DSN", url)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .env("EXPECTED_PORT", shared.port().to_string())
        .env("EXPECTED_HOST", shared.host());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| after(l, "EXTERNAL-OK "))
        .unwrap_or_else(|| panic!("no EXTERNAL-OK in:\n{stdout}"));
    // The child's TestDb dropped its database on the external server.
    let exists = shared
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{line}'"),
        )
        .unwrap();
    assert_eq!(exists.trim(), "0");
}
