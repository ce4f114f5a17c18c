//! What the server said about a session, read off the byte stream as it passes.
//!
//! tokio-postgres does not expose the transaction status of ReadyForQuery, nor whether an answer
//! is still on its way. momoko owns the stream it hands to `connect_raw`, so it wraps it in an
//! [`Observed`] stream that follows the message framing in both directions (a type byte and a
//! big-endian length; only the startup packets have no type byte) without copying or decoding
//! payloads, except the two it needs:
//!
//! * **ReadyForQuery** (`Z`, one byte: `I` idle, `T` in a transaction block, `E` in a failed one),
//!   exactly what libpq's `PQtransactionStatus` reports;
//! * **ParameterStatus** (`S`): `in_hot_standby`, `default_transaction_read_only`,
//!   `server_version`, … as the server reports them at start-up and whenever they change.
//!
//! It also counts the requests the server answers with exactly one ReadyForQuery (Sync, a simple
//! Query, a FunctionCall, and the startup packet; a Sync the server ignores in copy-in mode is
//! answered by the ReadyForQuery that ends the copy) against the ReadyForQuery messages read: when
//! the two are equal, nothing is in flight and the status is the session's state now. Every
//! decision the pool takes about a connection (hand it on, roll it back, share it) reads this
//! state; none reads SQL text.
//!
//! Cost, measured as per-message work: a `SELECT 1` round trip writes 4 messages (Bind, Execute,
//! Sync in one write; the statement is cached) and reads 4 (BindComplete, DataRow,
//! CommandComplete, ReadyForQuery) in one read: 8 header decodes of 5 bytes each and three atomic
//! stores, no allocation and no system call.
//!
//! With TLS, the bytes on the socket are ciphertext: the raw stream's observer stops at the
//! moment the TLS handshake begins (`TlsTap`) and an observer on the TLS stream's plaintext
//! side takes over, sharing the same [`Wire`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsStream};

use crate::config::ServerRole;

/// `SSLRequest` code (the server answers it with one unframed byte, `S` or `N`).
const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code (likewise answered with one unframed byte).
const GSSENC_REQUEST: u32 = 80_877_104;
/// A `ParameterStatus` value longer than this is not kept (no parameter the pool reads comes
/// near it; the message is still skipped correctly).
const MAX_PARAMETER_MESSAGE: usize = 4096;

/// The transaction status of a session, as its server last reported it (libpq's
/// `PQtransactionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransactionStatus {
    /// Idle, outside any transaction block: safe to hand to anyone.
    Idle,
    /// A request is in flight: the server has not answered everything sent so far.
    Active,
    /// Idle inside a transaction block (after `BEGIN`).
    InTransaction,
    /// Idle inside a failed transaction block: every statement fails until `ROLLBACK`.
    InError,
    /// The session has ended, or has not finished starting.
    Unknown,
}

/// The state an [`Observed`] stream keeps, shared with the connection that owns the session.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Requests written that the server answers with one ReadyForQuery each.
    requests: AtomicU64,
    /// ReadyForQuery messages read.
    readies: AtomicU64,
    /// The status byte of the latest ReadyForQuery (`0` before the first).
    status: AtomicU8,
    /// The stream reached its end or failed: the session is over.
    ended: AtomicBool,
    /// Cleared when a TLS handshake starts: the raw stream then carries ciphertext.
    raw_is_plaintext: AtomicBoolDefaultTrue,
    /// Set while someone waits in [`Wire::settled`] (so the reader only touches the lock then).
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    /// Every ParameterStatus the server reported, latest value per name.
    parameters: Mutex<Vec<(String, String)>>,
    /// `in_hot_standby` and `default_transaction_read_only` as last reported: `0` not reported
    /// (before PostgreSQL 14), `1` off, `2` on. Atomics, so the pool checks a connection's role
    /// on every return without the parameters' lock.
    hot_standby: AtomicU8,
    read_only_default: AtomicU8,
    /// Whether the latest CommandComplete carried a row count (`1`), or not (`2`, as for
    /// `CREATE TABLE` or `SET`); `0` before the first.
    last_tag_counted: AtomicU8,
    /// Whether the latest request counted was a Sync (extended protocol) rather than a simple
    /// Query, a FunctionCall or the startup packet.
    last_request_sync: AtomicBool,
    /// Syncs the server ignored in copy-in mode, answered by the ReadyForQuery that ends the
    /// copy (see [`Wire::copy_in_started`]).
    ignored_syncs: AtomicU64,
    /// Where `NOTIFY` messages go (see `notifications.rs`).
    pub(crate) notifications: super::notifications::Notifications,
}

