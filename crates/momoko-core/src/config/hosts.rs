//! The places a connect tries: host, `hostaddr` and port lists, with libpq's defaults.

use std::fmt;
use std::path::PathBuf;

use tokio_postgres::config::Host;

use crate::error::{Error, Result};

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

/// Default places libpq looks when no host is given.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

pub(super) fn targets(pg: &tokio_postgres::Config) -> Result<Vec<Target>> {
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
pub(super) fn check_verify_full_names(targets: &[Target]) -> Result<()> {
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
