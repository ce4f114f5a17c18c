//! The core of momoko: an asynchronous PostgreSQL connection pool for any async runtime.
//!
//! This crate holds everything that is written once: the runtime seam ([`Executor`]), the
//! standalone [`Connection`] with its [`Cursor`], the [`Pool`], and the one [`Error`] type. It names
//! no runtime. Pick a backend crate (`momoko-tokio`, `momoko-async-std`, `momoko-smol`) or
//! implement [`Executor`] for your own runtime.
//!
//! Placeholders are PostgreSQL's own: `$1`, `$2`, …. Values cross with tokio-postgres'
//! [`ToSql`]/[`FromSql`] traits.
//!
//! Features (none is on by default):
//!
//! * `tls`: TLS through rustls with ring (`sslmode`, `sslrootcert`, client certificates). Without
//!   it, `sslmode=prefer` connects in plain text and the modes that require TLS fail with a
//!   configuration error.
//! * `async-io`: `AsyncIoStream`, sockets of async-io's reactor (smol, async-std) through tokio's
//!   I/O traits.
//! * `from-row`: [`FromRow`] (trait and derive) and the helpers that read rows into structs.
//! * `deadpool`: [`deadpool::Manager`], momoko connections in a deadpool pool.

#![forbid(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "async-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-io")))]
mod async_io;
mod cluster;
mod config;
mod connection;
mod cursor;
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub mod deadpool;
mod error;
mod executor;
mod listener;
mod mogrify;
mod pool;
mod queryable;
mod sql;
mod tls;

#[cfg(feature = "async-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-io")))]
pub use async_io::AsyncIoStream;
pub use cluster::{Cluster, ClusterBuilder};
pub use config::{ConnectOptions, LoadBalanceHosts, TargetSessionAttrs};
pub use connection::{BinaryCopyIn, CopyIn, CopyOut, RowStream};
pub use connection::{
    Connection, IsolationLevel, Param, Query, Transaction, TransactionOptions, TransactionStatus,
};
pub use cursor::{Column, ColumnIndex, Cursor};
pub use error::{DbErrorClass, Error, ErrorKind, Result};
pub use executor::{Executor, PlainSocket, Socket, TcpSocket};
pub use listener::{Listener, ListenerEvent, Notification};
pub use pool::{
    Pool, PoolBuilder, PoolConfig, PoolCounters, PoolStats, PoolStatus, PooledConnection,
    RetryPolicy,
};
pub use queryable::{DynQueryable, Queryable};
pub use tls::SslMode;

/// Reading rows into structs: `#[derive(FromRow)]` maps columns to fields by name (from the
/// postgres-from-row crate; the derived code refers to that crate as `postgres_from_row`, so
/// bring it into scope with `use momoko_core::postgres_from_row;` or depend on it directly).
#[cfg(feature = "from-row")]
#[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
pub use postgres_from_row::{self, FromRow};

pub use futures_core::future::BoxFuture;
pub use tokio_postgres::error::{DbError, SqlState};
pub use tokio_postgres::types::{FromSql, ToSql, Type};
pub use tokio_postgres::Row;

/// tokio-postgres, re-exported for its types (`types::Json`, `Client`, …).
pub use tokio_postgres;
