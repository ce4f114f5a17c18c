//! The one error type of momoko.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use tokio_postgres::error::{DbError, SqlState};

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// Every failure momoko reports: a [`ErrorKind`], a message, and the underlying cause.
///
/// Match on [`Error::kind`] or use the predicates (`is_timeout`, `is_connect`, …). Errors sent by
/// the server keep their SQLSTATE ([`Error::code`]) and the full [`DbError`]
/// ([`Error::as_db_error`]), and [`Error::db_class`] gives the class psycopg2 users know
/// (`IntegrityError`, `ProgrammingError`, …).
///
/// No error ever contains a password.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
    /// The statement provably did not take effect (it was never sent, or the server aborted it
    /// before it could commit). Only such failures are retried under `RetryPolicy::Safe`.
    not_executed: bool,
    /// For [`ErrorKind::PartiallyConnected`]: how many initial connections failed.
    failed_connections: Option<usize>,
    /// For a failure inside a batch: the failing statement's position (from 0).
    batch_statement: Option<usize>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection string or a builder setting is invalid. Nothing was sent to a server.
    Config,
    /// No connection could be made to any host: refused, unreachable, DNS failure, TLS failure or
    /// a protocol failure during start-up.
    Connect,
    /// The server rejected the credentials or the role/database (SQLSTATE class 28, or `3D000`
    /// for a missing database). [`Error::code`] has the SQLSTATE.
    Auth,
    /// The server reported an error for a statement. [`Error::code`] has the SQLSTATE.
    Db,
    /// The connection is closed or broken (the server went away, an I/O error, or it was closed).
    Closed,
    /// A connect, acquire or statement timeout fired.
    Timeout,
    /// The pool has no live connection and cannot open one now (Momoko's
    /// `Pool.DatabaseNotAvailable`).
    DatabaseNotAvailable,
    /// Some of the pool's initial connections failed (Momoko's `PartiallyConnectedError`).
    PartiallyConnected,
    /// The pool was closed.
    PoolClosed,
    /// The query parameters are wrong: count, type, a NUL byte in text, or a placeholder out of
    /// range. Nothing was sent to the server.
    Parameter,
    /// A result value could not be read as the requested Rust type, or the column or row does not
    /// exist.
    Conversion,
    /// The API was used in a way it does not allow (for example returning a connection to a pool
    /// it does not belong to).
    Usage,
    /// The server sent something the client did not expect.
    Protocol,
    /// The pool's queue of waiting callers is full (`max_waiting`): the call was refused at once
    /// instead of queueing (psycopg_pool's `TooManyRequests`).
    TooManyWaiting,
}

/// The psycopg2 exception class that corresponds to a server error's SQLSTATE, for users coming
/// from Momoko.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DbErrorClass {
    /// `psycopg2.DataError`: class 22 (bad value, division by zero, …).
    Data,
    /// `psycopg2.IntegrityError`: class 23 (unique, foreign key, not-null, check violations).
    Integrity,
    /// `psycopg2.InternalError`: invalid transaction state and similar (classes 24, 25, 2B, 2D, 2F,
    /// 38, 39, 3B, F0, P0, XX).
    Internal,
    /// `psycopg2.OperationalError`: operator intervention, resources, connection problems (classes
    /// 08, 26–28, 34, 53–58, HV).
    Operational,
    /// `psycopg2.ProgrammingError`: syntax errors, missing tables/columns, wrong types (classes 20,
    /// 21, 3D, 3F, 42, 44).
    Programming,
    /// `psycopg2.NotSupportedError`: class 0A.
    NotSupported,
    /// `psycopg2.extensions.TransactionRollbackError` (an `OperationalError`): class 40,
    /// serialization failures and deadlocks.
    TransactionRollback,
    /// `psycopg2.extensions.QueryCanceledError` (an `OperationalError`): SQLSTATE 57014.
    QueryCanceled,
    /// `psycopg2.DatabaseError`: anything else.
    Database,
}

