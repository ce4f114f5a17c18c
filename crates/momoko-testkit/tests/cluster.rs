//! Throw-away clusters: the shared one, per-test databases, private clusters that stop, start
//! and reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::time::Instant;

use common::psql;
use momoko_testkit::{test_db, Cluster, ClusterOptions, StopMode};

#[test]
fn shared_cluster_answers_over_tcp_and_unix_socket() {
    let db = test_db("select_one");
    assert_eq!(psql(&db.dsn(), "SELECT 1").unwrap(), "1");
    assert_eq!(
        psql(&db.dsn(), "SELECT current_database()").unwrap(),
        db.name()
    );
    let cluster = db.cluster();
    if cluster.is_owned() {
        assert_eq!(cluster.host(), "127.0.0.1");
        let unix = db.unix_dsn().expect("owned clusters have a Unix socket");
        let sock_dir = cluster.socket_dir().unwrap();
        assert!(
            unix.contains(&format!("host={}", sock_dir.display())),
            "{unix}"
        );
        assert!(sock_dir
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists());
        assert_eq!(psql(&unix, "SELECT 1").unwrap(), "1");
        // The Unix socket really is a different path from TCP.
        assert_eq!(
            psql(&unix, "SELECT inet_server_addr() IS NULL").unwrap(),
            "t"
        );
        assert_eq!(
            psql(&db.dsn(), "SELECT inet_server_addr() IS NULL").unwrap(),
            "f"
        );
        assert_eq!(
            db.dsn(),
            format!(
                "host=127.0.0.1 port={} user=postgres dbname={}",
                cluster.port(),
                db.name()
            )
        );
    } else {
        assert!(db.unix_dsn().is_none());
    }
    assert_eq!(db.psql("SELECT 1").unwrap(), "1\n");
}

#[test]
fn created_databases_are_distinct_exist_and_are_dropped() {
    let cluster = Cluster::shared();
    let a = cluster.create_database("Two DBs!").unwrap();
    let t = Instant::now();
    let b = cluster.create_database("Two DBs!").unwrap();
    eprintln!("momoko-testkit: create_database took {:?}", t.elapsed());
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("two_dbs__"), "{}", a.name());
    let list = || {
        cluster
            .psql("postgres", "SELECT datname FROM pg_database")
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let names = list();
    assert!(names.iter().any(|n| n == a.name()), "{names:?}");
    assert!(names.iter().any(|n| n == b.name()), "{names:?}");

    let a_name = a.name().to_owned();
    drop(a);
    let names = list();
    assert!(!names.contains(&a_name), "dropped with its TestDb");
    assert!(names.iter().any(|n| n == b.name()));
}

#[test]
fn parallel_database_creation_never_collides() {
    let dbs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| test_db("parallel"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut names: Vec<&str> = dbs.iter().map(|d| d.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 8);
    for db in &dbs {
        assert_eq!(
            db.psql("SELECT current_database()").unwrap().trim(),
            db.name()
        );
    }
}

#[test]
fn psql_runs_scripts_and_reports_errors() {
    let db = test_db("psql_errors");
    let out = db
        .psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);\nSELECT sum(x), 'a' FROM t;")
        .unwrap();
    assert_eq!(out, "3|a\n");
    let err = db.psql("SELECT 1/0").unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
    // ON_ERROR_STOP: nothing after the error runs.
    assert!(db.psql("SELECT 1/0; CREATE TABLE u (x int);").is_err());
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_class WHERE relname = 'u'")
            .unwrap(),
        "0\n"
    );
}

