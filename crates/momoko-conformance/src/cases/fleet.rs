//! Following a replicated PostgreSQL: host selection by `target_session_attrs` (all six of
//! libpq's values), `load_balance_hosts`, a server turned read-only, read routing, and a
//! failover under write load. Real servers: a primary with a streaming standby from the testkit,
//! or two independent clusters.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use momoko_core::{Cluster, Connection, Pool, RetryPolicy};
use momoko_testkit::{ClusterOptions, ReplicatedCluster, ReplicationOptions, SyncStandby, TestDb};

use crate::support::{drop_off_thread, eventually, off_thread, private_cluster, scalar, within};
use crate::Ctx;

async fn replicated(sync: SyncStandby) -> Arc<ReplicatedCluster> {
    off_thread(move || {
        let mut options = ReplicationOptions::default();
        options.sync = sync;
        ReplicatedCluster::start(options).map(Arc::new)
    })
    .await
    .expect("start a primary and a standby")
}

/// A database on both servers of `pair`; dropped with the returned handle.
async fn database(pair: &Arc<ReplicatedCluster>) -> (TestDb, String) {
    let pair = Arc::clone(pair);
    let db = off_thread(move || pair.create_database("fleet"))
        .await
        .expect("a database on both servers");
    let name = db.name().to_owned();
    (db, name)
}

async fn in_recovery(conn: &Connection) -> bool {
    scalar::<bool>(conn, "SELECT pg_is_in_recovery()", &[]).await
}

async fn connect(ctx: &Ctx, dsn: &str) -> Connection {
    Connection::connect(dsn, ctx.executor.clone())
        .await
        .unwrap_or_else(|e| panic!("connect with {dsn}: {e}"))
}

/// Each `target_session_attrs` value lands on the right server, whichever order the hosts are
/// listed in; `prefer-standby` falls back to the primary while no standby is up, and a new
/// connection returns to the standby once it is back.
pub async fn target_session_attrs_choose_the_server(ctx: &Ctx) {
    let pair = replicated(SyncStandby::Off).await;
    let (handle, db) = database(&pair).await;
    let (p, s) = (pair.primary(), pair.standby());
    let primary_first = format!(
        "host={},{} port={},{} user=postgres dbname={db}",
        p.host(),
        s.host(),
        p.port(),
        s.port()
    );
    let standby_first = format!(
        "host={},{} port={},{} user=postgres dbname={db}",
        s.host(),
        p.host(),
        s.port(),
        p.port()
    );
    for (hosts, first_is_standby) in [(&primary_first, false), (&standby_first, true)] {
        for (attrs, standby) in [
            ("any", first_is_standby),
            ("read-write", false),
            ("primary", false),
            ("read-only", true),
            ("standby", true),
            ("prefer-standby", true),
        ] {
            let conn = connect(ctx, &format!("{hosts} target_session_attrs={attrs}")).await;
            assert_eq!(
                in_recovery(&conn).await,
                standby,
                "target_session_attrs={attrs} with {hosts}"
            );
        }
    }
    // A primary that defaults to read-only transactions is read-only, not read-write.
    off_thread({
        let p = pair.primary().handle();
        move || p.set_read_only(true)
    })
    .await
    .unwrap();
    let only_primary = format!(
        "host={} port={} user=postgres dbname={db}",
        p.host(),
        p.port()
    );
    let ro = connect(
        ctx,
        &format!("{only_primary} target_session_attrs=read-only"),
    )
    .await;
    assert!(
        !in_recovery(&ro).await,
        "the primary qualifies as read-only now"
    );
    let e = Connection::connect(
        &format!("{only_primary} target_session_attrs=read-write"),
        ctx.executor.clone(),
    )
    .await
    .expect_err("no read-write server");
    assert!(e.is_connect(), "{e:?}");
    assert!(e.to_string().contains("read-write"), "{e}");
    off_thread({
        let p = pair.primary().handle();
        move || p.set_read_only(false)
    })
    .await
    .unwrap();

    // prefer-standby: the standby goes down, the pool falls back; it comes back, new
    // connections return to it.
    let pool = Pool::builder(
        &format!("{primary_first} target_session_attrs=prefer-standby"),
        ctx.executor.clone(),
    )
    .size(1)
    .connect()
    .await
    .unwrap();
    let on_standby = |pool: &Pool| {
        let pool = pool.clone();
        async move {
            pool.execute("SELECT pg_is_in_recovery()", &[])
                .await
                .unwrap()
                .scalar::<bool>()
                .unwrap()
        }
    };
    assert!(on_standby(&pool).await);
    s.stop(momoko_testkit::StopMode::Fast).await.unwrap();
    assert!(!on_standby(&pool).await, "fell back to the primary");
    s.start().await.unwrap();
    // The pool keeps its connection to the primary until it is replaced: `drain()` replaces
    // it, and the new one walks the hosts again and finds the standby.
    within(ctx, Duration::from_secs(30), "drain", pool.drain()).await;
    assert!(on_standby(&pool).await, "back on the standby");
    pool.close().await;
    drop_off_thread((handle, pair)).await;
}