impl DbErrorClass {
    /// The class for a five-character SQLSTATE.
    pub fn from_sqlstate(code: &str) -> DbErrorClass {
        let b = code.as_bytes();
        let (c0, c1) = match b {
            [c0, c1, ..] => (*c0, *c1),
            _ => return DbErrorClass::Database,
        };
        match (c0, c1) {
            (b'0', b'8') => DbErrorClass::Operational,
            (b'0', b'A') => DbErrorClass::NotSupported,
            (b'2', b'0') | (b'2', b'1') => DbErrorClass::Programming,
            (b'2', b'2') => DbErrorClass::Data,
            (b'2', b'3') => DbErrorClass::Integrity,
            (b'2', b'4') | (b'2', b'5') | (b'2', b'B') | (b'2', b'D') | (b'2', b'F') => {
                DbErrorClass::Internal
            }
            (b'2', b'6') | (b'2', b'7') | (b'2', b'8') => DbErrorClass::Operational,
            (b'3', b'4') => DbErrorClass::Operational,
            (b'3', b'8') | (b'3', b'9') | (b'3', b'B') => DbErrorClass::Internal,
            (b'3', b'D') | (b'3', b'F') => DbErrorClass::Programming,
            (b'4', b'0') => DbErrorClass::TransactionRollback,
            (b'4', b'2') | (b'4', b'4') => DbErrorClass::Programming,
            (b'5', _) if code == "57014" => DbErrorClass::QueryCanceled,
            (b'5', _) => DbErrorClass::Operational,
            (b'F', _) | (b'P', _) | (b'X', _) => DbErrorClass::Internal,
            (b'H', _) => DbErrorClass::Operational,
            _ => DbErrorClass::Database,
        }
    }

