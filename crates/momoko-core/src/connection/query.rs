//! What a statement is given: its parameters ([`Param`]) and, for transactions, the statement
//! with its parameters ([`Query`]).

use std::fmt;

use tokio_postgres::types::ToSql;

/// A query parameter: anything tokio-postgres can send (`i32`, `&str`, `Vec<u8>`,
/// `serde_json::Value`, `Option<T>` for NULL, arrays, …).
pub type Param<'a> = &'a (dyn ToSql + Sync);

/// One statement of a [`Connection::transaction`](crate::Connection::transaction): SQL text and its parameters.
///
/// Built from a `&str` (no parameters) or with [`Query::new`]:
///
/// ```
/// use momoko_core::Query;
/// let statements = [
///     "CREATE TEMP TABLE t (n int, word text)".into(),
///     Query::new("INSERT INTO t VALUES ($1, $2)", &[&1i32, &"one"]),
/// ];
/// ```
#[derive(Clone, Copy)]
pub struct Query<'a> {
    /// The SQL text, with `$1, $2, …` placeholders.
    pub sql: &'a str,
    /// The parameters, one per placeholder.
    pub params: &'a [Param<'a>],
}

impl<'a> Query<'a> {
    /// A statement with parameters.
    pub fn new(sql: &'a str, params: &'a [Param<'a>]) -> Query<'a> {
        Query { sql, params }
    }
}

impl<'a> From<&'a str> for Query<'a> {
    fn from(sql: &'a str) -> Query<'a> {
        Query { sql, params: &[] }
    }
}

impl<'a> From<&'a String> for Query<'a> {
    fn from(sql: &'a String) -> Query<'a> {
        Query { sql, params: &[] }
    }
}

impl<'a> From<(&'a str, &'a [Param<'a>])> for Query<'a> {
    fn from((sql, params): (&'a str, &'a [Param<'a>])) -> Query<'a> {
        Query { sql, params }
    }
}

impl<'a, const N: usize> From<(&'a str, &'a [Param<'a>; N])> for Query<'a> {
    fn from((sql, params): (&'a str, &'a [Param<'a>; N])) -> Query<'a> {
        Query { sql, params }
    }
}

impl fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("sql", &self.sql)
            .field("params", &self.params.len())
            .finish()
    }
}
