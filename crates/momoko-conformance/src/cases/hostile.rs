//! Hostile input: malformed DSNs, unknown hosts, wrong parameters, NUL bytes, huge queries, arbitrary values.
//!
//! Every bad input must give a clear error of the right kind (never a panic, never a password in
//! a message), and the pool must stay usable with balanced books afterwards: bad input never
//! costs a connection.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use momoko_core::{ConnectOptions, Connection, DbErrorClass, Error, Param, Pool, Query, SqlState};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::support::{assert_settled, backend_pid, pool_pid, within};
use crate::Ctx;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The error, its `Debug` form and every cause in its chain, as text.
fn all_text(e: &Error) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        text.push_str(&format!(" | {s}"));
        cur = s.source();
    }
    text
}

fn assert_no_secret(e: &Error, secret: &str, what: &str) {
    let text = all_text(e);
    assert!(
        !text.contains(secret),
        "{what}: the password leaked: {text}"
    );
}

/// A shortened, printable form of a DSN for messages.
fn shown(dsn: &str) -> String {
    let s: String = dsn.chars().take(80).collect();
    format!("{s:?}{}", if dsn.len() > 80 { "…" } else { "" })
}

/// The pool answers, nothing is checked out or waiting, and no connection was lost on the way.
async fn assert_usable(ctx: &Ctx, pool: &Pool, opened: u64, what: &str) {
    let v: i32 = pool
        .execute("SELECT $1::int4", &[&17i32])
        .await
        .unwrap_or_else(|e| panic!("the pool is usable after {what}: {e:?}"))
        .scalar()
        .expect("an int");
    assert_eq!(v, 17, "after {what}");
    assert_settled(ctx, pool).await;
    let c = pool.counters();
    assert_eq!(
        (c.connections_opened, c.discarded, c.retries),
        (opened, 0, 0),
        "after {what}: bad input must not cost a connection or be retried: {c:?}"
    );
}

fn expect_parameter(r: Result<impl std::fmt::Debug, Error>, what: &str) -> Error {
    let e = r.expect_err(what);
    assert!(e.is_parameter(), "{what}: a parameter error, got {e:?}");
    assert!(e.code().is_none(), "{what}: not a server error: {e:?}");
    assert!(!e.is_connection_lost(), "{what}: {e:?}");
    e
}

