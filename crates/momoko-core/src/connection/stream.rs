//! Row streams: a statement's rows as they arrive ([`RowStream`]), for results too big to
//! buffer.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio_postgres::{Column, Row, Statement};

use crate::connection::held::Held;
use crate::connection::{check_param_count, is_stale_statement, Connection, Param};
use crate::error::{Error, Result};

/// The rows of one statement, yielded as they arrive from the server (a
/// [`Stream`](futures_core::Stream) of `Result<Row>`).
///
/// Memory stays flat whatever the size of the result: rows are decoded as the stream is polled,
/// and the server is not read ahead of the application by more than one network read (and the
/// operating system's socket buffers): when the application stops polling, the server waits.
///
/// Opened by [`Connection::execute_stream`] (also on a held connection or a
/// [`Transaction`](crate::Transaction)), or [`Pool::execute_stream`](crate::Pool::execute_stream),
/// which holds a pooled connection until the stream is dropped.
///
/// Dropped before its end, the rest of the result is never handed to anyone: on a pooled
/// connection the pool waits (off your path, at most a second) for the server to finish sending
/// it and discards it, and closes the connection if it takes longer; on a connection you hold,
/// the session's I/O task reads and discards the rest, and your next statement waits behind it
/// (call [`Connection::cancel`] first to make the server stop sooner).
///
/// ```no_run
/// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
/// use futures_util::TryStreamExt;
/// let mut rows = pool.execute_stream("SELECT n FROM generate_series(1, 1000000) AS n", &[]).await?;
/// let mut sum = 0i64;
/// while let Some(row) = rows.try_next().await? {
///     sum += i64::from(row.get::<_, i32>(0));
/// }
/// # Ok(()) }
/// ```
pub struct RowStream<'c> {
    // Declared before `held`, so it is dropped first: a pooled connection goes back after the
    // stream let go of the rest of the result.
    rows: Pin<Box<tokio_postgres::RowStream>>,
    statement: Statement,
    held: Held<'c>,
    ended: bool,
}

impl<'c> RowStream<'c> {
    /// Prepares (or takes from the cache) `sql` on `held` and starts it; the rows follow.
    pub(crate) async fn start(
        held: Held<'c>,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<RowStream<'c>> {
        let (statement, rows) = start_rows(&held, sql, params).await?;
        Ok(RowStream {
            rows: Box::pin(rows),
            statement,
            held,
            ended: false,
        })
    }

    /// The result's columns (name and type).
    pub fn columns(&self) -> &[Column] {
        self.statement.columns()
    }

    /// After the last row: the number of rows the statement returned or affected, as the server
    /// reported it. `None` before the end.
    pub fn rows_affected(&self) -> Option<u64> {
        if self.ended {
            self.rows.rows_affected()
        } else {
            None
        }
    }

    /// The connection the rows come from.
    pub fn connection(&self) -> &Connection {
        &self.held
    }
}

async fn start_rows(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<(Statement, tokio_postgres::RowStream)> {
    if conn.is_closed() {
        return Err(Error::closed("the connection is closed").not_executed());
    }
    let (statement, _) = conn.statement(sql).await.map_err(Error::not_executed)?;
    check_param_count(&statement, params)?;
    match conn.start_raw(&statement, params).await {
        Err(e) if is_stale_statement(&e) => {
            // The server forgot or changed the statement: prepare it afresh once.
            conn.forget(sql);
            let (statement, _) = Box::pin(conn.statement(sql))
                .await
                .map_err(Error::not_executed)?;
            let rows = conn.start_raw(&statement, params).await?;
            Ok((statement, rows))
        }
        Err(e) if e.is_server_termination() => Err(e.not_executed()),
        Err(e) => Err(e),
        Ok(rows) => Ok((statement, rows)),
    }
}

impl Connection {
    /// Runs one statement and returns its rows as a [`RowStream`], yielded as they arrive, for
    /// results too big to buffer (see [`execute`](Connection::execute) for everything else).
    ///
    /// # Errors
    ///
    /// As [`execute`](Connection::execute), for starting the statement; errors met later (a
    /// division by zero in row 1000) come out of the stream.
    pub async fn execute_stream(&self, sql: &str, params: &[Param<'_>]) -> Result<RowStream<'_>> {
        RowStream::start(Held::Borrowed(self), sql, params).await
    }

    /// Sends `statement` with `params` and waits for the server to accept it; its rows follow.
    async fn start_raw(
        &self,
        statement: &Statement,
        params: &[Param<'_>],
    ) -> Result<tokio_postgres::RowStream> {
        self.tracked(self.client.query_raw(statement, params.iter().copied()))
            .await
            .map_err(Error::from_pg)
    }
}

impl Stream for RowStream<'_> {
    type Item = Result<Row>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Row>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = std::task::ready!(self.rows.as_mut().poll_next(cx));
        if !matches!(next, Some(Ok(_))) {
            // The end, or an error, after which tokio-postgres yields nothing more.
            self.ended = true;
        }
        Poll::Ready(next.map(|r| r.map_err(Error::from_pg)))
    }
}

impl fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns().len())
            .field("ended", &self.ended)
            .field("connection", &self.held)
            .finish()
    }
}
