//! A real pgbouncer in front of a cluster.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::{
    free_port, lock, new_base_dir, run_psql, tail_lines, with_context, Cluster, PG_ENV,
};
use crate::conninfo::{quote_value, Conninfo};
use crate::sys;

/// Where Debian and Ubuntu install pgbouncer (`/usr/sbin` is not in every user's `$PATH`).
const SYSTEM_PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// How long start-up may take before it is reported as hung.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long a stop waits after SIGTERM before it sends SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How many start attempts (each on a fresh port) before giving up on "address in use".
const START_ATTEMPTS: usize = 3;

/// pgbouncer's `pool_mode`: when a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// When the client disconnects.
    Session,
    /// At the end of each transaction (and after each statement outside one): session state
    /// (prepared statements, `SET`, advisory locks, temporary tables) does not follow the
    /// client.
    #[default]
    Transaction,
    /// After each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    fn as_ini(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Options for [`PgBouncer::start`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgBouncerOptions {
    /// `pool_mode`; [`PoolMode::Transaction`] by default.
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per database and user (default 20).
    pub default_pool_size: u32,
    /// `max_client_conn`: client connections accepted in all (default 500).
    pub max_client_conn: u32,
    /// Extra lines for the `[pgbouncer]` section, after the kit's own (a repeated setting takes
    /// the last value), e.g. `"query_wait_timeout = 5"`.
    pub ini: Vec<String>,
    /// The pgbouncer binary to run; `None`: `pgbouncer` in `$PATH`, else `/usr/sbin/pgbouncer`.
    pub binary: Option<PathBuf>,
}

impl Default for PgBouncerOptions {
    fn default() -> PgBouncerOptions {
        PgBouncerOptions {
            pool_mode: PoolMode::Transaction,
            default_pool_size: 20,
            max_client_conn: 500,
            ini: Vec::new(),
            binary: None,
        }
    }
}

/// A pgbouncer process pooling connections to a [`Cluster`] the kit started.
///
/// It listens on `127.0.0.1:<port>` and on a Unix socket in its own directory (which also holds
/// the generated `pgbouncer.ini`, `userlist.txt` and the log), and forwards every database name
/// to the cluster over the cluster's Unix socket (a `*` entry), as the user the client gives.
/// Clients are not authenticated (`auth_type = trust`); a user `userlist.txt` does not list
/// (only `postgres`) is looked up on the server through `auth_user = postgres`, so every role of
/// the cluster can connect.
///
/// `ignore_startup_parameters = extra_float_digits, options`: clients that send these in their
/// startup packet are accepted, but an `options` value (e.g. `-c search_path=...`) has no
/// effect. pgbouncer retries a server it could not log in to after 0.5 s (instead of 15 s), so a
/// restarted cluster is usable again through it almost at once; while the server is down, a
/// client waits up to 10 s (`query_wait_timeout`, instead of 120 s) for a server connection
/// before it gets an error.
///
/// When run as root, pgbouncer runs as the `postgres` user (it refuses to run as root). It is
/// stopped and its directory removed when the `PgBouncer` is dropped, or by a guardian child
/// process if the test process dies first, as for clusters. The `PgBouncer` holds a handle on
/// its cluster, which therefore lives at least as long.
#[derive(Debug)]
pub struct PgBouncer {
    bin: PathBuf,
    psql: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: PathBuf,
    sock_dir: PathBuf,
    ini_path: PathBuf,
    log_file: PathBuf,
    port: u16,
    /// The running pgbouncer, `None` while stopped.
    process: Mutex<Option<Child>>,
    /// The guardian (leader of the process group pgbouncer runs in) and its stdin pipe.
    guardian: Mutex<Option<(Child, ChildStdin)>>,
    /// Keeps the cluster up while pgbouncer points at it; dropped after pgbouncer stopped.
    cluster: Cluster,
}

