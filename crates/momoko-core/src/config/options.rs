//! [`ConnectOptions`]: a parsed connection string plus the environment's settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::hosts::{check_verify_full_names, targets, Target};
use crate::config::session::{LoadBalanceHosts, TargetSessionAttrs};
use crate::config::{dsn::split_dsn, env::apply_env};
use crate::error::{Error, Result};
use crate::tls::{SslMode, TlsSettings, Verify};

/// Default number of prepared statements each connection keeps.
pub(crate) const DEFAULT_STATEMENT_CACHE: usize = 256;

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
/// `tcp_user_timeout`, `target_session_attrs` (all six values of libpq 14+: see
/// [`TargetSessionAttrs`]) and `load_balance_hosts` (`disable`, `random`) work as in libpq.
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
    pub(crate) target_session_attrs: TargetSessionAttrs,
    pub(crate) load_balance_hosts: LoadBalanceHosts,
    pub(crate) transaction_pooler: bool,
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
        let split = split_dsn(dsn)?;
        let (rest, ssl) = (split.rest, split.ssl);
        let (target_session_attrs, load_balance_hosts) = split.session.resolve(&env)?;
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
            target_session_attrs,
            load_balance_hosts,
            transaction_pooler: false,
        })
    }

    /// Limits each connection attempt (per host) to `timeout`. Defaults to the `connect_timeout`
    /// of the connection string, or no limit.
    pub fn connect_timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.pg.connect_timeout(timeout);
        self
    }

    /// The same settings with `password` (from a credential provider).
    pub(crate) fn password(mut self, password: &str) -> ConnectOptions {
        self.pg.password(password);
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

    /// What the server of a session must be (libpq's `target_session_attrs`; see
    /// [`TargetSessionAttrs`]). Defaults to the connection string's, else
    /// `PGTARGETSESSIONATTRS`, else `any`.
    pub fn target_session_attrs(mut self, attrs: TargetSessionAttrs) -> ConnectOptions {
        self.target_session_attrs = attrs;
        self
    }

    /// The `target_session_attrs` in force.
    pub fn get_target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// Whether hosts are tried in a random order, drawn anew per connection (libpq's
    /// `load_balance_hosts`; see [`LoadBalanceHosts`]). Defaults to the connection string's,
    /// else `PGLOADBALANCEHOSTS`, else `disable` (in the order given).
    pub fn load_balance_hosts(mut self, mode: LoadBalanceHosts) -> ConnectOptions {
        self.load_balance_hosts = mode;
        self
    }

    /// The `load_balance_hosts` in force.
    pub fn get_load_balance_hosts(&self) -> LoadBalanceHosts {
        self.load_balance_hosts
    }

    /// Whether the connection goes through a pooler in transaction mode that does not track
    /// prepared statements (pgbouncer before 1.21, or with `max_prepared_statements = 0`), so
    /// that consecutive transactions of one client may run on different server sessions.
    ///
    /// Then nothing relies on session state: statements are unnamed and run in one round trip
    /// each (Parse, Bind, Execute and Sync sent together), never prepared or cached; parameter
    /// types come from the Rust values (a value of a type that cannot be told is a clear
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) error); `mogrify` never prepares;
    /// and a pool refuses `setsession` (settings would stay on one server session only).
    /// Row streams, COPY and batches (which need prepared statements) and listeners (which
    /// need a session) are refused with [`ErrorKind::Usage`](crate::ErrorKind::Usage).
    /// Server-side cursors, session advisory locks and `SET` (outside a transaction) do not
    /// survive a transaction's end there; use them only inside one transaction.
    /// A cursor's `description()` then comes from its rows (empty without rows). Defaults to
    /// false.
    pub fn transaction_pooler(mut self, on: bool) -> ConnectOptions {
        self.transaction_pooler = on;
        self
    }

    /// Whether [`transaction_pooler`](ConnectOptions::transaction_pooler) mode is on.
    pub fn is_transaction_pooler(&self) -> bool {
        self.transaction_pooler
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
            .field("target_session_attrs", &self.target_session_attrs)
            .field("load_balance_hosts", &self.load_balance_hosts)
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
            .field("transaction_pooler", &self.transaction_pooler)
            .finish()
    }
}
