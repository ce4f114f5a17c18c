//! The server: a throw-away cluster from momoko-testkit (or `DATABASE_URL`), its addresses, the
//! benchmark's tables, and the facts about the machine that go into the report.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use crate::model::{BoxError, Transport, ACCOUNTS};

/// The task driving a set-up session's connection.
type Driver = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

/// One way to reach the benchmark database, in the forms every contender needs.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// libpq `key=value` DSN (momoko, tokio-postgres, deadpool, bb8).
    pub(crate) dsn: String,
    /// TCP host, or the Unix socket directory.
    pub(crate) host: Host,
    /// Port (also names the Unix socket file).
    pub(crate) port: u16,
    /// Role.
    pub(crate) user: String,
    /// Password, if any.
    pub(crate) password: Option<String>,
    /// Database.
    pub(crate) dbname: String,
}

impl Endpoint {
    /// Parses a DSN (key/value or URL) with tokio-postgres' parser.
    pub(crate) fn parse(dsn: &str) -> Result<Endpoint, BoxError> {
        let config = tokio_postgres::Config::from_str(dsn)
            .map_err(|e| format!("cannot parse the connection string {dsn:?}: {e}"))?;
        let host = config
            .get_hosts()
            .first()
            .cloned()
            .unwrap_or(Host::Tcp("localhost".into()));
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("PGUSER").ok())
            .unwrap_or_else(|| "postgres".into());
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let dbname = config
            .get_dbname()
            .map(str::to_owned)
            .unwrap_or_else(|| user.clone());
        Ok(Endpoint {
            dsn: dsn.to_owned(),
            host,
            port,
            user,
            password,
            dbname,
        })
    }

    /// The host for command-line tools: a name or a socket directory.
    pub(crate) fn host_arg(&self) -> String {
        match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        }
    }

    /// The same settings as a tokio-postgres config.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, BoxError> {
        Ok(tokio_postgres::Config::from_str(&self.dsn)?)
    }

    /// The server's TCP address, for a proxy in front of it (`hostaddr` when given, else the
    /// host resolved).
    pub(crate) fn tcp_addr(&self) -> Result<SocketAddr, BoxError> {
        let config = self.pg_config()?;
        if let Some(ip) = config.get_hostaddrs().first() {
            return Ok(SocketAddr::new(*ip, self.port));
        }
        match &self.host {
            Host::Tcp(h) => (h.as_str(), self.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| format!("{h} resolves to no address").into()),
            Host::Unix(dir) => Err(format!(
                "{} is a Unix socket directory; this measurement needs TCP",
                dir.display()
            )
            .into()),
        }
    }

    /// The same database reached through a local proxy listening on `127.0.0.1:port`.
    pub(crate) fn via_proxy(&self, port: u16) -> Result<Endpoint, BoxError> {
        let mut dsn = format!(
            "host=127.0.0.1 port={port} user={} dbname={}",
            quote(&self.user),
            quote(&self.dbname)
        );
        if let Some(p) = &self.password {
            dsn.push_str(" password=");
            dsn.push_str(&quote(p));
        }
        if self.pg_config()?.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            dsn.push_str(" sslmode=disable");
        }
        Endpoint::parse(&dsn)
    }

    /// The same settings for sqlx.
    pub(crate) fn sqlx_options(&self) -> sqlx::postgres::PgConnectOptions {
        let mut o = sqlx::postgres::PgConnectOptions::new()
            .port(self.port)
            .username(&self.user)
            .database(&self.dbname)
            .ssl_mode(sqlx::postgres::PgSslMode::Disable);
        o = match &self.host {
            Host::Tcp(h) => o.host(h),
            Host::Unix(dir) => o.socket(dir),
        };
        if let Some(p) = &self.password {
            o = o.password(p);
        }
        o
    }
}

/// A libpq `key=value` value, quoted.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The database under test: TCP and (for an owned cluster) Unix-socket endpoints.
#[derive(Debug)]
pub(crate) struct Server {
    /// Over TCP.
    pub(crate) tcp: Endpoint,
    /// Over the Unix socket, when known.
    pub(crate) unix: Option<Endpoint>,
    /// Keeps the throw-away database (and its cluster) alive.
    _db: Option<momoko_testkit::TestDb>,
    /// Where it came from, for the report.
    pub(crate) origin: String,
}

impl Server {
    /// The endpoint for `transport`.
    pub(crate) fn endpoint(&self, transport: Transport) -> Option<&Endpoint> {
        match transport {
            Transport::Tcp => Some(&self.tcp),
            Transport::Unix => self.unix.as_ref(),
        }
    }