#[test]
fn private_cluster_stops_and_starts_on_the_same_port() {
    let t = Instant::now();
    let cluster = Cluster::start_new(ClusterOptions::default()).unwrap();
    eprintln!(
        "momoko-testkit: private cluster start-up (initdb + pg_ctl start) took {:?}",
        t.elapsed()
    );
    assert!(cluster.is_owned());
    let port = cluster.port();
    let data = cluster.data_dir().unwrap().to_path_buf();
    assert!(data.join("PG_VERSION").is_file());
    let base = data.parent().unwrap().to_path_buf();

    let db = cluster.create_database("stop_start").unwrap();
    let dsn = db.dsn();
    assert_eq!(psql(&dsn, "SELECT 1").unwrap(), "1");

    cluster.stop_blocking(StopMode::Fast).unwrap();
    let err = psql(&dsn, "SELECT 1").unwrap_err();
    assert!(!err.is_empty());
    assert!(db.psql("SELECT 1").is_err());
    assert!(!data.join("postmaster.pid").exists());

    cluster.start_blocking().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(db.dsn(), dsn);
    assert_eq!(psql(&dsn, "SELECT 2").unwrap(), "2");
    assert_eq!(psql(&db.unix_dsn().unwrap(), "SELECT 3").unwrap(), "3");

    // The async variants, driven by a minimal executor (no runtime in this process).
    let pid_before = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    futures::executor::block_on(cluster.restart(StopMode::Immediate)).unwrap();
    let pid_after = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    assert_ne!(
        pid_before.lines().next(),
        pid_after.lines().next(),
        "a new postmaster"
    );
    assert_eq!(psql(&dsn, "SELECT 4").unwrap(), "4");
    futures::executor::block_on(cluster.stop(StopMode::Smart)).unwrap();
    assert!(psql(&dsn, "SELECT 1").is_err());
    // Stopping a stopped server is an error, not a hang.
    assert!(cluster.stop_blocking(StopMode::Fast).is_err());
    futures::executor::block_on(cluster.start()).unwrap();
    assert_eq!(psql(&dsn, "SELECT 5").unwrap(), "5");

    // The last handle going away stops the server and removes its directory.
    drop(cluster);
    assert!(base.exists(), "the TestDb still holds the cluster");
    assert_eq!(psql(&dsn, "SELECT 6").unwrap(), "6");
    drop(db);
    assert!(!base.exists(), "{} removed", base.display());
    assert!(psql(&dsn, "SELECT 1").is_err());
}

#[test]
fn reload_with_applies_settings_and_hba() {
    let mut options = ClusterOptions::default();
    options.conf.push(String::from("work_mem='3MB'"));
    let cluster = Cluster::start_new(options).unwrap();
    let tcp = cluster.dsn("postgres");
    assert_eq!(cluster.psql("postgres", "SHOW work_mem").unwrap(), "3MB\n");
    assert_eq!(psql(&tcp, "SELECT 1").unwrap(), "1");

    cluster
        .reload_with(
            &["work_mem='7MB'"],
            Some("local all all trust\nhost all all 127.0.0.1/32 reject\n"),
        )
        .unwrap();
    assert_eq!(cluster.psql("postgres", "SHOW work_mem").unwrap(), "7MB\n");
    let err = psql(&tcp, "SELECT 1").unwrap_err();
    assert!(err.contains("rejects connection"), "{err}");

    // A broken pg_hba.conf is refused and the previous files are kept.
    let err = cluster
        .reload_with(&[], Some("local all all no_such_method\n"))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let hba = std::fs::read_to_string(cluster.data_dir().unwrap().join("pg_hba.conf")).unwrap();
    assert!(hba.contains("reject"), "{hba}");

    // So is an invalid setting.
    let err = cluster.reload_with(&["work_mem='lots'"], None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("work_mem"), "{err}");
    assert_eq!(cluster.psql("postgres", "SHOW work_mem").unwrap(), "7MB\n");

    cluster
        .reload_with(
            &[],
            Some("local all all trust\nhost all all 127.0.0.1/32 trust\n"),
        )
        .unwrap();
    assert_eq!(psql(&tcp, "SELECT 1").unwrap(), "1");
}

#[test]
fn failed_start_reports_the_server_log() {
    let mut options = ClusterOptions::default();
    options.conf.push(String::from("shared_buffers=nonsense"));
    let err = Cluster::start_new(options).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("shared_buffers"), "{msg}");
    assert!(msg.contains("server log"), "{msg}");
}