/// `load_balance_hosts=random` spreads connections over the hosts; `disable` keeps them on the
/// first.
pub async fn load_balance_hosts_spreads_connections(ctx: &Ctx) {
    let pair = replicated(SyncStandby::Off).await;
    let (handle, db) = database(&pair).await;
    let hosts = pair.multi_host_dsn(&db);
    let mut standby = 0;
    for _ in 0..32 {
        let conn = connect(ctx, &format!("{hosts} load_balance_hosts=random")).await;
        standby += usize::from(in_recovery(&conn).await);
    }
    // 32 fair coin flips all landing one way: probability 2^-31.
    assert!(
        (1..32).contains(&standby),
        "{standby} of 32 connections went to the standby"
    );
    for _ in 0..8 {
        let conn = connect(ctx, &format!("{hosts} load_balance_hosts=disable")).await;
        assert!(
            !in_recovery(&conn).await,
            "in order: the primary, listed first"
        );
    }
    drop_off_thread((handle, pair)).await;
}

/// A read-write pool over two servers leaves the one turned read-only
/// (`default_transaction_read_only = on`): the write that hit SQLSTATE 25006 took no effect and
/// runs once on the other server; later writes go there.
pub async fn read_write_pool_leaves_a_read_only_server(ctx: &Ctx) {
    let a = private_cluster(ClusterOptions::default()).await;
    let b = private_cluster(ClusterOptions::default()).await;
    let db_a = off_thread({
        let a = a.handle();
        move || a.create_database("fleet_a")
    })
    .await
    .unwrap();
    let dbname = db_a.name().to_owned();
    off_thread({
        let b = b.handle();
        let name = dbname.clone();
        move || b.psql("postgres", &format!("CREATE DATABASE {name}"))
    })
    .await
    .unwrap();
    for c in [&a, &b] {
        off_thread({
            let c = c.handle();
            let name = dbname.clone();
            move || c.psql(&name, "CREATE TABLE w (n int PRIMARY KEY, port int)")
        })
        .await
        .unwrap();
    }
    let dsn = format!(
        "host={},{} port={},{} user=postgres dbname={dbname} target_session_attrs=read-write",
        a.host(),
        b.host(),
        a.port(),
        b.port()
    );
    let pool = Pool::builder(&dsn, ctx.executor.clone())
        .size(2)
        .connect()
        .await
        .unwrap();
    const INSERT: &str = "INSERT INTO w VALUES ($1, inet_server_port())";
    for n in 0..4i32 {
        pool.execute(INSERT, &[&n]).await.unwrap();
    }
    off_thread({
        let a = a.handle();
        move || a.set_read_only(true)
    })
    .await
    .unwrap();
    for n in 4..8i32 {
        pool.execute(INSERT, &[&n])
            .await
            .unwrap_or_else(|e| panic!("write {n} after A turned read-only: {e}"));
    }
    let rows = |c: &momoko_testkit::Cluster| {
        let c = c.handle();
        let name = dbname.clone();
        async move {
            off_thread(move || c.psql(&name, "SELECT string_agg(n::text, ',' ORDER BY n) FROM w"))
                .await
                .unwrap()
                .trim()
                .to_owned()
        }
    };
    assert_eq!(
        rows(&a).await,
        "0,1,2,3",
        "A got the writes before, none after"
    );
    assert_eq!(rows(&b).await, "4,5,6,7", "B got every later write, once");
    assert!(pool.counters().retries >= 1, "{:?}", pool.counters());
    pool.close().await;
    drop_off_thread(db_a).await;
    drop_off_thread(a).await;
    drop_off_thread(b).await;
}

