//! One query trait for everything that runs statements: [`Queryable`] (generic code, no
//! allocation per call) and its object-safe form [`DynQueryable`] (trait objects, one boxed
//! future per call).
//!
//! Why two traits: a trait whose methods return `impl Future` (native async functions in
//! traits) cannot be a trait object, because each implementation returns a future of a different
//! type and size. Boxing every future would make it object-safe, at the cost of one allocation
//! per call for everyone, including the generic code that never needed a trait object. So
//! [`Queryable`] is native and generic, and [`DynQueryable`], implemented for every
//! `Queryable`, boxes; `dyn DynQueryable` is itself `Queryable`, so code written once against
//! `Queryable` accepts it too. (No `async-trait`: the boxing is a few lines here.)

use std::future::Future;

use futures_core::future::BoxFuture;
use tokio_postgres::types::FromSqlOwned;

use crate::connection::{Connection, Param, RowStream, Transaction};
use crate::cursor::Cursor;
use crate::error::Result;
use crate::pool::{Pool, PooledConnection};

/// Something statements run on: a [`Pool`], a [`Connection`], a held [`PooledConnection`], or
/// a [`Transaction`] (compare deadpool-postgres' `GenericClient` and sqlx's `Executor`). Write
/// application code once, generic over it:
///
/// ```no_run
/// use momoko_core::{Queryable, Result};
///
/// async fn greeting(db: &impl Queryable, name: &str) -> Result<String> {
///     db.fetch_scalar("SELECT 'hello, ' || $1", &[&name]).await
/// }
///
/// # async fn demo(pool: &momoko_core::Pool, conn: &mut momoko_core::Connection) -> Result<()> {
/// greeting(pool, "pool").await?;
/// greeting(&*conn, "connection").await?;
/// let tx = pool.begin().await?;
/// greeting(&tx, "transaction").await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// Parameters are `&[&value, …]` as for the inherent methods: `&[&"hello", &42i32]` needs no
/// casts. Every future is `Send`, so the functions you write with it can run on multi-threaded
/// executors. The methods mean what the inherent methods of the same names mean; on a pool,
/// each call takes a connection of its own (two calls are not one transaction: use
/// [`Pool::begin`] for that).
///
/// Not object-safe (see the module documentation); use [`DynQueryable`] for trait objects.
/// Sealed: implemented by momoko's types only, so methods can be added without breaking you.
pub trait Queryable: Send + Sync + sealed::Sealed {
    /// Runs one statement and returns its result (see [`Connection::execute`]).
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send;

    /// Calls a function by name (see [`Connection::callproc`]).
    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send;

    /// Renders the statement with its parameters as literals (see [`Connection::mogrify`]).
    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send;

    /// Runs statements separated by semicolons, without parameters, discarding results (see
    /// [`Connection::batch_execute`]).
    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send;

    /// Runs one statement and streams its rows as they arrive (see
    /// [`Connection::execute_stream`]); on a pool, the stream holds a connection until dropped.
    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send;

