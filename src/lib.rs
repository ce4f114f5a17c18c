//! # momoko
//!
//! An asynchronous PostgreSQL connection pool for any async runtime, in the spirit of Momoko for
//! Python's Tornado: every call is a future; a [`Pool`] spreads queries over several connections,
//! queues callers first-in first-out when all are busy, stretches up to a maximum, shrinks idle
//! extras, reopens dead connections by itself and retries a statement that failed on a dead
//! connection when that is safe. Transactions, `callproc`, `mogrify`, session set-up statements,
//! `getconn`/`putconn`, and server-side cursors are all here.
//!
//! The runtime is a choice of backend, behind a feature:
//!
//! | feature | module | executor |
//! |---|---|---|
//! | `tokio` (default) | `momoko::tokio` | `TokioExecutor` |
//! | `async-std` | `momoko::async_std` | `AsyncStdExecutor` |
//! | `smol` | `momoko::smol` | `SmolExecutor` |
//!
//! Any other runtime plugs in by implementing [`Executor`]. The `tls` feature turns on TLS
//! (rustls with ring) for every backend; without it, `sslmode=prefer` connects in plain text and
//! the modes that require TLS fail with a configuration error.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo() -> momoko::Result<()> {
//! let pool = momoko::tokio::pool("host=localhost dbname=app user=app")
//!     .size(2)
//!     .max_size(8)
//!     .connect()
//!     .await?;
//! let mut cursor = pool.execute("SELECT $1::int4 + 1", &[&41i32]).await?;
//! assert_eq!(cursor.fetchone().map(|row| row.get::<_, i32>(0)), Some(42));
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use momoko_core::*;

/// The tokio backend.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio {
    pub use momoko_tokio::{connect, TokioExecutor};

    /// A [`PoolBuilder`](crate::PoolBuilder) for `dsn` on the current tokio runtime.
    pub fn pool(dsn: &str) -> crate::PoolBuilder {
        crate::Pool::builder(dsn, TokioExecutor::shared())
    }
}

/// The async-std backend (async-std is discontinued upstream; prefer smol for new code).
#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
pub mod async_std {
    pub use momoko_async_std::{connect, AsyncStdExecutor};

    /// A [`PoolBuilder`](crate::PoolBuilder) for `dsn` on async-std.
    pub fn pool(dsn: &str) -> crate::PoolBuilder {
        crate::Pool::builder(dsn, AsyncStdExecutor::shared())
    }
}

/// The smol backend.
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol {
    pub use momoko_smol::{connect, SmolExecutor};

    /// A [`PoolBuilder`](crate::PoolBuilder) for `dsn` on smol.
    pub fn pool(dsn: &str) -> crate::PoolBuilder {
        crate::Pool::builder(dsn, SmolExecutor::shared())
    }
}

/// The README's examples, compiled and run as doctests so that they cannot rot. They are written
/// for the default backend, tokio.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
