//! Momoko's tutorial (`momoko-tutorial.rst`) as a real web app: tokio and axum, one route per
//! section of the tutorial. The same app runs on async-std (`tutorial_async_std.rs`) and smol
//! (`tutorial_smol.rs`); the route logic is shared (`support/routes.rs`), only the HTTP glue
//! differs.
//!
//! ```text
//! cargo run --example tutorial
//! curl http://127.0.0.1:8888/              # Results: 1
//! curl http://127.0.0.1:8888/parallel      # Q1: [(1,)]<br>Q2: [(2,)]<br>Q3: [(3,)]<br>
//! curl http://127.0.0.1:8888/cursor        # Read 1000 rows in 100 chunks of 10; sum 500500
//! curl http://127.0.0.1:8888/transaction   # Transaction: inserted 2 rows; tutorial_visits has 2 rows
//! curl http://127.0.0.1:8888/status        # free 1, busy 0, pending 0, dead 0, waiting 0, total 1 (size 1, max_size 4)
//! curl http://127.0.0.1:8888/notify        # Notified on tutorial_channel: hello from /notify
//! curl http://127.0.0.1:8888/copy          # Copied 1000 rows in; COPY out read sum 500500
//! ```
//!
//! HTTP server: axum, the tokio project's web framework (maintained, built on hyper).
//!
//! `--port N` or `PORT` (default 8888; 0 picks a free port) sets the port on 127.0.0.1;
//! `DATABASE_URL` the database (without it a throw-away PostgreSQL is started). SIGINT (Ctrl-C)
//! and SIGTERM stop accepting, finish the requests in flight, close the pool and exit 0.

#[path = "support/routes.rs"]
mod routes;

use std::error::Error;
use std::process::ExitCode;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use momoko::Pool;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tutorial: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let port = routes::port()?;
    let (dsn, _cluster_guard) = routes::database();
    let pool = routes::configure(momoko::tokio::pool(&dsn))
        .connect()
        .await?;
    routes::setup(&pool).await?;

    let app = Router::new()
        .route(
            "/",
            get(|State(pool): State<Pool>| async move { page(routes::index(&pool).await) }),
        )
        .route(
            "/parallel",
            get(|State(pool): State<Pool>| async move { page(routes::parallel(&pool).await) }),
        )
        .route(
            "/cursor",
            get(|State(pool): State<Pool>| async move {
                page(routes::server_side_cursor(&pool).await)
            }),
        )
        .route(
            "/transaction",
            get(|State(pool): State<Pool>| async move { page(routes::transaction(&pool).await) }),
        )
        .route(
            "/status",
            get(|State(pool): State<Pool>| async move { page(routes::status(&pool).await) }),
        )
        .route(
            "/notify",
            get(|State(pool): State<Pool>| async move { page(routes::notify(&pool).await) }),
        )
        .route(
            "/copy",
            get(|State(pool): State<Pool>| async move { page(routes::copy(&pool).await) }),
        )
        .with_state(pool.clone());

    // Catch the signals before announcing the address, so none is missed.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    // On a signal: stop accepting, let requests in flight finish, close idle connections.
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    pool.close().await;
    eprintln!("pool closed; bye");
    Ok(())
}

/// A route's outcome as a response: the page as `text/html`, or `500` with the error's message.
fn page(result: momoko::Result<String>) -> Response {
    match result {
        Ok(body) => Html(body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!("{name}: shutting down");
    })
}

/// Resolves on the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C: shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    })
}