    /// The psycopg2 class name, for example `"IntegrityError"`.
    pub fn psycopg2_name(self) -> &'static str {
        match self {
            DbErrorClass::Data => "DataError",
            DbErrorClass::Integrity => "IntegrityError",
            DbErrorClass::Internal => "InternalError",
            DbErrorClass::Operational => "OperationalError",
            DbErrorClass::Programming => "ProgrammingError",
            DbErrorClass::NotSupported => "NotSupportedError",
            DbErrorClass::TransactionRollback => "TransactionRollbackError",
            DbErrorClass::QueryCanceled => "QueryCanceledError",
            DbErrorClass::Database => "DatabaseError",
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            source: None,
            not_executed: false,
            failed_connections: None,
            batch_statement: None,
        }))
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Error {
        self.0.source = Some(source.into());
        self
    }

    /// Marks the failure as one whose statement provably did not take effect.
    pub(crate) fn not_executed(mut self) -> Error {
        self.0.not_executed = true;
        self
    }

    /// Whether the statement provably did not take effect.
    pub(crate) fn was_not_executed(&self) -> bool {
        self.0.not_executed
    }

    /// Whether the server ended the session while running the statement, which aborts its
    /// transaction (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now).
    pub(crate) fn is_server_termination(&self) -> bool {
        matches!(
            self.code().map(SqlState::code),
            Some("57P01" | "57P02" | "57P03")
        )
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, message)
    }

    pub(crate) fn parameter(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Parameter, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Closed, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Timeout, message)
    }

    pub(crate) fn pool_closed() -> Error {
        Error::new(ErrorKind::PoolClosed, "the pool is closed")
    }

    pub(crate) fn too_many_waiting(limit: usize) -> Error {
        Error::new(
            ErrorKind::TooManyWaiting,
            format!("{limit} caller(s) already wait for a connection (max_waiting)"),
        )
    }

    pub(crate) fn not_available(cause: Option<&Error>) -> Error {
        let e = Error::new(
            ErrorKind::DatabaseNotAvailable,
            "no database connection available",
        );
        match cause {
            Some(c) => e.with_source(c.copy()),
            None => e,
        }
    }

    /// Wraps a tokio-postgres error from running a statement.
    pub(crate) fn from_pg(e: tokio_postgres::Error) -> Error {
        if e.as_db_error().is_some() {
            let kind = match e.code() {
                Some(c) if c.code().starts_with("28") => ErrorKind::Auth,
                _ => ErrorKind::Db,
            };
            let message = e
                .as_db_error()
                .map(|db| format!("{}: {}", db.severity(), db.message()))
                .unwrap_or_default();
            return Error::new(kind, message).with_source(e);
        }
        let text = e.to_string();
        // A message that could not be encoded (a NUL byte in SQL text, …) was never sent and
        // leaves the connection intact.
        if text.starts_with("error encoding message to server") {
            let message = match e.source() {
                Some(s) => format!("{text}: {s}"),
                None => text,
            };
            return Error::new(ErrorKind::Parameter, message)
                .with_source(e)
                .not_executed();
        }
        if let Some(io) = e.source().and_then(find_source::<io::Error>) {
            // "connection closed: Connection reset by peer (os error 104)"
            let message = io.to_string();
            return Error::new(ErrorKind::Closed, message).with_source(e);
        }
        if e.is_closed() {
            return Error::new(ErrorKind::Closed, "the session has ended").with_source(e);
        }
        if text.starts_with("error deserializing column")
            || text.starts_with("invalid column")
            || text.starts_with("query returned an unexpected number")
        {
            let message = match e.source() {
                Some(s) => format!("{text}: {s}"),
                None => text,
            };
            return Error::new(ErrorKind::Conversion, message).with_source(e);
        }
        if let Some(wrong) = find_source::<tokio_postgres::types::WrongType>(&e) {
            let message = format!("{e}: {wrong}");
            return Error::new(ErrorKind::Parameter, message).with_source(e);
        }
        if text.starts_with("error serializing parameter") || text.starts_with("expected ") {
            let message = match e.source() {
                Some(s) => format!("{text}: {s}"),
                None => text,
            };
            return Error::new(ErrorKind::Parameter, message).with_source(e);
        }
        Error::new(ErrorKind::Protocol, text).with_source(e)
    }

    /// Wraps a tokio-postgres error raised while starting a connection to `target`.
    pub(crate) fn from_pg_connect(e: tokio_postgres::Error, target: &str) -> Error {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let kind = if code.starts_with("28") || code == "3D000" {
                ErrorKind::Auth
            } else {
                ErrorKind::Connect
            };
            let message = format!("{target}: {}: {}", db.severity(), db.message());
            return Error::new(kind, message).with_source(e);
        }
        Error::new(ErrorKind::Connect, format!("{target}: {e}")).with_source(e)
    }

    /// The message without the kind's words or any cause: what to quote when this error is
    /// reported inside another one.
    pub(crate) fn message(&self) -> &str {
        &self.0.message
    }

    /// The same kind and message, without the cause (errors are not `Clone`).
    pub(crate) fn copy(&self) -> Error {
        Error::new(self.0.kind, self.0.message.clone())
    }

    pub(crate) fn partially_connected(failed: usize, size: usize) -> Error {
        let mut e = Error::new(
            ErrorKind::PartiallyConnected,
            format!("{failed} of {size} connection(s) failed to connect"),
        );
        e.0.failed_connections = Some(failed);
        e
    }

    /// For [`ErrorKind::PartiallyConnected`], how many of the pool's initial connections failed
    /// (Momoko's `PartiallyConnectedError` says it in its message only). `None` for every other
    /// kind.
    pub fn failed_connections(&self) -> Option<usize> {
        self.0.failed_connections
    }

    /// For a failure inside a batch ([`Connection::batch_atomic`](crate::Connection::batch_atomic)),
    /// the position of the statement that failed, counted from 0. `None` otherwise.
    pub fn batch_statement(&self) -> Option<usize> {
        self.0.batch_statement
    }

    /// Marks the error as statement `index` of a batch of `len`, saying so in its message.
    pub(crate) fn in_batch(mut self, index: usize, len: usize) -> Error {
        self.0.message = format!("statement {} of {len}: {}", index + 1, self.0.message);
        self.0.batch_statement = Some(index);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The error the server sent, if it sent one.
    pub fn as_db_error(&self) -> Option<&DbError> {
        let mut cur: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(e) = cur {
            if let Some(db) = e.downcast_ref::<DbError>() {
                return Some(db);
            }
            if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
                if let Some(db) = pg.as_db_error() {
                    return Some(db);
                }
            }
            cur = e.source();
        }
        None
    }

    /// The SQLSTATE of the server's error, if the server sent one.
    ///
    /// ```
    /// # fn check(err: momoko_core::Error) {
    /// use momoko_core::SqlState;
    /// if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
    ///     // the row exists already
    /// }
    /// # }
    /// ```
    pub fn code(&self) -> Option<&SqlState> {
        self.as_db_error().map(DbError::code)
    }

    /// The psycopg2-style class of the server's error, if the server sent one.
    pub fn db_class(&self) -> Option<DbErrorClass> {
        self.code().map(|c| DbErrorClass::from_sqlstate(c.code()))
    }

    /// The server reported an error for a statement ([`ErrorKind::Db`]).
    pub fn is_db(&self) -> bool {
        self.kind() == ErrorKind::Db
    }

    /// The connection string or a setting is invalid.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }

    /// No connection could be made.
    pub fn is_connect(&self) -> bool {
        self.kind() == ErrorKind::Connect
    }

    /// The server refused the credentials, role or database.
    pub fn is_auth(&self) -> bool {
        self.kind() == ErrorKind::Auth
    }

    /// The connection is closed or broken.
    pub fn is_closed(&self) -> bool {
        self.kind() == ErrorKind::Closed
    }

    /// A timeout fired.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// The pool has no usable connection now.
    pub fn is_database_not_available(&self) -> bool {
        self.kind() == ErrorKind::DatabaseNotAvailable
    }

    /// Some initial pool connections failed.
    pub fn is_partially_connected(&self) -> bool {
        self.kind() == ErrorKind::PartiallyConnected
    }

    /// The pool is closed.
    pub fn is_pool_closed(&self) -> bool {
        self.kind() == ErrorKind::PoolClosed
    }

    /// The pool refused the call at once because `max_waiting` callers already wait.
    pub fn is_too_many_waiting(&self) -> bool {
        self.kind() == ErrorKind::TooManyWaiting
    }

    /// The query parameters were wrong; nothing was sent.
    pub fn is_parameter(&self) -> bool {
        self.kind() == ErrorKind::Parameter
    }

    /// A value could not be converted, or a column or row does not exist.
    pub fn is_conversion(&self) -> bool {
        self.kind() == ErrorKind::Conversion
    }

    /// Whether the failure means the connection it happened on can no longer be used: the
    /// connection is closed, or the server ended the session (SQLSTATE class 08, or `57P01`–`57P03`
    /// administrator shutdown, crash shutdown, cannot connect now).
    pub fn is_connection_lost(&self) -> bool {
        if self.is_closed() {
            return true;
        }
        match self.code() {
            Some(c) => {
                let c = c.code();
                c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
            }
            None => false,
        }
    }
}

