//! COPY: `COPY … FROM STDIN` as a sink ([`CopyIn`], and [`BinaryCopyIn`] for typed rows in
//! PostgreSQL's binary format) and `COPY … TO STDOUT` as a stream ([`CopyOut`]).
//!
//! A COPY that fails or is dropped leaves its connection clean, decided from the session's exact
//! state: a dropped sink sends CopyFail (the server discards the partial COPY and answers with
//! an error and a ReadyForQuery), a dropped stream has the rest of its data read and discarded;
//! until those answers are in, the wire shows the connection busy, so a pool waits for them
//! (off your path) before anyone else gets it, and a borrowed connection's next statement waits
//! behind them.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use futures_util::Sink;
use tokio_postgres::types::{IsNull, Type};
use tokio_postgres::{CopyInSink, CopyOutStream};

use crate::connection::held::Held;
use crate::connection::{Connection, Param};
use crate::error::{Error, Result};

/// The sink of a `COPY … FROM STDIN`: send the data in the COPY's format (text, CSV or
/// binary), then [`finish`](CopyIn::finish). Also a [`Sink`] of [`Bytes`] (`SinkExt::send_all`
/// from a stream of chunks).
///
/// Dropped before `finish`, the COPY is abandoned (CopyFail): nothing of it is stored.
///
/// ```no_run
/// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
/// let mut copy = pool.copy_in("COPY item (id, name) FROM STDIN (FORMAT csv)").await?;
/// copy.send("1,pen\n").await?;
/// copy.send("2,ink\n").await?;
/// let rows = copy.finish().await?;
/// assert_eq!(rows, 2);
/// # Ok(()) }
/// ```
pub struct CopyIn<'c> {
    // Before `held`: dropped first, so the CopyFail is queued before a pooled connection goes
    // back.
    sink: Pin<Box<CopyInSink<Bytes>>>,
    held: Held<'c>,
}

impl<'c> CopyIn<'c> {
    pub(crate) async fn start(held: Held<'c>, sql: &str) -> Result<CopyIn<'c>> {
        let sink = {
            let conn: &Connection = &held;
            let (statement, _) = conn.statement(sql).await.map_err(Error::not_executed)?;
            start_copy_in(conn, &statement).await?
        };
        Ok(CopyIn {
            sink: Box::pin(sink),
            held,
        })
    }

    /// Queues `data` for the server. Small chunks are gathered into larger messages; call
    /// [`finish`](CopyIn::finish) to send the rest and end the COPY.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the connection is gone. Errors in
    /// the data are reported by `finish`.
    pub async fn send(&mut self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        std::future::poll_fn(|cx| self.sink.as_mut().poll_ready(cx))
            .await
            .map_err(Error::from_pg)?;
        self.sink.as_mut().start_send(data).map_err(Error::from_pg)
    }

    /// Ends the COPY and returns how many rows it stored.
    ///
    /// # Errors
    ///
    /// The server's error for bad data (nothing is stored then); `Closed` when the connection
    /// is gone.
    pub async fn finish(mut self) -> Result<u64> {
        self.sink.as_mut().finish().await.map_err(Error::from_pg)
    }

    /// The connection the COPY runs on.
    pub fn connection(&self) -> &Connection {
        &self.held
    }
}

impl Sink<Bytes> for CopyIn<'_> {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.sink.as_mut().poll_ready(cx).map_err(Error::from_pg)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        self.sink.as_mut().start_send(item).map_err(Error::from_pg)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.sink.as_mut().poll_flush(cx).map_err(Error::from_pg)
    }

    /// Ends the COPY, like [`finish`](CopyIn::finish) without the row count.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.sink.as_mut().poll_close(cx).map_err(Error::from_pg)
    }
}

impl fmt::Debug for CopyIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyIn")
            .field("connection", &self.held)
            .finish_non_exhaustive()
    }
}

