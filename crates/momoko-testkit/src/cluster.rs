//! Throw-away PostgreSQL clusters and per-test databases.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;

use crate::conninfo::Conninfo;
use crate::sys;

/// Environment variables that could redirect or alter the kit's own psql / pg_ctl calls against
/// an owned cluster; they are removed from those commands' environment.
pub(crate) const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGGSSENCMODE",
    "PGTARGETSESSIONATTRS",
    "PGREQUIREAUTH",
    "PGCHANNELBINDING",
    "PGCLIENTENCODING",
    "PGDATA",
    "PGCTLTIMEOUT",
];

/// Prefix of the kit's own database management statements: their commits never wait for a
/// synchronous standby, so creating or dropping a test database cannot hang on a primary whose
/// standby is stopped, killed or promoted away (see `ReplicatedCluster`).
const KIT_COMMIT: &str = "SET synchronous_commit = local;\n";

/// Process-wide counter used in directory and database names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many start attempts (each on a fresh port) before giving up on "address in use".
const START_ATTEMPTS: usize = 3;

/// Minimum free space for /dev/shm to be used as the base directory.
const MIN_SHM_FREE: u64 = 512 * 1024 * 1024;

/// How the server is shut down (`pg_ctl stop -m <mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for every client to disconnect.
    Smart,
    /// Roll back open transactions, disconnect clients, shut down cleanly.
    Fast,
    /// Kill every server process at once (crash-like; recovery runs at the next start).
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Options for [`Cluster::start_new`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` lines, appended after the kit's own settings (so they win).
    /// Do not set `port`, `listen_addresses` or `unix_socket_directories` here.
    pub conf: Vec<String>,
    /// Full `pg_hba.conf` content. `None` means trust for `local` connections and for `host`
    /// connections from `127.0.0.1/32` and `::1/128`. Keep a `local ... trust` line for
    /// `postgres` if you want the kit's own psql calls (databases, [`Cluster::psql`]) to work.
    pub hba: Option<String>,
    /// Extra `initdb` arguments.
    pub initdb_args: Vec<String>,
}

const DEFAULT_HBA: &str = "\
# written by momoko-testkit
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
host    all             all     ::1/128         trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
host    replication     all     ::1/128         trust
";

/// A running throw-away PostgreSQL server (or an external one given by env).
///
/// An owned cluster lives in its own directory (data directory, Unix socket directory and
/// server log) and listens on `127.0.0.1:<port>` plus a Unix socket. It is stopped and its
/// directory removed when the last handle is dropped (the `Cluster` itself and every [`TestDb`]
/// created from it), and — through a guardian child process — also when the test process dies,
/// even by `kill -9`.
///
/// An external cluster (env `MOMOKO_TEST_DSN` or `DATABASE_URL`, see [`Cluster::shared`]) is
/// only used: it is never started, stopped or reconfigured.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// psql binary used for [`Cluster::psql`] and database management.
    pub(crate) psql: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Owned(Owned),
    External(External),
}

#[derive(Debug)]
struct External {
    /// Which environment variable the DSN came from.
    source: &'static str,
    conninfo: Conninfo,
    host: String,
    port: u16,
}

#[derive(Debug, Clone)]
pub(crate) struct Bins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
    /// The directory of `initdb`, where the other server programs live.
    bindir: Option<PathBuf>,
}

impl Bins {
    /// Another program of the same installation (e.g. `pg_basebackup`): next to `initdb`, else
    /// in `$PATH`. Mixing major versions would fail in confusing ways, so the installation of
    /// `initdb` comes first.
    pub(crate) fn tool(&self, name: &str) -> io::Result<PathBuf> {
        self.bindir
            .as_deref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
            .or_else(|| which(name))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{name} not found next to {} nor in $PATH",
                        self.initdb.display()
                    ),
                )
            })
    }
}

#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) bins: Bins,
    /// `(uid, gid)` of the `postgres` user when the kit runs as root.
    pub(crate) run_as: Option<(u32, u32)>,
    base_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) sock_dir: PathBuf,
    log_file: PathBuf,
    pub(crate) port: u16,
    /// Serializes pg_ctl operations (start/stop/reload) and teardown.
    pub(crate) ops: Mutex<()>,
    /// The guardian child and the write end of its stdin pipe.
    guardian: Mutex<Option<(Child, ChildStdin)>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn command_failed(what: &str, out: &Output) -> io::Error {
    let mut msg = format!("{what} failed ({})", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for part in [stderr.trim(), stdout.trim()] {
        if !part.is_empty() {
            msg.push_str(": ");
            msg.push_str(part);
        }
    }
    io::Error::other(msg)
}

pub(crate) fn with_context(e: io::Error, ctx: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{ctx}: {e}"))
}

/// Finds `name` in `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `program` in the highest `/usr/lib/postgresql/<N>/bin` that has it.
fn in_versioned_bin_dirs(program: &str) -> Option<PathBuf> {
    versioned_bin_dirs()
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `/usr/lib/postgresql/<N>/bin`, highest N first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let version: u32 = name.to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.is_dir().then_some((version, bin))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// A psql binary: next to initdb if known, else `$PATH`, else `/usr/lib/postgresql/*/bin`.
fn find_psql(bindir: Option<&Path>) -> io::Result<PathBuf> {
    bindir
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .or_else(|| which("psql"))
        .or_else(|| in_versioned_bin_dirs("psql"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "psql not found (looked in $PATH and /usr/lib/postgresql/*/bin)",
            )
        })
}

fn find_bins() -> io::Result<Bins> {
    let initdb = which("initdb")
        .or_else(|| in_versioned_bin_dirs("initdb"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "PostgreSQL server binaries not found: no `initdb` in $PATH or \
                 /usr/lib/postgresql/*/bin (install the PostgreSQL server, or set \
                 MOMOKO_TEST_DSN / DATABASE_URL to use an existing server)",
            )
        })?;
    // /usr/local/bin/initdb may be a symlink into the real bin directory.
    let initdb = fs::canonicalize(&initdb).unwrap_or(initdb);
    let bindir = initdb.parent().map(Path::to_path_buf);
    let pg_ctl = bindir
        .as_deref()
        .map(|d| d.join("pg_ctl"))
        .filter(|p| p.is_file())
        .or_else(|| which("pg_ctl"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("pg_ctl not found next to {} nor in $PATH", initdb.display()),
            )
        })?;
    let psql = find_psql(bindir.as_deref())?;
    Ok(Bins {
        initdb,
        pg_ctl,
        psql,
        bindir,
    })
}