/// An `AtomicBool` that starts `true` (so `Wire` can derive `Default`).
#[derive(Debug)]
struct AtomicBoolDefaultTrue(AtomicBool);

impl Default for AtomicBoolDefaultTrue {
    fn default() -> Self {
        AtomicBoolDefaultTrue(AtomicBool::new(true))
    }
}

impl Wire {
    pub(crate) fn new() -> Arc<Wire> {
        Arc::new(Wire::default())
    }

    /// Requests the server has not answered yet (as far as they reached the socket).
    pub(crate) fn in_flight(&self) -> u64 {
        // Readies first: every ReadyForQuery counted had its request counted before it.
        let readies = self.readies.load(Ordering::SeqCst);
        self.requests.load(Ordering::SeqCst).saturating_sub(readies)
    }

    /// Whether the stream ended or failed.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The session's transaction status from the protocol.
    pub(crate) fn status(&self) -> TransactionStatus {
        if self.ended() {
            return TransactionStatus::Unknown;
        }
        if self.in_flight() > 0 {
            return TransactionStatus::Active;
        }
        match self.status.load(Ordering::SeqCst) {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::InError,
            _ => TransactionStatus::Unknown,
        }
    }

    /// Whether the latest ReadyForQuery said idle (statements may still be in flight) and the
    /// session goes on.
    pub(crate) fn last_reported_idle(&self) -> bool {
        self.status.load(Ordering::SeqCst) == b'I' && !self.ended()
    }

    /// The server's role as it last reported it; `None` when it does not report both parameters
    /// (before PostgreSQL 14).
    pub(crate) fn role(&self) -> Option<ServerRole> {
        let flag = |f: &AtomicU8| match f.load(Ordering::SeqCst) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        };
        Some(ServerRole {
            hot_standby: flag(&self.hot_standby)?,
            read_only_default: flag(&self.read_only_default)?,
        })
    }

    /// The value the server last reported for parameter `name`.
    pub(crate) fn parameter(&self, name: &str) -> Option<String> {
        let params = self
            .parameters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// A TLS handshake starts on the raw stream: from now on it carries ciphertext.
    #[cfg(feature = "tls")]
    pub(crate) fn leave_plaintext(&self) {
        self.raw_is_plaintext.0.store(false, Ordering::SeqCst);
    }

    /// Resolves once nothing is in flight or the stream has ended.
    pub(crate) fn settled(self: &Arc<Self>) -> Settled {
        Settled {
            wire: Arc::clone(self),
        }
    }

    fn wake_waiters(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            let wakers =
                std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
            for w in wakers {
                w.wake();
            }
        }
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            self.wake_waiters();
        }
    }

    fn ready(&self, status: u8) {
        self.status.store(status, Ordering::SeqCst);
        let answered = 1 + self.ignored_syncs.swap(0, Ordering::SeqCst);
        self.readies.fetch_add(answered, Ordering::SeqCst);
        self.wake_waiters();
    }

    fn parameter_status(&self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        let (name, value) = (
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        );
        let flag = match name.as_str() {
            "in_hot_standby" => Some(&self.hot_standby),
            "default_transaction_read_only" => Some(&self.read_only_default),
            _ => None,
        };
        if let Some(flag) = flag {
            flag.store(if value == "on" { 2 } else { 1 }, Ordering::SeqCst);
        }
        let mut params = self
            .parameters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => params.push((name, value)),
        }
    }

    fn command_complete(&self, tag: &[u8]) {
        // "INSERT 0 5", "SELECT 5", "UPDATE 3" carry a count as their last word; "CREATE
        // TABLE", "SET", "BEGIN" do not.
        let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
        let last = tag.rsplit(|b| *b == b' ').next().unwrap_or_default();
        let counted = !last.is_empty() && last.iter().all(u8::is_ascii_digit);
        self.last_tag_counted
            .store(if counted { 1 } else { 2 }, Ordering::SeqCst);
    }

    /// The server entered copy-in mode (CopyInResponse). It ignores every Sync it receives in
    /// that mode; a `COPY … FROM STDIN` sent on the extended protocol is followed by one (Bind,
    /// Execute and Sync go together, and nothing else is sent until the copy ends: the
    /// session's I/O task streams the copy data before any later request), so that Sync gets no
    /// ReadyForQuery of its own. It stays counted, which keeps the session `Active` for the
    /// whole copy, and the ReadyForQuery that ends the copy (after the Sync that follows
    /// CopyDone or CopyFail) answers both. A copy started by a simple Query has no such Sync.
    fn copy_in_started(&self) {
        if self.last_request_sync.load(Ordering::SeqCst) {
            self.ignored_syncs.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether the latest CommandComplete carried no row count.
    pub(crate) fn last_tag_without_count(&self) -> bool {
        self.last_tag_counted.load(Ordering::SeqCst) == 2
    }
}

/// The future of [`Wire::settled`].
pub(crate) struct Settled {
    wire: Arc<Wire>,
}

impl std::future::Future for Settled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let wire = &self.wire;
        let done = || wire.ended() || wire.in_flight() == 0;
        if done() {
            return Poll::Ready(());
        }
        wire.waiting.store(true, Ordering::SeqCst);
        wire.wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cx.waker().clone());
        // Re-check after registering: the answer may have arrived in between.
        if done() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Incremental framing of one direction of the protocol.