/// A `COPY … FROM STDIN (FORMAT binary)` fed with typed rows: each [`write`](BinaryCopyIn::write)
/// takes one row's values (`&[&1i32, &"pen"]`), encoded as the column types given at the start;
/// then [`finish`](BinaryCopyIn::finish). The fastest way to insert many rows.
///
/// Dropped before `finish`, the COPY is abandoned: nothing of it is stored.
///
/// ```no_run
/// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
/// use momoko_core::Type;
/// let mut copy = pool
///     .copy_in_binary("COPY item (id, name) FROM STDIN (FORMAT binary)", &[Type::INT4, Type::TEXT])
///     .await?;
/// for (id, name) in [(1i32, "pen"), (2, "ink")] {
///     copy.write(&[&id, &name]).await?;
/// }
/// assert_eq!(copy.finish().await?, 2);
/// # Ok(()) }
/// ```
pub struct BinaryCopyIn<'c> {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    /// Rows encoded but not sent yet.
    buf: BytesMut,
    types: Vec<Type>,
    held: Held<'c>,
}

/// The binary COPY header: signature, flags (none), header extension length (none).
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Rows are sent in chunks of about this size: large enough that a chunk costs one message
/// (tokio-postgres gathers smaller ones into 4 kB messages anyway), small enough to stay cheap
/// in memory.
const BINARY_CHUNK: usize = 64 * 1024;

impl<'c> BinaryCopyIn<'c> {
    pub(crate) async fn start(
        held: Held<'c>,
        sql: &str,
        types: &[Type],
    ) -> Result<BinaryCopyIn<'c>> {
        let sink = {
            let conn: &Connection = &held;
            let (statement, _) = conn.statement(sql).await.map_err(Error::not_executed)?;
            start_copy_in(conn, &statement).await?
        };
        let mut buf = BytesMut::with_capacity(BINARY_CHUNK);
        buf.extend_from_slice(BINARY_HEADER);
        Ok(BinaryCopyIn {
            sink: Box::pin(sink),
            buf,
            types: types.to_vec(),
            held,
        })
    }

    /// Writes one row: one value per column type given at the start, in order. A row whose
    /// values do not fit is refused whole, and the COPY goes on.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) when the number of values is
    /// wrong or a value does not fit its column type (nothing of the row is written);
    /// `Closed` when the connection is gone.
    pub async fn write(&mut self, values: &[Param<'_>]) -> Result<()> {
        self.encode_row(values)?;
        if self.buf.len() >= BINARY_CHUNK {
            self.send_buffered().await?;
        }
        Ok(())
    }

    /// Appends one row in the binary COPY format (a 16-bit field count, then per field a 32-bit
    /// length, -1 for NULL, and the value's binary form), or nothing when a value fails.
    fn encode_row(&mut self, values: &[Param<'_>]) -> Result<()> {
        if values.len() != self.types.len() {
            return Err(Error::parameter(format!(
                "the COPY has {} columns but {} values were given",
                self.types.len(),
                values.len()
            )));
        }
        let start = self.buf.len();
        let fields = i16::try_from(values.len())
            .map_err(|_| Error::parameter("a row of a binary COPY has at most 32767 columns"))?;
        self.buf.put_i16(fields);
        for (i, (value, ty)) in values.iter().zip(&self.types).enumerate() {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let length = match value.to_sql_checked(ty, &mut self.buf) {
                Ok(IsNull::Yes) => Ok(-1),
                Ok(IsNull::No) => i32::try_from(self.buf.len() - at - 4)
                    .map_err(|_| Error::parameter(format!("value {i} is larger than 2 GB"))),
                Err(e) => Err(Error::parameter(format!("value {i} of the row: {e}"))),
            };
            match length {
                Ok(length) => self.buf[at..at + 4].copy_from_slice(&length.to_be_bytes()),
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn send_buffered(&mut self) -> Result<()> {
        let chunk = self.buf.split().freeze();
        std::future::poll_fn(|cx| self.sink.as_mut().poll_ready(cx))
            .await
            .map_err(Error::from_pg)?;
        self.sink.as_mut().start_send(chunk).map_err(Error::from_pg)
    }

    /// Ends the COPY and returns how many rows it stored.
    ///
    /// # Errors
    ///
    /// The server's error (a constraint violated: nothing is stored then); `Closed` when the
    /// connection is gone.
    pub async fn finish(mut self) -> Result<u64> {
        // The trailer: a field count of -1.
        self.buf.put_i16(-1);
        self.send_buffered().await?;
        self.sink.as_mut().finish().await.map_err(Error::from_pg)
    }

    /// The connection the COPY runs on.
    pub fn connection(&self) -> &Connection {
        &self.held
    }
}

impl fmt::Debug for BinaryCopyIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCopyIn")
            .field("columns", &self.types.len())
            .field("connection", &self.held)
            .finish_non_exhaustive()
    }
}

/// The data of a `COPY … TO STDOUT`, a [`Stream`] of chunks in the COPY's format (one row per
/// chunk in text and CSV formats), yielded as they arrive.
///
/// Dropped before its end, the rest is read and discarded, never handed to anyone (see
/// [`RowStream`](crate::RowStream)).
pub struct CopyOut<'c> {
    stream: Pin<Box<CopyOutStream>>,
    held: Held<'c>,
    ended: bool,
}

impl<'c> CopyOut<'c> {
    pub(crate) async fn start(held: Held<'c>, sql: &str) -> Result<CopyOut<'c>> {
        let stream = {
            let conn: &Connection = &held;
            let (statement, _) = conn.statement(sql).await.map_err(Error::not_executed)?;
            conn.tracked(conn.client.copy_out(&statement))
                .await
                .map_err(Error::from_pg)?
        };
        Ok(CopyOut {
            stream: Box::pin(stream),
            held,
            ended: false,
        })
    }

    /// The connection the COPY runs on.
    pub fn connection(&self) -> &Connection {
        &self.held
    }
}

impl Stream for CopyOut<'_> {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = std::task::ready!(self.stream.as_mut().poll_next(cx));
        if !matches!(next, Some(Ok(_))) {
            self.ended = true;
        }
        Poll::Ready(next.map(|r| r.map_err(Error::from_pg)))
    }
}

