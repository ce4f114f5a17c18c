//! Connection settings: libpq-style DSNs, `PG*` environment variables, host lists.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use crate::error::{Error, Result};

/// Default number of prepared statements each connection keeps.
pub(crate) const DEFAULT_STATEMENT_CACHE: usize = 256;

/// Where one connection attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A TCP host name or address and port.
    Tcp { host: String, port: u16 },
    /// A Unix socket file (`{dir}/.s.PGSQL.{port}`).
    Unix { path: PathBuf },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } => write!(f, "host {host} port {port}"),
            Target::Unix { path } => write!(f, "socket {}", path.display()),
        }
    }
}

/// How to reach a PostgreSQL server and what to ask of it: parsed from a connection string like
/// libpq's, plus the settings libpq takes from the environment.
///
/// Both libpq forms are accepted:
///
/// * key/value: `host=localhost port=5432 user=app dbname=app password=secret connect_timeout=5`
/// * URL: `postgresql://app:secret@localhost:5432/app?connect_timeout=5`
///
/// Several hosts (`host=a,b port=5432,5433`) are tried in order, each within `connect_timeout`. A
/// host that starts with `/` is a directory holding the server's Unix socket. `hostaddr`,
/// `keepalives`, `keepalives_idle`, `keepalives_interval`, `keepalives_retries`,
/// `tcp_user_timeout` and `target_session_attrs` (`any`, `read-write`) work as in libpq.
///
/// Settings missing from the string are taken from `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGDATABASE`,
/// `PGUSER`, `PGPASSWORD`, `PGAPPNAME`, `PGOPTIONS`, `PGCONNECT_TIMEOUT`, `PGSSLMODE` and
/// `PGTARGETSESSIONATTRS`, then from libpq's defaults: the Unix socket in `/var/run/postgresql`,
/// then `/tmp`, then `localhost`; port 5432; the user name of the process.
///
/// `Debug` never shows the password.
///
/// ```
/// use momoko_core::ConnectOptions;
/// use std::time::Duration;
///
/// let options: ConnectOptions = "host=db1,db2 user=app password=secret connect_timeout=3"
///     .parse()
///     .unwrap();
/// assert_eq!(options.get_connect_timeout(), Some(Duration::from_secs(3)));
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) targets: Vec<Target>,
    pub(crate) statement_cache_capacity: usize,
}

impl ConnectOptions {
    /// Parses a libpq connection string (key/value or URL), filling what it lacks from the `PG*`
    /// environment variables and libpq's defaults.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when the string cannot be parsed or its
    /// host, hostaddr and port lists do not fit together. The message never contains the password.
    pub fn parse(dsn: &str) -> Result<ConnectOptions> {
        ConnectOptions::parse_with_env(dsn, |name| std::env::var(name).ok())
    }

    pub(crate) fn parse_with_env(
        dsn: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectOptions> {
        let mut pg = if dsn.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            tokio_postgres::Config::from_str(dsn).map_err(|e| {
                // tokio-postgres' parse errors name the key, never the value.
                Error::config(format!("cannot parse the connection string: {e}"))
            })?
        };
        apply_env(&mut pg, &env)?;
        let targets = targets(&pg)?;
        Ok(ConnectOptions {
            pg,
            targets,
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE,
        })
    }

    /// Limits each connection attempt (per host) to `timeout`. Defaults to the `connect_timeout`
    /// of the connection string, or no limit.
    pub fn connect_timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.pg.connect_timeout(timeout);
        self
    }

    /// The per-host connect timeout, if any.
    pub fn get_connect_timeout(&self) -> Option<Duration> {
        self.pg.get_connect_timeout().copied()
    }

    /// Turns TCP keepalives on or off. Defaults to on (`keepalives=1`), as in libpq.
    pub fn keepalives(mut self, on: bool) -> ConnectOptions {
        self.pg.keepalives(on);
        self
    }

    /// Idle time before the first keepalive probe. Defaults to 2 hours, or `keepalives_idle`.
    pub fn keepalives_idle(mut self, idle: Duration) -> ConnectOptions {
        self.pg.keepalives_idle(idle);
        self
    }

    /// Sets `TCP_USER_TIMEOUT` (Linux): how long sent data may stay unacknowledged before the
    /// connection is dropped. Defaults to the `tcp_user_timeout` of the connection string, or the
    /// system default.
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.pg.tcp_user_timeout(timeout);
        self
    }

    /// Sets `application_name`, shown in `pg_stat_activity`. Defaults to the connection string's
    /// `application_name`, else `PGAPPNAME`, else none.
    pub fn application_name(mut self, name: &str) -> ConnectOptions {
        self.pg.application_name(name);
        self
    }

    /// How many prepared statements each connection keeps (least recently used ones are closed
    /// first). A cached statement costs one round trip per execution instead of two. `0` turns the
    /// cache off. Defaults to 256.
    pub fn statement_cache_capacity(mut self, capacity: usize) -> ConnectOptions {
        self.statement_cache_capacity = capacity;
        self
    }

    /// The user name that will be sent.
    pub fn get_user(&self) -> Option<&str> {
        self.pg.get_user()
    }

    /// The database name that will be sent (the server defaults it to the user name).
    pub fn get_dbname(&self) -> Option<&str> {
        self.pg.get_dbname()
    }

    /// The underlying tokio-postgres configuration (read-only).
    pub fn as_tokio_postgres(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// Descriptions of the places a connection will be attempted, in order, like
    /// `"host db1 port 5432"` or `"socket /tmp/.s.PGSQL.5432"`.
    pub fn targets(&self) -> Vec<String> {
        self.targets.iter().map(Target::to_string).collect()
    }
}