#[derive(Debug)]
struct Framer {
    /// Messages without a type byte come next (the start-up phase, client side only).
    untyped: bool,
    header: [u8; 8],
    have: usize,
    kind: u8,
    /// Payload bytes of the current message still to pass.
    left: usize,
    /// The current message's payload, when it is one we read.
    body: Vec<u8>,
    keep: bool,
}

impl Framer {
    fn new(untyped: bool) -> Framer {
        Framer {
            untyped,
            header: [0; 8],
            have: 0,
            kind: 0,
            left: 0,
            body: Vec::new(),
            keep: false,
        }
    }

    fn header_len(&self) -> usize {
        // Untyped: length + the 4-byte code; typed: type + length.
        if self.untyped {
            8
        } else {
            5
        }
    }

    /// Feeds `bytes`; calls `done(kind, code, body)` for each complete message (`kind` 0 for an
    /// untyped one, whose `code` is its first four payload bytes). `keep(kind)` says whose
    /// payload is collected. Returns the bytes not consumed when `done` asks to stop (`false`).
    fn feed<'b>(
        &mut self,
        mut bytes: &'b [u8],
        keep: impl Fn(u8) -> bool,
        mut done: impl FnMut(&mut Framer, u8, u32, &[u8]) -> bool,
    ) -> &'b [u8] {
        while !bytes.is_empty() {
            if self.left == 0 {
                let need = self.header_len();
                let n = (need - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < need {
                    return bytes;
                }
                let (kind, len, code) = if self.untyped {
                    let len = u32::from_be_bytes([
                        self.header[0],
                        self.header[1],
                        self.header[2],
                        self.header[3],
                    ]);
                    let code = u32::from_be_bytes([
                        self.header[4],
                        self.header[5],
                        self.header[6],
                        self.header[7],
                    ]);
                    (0, (len as usize).saturating_sub(8), code)
                } else {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    (self.header[0], (len as usize).saturating_sub(4), 0)
                };
                self.have = 0;
                self.kind = kind;
                self.left = len;
                self.keep = keep(kind);
                self.body.clear();
                if len == 0 {
                    if !done(self, kind, code, &[]) {
                        return bytes;
                    }
                    continue;
                }
                if kind == 0 {
                    // Untyped payloads are never kept; their code was in the header.
                    if !done(self, kind, code, &[]) {
                        return bytes;
                    }
                }
                continue;
            }
            let n = self.left.min(bytes.len());
            if self.keep && self.body.len() + n <= MAX_PARAMETER_MESSAGE {
                self.body.extend_from_slice(&bytes[..n]);
            } else {
                self.keep = false;
            }
            self.left -= n;
            bytes = &bytes[n..];
            if self.left == 0 && self.kind != 0 {
                let kind = self.kind;
                let body = std::mem::take(&mut self.body);
                let go_on = if self.keep {
                    done(self, kind, 0, &body)
                } else {
                    done(self, kind, 0, &[])
                };
                self.body = body;
                if !go_on {
                    return bytes;
                }
            }
        }
        bytes
    }
}

