//! Connection settings: libpq-style DSNs, `PG*` environment variables, host lists.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use crate::error::{Error, Result};
use crate::tls::{SslMode, SslParams, TlsSettings, Verify};

/// Default number of prepared statements each connection keeps.
pub(crate) const DEFAULT_STATEMENT_CACHE: usize = 256;

/// Where one connection attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A TCP host name or address and port. `tls_name` is the `host` the server's certificate
    /// must name (`verify-full`) and the SNI name; it differs from `host` when `hostaddr` gave
    /// the address, and is `None` when only `hostaddr` was given.
    ///
    /// `session_tls` is set on the copy a connection keeps: whether its session runs over TLS
    /// (its cancel requests then use TLS too, and only then).
    Tcp {
        host: String,
        port: u16,
        tls_name: Option<String>,
        session_tls: bool,
    },
    /// A Unix socket file (`{dir}/.s.PGSQL.{port}`).
    Unix { path: PathBuf },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port, .. } => write!(f, "host {host} port {port}"),
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
/// `PGUSER`, `PGPASSWORD`, `PGAPPNAME`, `PGOPTIONS`, `PGCONNECT_TIMEOUT`, `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLNEGOTIATION` and `PGTARGETSESSIONATTRS`, then
/// from libpq's defaults: the Unix socket in `/var/run/postgresql`, then `/tmp`, then
/// `localhost`; port 5432; the user name of the process.
///
/// # TLS
///
/// `sslmode` takes libpq's six values (see [`SslMode`]; the default is `prefer`), `sslrootcert`
/// a PEM file of trusted CA certificates (or `system` for the operating system's store, which
/// implies `verify-full`), `sslcert`/`sslkey` a client certificate and its unencrypted PEM key
/// (PKCS#8, PKCS#1 or SEC1; the key file must not be readable by group or others), and
/// `sslnegotiation`, `sslsni`, `ssl_min_protocol_version` and `ssl_max_protocol_version` work as
/// in libpq. `verify-ca` and `verify-full` without `sslrootcert` use `~/.postgresql/root.crt`;
/// other default files of libpq (`~/.postgresql/postgresql.crt`, …) are not read. Files are read
/// when the options are parsed, so a missing or malformed one is a configuration error. TLS needs
/// the `tls` feature of momoko-core (rustls with the `ring` provider); without it `allow` and
/// `prefer` connect in plain and `require`, `verify-ca` and `verify-full` are configuration
/// errors.
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
    pub(crate) tls: TlsSettings,
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
        // tokio-postgres does not know libpq's TLS settings (or only some of their values): take
        // them out first, then hand it the rest.
        let (rest, ssl) = split_dsn(dsn)?;
        let mut pg = if rest.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            tokio_postgres::Config::from_str(&rest).map_err(|e| {
                // tokio-postgres' parse errors name the key, never the value (and the string it
                // parses is well-formed: ours).
                match std::error::Error::source(&e) {
                    Some(cause) => {
                        Error::config(format!("cannot parse the connection string: {e}: {cause}"))
                    }
                    None => Error::config(format!("cannot parse the connection string: {e}")),
                }
            })?
        };
        apply_env(&mut pg, &env)?;
        let tls = TlsSettings::resolve(ssl, &env)?;
        pg.ssl_mode(match tls.mode {
            // `allow` starts in plain; connect.rs upgrades when the server refuses.
            SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if tls.direct {
            pg.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
        }
        let targets = targets(&pg)?;
        if tls.verify == Verify::Full {
            check_verify_full_names(&targets)?;
        }
        Ok(ConnectOptions {
            pg,
            targets,
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE,
            tls,
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

    /// The `sslmode` in force (from the connection string, else `PGSSLMODE`, else `prefer`;
    /// `sslrootcert=system` implies `verify-full`).
    pub fn get_ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// The underlying tokio-postgres configuration (read-only). Its `ssl_mode` is what is asked
    /// at the protocol level (`verify-ca` and `verify-full` are `Require` there; the verification
    /// is momoko's).
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
            .field("sslmode", &self.tls.mode)
            .field(
                "sslrootcert",
                &self.tls.root_cert.as_ref().map(ToString::to_string),
            )
            .field(
                "sslcert",
                &self.tls.client_cert.as_ref().map(|(c, _)| c.display()),
            )
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

    // Host strings, possibly replaced by hostaddr (libpq: hostaddr wins for the TCP connection),
    // each with the host name TLS checks (libpq: always `host`).
    let tcp_name = |h: Option<&Host>| match h {
        Some(Host::Tcp(name)) => Some(name.clone()),
        _ => None,
    };
    let mut entries: Vec<(Host, Option<String>)> = if !addrs.is_empty() {
        if !hosts.is_empty() && hosts.len() != addrs.len() {
            return Err(Error::config(format!(
                "{} hosts but {} hostaddrs: the lists must have the same length",
                hosts.len(),
                addrs.len()
            )));
        }
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (Host::Tcp(a.to_string()), tcp_name(hosts.get(i))))
            .collect()
    } else {
        hosts
            .iter()
            .map(|h| (h.clone(), tcp_name(Some(h))))
            .collect()
    };

    let defaulted = entries.is_empty();
    if defaulted {
        if cfg!(unix) {
            for dir in DEFAULT_SOCKET_DIRS {
                #[cfg(unix)]
                entries.push((Host::Unix(PathBuf::from(dir)), None));
                #[cfg(not(unix))]
                let _ = dir;
            }
        }
        entries.push((
            Host::Tcp("localhost".to_owned()),
            Some("localhost".to_owned()),
        ));
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
    for (i, (host, tls_name)) in entries.into_iter().enumerate() {
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
                out.push(Target::Tcp {
                    host: h,
                    port,
                    tls_name,
                    session_tls: false,
                });
            }
            #[cfg(unix)]
            Host::Unix(dir) => out.push(Target::Unix {
                path: dir.join(format!(".s.PGSQL.{port}")),
            }),
        }
    }
    Ok(out)
}

/// `verify-full` checks the certificate against each TCP target's `host`: there must be one, and
/// it must be a DNS name or an IP address.
fn check_verify_full_names(targets: &[Target]) -> Result<()> {
    for target in targets {
        if let Target::Tcp { tls_name, host, .. } = target {
            let Some(name) = tls_name else {
                return Err(Error::config(format!(
                    "sslmode=verify-full needs a host name to check the server certificate \
                     against, but {target} has only a hostaddr: set host as well"
                )));
            };
            #[cfg(feature = "tls")]
            crate::tls::server_name(Some(name), host)
                .map_err(|m| Error::config(format!("sslmode=verify-full: {m}")))?;
            #[cfg(not(feature = "tls"))]
            let _ = (name, host);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Taking libpq's TLS settings out of a connection string
// ---------------------------------------------------------------------------------------------

/// Splits `dsn` into what tokio-postgres will parse and the TLS settings momoko handles itself.
///
/// Key/value strings are tokenized as libpq does (single quotes, backslash escapes in quoted and
/// unquoted values) and the remaining pairs written back quoted; in URLs only the query string
/// is edited. Error messages never contain a value.
fn split_dsn(dsn: &str) -> Result<(String, SslParams)> {
    for prefix in ["postgres://", "postgresql://"] {
        if dsn.starts_with(prefix) {
            return split_url(dsn, prefix.len());
        }
    }
    let mut ssl = SslParams::default();
    let mut rest = String::with_capacity(dsn.len());
    for (key, value) in tokenize_kv(dsn)? {
        if SslParams::is_ours(&key) {
            ssl.set(&key, value);
            continue;
        }
        if !rest.is_empty() {
            rest.push(' ');
        }
        rest.push_str(&key);
        rest.push_str("='");
        for c in value.chars() {
            if c == '\\' || c == '\'' {
                rest.push('\\');
            }
            rest.push(c);
        }
        rest.push('\'');
    }
    Ok((rest, ssl))
}

/// libpq's `isspace` in the C locale.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Tokenizes a libpq key/value connection string into (key, value) pairs, as `conninfo_parse`
/// does: `key = value` with optional spaces around `=`; a value is either single-quoted (`\'`
/// and `\\` escape) or runs to the next space (a backslash escapes the next character).
fn tokenize_kv(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    loop {
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        let Some(&(start, _)) = it.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|&(_, c)| c != '=' && !is_space(c)) {
            key.push(c);
        }
        if key.is_empty() {
            return Err(Error::config(format!(
                "cannot parse the connection string: missing keyword before \"=\" at byte {start}"
            )));
        }
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        if it.next_if(|&(_, c)| c == '=').is_none() {
            // The word is not echoed: it may be a password typed without its key.
            return Err(Error::config(format!(
                "cannot parse the connection string: missing \"=\" after the keyword at byte \
                 {start}"
            )));
        }
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        let mut value = String::new();
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next() {
                    None => {
                        return Err(Error::config(format!(
                            "cannot parse the connection string: unterminated quoted value \
                             (the value of the keyword at byte {start})"
                        )))
                    }
                    Some((_, '\\')) => {
                        if let Some((_, c)) = it.next() {
                            value.push(c);
                        }
                    }
                    Some((_, '\'')) => break,
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !is_space(c)) {
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// The URL form: the query string starts at the first `?` after the credentials (tokio-postgres
/// ends the credentials at the first `@`); our keys are taken out of it, the rest is kept as
/// written.
fn split_url(dsn: &str, body: usize) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    let after_credentials = dsn[body..].find('@').map_or(body, |i| body + i + 1);
    let Some(q) = dsn[after_credentials..]
        .find('?')
        .map(|i| after_credentials + i)
    else {
        return Ok((dsn.to_owned(), ssl));
    };
    let mut kept: Vec<&str> = Vec::new();
    for part in dsn[q + 1..].split('&') {
        let Some((raw_key, raw_value)) = part.split_once('=') else {
            kept.push(part);
            continue;
        };
        let key = percent_decode(raw_key).unwrap_or_else(|| raw_key.to_owned());
        if SslParams::is_ours(&key) {
            let value = percent_decode(raw_value).ok_or_else(|| {
                Error::config(format!(
                    "cannot parse the connection string: invalid percent-encoding in the value \
                     of {key}"
                ))
            })?;
            ssl.set(&key, value);
        } else {
            kept.push(part);
        }
    }
    let mut rest = dsn[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, ssl))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
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

    // -----------------------------------------------------------------------------------------
    // The DSN pre-parser and TLS settings
    // -----------------------------------------------------------------------------------------

    /// A self-signed CA certificate (P-256, valid until 2126) and its key, for parsing only.
    #[cfg(feature = "tls")]
    pub(crate) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUA2awnUO3BXSMC844WEa07GMMU34wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObW9tb2tvIHRlc3QgQ0EwIBcNMjYxMTIzMjE1MjM5WhgPMjEy
NjEwMzAyMTUyMzlaMBkxFzAVBgNVBAMMDm1vbW9rbyB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEwHDEI2udrjF0I6kViDRz9bXi9P7Hzc7om8UwiruP
GjfPyYOA4wwOXnifPDPjhGwuCFN8epqsp1XurRgLML2XjaNTMFEwHQYDVR0OBBYE
FArpBipBCAWV+DQKgBzuv8ggSB/TMB8GA1UdIwQYMBaAFArpBipBCAWV+DQKgBzu
v8ggSB/TMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgd1jkc9CH
BS+1O/De6l0Wy5T7kjyVLatl5uARHnmyFysCIQD4dsqbZrZbJIuvwIj7OfrVW5SK
TEHXFpq4ydaK8YIQFw==
-----END CERTIFICATE-----
";
    #[cfg(feature = "tls")]
    pub(crate) const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2VOtT7A0iWe6e+tY
kq4zW4W6UWLgE2ajrDmpbWxMrRqhRANCAATAcMQja52uMXQjqRWINHP1teL0/sfN
zuibxTCKu48aN8/Jg4DjDA5eeJ88M+OEbC4IU3x6mqynVe6tGAswvZeN
-----END PRIVATE KEY-----
";

    /// A file in a fresh temporary directory, removed on drop.
    #[cfg(feature = "tls")]
    struct TempFile(std::path::PathBuf);

    #[cfg(feature = "tls")]
    impl TempFile {
        fn new(name: &str, contents: &str, mode: u32) -> TempFile {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "momoko-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            #[cfg(not(unix))]
            let _ = mode;
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    #[cfg(feature = "tls")]
    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn kv(s: &str) -> Vec<(String, String)> {
        tokenize_kv(s).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tokenizer_follows_libpq() {
        assert_eq!(
            kv("host=h  port = 5 \t dbname= d"),
            pairs(&[("host", "h"), ("port", "5"), ("dbname", "d")])
        );
        // libpq has no '' escape: the quote ends the value, and what follows is no keyword.
        assert!(tokenize_kv("password='it''s'").is_err());
        assert_eq!(
            kv(r"user='a b' x='' y='back\\slash \'q\''"),
            pairs(&[("user", "a b"), ("x", ""), ("y", r"back\slash 'q'")])
        );
        assert_eq!(
            kv(r"password=a\ b\\c\'d"),
            pairs(&[("password", r"a b\c'd")])
        );
        assert_eq!(kv("a='x'b=y"), pairs(&[("a", "x"), ("b", "y")]));
        assert_eq!(kv("   "), pairs(&[]));
        assert_eq!(kv("a="), pairs(&[("a", "")]));
        assert_eq!(kv("a=ü€ b='✓ ok'"), pairs(&[("a", "ü€"), ("b", "✓ ok")]));
        for bad in [
            "password='hunter2",
            "hunter2",
            "user=u hunter2",
            "=hunter2",
            "password='hunter2\\'",
        ] {
            let e = tokenize_kv(bad).unwrap_err();
            assert!(e.is_config(), "{bad}: {e:?}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn split_takes_tls_keys_and_passes_the_rest() {
        let (rest, ssl) = split_dsn(concat!(
            r"host=h sslmode=verify-full sslrootcert='/a b/ca.pem' password='p w\'d' ",
            "sslpassword=hunter2 sslsni=0 application_name=x",
        ))
        .unwrap();
        assert_eq!(
            rest, r"host='h' password='p w\'d' application_name='x'",
            "our keys are taken out, the rest written back quoted"
        );
        assert_eq!(ssl.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.sslrootcert.as_deref(), Some("/a b/ca.pem"));
        assert_eq!(ssl.sslsni.as_deref(), Some("0"));
        assert!(
            !format!("{ssl:?}").contains("hunter2"),
            "sslpassword is not kept"
        );
        // The written-back string means the same to tokio-postgres.
        let pg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(pg.get_password(), Some(&b"p w'd"[..]));
        assert_eq!(pg.get_application_name(), Some("x"));
        // The last value wins, as in libpq.
        let (_, ssl) = split_dsn("sslmode=require sslmode=disable").unwrap();
        assert_eq!(ssl.sslmode.as_deref(), Some("disable"));
        // Unknown keys reach tokio-postgres, which names them (never their values).
        let e = parse("user=u frobnicate=hunter2", &[]).unwrap_err();
        assert!(e.is_config(), "{e:?}");
        assert!(e.to_string().contains("frobnicate"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // Keys tokio-postgres knows pass through untouched.
        let o = parse("user=u channel_binding=require sslmode=disable", &[]).unwrap();
        assert_eq!(
            o.pg.get_channel_binding(),
            tokio_postgres::config::ChannelBinding::Require
        );
    }

    #[test]
    fn url_query_is_edited() {
        let (rest, ssl) = split_dsn(
            "postgresql://u:p%3Fw@h:5/db?sslmode=require&connect_timeout=3&sslrootcert=%2Ftmp%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p%3Fw@h:5/db?connect_timeout=3");
        assert_eq!(ssl.sslmode.as_deref(), Some("require"));
        assert_eq!(ssl.sslrootcert.as_deref(), Some("/tmp/ca x.pem"));

        let (rest, ssl) = split_dsn("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(ssl.sslmode.as_deref(), Some("disable"));

        // A `?` in the password is not the query string.
        let (rest, ssl) = split_dsn("postgresql://u:pa?ss@h/db?application_name=a").unwrap();
        assert_eq!(rest, "postgresql://u:pa?ss@h/db?application_name=a");
        assert_eq!(ssl, SslParams::default());

        // Encoded keys are recognised.
        let (rest, ssl) = split_dsn("postgresql:///db?ssl%6Dode=disable&host=%2Ftmp").unwrap();
        assert_eq!(rest, "postgresql:///db?host=%2Ftmp");
        assert_eq!(ssl.sslmode.as_deref(), Some("disable"));

        let o = parse(
            "postgresql://u:hunter2@h:6543/db?sslmode=disable&connect_timeout=2",
            &[],
        )
        .unwrap();
        assert_eq!(o.get_ssl_mode(), SslMode::Disable);
        assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(o.pg.get_password(), Some(&b"hunter2"[..]));

        let e = parse("postgresql://u:hunter2@h/db?sslmode=%zz", &[]).unwrap_err();
        assert!(e.is_config() && !e.to_string().contains("hunter2"), "{e}");
        let e = parse("postgresql://u:hunter2@h/db?sslmode=sometimes", &[]).unwrap_err();
        assert!(e.is_config() && !e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn sslmode_from_string_env_and_default() {
        let o = parse("user=u", &[]).unwrap();
        assert_eq!(o.get_ssl_mode(), SslMode::Prefer);
        let o = parse("user=u", &[("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(o.get_ssl_mode(), SslMode::Disable);
        assert_eq!(
            o.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let o = parse("user=u sslmode=allow", &[("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(o.get_ssl_mode(), SslMode::Allow, "the string wins over env");
        let e = parse("user=u", &[("PGSSLMODE", "bogus")]).unwrap_err();
        assert!(e.is_config(), "{e:?}");
        let e = parse("user=u password=hunter2 sslmode=hunter2", &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(format!("{o:?}").contains("sslmode: Allow"), "{o:?}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_tls_feature_only_plain_modes_work() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = parse(&format!("user=u password=hunter2 sslmode={mode}"), &[]).unwrap_err();
            assert!(e.is_config(), "{e:?}");
            assert!(e.to_string().contains("`tls` feature"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        for mode in ["disable", "allow", "prefer"] {
            let o = parse(&format!("user=u sslmode={mode}"), &[]).unwrap();
            assert!(!o.tls.available());
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_resolve_like_libpq() {
        let ca = TempFile::new("ca.pem", TEST_CA_PEM, 0o644);
        let no_home = [("HOME", "/nonexistent-momoko-home")];

        // require: no verification without a root certificate, chain verification with one.
        let o = parse("user=u sslmode=require", &no_home).unwrap();
        assert_eq!(o.tls.verify, crate::tls::Verify::Nothing);
        assert_eq!(
            o.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let o = parse(
            &format!("user=u sslmode=require sslrootcert='{}'", ca.path()),
            &no_home,
        )
        .unwrap();
        assert_eq!(o.tls.verify, crate::tls::Verify::Chain);
        let o = parse(
            "host=h user=u sslmode=verify-full",
            &[("PGSSLROOTCERT", ca.path())],
        )
        .unwrap();
        assert_eq!(o.tls.verify, crate::tls::Verify::Full);
        assert_eq!(o.get_ssl_mode(), SslMode::VerifyFull);
        assert!(format!("{o:?}").contains(ca.path()), "{o:?}");

        // verify-* need roots; ~/.postgresql/root.crt is the fallback.
        let e = parse("user=u sslmode=verify-ca password=hunter2", &no_home).unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains("sslrootcert"),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let home = TempFile::new("root.crt", TEST_CA_PEM, 0o644);
        let home_dir = home.0.parent().unwrap().join("home");
        std::fs::create_dir_all(home_dir.join(".postgresql")).unwrap();
        std::fs::write(home_dir.join(".postgresql/root.crt"), TEST_CA_PEM).unwrap();
        let o = parse(
            "user=u sslmode=verify-ca",
            &[("HOME", home_dir.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(o.tls.verify, crate::tls::Verify::Chain);

        // Files are read now: missing or malformed ones are config errors naming the file.
        let e = parse(
            "user=u sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
            &[],
        )
        .unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let junk = TempFile::new("junk.pem", "not a certificate", 0o644);
        let e = parse(
            &format!("user=u sslmode=verify-ca sslrootcert={}", junk.path()),
            &[],
        )
        .unwrap_err();
        assert!(e.is_config() && e.to_string().contains("junk.pem"), "{e}");

        // sslrootcert=system means verify-full, and refuses weaker modes.
        let e = parse("user=u sslrootcert=system sslmode=require", &[]).unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");

        // Direct TLS needs a mode that requires TLS.
        let e = parse("user=u sslnegotiation=direct", &[]).unwrap_err();
        assert!(e.to_string().contains("sslnegotiation=direct"), "{e}");
        let o = parse("user=u sslnegotiation=direct sslmode=require", &[]).unwrap();
        assert!(o.tls.direct);
        assert_eq!(
            o.pg.get_ssl_negotiation(),
            tokio_postgres::config::SslNegotiation::Direct
        );

        // verify-full checks `host`, never `hostaddr`, and needs one.
        let o = parse(
            &format!(
                "host=db.example hostaddr=127.0.0.1 user=u sslmode=verify-full sslrootcert={}",
                ca.path()
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            o.targets,
            [Target::Tcp {
                host: "127.0.0.1".into(),
                port: 5432,
                tls_name: Some("db.example".into()),
                session_tls: false,
            }]
        );
        let e = parse(
            &format!(
                "hostaddr=127.0.0.1 user=u sslmode=verify-full sslrootcert={}",
                ca.path()
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("hostaddr"), "{e}");

        // Protocol versions.
        let e = parse("user=u ssl_min_protocol_version=TLSv1.1", &[]).unwrap_err();
        assert!(e.is_config(), "{e:?}");
        let e = parse(
            "user=u ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
            &[],
        )
        .unwrap_err();
        assert!(e.is_config(), "{e:?}");
        parse("user=u ssl_min_protocol_version=TLSv1.3", &[]).unwrap();
    }

    #[cfg(all(feature = "tls", unix))]
    #[test]
    fn client_certificates_are_loaded_and_keys_guarded() {
        let cert = TempFile::new("client.crt", TEST_CA_PEM, 0o644);
        let key = TempFile::new("client.key", TEST_KEY_PEM, 0o600);
        let o = parse(
            &format!(
                "user=u sslmode=require sslcert={} sslkey={}",
                cert.path(),
                key.path()
            ),
            &[],
        )
        .unwrap();
        assert!(o.tls.client_cert.is_some());
        let o = parse(
            "user=u sslmode=require",
            &[("PGSSLCERT", cert.path()), ("PGSSLKEY", key.path())],
        )
        .unwrap();
        assert!(o.tls.client_cert.is_some());
        // libpq refuses a key others can read.
        let open_key = TempFile::new("open.key", TEST_KEY_PEM, 0o644);
        let e = parse(
            &format!(
                "user=u sslmode=require sslcert={} sslkey={}",
                cert.path(),
                open_key.path()
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.is_config() && e.to_string().contains("0600"), "{e}");
        // Never a key's bytes in a message.
        let not_key = TempFile::new("not.key", "SECRETKEYMATERIAL", 0o600);
        let e = parse(
            &format!(
                "user=u sslmode=require sslcert={} sslkey={}",
                cert.path(),
                not_key.path()
            ),
            &[],
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRETKEYMATERIAL"), "{e}");
        let encrypted = TempFile::new(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            0o600,
        );
        let e = parse(
            &format!(
                "user=u sslmode=require sslcert={} sslkey={} sslpassword=hunter2",
                cert.path(),
                encrypted.path()
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(&format!("user=u sslcert={}", cert.path()), &[]).unwrap_err();
        assert!(e.to_string().contains("sslkey"), "{e}");
    }

    #[test]
    fn passwords_with_odd_characters_never_show() {
        const PW: &str = r#"p@ss w'rd\ "q" ;&?=%41é"#;
        let escaped = PW.replace('\\', "\\\\").replace('\'', "\\'");
        let o = parse(&format!("host=h user=u password='{escaped}'"), &[]).unwrap();
        assert_eq!(o.pg.get_password(), Some(PW.as_bytes()));
        let d = format!("{o:?}");
        for part in ["p@ss", "w'rd", "\"q\"", "%41é"] {
            assert!(!d.contains(part), "{d}");
        }
        for dsn in [
            format!("host=h port=bad password='{escaped}'"),
            format!("host=h user=u password='{escaped}' sslmode=verify-nothing"),
            format!("host=h user=u password='{escaped}"),
            format!("host=h user=u password='{escaped}' nonsense"),
        ] {
            let e = parse(&dsn, &[]).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                for part in ["p@ss", "w'rd", "%41é"] {
                    assert!(!text.contains(part), "{dsn}: {text}");
                }
            }
        }
    }
}