impl FromStr for ConnectOptions {
    type Err = Error;

    fn from_str(s: &str) -> Result<ConnectOptions> {
        ConnectOptions::parse(s)
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("targets", &self.targets())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("password", &self.pg.get_password().map(|_| "<redacted>"))
            .field("application_name", &self.pg.get_application_name())
            .field("connect_timeout", &self.pg.get_connect_timeout())
            .field("keepalives", &self.pg.get_keepalives())
            .field("tcp_user_timeout", &self.pg.get_tcp_user_timeout())
            .field("target_session_attrs", &self.pg.get_target_session_attrs())
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .finish()
    }
}

fn apply_env(pg: &mut tokio_postgres::Config, env: &impl Fn(&str) -> Option<String>) -> Result<()> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        if let Some(hosts) = var("PGHOST") {
            for h in hosts.split(',') {
                pg.host(h);
            }
        }
        if let Some(addrs) = var("PGHOSTADDR") {
            for a in addrs.split(',') {
                let addr = a
                    .trim()
                    .parse()
                    .map_err(|_| Error::config(format!("PGHOSTADDR: invalid address {a:?}")))?;
                pg.hostaddr(addr);
            }
        }
    }
    if pg.get_ports().is_empty() {
        if let Some(ports) = var("PGPORT") {
            for p in ports.split(',') {
                let port = p
                    .trim()
                    .parse()
                    .map_err(|_| Error::config(format!("PGPORT: invalid port {p:?}")))?;
                pg.port(port);
            }
        }
    }
    if pg.get_user().is_none() {
        match var("PGUSER").or_else(os_user) {
            Some(u) => {
                pg.user(u);
            }
            None => {
                return Err(Error::config(
                    "no user name: set `user` in the connection string or PGUSER",
                ))
            }
        }
    }
    if pg.get_password().is_none() {
        if let Some(p) = var("PGPASSWORD") {
            pg.password(p);
        }
    }
    if pg.get_dbname().is_none() {
        if let Some(d) = var("PGDATABASE") {
            pg.dbname(d);
        }
    }
    if pg.get_application_name().is_none() {
        if let Some(a) = var("PGAPPNAME") {
            pg.application_name(a);
        }
    }
    if pg.get_options().is_none() {
        if let Some(o) = var("PGOPTIONS") {
            pg.options(o);
        }
    }
    if pg.get_connect_timeout().is_none() {
        if let Some(t) = var("PGCONNECT_TIMEOUT") {
            let secs: i64 = t
                .trim()
                .parse()
                .map_err(|_| Error::config(format!("PGCONNECT_TIMEOUT: invalid value {t:?}")))?;
            if secs > 0 {
                pg.connect_timeout(Duration::from_secs(secs.unsigned_abs()));
            }
        }
    }
    if let Some(mode) = var("PGSSLMODE") {
        // Only applied when the string left sslmode at its default.
        if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            let m = match mode.as_str() {
                "disable" => tokio_postgres::config::SslMode::Disable,
                "allow" | "prefer" => tokio_postgres::config::SslMode::Prefer,
                "require" | "verify-ca" | "verify-full" => tokio_postgres::config::SslMode::Require,
                other => return Err(Error::config(format!("PGSSLMODE: invalid value {other:?}"))),
            };
            pg.ssl_mode(m);
        }
    }
    if let Some(attrs) = var("PGTARGETSESSIONATTRS") {
        if pg.get_target_session_attrs() == TargetSessionAttrs::Any {
            match attrs.as_str() {
                "any" => {}
                "read-write" => {
                    pg.target_session_attrs(TargetSessionAttrs::ReadWrite);
                }
                "read-only" => {
                    pg.target_session_attrs(TargetSessionAttrs::ReadOnly);
                }
                other => {
                    return Err(Error::config(format!(
                        "PGTARGETSESSIONATTRS: invalid value {other:?}"
                    )))
                }
            }
        }
    }
    Ok(())
}

fn os_user() -> Option<String> {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
        // immediately and do not keep the pointer.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            if !pw.is_null() && !(*pw).pw_name.is_null() {
                let name = std::ffi::CStr::from_ptr((*pw).pw_name);
                return name.to_str().ok().map(str::to_owned);
            }
        }
    }
    None
}

/// Default places libpq looks when no host is given.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

