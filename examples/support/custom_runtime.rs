//! A hand-made runtime that none of momoko's backends provide, plugged in through
//! [`momoko::Executor`].
//!
//! * Tasks run on a [`futures::executor::ThreadPool`] of two threads.
//! * Timers and sockets come from [`async_io`]: its reactor runs on a thread of its own
//!   (`async-io`), so no executor thread ever blocks on I/O.
//! * Host names are resolved on [`blocking`]'s thread pool, never on an executor thread.
//! * Streams speak `futures-io`; [`tokio_util::compat`] adapts them to the tokio I/O *traits*
//!   that the protocol layer needs (no tokio runtime exists), and [`momoko::TcpSocket`] /
//!   [`momoko::PlainSocket`] make them [`momoko::Socket`]s.
//!
//! Shared by `examples/custom_executor.rs` and `tests/custom_executor.rs` (which runs the whole
//! conformance suite on it) through `#[path]`.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_io::{Async, Timer};
use futures::executor::ThreadPool;
use momoko::{BoxFuture, Executor, PlainSocket, Socket, TcpSocket};
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// Runs momoko on a `futures` thread pool with async-io's reactor and timers.
#[derive(Debug, Clone)]
pub(crate) struct CustomExecutor {
    tasks: ThreadPool,
}

impl CustomExecutor {
    /// The process-wide executor (one thread pool of two threads), as the shared trait object
    /// pools and connections take.
    ///
    /// # Panics
    ///
    /// When the operating system refuses to start the two threads.
    pub(crate) fn shared() -> Arc<dyn Executor> {
        static EXECUTOR: OnceLock<Arc<CustomExecutor>> = OnceLock::new();
        let executor = EXECUTOR.get_or_init(|| {
            #[allow(clippy::expect_used)] // No threads, no runtime: nothing sensible to do.
            let tasks = ThreadPool::builder()
                .pool_size(2)
                .name_prefix("custom-rt-")
                .create()
                .expect("start the executor's two threads");
            Arc::new(CustomExecutor { tasks })
        });
        Arc::clone(executor) as Arc<dyn Executor>
    }
}

impl Executor for CustomExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // The thread pool keeps a task alive (and polls it) until it completes, handle or not.
        self.tasks.spawn_ok(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            Timer::after(duration).await;
        })
    }

    fn connect_tcp<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let addrs = resolve(host, port).await?;
            let mut last_error = None;
            for addr in addrs {
                match Async::<TcpStream>::connect(addr).await {
                    Ok(stream) => {
                        return Ok(Box::new(TcpSocket(stream.compat())) as Box<dyn Socket>)
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} resolved to no address"),
                )
            }))
        })
    }

    fn connect_unix<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            #[cfg(unix)]
            {
                let stream = Async::<std::os::unix::net::UnixStream>::connect(path).await?;
                Ok(Box::new(PlainSocket(stream.compat())) as Box<dyn Socket>)
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix sockets are not supported here",
                ))
            }
        })
    }
}

/// The addresses of `host`, in the resolver's order. An IP literal needs no look-up; a name is
/// resolved with the system resolver (which blocks) on `blocking`'s thread pool.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_owned();
    blocking::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
    .await
}