/// A stream whose protocol messages update a [`Wire`].
pub(crate) struct Observed<S> {
    inner: S,
    wire: Arc<Wire>,
    /// On the raw socket (where TLS may take over) rather than a TLS session's plaintext.
    raw: bool,
    reads: Framer,
    writes: Framer,
    /// The server answers an SSLRequest/GSSENCRequest with one unframed byte, next.
    answer_byte: bool,
    /// Whether the next write may wait one scheduler turn (see [`Observed::hold_write`]).
    may_hold: bool,
}

impl<S> Observed<S> {
    /// Observes the raw stream of a session from its first byte.
    pub(crate) fn raw(inner: S, wire: Arc<Wire>) -> Observed<S> {
        Observed::new(inner, wire, true)
    }

    /// Observes the plaintext side of a TLS session from its first byte (the raw stream under
    /// it stops being observed: see `Wire::leave_plaintext`).
    #[cfg(feature = "tls")]
    pub(crate) fn tls(inner: S, wire: Arc<Wire>) -> Observed<S> {
        Observed::new(inner, wire, false)
    }

    fn new(inner: S, wire: Arc<Wire>, raw: bool) -> Observed<S> {
        Observed {
            inner,
            wire,
            raw,
            reads: Framer::new(false),
            writes: Framer::new(true),
            answer_byte: false,
            may_hold: true,
        }
    }