/// Where cluster directories go: `$PGTEST_TMPDIR`, else `/dev/shm` (if writable and roomy), else
/// the system temporary directory.
fn base_parent() -> PathBuf {
    if let Some(d) = std::env::var_os("PGTEST_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if sys::is_writable_dir(shm) && sys::free_bytes(shm).is_some_and(|n| n >= MIN_SHM_FREE) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Whether user `uid` (primary group `gid`) may create and remove entries in `dir`.
fn writable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = fs::metadata(dir) else {
        return false;
    };
    let mode = m.mode();
    (m.uid() == uid && mode & 0o300 == 0o300)
        || (m.gid() == gid && mode & 0o030 == 0o030)
        || mode & 0o003 == 0o003
}

/// `(uid, gid)` of the `postgres` user when the kit runs as root (the server refuses to run as
/// root), `None` otherwise.
fn run_as_user() -> io::Result<Option<(u32, u32)>> {
    if !sys::is_root() {
        return Ok(None);
    }
    let user = sys::lookup_user("postgres")?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "running as root, but there is no `postgres` user to run the server as",
        )
    })?;
    Ok(Some(user))
}

/// Creates a fresh, empty directory `<prefix>-<pid>-<counter>-<millis>` under [`base_parent`],
/// owned by `run_as` when given.
pub(crate) fn new_base_dir(prefix: &str, run_as: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let parent = base_parent();
    fs::create_dir_all(&parent)
        .map_err(|e| with_context(e, format!("creating {}", parent.display())))?;
    let mut parent = fs::canonicalize(&parent).unwrap_or(parent);
    if let Some((uid, gid)) = run_as {
        // The guardian runs as `postgres` and must be able to remove the base directory, so
        // its parent must be writable by `postgres` (true for /dev/shm and /tmp). Otherwise
        // use a `postgres`-owned subdirectory (left behind, empty).
        if !writable_by(&parent, uid, gid) {
            let sub = parent.join("momoko-testkit-postgres");
            fs::create_dir_all(&sub)
                .map_err(|e| with_context(e, format!("creating {}", sub.display())))?;
            chown(&sub, Some(uid), Some(gid))
                .map_err(|e| with_context(e, format!("chown {}", sub.display())))?;
            parent = sub;
        }
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = parent.join(format!(
        "{prefix}-{}-{}-{stamp:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir).map_err(|e| with_context(e, format!("creating {}", dir.display())))?;
    if let Some((uid, gid)) = run_as {
        if let Err(e) = chown(&dir, Some(uid), Some(gid)) {
            let _ = fs::remove_dir(&dir);
            return Err(with_context(e, format!("chown {}", dir.display())));
        }
    }
    Ok(dir)
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn tail_lines(path: &Path, from: u64, n: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::from("(no server log)");
    };
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Escapes a value for a single-quoted postgresql.conf string.
pub(crate) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn sanitize_hint(hint: &str) -> String {
    let s: String = hint
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        String::from("db")
    } else {
        s
    }
}

/// `<sanitized hint>_<pid>_<counter>`, at most 63 bytes.
fn database_name(hint: &str) -> String {
    let suffix = format!(
        "_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut base = sanitize_hint(hint);
    base.truncate(63 - suffix.len());
    base + &suffix
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `f` on a fresh std thread; the returned future completes through a oneshot channel, so
/// no executor thread ever blocks.
pub(crate) async fn off_thread<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name(String::from("momoko-pgctl"))
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| io::Error::other("momoko-testkit: pg_ctl worker thread panicked"))?
}

impl Owned {
    /// A command for a server binary, run as the `postgres` user when we are root.
    pub(crate) fn server_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub(crate) fn pg_ctl<I, S>(&self, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.server_command(&self.bins.pg_ctl);
        cmd.arg("-D").arg(&self.data_dir).args(args);
        cmd.output()
            .map_err(|e| with_context(e, format!("running {}", self.bins.pg_ctl.display())))
    }

    fn chown(&self, path: &Path) -> io::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            chown(path, Some(uid), Some(gid))
                .map_err(|e| with_context(e, format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// Spawns the guardian: it waits for EOF on its stdin (the test process exited, however it
    /// died), then stops the server (immediate) and removes the base directory.
    fn spawn_guardian(&self) -> io::Result<()> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                r#"cat >/dev/null; "$1" -D "$2" -m immediate -w stop >/dev/null 2>&1; rm -rf "$3""#,
            )
            .arg("momoko-testkit-guardian")
            .arg(&self.bins.pg_ctl)
            .arg(&self.data_dir)
            .arg(&self.base_dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C")
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| with_context(e, "spawning the cleanup guardian"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("guardian has no stdin pipe"))?;
        *lock(&self.guardian) = Some((child, stdin));
        Ok(())
    }

    fn create(options: &ClusterOptions) -> io::Result<Owned> {
        // From `prepare` on, dropping the `Owned` (e.g. on an error in `boot`) tears everything
        // down.
        Owned::prepare(find_bins()?, run_as_user()?)?.boot(options)
    }

    /// A fresh base directory with its socket directory and guardian, for a server not created
    /// yet (port 0). `bins` are those of the server that will live there.
    pub(crate) fn prepare(bins: Bins, run_as: Option<(u32, u32)>) -> io::Result<Owned> {
        let base_dir = new_base_dir("momoko-pg", run_as)?;
        let owned = Owned {
            data_dir: base_dir.join("data"),
            sock_dir: base_dir.join("sock"),
            log_file: base_dir.join("server.log"),
            base_dir,
            bins,
            run_as,
            port: 0,
            ops: Mutex::new(()),
            guardian: Mutex::new(None),
        };
        // Unix socket paths are limited to 107 bytes.
        let sock_path_len = owned.sock_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
        if sock_path_len > 107 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket directory {} is too long for a Unix socket path; set PGTEST_TMPDIR \
                     to a shorter directory",
                    owned.sock_dir.display()
                ),
            ));
        }
        owned.spawn_guardian()?;
        fs::create_dir(&owned.sock_dir)
            .map_err(|e| with_context(e, format!("creating {}", owned.sock_dir.display())))?;
        owned.chown(&owned.sock_dir)?;
        Ok(owned)
    }

    fn boot(self, options: &ClusterOptions) -> io::Result<Owned> {
        let mut initdb = self.server_command(&self.bins.initdb);
        initdb
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "--no-sync",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .args(&options.initdb_args);
        let out = initdb
            .output()
            .map_err(|e| with_context(e, format!("running {}", self.bins.initdb.display())))?;
        if !out.status.success() {
            return Err(command_failed(
                &format!("initdb -D {}", self.data_dir.display()),
                &out,
            ));
        }

        let mut conf = String::from("\n# added by momoko-testkit\n");
        for line in [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "listen_addresses='127.0.0.1'",
            "max_connections=200",
            "shared_buffers=32MB",
            "log_min_messages=warning",
        ] {
            conf.push_str(line);
            conf.push('\n');
        }
        let sock = self
            .sock_dir
            .to_str()
            .ok_or_else(|| io::Error::other("socket directory path is not UTF-8"))?;
        let _ = writeln!(conf, "unix_socket_directories={}", conf_quote(sock));
        for line in &options.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        self.append_conf(&conf)?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        fs::write(&hba_path, options.hba.as_deref().unwrap_or(DEFAULT_HBA))
            .map_err(|e| with_context(e, format!("writing {}", hba_path.display())))?;
        self.first_start()
    }

    /// Picks a port, writes it (last, so it wins over any earlier `port` line) and starts the
    /// server for the first time. Another process may take the port between our probe and the
    /// server's bind: then it tries again on a fresh port.
    pub(crate) fn first_start(mut self) -> io::Result<Owned> {
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port()?;
            self.append_conf(&format!("port={}\n", self.port))?;
            let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            match self.start_server(log_offset) {
                Ok(()) => return Ok(self),
                Err(e) => {
                    let log = tail_lines(&self.log_file, log_offset, 30);
                    let port_taken = log.contains("Address already in use")
                        || log.contains("could not create any TCP/IP sockets");
                    if !port_taken || attempt == START_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
        Err(io::Error::other("unreachable: start attempts exhausted"))
    }

    pub(crate) fn append_conf(&self, text: &str) -> io::Result<()> {
        let path = self.data_dir.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| with_context(e, format!("opening {}", path.display())))?;
        f.write_all(text.as_bytes())
    }

    /// `pg_ctl start`; the caller holds `ops` or has exclusive access.
    fn start_server(&self, log_offset: u64) -> io::Result<()> {
        let out = self.pg_ctl([
            OsStr::new("-l"),
            self.log_file.as_os_str(),
            OsStr::new("-w"),
            OsStr::new("-t"),
            OsStr::new("30"),
            OsStr::new("start"),
        ])?;
        if out.status.success() {
            return Ok(());
        }
        let e = command_failed(
            &format!(
                "pg_ctl start (port {}, data {})",
                self.port,
                self.data_dir.display()
            ),
            &out,
        );
        Err(io::Error::other(format!(
            "{e}\n--- last lines of the server log {} ---\n{}",
            self.log_file.display(),
            tail_lines(&self.log_file, log_offset, 30)
        )))
    }

    fn start_blocking(&self) -> io::Result<()> {
        let _ops = lock(&self.ops);
        let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
        self.start_server(log_offset)
    }

    fn stop_blocking(&self, mode: StopMode) -> io::Result<()> {
        let _ops = lock(&self.ops);
        let out = self.pg_ctl(["-m", mode.as_arg(), "-w", "-t", "60", "stop"])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(command_failed(
                &format!("pg_ctl stop -m {}", mode.as_arg()),
                &out,
            ))
        }
    }

    /// Whether a server is running in the data directory: its lock file names a live process.
    /// (After [`Cluster::kill`] the lock file may remain for a moment, naming a dead process.)
    fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(sys::is_alive)
    }

    /// The postmaster's pid from the first line of `postmaster.pid`, if the file exists.
    pub(crate) fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ops = lock(&self.ops);
        if self.is_running() {
            let _ = self.pg_ctl(["-m", "immediate", "-w", "-t", "30", "stop"]);
        }
        let _ = fs::remove_dir_all(&self.base_dir);
        let guardian = lock(&self.guardian).take();
        if let Some((mut child, stdin)) = guardian {
            // EOF: the guardian finds nothing left to do and exits.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl External {
    fn from_env() -> Option<io::Result<External>> {
        let (source, value) = ["MOMOKO_TEST_DSN", "DATABASE_URL"]
            .into_iter()
            .find_map(|var| {
                let v = std::env::var(var).ok()?;
                (!v.trim().is_empty()).then_some((var, v))
            })?;
        Some(Conninfo::parse(&value).map(|conninfo| {
            let first = |key: &str| {
                conninfo
                    .get(key)
                    .and_then(|v| v.split(',').next())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            let host = first("host")
                .or_else(|| first("hostaddr"))
                .unwrap_or_else(|| String::from("localhost"));
            let port = first("port").and_then(|p| p.parse().ok()).unwrap_or(5432);
            External {
                source,
                conninfo,
                host,
                port,
            }
        }))
    }
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// The cluster shared by every test in this process, started on first use.
    ///
    /// If the environment variable `MOMOKO_TEST_DSN` or `DATABASE_URL` is set (non-empty;
    /// `MOMOKO_TEST_DSN` wins), no server is started: the cluster is external, and
    /// [`stop`](Cluster::stop), [`start`](Cluster::start) and
    /// [`reload_with`](Cluster::reload_with) return an [`io::ErrorKind::Unsupported`] error.
    /// The DSN may be a `key=value` string or a `postgres://` URL; its role must be allowed to
    /// create databases.
    ///
    /// An owned shared cluster is never dropped; a guardian process stops it and removes its
    /// directory when the test process exits (however it exits).
    ///
    /// # Panics
    ///
    /// Panics with a clear message if no server can be started (missing binaries, initdb or
    /// start failure, unparsable DSN). Tests that need a server fail, they never skip.
    pub fn shared() -> &'static Cluster {
        let result = SHARED.get_or_init(|| {
            let started = match External::from_env() {
                Some(Ok(external)) => Ok(Cluster::from_kind(Kind::External(external))),
                Some(Err(e)) => Err(io::Error::new(
                    e.kind(),
                    format!("bad MOMOKO_TEST_DSN / DATABASE_URL: {e}"),
                )),
                None => Cluster::start_new(ClusterOptions::default()),
            };
            started.map_err(|e| e.to_string())
        });
        match result {
            Ok(cluster) => cluster,
            Err(e) => panic!(
                "momoko-testkit: cannot provide the shared PostgreSQL test cluster: {e}\n\
                 (tests need a real server: install the PostgreSQL server binaries, or set \
                 MOMOKO_TEST_DSN / DATABASE_URL)"
            ),
        }
    }

    /// Wraps a server the kit started (e.g. a standby).
    pub(crate) fn from_owned(owned: Owned) -> Cluster {
        Cluster::from_kind(Kind::Owned(owned))
    }

    /// Another handle on the same server (the server lives while any handle does): for
    /// moving into a thread that runs a blocking operation.
    pub fn handle(&self) -> Cluster {
        Cluster {
            inner: Arc::clone(&self.inner),
        }
    }

    fn from_kind(kind: Kind) -> Cluster {
        let psql = match &kind {
            Kind::Owned(o) => Ok(o.bins.psql.clone()),
            Kind::External(_) => find_psql(None),
        };
        // An external cluster without a psql binary can still hand out DSNs; calls that need psql
        // report the missing binary.
        let psql = psql.unwrap_or_else(|_| PathBuf::from("psql"));
        Cluster {
            inner: Arc::new(Inner { psql, kind }),
        }
    }

    /// Starts a private cluster owned by the caller (for tests that stop, restart or reconfigure
    /// the server). Blocking: initdb plus server start, typically one to two seconds.
    ///
    /// The cluster is stopped (immediate) and its directory removed when the last handle to it
    /// is dropped (the `Cluster` and any [`TestDb`] created from it), or by the guardian process
    /// if the test process dies first.
    pub fn start_new(options: ClusterOptions) -> io::Result<Cluster> {
        let owned = Owned::create(&options)?;
        Ok(Cluster::from_kind(Kind::Owned(owned)))
    }

    pub(crate) fn owned(&self) -> Option<&Owned> {
        match &self.inner.kind {
            Kind::Owned(o) => Some(o),
            Kind::External(_) => None,
        }
    }

    pub(crate) fn owned_or(&self, what: &str) -> io::Result<&Owned> {
        match &self.inner.kind {
            Kind::Owned(o) => Ok(o),
            Kind::External(e) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{what} is not supported on an external cluster (given by {})",
                    e.source
                ),
            )),
        }
    }

    /// TCP port (on [`host`](Cluster::host)).
    pub fn port(&self) -> u16 {
        match &self.inner.kind {
            Kind::Owned(o) => o.port,
            Kind::External(e) => e.port,
        }
    }

    /// `"127.0.0.1"` for owned clusters; the (first) host of the DSN for external ones.
    pub fn host(&self) -> &str {
        match &self.inner.kind {
            Kind::Owned(_) => "127.0.0.1",
            Kind::External(e) => &e.host,
        }
    }

    /// Directory holding the Unix socket `.s.PGSQL.<port>` (`None` for external clusters).
    pub fn socket_dir(&self) -> Option<&Path> {
        self.owned().map(|o| o.sock_dir.as_path())
    }

    /// The data directory (`None` for external clusters).
    pub fn data_dir(&self) -> Option<&Path> {
        self.owned().map(|o| o.data_dir.as_path())
    }

    /// Whether this cluster was started by the kit (`false` for `DATABASE_URL` /
    /// `MOMOKO_TEST_DSN`).
    pub fn is_owned(&self) -> bool {
        self.owned().is_some()
    }

    /// Connection parameters for `dbname` over TCP.
    pub(crate) fn conninfo(&self, dbname: &str) -> Conninfo {
        match &self.inner.kind {
            Kind::Owned(o) => Conninfo::from_pairs([
                ("host", "127.0.0.1"),
                ("port", &o.port.to_string()),
                ("user", "postgres"),
                ("dbname", dbname),
            ]),
            Kind::External(e) => e.conninfo.with("dbname", dbname),
        }
    }

    /// `key=value` DSN for database `dbname` over TCP as the superuser, e.g.
    /// `"host=127.0.0.1 port=5433 user=postgres dbname=foo"`.
    ///
    /// For an external cluster: its DSN (URLs are converted to `key=value` form) with `dbname`
    /// replaced.
    pub fn dsn(&self, dbname: &str) -> String {
        self.conninfo(dbname).to_string()
    }

    /// The same over the Unix socket: `"host=/path/to/sockdir port=5433 user=postgres
    /// dbname=foo"`. `None` for external clusters.
    pub fn unix_dsn(&self, dbname: &str) -> Option<String> {
        self.owned().map(|o| unix_conninfo(o, dbname).to_string())
    }

    /// The DSN the kit itself uses for `dbname` (Unix socket when owned).
    fn admin_dsn(&self, dbname: Option<&str>) -> String {
        match &self.inner.kind {
            Kind::Owned(o) => unix_conninfo(o, dbname.unwrap_or("postgres")).to_string(),
            Kind::External(e) => match dbname {
                Some(db) => e.conninfo.with("dbname", db).to_string(),
                // The maintenance database: whatever the DSN names.
                None => e.conninfo.to_string(),
            },
        }
    }

    /// Creates a fresh, uniquely named database and returns it. Blocking; a few milliseconds.
    ///
    /// The name is `hint` sanitized to `[a-z0-9_]`, plus `_<pid>_<counter>`, at most 63 bytes, so
    /// parallel tests (and parallel test processes) never collide. The database is dropped when
    /// the [`TestDb`] is.
    pub fn create_database(&self, hint: &str) -> io::Result<TestDb> {
        let mut last_err = None;
        for _ in 0..5 {
            let name = database_name(hint);
            match self.run_psql(
                &self.admin_dsn(None),
                &format!("{KIT_COMMIT}CREATE DATABASE {}", quote_ident(&name)),
            ) {
                Ok(_) => {
                    return Ok(TestDb {
                        name,
                        cluster: Cluster {
                            inner: Arc::clone(&self.inner),
                        },
                    })
                }
                // A leftover from an earlier process with the same pid: try the next name.
                Err(e) if e.to_string().contains("already exists") => last_err = Some(e),
                Err(e) => return Err(with_context(e, format!("creating database {name}"))),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not create a database")))
    }

    /// Runs SQL statements as the superuser in database `dbname` and returns psql's stdout.
    /// Blocking.
    ///
    /// The SQL is fed to `psql -X -q -A -t -v ON_ERROR_STOP=1 -f -`, so it may hold several
    /// statements (each runs in its own transaction unless the script says otherwise) and the
    /// output is unaligned and tuples-only: `SELECT 1, 2` gives `"1|2\n"`. The first error stops
    /// the script and is returned (with psql's stderr) as an `Err`. Owned clusters are reached
    /// over the Unix socket.
    pub fn psql(&self, dbname: &str, sql: &str) -> io::Result<String> {
        self.run_psql(&self.admin_dsn(Some(dbname)), sql)
    }

    fn run_psql(&self, conninfo: &str, sql: &str) -> io::Result<String> {
        run_psql(&self.inner.psql, conninfo, sql, self.is_owned())
    }

    fn drop_database(&self, name: &str) -> io::Result<()> {
        self.run_psql(
            &self.admin_dsn(None),
            &format!(
                "{KIT_COMMIT}DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ),
        )
        .map(drop)
    }

    /// Stops the server (`pg_ctl stop -m <mode> -w`). The blocking work runs on a fresh std
    /// thread and the future completes through a oneshot channel, so it works on any executor
    /// (or none) and never blocks an executor thread.
    pub async fn stop(&self, mode: StopMode) -> io::Result<()> {
        self.owned_or("stop")?;
        let inner = Arc::clone(&self.inner);
        off_thread(move || Cluster { inner }.stop_blocking(mode)).await
    }

    /// Starts the stopped server again (`pg_ctl start -w -l <log>`) on the same port and socket
    /// directory. Runs on a fresh std thread like [`stop`](Cluster::stop).
    pub async fn start(&self) -> io::Result<()> {
        self.owned_or("start")?;
        let inner = Arc::clone(&self.inner);
        off_thread(move || Cluster { inner }.start_blocking()).await
    }

    /// [`stop`](Cluster::stop) then [`start`](Cluster::start) (two pg_ctl calls, not
    /// `pg_ctl restart`).
    pub async fn restart(&self, mode: StopMode) -> io::Result<()> {
        self.stop(mode).await?;
        self.start().await
    }

    /// Blocking variant of [`stop`](Cluster::stop), for use outside async code.
    pub fn stop_blocking(&self, mode: StopMode) -> io::Result<()> {
        self.owned_or("stop")?.stop_blocking(mode)
    }

    /// Blocking variant of [`start`](Cluster::start), for use outside async code.
    pub fn start_blocking(&self) -> io::Result<()> {
        self.owned_or("start")?.start_blocking()
    }

    /// Appends `conf_lines` to `postgresql.conf` and, if `hba` is given, replaces the content of
    /// `pg_hba.conf`, then reloads the configuration (`pg_ctl reload`). Blocking.
    ///
    /// Before reloading, the new files are checked (`pg_hba_file_rules`, `pg_file_settings`):
    /// on a bad `pg_hba.conf` line, a syntax error, an unknown parameter or an invalid value the
    /// previous files are restored and an [`io::ErrorKind::InvalidInput`] error is returned.
    /// After the reload, the call waits (up to 10 s) until new sessions see the new
    /// configuration. Settings that need a restart (e.g. `shared_buffers`; their values are not
    /// checked) only apply at the next [`start`](Cluster::start). If the server is stopped, the
    /// files are only written (they apply at the next start).
    ///
    /// The kit's own psql calls go over the Unix socket as `postgres`: keep a
    /// `local all postgres trust` line (or `local all all trust`) in `hba` for them to keep
    /// working.
    pub fn reload_with(&self, conf_lines: &[&str], hba: Option<&str>) -> io::Result<()> {
        let owned = self.owned_or("reload_with")?;
        let _ops = lock(&owned.ops);
        let conf_path = owned.data_dir.join("postgresql.conf");
        let hba_path = owned.data_dir.join("pg_hba.conf");
        let old_conf = fs::read(&conf_path)?;
        let old_hba = fs::read(&hba_path)?;
        let restore = || {
            let _ = fs::write(&conf_path, &old_conf);
            let _ = fs::write(&hba_path, &old_hba);
        };

        let mut text = String::new();
        for line in conf_lines {
            text.push_str(line);
            text.push('\n');
        }
        owned.append_conf(&text)?;
        if let Some(hba) = hba {
            if let Err(e) = fs::write(&hba_path, hba) {
                restore();
                return Err(e);
            }
        }
        if !owned.is_running() {
            return Ok(());
        }

        let check = self.psql(
            "postgres",
            "SELECT 'pg_hba.conf line ' || line_number || ': ' || error \
               FROM pg_hba_file_rules WHERE error IS NOT NULL \
             UNION ALL \
             SELECT f.sourcefile || ' line ' || f.sourceline || ' (' || coalesce(f.name, '?') \
                    || '): ' || f.error \
               FROM pg_file_settings f LEFT JOIN pg_settings s ON s.name = f.name \
              WHERE f.error IS NOT NULL \
                AND NOT (f.error = 'setting could not be applied' \
                         AND s.context = 'postmaster')",
        );
        let before = self.psql("postgres", "SELECT pg_conf_load_time()");
        match (check, before) {
            (Ok(problems), Ok(_)) if !problems.trim().is_empty() => {
                restore();
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid configuration, not reloaded:\n{}", problems.trim()),
                ))
            }
            (Ok(_), Ok(before)) => {
                let out = owned.pg_ctl(["reload"])?;
                if !out.status.success() {
                    return Err(command_failed("pg_ctl reload", &out));
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match self.psql("postgres", "SELECT pg_conf_load_time()") {
                        Ok(now) if now != before => return Ok(()),
                        // The kit could connect before the reload: now it cannot, so the new
                        // pg_hba.conf is in force.
                        Err(_) => return Ok(()),
                        Ok(_) => {}
                    }
                    if Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the server did not pick up the new configuration within 10 s",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            (Err(_), _) | (_, Err(_)) => {
                // The kit cannot connect (its own access was already restricted): reload
                // without checking or waiting.
                let out = owned.pg_ctl(["reload"])?;
                if !out.status.success() {
                    return Err(command_failed("pg_ctl reload", &out));
                }
                Ok(())
            }
        }
    }
}

/// Feeds `sql` to `psql -X -q -A -t -v ON_ERROR_STOP=1 -f -` against `conninfo` and returns its
/// stdout. `kit_owned`: the server is one of the kit's, so libpq environment variables must not
/// redirect or alter the connection.
pub(crate) fn run_psql(
    psql: &Path,
    conninfo: &str,
    sql: &str,
    kit_owned: bool,
) -> io::Result<String> {
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if kit_owned {
        for var in PG_ENV {
            cmd.env_remove(var);
        }
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "10");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| with_context(e, format!("running {}", psql.display())))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let sql = sql.to_owned();
        std::thread::spawn(move || {
            // psql may exit early (e.g. cannot connect): a broken pipe is reported through
            // its exit status instead.
            let _ = stdin.write_all(sql.as_bytes());
        })
    });
    let out = child.wait_with_output()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(command_failed("psql", &out))
    }
}