impl fmt::Debug for CopyOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOut")
            .field("ended", &self.ended)
            .field("connection", &self.held)
            .finish_non_exhaustive()
    }
}

/// Starts a `COPY … FROM STDIN` with tokio-postgres.
///
/// tokio-postgres sends it as Bind, Execute and Sync, and sends another Sync after CopyDone or
/// CopyFail. In copy-in mode the server ignores the first Sync; but when it refuses the COPY
/// before copy-in mode (a missing table, no permission), it answers both Syncs, and the second
/// ReadyForQuery would be taken by tokio-postgres for the answer to the session's next request
/// (or end the session: "unexpected message from server"). Such a session is taken out of use
/// at once (a pool then closes it) rather than let that answer reach the next statement.
async fn start_copy_in(
    conn: &Connection,
    statement: &tokio_postgres::Statement,
) -> Result<CopyInSink<Bytes>> {
    match conn.tracked(conn.client.copy_in(statement)).await {
        Ok(sink) => Ok(sink),
        Err(e) => {
            if e.as_db_error().is_some() {
                conn.break_off("the server refused a COPY FROM STDIN before copy-in mode");
            }
            Err(Error::from_pg(e))
        }
    }
}

impl Connection {
    /// Starts a `COPY … FROM STDIN` and returns its sink (see [`CopyIn`]).
    ///
    /// A COPY the server refuses at its start (a missing table, no permission) costs the
    /// connection: it reports itself closed afterwards (a pool replaces it). tokio-postgres
    /// leaves such a session one answer behind, and momoko will not hand that answer to your
    /// next statement.
    ///
    /// # Errors
    ///
    /// The server's error for the statement (a missing table, …); `Closed` when the
    /// connection is gone.
    pub async fn copy_in(&self, sql: &str) -> Result<CopyIn<'_>> {
        CopyIn::start(Held::Borrowed(self), sql).await
    }

    /// Starts a `COPY … FROM STDIN (FORMAT binary)` fed with typed rows whose columns have
    /// `types` (see [`BinaryCopyIn`]).
    ///
    /// # Errors
    ///
    /// As [`copy_in`](Connection::copy_in).
    pub async fn copy_in_binary(&self, sql: &str, types: &[Type]) -> Result<BinaryCopyIn<'_>> {
        BinaryCopyIn::start(Held::Borrowed(self), sql, types).await
    }

    /// Starts a `COPY … TO STDOUT` and returns its data as a stream (see [`CopyOut`]).
    ///
    /// # Errors
    ///
    /// As [`copy_in`](Connection::copy_in).
    pub async fn copy_out(&self, sql: &str) -> Result<CopyOut<'_>> {
        CopyOut::start(Held::Borrowed(self), sql).await
    }
}
