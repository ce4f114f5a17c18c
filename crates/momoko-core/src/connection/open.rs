//! Starting a session on one host like libpq does: the socket and its options, TLS as `sslmode`
//! asks (with libpq's retries for `allow` and `prefer`), the session's I/O task; and cancel
//! requests. Which host is tried is `select.rs`'s job.

use std::sync::Arc;
use std::time::Duration;

use std::borrow::Cow;
use std::error::Error as StdError;

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{TlsConnect, TlsStream};
use tokio_postgres::NoTls;
use tracing::debug;

use crate::config::{ConnectOptions, Target};
#[cfg(feature = "tls")]
use crate::connection::tls_tap::TlsTap;
use crate::connection::wire::{Observed, Wire};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Executor, SharedExecutor, Socket};
use crate::tls::{SslMode, TlsSettings};

/// A freshly started session: the client half, the guard of its I/O task, and where it went.
pub(crate) struct Opened {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) driver: DriverGuard,
    pub(crate) wire: Arc<Wire>,
    pub(crate) target: Target,
}

/// A started session before its checks: the client and the guard of its I/O task.
pub(crate) struct Session {
    pub(super) client: tokio_postgres::Client,
    pub(super) driver: DriverGuard,
    pub(super) wire: Arc<Wire>,
}

/// How long a session's I/O task may go on after its client is gone, to say goodbye to the
/// server (`Terminate`) and finish answers still under way. After that the task and its socket
/// are dropped, even when the server never answers (a black-holed network); otherwise such a
/// socket would stay open until TCP keepalive gives up, hours later.
const DRIVER_GRACE: Duration = Duration::from_secs(1);

/// Held by the connection; dropping it starts the I/O task's grace period.
pub(crate) struct DriverGuard {
    _stop: futures_channel::oneshot::Sender<()>,
}

/// One way of starting a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// No TLS.
    Plain,
    /// TLS if the server accepts the SSLRequest, else plain (`prefer`).
    TlsIfOffered,
    /// TLS or fail.
    TlsRequired,
}

impl Step {
    fn pg_mode(self) -> PgSslMode {
        match self {
            Step::Plain => PgSslMode::Disable,
            Step::TlsIfOffered => PgSslMode::Prefer,
            Step::TlsRequired => PgSslMode::Require,
        }
    }
}

/// The attempts `sslmode` makes on `target`, in order (libpq's):
///
/// * Unix sockets never use TLS, whatever the mode.
/// * `allow`: plain; if the server rejects it, TLS.
/// * `prefer`: TLS if offered; if the TLS handshake fails or the server rejects the session once
///   TLS is in use, plain.
fn plan(tls: &TlsSettings, target: &Target) -> &'static [Step] {
    if matches!(target, Target::Unix { .. }) || !tls.available() {
        return &[Step::Plain];
    }
    match tls.mode {
        SslMode::Disable => &[Step::Plain],
        SslMode::Allow => &[Step::Plain, Step::TlsRequired],
        SslMode::Prefer => &[Step::TlsIfOffered, Step::Plain],
        _ => &[Step::TlsRequired],
    }
}

/// A failed attempt, and whether the next step of the plan may be tried.
struct Failure {
    error: Error,
    /// What went wrong, without the target and kind (for "before that" notes).
    detail: String,
    retry: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            detail: error.to_string(),
            error,
            retry: false,
        }
    }
}

/// Opens a stream and starts a session on it, trying the steps of [`plan`]; also says whether the
/// session runs over TLS. When a retry fails too, its error says what the first attempt ran into
/// (as libpq does).
pub(super) async fn start_session(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    target: &Target,
) -> Result<(Session, bool)> {
    let steps = plan(&options.tls, target);
    let mut earlier: Option<(Step, String)> = None;
    for (i, step) in steps.iter().enumerate() {
        match attempt(options, executor, target, *step).await {
            Ok(started) => return Ok(started),
            Err(failure) => {
                let more = i + 1 < steps.len();
                if !(more && failure.retry) {
                    return Err(match earlier {
                        None => failure.error,
                        Some((before, detail)) => {
                            let how = if before == Step::Plain {
                                "without TLS"
                            } else {
                                "with TLS"
                            };
                            Error::new(
                                failure.error.kind(),
                                format!(
                                    "{target}: {}; before that, {how}: {detail}",
                                    failure.detail
                                ),
                            )
                            .with_source(failure.error)
                        }
                    });
                }
                debug!(
                    target: "momoko",
                    %target,
                    sslmode = %options.tls.mode,
                    error = %failure.error,
                    "connect attempt failed; retrying {}",
                    if *step == Step::Plain { "with TLS" } else { "without TLS" },
                );
                earlier = Some((*step, failure.detail));
            }
        }
    }
    Err(Error::config("no connect attempt was made"))
}

