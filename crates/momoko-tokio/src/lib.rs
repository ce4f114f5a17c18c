//! The tokio backend of momoko.
//!
//! [`TokioExecutor`] implements [`momoko_core::Executor`] with `tokio::spawn`, `tokio::time` and
//! `tokio::net`. It must be used inside a tokio runtime (with the time and I/O drivers enabled,
//! as `#[tokio::main]` does).
//!
//! ```no_run
//! # async fn demo() -> momoko_core::Result<()> {
//! let conn = momoko_tokio::connect("host=localhost dbname=app user=app").await?;
//! let mut cursor = conn.execute("SELECT 1", &[]).await?;
//! assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(1));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use momoko_core::{BoxFuture, Connection, Executor, PlainSocket, Socket, TcpSocket};

/// Runs momoko on the current tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct TokioExecutor;

impl TokioExecutor {
    /// The executor.
    pub fn new() -> TokioExecutor {
        TokioExecutor
    }

    /// The executor as the shared trait object pools and connections take.
    pub fn shared() -> Arc<dyn Executor> {
        Arc::new(TokioExecutor)
    }
}

impl Executor for TokioExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Dropping the JoinHandle detaches the task.
        drop(tokio::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn connect_tcp<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host, port)).await?;
            Ok(Box::new(TcpSocket(stream)) as Box<dyn Socket>)
        })
    }

    fn connect_unix<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            #[cfg(unix)]
            {
                let stream = tokio::net::UnixStream::connect(path).await?;
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

/// Connects a standalone [`Connection`] on the current tokio runtime.
///
/// # Errors
///
/// As [`Connection::connect`].
pub async fn connect(dsn: &str) -> momoko_core::Result<Connection> {
    Connection::connect(dsn, TokioExecutor::shared()).await
}
