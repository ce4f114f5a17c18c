//! Opening a connection like libpq does: host list, per-host timeout, socket options.

use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::NoTls;
use tracing::debug;

use crate::config::{ConnectOptions, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{maybe_timeout, Executor, PlainSocket, SharedExecutor, Socket};

/// A freshly started session: the client half and where it went.
pub(crate) struct Opened {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) target: Target,
}

/// Tries every target in order; returns the first session that starts (and satisfies
/// `target_session_attrs`), or the last error with a summary of all failures.
pub(crate) async fn open(options: &ConnectOptions, executor: &SharedExecutor) -> Result<Opened> {
    let timeout = options.pg.get_connect_timeout().copied();
    let mut failures: Vec<Error> = Vec::new();
    for target in &options.targets {
        let attempt = open_one(options, executor, target);
        let result = match maybe_timeout(&**executor, timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(format!(
                "{target}: connect_timeout of {:?} elapsed",
                timeout.unwrap_or_default()
            ))),
        };
        match result {
            Ok(opened) => return Ok(opened),
            Err(e) => {
                debug!(target: "momoko", %target, error = %e, "connect attempt failed");
                // Authentication problems are not cured by another host of the same cluster, but
                // libpq still tries the next host; so do we.
                failures.push(e);
            }
        }
    }
    Err(summarize(failures))
}

fn summarize(mut failures: Vec<Error>) -> Error {
    match failures.len() {
        0 => Error::config("no host to connect to"),
        1 => failures.remove(0),
        _ => {
            let summary = failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            // Keep the most telling kind: auth beats timeout beats connect.
            let kind = if failures.iter().any(Error::is_auth) {
                ErrorKind::Auth
            } else if failures.iter().all(Error::is_timeout) {
                ErrorKind::Timeout
            } else {
                ErrorKind::Connect
            };
            let last = failures.pop();
            let e = Error::new(kind, format!("every host failed: {summary}"));
            match last {
                Some(last) => e.with_source(last),
                None => e,
            }
        }
    }
}

async fn open_one(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    target: &Target,
) -> Result<Opened> {
    let socket = open_socket(&**executor, target, options).await?;
    let (client, connection) = options
        .pg
        .connect_raw(PlainSocket(socket), NoTls)
        .await
        .map_err(|e| Error::from_pg_connect(e, &target.to_string()))?;
    executor.spawn(Box::pin(async move {
        if let Err(e) = connection.await {
            debug!(target: "momoko", error = %e, "connection ended with an error");
        }
    }));
    match options.pg.get_target_session_attrs() {
        TargetSessionAttrs::Any => {}
        wanted => {
            let rows = client
                .simple_query("SHOW transaction_read_only")
                .await
                .map_err(|e| Error::from_pg_connect(e, &target.to_string()))?;
            let read_only = rows.iter().any(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("on"),
                _ => false,
            });
            let ok = match wanted {
                TargetSessionAttrs::ReadWrite => !read_only,
                TargetSessionAttrs::ReadOnly => read_only,
                _ => true,
            };
            if !ok {
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!("{target}: session does not match target_session_attrs={wanted:?}"),
                ));
            }
        }
    }
    Ok(Opened {
        client,
        target: target.clone(),
    })
}

/// Opens a raw stream to `target` and, for TCP, sets `TCP_NODELAY`, keepalives and
/// `TCP_USER_TIMEOUT`.
pub(crate) async fn open_socket(
    executor: &dyn Executor,
    target: &Target,
    options: &ConnectOptions,
) -> Result<Box<dyn Socket>> {
    match target {
        Target::Tcp { host, port } => {
            let socket = executor.connect_tcp(host, *port).await.map_err(|e| {
                Error::new(ErrorKind::Connect, format!("{target}: {e}")).with_source(e)
            })?;
            configure_tcp(&*socket, options).map_err(|e| {
                Error::new(
                    ErrorKind::Connect,
                    format!("{target}: setting socket options: {e}"),
                )
                .with_source(e)
            })?;
            Ok(socket)
        }
        Target::Unix { path } => executor
            .connect_unix(path)
            .await
            .map_err(|e| Error::new(ErrorKind::Connect, format!("{target}: {e}")).with_source(e)),
    }
}

#[cfg(unix)]
fn configure_tcp(socket: &dyn Socket, options: &ConnectOptions) -> std::io::Result<()> {
    let Some(fd) = socket.tcp_fd() else {
        return Ok(());
    };
    let sock = socket2::SockRef::from(&fd);
    sock.set_tcp_nodelay(true)?;
    if options.pg.get_keepalives() {
        let mut ka = socket2::TcpKeepalive::new().with_time(options.pg.get_keepalives_idle());
        if let Some(interval) = options.pg.get_keepalives_interval() {
            ka = ka.with_interval(interval);
        }
        #[cfg(not(any(target_os = "openbsd", target_os = "redox", target_os = "solaris")))]
        if let Some(retries) = options.pg.get_keepalives_retries() {
            ka = ka.with_retries(retries);
        }
        sock.set_tcp_keepalive(&ka)?;
    }
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    if let Some(t) = options.pg.get_tcp_user_timeout() {
        sock.set_tcp_user_timeout(Some(*t))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn configure_tcp(_socket: &dyn Socket, _options: &ConnectOptions) -> std::io::Result<()> {
    Ok(())
}

/// Sends a cancel request for whatever `client` is running, over a new stream to the same target.
pub(crate) async fn cancel(
    executor: &SharedExecutor,
    options: &ConnectOptions,
    target: &Target,
    token: &tokio_postgres::CancelToken,
) -> Result<()> {
    let socket = open_socket(&**executor, target, options).await?;
    token
        .cancel_query_raw(PlainSocket(socket), NoTls)
        .await
        .map_err(Error::from_pg)
}