/// A `Cluster` sends the writer's statements to the primary and the reader's to the standby.
pub async fn cluster_routes_reads_to_the_standby(ctx: &Ctx) {
    let pair = replicated(SyncStandby::Apply).await;
    let (handle, db) = database(&pair).await;
    let cluster = Cluster::builder(&pair.multi_host_dsn(&db), ctx.executor.clone())
        .writer(|p| p.size(2))
        .reader(|p| p.size(2))
        .connect()
        .await
        .unwrap();
    cluster
        .writer()
        .execute("CREATE TABLE routed (n int)", &[])
        .await
        .unwrap();
    cluster
        .writer()
        .execute("INSERT INTO routed VALUES (1)", &[])
        .await
        .unwrap();
    let on_standby: bool = cluster
        .reader()
        .execute("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert!(on_standby);
    // remote_apply: the write is visible on the standby once acknowledged.
    let n: i64 = cluster
        .reader()
        .execute("SELECT count(*) FROM routed", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(n, 1);
    let e = cluster
        .reader()
        .execute("INSERT INTO routed VALUES (2)", &[])
        .await
        .expect_err("the standby refuses writes");
    assert_eq!(e.code().map(|c| c.code()), Some("25006"));
    cluster.close().await;
    drop_off_thread((handle, pair)).await;
}

/// Under 8 writer tasks, the primary is killed and the synchronous standby promoted: writes
/// resume on the new primary, and every acknowledged write is there exactly once.
pub async fn failover_keeps_every_acknowledged_write(ctx: &Ctx) {
    let pair = replicated(SyncStandby::Flush).await;
    let (handle, db) = database(&pair).await;
    let reconnect = Duration::from_millis(100);
    let pool = Pool::builder(
        &format!(
            "{} target_session_attrs=read-write",
            pair.multi_host_dsn(&db)
        ),
        ctx.executor.clone(),
    )
    .size(4)
    .max_size(8)
    .reconnect_interval(reconnect)
    .connect_timeout(Duration::from_secs(2))
    .retry(RetryPolicy::Safe)
    .connect()
    .await
    .unwrap();
    pool.execute("CREATE TABLE acked (id bigint PRIMARY KEY)", &[])
        .await
        .unwrap();
    let next = AtomicI64::new(0);
    let acked = Mutex::new(Vec::<i64>::new());
    let stop = AtomicBool::new(false);
    let promoted_at = Mutex::new(None::<Instant>);
    let first_after = Mutex::new(None::<Instant>);
    let writer = || async {
        while !stop.load(Ordering::SeqCst) {
            let id = next.fetch_add(1, Ordering::SeqCst);
            match pool.execute("INSERT INTO acked VALUES ($1)", &[&id]).await {
                Ok(_) => {
                    acked.lock().unwrap().push(id);
                    if promoted_at.lock().unwrap().is_some() {
                        first_after
                            .lock()
                            .unwrap()
                            .get_or_insert(ctx.executor.now());
                    }
                }
                Err(e) => {
                    assert!(
                        e.is_connection_lost() || e.is_database_not_available() || e.is_timeout(),
                        "a write failed for another reason than the failover: {e:?}"
                    );
                    ctx.sleep(Duration::from_millis(5)).await;
                }
            }
        }
    };
    let control = async {
        eventually(ctx, "writes before the fault", || {
            acked.lock().unwrap().len() >= 200
        })
        .await;
        off_thread({
            let p = pair.primary().handle();
            move || p.kill()
        })
        .await
        .unwrap();
        pair.promote_standby().await.unwrap();
        *promoted_at.lock().unwrap() = Some(ctx.executor.now());
        let before = acked.lock().unwrap().len();
        within(ctx, Duration::from_secs(20), "writes resume", async {
            eventually(ctx, "writes after the promotion", || {
                acked.lock().unwrap().len() >= before + 200
            })
            .await
        })
        .await;
        stop.store(true, Ordering::SeqCst);
    };
    futures::join!(control, join_all((0..8).map(|_| writer())));
    let promoted = promoted_at.lock().unwrap().unwrap();
    let resumed = first_after
        .lock()
        .unwrap()
        .unwrap()
        .saturating_duration_since(promoted);
    eprintln!(
        "failover_keeps_every_acknowledged_write: first acknowledged write {resumed:?} after the \
         promotion (reconnect_interval {reconnect:?})"
    );
    let stored: Vec<i64> = pool
        .execute("SELECT id FROM acked ORDER BY id", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
        .collect();
    let stored_set: HashSet<i64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "no write twice");
    let missing: Vec<i64> = acked
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|id| !stored_set.contains(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let on_new_primary: bool = pool
        .execute(
            "SELECT NOT pg_is_in_recovery() AND inet_server_port() = $1",
            &[&i32::from(pair.standby().port())],
        )
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert!(on_new_primary);
    pool.close().await;
    drop_off_thread((handle, pair)).await;
}
