//! A primary with a streaming standby: synchronous replication, catch-up, promotion, crashes,
//! read-only toggling, stopping and starting either server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{is_alive, psql, psql_command, server_processes, wait_until};
use momoko_testkit::{ReplicatedCluster, ReplicationOptions, StopMode, SyncStandby};

fn start(sync: SyncStandby) -> ReplicatedCluster {
    let mut options = ReplicationOptions::default();
    options.sync = sync;
    let t = Instant::now();
    let rc = ReplicatedCluster::start(options).unwrap();
    eprintln!(
        "momoko-testkit: primary + standby ({sync:?}) start-up took {:?}",
        t.elapsed()
    );
    rc
}

#[test]
fn synchronous_apply_commits_are_visible_on_the_standby_at_once() {
    let rc = start(SyncStandby::Apply);
    assert_eq!(rc.sync(), SyncStandby::Apply);
    let primary = rc.primary();
    let standby = rc.standby();
    assert_ne!(primary.port(), standby.port());
    assert_ne!(primary.socket_dir(), standby.socket_dir());
    assert!(!primary.is_in_recovery().unwrap());
    assert!(standby.is_in_recovery().unwrap());
    assert_eq!(
        primary
            .psql(
                "postgres",
                &format!(
                    "SELECT sync_state, state FROM pg_stat_replication \
                     WHERE application_name = '{}'",
                    rc.standby_name()
                ),
            )
            .unwrap(),
        "sync|streaming\n"
    );
    assert_eq!(
        primary.psql("postgres", "SHOW synchronous_commit").unwrap(),
        "remote_apply\n"
    );

    let db = rc.create_database("sync_apply").unwrap();
    db.psql("CREATE TABLE t (x int)").unwrap();
    // Each INSERT commits on its own; the very next statement, on the standby, must see it.
    for i in 0..20 {
        psql(&db.dsn(), &format!("INSERT INTO t VALUES ({i})")).unwrap();
        let seen = psql(
            &standby.dsn(db.name()),
            &format!("SELECT count(*) FROM t WHERE x = {i}"),
        )
        .unwrap();
        assert_eq!(seen, "1", "row {i} not yet on the standby");
    }
    // The standby refuses writes.
    let err = psql(&standby.dsn(db.name()), "INSERT INTO t VALUES (-1)").unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");
}

#[test]
fn synchronous_flush_commit_waits_for_the_standby() {
    let rc = start(SyncStandby::Flush);
    let primary = rc.primary();
    assert_eq!(
        primary.psql("postgres", "SHOW synchronous_commit").unwrap(),
        "on\n"
    );
    let db = rc.create_database("sync_flush").unwrap();
    db.psql("CREATE TABLE t (x int)").unwrap();
    psql(&db.dsn(), "INSERT INTO t VALUES (1)").unwrap();
    rc.catch_up_blocking().unwrap();
    assert_eq!(
        psql(&rc.standby().dsn(db.name()), "SELECT sum(x) FROM t").unwrap(),
        "1"
    );

    // Without its standby the primary cannot acknowledge a commit: the COMMIT waits (wait
    // event SyncRep) until it is cancelled, and then PostgreSQL warns that the transaction
    // committed locally but may not be replicated.
    rc.standby().stop_blocking(StopMode::Fast).unwrap();
    let insert = psql_command(
        &format!("{} application_name=waits_for_standby", db.dsn()),
        "INSERT INTO t VALUES (2)",
    )
    .spawn()
    .unwrap();
    let waiting = "SELECT pid FROM pg_stat_activity \
                   WHERE application_name = 'waits_for_standby' AND wait_event = 'SyncRep'";
    assert!(
        wait_until(Duration::from_secs(10), || !db
            .psql(waiting)
            .unwrap()
            .trim()
            .is_empty()),
        "the INSERT never waited for the standby"
    );
    db.psql(&format!("SELECT pg_cancel_backend(pid) FROM ({waiting}) w"))
        .unwrap();
    let out = insert.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling wait for synchronous replication"),
        "status {}, stderr: {stderr}",
        out.status
    );

    // Back up, the standby catches up on what it missed (the slot kept the WAL).
    rc.standby().start_blocking().unwrap();
    rc.catch_up_blocking().unwrap();
    assert_eq!(
        psql(&rc.standby().dsn(db.name()), "SELECT sum(x) FROM t").unwrap(),
        "3"
    );
    // And commits are acknowledged again without a timeout.
    psql(&db.dsn(), "INSERT INTO t VALUES (4)").unwrap();
}

