//! The runtime seam: everything momoko needs from an async runtime.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// What momoko needs from an async runtime: spawn a detached task, sleep, read the clock, and open
/// TCP and Unix-socket streams.
///
/// This is the whole difference between runtimes. The backend crates (`momoko-tokio`,
/// `momoko-async-std`, …) implement it in a few dozen lines; you can implement it for any other
/// runtime. The trait is object-safe: pools and connections hold an `Arc<dyn Executor>` and carry no
/// runtime type parameter.
///
/// # Contract
///
/// * [`spawn`](Executor::spawn) runs the task to completion in the background even though nobody
///   keeps a handle to it (fire and forget). Connection I/O tasks and the pool's maintenance task
///   run this way, so the executor must keep polling them while the application runs.
/// * [`sleep`](Executor::sleep) completes once `duration` has elapsed; dropping it early is fine.
/// * Futures returned by the connect methods resolve to a connected, non-blocking stream. They must
///   never block the calling thread (resolve host names off the executor threads).
///
/// # Example
///
/// A hand-made executor on a `futures` thread pool, with I/O from a tokio-free reactor, looks like
/// this (the I/O parts are left out here; see `examples/custom_executor.rs` for a complete one):
///
/// ```no_run
/// use std::{io, path::Path, time::Duration};
/// use futures_util::future::BoxFuture;
/// use momoko_core::{Executor, Socket};
///
/// #[derive(Debug)]
/// struct MyRuntime { pool: futures::executor::ThreadPool }
///
/// impl Executor for MyRuntime {
///     fn spawn(&self, task: BoxFuture<'static, ()>) {
///         self.pool.spawn_ok(task);
///     }
///     fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
///         # let _ = duration;
///         unimplemented!("a timer from your runtime")
///     }
///     fn connect_tcp<'a>(&'a self, host: &'a str, port: u16)
///         -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
///         # let _ = (host, port);
///         unimplemented!("a TCP connect from your runtime")
///     }
///     fn connect_unix<'a>(&'a self, path: &'a Path)
///         -> BoxFuture<'a, io::Result<Box<dyn Socket>>> {
///         # let _ = path;
///         unimplemented!("a Unix-socket connect from your runtime")
///     }
/// }
/// ```
pub trait Executor: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` in the background, detached: it must be driven to completion even though no
    /// handle to it is kept.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// The current time of the runtime's clock. Defaults to [`Instant::now`]; override it when the
    /// runtime has its own (for example a paused test clock).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Opens a TCP connection to `host` (a host name or an IP address literal) and `port`.
    ///
    /// Name resolution must not block the calling thread. When the name resolves to several
    /// addresses, try them in order and return the first connection that succeeds.
    fn connect_tcp<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Socket>>>;

    /// Opens a Unix-domain stream connection to the socket file at `path`.
    ///
    /// On platforms without Unix sockets, return an [`io::ErrorKind::Unsupported`] error.
    fn connect_unix<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Box<dyn Socket>>>;
}

/// A connected byte stream to a PostgreSQL server, as opened by an [`Executor`].
///
/// It speaks tokio's I/O traits because the protocol layer (tokio-postgres) does; this needs only
/// the traits, never tokio's runtime. Streams built on `futures-io` are adapted with
/// `tokio_util::compat`.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The operating-system socket of a TCP stream, so that momoko can set `TCP_NODELAY`,
    /// keepalives and `TCP_USER_TIMEOUT` on it. Return `None` (the default) when there is no such
    /// socket; the options are then skipped.
    #[cfg(unix)]
    fn tcp_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl<S: Socket + ?Sized> Socket for Box<S> {
    #[cfg(unix)]
    fn tcp_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        (**self).tcp_fd()
    }
}

/// An executor shared by pools and connections.
pub(crate) type SharedExecutor = Arc<dyn Executor>;

/// Error returned by [`timeout`] when the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `future` until it completes or `duration` elapses on the executor's timer, whichever comes
/// first. The future is dropped when the timer wins.
pub(crate) fn timeout<F: Future>(
    executor: &dyn Executor,
    duration: Duration,
    future: F,
) -> Timeout<F> {
    Timeout {
        future,
        sleep: Some(executor.sleep(duration)),
    }
}

/// Like [`timeout`], but `None` means no limit.
pub(crate) fn maybe_timeout<F: Future>(
    executor: &dyn Executor,
    duration: Option<Duration>,
    future: F,
) -> Timeout<F> {
    Timeout {
        future,
        sleep: duration.map(|d| executor.sleep(d)),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`] and [`maybe_timeout`]. A named future rather than an `async fn`:
    /// an `async fn` keeps its argument and the awaited future as two copies in its state, which
    /// doubled the size of every pool call's future.
    pub(crate) struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Option<BoxFuture<'static, ()>>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.sleep {
            Some(sleep) => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// Implements tokio's `AsyncRead`/`AsyncWrite` for a newtype by forwarding to its field `.0`:
/// `forward_io!([S: Bounds] Type<S>)`.
macro_rules! forward_io {
    ([$($gen:tt)*] $ty:ty) => {
        impl<$($gen)*> ::tokio::io::AsyncRead for $ty {
            fn poll_read(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }

        impl<$($gen)*> ::tokio::io::AsyncWrite for $ty {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.0).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.0.is_write_vectored()
            }
        }
    };
}

pub(crate) use forward_io;

/// Adapts a runtime's TCP stream into a [`Socket`] whose OS socket momoko can tune
/// (`TCP_NODELAY`, keepalives, `TCP_USER_TIMEOUT`).
///
/// ```ignore
/// let stream = tokio::net::TcpStream::connect((host, port)).await?;
/// Ok(Box::new(TcpSocket(stream)) as Box<dyn Socket>)
/// ```
#[derive(Debug)]
pub struct TcpSocket<S>(pub S);

forward_io!([S: AsyncRead + AsyncWrite + Unpin] TcpSocket<S>);

#[cfg(unix)]
impl<S> Socket for TcpSocket<S>
where
    S: AsyncRead + AsyncWrite + std::os::fd::AsRawFd + Send + Unpin + 'static,
{
    fn tcp_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        let raw = self.0.as_raw_fd();
        // SAFETY: `raw` is the descriptor owned by the stream `self.0`, which stays open for at
        // least as long as the returned borrow of `self` lives.
        Some(unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) })
    }
}

#[cfg(not(unix))]
impl<S> Socket for TcpSocket<S> where S: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// Adapts any other stream (a Unix socket, an in-memory pipe, …) into a [`Socket`] with no
/// TCP options.
#[derive(Debug)]
pub struct PlainSocket<S>(pub S);

forward_io!([S: AsyncRead + AsyncWrite + Unpin] PlainSocket<S>);

impl<S> Socket for PlainSocket<S> where S: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
