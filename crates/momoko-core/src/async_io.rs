//! tokio's I/O traits straight over async-io's [`Async`], without `tokio_util::compat` (the
//! `async-io` feature; the smol and async-std backends use it).
//!
//! `Async<T>`'s own `futures-io` impls, and compat on top of them, cost three system calls per
//! round trip that tokio's streams do not make:
//!
//! * every poll starts with a `recv`, so a task woken for anything else (a new request on its
//!   channel, a timer) pays a `recv` that fails with `EAGAIN`;
//! * after a read that drained the socket, the next poll makes another `recv` just to learn that
//!   there is nothing left, before it registers for readiness;
//! * compat zeroes the whole unfilled buffer before every read.
//!
//! [`AsyncIoStream`] remembers whether the socket may have data (like tokio's readiness cache):
//! it only calls `recv` after a readiness event or a full read, treats a short read as "drained"
//! (a stream socket returns everything it has, up to the buffer size), and reads into the
//! buffer's uninitialised spare capacity.

use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
#[cfg(unix)]
use std::os::fd::{AsFd as AsSocket, AsRawFd, RawFd};
#[cfg(windows)]
use std::os::windows::io::AsSocket;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A non-blocking socket registered with async-io's reactor, speaking tokio's I/O traits.
#[derive(Debug)]
pub struct AsyncIoStream<T> {
    io: Arc<Async<T>>,
    /// `false` once a read came back short or `WouldBlock`: wait for a readiness event before
    /// the next `recv`.
    read_ready: bool,
    /// `false` once a write came back `WouldBlock`.
    write_ready: bool,
}

impl<T: AsSocket> AsyncIoStream<T> {
    /// Wraps a socket registered with async-io's reactor.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// use std::sync::Arc;
    /// use momoko_core::{AsyncIoStream, Socket, TcpSocket};
    ///
    /// let stream = async_io::Async::<std::net::TcpStream>::connect(([127, 0, 0, 1], 5432)).await?;
    /// let socket: Box<dyn Socket> = Box::new(TcpSocket(AsyncIoStream::new(Arc::new(stream))));
    /// # Ok(()) }
    /// ```
    pub fn new(io: Arc<Async<T>>) -> AsyncIoStream<T> {
        AsyncIoStream {
            io,
            read_ready: true,
            write_ready: true,
        }
    }

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self.io.get_ref())
    }
}

impl<T: AsSocket> AsyncRead for AsyncIoStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.read_ready {
                ready!(this.io.poll_readable(cx))?;
                this.read_ready = true;
            }
            // SAFETY: `recv` only writes initialised bytes into the slice; nothing here ever
            // writes `MaybeUninit::uninit()` into it, so no initialised byte of `buf` becomes
            // uninitialised.
            let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            match this.sock().recv(unfilled) {
                Ok(n) => {
                    // SAFETY: `recv` returned `n`, so it initialised the first `n` bytes of the
                    // unfilled part (`n <= wanted`).
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 && n < wanted {
                        // A short read emptied the socket's receive queue.
                        this.read_ready = false;
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: AsSocket> AsyncWrite for AsyncIoStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.write_ready {
                ready!(this.io.poll_writable(cx))?;
                this.write_ready = true;
            }
            // `send` passes MSG_NOSIGNAL: a closed peer is an `EPIPE` error, not a SIGPIPE.
            match this.sock().send(data) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.write_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.sock().shutdown(Shutdown::Write))
    }
}

#[cfg(unix)]
impl<T: AsRawFd> AsRawFd for AsyncIoStream<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}
