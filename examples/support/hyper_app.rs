//! The HTTP glue shared by the hyper-based tutorial apps (`tutorial_async_std.rs`,
//! `tutorial_smol.rs`): hyper's HTTP/1.1 server on any `futures-io` stream, the route table, and
//! a graceful shutdown. Only accepting connections, spawning tasks and catching signals differ
//! per runtime.
//!
//! hyper is runtime-agnostic through its `hyper::rt` traits. `smol-hyper` implements them for
//! `futures-io` streams ([`FuturesIo`]) and async-io timers ([`SmolTimer`]); both work on
//! async-std too, whose sockets and timers are async-io's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either, FutureExt, Shared};
use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use momoko::Pool;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::routes;

/// How long a graceful shutdown waits for requests in flight before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The open HTTP connections: serves each one and shuts them all down gracefully.
#[derive(Debug)]
pub(crate) struct Connections {
    /// Resolves (with an error, which is as good) when the shutdown begins.
    stopping: Shared<oneshot::Receiver<()>>,
    stop: oneshot::Sender<()>,
    /// Every connection task holds a clone; the receiver sees the end once all are gone.
    alive: mpsc::Sender<Infallible>,
    all_closed: mpsc::Receiver<Infallible>,
}

impl Connections {
    /// No connections yet.
    pub(crate) fn new() -> Connections {
        let (stop, stopping) = oneshot::channel();
        let (alive, all_closed) = mpsc::channel(0);
        Connections {
            stopping: stopping.shared(),
            stop,
            alive,
            all_closed,
        }
    }

    /// The task serving one accepted connection with hyper's HTTP/1.1 server, keep-alive
    /// included: spawn it on the runtime. It ends when the client closes the connection, or,
    /// after [`shutdown`](Connections::shutdown) began, once the request in flight is answered.
    pub(crate) fn serve<S>(&self, stream: S, pool: Pool) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let stopping = self.stopping.clone();
        let alive = self.alive.clone();
        async move {
            let _alive = alive;
            let service = service_fn(move |request| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(respond(&pool, &request).await) }
            });
            let mut http = http1::Builder::new();
            // The timer makes hyper's 30-second limit for reading request headers effective.
            http.timer(SmolTimer::new());
            let mut connection = pin!(http.serve_connection(FuturesIo::new(stream), service));
            let result = match future::select(connection.as_mut(), stopping).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => {
                    // Stop keep-alive: an idle connection closes now, a busy one after its
                    // response.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                eprintln!("connection error: {e}");
            }
        }
    }

    /// Shuts every connection down gracefully: idle ones close at once, requests in flight are
    /// answered first (for at most 10 seconds). Resolves when all are closed or the time is up.
    pub(crate) async fn shutdown(self) {
        let Connections {
            stop,
            alive,
            mut all_closed,
            ..
        } = self;
        // The receiver may already be gone with every connection: nothing to stop then.
        let _ = stop.send(());
        drop(alive);
        let drained = pin!(all_closed.next());
        let deadline = pin!(async_io::Timer::after(SHUTDOWN_GRACE));
        if let Either::Right(_) = future::select(drained, deadline).await {
            eprintln!("gave up waiting for requests in flight after {SHUTDOWN_GRACE:?}");
        }
    }
}

/// Answers one request: `GET` (or `HEAD`) of a route of `routes`, `404` for other paths, `405`
/// for other methods, `500` with the error's `Display` when the database part failed.
async fn respond(pool: &Pool, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return page(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into());
    }
    let result = match request.uri().path() {
        "/" => routes::index(pool).await,
        "/parallel" => routes::parallel(pool).await,
        "/cursor" => routes::server_side_cursor(pool).await,
        "/transaction" => routes::transaction(pool).await,
        "/status" => routes::status(pool).await,
        "/notify" => routes::notify(pool).await,
        "/copy" => routes::copy(pool).await,
        _ => return page(StatusCode::NOT_FOUND, "Not Found".into()),
    };
    match result {
        Ok(body) => page(StatusCode::OK, body),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A page: `text/html` for a success (the tutorial's handlers write HTML fragments such as
/// `<br>`), `text/plain` for an error (its message is not HTML).
fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let content_type = if status.is_success() {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