async fn attempt(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    target: &Target,
    step: Step,
) -> std::result::Result<(Session, bool), Failure> {
    let socket = open_socket(&**executor, target, options).await?;
    let mut pg = Cow::Borrowed(&options.pg);
    if pg.get_ssl_mode() != step.pg_mode() {
        pg.to_mut().ssl_mode(step.pg_mode());
    }
    if step == Step::Plain {
        return match start(&pg, socket, NoTls, executor).await {
            Ok(client) => Ok((client, false)),
            Err(e) => {
                // `allow`: the server refused the plain session; TLS may be accepted.
                let retry = e.as_db_error().is_some();
                Err(failure(e, target, &options.tls, retry))
            }
        };
    }
    #[cfg(feature = "tls")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let (config, name) = tls_parts(options, target)?;
        let used = Arc::new(AtomicBool::new(false));
        let connector = crate::tls::Connector::new(config, name, Arc::clone(&used));
        match start(&pg, socket, Tls(connector), executor).await {
            // Under `prefer` the server may have declined TLS: then no handshake happened.
            Ok(client) => Ok((client, used.load(Ordering::SeqCst))),
            Err(e) => {
                // `prefer`: TLS was in use and failed (handshake or server refusal): plain may
                // work.
                let retry = used.load(Ordering::SeqCst)
                    && (e.as_db_error().is_some() || is_handshake_error(&e));
                Err(failure(e, target, &options.tls, retry))
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    {
        drop((pg, socket));
        Err(
            Error::config("TLS requested but momoko-core was built without the `tls` feature")
                .into(),
        )
    }
}

/// The rustls configuration and the server name for a TLS session to `target`.
#[cfg(feature = "tls")]
fn tls_parts(
    options: &ConnectOptions,
    target: &Target,
) -> Result<(
    std::sync::Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
)> {
    let config = options.tls.client_config.clone().ok_or_else(|| {
        Error::config("TLS requested but no TLS configuration was built (sslmode=disable?)")
    })?;
    let name = match target {
        Target::Tcp { host, tls_name, .. } => {
            crate::tls::server_name(tls_name.as_deref(), host).map_err(Error::config)?
        }
        Target::Unix { .. } => return Err(Error::config("TLS is not used on Unix sockets")),
    };
    Ok((config, name))
}

#[cfg(feature = "tls")]
fn is_handshake_error(e: &tokio_postgres::Error) -> bool {
    let mut cur = e.source();
    while let Some(s) = cur {
        if s.is::<crate::tls::HandshakeError>() {
            return true;
        }
        cur = s.source();
    }
    false
}

/// The stream a session runs on before TLS. A named type without lifetimes (rather than
/// `PlainSocket<Box<dyn Socket>>`) lets rustc prove the futures `Send` for every connector.
struct RawStream(Box<dyn Socket>);

crate::executor::forward_io!([] RawStream);

/// How a session's TLS connector is observed: not at all without TLS (the raw stream is the
/// plaintext), or through [`TlsTap`].
trait ObservedTls {
    type Connector: TlsConnect<Observed<RawStream>, Stream = Self::Stream> + Send;
    type Stream: TlsStream + Unpin + Send + 'static;
    fn observed(self, wire: &Arc<Wire>) -> Self::Connector;
}

impl ObservedTls for NoTls {
    type Connector = NoTls;
    type Stream = tokio_postgres::tls::NoTlsStream;
    fn observed(self, _: &Arc<Wire>) -> NoTls {
        self
    }
}

/// A TLS connector to observe.
#[cfg(feature = "tls")]
struct Tls<C>(C);

#[cfg(feature = "tls")]
impl<C> ObservedTls for Tls<C>
where
    C: TlsConnect<Observed<RawStream>> + Send,
    C::Future: Send + 'static,
    C::Stream: TlsStream + Unpin + Send + 'static,
{
    type Connector = TlsTap<C>;
    type Stream = Observed<C::Stream>;
    fn observed(self, wire: &Arc<Wire>) -> TlsTap<C> {
        TlsTap::new(self.0, Arc::clone(wire))
    }
}

/// Starts the protocol on `socket` with `tls` and spawns the connection's I/O task.
async fn start<T>(
    pg: &tokio_postgres::Config,
    socket: Box<dyn Socket>,
    tls: T,
    executor: &SharedExecutor,
) -> std::result::Result<Session, tokio_postgres::Error>
where
    T: ObservedTls,
{
    // The session's state is read off its byte stream (see `wire`).
    let wire = Wire::new();
    let stream = Observed::raw(RawStream(socket), Arc::clone(&wire));
    let (client, mut connection) = pg.connect_raw(stream, tls.observed(&wire)).await?;
    let (stop, stopped) = futures_channel::oneshot::channel::<()>();
    let timer = Arc::clone(executor);
    let messages = Arc::clone(&wire);
    executor.spawn(Box::pin(async move {
        // The guard is dropped with the client: allow a grace period, then drop the task.
        let retired = async move {
            let _ = stopped.await;
            timer.sleep(DRIVER_GRACE).await;
        };
        // The session's I/O, handing each notification to its listener, if any.
        let driven = std::future::poll_fn(|cx| drive(&mut connection, &messages, cx));
        let outcome = futures_util::future::select(Box::pin(driven), Box::pin(retired)).await;
        messages.notifications.end();
        match outcome {
            futures_util::future::Either::Left((Err(e), _)) => {
                debug!(target: "momoko", error = %e, "connection ended with an error");
            }
            futures_util::future::Either::Left((Ok(()), _)) => {}
            futures_util::future::Either::Right(((), _)) => {
                debug!(target: "momoko", "connection task stopped after its client was dropped");
            }
        }
    }));
    Ok(Session {
        client,
        driver: DriverGuard { _stop: stop },
        wire,
    })
}

/// Drives a session's I/O until it ends; notifications go to the session's listener, notices to
/// the log.
fn drive<S, T>(
    connection: &mut tokio_postgres::Connection<S, T>,
    wire: &Wire,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::result::Result<(), tokio_postgres::Error>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::task::Poll;
    use tokio_postgres::AsyncMessage;
    loop {
        match connection.poll_message(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => wire.notifications.deliver(n),
            Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                debug!(target: "momoko", severity = notice.severity(), "{}", notice.message());
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Wraps an error from starting a session. Server errors keep their SQLSTATE (auth errors are
/// [`ErrorKind::Auth`]); for the others the causes are spelled out (tokio-postgres' own message
/// is only "error performing TLS handshake"), with the TLS settings for TLS failures.
#[cfg(feature = "tls")]
fn connect_error(e: tokio_postgres::Error, target: &Target, tls: &TlsSettings) -> Error {
    failure(e, target, tls, false).error
}

fn failure(e: tokio_postgres::Error, target: &Target, tls: &TlsSettings, retry: bool) -> Failure {
    if let Some(db) = e.as_db_error() {
        let detail = format!("{}: {}", db.severity(), db.message());
        return Failure {
            detail,
            error: Error::from_pg_connect(e, &target.to_string()),
            retry,
        };
    }
    let mut detail = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        #[cfg(feature = "tls")]
        if s.is::<crate::tls::HandshakeError>() {
            // It already says what its cause says, better.
            break;
        }
        cur = s.source();
    }
    if e.to_string().contains("TLS") {
        detail.push_str(&format!(" ({})", tls.describe()));
    }
    Failure {
        error: Error::new(ErrorKind::Connect, format!("{target}: {detail}")).with_source(e),
        detail,
        retry,
    }
}

/// Opens a raw stream to `target` and, for TCP, sets `TCP_NODELAY`, keepalives and
/// `TCP_USER_TIMEOUT`.
pub(crate) async fn open_socket(
    executor: &dyn Executor,
    target: &Target,
    options: &ConnectOptions,
) -> Result<Box<dyn Socket>> {
    match target {
        Target::Tcp { host, port, .. } => {
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

/// Sends a cancel request for whatever `client` is running, over a new stream to the same target,
/// over TLS exactly when the session runs over TLS (so a server that declined TLS under `prefer`
/// is not asked again, and a silent one cannot hold the request on an SSLRequest).
pub(crate) async fn cancel(
    executor: &SharedExecutor,
    options: &ConnectOptions,
    target: &Target,
    token: &tokio_postgres::CancelToken,
) -> Result<()> {
    let socket = open_socket(&**executor, target, options).await?;
    #[cfg(feature = "tls")]
    if let Target::Tcp {
        session_tls: true, ..
    } = target
    {
        let (config, name) = tls_parts(options, target)?;
        let used = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connector = crate::tls::Connector::new(config, name, used);
        return token
            .cancel_query_raw(RawStream(socket), connector)
            .await
            .map_err(|e| connect_error(e, target, &options.tls));
    }
    token
        .cancel_query_raw(RawStream(socket), NoTls)
        .await
        .map_err(Error::from_pg)
}