fn expect_db(r: Result<impl std::fmt::Debug, Error>, what: &str, code: &SqlState) -> Error {
    let e = r.expect_err(what);
    assert!(e.is_db(), "{what}: a server error, got {e:?}");
    assert_eq!(e.code(), Some(code), "{what}: {e:?}");
    assert!(!e.is_connection_lost(), "{what}: {e:?}");
    assert!(e.to_string().contains(code.code()), "{what}: {e}");
    e
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    pool.execute(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .scalar()
        .expect("a count")
}

// ---------------------------------------------------------------------------------------------
// Connection strings
// ---------------------------------------------------------------------------------------------

/// Malformed connection strings (bad ports, bad URLs, unbalanced quotes, unknown settings and
/// values, empty host list entries, bad `hostaddr`) are `Config` errors from
/// `ConnectOptions::parse`, `Connection::connect`, `Pool::builder().build()` and `.connect()`,
/// never panics, and never show the password; values with NUL bytes never connect; an unknown
/// host name is a `Connect` error (DNS failure) and the next host of a list is then used.
pub async fn malformed_dsns_and_unknown_hosts(ctx: &Ctx) {
    const PW: &str = "Sup3r-Secret-Pw";
    let malformed = [
        format!("host=a port=notaport password={PW}"),
        format!("host=a port=65536 password={PW}"),
        format!("host=a port=-1 password={PW}"),
        format!("host=a port= password={PW}"),
        format!("password={PW} host=a port=70000"),
        format!("password='{PW}' host=a port=1 port=x"),
        format!("postgresql://u:{PW}@h:99999/db"),
        format!("postgresql://u:{PW}@h:port/db"),
        format!("postgresql://u:{PW}@[::1/db"),
        format!("postgresql://u:{PW}@h/db?sslmode=bogus"),
        format!("postgresql://u:{PW}@h/db?no_such_param=1"),
        format!("postgres://u:{PW}@h:5432,h2:x/db"),
        format!("postgresql://:{PW}@:/"),
        format!("host='unterminated password={PW}"),
        format!("host=a password='{PW}"),
        format!("host=a password={PW} application_name='x"),
        format!("sslmode=bogus password={PW}"),
        format!("host=a,,b port=1,2,3 password={PW}"),
        format!("host=a,,b password={PW}"),
        format!("host=, password={PW}"),
        format!("host='' password={PW}"),
        format!("host=a,b port=1,2,3 password={PW}"),
        format!("host=a port=1,,2 password={PW}"),
        format!("hostaddr=not.an.ip password={PW}"),
        format!("hostaddr=999.1.1.1 password={PW}"),
        format!("hostaddr=1.2.3.4,zz password={PW}"),
        format!("host=a,b hostaddr=1.2.3.4 password={PW}"),
        format!("connect_timeout=abc password={PW}"),
        format!("keepalives=maybe password={PW}"),
        format!("keepalives_idle=x password={PW}"),
        format!("tcp_user_timeout=x password={PW}"),
        format!("target_session_attrs=sometimes password={PW}"),
        format!("channel_binding=bogus password={PW}"),
        format!("nosuchkey=1 password={PW}"),
        format!("=value password={PW}"),
        format!("password={PW} key"),
        format!("a b c password={PW}"),
        "=".to_owned(),
        "'".to_owned(),
        "\\".to_owned(),
        "x".repeat(100_000),
    ];
    for dsn in &malformed {
        let what = shown(dsn);
        let e = ConnectOptions::parse(dsn).expect_err(&what);
        assert!(e.is_config(), "parse {what}: {e:?}");
        assert_no_secret(&e, PW, &what);

        let r = AssertUnwindSafe(Connection::connect(dsn, ctx.executor.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| panic!("Connection::connect panicked on {what}"));
        let e = r.expect_err(&what);
        assert!(e.is_config(), "Connection::connect {what}: {e:?}");
        assert_no_secret(&e, PW, &what);

        let builder = Pool::builder(dsn, ctx.executor.clone()).size(2);
        assert!(!format!("{builder:?}").contains(PW), "{what}: {builder:?}");
        let e = builder.build().expect_err(&what);
        assert!(e.is_config(), "build {what}: {e:?}");
        assert_no_secret(&e, PW, &what);

        let r = AssertUnwindSafe(Pool::builder(dsn, ctx.executor.clone()).size(2).connect())
            .catch_unwind()
            .await
            .unwrap_or_else(|_| panic!("PoolBuilder::connect panicked on {what}"));
        let e = r.expect_err(&what);
        assert!(e.is_config(), "PoolBuilder::connect {what}: {e:?}");
        assert_no_secret(&e, PW, &what);
    }

    // NUL bytes in start-up values against the real server: the start-up message cannot carry
    // them (they would split it into other settings), so no session starts.
    let base = ctx.dsn();
    for extra in [
        "application_name='a\0b'",
        "user='post\0gres'",
        "dbname='x\0options'",
        "options='-c\0work_mem=1MB'",
    ] {
        let dsn = format!("{base} {extra} password={PW}");
        let what = format!("{extra:?}");
        let r = AssertUnwindSafe(within(
            ctx,
            Duration::from_secs(15),
            "a connect with a NUL byte",
            Connection::connect(&dsn, ctx.executor.clone()),
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| panic!("Connection::connect panicked on {what}"));
        let e = r.expect_err(&format!("a NUL byte in {what} cannot reach the server"));
        assert!(e.is_config() || e.is_connect(), "{what}: {e:?}");
        assert!(
            e.code().is_none(),
            "refused before the server saw it: {e:?}"
        );
        assert_no_secret(&e, PW, &what);
    }

    // An unknown host: a connect error naming it, as fast as DNS answers.
    let dsn = format!("host=no-such-host.invalid port=5432 user=u dbname=d password={PW}");
    let t0 = ctx.executor.now();
    let e = within(
        ctx,
        Duration::from_secs(30),
        "a connect to an unknown host",
        Connection::connect(&dsn, ctx.executor.clone()),
    )
    .await
    .expect_err("the host does not exist");
    let took = ctx.executor.now().saturating_duration_since(t0);
    assert!(e.is_connect(), "{e:?}");
    assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    assert!(e.code().is_none(), "{e:?}");
    assert_no_secret(&e, PW, "unknown host");
    let pool_err = within(
        ctx,
        Duration::from_secs(30),
        "a pool on an unknown host",
        Pool::builder(&dsn, ctx.executor.clone()).size(2).connect(),
    )
    .await
    .expect_err("the host does not exist");
    assert!(pool_err.is_partially_connected(), "{pool_err:?}");
    let cause = std::error::Error::source(&pool_err)
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("the DNS failure is the cause: {pool_err:?}"));
    assert!(cause.is_connect(), "{cause:?}");
    assert_no_secret(&pool_err, PW, "unknown host (pool)");

    // In a host list, the unknown host is skipped and the next one is used.
    let options = ConnectOptions::parse(&ctx.dsn()).expect("the test DSN parses");
    let target = options
        .targets()
        .into_iter()
        .next()
        .expect("the test DSN names a host");
    let words: Vec<&str> = target.split_whitespace().collect();
    if let ["host", host, "port", port] = words.as_slice() {
        let listed = format!(
            "{} host=no-such-host.invalid,{host} port={port},{port}",
            ctx.dsn()
        );
        let conn = Connection::connect(&listed, ctx.executor.clone())
            .await
            .expect("the second host of the list is used");
        assert_eq!(conn.target(), format!("host {host} port {port}"));
        conn.ping().await.expect("ping");
    }
    eprintln!("malformed_dsns_and_unknown_hosts: {} malformed DSNs refused; unknown host failed in {took:?}: {e}", malformed.len());
}

// ---------------------------------------------------------------------------------------------
// Parameters and SQL errors
// ---------------------------------------------------------------------------------------------

/// Wrong parameter counts and types through every pool method (`execute`, `callproc`,
/// `transaction`, `transaction_with`, `mogrify`, a `getconn` connection) are `Parameter` errors
/// (or server errors when only the server can tell); transactions are rolled back, and the pool
/// stays usable without losing a connection.
pub async fn wrong_parameters_everywhere(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(2)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE wp (n int PRIMARY KEY)", &[])
        .await
        .expect("create table");
    pool.execute(
        "CREATE FUNCTION wp_add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'",
        &[],
    )
    .await
    .expect("create function");
    let opened = 2;

    let seven = "seven".to_owned();
    let none_text: Option<String> = None;
    let texts = vec!["a".to_owned()];
    let e = expect_parameter(
        pool.execute("SELECT $1::int4", &[]).await,
        "missing parameter",
    );
    assert!(e.to_string().contains("1 parameter"), "{e}");
    assert_usable(ctx, &pool, opened, "a missing parameter").await;
    let e = expect_parameter(
        pool.execute("SELECT $1::int4", &[&1i32, &2i32]).await,
        "extra parameter",
    );
    assert!(e.to_string().contains('2'), "{e}");
    assert_usable(ctx, &pool, opened, "an extra parameter").await;
    let typed: [(&str, Param<'_>, &str); 7] = [
        ("SELECT $1::int4", &seven, "a String as int4"),
        ("SELECT $1::int8", &1i32, "an i32 as int8"),
        ("SELECT $1::int2", &70_000i32, "an i32 as int2"),
        ("SELECT $1::text", &1i32, "an i32 as text"),
        (
            "SELECT $1",
            &1i32,
            "an i32 for an untyped (text) placeholder",
        ),
        ("SELECT $1::int4", &none_text, "a NULL String as int4"),
        ("SELECT $1::int4[]", &texts, "a Vec<String> as int4[]"),
    ];
    for (sql, param, what) in typed {
        expect_parameter(pool.execute(sql, &[param]).await, what);
        assert_usable(ctx, &pool, opened, what).await;
    }
    // Only the server can tell these.
    expect_db(
        pool.execute("SELECT $1::int4 + 'abc'::int4", &[&1i32])
            .await,
        "a bad literal",
        &SqlState::INVALID_TEXT_REPRESENTATION,
    );
    expect_db(
        pool.execute("SELECT $2::int4", &[&1i32]).await,
        "a skipped placeholder",
        &SqlState::INDETERMINATE_DATATYPE,
    );
    expect_db(
        pool.execute("SELECT $0", &[]).await,
        "placeholder $0",
        &SqlState::UNDEFINED_PARAMETER,
    );
    assert_usable(ctx, &pool, opened, "server-side parameter errors").await;

    // callproc: a wrong count is a missing function to the server; a wrong type is ours.
    let e = expect_db(
        pool.callproc("wp_add", &[&1i32]).await,
        "callproc with one argument of two",
        &SqlState::UNDEFINED_FUNCTION,
    );
    assert_eq!(e.db_class(), Some(DbErrorClass::Programming));
    expect_db(
        pool.callproc("wp_add", &[&1i32, &2i32, &3i32]).await,
        "callproc with three arguments of two",
        &SqlState::UNDEFINED_FUNCTION,
    );
    expect_parameter(
        pool.callproc("wp_add", &[&1i32, &"two"]).await,
        "callproc with a text argument for int",
    );
    expect_parameter(
        pool.callproc("wp_add(1, 2); --", &[]).await,
        "callproc with an injected name",
    );
    assert_usable(ctx, &pool, opened, "callproc errors").await;

    // transaction: the good statement before the bad one is rolled back.
    let one: [Param<'_>; 1] = [&1i32];
    let bad: [Param<'_>; 1] = [&"two"];
    expect_parameter(
        pool.transaction([
            Query::new("INSERT INTO wp VALUES ($1)", &one),
            Query::new("INSERT INTO wp VALUES ($1)", &bad),
        ])
        .await,
        "a transaction with a wrong type",
    );
    expect_parameter(
        pool.transaction([
            Query::new("INSERT INTO wp VALUES ($1)", &one),
            Query::new("INSERT INTO wp VALUES ($1)", &[]),
        ])
        .await,
        "a transaction with a missing parameter",
    );
    expect_parameter(
        pool.transaction_with(async |c| {
            c.execute("INSERT INTO wp VALUES ($1)", &[&3i32]).await?;
            c.execute("INSERT INTO wp VALUES ($1)", &[&4i64]).await
        })
        .await,
        "transaction_with with a wrong type",
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM wp").await,
        0,
        "rolled back"
    );
    assert_usable(ctx, &pool, opened, "transaction errors").await;

    // mogrify counts placeholders itself and needs a value it can render.
    expect_parameter(
        pool.mogrify("SELECT $1, $2", &[&1i32]).await,
        "mogrify with a missing parameter",
    );
    expect_parameter(
        pool.mogrify("SELECT $1", &[&1i32, &2i32]).await,
        "mogrify with an extra parameter",
    );
    let hstore: HashMap<String, Option<String>> = HashMap::new();
    expect_parameter(
        pool.mogrify("SELECT $1", &[&hstore]).await,
        "mogrify of a value it cannot type",
    );
    assert_usable(ctx, &pool, opened, "mogrify errors").await;

    // A held connection.
    let conn = pool.getconn().await.expect("getconn");
    let pid: i32 = backend_pid(&conn).await;
    expect_parameter(
        conn.execute("SELECT $1::int4", &[&"x"]).await,
        "a held connection with a wrong type",
    );
    expect_parameter(
        conn.callproc("wp_add", &[&1i32, &"x"]).await,
        "callproc on a held connection",
    );
    let same: i32 = backend_pid(&conn).await;
    assert_eq!(same, pid);
    drop(conn);
    assert_usable(ctx, &pool, opened, "errors on a held connection").await;
}

/// Server errors through every pool method keep their SQLSTATE and psycopg2 class; failed
/// transactions are rolled back, a held connection left in a failed transaction is cleaned up
/// before reuse, and no SQL error costs a connection.
pub async fn sql_errors_in_every_method(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(1)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE se (n int PRIMARY KEY)", &[])
        .await
        .expect("create table");
    let opened = 1;
    let pid: i32 = pool_pid(&pool).await;

    let cases: [(&str, SqlState, DbErrorClass, &str); 5] = [
        (
            "SELECT * FROM no_such_table",
            SqlState::UNDEFINED_TABLE,
            DbErrorClass::Programming,
            "ProgrammingError",
        ),
        (
            "SELEC 1",
            SqlState::SYNTAX_ERROR,
            DbErrorClass::Programming,
            "ProgrammingError",
        ),
        (
            "SELECT 1 / 0",
            SqlState::DIVISION_BY_ZERO,
            DbErrorClass::Data,
            "DataError",
        ),
        (
            "INSERT INTO se VALUES (NULL)",
            SqlState::NOT_NULL_VIOLATION,
            DbErrorClass::Integrity,
            "IntegrityError",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'P0001'; END $$",
            SqlState::RAISE_EXCEPTION,
            DbErrorClass::Internal,
            "InternalError",
        ),
    ];
    for (sql, code, class, name) in &cases {
        let e = expect_db(pool.execute(sql, &[]).await, sql, code);
        assert_eq!(e.db_class(), Some(*class), "{sql}");
        assert_eq!(class.psycopg2_name(), *name);
        assert_usable(ctx, &pool, opened, sql).await;
    }
    pool.execute("INSERT INTO se VALUES (1)", &[])
        .await
        .expect("insert");
    let e = expect_db(
        pool.execute("INSERT INTO se VALUES (1)", &[]).await,
        "a duplicate key",
        &SqlState::UNIQUE_VIOLATION,
    );
    assert_eq!(e.db_class(), Some(DbErrorClass::Integrity));

    // callproc of a missing function.
    let e = expect_db(
        pool.callproc("no_such_function", &[&1i32]).await,
        "callproc of a missing function",
        &SqlState::UNDEFINED_FUNCTION,
    );
    assert_eq!(
        e.db_class().map(DbErrorClass::psycopg2_name),
        Some("ProgrammingError")
    );
    assert_usable(ctx, &pool, opened, "callproc of a missing function").await;

    // transaction: rolled back, the server's error returned.
    let e = expect_db(
        pool.transaction([
            "INSERT INTO se VALUES (2)".into(),
            "INSERT INTO se VALUES (3)".into(),
            "INSERT INTO se VALUES (1)".into(),
        ])
        .await,
        "a transaction with a duplicate key",
        &SqlState::UNIQUE_VIOLATION,
    );
    assert_eq!(e.db_class(), Some(DbErrorClass::Integrity));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM se").await,
        1,
        "rolled back"
    );
    // A deferred constraint fails at COMMIT.
    pool.execute(
        "CREATE TABLE se_deferred (n int UNIQUE DEFERRABLE INITIALLY DEFERRED)",
        &[],
    )
    .await
    .expect("create table");
    expect_db(
        pool.transaction([
            "INSERT INTO se_deferred VALUES (1)".into(),
            "INSERT INTO se_deferred VALUES (1)".into(),
        ])
        .await,
        "a COMMIT that fails",
        &SqlState::UNIQUE_VIOLATION,
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM se_deferred").await, 0);
    assert_usable(ctx, &pool, opened, "failed transactions").await;

    // transaction_with: the body's server error, rolled back.
    let e = expect_db(
        pool.transaction_with(async |c| {
            c.execute("INSERT INTO se VALUES (10)", &[]).await?;
            c.execute("SELECT * FROM no_such_table", &[]).await
        })
        .await,
        "transaction_with with a failing statement",
        &SqlState::UNDEFINED_TABLE,
    );
    assert_eq!(e.db_class(), Some(DbErrorClass::Programming));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM se WHERE n = 10").await,
        0
    );
    assert_usable(ctx, &pool, opened, "a failed transaction_with").await;

    // A held connection left inside a failed transaction block is rolled back on return.
    let conn = pool.getconn().await.expect("getconn");
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.execute("INSERT INTO se VALUES (20)", &[])
        .await
        .expect("insert in the transaction");
    expect_db(
        conn.execute("SELECT * FROM no_such_table", &[]).await,
        "an error inside a held transaction",
        &SqlState::UNDEFINED_TABLE,
    );
    let e = expect_db(
        conn.execute("SELECT 1", &[]).await,
        "a statement in the failed transaction",
        &SqlState::IN_FAILED_SQL_TRANSACTION,
    );
    assert_eq!(e.db_class(), Some(DbErrorClass::Internal));
    drop(conn);
    let conn = pool.getconn().await.expect("getconn again");
    let same: i32 = backend_pid(&conn).await;
    assert_eq!(same, pid, "the same connection was kept, not discarded");
    // SAVEPOINT fails with 25P01 exactly when no transaction block is open.
    expect_db(
        conn.execute("SAVEPOINT probe", &[]).await,
        "the failed transaction was rolled back on return",
        &SqlState::NO_ACTIVE_SQL_TRANSACTION,
    );
    drop(conn);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM se WHERE n = 20").await,
        0
    );
    assert_usable(ctx, &pool, opened, "a failed held transaction").await;
}

/// A `transaction_with` body that swallows a server error and returns `Ok` must not be reported
/// as committed: PostgreSQL answers the `COMMIT` of an aborted transaction with a `ROLLBACK`.
pub async fn swallowed_error_is_not_a_commit(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(1)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE sw (n int)", &[])
        .await
        .expect("create table");
    let r = pool
        .transaction_with(async |c| {
            c.execute("INSERT INTO sw VALUES (1)", &[]).await?;
            // The caller ignores this failure: the transaction is aborted now.
            let _ = c.execute("SELECT * FROM no_such_table", &[]).await;
            Ok(())
        })
        .await;
    let stored = count(&pool, "SELECT count(*) FROM sw").await;
    assert_eq!(stored, 0, "the aborted transaction committed nothing");
    let e = r.expect_err("a COMMIT that rolled back must not be reported as a commit");
    assert!(!e.is_connection_lost(), "{e:?}");
    assert_usable(ctx, &pool, 1, "a swallowed error").await;
}

/// Text with a NUL byte is refused (PostgreSQL text cannot hold it): a `Parameter` error, or the
/// server's `22021` when the bytes reach it; SQL text with a NUL byte is refused without being
/// taken for a lost connection; bytea holds NUL bytes fine. The connection survives every time.
pub async fn nul_bytes_rejected(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(1)
        .connect()
        .await
        .expect("connect the pool");
    pool.execute("CREATE TABLE nul (t text)", &[])
        .await
        .expect("create table");
    pool.execute(
        "CREATE FUNCTION nul_len(t text) RETURNS int LANGUAGE sql AS 'SELECT length(t)'",
        &[],
    )
    .await
    .expect("create function");
    let opened = 1;
    let pid: i32 = pool_pid(&pool).await;
    let nul_param = |r: Result<momoko_core::Cursor, Error>, what: &str| {
        let e = r.expect_err(what);
        let rejected_by_server = e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE);
        assert!(
            e.is_parameter() || rejected_by_server,
            "{what}: a Parameter error or SQLSTATE 22021, got {e:?}"
        );
        assert!(!e.is_connection_lost(), "{what}: {e:?}");
    };
    let owned = "own\0ed".to_owned();
    nul_param(
        pool.execute("SELECT $1::text", &[&"a\0b"]).await,
        "&str with NUL",
    );
    nul_param(
        pool.execute("SELECT $1", &[&owned]).await,
        "String with NUL",
    );
    nul_param(
        pool.execute("INSERT INTO nul VALUES ($1)", &[&"\0"]).await,
        "insert of a lone NUL",
    );
    nul_param(
        pool.callproc("nul_len", &[&"x\0"]).await,
        "callproc with NUL",
    );
    let e = pool
        .transaction([
            "INSERT INTO nul VALUES ('before')".into(),
            ("INSERT INTO nul VALUES ($1)", &[&"a\0b" as Param<'_>][..]).into(),
        ])
        .await
        .expect_err("a transaction with NUL text");
    assert!(
        e.is_parameter() || e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE),
        "{e:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM nul").await,
        0,
        "rolled back"
    );
    let e = pool
        .mogrify("SELECT $1", &[&"a\0b"])
        .await
        .expect_err("mogrify of NUL text");
    assert!(e.is_parameter(), "{e:?}");
    assert!(e.to_string().contains("NUL"), "{e}");
    assert_usable(ctx, &pool, opened, "NUL bytes in parameters").await;

    // bytea holds NUL bytes.
    let bytes = vec![0u8, 1, 0, 0, 255, 0];
    let back: Vec<u8> = pool
        .execute("SELECT $1::bytea", &[&bytes])
        .await
        .expect("bytea with NUL")
        .scalar()
        .expect("bytes");
    assert_eq!(back, bytes);
    let same: i32 = pool_pid(&pool).await;
    assert_eq!(same, pid, "the one connection survived every NUL");
    assert_usable(ctx, &pool, opened, "NUL bytes").await;

    // NUL in the SQL text itself: bad input, refused before anything is sent.
    for sql in ["SELECT 1\0", "SELECT '\0'", "SELECT 1; \0 DROP TABLE nul"] {
        let before = pool.counters();
        let e = pool
            .execute(sql, &[])
            .await
            .expect_err("SQL text with a NUL byte");
        eprintln!(
            "nul_bytes_rejected: {sql:?} gave {e}; counters before {before:?}, after {:?}",
            pool.counters()
        );
        assert!(
            !e.is_connection_lost(),
            "{sql:?}: a NUL in SQL text is bad input, not a lost connection: {e:?}"
        );
        assert!(e.is_parameter() || e.is_db(), "{sql:?}: {e:?}");
        assert_usable(ctx, &pool, opened, "NUL bytes in SQL text").await;
    }
    let conn = pool.getconn().await.expect("getconn");
    let e = conn
        .batch_execute("SELECT 1;\0")
        .await
        .expect_err("batch SQL with a NUL byte");
    assert!(!e.is_connection_lost(), "{e:?}");
    conn.ping().await.expect("the held connection still works");
    drop(conn);
    assert!(
        pool.execute("SELECT to_regclass('nul') IS NOT NULL", &[])
            .await
            .expect("query")
            .scalar::<bool>()
            .expect("a bool"),
        "nothing after the NUL ran"
    );
    assert_usable(ctx, &pool, opened, "NUL bytes in SQL text").await;
}

// ---------------------------------------------------------------------------------------------
// Size
// ---------------------------------------------------------------------------------------------

/// A 10 MiB text parameter, a 10 MiB bytea parameter, and a 10 MiB text literal built by
/// `mogrify` all reach the server intact, on a connection and through the pool.
pub async fn ten_megabyte_query(ctx: &Ctx) {
    const SIZE: usize = 10 * 1024 * 1024;
    let pattern = "it's a \\ back'slash'' $1 -- ; ";
    let big: String = pattern.repeat(SIZE / pattern.len() + 1)[..SIZE].to_owned();
    assert_eq!(big.len(), SIZE);
    let conn = ctx.connect().await;
    let (len, md5): (i32, String) = {
        let c = conn
            .execute("SELECT length($1::text), md5($1::text)", &[&big])
            .await
            .expect("a 10 MiB parameter");
        (
            c.get(0, 0usize).expect("len"),
            c.get(0, 1usize).expect("md5"),
        )
    };
    assert_eq!(len as usize, SIZE);

    let sql = conn
        .mogrify("SELECT length($1::text), md5($1::text)", &[&big])
        .await
        .expect("mogrify 10 MiB");
    assert!(
        sql.len() > 2 * SIZE,
        "the literal is in the text: {}",
        sql.len()
    );
    let c = conn.execute(&sql, &[]).await.expect("a 10 MiB literal");
    assert_eq!(c.get::<i32>(0, 0usize).expect("len") as usize, SIZE);
    assert_eq!(
        c.get::<String>(0, 1usize).expect("md5"),
        md5,
        "the same text"
    );

    let pool = ctx
        .pool_builder()
        .size(1)
        .connect()
        .await
        .expect("connect the pool");
    let c = pool
        .execute(&sql, &[])
        .await
        .expect("a 10 MiB literal on the pool");
    assert_eq!(c.get::<String>(0, 1usize).expect("md5"), md5);
    let c = pool
        .execute("SELECT length($1::text), md5($1::text)", &[&big])
        .await
        .expect("a 10 MiB parameter on the pool");
    assert_eq!(c.get::<i32>(0, 0usize).expect("len") as usize, SIZE);
    assert_eq!(c.get::<String>(0, 1usize).expect("md5"), md5);

    let bytes: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let back: Vec<u8> = pool
        .execute("SELECT $1::bytea", &[&bytes])
        .await
        .expect("10 MiB of bytea")
        .scalar()
        .expect("bytes");
    assert!(back == bytes, "the bytea came back intact");
    assert_usable(ctx, &pool, 1, "10 MiB queries").await;
}

// ---------------------------------------------------------------------------------------------
// Property: mogrify round trips
// ---------------------------------------------------------------------------------------------

/// Characters that matter to SQL quoting, mixed into arbitrary text so that they meet.
fn sql_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\'', '\\', '"', '$', ';', '-', '/', '*', 'E', 'e', '\n', '\r', '\t', ' ', 'x', '0',
        '\u{2bc}', '\u{feff}', '🍑',
    ]);
    prop::collection::vec(prop_oneof![any::<char>(), special], 0..48)
        .prop_map(|chars| chars.into_iter().filter(|c| *c != '\0').collect())
}

