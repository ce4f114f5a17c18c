//! The fault-injecting proxy, exercised with the real psql client against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::{psql, psql_command, wait_until};
use momoko_testkit::{test_db, FaultProxy, TestDb};

fn proxy_for(db: &TestDb) -> FaultProxy {
    let c = db.cluster();
    let target: SocketAddr = (c.host(), c.port())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    FaultProxy::start(target).unwrap()
}

/// Waits until a session of `db` runs exactly `query`.
fn wait_for_active_query(db: &TestDb, query: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state = 'active' AND query = '{query}'"
    );
    assert!(
        wait_until(Duration::from_secs(10), || db.psql(&sql).unwrap().trim()
            == "1"),
        "{query:?} never became active"
    );
}

#[test]
fn forwards_queries() {
    let db = test_db("proxy_forward");
    let proxy = proxy_for(&db);
    let dsn = proxy.dsn_for(&db);
    assert!(dsn.contains(&format!("port={}", proxy.port())), "{dsn}");
    assert!(dsn.contains("host=127.0.0.1"), "{dsn}");
    assert_eq!(proxy.addr().port(), proxy.port());
    assert_eq!(proxy.accepted(), 0);
    assert_eq!(psql(&dsn, "select 42").unwrap(), "42");
    assert_eq!(psql(&dsn, "select current_database()").unwrap(), db.name());
    assert_eq!(proxy.accepted(), 2);
    assert!(wait_until(Duration::from_secs(5), || proxy
        .open_connections()
        == 0));
}

#[test]
fn refuse_fails_fast_and_can_be_lifted() {
    let db = test_db("proxy_refuse");
    let proxy = proxy_for(&db);
    let dsn = format!("{} connect_timeout=10", proxy.dsn_for(&db));
    proxy.set_refuse(true);
    let t = Instant::now();
    let err = psql(&dsn, "select 1").unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(!err.is_empty());
    assert_eq!(proxy.accepted(), 0, "refused connections are not counted");
    proxy.set_refuse(false);
    assert_eq!(psql(&dsn, "select 1").unwrap(), "1");
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn sever_all_kills_open_connections() {
    let db = test_db("proxy_sever");
    let proxy = proxy_for(&db);
    let mut child = psql_command(&proxy.dsn_for(&db), "select pg_sleep(5)")
        .spawn()
        .unwrap();
    wait_for_active_query(&db, "select pg_sleep(5)");
    assert_eq!(proxy.open_connections(), 1);

    let t = Instant::now();
    proxy.sever_all();
    let status = child.wait().unwrap();
    let waited = t.elapsed();
    assert!(
        !status.success(),
        "psql must fail when its connection is severed"
    );
    assert!(
        waited < Duration::from_secs(3),
        "psql exited after {waited:?}"
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("closed"), "{stderr}");
    assert!(wait_until(Duration::from_secs(5), || proxy
        .open_connections()
        == 0));

    // New connections are unaffected.
    assert_eq!(psql(&proxy.dsn_for(&db), "select 7").unwrap(), "7");
}

#[test]
fn blackhole_hangs_new_connections_until_the_client_times_out() {
    let db = test_db("proxy_blackhole");
    let proxy = proxy_for(&db);
    let dsn = proxy.dsn_for(&db);
    proxy.set_blackhole(true);
    let t = Instant::now();
    let err = psql(&format!("{dsn} connect_timeout=1"), "select 1").unwrap_err();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "psql gave up after {waited:?}: {err}"
    );
    assert!(err.contains("timeout"), "{err}");
    assert_eq!(proxy.accepted(), 1);

    proxy.set_blackhole(false);
    assert_eq!(psql(&dsn, "select 1").unwrap(), "1");
}

#[test]
fn blackhole_holds_bytes_of_existing_connections() {
    let db = test_db("proxy_hold");
    let proxy = proxy_for(&db);
    let mut child = psql_command(&proxy.dsn_for(&db), "select 99 from pg_sleep(1)")
        .spawn()
        .unwrap();
    wait_for_active_query(&db, "select 99 from pg_sleep(1)");
    proxy.set_blackhole(true);
    let since = Instant::now();
    // The query finishes on the server after at most a second; its result must be held.
    assert!(wait_until(Duration::from_secs(5), || {
        db.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query = 'select 99 from pg_sleep(1)'",
        )
        .unwrap()
        .trim()
            == "0"
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "psql got its result through a blackhole after {:?}",
        since.elapsed()
    );
    proxy.set_blackhole(false);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "99");
}

#[test]
fn connect_delay_adds_latency() {
    let db = test_db("proxy_delay");
    let proxy = proxy_for(&db);
    let dsn = proxy.dsn_for(&db);
    proxy.set_connect_delay(Duration::from_millis(700));
    let t = Instant::now();
    assert_eq!(psql(&dsn, "select 1").unwrap(), "1");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    proxy.set_connect_delay(Duration::ZERO);
    assert_eq!(psql(&dsn, "select 1").unwrap(), "1");
}

#[test]
fn dropping_the_proxy_closes_everything() {
    let db = test_db("proxy_drop");
    let proxy = proxy_for(&db);
    let addr = proxy.addr();
    proxy.set_blackhole(true);
    let mut child = psql_command(
        &format!("{} connect_timeout=30", proxy.dsn_for(&db)),
        "select 1",
    )
    .spawn()
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || proxy
        .open_connections()
        == 1));
    let t = Instant::now();
    drop(proxy);
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn silence_all_leaves_clients_hanging() {
    let db = test_db("proxy_silence");
    let proxy = proxy_for(&db);
    let mut raw = std::net::TcpStream::connect(proxy.addr()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || proxy
        .open_connections()
        == 1));
    proxy.silence_all();
    // Nothing comes back, not even an end of stream, and what the client sends is swallowed.
    raw.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    use std::io::Write;
    raw.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut buf = [0u8; 16];
    match raw.read(&mut buf) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(n) => panic!("a silenced connection answered with {n} bytes"),
    }
    // A new connection works as before.
    assert_eq!(psql(&proxy.dsn_for(&db), "select 7").unwrap(), "7");
    drop(raw);
}