fn targets(pg: &tokio_postgres::Config) -> Result<Vec<Target>> {
    let hosts = pg.get_hosts();
    let addrs = pg.get_hostaddrs();
    let ports = pg.get_ports();

    // Host strings, possibly replaced by hostaddr (libpq: hostaddr wins for the TCP connection).
    let mut entries: Vec<Host> = if !addrs.is_empty() {
        if !hosts.is_empty() && hosts.len() != addrs.len() {
            return Err(Error::config(format!(
                "{} hosts but {} hostaddrs: the lists must have the same length",
                hosts.len(),
                addrs.len()
            )));
        }
        addrs.iter().map(|a| Host::Tcp(a.to_string())).collect()
    } else {
        hosts.to_vec()
    };

    let defaulted = entries.is_empty();
    if defaulted {
        if cfg!(unix) {
            for dir in DEFAULT_SOCKET_DIRS {
                #[cfg(unix)]
                entries.push(Host::Unix(PathBuf::from(dir)));
                #[cfg(not(unix))]
                let _ = dir;
            }
        }
        entries.push(Host::Tcp("localhost".to_owned()));
    }

    let port_for = |i: usize| -> Result<u16> {
        match ports.len() {
            0 => Ok(5432),
            1 => Ok(ports[0]),
            n if defaulted => Err(Error::config(format!(
                "{n} ports given but no host: give one port or list the hosts"
            ))),
            n if n == hosts.len().max(addrs.len()) => Ok(ports[i]),
            n => Err(Error::config(format!(
                "{} hosts but {n} ports: give one port or one per host",
                hosts.len().max(addrs.len())
            ))),
        }
    };

    let mut out = Vec::with_capacity(entries.len());
    for (i, host) in entries.into_iter().enumerate() {
        let port = if defaulted {
            port_for(0)?
        } else {
            port_for(i)?
        };
        match host {
            Host::Tcp(h) => {
                if h.is_empty() {
                    return Err(Error::config("empty host name"));
                }
                out.push(Target::Tcp { host: h, port });
            }
            #[cfg(unix)]
            Host::Unix(dir) => out.push(Target::Unix {
                path: dir.join(format!(".s.PGSQL.{port}")),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dsn: &str, env: &[(&str, &str)]) -> Result<ConnectOptions> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConnectOptions::parse_with_env(dsn, move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn key_value_with_host_list() {
        let o = parse("host=a,b port=1,2 user=u dbname=d", &[]).unwrap();
        assert_eq!(o.targets(), ["host a port 1", "host b port 2"]);
        assert_eq!(o.get_user(), Some("u"));
        assert_eq!(o.get_dbname(), Some("d"));
    }

    #[test]
    fn url_form_and_unix_dir() {
        let o = parse("postgresql://u:pw@h:6543/db?connect_timeout=2", &[]).unwrap();
        assert_eq!(o.targets(), ["host h port 6543"]);
        assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(2)));
        let o = parse("host=/run/pg port=5433 user=u", &[]).unwrap();
        assert_eq!(o.targets(), ["socket /run/pg/.s.PGSQL.5433"]);
    }

    #[test]
    fn env_fills_missing_settings_only() {
        let env = [
            ("PGHOST", "envhost"),
            ("PGPORT", "7777"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGCONNECT_TIMEOUT", "4"),
        ];
        let o = parse("", &env).unwrap();
        assert_eq!(o.targets(), ["host envhost port 7777"]);
        assert_eq!(o.get_user(), Some("envuser"));
        assert_eq!(o.get_dbname(), Some("envdb"));
        assert_eq!(o.pg.get_password(), Some(&b"envpw"[..]));
        assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(4)));
        let o = parse("host=h user=u dbname=d", &env).unwrap();
        assert_eq!(o.targets(), ["host h port 7777"]);
        assert_eq!(o.get_user(), Some("u"));
    }

    #[test]
    fn defaults_are_libpq_like() {
        let o = parse("user=u", &[]).unwrap();
        let t = o.targets();
        assert_eq!(
            t.last().map(String::as_str),
            Some("host localhost port 5432")
        );
        assert!(t[0].starts_with("socket /var/run/postgresql/.s.PGSQL.5432"));
    }

    #[test]
    fn hostaddr_replaces_host_for_tcp() {
        let o = parse("host=name hostaddr=127.0.0.1 port=5 user=u", &[]).unwrap();
        assert_eq!(o.targets(), ["host 127.0.0.1 port 5"]);
    }

    #[test]
    fn bad_strings_are_config_errors_without_password() {
        for dsn in [
            "host=a,b port=1,2,3 user=u password=hunter2",
            "port=notaport password=hunter2",
            "postgresql://u:hunter2@h:99999/db",
            "sslmode=sometimes password=hunter2",
            "host=a hostaddr=1.2.3.4,5.6.7.8 user=u password=hunter2",
            "host='unterminated password=hunter2",
        ] {
            let e = parse(dsn, &[]).unwrap_err();
            assert!(e.is_config(), "{dsn}: {e:?}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }

    #[test]
    fn debug_redacts_password() {
        let o = parse("user=u password=hunter2 host=h", &[]).unwrap();
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<redacted>"), "{d}");
    }
}