/// Finds pgbouncer: `explicit` if given, else `pgbouncer` in the directories of `path` (the
/// value of `$PATH`), else `fallback`.
fn locate(explicit: Option<&Path>, path: Option<OsString>, fallback: &Path) -> io::Result<PathBuf> {
    if let Some(bin) = explicit {
        return if bin.is_file() {
            Ok(bin.to_path_buf())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "pgbouncer binary {} (PgBouncerOptions::binary) does not exist",
                    bin.display()
                ),
            ))
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .or_else(|| fallback.is_file().then(|| fallback.to_path_buf()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "pgbouncer not found (looked in $PATH and at {}): install it, e.g. \
                     `apt-get install -y pgbouncer` on Debian or Ubuntu, or name the binary in \
                     PgBouncerOptions::binary",
                    fallback.display()
                ),
            )
        })
}

/// The text of `path` from byte `from` on (empty if unreadable).
fn read_from(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

/// SIGTERM (pgbouncer's fast shutdown), then SIGKILL if it is still there after [`STOP_WAIT`].
fn terminate(child: &mut Child) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    let _ = sys::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_WAIT;
    // std has no wait with a timeout: poll, so a pgbouncer that ignores SIGTERM cannot hang us.
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill()?;
    child.wait().map(drop)
}

