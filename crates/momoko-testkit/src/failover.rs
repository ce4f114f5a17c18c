//! Server operations for failover tests: crash a server, promote a standby, make a server
//! read-only.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use crate::cluster::{command_failed, lock, off_thread, Cluster};
use crate::sys;

/// How long [`Cluster::kill`] waits for the killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a promotion may take before [`Cluster::promote`] gives up.
const PROMOTE_WAIT: Duration = Duration::from_secs(60);
/// How long [`Cluster::set_read_only`] waits for new sessions to see the new setting.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

fn timed_out(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl Cluster {
    /// Crashes the server: `SIGKILL` to the postmaster and to every process it started, as a
    /// power cut or the OOM killer would (no shutdown checkpoint; crash recovery runs at the next
    /// [`start`](Cluster::start)). Blocking, a few milliseconds. Returns once every one of those
    /// processes is gone, so the port is free and clients see their connections reset.
    ///
    /// Committed data survives if it reached the operating system before the kill, which is
    /// what `synchronous_commit = on` guarantees (the kit turns it off by default for speed; set
    /// it in [`ClusterOptions::conf`](crate::ClusterOptions::conf) for durability tests). The
    /// kit runs servers with `fsync = off`, which only matters for operating-system crashes.
    ///
    /// The stale lock files the dead postmaster leaves are removed, so `start` works whether or
    /// not the dead process has been reaped yet. Children are found through `/proc`; where there
    /// is none, only the postmaster is killed and its children exit when they notice.
    ///
    /// Errors: the server is not running, or it is external ([`io::ErrorKind::Unsupported`]).
    pub fn kill(&self) -> io::Result<()> {
        let owned = self.owned_or("kill")?;
        let _ops = lock(&owned.ops);
        let pid = owned
            .postmaster_pid()
            .filter(|&pid| sys::is_alive(pid))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no server is running in {}", owned.data_dir.display()),
                )
            })?;
        // The pid comes from a file: make sure it still names a postgres process before
        // signalling it (a stale file could name a recycled pid).
        if sys::command_name(pid).is_some_and(|name| name != "postgres") {
            return Err(io::Error::other(format!(
                "postmaster.pid names process {pid}, which is not a postgres process"
            )));
        }
        // Stopped, the postmaster cannot start a new child between the listing below and its
        // own death; it never resumes (SIGKILL also ends a stopped process).
        sys::signal(pid, libc::SIGSTOP)?;
        let children = sys::children_of(pid);
        for &child in &children {
            // Each postmaster child leads its own process group (it calls setsid), which holds
            // anything it started in turn, such as an archive_command shell.
            let _ = sys::signal(-child, libc::SIGKILL);
            let _ = sys::signal(child, libc::SIGKILL);
        }
        if let Err(e) = sys::signal(pid, libc::SIGKILL) {
            let _ = sys::signal(pid, libc::SIGCONT);
            return Err(e);
        }
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let alive: Vec<i32> = std::iter::once(pid)
                .chain(children.iter().copied())
                .filter(|&p| sys::is_alive(p))
                .collect();
            if alive.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(timed_out(format!(
                    "server processes {alive:?} still alive {KILL_WAIT:?} after SIGKILL"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // A dead but unreaped postmaster (its parent is whatever adopted it) still passes the
        // server's own "is the pid in the lock file alive?" check, which would refuse the next
        // start. Every process is gone, so the lock files are stale.
        let _ = fs::remove_file(owned.data_dir.join("postmaster.pid"));
        let _ = fs::remove_file(owned.sock_dir.join(format!(".s.PGSQL.{}.lock", owned.port)));
        Ok(())
    }

    /// Whether the server is in recovery, i.e. a standby (`SELECT pg_is_in_recovery()`).
    /// Blocking.
    pub fn is_in_recovery(&self) -> io::Result<bool> {
        let out = self.psql("postgres", "SELECT pg_is_in_recovery()")?;
        match out.trim() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(io::Error::other(format!(
                "unexpected pg_is_in_recovery() result {other:?}"
            ))),
        }
    }

    /// Promotes a standby to a primary (`pg_ctl promote`) and returns once it accepts writes
    /// (`pg_is_in_recovery()` is false). Runs on a fresh std thread like
    /// [`stop`](Cluster::stop).
    ///
    /// Errors: the server is not a standby, or the promotion did not finish within 60 s.
    pub async fn promote(&self) -> io::Result<()> {
        self.owned_or("promote")?;
        let cluster = self.handle();
        off_thread(move || cluster.promote_blocking()).await
    }

    /// Blocking variant of [`promote`](Cluster::promote).
    pub fn promote_blocking(&self) -> io::Result<()> {
        let owned = self.owned_or("promote")?;
        {
            let _ops = lock(&owned.ops);
            // `-W`: pg_ctl would poll the control file every 100 ms; the wait below asks the
            // server itself, every 2 ms.
            let out = owned.pg_ctl(["-W", "promote"])?;
            if !out.status.success() {
                return Err(command_failed("pg_ctl promote", &out));
            }
        }
        self.wait_for("NOT pg_is_in_recovery()", PROMOTE_WAIT)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => timed_out(format!(
                    "the standby was not promoted within {PROMOTE_WAIT:?}"
                )),
                _ => e,
            })
    }

    /// Makes the server read-only for every new transaction, or writable again:
    /// `ALTER SYSTEM SET default_transaction_read_only = on|off` and a configuration reload,
    /// as an operator would. Blocking; returns once new sessions see the new value (sessions
    /// already open pick it up at their next statement). Writes then fail with SQLSTATE
    /// `25006` (`read_only_sql_transaction`); a session may still `SET
    /// default_transaction_read_only = off` for itself, as on a real server.
    ///
    /// The setting lives in `postgresql.auto.conf`, so it survives restarts.
    pub fn set_read_only(&self, read_only: bool) -> io::Result<()> {
        self.owned_or("set_read_only")?;
        let value = if read_only { "on" } else { "off" };
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET default_transaction_read_only = {value};\n\
                 SELECT pg_reload_conf();"
            ),
        )?;
        // The reload is asynchronous: the postmaster re-reads its files when it handles the
        // signal, and each session forked after that starts with the new value. Polled from
        // fresh sessions, since a session only re-reads the configuration between statements.
        let deadline = Instant::now() + RELOAD_WAIT;
        loop {
            let now = self.psql("postgres", "SHOW default_transaction_read_only")?;
            if now.trim() == value {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timed_out(format!(
                    "new sessions still see default_transaction_read_only = {} after {:?}",
                    now.trim(),
                    RELOAD_WAIT
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the boolean SQL expression `condition` is true, evaluating it every 2 ms in
    /// one server session (no client round trip or process start per poll), at most `limit`.
    /// For conditions on server state that no statement can wait for in PostgreSQL 15, such as
    /// replay progress.
    ///
    /// Each poll is its own transaction (`COMMIT` inside the loop). On a standby, a snapshot
    /// held across the whole wait would conflict with the replay of cleanup records in the same
    /// database, and replay would stall for `max_standby_streaming_delay` (30 s) waiting for
    /// the very session that waits for replay.
    pub(crate) fn wait_for(&self, condition: &str, limit: Duration) -> io::Result<()> {
        let ms = limit.as_millis().max(1);
        let sql = format!(
            "SET statement_timeout = {safety_net};\n\
             DO $momoko$\n\
             DECLARE deadline timestamptz := clock_timestamp() + interval '{ms} ms';\n\
             BEGIN\n\
               LOOP\n\
                 EXIT WHEN coalesce(({condition}), false);\n\
                 IF clock_timestamp() > deadline THEN\n\
                   RAISE EXCEPTION 'momoko-testkit: wait timed out';\n\
                 END IF;\n\
                 COMMIT;\n\
                 PERFORM pg_sleep(0.002);\n\
               END LOOP;\n\
             END $momoko$;",
            safety_net = ms + 5000,
        );
        match self.psql("postgres", &sql) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("momoko-testkit: wait timed out") => Err(timed_out(
                format!("`{condition}` still false after {limit:?}"),
            )),
            Err(e) => Err(e),
        }
    }
}
