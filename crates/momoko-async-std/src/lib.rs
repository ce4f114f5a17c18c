//! The async-std backend of momoko.
//!
//! [`AsyncStdExecutor`] implements [`momoko_core::Executor`] with async-std's tasks, timers and
//! sockets. No tokio runtime is started or needed: tokio-postgres only uses tokio's I/O *traits*,
//! and async-std's sockets (registered with async-std's reactor, async-io) are driven through
//! them by a small adapter (no `tokio_util::compat`; see `momoko_core::AsyncIoStream` for why).
//!
//! async-std is discontinued upstream (its maintainers recommend smol; see RUSTSEC-2025-0052).
//! This backend stays for applications that still run on it; new applications should prefer
//! `momoko-smol`.
//!
//! ```no_run
//! # async fn demo() -> momoko_core::Result<()> {
//! let conn = momoko_async_std::connect("host=localhost dbname=app user=app").await?;
//! let mut cursor = conn.execute("SELECT 1", &[]).await?;
//! assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(1));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use momoko_core::{AsyncIoStream, BoxFuture, Connection, Executor, PlainSocket, Socket, TcpSocket};

/// Runs momoko on async-std.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AsyncStdExecutor;

impl AsyncStdExecutor {
    /// The executor.
    pub fn new() -> AsyncStdExecutor {
        AsyncStdExecutor
    }

    /// The executor as the shared trait object pools and connections take.
    pub fn shared() -> Arc<dyn Executor> {
        Arc::new(AsyncStdExecutor)
    }
}

impl Executor for AsyncStdExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Dropping async-std's JoinHandle detaches the task.
        drop(async_std::task::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }

    fn connect_tcp<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let stream = async_std::net::TcpStream::connect((host, port)).await?;
            // Out of async-std's wrapper and back into the same reactor (async-io) as a bare
            // `Async` for the adapter.
            let stream = Async::new(std::net::TcpStream::try_from(stream)?)?;
            let stream = AsyncIoStream::new(Arc::new(stream));
            Ok(Box::new(TcpSocket(stream)) as Box<dyn Socket>)
        })
    }

    fn connect_unix<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            #[cfg(unix)]
            {
                let stream = async_std::os::unix::net::UnixStream::connect(path).await?;
                let stream = std::os::unix::net::UnixStream::try_from(stream)?;
                let stream = AsyncIoStream::new(Arc::new(Async::new(stream)?));
                Ok(Box::new(PlainSocket(stream)) as Box<dyn Socket>)
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

/// Connects a standalone [`Connection`] on async-std.
///
/// # Errors
///
/// As [`Connection::connect`].
pub async fn connect(dsn: &str) -> momoko_core::Result<Connection> {
    Connection::connect(dsn, AsyncStdExecutor::shared()).await
}