    /// The first column of the first row, as `T` (`SELECT count(*) …`).
    ///
    /// # Errors
    ///
    /// As [`execute`](Queryable::execute); [`ErrorKind::Conversion`](crate::ErrorKind::Conversion)
    /// when there is no row or the value is not a `T`.
    fn fetch_scalar<T: FromSqlOwned + Send>(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<T>> + Send {
        let result = self.execute(sql, params);
        async move { result.await?.scalar::<T>() }
    }

    /// Every row, each read into a `T` by its column names (see [`FromRow`](crate::FromRow)).
    ///
    /// # Errors
    ///
    /// As [`execute`](Queryable::execute); [`ErrorKind::Conversion`](crate::ErrorKind::Conversion)
    /// when a row does not fit `T`.
    #[cfg(feature = "from-row")]
    #[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
    fn fetch_all<T: crate::FromRow + Send>(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<T>>> + Send {
        let result = self.execute(sql, params);
        async move { result.await?.fetch_as::<T>() }
    }

    /// The one row of the result as a `T`.
    ///
    /// # Errors
    ///
    /// As [`fetch_all`](Queryable::fetch_all), and
    /// [`ErrorKind::Conversion`](crate::ErrorKind::Conversion) when the result has no row.
    #[cfg(feature = "from-row")]
    #[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
    fn fetch_one<T: crate::FromRow + Send>(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<T>> + Send {
        let result = self.execute(sql, params);
        async move {
            result.await?.fetchone_as::<T>()?.ok_or_else(|| {
                crate::Error::new(crate::ErrorKind::Conversion, "the result has no row")
            })
        }
    }

    /// The first row of the result as a `T`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// As [`fetch_all`](Queryable::fetch_all).
    #[cfg(feature = "from-row")]
    #[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
    fn fetch_optional<T: crate::FromRow + Send>(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<T>>> + Send {
        let result = self.execute(sql, params);
        async move { result.await?.fetchone_as::<T>() }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Pool {}
    impl Sealed for super::Connection {}
    impl Sealed for super::PooledConnection {}
    impl Sealed for super::Transaction<'_> {}
    impl<Q: Sealed + ?Sized> Sealed for &Q {}
    impl Sealed for dyn super::DynQueryable + '_ {}
    #[cfg(feature = "deadpool")]
    impl Sealed for crate::deadpool::Object {}
}

impl Queryable for Connection {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::execute(self, sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::callproc(self, name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        Connection::mogrify(self, sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        Connection::batch_execute(self, sql)
    }

    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send {
        Connection::execute_stream(self, sql, params)
    }
}

impl Queryable for PooledConnection {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::execute(self, sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::callproc(self, name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        Connection::mogrify(self, sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        Connection::batch_execute(self, sql)
    }

    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send {
        Connection::execute_stream(self, sql, params)
    }
}

impl Queryable for Transaction<'_> {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::execute(self, sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::callproc(self, name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        Connection::mogrify(self, sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        Connection::batch_execute(self, sql)
    }

    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send {
        Connection::execute_stream(self, sql, params)
    }
}

impl Queryable for Pool {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Pool::execute(self, sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Pool::callproc(self, name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        Pool::mogrify(self, sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        Pool::batch_execute(self, sql)
    }

    async fn execute_stream(&self, sql: &str, params: &[Param<'_>]) -> Result<RowStream<'_>> {
        // The stream holds a pooled connection ('static), offered here for `self`'s lifetime.
        Pool::execute_stream(self, sql, params).await
    }
}

/// A connection of a deadpool pool of momoko connections.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl Queryable for crate::deadpool::Object {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::execute(self, sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        Connection::callproc(self, name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        Connection::mogrify(self, sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        Connection::batch_execute(self, sql)
    }

    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send {
        Connection::execute_stream(self, sql, params)
    }
}

/// A reference runs what its target runs.
impl<Q: Queryable + ?Sized> Queryable for &Q {
    fn execute(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        (**self).execute(sql, params)
    }

    fn callproc(
        &self,
        name: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Cursor>> + Send {
        (**self).callproc(name, params)
    }

    fn mogrify(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<String>> + Send {
        (**self).mogrify(sql, params)
    }

    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).batch_execute(sql)
    }

    fn execute_stream(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<RowStream<'_>>> + Send {
        (**self).execute_stream(sql, params)
    }
}

/// [`Queryable`] as a trait object: the same methods (their names end in `_dyn`, so they never
/// clash with `Queryable`'s), each returning a boxed future. Implemented for every
/// `Queryable`; `dyn DynQueryable` is `Queryable` again, so generic code accepts it.
///
/// ```no_run
/// use momoko_core::{DynQueryable, Queryable};
///
/// async fn count(db: &dyn DynQueryable) -> momoko_core::Result<i64> {
///     db.fetch_scalar("SELECT count(*) FROM pg_class", &[]).await
/// }
///
/// # async fn demo(pool: &momoko_core::Pool, conn: &momoko_core::Connection) -> momoko_core::Result<()> {
/// let targets: [&dyn DynQueryable; 2] = [pool, conn];
/// for db in targets {
///     count(db).await?;
/// }
/// # Ok(()) }
/// ```
pub trait DynQueryable: Send + Sync {
    /// [`Queryable::execute`], boxed.
    fn execute_dyn<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Cursor>>;

    /// [`Queryable::callproc`], boxed.
    fn callproc_dyn<'a>(
        &'a self,
        name: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Cursor>>;

    /// [`Queryable::mogrify`], boxed.
    fn mogrify_dyn<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<String>>;

    /// [`Queryable::batch_execute`], boxed.
    fn batch_execute_dyn<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<()>>;

    /// [`Queryable::execute_stream`], boxed; the stream borrows only `self`.
    fn execute_stream_dyn<'s: 'a, 'a>(
        &'s self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<RowStream<'s>>>;
}

impl<Q: Queryable> DynQueryable for Q {
    fn execute_dyn<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Cursor>> {
        Box::pin(self.execute(sql, params))
    }

    fn callproc_dyn<'a>(
        &'a self,
        name: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<Cursor>> {
        Box::pin(self.callproc(name, params))
    }

    fn mogrify_dyn<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.mogrify(sql, params))
    }

    fn batch_execute_dyn<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.batch_execute(sql))
    }

    fn execute_stream_dyn<'s: 'a, 'a>(
        &'s self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> BoxFuture<'a, Result<RowStream<'s>>> {
        Box::pin(self.execute_stream(sql, params))
    }
}

impl Queryable for dyn DynQueryable + '_ {
    async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<Cursor> {
        // An `async fn`: the boxed future lives as long as the shortest of the borrows, which
        // only an async body (capturing them all) can return.
        self.execute_dyn(sql, params).await
    }

    async fn callproc(&self, name: &str, params: &[Param<'_>]) -> Result<Cursor> {
        self.callproc_dyn(name, params).await
    }

    async fn mogrify(&self, sql: &str, params: &[Param<'_>]) -> Result<String> {
        self.mogrify_dyn(sql, params).await
    }

    async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.batch_execute_dyn(sql).await
    }

    async fn execute_stream(&self, sql: &str, params: &[Param<'_>]) -> Result<RowStream<'_>> {
        self.execute_stream_dyn(sql, params).await
    }
}