fn find_source<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(code) = self.code() {
            d.field("code", &code.code());
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    /// The kind and message, and the SQLSTATE for server errors. Causes are available through
    /// [`std::error::Error::source`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0.kind {
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Connect => "could not connect",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Db => "database error",
            ErrorKind::Closed => "connection closed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::DatabaseNotAvailable => "database not available",
            ErrorKind::PartiallyConnected => "pool partially connected",
            ErrorKind::PoolClosed => "pool closed",
            ErrorKind::Parameter => "invalid parameters",
            ErrorKind::Conversion => "conversion failed",
            ErrorKind::Usage => "invalid use",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::TooManyWaiting => "too many callers waiting",
        };
        if self.0.message.is_empty() {
            f.write_str(what)?;
        } else {
            write!(f, "{what}: {}", self.0.message)?;
        }
        if let Some(db) = self.as_db_error() {
            write!(f, " (SQLSTATE {})", db.code().code())?;
            if let Some(detail) = db.detail() {
                write!(f, "; detail: {detail}")?;
            }
            if let Some(hint) = db.hint() {
                write!(f, "; hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

/// A `Result` with momoko's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_small() {
        fn assert_traits<T: Send + Sync + 'static + StdError>() {}
        assert_traits::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn sqlstate_classes_follow_psycopg2() {
        let cases = [
            ("23505", DbErrorClass::Integrity),
            ("22012", DbErrorClass::Data),
            ("42P01", DbErrorClass::Programming),
            ("42601", DbErrorClass::Programming),
            ("25P02", DbErrorClass::Internal),
            ("28P01", DbErrorClass::Operational),
            ("08006", DbErrorClass::Operational),
            ("40001", DbErrorClass::TransactionRollback),
            ("57014", DbErrorClass::QueryCanceled),
            ("57P01", DbErrorClass::Operational),
            ("0A000", DbErrorClass::NotSupported),
            ("P0001", DbErrorClass::Internal),
            ("XX000", DbErrorClass::Internal),
            ("01000", DbErrorClass::Database),
        ];
        for (code, class) in cases {
            assert_eq!(DbErrorClass::from_sqlstate(code), class, "{code}");
        }
        assert_eq!(DbErrorClass::Integrity.psycopg2_name(), "IntegrityError");
    }

    #[test]
    fn display_names_kind_and_message() {
        let e = Error::timeout("acquire timeout of 5ms elapsed");
        assert_eq!(e.to_string(), "timed out: acquire timeout of 5ms elapsed");
        assert!(e.is_timeout());
        assert!(!e.is_connection_lost());
        assert!(Error::closed("gone").is_connection_lost());
    }
}
