//! The smol backend of momoko.
//!
//! [`SmolExecutor`] implements [`momoko_core::Executor`] with smol: tasks on smol's global
//! executor, `smol::Timer`, and `smol::net` sockets registered with smol's reactor (async-io)
//! and driven through tokio's I/O traits by a small adapter (no `tokio_util::compat`; see
//! `momoko_core::AsyncIoStream` for why). No tokio runtime is started or needed.
//!
//! ```no_run
//! # async fn demo() -> momoko_core::Result<()> {
//! let conn = momoko_smol::connect("host=localhost dbname=app user=app").await?;
//! let mut cursor = conn.execute("SELECT 1", &[]).await?;
//! assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(1));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use momoko_core::{AsyncIoStream, BoxFuture, Connection, Executor, PlainSocket, Socket, TcpSocket};

/// Runs momoko on smol's global executor.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct SmolExecutor;

impl SmolExecutor {
    /// The executor.
    pub fn new() -> SmolExecutor {
        SmolExecutor
    }

    /// The executor as the shared trait object pools and connections take.
    pub fn shared() -> Arc<dyn Executor> {
        Arc::new(SmolExecutor)
    }
}

impl Executor for SmolExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // A smol `Task` cancels on drop: detach it so it runs to completion.
        smol::spawn(task).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn connect_tcp<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            let stream = smol::net::TcpStream::connect((host, port)).await?;
            let stream = AsyncIoStream::new(stream.into());
            Ok(Box::new(TcpSocket(stream)) as Box<dyn Socket>)
        })
    }

    fn connect_unix<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
        Box::pin(async move {
            #[cfg(unix)]
            {
                let stream = smol::net::unix::UnixStream::connect(path).await?;
                let stream = AsyncIoStream::new(stream.into());
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

/// Connects a standalone [`Connection`] on smol.
///
/// # Errors
///
/// As [`Connection::connect`].
pub async fn connect(dsn: &str) -> momoko_core::Result<Connection> {
    Connection::connect(dsn, SmolExecutor::shared()).await
}
