//! Query results, read like a DB-API cursor.

use std::fmt;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Row, SimpleQueryMessage, SimpleQueryRow, Statement};

use crate::error::{Error, ErrorKind, Result};

/// The result of one statement: its rows, how many rows it affected, and the column description.
///
/// The methods follow Python's DB-API cursor that Momoko users know: [`fetchone`](Cursor::fetchone),
/// [`fetchmany`](Cursor::fetchmany) and [`fetchall`](Cursor::fetchall) move a read position forward;
/// [`rowcount`](Cursor::rowcount) and [`description`](Cursor::description) describe the result.
/// Rows are [`Row`]s from tokio-postgres: read a column with `row.get::<_, T>(index_or_name)` or
/// `row.try_get`. The cursor is also an iterator over the rows not fetched yet.
///
/// All rows are in memory once the statement finished. For results too big for that, use a
/// server-side cursor (`DECLARE … CURSOR` and `FETCH n`) on a held connection.
///
/// ```no_run
/// # async fn demo(conn: &momoko_core::Connection) -> momoko_core::Result<()> {
/// let mut cursor = conn.execute("SELECT n, n * n FROM generate_series(1, 5) AS n", &[]).await?;
/// assert_eq!(cursor.rowcount(), Some(5));
/// assert_eq!(cursor.description()[0].name(), "n");
/// let first = cursor.fetchone().map(|row| row.get::<_, i32>(0));
/// assert_eq!(first, Some(1));
/// let two = cursor.fetchmany(2).len();
/// let square: i32 = cursor.get(3, 1)?; // row 3, column 1, wherever the read position is
/// for row in cursor { // the rows not fetched yet
///     let n: i32 = row.get(0);
/// }
/// # Ok(()) }
/// ```
pub struct Cursor {
    rows: Vec<Row>,
    position: usize,
    rowcount: Option<u64>,
    statement: Option<Statement>,
    /// The last statement's rows, as text, when several statements ran on the simple protocol.
    text_rows: Vec<SimpleQueryRow>,
}

/// A column of a result: its name and type (`cursor.description()`).
pub use tokio_postgres::Column;

impl Cursor {
    pub(crate) fn new(
        rows: Vec<Row>,
        rows_affected: Option<u64>,
        statement: Option<Statement>,
    ) -> Cursor {
        Cursor {
            rows,
            position: 0,
            rowcount: rows_affected,
            statement,
            text_rows: Vec::new(),
        }
    }

    /// The result of several statements run with the simple protocol: the last statement's
    /// count and rows (text), as psycopg2 reports them.
    pub(crate) fn from_simple(messages: Vec<SimpleQueryMessage>) -> Cursor {
        let mut text_rows = Vec::new();
        let mut rowcount = None;
        let mut finished = false;
        for m in messages {
            match m {
                SimpleQueryMessage::Row(r) => {
                    if finished {
                        text_rows.clear();
                        finished = false;
                    }
                    text_rows.push(r);
                }
                SimpleQueryMessage::CommandComplete(n) => {
                    if finished {
                        text_rows.clear();
                    }
                    rowcount = Some(n);
                    finished = true;
                }
                _ => {}
            }
        }
        Cursor {
            rows: Vec::new(),
            position: 0,
            rowcount,
            statement: None,
            text_rows,
        }
    }

    /// The next row, or `None` when every row has been read.
    pub fn fetchone(&mut self) -> Option<&Row> {
        let row = self.rows.get(self.position)?;
        self.position += 1;
        Some(row)
    }

    /// Up to `n` next rows (fewer at the end).
    pub fn fetchmany(&mut self, n: usize) -> &[Row] {
        let start = self.position.min(self.rows.len());
        let end = start.saturating_add(n).min(self.rows.len());
        self.position = end;
        &self.rows[start..end]
    }

    /// Every row not read yet.
    pub fn fetchall(&mut self) -> &[Row] {
        let start = self.position.min(self.rows.len());
        self.position = self.rows.len();
        &self.rows[start..]
    }

    /// For statements that return rows, the number of rows; for `INSERT`, `UPDATE`, `DELETE` and
    /// the like, the number of rows affected (as in DB-API's `rowcount`). `None` when the server
    /// gave no count (DB-API's `-1`): statements like `CREATE TABLE` or `SET` report none. (One
    /// exception: a statement without a count that ran while other calls were in flight on the
    /// same connection, which only a connection shared by concurrent callers or pipelining
    /// does, reports `Some(0)`: its count cannot be told from the others'.)
    pub fn rowcount(&self) -> Option<u64> {
        self.rowcount
    }

    /// The rows of the last statement of a multi-statement string (`execute` without
    /// parameters of `"…; SELECT …"`), which runs on the simple protocol: its values come as text
    /// and are read here (`row.get(i) -> Option<&str>`), while [`fetchone`](Cursor::fetchone)
    /// and the other typed accessors see no rows. Empty for every other result.
    pub fn text_rows(&self) -> &[SimpleQueryRow] {
        &self.text_rows
    }

