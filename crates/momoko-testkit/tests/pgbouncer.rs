//! A real pgbouncer in front of a private cluster: transaction pooling, the startup parameters
//! clients send, stop and start, cleanup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{is_alive, psql, wait_until, RawConn};
use momoko_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions, PoolMode, StopMode};

fn start(cluster: &Cluster, options: PgBouncerOptions) -> PgBouncer {
    let t = Instant::now();
    let bouncer = PgBouncer::start(cluster, options).unwrap();
    eprintln!("momoko-testkit: pgbouncer start-up took {:?}", t.elapsed());
    bouncer
}

/// The startup parameters tokio-postgres sends (with an application name and options
/// configured), plus `extra_float_digits` as JDBC sends it.
fn client_params(dbname: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("client_encoding", "UTF8"),
        ("user", "postgres"),
        ("database", dbname),
        ("options", "-c work_mem=7MB"),
        ("application_name", "momoko-test"),
        ("extra_float_digits", "2"),
    ]
}

#[test]
fn transaction_pooling_shares_one_server_connection() {
    let cluster = Cluster::start_new(ClusterOptions::default()).unwrap();
    let db = cluster.create_database("bouncer").unwrap();
    let mut options = PgBouncerOptions::default();
    options.default_pool_size = 1;
    let bouncer = start(&cluster, options);
    assert_eq!(bouncer.host(), "127.0.0.1");
    assert_ne!(bouncer.port(), cluster.port());

    // psql, over TCP and over pgbouncer's Unix socket.
    assert_eq!(
        psql(&bouncer.dsn(db.name()), "SELECT current_database()").unwrap(),
        db.name()
    );
    assert_eq!(
        psql(&bouncer.unix_dsn(db.name()), "SELECT 1 + 1").unwrap(),
        "2"
    );

    // Two clients connected at once, with a pool of one server connection: both are served,
    // by the same backend.
    let mut a = RawConn::connect(bouncer.port(), &client_params(db.name())).unwrap();
    let mut b = RawConn::connect(bouncer.port(), &client_params(db.name())).unwrap();
    let pid_a = a.value("SELECT pg_backend_pid()");
    let pid_b = b.value("SELECT pg_backend_pid()");
    assert_eq!(
        pid_a, pid_b,
        "transaction pooling shares the server connection"
    );
    assert_ne!(
        pid_a,
        psql(&db.dsn(), "SELECT pg_backend_pid()").unwrap(),
        "a direct connection has its own backend"
    );
    // The ignored `options` startup parameter has no effect.
    assert_eq!(a.value("SHOW work_mem"), "4MB");
    // A transaction holds the server connection until it ends, while the other client waits.
    a.query("BEGIN").unwrap();
    a.query("CREATE TABLE t (x int)").unwrap();
    a.query("COMMIT").unwrap();
    assert_eq!(b.value("SELECT count(*) FROM t"), "0");

    let config = bouncer.admin("SHOW CONFIG").unwrap();
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("pool_mode|transaction|")),
        "{config}"
    );
    let pools = bouncer.admin("SHOW POOLS").unwrap();
    assert!(
        pools
            .lines()
            .any(|l| l.starts_with(&format!("{}|postgres|", db.name()))),
        "{pools}"
    );
}

#[test]
fn options_reach_the_ini_and_other_roles_connect() {
    let cluster = Cluster::start_new(ClusterOptions::default()).unwrap();
    cluster.psql("postgres", "CREATE ROLE app LOGIN").unwrap();
    let mut options = PgBouncerOptions::default();
    options.pool_mode = PoolMode::Session;
    options.max_client_conn = 77;
    options.ini.push(String::from("server_idle_timeout = 7"));
    let bouncer = start(&cluster, options);
    let config = bouncer.admin("SHOW CONFIG").unwrap();
    for expected in [
        "pool_mode|session|",
        "max_client_conn|77|",
        "server_idle_timeout|7|",
    ] {
        assert!(
            config.lines().any(|l| l.starts_with(expected)),
            "{expected} in {config}"
        );
    }
    // A role that auth_file does not list is looked up on the server.
    let dsn = bouncer.dsn("postgres").replace("user=postgres", "user=app");
    assert_eq!(psql(&dsn, "SELECT current_user").unwrap(), "app");
    // A role the server does not know is refused.
    let dsn = bouncer
        .dsn("postgres")
        .replace("user=postgres", "user=nobody");
    assert!(psql(&dsn, "SELECT 1").is_err());
}

#[test]
fn stops_starts_again_and_follows_a_cluster_restart() {
    let cluster = Cluster::start_new(ClusterOptions::default()).unwrap();
    let mut options = PgBouncerOptions::default();
    options.ini.push(String::from("query_wait_timeout = 1"));
    let bouncer = start(&cluster, options);
    let dsn = bouncer.dsn("postgres");
    let port = bouncer.port();
    assert_eq!(psql(&dsn, "SELECT 1").unwrap(), "1");
    let pid = bouncer.pid().unwrap();

    bouncer.stop().unwrap();
    assert!(bouncer.pid().is_none());
    assert!(!is_alive(i32::try_from(pid).unwrap()));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(bouncer.stop().unwrap_err().kind(), io::ErrorKind::NotFound);

    bouncer.start_again().unwrap();
    assert_eq!(bouncer.port(), port);
    assert_ne!(bouncer.pid().unwrap(), pid);
    assert_eq!(psql(&dsn, "SELECT 2").unwrap(), "2");
    assert_eq!(
        bouncer.start_again().unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );

    // The cluster restarts under pgbouncer. While it is down, pgbouncer queues clients, then
    // fails them after query_wait_timeout; new queries work once it is back.
    cluster.stop_blocking(StopMode::Fast).unwrap();
    let err = psql(&dsn, "SELECT 1").unwrap_err();
    assert!(err.contains("query_wait_timeout"), "{err}");
    cluster.start_blocking().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || psql(&dsn, "SELECT 3").is_ok()),
        "pgbouncer did not reach the restarted cluster"
    );
}

#[test]
fn drop_stops_pgbouncer_and_removes_its_directory() {
    let cluster = Cluster::start_new(ClusterOptions::default()).unwrap();
    let bouncer = start(&cluster, PgBouncerOptions::default());
    let dir: PathBuf = bouncer.dir().to_path_buf();
    assert!(dir.join("pgbouncer.ini").is_file());
    assert!(bouncer.log_file().starts_with(&dir));
    let pid = i32::try_from(bouncer.pid().unwrap()).unwrap();
    let port = bouncer.port();
    assert!(is_alive(pid));
    drop(bouncer);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!is_alive(pid));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // The cluster is still there for its other users.
    assert_eq!(cluster.psql("postgres", "SELECT 1").unwrap(), "1\n");
}

#[test]
fn a_missing_binary_is_an_error_not_a_skip() {
    let cluster = Cluster::shared();
    let mut options = PgBouncerOptions::default();
    options.binary = Some(PathBuf::from("/nonexistent/pgbouncer"));
    let err = PgBouncer::start(cluster, options).unwrap_err();
    if cluster.is_owned() {
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("/nonexistent/pgbouncer"), "{err}");
    } else {
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    }
}