    /// Whether to hold this write back for one turn of the scheduler: only when the server is
    /// still working on earlier requests of this connection (pipelined statements), and once per
    /// flush. The task wakes itself at once, so every caller already woken runs first and can add
    /// its request to the same write.
    ///
    /// Why: without it, a pipelining connection wrote 0.92 times per statement (select1 over
    /// TCP, 64 tasks), because its I/O task flushes as soon as its queue is empty and requests
    /// arrive one at a time from the callers on the other worker thread. A lone statement (nothing
    /// in flight) is written at once.
    fn hold_write(&mut self, cx: &Context<'_>) -> bool {
        if self.may_hold && self.active() && self.wire.in_flight() > 0 {
            self.may_hold = false;
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }

    fn active(&self) -> bool {
        !self.raw || self.wire.raw_is_plaintext.0.load(Ordering::Relaxed)
    }

    fn saw_read(&mut self, mut bytes: &[u8]) {
        if self.answer_byte && !bytes.is_empty() {
            self.answer_byte = false;
            if bytes[0] == b'S' || bytes[0] == b'G' {
                // TLS (or GSS) begins on this stream; its plaintext is observed elsewhere.
                self.wire.raw_is_plaintext.0.store(false, Ordering::SeqCst);
                return;
            }
            bytes = &bytes[1..];
        }
        let wire = &self.wire;
        self.reads.feed(
            bytes,
            |kind| kind == b'Z' || kind == b'S' || kind == b'C',
            |_, kind, _, body| {
                match kind {
                    b'Z' => wire.ready(body.first().copied().unwrap_or(0)),
                    b'G' => wire.copy_in_started(),
                    b'S' if !body.is_empty() => wire.parameter_status(body),
                    b'C' => wire.command_complete(body),
                    _ => {}
                }
                true
            },
        );
    }

    fn saw_write(&mut self, bytes: &[u8]) {
        let wire = &self.wire;
        let mut answer_byte = false;
        self.writes.feed(
            bytes,
            |_| false,
            |framer, kind, code, _| {
                match kind {
                    0 if code == SSL_REQUEST || code == GSSENC_REQUEST => answer_byte = true,
                    0 => {
                        // The startup packet: typed messages follow, and the server ends
                        // start-up with one ReadyForQuery.
                        framer.untyped = false;
                        wire.requests.fetch_add(1, Ordering::SeqCst);
                    }
                    b'S' | b'Q' | b'F' => {
                        wire.last_request_sync.store(kind == b'S', Ordering::SeqCst);
                        wire.requests.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
                true
            },
        );
        if answer_byte {
            self.answer_byte = true;
        }
    }
}

impl<S> Drop for Observed<S> {
    fn drop(&mut self) {
        if self.active() {
            self.wire.end();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Observed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.active() {
                    let new = &buf.filled()[before..];
                    if new.is_empty() && room {
                        this.wire.end();
                    } else {
                        this.saw_read(new);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                if this.active() {
                    this.wire.end();
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Observed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.hold_write(cx) {
            return Poll::Pending;
        }
        let out = Pin::new(&mut this.inner).poll_write(cx, buf);
        if this.active() {
            match &out {
                Poll::Ready(Ok(n)) => this.saw_write(&buf[..*n]),
                Poll::Ready(Err(_)) => this.wire.end(),
                Poll::Pending => {}
            }
        }
        out
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.hold_write(cx) {
            return Poll::Pending;
        }
        let out = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if this.active() {
            match &out {
                Poll::Ready(Ok(n)) => {
                    let mut left = *n;
                    for b in bufs {
                        if left == 0 {
                            break;
                        }
                        let take = left.min(b.len());
                        this.saw_write(&b[..take]);
                        left -= take;
                    }
                }
                Poll::Ready(Err(_)) => this.wire.end(),
                Poll::Pending => {}
            }
        }
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = Pin::new(&mut self.inner).poll_flush(cx);
        if out.is_ready() {
            self.may_hold = true;
        }
        out
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Observed<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A socket that takes every write whole and remembers each one.
    #[derive(Default)]
    struct Sink {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A protocol 3.0 startup packet without parameters (answered by one ReadyForQuery).
    const STARTUP: [u8; 9] = [0, 0, 0, 9, 0, 3, 0, 0, 0];
    /// A Sync message.
    const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

    #[test]
    fn a_write_waits_one_turn_only_behind_requests_in_flight() {
        let wakes = Arc::new(Wakes::default());
        let waker = futures::task::waker(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let wire = Wire::new();
        let mut stream = Observed::raw(Sink::default(), Arc::clone(&wire));
        let mut s = Pin::new(&mut stream);

        // Nothing in flight: written at once.
        assert!(matches!(
            s.as_mut().poll_write(&mut cx, &STARTUP),
            Poll::Ready(Ok(9))
        ));
        assert_eq!(wire.in_flight(), 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);

        // Behind a request in flight: held for one turn, with the task woken at once.
        assert!(s.as_mut().poll_write(&mut cx, &SYNC).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.inner.writes.len(), 1);
        // The next poll writes it, and the rest of the same flush goes out without waiting.
        assert!(matches!(
            s.as_mut().poll_write(&mut cx, &SYNC),
            Poll::Ready(Ok(5))
        ));
        assert!(matches!(
            s.as_mut().poll_write(&mut cx, &SYNC),
            Poll::Ready(Ok(5))
        ));
        assert_eq!(s.inner.writes.len(), 3);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);

        // After a flush, the next write behind requests in flight waits one turn again.
        assert!(s.as_mut().poll_flush(&mut cx).is_ready());
        assert!(s.as_mut().poll_write(&mut cx, &SYNC).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(wire.in_flight(), 3);
    }
}