    /// The result's columns (name and type); empty for statements that return no rows.
    pub fn description(&self) -> &[Column] {
        match &self.statement {
            Some(s) => s.columns(),
            // An unnamed statement (a transaction pooler's): its rows carry the description.
            None => self.rows.first().map_or(&[], Row::columns),
        }
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.description().iter().map(Column::name).collect()
    }

    /// The column types, in order.
    pub fn column_types(&self) -> Vec<&Type> {
        self.description().iter().map(Column::type_).collect()
    }

    /// The value at `row` (counted from the first row of the result, whatever has been fetched) and
    /// `column` (an index or a name), as `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conversion`] when the row or column does not exist or the value cannot be read
    /// as `T` (including NULL into a non-`Option` type).
    pub fn get<'a, T: FromSql<'a>>(&'a self, row: usize, column: impl ColumnIndex) -> Result<T> {
        let r = self.rows.get(row).ok_or_else(|| {
            Error::new(
                ErrorKind::Conversion,
                format!(
                    "row {row} does not exist: the result has {} rows",
                    self.rows.len()
                ),
            )
        })?;
        column.get_from(r)
    }

    /// The first column of the first row as `T`: handy for `SELECT count(*)` and the like.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conversion`] when there is no row or the value cannot be read as `T`.
    pub fn scalar<'a, T: FromSql<'a>>(&'a self) -> Result<T> {
        self.get(0, 0usize)
    }

    /// Every row not fetched yet, each read into a `T` by column name (see
    /// [`FromRow`](crate::FromRow)); moves the read position to the end, like
    /// [`fetchall`](Cursor::fetchall).
    ///
    /// ```no_run
    /// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
    /// use momoko_core::postgres_from_row; // the derive refers to it by this name
    ///
    /// #[derive(momoko_core::FromRow)]
    /// struct Item { id: i32, name: String }
    ///
    /// let mut cursor = pool.execute("SELECT id, name FROM item", &[]).await?;
    /// let items: Vec<Item> = cursor.fetch_as()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conversion`] when a row lacks a column of `T` or a value does not fit; the
    /// read position is then unchanged.
    #[cfg(feature = "from-row")]
    #[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
    pub fn fetch_as<T: crate::FromRow>(&mut self) -> Result<Vec<T>> {
        let start = self.position.min(self.rows.len());
        let typed = self.rows[start..]
            .iter()
            .map(|row| T::try_from_row(row).map_err(Error::from_pg))
            .collect::<Result<Vec<T>>>()?;
        self.position = self.rows.len();
        Ok(typed)
    }

    /// The next row read into a `T` (see [`fetch_as`](Cursor::fetch_as)), or `None` when every
    /// row has been read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conversion`] when the row does not fit `T`; the read position is then
    /// unchanged.
    #[cfg(feature = "from-row")]
    #[cfg_attr(docsrs, doc(cfg(feature = "from-row")))]
    pub fn fetchone_as<T: crate::FromRow>(&mut self) -> Result<Option<T>> {
        let Some(row) = self.rows.get(self.position) else {
            return Ok(None);
        };
        let typed = T::try_from_row(row).map_err(Error::from_pg)?;
        self.position += 1;
        Ok(Some(typed))
    }

    /// Every row of the result, whatever has been fetched.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// How many rows have not been fetched yet.
    pub fn remaining(&self) -> usize {
        self.rows.len().saturating_sub(self.position)
    }

    /// Moves the read position back to the first row.
    pub fn rewind(&mut self) {
        self.position = 0;
    }

    /// Takes every row of the result out of the cursor.
    pub fn into_rows(self) -> Vec<Row> {
        self.rows
    }
}

impl Iterator for Cursor {
    type Item = Row;

    /// The next row not fetched yet, by value.
    fn next(&mut self) -> Option<Row> {
        // Rows before the position stay in place so `get` keeps working on them.
        let row = self.rows.get(self.position)?.clone();
        self.position += 1;
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Cursor {}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("columns", &self.column_names())
            .field("rows", &self.rows.len())
            .field("position", &self.position)
            .field("rowcount", &self.rowcount)
            .finish()
    }
}

/// A column index for [`Cursor::get`]: a position (`usize`) or a name (`&str`).
pub trait ColumnIndex: sealed::Sealed {
    #[doc(hidden)]
    fn get_from<'a, T: FromSql<'a>>(&self, row: &'a Row) -> Result<T>;
}

impl ColumnIndex for usize {
    fn get_from<'a, T: FromSql<'a>>(&self, row: &'a Row) -> Result<T> {
        row.try_get(*self).map_err(Error::from_pg)
    }
}

impl ColumnIndex for &str {
    fn get_from<'a, T: FromSql<'a>>(&self, row: &'a Row) -> Result<T> {
        row.try_get(*self).map_err(Error::from_pg)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &str {}
}
