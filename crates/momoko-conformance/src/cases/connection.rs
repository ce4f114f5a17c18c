//! The standalone [`Connection`] and its [`Cursor`]: connecting (TCP, Unix socket, host lists,
//! timeouts, authentication, bad strings), the DB-API cursor methods, parameter types, `callproc`,
//! `mogrify`, transactions, server-side cursors, errors, the statement cache, cancel and close.

use std::fmt::Debug;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use futures::channel::oneshot;
use momoko_core::{
    ConnectOptions, Connection, Cursor, DbErrorClass, Error, FromSql, Param, Query, SqlState,
    ToSql, Type,
};
use momoko_testkit::{Cluster, ClusterOptions, FaultProxy};
use serde_json::json;

use crate::support::{dead_port, off_thread, scalar};
use crate::Ctx;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Where the case's database is reachable over TCP, taken apart so that DSNs around it can be
/// built (other ports, host lists).
#[derive(Debug)]
struct TcpParts {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    password: Option<String>,
}

/// Quotes a value for a key/value connection string.
fn kv(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn tcp_parts(ctx: &Ctx) -> TcpParts {
    let dsn = ctx.dsn();
    let options = ConnectOptions::parse(&dsn).expect("the test DSN parses");
    let targets = options.targets();
    let first = targets.first().expect("the test DSN names a host");
    // `targets()` reads like "host 127.0.0.1 port 5432".
    let words: Vec<&str> = first.split_whitespace().collect();
    let (host, port) = match words.as_slice() {
        ["host", host, "port", port] => (host.to_string(), port.parse().expect("a port number")),
        _ => panic!("the test DSN is not a TCP DSN: {first}"),
    };
    let pg = options.as_tokio_postgres();
    TcpParts {
        host,
        port,
        user: options
            .get_user()
            .expect("the test DSN has a user")
            .to_owned(),
        dbname: options
            .get_dbname()
            .expect("the test DSN has a database")
            .to_owned(),
        password: pg
            .get_password()
            .map(|p| String::from_utf8(p.to_vec()).expect("a UTF-8 password")),
    }
}

impl TcpParts {
    /// The rest of a key/value DSN after `host` and `port`: user, database and password.
    fn credentials(&self) -> String {
        let mut s = format!("user={} dbname={}", kv(&self.user), kv(&self.dbname));
        if let Some(pw) = &self.password {
            s.push_str(&format!(" password={}", kv(pw)));
        }
        s
    }

    fn socket_addr(&self) -> SocketAddr {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return SocketAddr::new(ip, self.port);
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .expect("resolve the test host")
            .next()
            .expect("the test host has an address")
    }
}

async fn count(conn: &Connection, sql: &str) -> i64 {
    scalar::<i64>(conn, sql, &[]).await
}

/// `SELECT $1::{cast}` with `value`, read back as `T`.
async fn round_trip<T>(conn: &Connection, cast: &str, value: &T) -> T
where
    T: ToSql + Sync + for<'a> FromSql<'a> + Debug,
{
    let sql = format!("SELECT $1::{cast}");
    let cursor = conn
        .execute(&sql, &[value])
        .await
        .unwrap_or_else(|e| panic!("{sql} with {value:?}: {e}"));
    assert_eq!(cursor.column_types().len(), 1, "{sql}");
    cursor
        .scalar::<T>()
        .unwrap_or_else(|e| panic!("reading back {value:?} from {sql}: {e}"))
}

async fn assert_round_trip<T>(conn: &Connection, cast: &str, value: T)
where
    T: ToSql + Sync + for<'a> FromSql<'a> + Debug + PartialEq,
{
    let back = round_trip(conn, cast, &value).await;
    assert_eq!(back, value, "round trip through {cast}");
}

/// `mogrify(sql, [value])`, then runs the resulting SQL without parameters and reads the value
/// back as `T`. Also runs `sql` with the parameter, so the two can be compared.
async fn via_mogrify<T>(conn: &Connection, sql: &str, value: &T) -> (T, T, String)
where
    T: ToSql + Sync + for<'a> FromSql<'a> + Debug,
{
    let text = conn
        .mogrify(sql, &[value])
        .await
        .unwrap_or_else(|e| panic!("mogrify {sql:?} with {value:?}: {e}"));
    let cursor = conn
        .execute(&text, &[])
        .await
        .unwrap_or_else(|e| panic!("running mogrified {text:?} (from {value:?}): {e}"));
    let back = cursor
        .scalar::<T>()
        .unwrap_or_else(|e| panic!("reading back {value:?} from {text:?}: {e}"));
    let direct = scalar::<T>(conn, sql, &[value]).await;
    (back, direct, text)
}

async fn assert_mogrify<T>(conn: &Connection, sql: &str, value: T)
where
    T: ToSql + Sync + for<'a> FromSql<'a> + Debug + PartialEq,
{
    let (back, direct, text) = via_mogrify(conn, sql, &value).await;
    assert_eq!(back, value, "{sql} mogrified to {text:?}");
    assert_eq!(direct, value, "{sql} with the parameter");
}

/// The first column of every row, as `i32`.
fn ints(cursor: &Cursor) -> Vec<i32> {
    cursor.rows().iter().map(|r| r.get::<_, i32>(0)).collect()
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// A TCP connection works end to end, reports a TCP target, and the server sees a TCP client.
pub async fn connect_tcp(ctx: &Ctx) {
    let conn = Connection::connect(&ctx.dsn(), ctx.executor.clone())
        .await
        .expect("connect over TCP");
    assert!(conn.target().starts_with("host"), "{}", conn.target());
    assert!(!conn.is_closed());
    assert_eq!(scalar::<i32>(&conn, "SELECT 1", &[]).await, 1);
    assert!(
        scalar::<bool>(&conn, "SELECT inet_server_addr() IS NOT NULL", &[]).await,
        "the server sees a TCP session"
    );
    let db: String = scalar(&conn, "SELECT current_database()::text", &[]).await;
    assert_eq!(
        db,
        tcp_parts(ctx).dbname,
        "connected to the case's database"
    );
}

/// A Unix-socket connection works, reports a socket target, and the server sees no TCP address.
pub async fn connect_unix(ctx: &Ctx) {
    let conn = Connection::connect(&ctx.unix_dsn(), ctx.executor.clone())
        .await
        .expect("connect over the Unix socket");
    assert!(conn.target().starts_with("socket"), "{}", conn.target());
    assert!(conn.target().contains(".s.PGSQL."), "{}", conn.target());
    assert_eq!(scalar::<i32>(&conn, "SELECT 1", &[]).await, 1);
    assert!(
        scalar::<bool>(&conn, "SELECT inet_server_addr() IS NULL", &[]).await,
        "the server sees a Unix-socket session"
    );
}

/// A refused port is a connect error naming host and port; in a host list a dead first host is
/// skipped and the next one is used.
pub async fn unreachable_host_fails_fast(ctx: &Ctx) {
    let dead = dead_port();
    let err = Connection::connect(
        &format!("host=127.0.0.1 port={dead} user=postgres dbname=x"),
        ctx.executor.clone(),
    )
    .await
    .expect_err("nothing listens on the port");
    assert!(err.is_connect(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert!(msg.contains(&dead.to_string()), "{msg}");
    assert!(err.code().is_none(), "no server answered: {err:?}");

    let real = tcp_parts(ctx);
    let dsn = format!(
        "host=127.0.0.1,{} port={dead},{} {}",
        real.host,
        real.port,
        real.credentials()
    );
    let conn = Connection::connect(&dsn, ctx.executor.clone())
        .await
        .expect("the second host of the list is reachable");
    assert_eq!(
        conn.target(),
        format!("host {} port {}", real.host, real.port),
        "connected to the second host"
    );
    assert_eq!(scalar::<i32>(&conn, "SELECT 1", &[]).await, 1);
}

/// A server that accepts the TCP connection but never answers runs into `connect_timeout`.
pub async fn blackholed_connect_times_out(ctx: &Ctx) {
    let proxy = FaultProxy::start(tcp_parts(ctx).socket_addr()).expect("start the fault proxy");
    let dsn = proxy.dsn_for(&ctx.db);

    // The proxy passes traffic through when not blackholed...
    let conn = Connection::connect(&dsn, ctx.executor.clone())
        .await
        .expect("connect through the proxy");
    assert_eq!(scalar::<i32>(&conn, "SELECT 7", &[]).await, 7);
    drop(conn);

    // ...and swallows it when blackholed: the start-up handshake never completes.
    proxy.set_blackhole(true);
    let options = ConnectOptions::parse(&dsn)
        .expect("the proxy DSN parses")
        .connect_timeout(Duration::from_millis(300));
    assert_eq!(
        options.get_connect_timeout(),
        Some(Duration::from_millis(300))
    );
    let err = Connection::connect_with(&options, ctx.executor.clone())
        .await
        .expect_err("a blackholed server cannot be connected to");
    assert!(err.is_timeout(), "{err:?}");
    assert!(!err.is_connect(), "{err:?}");
    assert_eq!(
        proxy.accepted(),
        2,
        "the TCP connection itself was accepted"
    );

    // Dropping the proxy joins its accept thread: do it off the executor.
    off_thread(move || drop(proxy)).await;
}

/// Wrong credentials are an auth error with SQLSTATE 28P01 that never shows the password; the
/// right password works over SCRAM-SHA-256.
pub async fn wrong_password_is_auth_error(ctx: &Ctx) {
    const RIGHT: &str = "s3cret pass";
    const WRONG: &str = "Wr0ng-pa55-xyzzy";

    let cluster: Cluster = off_thread(|| -> std::io::Result<Cluster> {
        let mut options = ClusterOptions::default();
        options.hba = Some(
            "local all all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n"
                .to_owned(),
        );
        options.conf = vec!["password_encryption = 'scram-sha-256'".to_owned()];
        let cluster = Cluster::start_new(options)?;
        cluster.psql(
            "postgres",
            &format!("CREATE ROLE app LOGIN PASSWORD '{RIGHT}'"),
        )?;
        let stored = cluster.psql(
            "postgres",
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'",
        )?;
        assert!(
            stored.contains('t'),
            "the password is stored as a SCRAM verifier: {stored:?}"
        );
        Ok(cluster)
    })
    .await
    .expect("start a private cluster with password authentication");

    let dsn = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=app dbname=postgres password={}",
            cluster.port(),
            kv(password)
        )
    };

    let err = Connection::connect(&dsn(WRONG), ctx.executor.clone())
        .await
        .expect_err("a wrong password is refused");
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    assert_eq!(err.code().map(SqlState::code), Some("28P01"));
    assert_eq!(err.db_class(), Some(DbErrorClass::Operational));
    let display = err.to_string();
    let debug = format!("{err:?}");
    for text in [&display, &debug] {
        assert!(!text.contains(WRONG), "the password leaked: {text}");
        assert!(
            !text.contains("Wr0ng"),
            "part of the password leaked: {text}"
        );
    }

    let conn = Connection::connect(&dsn(RIGHT), ctx.executor.clone())
        .await
        .expect("the right password is accepted");
    let user: String = scalar(&conn, "SELECT current_user::text", &[]).await;
    assert_eq!(user, "app");
    assert!(scalar::<bool>(&conn, "SELECT inet_server_addr() IS NOT NULL", &[]).await);
    drop(conn);

    // Stopping a cluster blocks: do it off the executor.
    off_thread(move || drop(cluster)).await;
}

/// Malformed connection strings are config errors, found before any network I/O, and their
/// messages never repeat the password.
pub async fn invalid_dsn_is_config_error(ctx: &Ctx) {
    const PASSWORD: &str = "hunter2Secret";
    let cases = [
        format!("host=a port=notaport password={PASSWORD}"),
        format!("postgresql://u:{PASSWORD}@h:99999/db"),
        format!("sslmode=bogus password={PASSWORD}"),
        format!("a b c password={PASSWORD}"),
        format!("host=a,b port=1,2,3 user=u password={PASSWORD}"),
    ];
    for dsn in &cases {
        let err = Connection::connect(dsn, ctx.executor.clone())
            .await
            .expect_err("a malformed DSN is refused");
        assert!(err.is_config(), "{dsn}: {err:?}");
        let display = err.to_string();
        let debug = format!("{err:?}");
        assert!(!display.contains(PASSWORD), "password in {display}");
        assert!(!debug.contains(PASSWORD), "password in {debug}");

        let err = ConnectOptions::parse(dsn).expect_err("parse refuses it too");
        assert!(err.is_config(), "{dsn}: {err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Cursor and values
// ---------------------------------------------------------------------------------------------

/// The DB-API cursor: rowcount, description, fetchone/fetchmany/fetchall, get, scalar, rewind,
/// iteration, into_rows, and results of statements that return no rows.
pub async fn cursor_methods(ctx: &Ctx) {
    let conn = ctx.connect().await;
    let sql = "SELECT n, n*n AS sq, 'x'||n AS label FROM generate_series(1,25) n";
    let mut cursor = conn.execute(sql, &[]).await.expect("select");

    assert_eq!(cursor.rowcount(), Some(25));
    assert_eq!(cursor.column_names(), ["n", "sq", "label"]);
    assert_eq!(
        cursor.column_types(),
        [&Type::INT4, &Type::INT4, &Type::TEXT]
    );
    let description = cursor.description();
    assert_eq!(description.len(), 3);
    assert_eq!(description[1].name(), "sq");
    assert_eq!(description[2].type_(), &Type::TEXT);
    assert_eq!(cursor.remaining(), 25);

    let first = cursor.fetchone().expect("a first row");
    assert_eq!(first.get::<_, i32>("n"), 1);
    assert_eq!(first.get::<_, String>("label"), "x1");

    let ten: Vec<i32> = cursor.fetchmany(10).iter().map(|r| r.get("n")).collect();
    assert_eq!(ten, (2..=11).collect::<Vec<_>>());
    assert_eq!(cursor.remaining(), 14);

    let rest: Vec<i32> = cursor.fetchall().iter().map(|r| r.get("sq")).collect();
    assert_eq!(rest, (12..=25).map(|n| n * n).collect::<Vec<_>>());
    assert!(cursor.fetchone().is_none(), "nothing after the end");
    assert!(cursor.fetchmany(3).is_empty());
    assert!(cursor.fetchall().is_empty());
    assert_eq!(cursor.remaining(), 0);

    // `get` addresses rows from the start of the result, whatever has been fetched.
    assert_eq!(cursor.get::<i32>(24, "sq").expect("row 24"), 625);
    assert_eq!(cursor.get::<i32>(3, 0usize).expect("row 3, column 0"), 4);
    assert_eq!(cursor.get::<String>(9, "label").expect("label"), "x10");
    let err = cursor.get::<i32>(25, "n").expect_err("there is no row 25");
    assert!(err.is_conversion(), "{err:?}");
    let err = cursor
        .get::<i32>(0, "nope")
        .expect_err("there is no column nope");
    assert!(err.is_conversion(), "{err:?}");
    let err = cursor
        .get::<i32>(0, 3usize)
        .expect_err("there is no column 3");
    assert!(err.is_conversion(), "{err:?}");
    assert_eq!(cursor.scalar::<i32>().expect("scalar"), 1);

    cursor.rewind();
    assert_eq!(cursor.remaining(), 25);
    assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(1));
    assert_eq!(cursor.fetchmany(20).len(), 20);
    assert_eq!(cursor.len(), 4, "ExactSizeIterator over the remaining rows");
    let mut iterated = Vec::new();
    for row in &mut cursor {
        iterated.push(row.get::<_, i32>("n"));
    }
    assert_eq!(iterated, [22, 23, 24, 25]);
    assert!(cursor.next().is_none());
    let rows = cursor.into_rows();
    assert_eq!(rows.len(), 25, "iteration does not remove rows");
    assert_eq!(rows[24].get::<_, i32>("sq"), 625);

    // A whole cursor iterated by value.
    let cursor = conn.execute(sql, &[]).await.expect("select again");
    let mut all = Vec::new();
    for row in cursor {
        all.push(row.get::<_, String>(2));
    }
    assert_eq!(all.len(), 25);
    assert_eq!(all[24], "x25");

    // NULL: an error for a plain type, `None` for an `Option`.
    let cursor = conn
        .execute("SELECT NULL::int4 AS x", &[])
        .await
        .expect("select null");
    let err = cursor.get::<i32>(0, "x").expect_err("NULL is not an i32");
    assert!(err.is_conversion(), "{err:?}");
    assert_eq!(cursor.get::<Option<i32>>(0, "x").expect("Option"), None);
    assert_eq!(cursor.scalar::<Option<i32>>().expect("Option"), None);

    // Statements that change rows: rowcount counts affected rows, no columns.
    conn.batch_execute("CREATE TEMP TABLE cm (n int)")
        .await
        .expect("create table");
    let cursor = conn
        .execute("INSERT INTO cm SELECT generate_series(1, 10)", &[])
        .await
        .expect("insert");
    assert_eq!(cursor.rowcount(), Some(10));
    let mut cursor = conn
        .execute("UPDATE cm SET n = n + 100 WHERE n <= $1", &[&4i32])
        .await
        .expect("update");
    assert_eq!(cursor.rowcount(), Some(4));
    assert!(cursor.description().is_empty());
    assert!(cursor.column_names().is_empty());
    assert!(cursor.rows().is_empty());
    assert!(cursor.fetchone().is_none());
    let err = cursor.scalar::<i32>().expect_err("no rows");
    assert!(err.is_conversion(), "{err:?}");
    let cursor = conn
        .execute("UPDATE cm SET n = n - 100 WHERE n > 100 RETURNING n", &[])
        .await
        .expect("update returning");
    assert_eq!(cursor.rowcount(), Some(4));
    assert_eq!(cursor.column_names(), ["n"]);
    let mut returned = ints(&cursor);
    returned.sort_unstable();
    assert_eq!(returned, [1, 2, 3, 4]);
    let cursor = conn
        .execute("DELETE FROM cm WHERE n > 7", &[])
        .await
        .expect("delete");
    assert_eq!(cursor.rowcount(), Some(3));

    // A query that matches nothing: columns, but no rows.
    let mut cursor = conn
        .execute(
            "SELECT n FROM generate_series(1, 25) n WHERE n > $1",
            &[&100i32],
        )
        .await
        .expect("empty select");
    assert_eq!(cursor.rowcount(), Some(0));
    assert_eq!(cursor.column_names(), ["n"]);
    assert_eq!(cursor.remaining(), 0);
    assert!(cursor.fetchone().is_none());
    assert!(cursor.fetchall().is_empty());
    let err = cursor.scalar::<i32>().expect_err("no row");
    assert!(err.is_conversion(), "{err:?}");

    // A value read as the wrong Rust type is a conversion error too (not a parameter error:
    // nothing about the parameters was wrong).
    let cursor = conn.execute(sql, &[]).await.expect("select");
    let err = cursor
        .get::<String>(0, "n")
        .expect_err("an int4 column is not a String");
    assert!(
        err.is_conversion(),
        "reading a column as the wrong type: {err:?}"
    );
    let err = cursor.scalar::<bool>().expect_err("an int4 is not a bool");
    assert!(
        err.is_conversion(),
        "reading a column as the wrong type: {err:?}"
    );
}

/// Values of every common type survive a trip to the server and back unchanged.
pub async fn param_types_round_trip(ctx: &Ctx) {
    let conn = ctx.connect().await;

    for v in [i16::MIN, -1, 0, i16::MAX] {
        assert_round_trip(&conn, "int2", v).await;
    }
    for v in [i32::MIN, -7, 0, 42, i32::MAX] {
        assert_round_trip(&conn, "int4", v).await;
    }
    for v in [i64::MIN, -1, 0, 1 << 40, i64::MAX] {
        assert_round_trip(&conn, "int8", v).await;
    }
    for v in [0.5f32, -1.25, f32::MAX, f32::MIN_POSITIVE, 0.1] {
        assert_round_trip(&conn, "float4", v).await;
    }
    for v in [0.1f64, -2.5e-300, 1e300, f64::MAX, f64::MIN_POSITIVE] {
        assert_round_trip(&conn, "float8", v).await;
    }
    assert!(round_trip(&conn, "float8", &f64::NAN).await.is_nan());
    assert!(round_trip(&conn, "float4", &f32::NAN).await.is_nan());
    assert_eq!(
        round_trip(&conn, "float8", &f64::INFINITY).await,
        f64::INFINITY
    );
    assert_eq!(
        round_trip(&conn, "float8", &f64::NEG_INFINITY).await,
        f64::NEG_INFINITY
    );
    let zero = round_trip(&conn, "float8", &-0.0f64).await;
    assert!(
        zero == 0.0 && zero.is_sign_negative(),
        "-0.0 keeps its sign: {zero}"
    );
    let zero = round_trip(&conn, "float4", &-0.0f32).await;
    assert!(
        zero == 0.0 && zero.is_sign_negative(),
        "-0.0 keeps its sign: {zero}"
    );

    assert_round_trip(&conn, "bool", true).await;
    assert_round_trip(&conn, "bool", false).await;

    for s in [
        "",
        "plain",
        "it's \"quoted\"",
        "back\\slash \\\\ \\' \\x00",
        "line\nbreak\ttab\r",
        "emoji 🎉🦀 and CJK 日本語 中文 한국어",
        "$1 $$ -- /* */ ;",
    ] {
        assert_round_trip(&conn, "text", s.to_owned()).await;
        let cursor = conn
            .execute("SELECT $1::text", &[&s])
            .await
            .expect("&str parameter");
        assert_eq!(cursor.scalar::<&str>().expect("read as &str"), s);
    }
    assert_round_trip(&conn, "varchar", "varchar ✓".to_owned()).await;

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    assert_round_trip(&conn, "bytea", all_bytes).await;
    assert_round_trip(&conn, "bytea", Vec::<u8>::new()).await;

    assert_round_trip(&conn, "int4", None::<i32>).await;
    assert_round_trip(&conn, "int4", Some(5i32)).await;
    assert!(scalar::<bool>(&conn, "SELECT $1::int4 IS NULL", &[&None::<i32>]).await);
    assert_round_trip(&conn, "text", None::<String>).await;

    let doc = json!({
        "name": "momoko \"桃子\"",
        "n": 42,
        "f": 1.5,
        "neg": -7,
        "ok": true,
        "none": null,
        "list": [1, "two", {"three": [3]}],
        "escapes": "back\\slash\nnew line \u{0001}"
    });
    assert_round_trip(&conn, "json", doc.clone()).await;
    assert_round_trip(&conn, "jsonb", doc.clone()).await;
    assert_round_trip(&conn, "jsonb", json!([])).await;
    assert_round_trip(&conn, "jsonb", json!("just a string")).await;

    assert_round_trip(&conn, "int4[]", vec![1i32, -2, i32::MAX, i32::MIN]).await;
    assert_round_trip(&conn, "int4[]", Vec::<i32>::new()).await;
    assert_round_trip(&conn, "int8[]", vec![i64::MIN, 0, i64::MAX]).await;
    assert_round_trip(
        &conn,
        "text[]",
        vec![
            "plain".to_owned(),
            "with \"quotes\"".to_owned(),
            "comma, here".to_owned(),
            "{braces}".to_owned(),
            "back\\slash".to_owned(),
            String::new(),
            "NULL".to_owned(),
        ],
    )
    .await;
    assert_round_trip(&conn, "int4[]", vec![Some(1i32), None, Some(3), None]).await;
    assert_round_trip(&conn, "text[]", vec![None, Some("x".to_owned())]).await;

    let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    assert_round_trip(&conn, "timestamptz", t).await;
    let before_epoch = UNIX_EPOCH - Duration::from_micros(86_400_000_001);
    assert_round_trip(&conn, "timestamptz", before_epoch).await;
    assert_round_trip(&conn, "timestamp", t).await;

    let numeric: String = scalar(
        &conn,
        "SELECT ($1::text::numeric)::text",
        &[&"12345678901234567890.123456789"],
    )
    .await;
    assert_eq!(numeric, "12345678901234567890.123456789");
    let sum: String = scalar(
        &conn,
        "SELECT ($1::text::numeric + 1)::text",
        &[&"12345678901234567890.123456789"],
    )
    .await;
    assert_eq!(
        sum, "12345678901234567891.123456789",
        "computed as numeric, exactly"
    );
}

/// `callproc` calls functions by (optionally schema-qualified) name and refuses names that are
/// not names.
pub async fn callproc_functions(ctx: &Ctx) {
    let conn = ctx.connect().await;
    conn.batch_execute(
        "CREATE FUNCTION square(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN n * n; END $$;
         CREATE FUNCTION answer() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 42; END $$;
         CREATE FUNCTION evens(n int) RETURNS SETOF int LANGUAGE sql AS 'SELECT generate_series(2, n, 2)';
         CREATE TABLE x (n int);
         INSERT INTO x VALUES (1), (2);",
    )
    .await
    .expect("create functions");

    let cursor = conn.callproc("square", &[&7i32]).await.expect("square(7)");
    assert_eq!(cursor.scalar::<i32>().expect("result"), 49);
    assert_eq!(cursor.rowcount(), Some(1));
    let cursor = conn.callproc("answer", &[]).await.expect("answer()");
    assert_eq!(cursor.scalar::<i32>().expect("result"), 42);
    let cursor = conn
        .callproc("public.square", &[&-3i32])
        .await
        .expect("public.square(-3)");
    assert_eq!(cursor.scalar::<i32>().expect("result"), 9);
    let cursor = conn
        .callproc("SQUARE", &[&5i32])
        .await
        .expect("unquoted names fold to lower case");
    assert_eq!(cursor.scalar::<i32>().expect("result"), 25);
    let cursor = conn
        .callproc("\"square\"", &[&6i32])
        .await
        .expect("a quoted name");
    assert_eq!(cursor.scalar::<i32>().expect("result"), 36);
    let cursor = conn
        .callproc("evens", &[&8i32])
        .await
        .expect("a set-returning function");
    assert_eq!(ints(&cursor), [2, 4, 6, 8]);
    assert_eq!(cursor.rowcount(), Some(4));

    for bad in [
        "square(1); drop table x; --",
        "square; drop table x",
        "",
        "a.b.c.d",
        "square --",
    ] {
        let err = conn
            .callproc(bad, &[])
            .await
            .expect_err("an invalid name is refused");
        assert!(err.is_parameter(), "{bad:?}: {err:?}");
    }
    assert_eq!(
        count(&conn, "SELECT count(*) FROM x").await,
        2,
        "x is intact"
    );

    let err = conn
        .callproc("no_such_function", &[&1i32])
        .await
        .expect_err("a missing function");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_FUNCTION), "{err:?}");
    conn.ping().await.expect("still usable");
}

/// Every kind of value, mogrified into SQL and run without parameters, reads back exactly as when
/// sent as a parameter, with `standard_conforming_strings` on and off.
pub async fn mogrify_round_trips(ctx: &Ctx) {
    let conn = ctx.connect().await;

    let texts = [
        "",
        "plain",
        "it's",
        "''",
        "back\\slash",
        "\\",
        "\\'",
        "\\\\'",
        "'\\",
        "line\nbreak",
        "tab\there",
        "Unicode: Ünïcødé 日本語 🎉",
        "$1 $2 $$ $tag$ -- /* */ ;",
        "E'\\x41'",
    ];

    for conforming in ["on", "off"] {
        conn.batch_execute(&format!("SET standard_conforming_strings = {conforming}"))
            .await
            .expect("set standard_conforming_strings");
        let setting: String = scalar(
            &conn,
            "SELECT current_setting('standard_conforming_strings')",
            &[],
        )
        .await;
        assert_eq!(setting, conforming);

        for s in texts {
            // An untyped placeholder is text.
            assert_mogrify(&conn, "SELECT $1", s.to_owned()).await;
            assert_mogrify(&conn, "SELECT $1::text", s.to_owned()).await;
        }
        let text = conn
            .mogrify("SELECT $1::text", &[&"it's"])
            .await
            .expect("mogrify");
        assert_eq!(text, "SELECT 'it''s'::text");

        for v in [i16::MIN, -1, i16::MAX] {
            assert_mogrify(&conn, "SELECT $1::int2", v).await;
        }
        for v in [i32::MIN, -5, 0, i32::MAX] {
            assert_mogrify(&conn, "SELECT $1::int4", v).await;
        }
        for v in [i64::MIN, -1, i64::MAX] {
            assert_mogrify(&conn, "SELECT $1::int8", v).await;
        }
        // A negative number after a minus must not turn into a `--` comment.
        let n: i64 = {
            let sql = conn
                .mogrify("SELECT 0-$1::int8", &[&-5i64])
                .await
                .expect("mogrify");
            scalar(&conn, &sql, &[]).await
        };
        assert_eq!(n, 5);

        for v in [0.1f64, -2.5, 1e300, f64::INFINITY, f64::NEG_INFINITY] {
            assert_mogrify(&conn, "SELECT $1::float8", v).await;
        }
        assert_mogrify(&conn, "SELECT $1::float4", 0.1f32).await;
        let (back, direct, text) = via_mogrify(&conn, "SELECT $1::float8", &f64::NAN).await;
        assert!(back.is_nan() && direct.is_nan(), "NaN via {text:?}");
        let (back, _, text) = via_mogrify(&conn, "SELECT $1::float8", &-0.0f64).await;
        assert!(back == 0.0 && back.is_sign_negative(), "-0.0 via {text:?}");

        assert_mogrify(&conn, "SELECT $1::bool", true).await;
        assert_mogrify(&conn, "SELECT $1::bool", false).await;

        assert_mogrify(&conn, "SELECT $1::bytea", (0..=255u8).collect::<Vec<u8>>()).await;
        assert_mogrify(&conn, "SELECT $1::bytea", b"\\'\"".to_vec()).await;

        assert_mogrify(&conn, "SELECT $1::int4", None::<i32>).await;
        assert_mogrify(&conn, "SELECT $1::text", None::<String>).await;
        assert_mogrify(&conn, "SELECT $1::int4", Some(3i32)).await;

        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_mogrify(&conn, "SELECT $1::timestamptz", t).await;
        assert_mogrify(
            &conn,
            "SELECT $1::timestamptz",
            UNIX_EPOCH - Duration::from_micros(86_400_000_001),
        )
        .await;

        let doc = json!({
            "quote": "it's \"here\"",
            "backslash": "a\\b",
            "unicode": "桃子 🍑",
            "n": [1, 2.5, -3],
            "null": null
        });
        assert_mogrify(&conn, "SELECT $1::json", doc.clone()).await;
        assert_mogrify(&conn, "SELECT $1::jsonb", doc).await;

        assert_mogrify(
            &conn,
            "SELECT $1::text[]",
            vec![
                Some("it's".to_owned()),
                Some("with \"quotes\"".to_owned()),
                Some("comma,here".to_owned()),
                Some("{braces}".to_owned()),
                Some("back\\slash".to_owned()),
                None,
                Some("NULL".to_owned()),
                Some(String::new()),
                Some(" spaced ".to_owned()),
            ],
        )
        .await;
        assert_mogrify(&conn, "SELECT $1::int4[]", vec![1i32, -2, 3]).await;
        assert_mogrify(&conn, "SELECT $1::int4[]", Vec::<i32>::new()).await;
        assert_mogrify(&conn, "SELECT $1::int4[]", vec![Some(1i32), None]).await;
        assert_mogrify(&conn, "SELECT $1::int8[]", vec![i64::MIN, i64::MAX]).await;

        // Several parameters, types from the statement.
        let sql = conn
            .mogrify("SELECT $1::int8 + $2", &[&-5i64, &7i64])
            .await
            .expect("mogrify with a typed context");
        assert!(!sql.contains('$'), "{sql}");
        assert_eq!(scalar::<i64>(&conn, &sql, &[]).await, 2, "{sql}");
        let sql = conn
            .mogrify(
                "SELECT $2::text || $1::text || $2::text",
                &[&"mid'dle", &"\\"],
            )
            .await
            .expect("a placeholder used twice");
        assert_eq!(
            scalar::<String>(&conn, &sql, &[]).await,
            "\\mid'dle\\",
            "{sql}"
        );
    }

    // Without parameters the text is returned as is, placeholders in literals and comments
    // included.
    let plain = "SELECT '$1' AS x, 2 -- $3";
    assert_eq!(conn.mogrify(plain, &[]).await.expect("mogrify"), plain);

    // A statement that cannot be prepared still mogrifies, with types from the values.
    let fetch = conn
        .mogrify("FETCH $1 FROM c", &[&10i64])
        .await
        .expect("mogrify FETCH");
    assert_eq!(fetch, "FETCH 10 FROM c");
    conn.ping().await.expect("still usable");
}

/// Hostile strings mogrified into an INSERT and run with the simple protocol (which would run
/// any injected statement) are stored verbatim and change nothing else.
pub async fn mogrify_resists_injection(ctx: &Ctx) {
    let conn = ctx.connect().await;
    conn.batch_execute("CREATE TEMP TABLE t (v text, id serial)")
        .await
        .expect("create table");

    let hostile = [
        "'); DROP TABLE t; --",
        "\\'); DROP TABLE t; --",
        "\\\\'); DROP TABLE t; --",
        "'' ); DROP TABLE t; --",
        "$$; DROP TABLE t; $$",
        "$q$; DROP TABLE t; $q$",
        "*/ DROP TABLE t; /*",
        "E'\\\\'",
        "E'\\'); DROP TABLE t; --",
        "value with $1 and $2",
        "\"); DROP TABLE t; --",
        "x'\n); DROP TABLE t; --",
        "\u{2bc}); DROP TABLE t; --",
        "\\",
        "'",
    ];

    let mut expected: Vec<String> = Vec::new();
    for conforming in ["on", "off"] {
        conn.batch_execute(&format!("SET standard_conforming_strings = {conforming}"))
            .await
            .expect("set standard_conforming_strings");
        for s in hostile {
            let sql = conn
                .mogrify("INSERT INTO t VALUES ($1)", &[&s])
                .await
                .unwrap_or_else(|e| panic!("mogrify {s:?}: {e}"));
            conn.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("running {sql:?} (scs {conforming}): {e}"));
            expected.push(s.to_owned());
            let stored: Vec<String> = conn
                .execute("SELECT v FROM t ORDER BY id", &[])
                .await
                .unwrap_or_else(|e| panic!("table t is gone after {sql:?}: {e}"))
                .rows()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(stored, expected, "after {sql:?} (scs {conforming})");
        }
    }
    assert!(
        scalar::<bool>(&conn, "SELECT to_regclass('pg_temp.t') IS NOT NULL", &[]).await,
        "table t still exists"
    );
}

/// NUL bytes in text and wrong parameter counts are parameter errors and leave the connection
/// usable.
pub async fn mogrify_nul_and_count_errors(ctx: &Ctx) {
    let conn = ctx.connect().await;

    let err = conn
        .mogrify("SELECT $1::text", &[&"a\0b"])
        .await
        .expect_err("text cannot hold NUL");
    assert!(err.is_parameter(), "{err:?}");
    assert!(err.to_string().contains("NUL"), "{err}");
    conn.ping().await.expect("usable after the NUL error");

    let err = conn
        .mogrify("SELECT $1", &[&"a\0b"])
        .await
        .expect_err("text cannot hold NUL (untyped)");
    assert!(err.is_parameter(), "{err:?}");
    conn.ping().await.expect("usable after the NUL error");

    let err = conn
        .mogrify("SELECT $1::int4, $2::int4", &[&1i32])
        .await
        .expect_err("two placeholders, one parameter");
    assert!(err.is_parameter(), "{err:?}");
    conn.ping().await.expect("usable after the count error");

    let err = conn
        .mogrify("SELECT $1::int4", &[&1i32, &2i32])
        .await
        .expect_err("one placeholder, two parameters");
    assert!(err.is_parameter(), "{err:?}");
    conn.ping().await.expect("usable after the count error");

    assert_eq!(scalar::<i32>(&conn, "SELECT 5", &[]).await, 5);
}

/// A value that claims every SQL type and writes its string's bytes whatever the type: a text
/// wrapper that trusts the statement to say what it is.
#[derive(Debug)]
struct Permissive(&'static str);

impl ToSql for Permissive {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<momoko_core::tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        out.extend_from_slice(self.0.as_bytes());
        Ok(momoko_core::tokio_postgres::types::IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    momoko_core::tokio_postgres::types::to_sql_checked!();
}

/// `mogrify` renders exactly the value `execute` binds for the same parameter, or fails with a
/// `Parameter` error: a value that accepts every SQL type is rendered as the statement's type
/// (never as the first type it happens to accept), bytes the server would reject are an error
/// (not some other value), a statement that cannot be prepared still mogrifies inside a
/// transaction without aborting it, and a value whose type cannot be told is an error.
pub async fn mogrify_equals_execute(ctx: &Ctx) {
    let conn = ctx.connect().await;
    let hello = Permissive("hello");

    // The statement's type decides, as for execute.
    for (sql, expected) in [
        ("SELECT $1::text", "SELECT 'hello'::text"),
        ("SELECT $1", "SELECT 'hello'"),
        ("SELECT $1::varchar", "SELECT 'hello'::varchar"),
    ] {
        let text = conn
            .mogrify(sql, &[&hello])
            .await
            .unwrap_or_else(|e| panic!("mogrify {sql}: {e:?}"));
        assert_eq!(text, expected);
        let back: String = scalar(&conn, &text, &[]).await;
        let direct: String = scalar(&conn, sql, &[&hello]).await;
        assert_eq!(back, direct, "{sql} mogrified to {text:?}");
        assert_eq!(back, "hello");
    }

    // As int4, "hello" is five bytes where int4 takes four: whatever execute does with a value,
    // mogrify agrees (when the server refuses the bytes, mogrify fails rather than render some
    // other value).
    let mut refused = Vec::new();
    for (cast, value) in [
        ("int4", Permissive("hello")),
        ("int8", Permissive("hello")),
        ("bool", Permissive("hello")),
        ("int4", Permissive("abcd")),
        ("timestamptz", Permissive("hello")),
        ("uuid", Permissive("0123456789abcdef")),
        ("\"char\"", Permissive("A")),
        (
            "name",
            Permissive("a name of sixty-five bytes, longer than the 63 a name may hold.."),
        ),
    ] {
        let sql = format!("SELECT ($1::{cast})::text");
        let direct = conn.execute(&sql, &[&value]).await;
        let mogrified = conn.mogrify(&sql, &[&value]).await;
        match direct {
            Err(e) => {
                let m = mogrified.expect_err(&format!(
                    "execute refuses {value:?} as {cast} ({e}); mogrify must fail too"
                ));
                assert!(m.is_parameter(), "{value:?} as {cast}: {m:?}");
                refused.push((cast, value.0));
            }
            Ok(cursor) => {
                let expected: String = cursor.scalar().expect("the value as text");
                let text = mogrified.unwrap_or_else(|e| {
                    panic!("execute binds {value:?} as {cast}; mogrify failed: {e:?}")
                });
                let back: String = scalar(&conn, &text, &[]).await;
                assert_eq!(back, expected, "{value:?} as {cast} mogrified to {text:?}");
            }
        }
        conn.ping().await.expect("usable after the check");
    }
    assert_eq!(
        refused.iter().map(|(cast, _)| *cast).collect::<Vec<_>>(),
        ["int4", "int8", "bool", "timestamptz", "name"],
        "the server refuses the wrong-sized encodings and too long a name, and takes the rest"
    );
    // "char" is not char (character(1)): a byte above 127 reads back as the same byte.
    let sql = "SELECT $1::\"char\"";
    let text = conn
        .mogrify(sql, &[&-127i8])
        .await
        .expect("mogrify a \"char\"");
    assert_eq!(scalar::<i8>(&conn, &text, &[]).await, -127, "{text}");
    assert_eq!(scalar::<i8>(&conn, sql, &[&-127i8]).await, -127);

    // A statement that cannot be prepared: the value decides, and "hello" could be text, bytea,
    // json, … which read back differently.
    let e = conn
        .mogrify("FETCH $1 FROM c", &[&hello])
        .await
        .expect_err("the type of a permissive value in FETCH cannot be told");
    assert!(e.is_parameter(), "{e:?}");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    assert_eq!(
        conn.mogrify("FETCH $1 FROM c", &[&10i32])
            .await
            .expect("mogrify FETCH while idle"),
        "FETCH 10 FROM c"
    );

    // Inside a transaction on a held connection: FETCH is never prepared (the failing Parse
    // would abort the transaction), and the transaction goes on.
    let pool = ctx
        .pool_builder()
        .size(1)
        .connect()
        .await
        .expect("connect the pool");
    let held = pool.getconn().await.expect("getconn");
    // A cached timestamptz statement, so that its type is known inside the transaction.
    held.execute("SELECT $1::timestamptz", &[&UNIX_EPOCH])
        .await
        .expect("cache a timestamptz statement");
    held.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT generate_series(1, 100) AS n")
        .await
        .expect("begin and declare");
    let fetch = held
        .mogrify("FETCH $1 FROM c", &[&10i32])
        .await
        .expect("mogrify FETCH in a transaction");
    assert_eq!(fetch, "FETCH 10 FROM c");
    let e = held
        .mogrify("FETCH $1 FROM c", &[&hello])
        .await
        .expect_err("ambiguous in a transaction too");
    assert!(e.is_parameter(), "{e:?}");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    // The server refuses the bytes of the cached statement's type: the transaction survives.
    let e = held
        .mogrify("SELECT $1::timestamptz", &[&hello])
        .await
        .expect_err("five bytes are no timestamptz");
    assert!(e.is_parameter(), "{e:?}");
    let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let at = held
        .mogrify("SELECT $1::timestamptz", &[&t])
        .await
        .expect("a timestamptz in a transaction");
    assert_eq!(
        held.transaction_status(),
        momoko_core::TransactionStatus::InTransaction,
        "the transaction is intact"
    );
    let rows = held
        .execute(&fetch, &[])
        .await
        .expect("the mogrified FETCH");
    assert_eq!(ints(&rows), (1..=10).collect::<Vec<i32>>());
    let back: std::time::SystemTime = held
        .execute(&at, &[])
        .await
        .expect("the mogrified timestamptz")
        .scalar()
        .expect("a timestamp");
    assert_eq!(back, t);
    held.batch_execute("COMMIT").await.expect("commit");
    drop(held);
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Transactions and server-side cursors
// ---------------------------------------------------------------------------------------------

/// `transaction` runs every statement (with parameters) in one transaction, returns one cursor
/// per statement, and commits.
pub async fn transaction_commits(ctx: &Ctx) {
    let mut conn = ctx.connect().await;
    let other = ctx.connect().await;
    conn.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        .await
        .expect("create table");

    let second: [Param<'_>; 2] = [&2i32, &"two"];
    let cursors = conn
        .transaction([
            Query::new("INSERT INTO items VALUES ($1, $2)", &[&1i32, &"one"]),
            ("INSERT INTO items VALUES ($1, $2)", &second[..]).into(),
            "INSERT INTO items VALUES (3, 'three'), (4, 'four')".into(),
            "SELECT id, name FROM items ORDER BY id".into(),
        ])
        .await
        .expect("the transaction commits");
    assert_eq!(cursors.len(), 4, "one cursor per statement");
    assert_eq!(cursors[0].rowcount(), Some(1));
    assert_eq!(cursors[1].rowcount(), Some(1));
    assert_eq!(cursors[2].rowcount(), Some(2));
    assert_eq!(
        ints(&cursors[3]),
        [1, 2, 3, 4],
        "the SELECT sees its own inserts"
    );
    assert_eq!(cursors[3].get::<String>(1, "name").expect("name"), "two");

    let names: Vec<String> = other
        .execute("SELECT name FROM items ORDER BY id", &[])
        .await
        .expect("select from the second connection")
        .rows()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["one", "two", "three", "four"], "committed");

    // The connection is back in autocommit mode.
    conn.execute("INSERT INTO items VALUES ($1, $2)", &[&5i32, &"five"])
        .await
        .expect("insert after the transaction");
    assert_eq!(count(&other, "SELECT count(*) FROM items").await, 5);
}

/// A failing statement rolls the whole transaction back, returns the server's error, and leaves
/// the connection usable in autocommit mode; a failure at COMMIT is handled alike.
pub async fn transaction_rolls_back(ctx: &Ctx) {
    let mut conn = ctx.connect().await;
    let other = ctx.connect().await;
    conn.batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .expect("create table");

    let err = conn
        .transaction([
            Query::new("INSERT INTO items VALUES ($1)", &[&1i32]),
            Query::new("INSERT INTO items VALUES ($1)", &[&2i32]),
            Query::new("INSERT INTO items VALUES ($1)", &[&1i32]),
            "INSERT INTO items VALUES (4)".into(),
        ])
        .await
        .expect_err("the third statement violates the primary key");
    assert!(err.is_db(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err:?}");
    assert_eq!(err.db_class(), Some(DbErrorClass::Integrity));
    assert_eq!(
        count(&other, "SELECT count(*) FROM items").await,
        0,
        "the first two inserts were rolled back"
    );

    // Not inside a (failed) transaction any more: an insert is visible at once.
    conn.execute("INSERT INTO items VALUES ($1)", &[&10i32])
        .await
        .expect("insert after the rollback");
    assert_eq!(count(&other, "SELECT count(*) FROM items").await, 1);

    // A constraint checked at COMMIT.
    conn.batch_execute("CREATE TABLE deferred (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        .await
        .expect("create table");
    let err = conn
        .transaction([
            "INSERT INTO deferred VALUES (1)".into(),
            "INSERT INTO deferred VALUES (1)".into(),
        ])
        .await
        .expect_err("the COMMIT fails");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err:?}");
    assert_eq!(count(&other, "SELECT count(*) FROM deferred").await, 0);

    let cursors = conn
        .transaction(["INSERT INTO items VALUES (11)".into()])
        .await
        .expect("a later transaction commits");
    assert_eq!(cursors.len(), 1);
    conn.execute("INSERT INTO items VALUES (12)", &[])
        .await
        .expect("autocommit insert");
    assert_eq!(count(&other, "SELECT count(*) FROM items").await, 3);
}

/// `transaction_with` commits when the body returns `Ok` (passing its value on) and rolls back
/// when it returns `Err` (passing that error on).
pub async fn transaction_with_closure(ctx: &Ctx) {
    let mut conn = ctx.connect().await;
    let other = ctx.connect().await;
    conn.batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .expect("create table");

    let n: u64 = conn
        .transaction_with(async |tx| {
            tx.execute("INSERT INTO items VALUES ($1)", &[&1i32])
                .await?;
            let c = tx
                .execute("INSERT INTO items SELECT generate_series(2, 5)", &[])
                .await?;
            Ok::<u64, Error>(c.rowcount().unwrap_or_default())
        })
        .await
        .expect("the body succeeds");
    assert_eq!(n, 4, "the body's value is returned");
    assert_eq!(
        count(&other, "SELECT count(*) FROM items").await,
        5,
        "committed"
    );

    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = Arc::clone(&seen);
    let err = conn
        .transaction_with(async move |tx| {
            tx.execute("INSERT INTO items VALUES ($1)", &[&100i32])
                .await?;
            let e = tx
                .batch_execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'boom %', 7261 USING ERRCODE = 'MK001'; END $$",
                )
                .await
                .expect_err("the DO block raises");
            *slot.lock().expect("lock") = Some(e.to_string());
            Err::<u64, Error>(e)
        })
        .await
        .expect_err("the body fails");
    assert_eq!(
        Some(err.to_string()),
        seen.lock().expect("lock").clone(),
        "the body's own error is returned"
    );
    assert_eq!(err.code().map(SqlState::code), Some("MK001"), "{err:?}");
    assert!(err.to_string().contains("boom 7261"), "{err}");
    assert_eq!(
        count(&other, "SELECT count(*) FROM items WHERE id = 100").await,
        0,
        "rolled back"
    );
    assert_eq!(count(&other, "SELECT count(*) FROM items").await, 5);

    // Autocommit again.
    conn.execute("INSERT INTO items VALUES (200)", &[])
        .await
        .expect("insert after the rollback");
    assert_eq!(count(&other, "SELECT count(*) FROM items").await, 6);
}

/// The tutorial's server-side cursor: 1000 rows read 10 at a time with `FETCH`, in order.
pub async fn server_side_cursor(ctx: &Ctx) {
    let conn = ctx.connect().await;
    conn.batch_execute(
        "CREATE TABLE ints (n int NOT NULL); INSERT INTO ints SELECT generate_series(1, 1000)",
    )
    .await
    .expect("create table");

    conn.batch_execute("BEGIN").await.expect("begin");
    conn.batch_execute("DECLARE all_ints CURSOR FOR SELECT n FROM ints ORDER BY n")
        .await
        .expect("declare");

    // FETCH takes no parameters; mogrify builds it safely from a value.
    let chunk = 10i64;
    let mogrified = conn
        .mogrify("FETCH $1 FROM all_ints", &[&chunk])
        .await
        .expect("mogrify FETCH");
    assert_eq!(mogrified, "FETCH 10 FROM all_ints");

    let mut seen: Vec<i32> = Vec::with_capacity(1000);
    let mut chunks = 0;
    while seen.len() < 1000 {
        let sql = if chunks % 2 == 0 {
            mogrified.clone()
        } else {
            format!("FETCH {chunk} FROM all_ints")
        };
        let cursor = conn
            .execute(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql} (chunk {chunks}): {e}"));
        assert_eq!(cursor.rows().len(), 10, "chunk {chunks} is full");
        assert_eq!(cursor.rowcount(), Some(10));
        seen.extend(ints(&cursor));
        chunks += 1;
        assert!(chunks <= 100, "too many chunks");
    }
    assert_eq!(chunks, 100);
    assert_eq!(seen, (1..=1000).collect::<Vec<i32>>());
    let cursor = conn
        .execute(&mogrified, &[])
        .await
        .expect("fetch past the end");
    assert_eq!(cursor.rowcount(), Some(0), "the cursor is exhausted");

    conn.batch_execute("CLOSE all_ints").await.expect("close");
    conn.batch_execute("COMMIT").await.expect("commit");
    let err = conn
        .execute("FETCH 10 FROM all_ints", &[])
        .await
        .expect_err("the cursor is closed");
    assert_eq!(err.code(), Some(&SqlState::INVALID_CURSOR_NAME), "{err:?}");
    conn.ping().await.expect("still usable");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Server errors keep their SQLSTATE and psycopg2 class, and the connection stays usable.
pub async fn sql_error_leaves_connection_usable(ctx: &Ctx) {
    let conn = ctx.connect().await;

    let err = conn
        .execute("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("missing table");
    assert!(err.is_db(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err:?}");
    assert_eq!(err.db_class(), Some(DbErrorClass::Programming));
    assert!(err.to_string().contains("42P01"), "{err}");
    assert!(err.as_db_error().is_some());
    assert!(!err.is_connection_lost());
    assert_eq!(scalar::<i32>(&conn, "SELECT 1", &[]).await, 1);

    let err = conn
        .execute("SELEC 1", &[])
        .await
        .expect_err("syntax error");
    assert!(err.is_db(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR), "{err:?}");
    assert_eq!(err.db_class(), Some(DbErrorClass::Programming));
    assert!(err.to_string().contains("42601"), "{err}");
    assert_eq!(scalar::<i32>(&conn, "SELECT 2", &[]).await, 2);

    let err = conn
        .execute("SELECT 1 / $1::int", &[&0i32])
        .await
        .expect_err("division by zero");
    assert!(err.is_db(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err:?}");
    assert_eq!(err.db_class(), Some(DbErrorClass::Data));
    assert_eq!(
        scalar::<i32>(&conn, "SELECT 1 / $1::int", &[&1i32]).await,
        1
    );

    let err = conn
        .batch_execute("SELECT 1; SELECT * FROM no_such_table; SELECT 3")
        .await
        .expect_err("batch with a failing statement");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err:?}");
    assert!(!conn.is_closed());
    conn.ping().await.expect("still usable");
}

/// Wrong parameter counts and types are parameter errors that say what was expected; nothing is
/// run and the connection stays usable.
pub async fn wrong_parameters_are_clear_errors(ctx: &Ctx) {
    let conn = ctx.connect().await;

    let err = conn
        .execute("SELECT $1::int", &[])
        .await
        .expect_err("missing parameter");
    assert!(err.is_parameter(), "{err:?}");
    assert!(err.to_string().contains("1 parameter"), "{err}");
    assert!(err.code().is_none(), "not a server error: {err:?}");
    conn.ping().await.expect("usable");

    let err = conn
        .execute("SELECT $1::int", &[&1i32, &2i32])
        .await
        .expect_err("one parameter too many");
    assert!(err.is_parameter(), "{err:?}");
    assert!(err.to_string().contains("1 parameter"), "{err}");
    assert!(err.to_string().contains('2'), "{err}");
    conn.ping().await.expect("usable");

    let err = conn
        .execute("SELECT $1::int", &[&"seven".to_owned()])
        .await
        .expect_err("a String is not an int");
    assert!(err.is_parameter(), "{err:?}");
    assert!(
        err.to_string().contains("int4"),
        "names the SQL type: {err}"
    );
    assert!(
        err.to_string().contains("String"),
        "names the Rust type: {err}"
    );
    conn.ping().await.expect("usable");

    let err = conn
        .execute("SELECT $1::int8", &[&1i32])
        .await
        .expect_err("an i32 is not an int8");
    assert!(err.is_parameter(), "{err:?}");
    assert!(err.to_string().contains("int8"), "{err}");
    assert_eq!(scalar::<i64>(&conn, "SELECT $1::int8", &[&1i64]).await, 1);
}

/// A repeated query is prepared once (one cache entry, one server-side prepared statement), and
/// a statement the server forgot is prepared again transparently.
pub async fn statement_cache_reuses_statements(ctx: &Ctx) {
    let conn = ctx.connect().await;
    let check = "SELECT count(*) FROM pg_prepared_statements";
    // Run the check once so that it is cached (and prepared) itself.
    count(&conn, check).await;
    let base = conn.cached_statements();
    assert!(base >= 1, "the check query is cached");
    assert_eq!(
        count(&conn, check).await,
        base as i64,
        "server and cache agree"
    );

    let query = "SELECT $1::int4 * 2";
    for i in 0..5i32 {
        assert_eq!(scalar::<i32>(&conn, query, &[&i]).await, i * 2);
    }
    assert_eq!(
        conn.cached_statements(),
        base + 1,
        "five runs, one statement"
    );

    assert_eq!(
        scalar::<i32>(&conn, "SELECT $1::int4 + 1", &[&1i32]).await,
        2
    );
    assert_eq!(
        conn.cached_statements(),
        base + 2,
        "a different query adds one"
    );
    assert_eq!(
        count(&conn, check).await,
        conn.cached_statements() as i64,
        "the server holds one prepared statement per cached query"
    );

    conn.batch_execute("DEALLOCATE ALL")
        .await
        .expect("deallocate");
    assert_eq!(
        scalar::<i32>(&conn, query, &[&21i32]).await,
        42,
        "the cached statement is prepared again"
    );
    assert_eq!(scalar::<i32>(&conn, query, &[&4i32]).await, 8);
    assert_eq!(conn.cached_statements(), base + 2, "re-prepared in place");
    let after = count(&conn, check).await;
    assert!(
        (2..=conn.cached_statements() as i64).contains(&after),
        "only re-prepared statements exist on the server: {after}"
    );
}

/// `cancel` stops a running statement with `57014` and the connection keeps working.
pub async fn cancel_running_query(ctx: &Ctx) {
    let conn = Arc::new(ctx.connect().await);
    let watcher = ctx.connect().await;
    let pid: i32 = scalar(&conn, "SELECT pg_backend_pid()", &[]).await;

    let (tx, rx) = oneshot::channel();
    let running = Arc::clone(&conn);
    ctx.executor.spawn(Box::pin(async move {
        let result = running.execute("SELECT pg_sleep(30)", &[]).await;
        let _ = tx.send(result.map(|c| c.rowcount()));
    }));

    let mut active = false;
    for _ in 0..1000 {
        let n = scalar::<i64>(
            &watcher,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'",
            &[&pid],
        )
        .await;
        if n == 1 {
            active = true;
            break;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    assert!(active, "the server shows the sleep running");

    conn.cancel().await.expect("send the cancel request");
    let err = rx
        .await
        .expect("the query task finished")
        .expect_err("the query was canceled");
    assert!(err.is_db(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert_eq!(err.db_class(), Some(DbErrorClass::QueryCanceled));
    assert!(!err.is_connection_lost(), "{err:?}");

    assert!(!conn.is_closed());
    assert_eq!(scalar::<i32>(&conn, "SELECT 3", &[]).await, 3);
    let same: i32 = scalar(&conn, "SELECT pg_backend_pid()", &[]).await;
    assert_eq!(same, pid, "the same session");
}

/// `ping`, `server_version`, `is_closed` after the server ended the session, and `close`.
pub async fn ping_version_and_close(ctx: &Ctx) {
    let conn = ctx.connect().await;
    let other = ctx.connect().await;

    conn.ping().await.expect("ping");
    let version = conn.server_version().await.expect("server_version");
    assert!(version >= 100_000, "{version}");
    let reported: String =
        scalar(&other, "SELECT current_setting('server_version_num')", &[]).await;
    assert_eq!(version.to_string(), reported);
    assert_eq!(conn.server_version().await.expect("again"), version);
    assert!(!conn.is_closed());

    let pid: i32 = scalar(&conn, "SELECT pg_backend_pid()", &[]).await;
    // From PostgreSQL 14 on, pg_terminate_backend can wait until the backend is gone.
    let terminated: bool = if version >= 140_000 {
        scalar(&other, "SELECT pg_terminate_backend($1, 10000)", &[&pid]).await
    } else {
        scalar(&other, "SELECT pg_terminate_backend($1)", &[&pid]).await
    };
    assert!(terminated, "the backend was terminated");

    // The next statement fails. (Before PostgreSQL 14 the backend may not have exited yet; a
    // statement that still succeeds is retried a bounded number of times.)
    let mut failure = None;
    for _ in 0..500 {
        match conn.execute("SELECT 1", &[]).await {
            Err(e) => {
                failure = Some(e);
                break;
            }
            Ok(_) => ctx.sleep(Duration::from_millis(10)).await,
        }
    }
    let err = failure.expect("the terminated session fails");
    assert!(err.is_connection_lost(), "{err:?}");

    // Whatever the first failure saw, the session is over now.
    let err = conn
        .execute("SELECT 1", &[])
        .await
        .expect_err("still closed");
    assert!(err.is_connection_lost(), "{err:?}");
    assert!(conn.is_closed());
    let err = conn.ping().await.expect_err("ping fails");
    assert!(err.is_connection_lost(), "{err:?}");
    conn.close();

    other
        .ping()
        .await
        .expect("the other connection is unaffected");
    if version >= 140_000 {
        let gone = count(
            &other,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .await;
        assert_eq!(gone, 0, "the terminated backend is gone");
    }
    other.close();
}
