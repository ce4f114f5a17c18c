//! Momoko's tutorial as a web app on smol, with the same routes and pages as
//! `examples/tutorial.rs` (tokio + axum); the route logic is shared (`support/routes.rs`).
//!
//! ```text
//! cargo run --example tutorial_smol --features smol
//! curl http://127.0.0.1:8888/          # Results: 1
//! ```
//!
//! HTTP server: hyper 1.x (`http1`), with the `smol-hyper` adapters. smol has no web framework of
//! its own; hyper is the maintained HTTP implementation that axum itself runs on, it needs no
//! particular runtime (its `hyper::rt` traits take any I/O and timer), and `smol-hyper`, by a smol
//! maintainer, implements those traits for smol's `futures-io` streams and async-io timers. The
//! glue is shared with the async-std app (`support/hyper_app.rs`).
//!
//! Signals: `async-signal` (smol-rs), whose signal stream runs on smol's own reactor.
//!
//! `--port N` or `PORT` (default 8888; 0 picks a free port) sets the port on 127.0.0.1;
//! `DATABASE_URL` the database (without it a throw-away PostgreSQL is started). SIGINT (Ctrl-C)
//! and SIGTERM stop accepting, finish the requests in flight, close the pool and exit 0.

#[path = "support/hyper_app.rs"]
mod hyper_app;
#[path = "support/routes.rs"]
mod routes;

use std::error::Error;
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures::future::{self, Either};
use futures::StreamExt;
use hyper_app::Connections;

fn main() -> ExitCode {
    match smol::block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tutorial_smol: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let port = routes::port()?;
    let (dsn, _cluster_guard) = routes::database();
    let pool = routes::configure(momoko::smol::pool(&dsn))
        .connect()
        .await?;
    routes::setup(&pool).await?;

    // Catch the signals before announcing the address, so none is missed.
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let listener = smol::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let connections = Connections::new();
    loop {
        match future::select(pin!(listener.accept()), signals.next()).await {
            Either::Left((Ok((stream, _peer)), _)) => {
                smol::spawn(connections.serve(stream, pool.clone())).detach();
            }
            Either::Left((Err(e), _)) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
            Either::Right((signal, _)) => {
                let name = match signal {
                    Some(Ok(Signal::Int)) => "SIGINT",
                    Some(Ok(Signal::Term)) => "SIGTERM",
                    _ => "the signal stream failed",
                };
                eprintln!("{name}: shutting down");
                break;
            }
        }
    }
    drop(listener); // Stop accepting.
    connections.shutdown().await;
    pool.close().await;
    eprintln!("pool closed; bye");
    Ok(())
}