#[test]
fn asynchronous_standby_catches_up_and_survives_its_restart() {
    let rc = start(SyncStandby::Off);
    let db = rc.create_database("async").unwrap();
    // create_database waited for the standby to have the database.
    assert_eq!(psql(&rc.standby().dsn(db.name()), "SELECT 1").unwrap(), "1");
    db.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);")
        .unwrap();
    let t = Instant::now();
    futures::executor::block_on(rc.catch_up()).unwrap();
    eprintln!("momoko-testkit: catch_up took {:?}", t.elapsed());
    assert_eq!(
        psql(&rc.standby().dsn(db.name()), "SELECT count(*) FROM t").unwrap(),
        "1000"
    );

    // The standby stops; the primary goes on alone; the standby comes back and catches up.
    futures::executor::block_on(rc.standby().stop(StopMode::Fast)).unwrap();
    assert!(psql(&rc.standby().dsn(db.name()), "SELECT 1").is_err());
    db.psql("INSERT INTO t SELECT generate_series(1, 500)")
        .unwrap();
    assert!(rc.catch_up_blocking().is_err(), "the standby is down");
    futures::executor::block_on(rc.standby().start()).unwrap();
    rc.catch_up_blocking().unwrap();
    assert_eq!(
        psql(&rc.standby().dsn(db.name()), "SELECT count(*) FROM t").unwrap(),
        "1500"
    );

    // The primary stops and starts again: the standby reconnects and streams.
    rc.primary().restart(StopMode::Fast).await_blocking();
    db.psql("INSERT INTO t VALUES (0)").unwrap();
    rc.catch_up_blocking().unwrap();
    assert_eq!(
        psql(&rc.standby().dsn(db.name()), "SELECT count(*) FROM t").unwrap(),
        "1501"
    );
}

/// Drives a kit future to completion without any runtime.
trait AwaitBlocking {
    fn await_blocking(self);
}

impl<F: std::future::Future<Output = io::Result<()>>> AwaitBlocking for F {
    fn await_blocking(self) {
        futures::executor::block_on(self).unwrap();
    }
}

#[test]
fn killed_primary_fails_over_to_the_promoted_standby() {
    let rc = start(SyncStandby::Flush);
    let db = rc.create_database("failover").unwrap();
    db.psql("CREATE TABLE t (x int)").unwrap();
    for i in 1..=10 {
        psql(&db.dsn(), &format!("INSERT INTO t VALUES ({i})")).unwrap();
    }
    let primary_data = rc.primary().data_dir().unwrap().to_path_buf();
    let processes = server_processes(&primary_data);
    assert!(
        processes.len() > 3,
        "postmaster and children: {processes:?}"
    );

    let t = Instant::now();
    rc.kill_primary().unwrap();
    eprintln!("momoko-testkit: kill_primary took {:?}", t.elapsed());
    let alive: Vec<i32> = processes.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(alive.is_empty(), "still alive after kill: {alive:?}");
    let err = psql(&db.dsn(), "SELECT 1").unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
    // A second kill finds nothing to kill.
    assert_eq!(
        rc.kill_primary().unwrap_err().kind(),
        io::ErrorKind::NotFound
    );

    let t = Instant::now();
    futures::executor::block_on(rc.promote_standby()).unwrap();
    eprintln!("momoko-testkit: promote took {:?}", t.elapsed());
    let standby = rc.standby();
    assert!(!standby.is_in_recovery().unwrap());
    // Every acknowledged commit is there, and the new primary takes writes (without waiting
    // for a synchronous standby of its own).
    let on_standby = standby.dsn(db.name());
    assert_eq!(psql(&on_standby, "SELECT sum(x) FROM t").unwrap(), "55");
    assert_eq!(
        psql(&on_standby, "SHOW synchronous_standby_names").unwrap(),
        ""
    );
    psql(&on_standby, "INSERT INTO t VALUES (100)").unwrap();
    assert_eq!(psql(&on_standby, "SELECT sum(x) FROM t").unwrap(), "155");
    // Promoting a primary is an error.
    assert!(rc.promote_standby_blocking().is_err());
    assert!(
        rc.catch_up_blocking().is_err(),
        "nothing to catch up after promotion"
    );

    // The killed primary starts again (crash recovery) with its acknowledged rows.
    rc.primary().start_blocking().unwrap();
    assert_eq!(psql(&db.dsn(), "SELECT sum(x) FROM t").unwrap(), "55");

    // Dropping everything leaves no server process and no directory behind.
    let base_dirs = [
        primary_data.parent().unwrap().to_path_buf(),
        standby.data_dir().unwrap().parent().unwrap().to_path_buf(),
    ];
    let mut processes = server_processes(&primary_data);
    processes.extend(server_processes(standby.data_dir().unwrap()));
    drop(db);
    drop(rc);
    for dir in &base_dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(
        wait_until(Duration::from_secs(5), || processes
            .iter()
            .all(|&p| !is_alive(p))),
        "server processes left behind: {:?}",
        processes
            .iter()
            .filter(|&&p| is_alive(p))
            .collect::<Vec<_>>()
    );
}