impl PgBouncer {
    /// Starts pgbouncer in front of `cluster` and returns once it accepts connections.
    /// Blocking; typically some tens of milliseconds.
    ///
    /// Errors: pgbouncer is not installed ([`io::ErrorKind::NotFound`], saying how to install
    /// it; a test that needs pgbouncer fails rather than skips), `cluster` is external
    /// ([`io::ErrorKind::Unsupported`]: use [`Cluster::start_new`]), or pgbouncer did not come
    /// up (the error holds the end of its log).
    pub fn start(cluster: &Cluster, options: PgBouncerOptions) -> io::Result<PgBouncer> {
        let owned = cluster.owned_or("PgBouncer::start")?;
        let bin = locate(
            options.binary.as_deref(),
            std::env::var_os("PATH"),
            Path::new(SYSTEM_PGBOUNCER),
        )?;
        let run_as = owned.run_as;
        let dir = new_base_dir("momoko-pgbouncer", run_as)?;
        let mut bouncer = PgBouncer {
            bin,
            psql: cluster.inner.psql.clone(),
            run_as,
            sock_dir: dir.join("sock"),
            ini_path: dir.join("pgbouncer.ini"),
            log_file: dir.join("pgbouncer.log"),
            dir,
            port: 0,
            process: Mutex::new(None),
            guardian: Mutex::new(None),
            cluster: cluster.handle(),
        };
        // From here on, dropping `bouncer` (e.g. on an error below) tears everything down.
        if bouncer.sock_dir.as_os_str().len() + "/.s.PGSQL.65535".len() > 107 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket directory {} is too long for a Unix socket path; set PGTEST_TMPDIR \
                     to a shorter directory",
                    bouncer.sock_dir.display()
                ),
            ));
        }
        bouncer.spawn_guardian()?;
        fs::create_dir(&bouncer.sock_dir)
            .map_err(|e| with_context(e, format!("creating {}", bouncer.sock_dir.display())))?;
        bouncer.chown(&bouncer.sock_dir)?;
        let userlist = bouncer.dir.join("userlist.txt");
        fs::write(&userlist, "\"postgres\" \"\"\n")
            .map_err(|e| with_context(e, format!("writing {}", userlist.display())))?;

        for attempt in 1..=START_ATTEMPTS {
            bouncer.port = free_port()?;
            bouncer.write_ini(&options, &userlist)?;
            match bouncer.launch() {
                Ok(child) => {
                    *lock(&bouncer.process) = Some(child);
                    return Ok(bouncer);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < START_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("unreachable: start attempts exhausted"))
    }

    fn chown(&self, path: &Path) -> io::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| with_context(e, format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    fn write_ini(&self, options: &PgBouncerOptions, userlist: &Path) -> io::Result<()> {
        let owned = self.cluster.owned_or("PgBouncer::start")?;
        let mut ini = String::from("; written by momoko-testkit\n[databases]\n");
        let _ = writeln!(
            ini,
            "* = host={} port={}",
            quote_value(&owned.sock_dir.to_string_lossy()),
            owned.port
        );
        ini.push_str("\n[pgbouncer]\n");
        let settings = [
            ("listen_addr", String::from("127.0.0.1")),
            ("listen_port", self.port.to_string()),
            (
                "unix_socket_dir",
                self.sock_dir.to_string_lossy().into_owned(),
            ),
            ("auth_type", String::from("trust")),
            ("auth_file", userlist.to_string_lossy().into_owned()),
            // Users missing from auth_file are looked up on the server (pg_shadow).
            ("auth_user", String::from("postgres")),
            ("admin_users", String::from("postgres")),
            ("stats_users", String::from("postgres")),
            ("pool_mode", String::from(options.pool_mode.as_ini())),
            ("default_pool_size", options.default_pool_size.to_string()),
            ("max_client_conn", options.max_client_conn.to_string()),
            // Sent in the startup packet by some clients (JDBC, tokio-postgres when
            // configured); unknown parameters would otherwise refuse the connection.
            (
                "ignore_startup_parameters",
                String::from("extra_float_digits,options"),
            ),
            // The default 15 s would keep a restarted cluster unusable through pgbouncer long
            // after it is back.
            ("server_login_retry", String::from("0.5")),
            // While the server is unreachable, pgbouncer queues clients for query_wait_timeout
            // (default 120 s) before it fails them: a test would stall for minutes.
            ("query_wait_timeout", String::from("10")),
        ];
        for (key, value) in settings {
            let _ = writeln!(ini, "{key} = {value}");
        }
        for line in &options.ini {
            ini.push_str(line);
            ini.push('\n');
        }
        fs::write(&self.ini_path, ini)
            .map_err(|e| with_context(e, format!("writing {}", self.ini_path.display())))
    }

    /// Spawns the guardian: the leader of a new process group, in which pgbouncer is then
    /// started. On EOF on its stdin (the test process exited, however it died) it sends SIGTERM
    /// to the group (ignoring it itself), removes the directory, and SIGKILLs whatever is left
    /// of the group, itself included.
    fn spawn_guardian(&self) -> io::Result<()> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"trap '' TERM; cat >/dev/null; kill -TERM 0; rm -rf "$1"; kill -KILL 0"#)
            .arg("momoko-testkit-pgbouncer-guardian")
            .arg(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| with_context(e, "spawning the pgbouncer cleanup guardian"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("guardian has no stdin pipe"))?;
        *lock(&self.guardian) = Some((child, stdin));
        Ok(())
    }

    /// Starts the pgbouncer process and waits until it listens on its port and Unix socket.
    fn launch(&self) -> io::Result<Child> {
        let group = lock(&self.guardian)
            .as_ref()
            .and_then(|(g, _)| i32::try_from(g.id()).ok())
            .ok_or_else(|| io::Error::other("the pgbouncer guardian is gone"))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| with_context(e, format!("opening {}", self.log_file.display())))?;
        let offset = log.metadata()?.len();
        let mut cmd = Command::new(&self.bin);
        cmd.arg(&self.ini_path);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        // In the guardian's process group, so the guardian can signal it without knowing its
        // pid: no window in which pgbouncer runs but the guardian could not stop it.
        cmd.current_dir("/")
            .process_group(group)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| with_context(e, format!("running {}", self.bin.display())))?;
        match self.wait_ready(&mut child, offset) {
            Ok(()) => Ok(child),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Waits for pgbouncer's "process up" log line, which it writes once its listening sockets
    /// are set up. It only warns if it cannot bind the TCP port (and would run on the Unix
    /// socket alone), so the log must also say it listens on the port: otherwise another
    /// process has taken the port since we picked it.
    fn wait_ready(&self, child: &mut Child, offset: u64) -> io::Result<()> {
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let refused = format!("cannot listen on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_WAIT;
        loop {
            let log = read_from(&self.log_file, offset);
            if log.contains(&refused) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("pgbouncer could not listen on port {}:\n{log}", self.port),
                ));
            }
            if log.contains("process up") {
                return if log.contains(&listening) {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "pgbouncer started but does not listen on port {}:\n{log}",
                        self.port
                    )))
                };
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "pgbouncer exited during start-up ({status})\n--- {} ---\n{}",
                    self.log_file.display(),
                    tail_lines(&self.log_file, offset, 30)
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "pgbouncer did not come up within {START_WAIT:?}\n--- {} ---\n{}",
                        self.log_file.display(),
                        tail_lines(&self.log_file, offset, 30)
                    ),
                ));
            }
            // Polled: the only sign of readiness is this log line.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// TCP port on [`host`](PgBouncer::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// `key=value` DSN for database `dbname` through pgbouncer over TCP as `postgres`:
    /// `"host=127.0.0.1 port=<port> user=postgres dbname=<dbname>"`.
    pub fn dsn(&self, dbname: &str) -> String {
        Conninfo::from_pairs([
            ("host", "127.0.0.1"),
            ("port", &self.port.to_string()),
            ("user", "postgres"),
            ("dbname", dbname),
        ])
        .to_string()
    }

    /// The same through pgbouncer's Unix socket.
    pub fn unix_dsn(&self, dbname: &str) -> String {
        Conninfo::from_pairs([
            ("host", self.sock_dir.to_string_lossy().as_ref()),
            ("port", &self.port.to_string()),
            ("user", "postgres"),
            ("dbname", dbname),
        ])
        .to_string()
    }

    /// The cluster pgbouncer forwards to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The directory holding `pgbouncer.ini`, `userlist.txt`, the log and the socket directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// pgbouncer's log (its stderr), for diagnosing a failed test.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The pgbouncer process id, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        let mut process = lock(&self.process);
        let child = process.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Runs commands on pgbouncer's admin console (database `pgbouncer`, as `postgres`, over
    /// the Unix socket) and returns the output like [`Cluster::psql`] does, e.g.
    /// `admin("SHOW POOLS")`, `admin("RECONNECT")`, `admin("PAUSE")`. Blocking.
    pub fn admin(&self, commands: &str) -> io::Result<String> {
        run_psql(&self.psql, &self.unix_dsn("pgbouncer"), commands, true)
    }

    /// Stops pgbouncer at once (SIGTERM: its fast shutdown, which closes every client and server
    /// connection). Blocking. Errors if it is not running.
    pub fn stop(&self) -> io::Result<()> {
        let mut child = lock(&self.process)
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "pgbouncer is not running"))?;
        terminate(&mut child)
    }

    /// Starts a stopped pgbouncer again, on the same port and configuration, and waits until
    /// it accepts connections. Blocking. Errors if it is running, or if the port has been taken
    /// in the meantime.
    pub fn start_again(&self) -> io::Result<()> {
        let mut process = lock(&self.process);
        if let Some(child) = process.as_mut() {
            if child.try_wait()?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "pgbouncer is already running",
                ));
            }
        }
        *process = Some(self.launch()?);
        Ok(())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.process).take() {
            let _ = terminate(&mut child);
        }
        let _ = fs::remove_dir_all(&self.dir);
        let guardian = lock(&self.guardian).take();
        if let Some((mut child, stdin)) = guardian {
            // EOF: the guardian finds nothing left to do and exits.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pgbouncer_says_how_to_install_it() {
        let nowhere = Path::new("/nonexistent/pgbouncer");
        let err = locate(None, Some(OsString::from("/nonexistent/bin")), nowhere).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(msg.contains("apt-get install -y pgbouncer"), "{msg}");
        assert!(msg.contains("/nonexistent/pgbouncer"), "{msg}");

        let err = locate(Some(nowhere), None, Path::new("/bin/sh")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("PgBouncerOptions::binary"),
            "{err}"
        );
    }

    #[test]
    fn pgbouncer_is_looked_up_in_path_then_the_fallback() {
        // Any existing file stands in for the binary here.
        let dir = std::env::temp_dir().join(format!("momoko-locate-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("pgbouncer"), "").unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.to_str().unwrap()]).unwrap();
        let found = locate(None, Some(path), Path::new("/nonexistent/fallback"));
        let fallback = locate(None, None, &dir.join("pgbouncer"));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.unwrap(), dir.join("pgbouncer"));
        assert_eq!(fallback.unwrap(), dir.join("pgbouncer"));
    }

    #[test]
    fn pgbouncer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PgBouncer>();
    }
}