    /// Starts a throw-away cluster (or uses `DATABASE_URL`, TCP only unless its host is a
    /// socket directory).
    pub(crate) fn start() -> Result<Server, BoxError> {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()) {
            let ep = Endpoint::parse(&url)?;
            let (tcp, unix) = match ep.host {
                Host::Unix(_) => (ep.clone(), Some(ep)),
                Host::Tcp(_) => (ep, None),
            };
            return Ok(Server {
                tcp,
                unix,
                _db: None,
                origin: "DATABASE_URL".into(),
            });
        }
        let cluster = momoko_testkit::Cluster::start_new(momoko_testkit::ClusterOptions::default())
            .map_err(|e| format!("cannot start a throw-away PostgreSQL cluster: {e}"))?;
        let db = cluster
            .create_database("momoko_bench")
            .map_err(|e| format!("cannot create the benchmark database: {e}"))?;
        let tcp = Endpoint::parse(&db.dsn())?;
        let unix = match db.unix_dsn() {
            Some(dsn) => Some(Endpoint::parse(&dsn)?),
            None => None,
        };
        Ok(Server {
            tcp,
            unix,
            _db: Some(db),
            origin: "momoko-testkit throw-away cluster (fsync=off, synchronous_commit=off, \
                     shared_buffers=32MB, max_connections=200)"
                .into(),
        })
    }

    /// A plain tokio-postgres session over TCP for setting up, and the task driving it (it ends
    /// once the client is dropped).
    async fn session(&self) -> Result<(tokio_postgres::Client, Driver), BoxError> {
        let (client, connection) = self
            .tcp
            .pg_config()?
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to {}: {}", self.tcp.dsn, pg_message(&e)))?;
        Ok((client, tokio::spawn(connection)))
    }

    /// Creates and fills the tables; returns the server's version string.
    pub(crate) async fn prepare_schema(&self) -> Result<String, BoxError> {
        let (client, driver) = self.session().await?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS bench_accounts, bench_log;
                 CREATE TABLE bench_accounts (id int PRIMARY KEY, balance int NOT NULL, filler text NOT NULL);
                 INSERT INTO bench_accounts
                     SELECT g, (g * 7919) % 100000, repeat('x', 84) FROM generate_series(1, {ACCOUNTS}) g;
                 CREATE TABLE bench_log (id bigint NOT NULL, v int NOT NULL);"
            ))
            .await
            .map_err(|e| format!("cannot create the benchmark tables: {}", pg_message(&e)))?;
        // Its own statement: VACUUM cannot run inside the implicit transaction of a batch.
        client
            .batch_execute("VACUUM ANALYZE bench_accounts")
            .await
            .map_err(|e| format!("cannot vacuum bench_accounts: {}", pg_message(&e)))?;
        let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
        drop(client);
        let _ = driver.await;
        Ok(version)
    }

    /// The server's `SELECT version()` (when the tables are not needed).
    pub(crate) async fn version(&self) -> Result<String, BoxError> {
        let (client, driver) = self.session().await?;
        let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
        drop(client);
        let _ = driver.await;
        Ok(version)
    }

    /// Empties `bench_log` (between repetitions, so every repetition inserts into the same
    /// table size).
    pub(crate) async fn truncate_log(&self) -> Result<(), BoxError> {
        let (client, driver) = self.session().await?;
        client.batch_execute("TRUNCATE bench_log").await?;
        drop(client);
        let _ = driver.await;
        Ok(())
    }
}

/// Facts about the machine, for `results.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Machine {
    /// Logical CPUs available to this process.
    pub(crate) nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub(crate) cpu_model: String,
    /// Kernel release.
    pub(crate) kernel: String,
    /// When the run started (UTC, ISO 8601).
    pub(crate) date: String,
    /// `SELECT version()`.
    pub(crate) postgres: String,
    /// Where the server came from.
    pub(crate) server: String,
    /// pgbench's `--version`.
    pub(crate) pgbench: String,
    /// `/proc/loadavg` when the run started (other work on the machine skews the figures).
    pub(crate) loadavg_start: String,
    /// `/proc/loadavg` when the run ended.
    pub(crate) loadavg_end: String,
    /// The workspace's git commit at build time, with `+dirty` when the momoko crates had
    /// uncommitted changes.
    pub(crate) git: String,
}

/// `/proc/loadavg`, trimmed.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The commit the benchmark was built from (see `build.rs`).
fn git_state() -> String {
    env!("MOMOKO_BENCH_GIT").to_owned()
}

impl Machine {
    /// Reads what the system tells.
    pub(crate) fn probe(postgres: String, server: String, pgbench: &PathBuf) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let pgbench = std::process::Command::new(pgbench)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "not found".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            date: utc_now(),
            postgres,
            server,
            pgbench,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            git: git_state(),
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// tokio-postgres' error with the server's message (its `Display` says only "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_endpoint() {
        let ep =
            Endpoint::parse("host=127.0.0.1 port=5433 user=postgres dbname=momoko_bench").unwrap();
        assert_eq!(ep.tcp_addr().unwrap(), "127.0.0.1:5433".parse().unwrap());
        let via = ep.via_proxy(40000).unwrap();
        assert_eq!((via.port, via.user.as_str()), (40000, "postgres"));
        assert_eq!(via.dbname, "momoko_bench");
        assert_eq!(quote("it's a \\ test"), "'it\\'s a \\\\ test'");
    }
}