#[test]
fn promoted_standby_becomes_writable() {
    let rc = start(SyncStandby::Off);
    let db = rc.create_database("promote").unwrap();
    db.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .unwrap();
    rc.catch_up_blocking().unwrap();
    let on_standby = rc.standby().dsn(db.name());
    let err = psql(&on_standby, "INSERT INTO t VALUES (2)").unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");

    rc.promote_standby_blocking().unwrap();
    psql(&on_standby, "INSERT INTO t VALUES (2)").unwrap();
    assert_eq!(psql(&on_standby, "SELECT sum(x) FROM t").unwrap(), "3");
    // The old primary goes on alone: the timelines have forked.
    assert_eq!(psql(&db.dsn(), "SELECT sum(x) FROM t").unwrap(), "1");
    assert!(!rc.primary().is_in_recovery().unwrap());
}

#[test]
fn read_only_toggles_on_either_server() {
    let rc = start(SyncStandby::Off);
    let db = rc.create_database("read_only").unwrap();
    db.psql("CREATE TABLE t (x int)").unwrap();
    let primary = rc.primary();
    let show = |dsn: &str| psql(dsn, "SHOW default_transaction_read_only").unwrap();
    assert_eq!(show(&db.dsn()), "off");

    primary.set_read_only(true).unwrap();
    assert_eq!(show(&db.dsn()), "on");
    let err = psql(&db.dsn(), "INSERT INTO t VALUES (1)").unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");
    // It survives a restart (ALTER SYSTEM).
    primary.restart(StopMode::Fast).await_blocking();
    assert_eq!(show(&db.dsn()), "on");

    primary.set_read_only(false).unwrap();
    assert_eq!(show(&db.dsn()), "off");
    psql(&db.dsn(), "INSERT INTO t VALUES (1)").unwrap();

    // On the standby too (where ALTER SYSTEM works during recovery), which keeps it after
    // promotion: a promoted but read-only server.
    let on_standby = rc.standby().dsn(db.name());
    rc.standby().set_read_only(true).unwrap();
    assert_eq!(show(&on_standby), "on");
    rc.promote_standby_blocking().unwrap();
    let err = psql(&on_standby, "INSERT INTO t VALUES (2)").unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");
    rc.standby().set_read_only(false).unwrap();
    psql(&on_standby, "INSERT INTO t VALUES (2)").unwrap();
}

#[test]
fn multi_host_dsn_lists_both_servers() {
    let rc = start(SyncStandby::Off);
    let dsn = rc.multi_host_dsn("postgres");
    assert_eq!(
        dsn,
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres",
            rc.primary().port(),
            rc.standby().port()
        )
    );
    // libpq picks the writable server, or the standby, as asked.
    let port_of = |attrs: &str| {
        psql(
            &format!("{dsn} target_session_attrs={attrs}"),
            "SELECT current_setting('port')",
        )
        .unwrap()
    };
    assert_eq!(port_of("read-write"), rc.primary().port().to_string());
    assert_eq!(port_of("standby"), rc.standby().port().to_string());
}

/// A standby query that holds an old snapshot makes replay of a cleanup record wait for it
/// (a recovery conflict, up to `max_standby_streaming_delay`, 30 s). `catch_up` waits in a
/// standby session itself, so it must not hold one snapshot for the whole wait.
#[test]
fn catch_up_does_not_hold_up_the_replay_it_waits_for() {
    let rc = start(SyncStandby::Off);
    // Snapshot conflicts are per database: the table is in the database the kit's own
    // sessions use.
    let primary = rc.primary();
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);",
        )
        .unwrap();
    rc.catch_up_blocking().unwrap();
    let standby = rc.standby();
    standby
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || standby
        .psql("postgres", "SELECT pg_get_wal_replay_pause_state()")
        .unwrap()
        .trim()
        == "paused"));
    // Old row versions that the primary removes at once: the cleanup record conflicts with
    // any standby snapshot taken before the UPDATE was replayed.
    primary
        .psql("postgres", "UPDATE t SET x = x + 1; VACUUM t;")
        .unwrap();

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let t = Instant::now();
            let result = rc.catch_up_blocking();
            (result, t.elapsed())
        });
        // Resume replay once catch_up is waiting (and has taken its first snapshot).
        assert!(wait_until(Duration::from_secs(10), || !standby
            .psql(
                "postgres",
                "SELECT pid FROM pg_stat_activity \
                 WHERE query LIKE '%pg_last_wal_replay_lsn%' AND pid <> pg_backend_pid()"
            )
            .unwrap()
            .trim()
            .is_empty()));
        standby
            .psql("postgres", "SELECT pg_wal_replay_resume()")
            .unwrap();
        let (result, elapsed) = waiter.join().unwrap();
        result.unwrap();
        assert!(
            elapsed < Duration::from_secs(10),
            "catch_up took {elapsed:?}"
        );
    });
    assert_eq!(
        standby.psql("postgres", "SELECT sum(x) FROM t").unwrap(),
        "5150\n"
    );
}
