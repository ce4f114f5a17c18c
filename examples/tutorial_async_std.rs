//! Momoko's tutorial as a web app on async-std, with the same routes and pages as
//! `examples/tutorial.rs` (tokio + axum); the route logic is shared (`support/routes.rs`).
//!
//! ```text
//! cargo run --example tutorial_async_std --features async-std
//! curl http://127.0.0.1:8888/          # Results: 1
//! ```
//!
//! HTTP server: hyper 1.x (`http1`), with the `smol-hyper` adapters. tide, async-std's web
//! framework, is unmaintained (and async-std itself is discontinued upstream), so this app uses
//! hyper: maintained, the HTTP implementation axum itself runs on, and tied to no runtime (its
//! `hyper::rt` traits take any I/O and timer). `smol-hyper` implements those traits for
//! `futures-io` streams, which async-std's `TcpStream` is, and for async-io timers, which
//! async-std's own timers are. The glue is shared with the smol app (`support/hyper_app.rs`).
//!
//! Signals: `async-signal` (smol-rs), whose signal stream runs on async-io's reactor, the one
//! async-std uses too.
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
    match async_std::task::block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tutorial_async_std: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let port = routes::port()?;
    let (dsn, _cluster_guard) = routes::database();
    let pool = routes::configure(momoko::async_std::pool(&dsn))
        .connect()
        .await?;
    routes::setup(&pool).await?;

    // Catch the signals before announcing the address, so none is missed.
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let listener = async_std::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let connections = Connections::new();
    loop {
        match future::select(pin!(listener.accept()), signals.next()).await {
            Either::Left((Ok((stream, _peer)), _)) => {
                // Dropping the handle detaches the task.
                drop(async_std::task::spawn(
                    connections.serve(stream, pool.clone()),
                ));
            }
            Either::Left((Err(e), _)) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("accept failed: {e}");
                async_std::task::sleep(Duration::from_millis(100)).await;
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