/// Generates `n` values of `strategy` deterministically.
fn generate<S: Strategy>(runner: &mut TestRunner, strategy: &S, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| {
            strategy
                .new_tree(runner)
                .expect("generate a value")
                .current()
        })
        .collect()
}

/// For 200 arbitrary strings (any characters but NUL) and 200 arbitrary byte strings, generated
/// with a fixed seed, `mogrify` renders SQL that reads back exactly the same value, with
/// `standard_conforming_strings` on and off; 200 strings with a NUL byte are `Parameter` errors.
pub async fn mogrify_property_round_trip(ctx: &Ctx) {
    const CASES: u32 = 200;
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let texts = generate(&mut runner, &sql_text(), CASES as usize);
    let with_nul = generate(
        &mut runner,
        &(sql_text(), sql_text()).prop_map(|(a, b)| format!("{a}\0{b}")),
        CASES as usize,
    );
    let bytes = generate(
        &mut runner,
        &prop::collection::vec(any::<u8>(), 0..256),
        CASES as usize,
    );

    let conn = ctx.connect().await;
    let mut checked = 0;
    for conforming in ["on", "off"] {
        conn.batch_execute(&format!("SET standard_conforming_strings = {conforming}"))
            .await
            .expect("set standard_conforming_strings");
        for s in &texts {
            for template in ["SELECT $1", "SELECT $1::text"] {
                let sql = conn
                    .mogrify(template, &[s])
                    .await
                    .unwrap_or_else(|e| panic!("mogrify {template} with {s:?}: {e:?}"));
                let back: String = conn
                    .execute(&sql, &[])
                    .await
                    .unwrap_or_else(|e| {
                        panic!("running {sql:?} (from {s:?}, scs {conforming}): {e:?}")
                    })
                    .scalar()
                    .unwrap_or_else(|e| panic!("reading back {s:?} from {sql:?}: {e:?}"));
                assert!(
                    back == *s,
                    "scs {conforming}: {s:?} mogrified to {sql:?} read back as {back:?}"
                );
                checked += 1;
            }
        }
        for b in &bytes {
            let sql = conn
                .mogrify("SELECT $1", &[b])
                .await
                .unwrap_or_else(|e| panic!("mogrify bytes {b:?}: {e:?}"));
            let back: Vec<u8> = conn
                .execute(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("running {sql:?} (from {b:?}, scs {conforming}): {e:?}"))
                .scalar()
                .unwrap_or_else(|e| panic!("reading back {b:?} from {sql:?}: {e:?}"));
            assert!(
                back == *b,
                "scs {conforming}: {b:?} mogrified to {sql:?} read back as {back:?}"
            );
            checked += 1;
        }
    }
    for s in &with_nul {
        let e = conn
            .mogrify("SELECT $1", &[s])
            .await
            .expect_err(&format!("text with NUL cannot be rendered: {s:?}"));
        assert!(e.is_parameter(), "{s:?}: {e:?}");
    }
    conn.ping().await.expect("still usable");
    eprintln!(
        "mogrify_property_round_trip: {checked} round trips ({} strings, {} byte strings, both \
         standard_conforming_strings settings), {} NUL strings refused; longest string {} chars",
        texts.len(),
        bytes.len(),
        with_nul.len(),
        texts.iter().map(|s| s.chars().count()).max().unwrap_or(0)
    );
}