fn unix_conninfo(o: &Owned, dbname: &str) -> Conninfo {
    Conninfo::from_pairs([
        ("host", o.sock_dir.to_string_lossy().as_ref()),
        ("port", &o.port.to_string()),
        ("user", "postgres"),
        ("dbname", dbname),
    ])
}

/// A database created for one test; dropped (`DROP DATABASE ... WITH (FORCE)`, errors ignored)
/// when this value is dropped.
///
/// Holds a handle on its cluster, so it has no lifetime parameter and can live in a `static`
/// or be moved anywhere; a private cluster stays up while any of its `TestDb`s exist.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    cluster: Cluster,
}

impl TestDb {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// DSN of this database over TCP (see [`Cluster::dsn`]).
    pub fn dsn(&self) -> String {
        self.cluster.dsn(&self.name)
    }

    /// DSN of this database over the Unix socket (`None` for external clusters).
    pub fn unix_dsn(&self) -> Option<String> {
        self.cluster.unix_dsn(&self.name)
    }

    /// The cluster holding this database.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Runs SQL in this database (see [`Cluster::psql`]).
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        self.cluster.psql(&self.name, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.cluster.drop_database(&self.name);
    }
}

/// A database on the shared cluster: `Cluster::shared().create_database(hint)`.
///
/// # Panics
///
/// Panics with a clear message if the shared cluster is unavailable or the database cannot be
/// created.
pub fn test_db(hint: &str) -> TestDb {
    match Cluster::shared().create_database(hint) {
        Ok(db) => db,
        Err(e) => panic!("momoko-testkit: cannot create a test database for {hint:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_unique_and_short() {
        let a = database_name("Hello World-ß!");
        let b = database_name("Hello World-ß!");
        assert_ne!(a, b);
        assert!(a.starts_with("hello_world___"), "{a}");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
        let long = database_name(&"x".repeat(200));
        assert!(long.len() <= 63, "{}", long.len());
        assert!(long.ends_with(&format!("_{}", std::process::id())) || long.contains('_'));
        assert!(database_name("").starts_with("db_"));
    }

    #[test]
    fn cluster_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Cluster>();
        check::<TestDb>();
    }

    #[test]
    fn conf_quoting() {
        assert_eq!(conf_quote("/a/b"), "'/a/b'");
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
