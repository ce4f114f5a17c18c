//! The pool's life in production: connection lifetimes, drain, resize, credential providers,
//! a bounded queue, leak warnings, metrics, and the settings an operator expects.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures::future::{self, join_all};
use momoko_core::{ConnectOptions, Connection, Error, Pool};
use momoko_testkit::{Cluster, ClusterOptions};

use crate::support::{assert_settled, drop_off_thread, eventually, off_thread, within};
use crate::Ctx;

/// Generous liveness bound for the cases here (never a performance assertion).
const BOUND: Duration = Duration::from_secs(60);

/// Server process ids of the client sessions on the database `conn` is connected to, other than
/// `conn`'s own.
async fn backends(conn: &Connection) -> HashSet<i32> {
    let cursor = conn
        .execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("pg_stat_activity");
    (0..cursor.rowcount().unwrap_or(0) as usize)
        .map(|i| cursor.get::<i32>(i, 0usize).expect("a pid"))
        .collect()
}

/// Polls `cond` (an async check) every 10 ms on the executor's timer until it holds (bounded,
/// 30 s).
async fn eventually_async<F, Fut>(ctx: &Ctx, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if cond().await {
            return;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Load: `tasks` callers each running `SELECT pg_backend_pid()` in a loop until `stop`; returns
/// (calls, failures, pids seen). Failures are printed.
async fn load(pool: &Pool, tasks: usize, stop: &AtomicBool) -> (u64, u64, HashSet<i32>) {
    let calls = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let seen = Mutex::new(HashSet::new());
    join_all((0..tasks).map(|_| async {
        while !stop.load(Ordering::Relaxed) {
            calls.fetch_add(1, Ordering::Relaxed);
            match pool
                .execute("SELECT pg_backend_pid()", &[])
                .await
                .and_then(|c| c.scalar::<i32>())
            {
                Ok(pid) => {
                    seen.lock().unwrap().insert(pid);
                }
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("a call under load failed: {e:?}");
                }
            }
        }
    }))
    .await;
    (
        calls.into_inner(),
        failures.into_inner(),
        seen.into_inner().unwrap(),
    )
}

/// With a 1 s lifetime, under 16 callers of load on 4 connections, every original connection is
/// replaced (its backend is gone), no call fails, the pool never exceeds its size, and the
/// replacements are counted as rotations.
pub async fn lifetime_rotates_connections_under_load(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(4)
        .max_lifetime(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let watcher = ctx.connect().await;
    let original = backends(&watcher).await;
    assert_eq!(original.len(), 4, "{original:?}");
    let stop = AtomicBool::new(false);
    let (outcome, ()) = within(ctx, BOUND, "rotation under load", async {
        future::join(load(&pool, 16, &stop), async {
            eventually_async(ctx, "every original backend is gone", || async {
                let now = backends(&watcher).await;
                let s = pool.status();
                assert!(s.free + s.busy + s.checking <= 4, "never above size: {s:?}");
                now.is_disjoint(&original)
            })
            .await;
            stop.store(true, Ordering::Relaxed);
        })
        .await
    })
    .await;
    let (calls, failures, seen) = outcome;
    assert_eq!(failures, 0, "no call failed ({calls} calls)");
    assert!(
        !seen.is_disjoint(&original) && seen.len() > 4,
        "the load ran on the original connections and on their replacements: {seen:?}"
    );
    assert_settled(ctx, &pool).await;
    let c = pool.counters();
    assert!(c.rotated >= 4, "{c:?}");
    assert_eq!(c.discarded, 0, "nothing was lost: {c:?}");
    // One connect per replaced connection: no burst of extra connects (a connect the shared
    // server refused, when it is crowded, is retried once).
    assert!(
        c.connections_opened <= 4 + c.rotated + c.connect_failures,
        "{c:?}"
    );
}

/// With pipelining, a 1 s lifetime still replaces every connection under load (a connection
/// that always carries pipelined statements takes no new ones once expired, and closes when they
/// finish), and no call fails.
pub async fn lifetime_rotates_pipelined_connections(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(2)
        .pipeline(4)
        .max_lifetime(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let watcher = ctx.connect().await;
    let original = backends(&watcher).await;
    assert_eq!(original.len(), 2, "{original:?}");
    let stop = AtomicBool::new(false);
    let pipelined = AtomicBool::new(false);
    let (outcome, ()) = within(ctx, BOUND, "pipelined rotation under load", async {
        future::join(load(&pool, 16, &stop), async {
            eventually_async(ctx, "every original backend is gone", || async {
                if pool.status().pipelined > 1 {
                    pipelined.store(true, Ordering::Relaxed);
                }
                backends(&watcher).await.is_disjoint(&original)
            })
            .await;
            stop.store(true, Ordering::Relaxed);
        })
        .await
    })
    .await;
    let (calls, failures, _) = outcome;
    assert_eq!(failures, 0, "no call failed ({calls} calls)");
    assert!(
        pipelined.load(Ordering::Relaxed),
        "statements were pipelined"
    );
    assert_settled(ctx, &pool).await;
    let c = pool.counters();
    assert!(c.rotated >= 2, "{c:?}");
    assert_eq!(c.discarded, 0, "{c:?}");
}

/// `drain()` replaces idle connections at once and a held one only when it comes back: the
/// work on the held connection and a statement in flight finish on their original backends,
/// and `drain()` resolves after that with every backend new.
pub async fn drain_waits_for_in_flight_work(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(3).connect().await.unwrap();
    let watcher = ctx.connect().await;
    let original = backends(&watcher).await;
    assert_eq!(original.len(), 3);
    let held = pool.getconn().await.unwrap();
    let held_pid: i32 = held
        .execute("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    held.batch_execute("BEGIN; CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let drained = AtomicBool::new(false);
    within(ctx, BOUND, "drain with in-flight work", async {
        future::join(
            async {
                pool.drain().await;
                drained.store(true, Ordering::Relaxed);
            },
            async {
                // The idle connections are replaced while the held one is still out.
                eventually(ctx, "the two idle connections are replaced", || {
                    pool.counters().replaced == 2
                })
                .await;
                assert!(
                    !drained.load(Ordering::Relaxed),
                    "drain waits for the held one"
                );
                // The held connection is the caller's until it gives it back.
                let (pid, n) = {
                    let c = held
                        .execute("SELECT pg_backend_pid(), count(*)::int4 FROM t", &[])
                        .await
                        .unwrap();
                    (
                        c.get::<i32>(0, 0usize).unwrap(),
                        c.get::<i32>(0, 1usize).unwrap(),
                    )
                };
                assert_eq!((pid, n), (held_pid, 1));
                // A statement that starts now runs on a replacement.
                let now = crate::support::pool_pid(&pool).await;
                assert!(!original.contains(&now), "new work goes to new connections");
                held.batch_execute("COMMIT").await.unwrap();
                drop(held);
            },
        )
        .await
    })
    .await;
    assert!(drained.load(Ordering::Relaxed));
    let now = backends(&watcher).await;
    assert!(now.is_disjoint(&original), "{now:?} vs {original:?}");
    assert_eq!(pool.counters().replaced, 3);
    assert_settled(ctx, &pool).await;
}

/// `resize` under load: up to 6 connections, then down to 1, while 16 callers run; no call
/// fails, the server sees the sizes, and bad sizes are refused without changing anything.
pub async fn resize_up_and_down_under_load(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(2).connect().await.unwrap();
    let watcher = ctx.connect().await;
    let stop = AtomicBool::new(false);
    let (outcome, ()) = within(ctx, BOUND, "resize under load", async {
        future::join(load(&pool, 16, &stop), async {
            pool.resize(6, 6).unwrap();
            assert_eq!((pool.status().size, pool.config().max_size), (6, 6));
            eventually_async(ctx, "six backends", || async {
                backends(&watcher).await.len() == 6
            })
            .await;
            // The server lists a backend before the pool's connect has finished: wait until the
            // pool holds all six, so that every one of the five extras leaves as trimmed (a
            // connect still under way when the sizes drop is closed as unneeded instead).
            eventually(ctx, "six connections in the pool", || {
                let s = pool.status();
                s.pending == 0 && s.free + s.busy + s.checking == 6
            })
            .await;
            pool.resize(1, 1).unwrap();
            eventually_async(ctx, "one backend", || async {
                backends(&watcher).await.len() == 1
            })
            .await;
            let s = pool.status();
            assert_eq!(s.free + s.busy + s.checking + s.pending, 1, "{s:?}");
            stop.store(true, Ordering::Relaxed);
        })
        .await
    })
    .await;
    let (calls, failures, _) = outcome;
    assert_eq!(failures, 0, "no call failed ({calls} calls)");
    let err = pool.resize(0, 1).unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let err = pool.resize(3, 2).unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert_eq!((pool.status().size, pool.status().max_size), (1, 1));
    assert_eq!(pool.counters().trimmed, 5);
    assert_settled(ctx, &pool).await;
}

/// A private cluster where `rotator` must give its password over TCP (the shared cluster may
/// trust every local connection, where a stale password would never be checked).
fn password_cluster(role: &str, password: &str) -> std::io::Result<Cluster> {
    let mut options = ClusterOptions::default();
    options.hba = Some(format!(
        "local all all                 trust\n\
         host  all {role} 127.0.0.1/32 scram-sha-256\n"
    ));
    options.conf = vec!["password_encryption = 'scram-sha-256'".to_owned()];
    let cluster = Cluster::start_new(options)?;
    cluster.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    )?;
    Ok(cluster)
}

/// A credential provider follows a password changed on the server mid-run: the cached old
/// password is refused (the server really checks it), forgotten, and the provider's new answer
/// opens the replacements; the load never fails. A failing provider is a connect error with its
/// message, and no password is ever shown.
pub async fn credential_provider_follows_a_rotated_password(ctx: &Ctx) {
    const OLD: &str = "first-Secret-7781";
    const NEW: &str = "second-Secret-9923";
    let cluster = off_thread(|| password_cluster("rotator", OLD))
        .await
        .map(Arc::new)
        .expect("start a private cluster with password authentication");
    let dsn = format!(
        "host=127.0.0.1 port={} user=rotator dbname=postgres",
        cluster.port()
    );
    let current = Arc::new(Mutex::new(OLD.to_owned()));
    let asked = Arc::new(AtomicUsize::new(0));
    let provider = {
        let current = Arc::clone(&current);
        let asked = Arc::clone(&asked);
        move || {
            let current = Arc::clone(&current);
            let asked = Arc::clone(&asked);
            async move {
                asked.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(current.lock().unwrap().clone())
            }
        }
    };
    let pool = Pool::builder(&dsn, ctx.executor.clone())
        .size(2)
        .max_size(4)
        .reconnect_interval(Duration::from_millis(50))
        .password_provider(provider)
        // Reused for an hour: only a refusal makes the pool ask again.
        .credentials_refresh(Duration::from_secs(3600))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        asked.load(Ordering::Relaxed),
        1,
        "one answer served both connects"
    );
    // A wrong password is refused: the server checks passwords.
    let refused = Connection::connect(&format!("{dsn} password=wrong"), ctx.executor.clone())
        .await
        .expect_err("a wrong password");
    assert!(refused.is_auth(), "{refused:?}");

    let stop = AtomicBool::new(false);
    let drained = AtomicBool::new(false);
    let (outcome, ()) = within(ctx, BOUND, "password rotation under load", async {
        future::join(load(&pool, 4, &stop), async {
            // The server's password changes; the provider still answers the old one.
            let sql = format!("ALTER ROLE rotator PASSWORD '{NEW}'");
            let admin = Arc::clone(&cluster);
            off_thread(move || admin.psql("postgres", &sql))
                .await
                .expect("ALTER ROLE");
            future::join(
                async {
                    pool.drain().await;
                    drained.store(true, Ordering::Relaxed);
                },
                async {
                    // The replacements are refused: the old connections keep serving.
                    eventually(ctx, "a replacement is refused", || {
                        pool.counters().connect_failures >= 1
                    })
                    .await;
                    assert!(!drained.load(Ordering::Relaxed));
                    // The provider learns the new password: the next attempt succeeds.
                    *current.lock().unwrap() = NEW.to_owned();
                },
            )
            .await;
            stop.store(true, Ordering::Relaxed);
        })
        .await
    })
    .await;
    let (calls, failures, _) = outcome;
    assert_eq!(failures, 0, "no call failed ({calls} calls)");
    let c = pool.counters();
    assert!(c.replaced >= 2, "{c:?}");
    assert!(
        asked.load(Ordering::Relaxed) >= 3,
        "asked again after the drain and the refusal"
    );
    pool.ping().await.unwrap();
    pool.close().await;

    // A provider that fails: a connect error with its message, never the password.
    let failing = Pool::builder(&format!("{dsn} password={NEW}"), ctx.executor.clone())
        .password_provider(|| async { Err::<String, _>("the vault is sealed") })
        .raise_connect_errors(true)
        .connect()
        .await
        .expect_err("the provider fails");
    let text = format!("{failing} {failing:?}");
    assert!(text.contains("the vault is sealed"), "{text}");
    assert!(!text.contains(NEW) && !text.contains(OLD), "{text}");
    let source = std::error::Error::source(&failing)
        .and_then(|s| s.downcast_ref::<Error>())
        .expect("the last connect error");
    assert!(source.is_connect(), "{source:?}");

    // A provider of whole options.
    let options: ConnectOptions = format!("{dsn} password={NEW}").parse().unwrap();
    let pool = Pool::builder("host=/nonexistent", ctx.executor.clone())
        .options_provider(move || {
            let options = options.clone();
            async move { Ok::<_, std::io::Error>(options) }
        })
        .connect()
        .await
        .unwrap();
    assert!(!format!("{pool:?}").contains(NEW));
    pool.ping().await.unwrap();
    pool.close().await;
    drop_off_thread(cluster).await;
}

/// Past `max_waiting`, a caller fails at once with a distinct error instead of queueing; the
/// callers already waiting are served as before.
pub async fn max_waiting_refuses_at_once(ctx: &Ctx) {
    let pool = ctx
        .pool_builder()
        .size(1)
        .max_waiting(2)
        .connect()
        .await
        .unwrap();
    let held = pool.getconn().await.unwrap();
    let mut first = pin!(pool.execute("SELECT 1", &[]));
    let mut second = pin!(pool.execute("SELECT 2", &[]));
    // Poll each once: both queue.
    future::poll_fn(|cx| {
        assert!(first.as_mut().poll(cx).is_pending());
        assert!(second.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    assert_eq!(pool.status().waiting, 2);
    let err = within(ctx, BOUND, "the refusal", pool.execute("SELECT 3", &[]))
        .await
        .expect_err("a third caller is refused");
    assert!(err.is_too_many_waiting(), "{err:?}");
    let err = within(ctx, BOUND, "the refusal", pool.getconn())
        .await
        .expect_err("refused");
    assert!(err.is_too_many_waiting(), "{err:?}");
    drop(held);
    let (a, b) = within(ctx, BOUND, "the waiters", future::join(first, second)).await;
    assert_eq!(a.unwrap().scalar::<i32>().unwrap(), 1);
    assert_eq!(b.unwrap().scalar::<i32>().unwrap(), 2);
    let c = pool.counters();
    assert_eq!((c.rejected, c.acquire_errors), (2, 2), "{c:?}");
    assert_eq!(pool.stats().requests_errors, 2);
    let err = ctx.pool_builder().max_waiting(0).build().unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert_settled(ctx, &pool).await;
}

/// Captured `tracing` events (message and fields), from every thread.
fn captured() -> &'static Mutex<Vec<String>> {
    static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let events = EVENTS.get_or_init(|| Mutex::new(Vec::new()));
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(Capture(events));
        // Another case or the test binary may have installed one first; then nothing is
        // captured and the case fails, saying so.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    events
}

struct Capture(&'static Mutex<Vec<String>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}

/// A `getconn` guard held past `leak_threshold` is reported once, with the line that took it
/// and how long it has been held; a guard given back in time is not reported.
pub async fn leak_warning_names_the_acquiring_line(ctx: &Ctx) {
    let events = captured();
    let pool = ctx
        .pool_builder()
        .size(3)
        .name("leak-case")
        .leak_threshold(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let quick = pool.getconn().await.unwrap();
    drop(quick);
    let first_line = line!() + 1;
    let first = pool.getconn().await.unwrap();
    let here = |line: u32| format!("{}:{line}", file!());
    let warnings_for = |line: u32| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains(&here(line)))
            .count()
    };
    within(ctx, BOUND, "the first warning", async {
        eventually(ctx, "the first leak warning", || {
            warnings_for(first_line) > 0
        })
        .await;
    })
    .await;
    // A second guard, taken later, is reported after more passes of the maintenance task; by
    // then the first would have been reported again if it were reported more than once.
    let second_line = line!() + 1;
    let second = pool.getconn_unverified().await.unwrap();
    within(ctx, BOUND, "the second warning", async {
        eventually(ctx, "the second leak warning", || {
            warnings_for(second_line) > 0
        })
        .await;
    })
    .await;
    assert_eq!(warnings_for(first_line), 1, "one warning per guard");
    let text = events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.contains(&here(first_line)))
        .cloned()
        .unwrap();
    assert!(text.contains("held_for"), "{text}");
    assert!(text.contains("leak-case"), "{text}");
    assert_eq!(pool.counters().leaks, 2);
    drop((first, second));
    assert_settled(ctx, &pool).await;
}

/// After a mixed run (statements, held connections, a transaction, an acquire timeout, a
/// refusal), the metrics a recorder received equal the pool's counters and status.
pub async fn metrics_equal_the_counters(ctx: &Ctx) {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        ctx.pool_builder()
            .size(2)
            .max_size(3)
            .name("metrics-case")
            .acquire_timeout(Duration::from_millis(200))
            .build()
            .unwrap()
    });
    pool.connect().await.unwrap();
    let pool = &pool;
    within(ctx, BOUND, "the mixed run", async {
        join_all((0..10).map(|i| async move {
            pool.execute("SELECT $1::int4", &[&i]).await.unwrap();
        }))
        .await;
        pool.transaction(["SELECT 1".into(), "SELECT 2".into()])
            .await
            .unwrap();
        let held: Vec<_> = future::try_join_all((0..3).map(|_| pool.getconn()))
            .await
            .unwrap();
        let err = pool.execute("SELECT 1", &[]).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        drop(held);
    })
    .await;
    assert_settled(ctx, pool).await;
    let c = pool.counters();
    let s = pool.status();
    let mut gauges = std::collections::HashMap::new();
    let mut counters = std::collections::HashMap::new();
    let mut histograms = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(
            labels.contains(&"db.client.connection.pool.name=metrics-case".to_owned()),
            "{key:?}"
        );
        let state = key
            .labels()
            .find(|l| l.key() == "db.client.connection.state")
            .map(|l| l.value().to_owned());
        let name = match state {
            Some(state) => format!("{}[{state}]", key.name()),
            None => key.name().to_owned(),
        };
        match value {
            DebugValue::Gauge(v) => {
                gauges.insert(name, v.into_inner());
            }
            DebugValue::Counter(v) => {
                counters.insert(name, v);
            }
            DebugValue::Histogram(v) => {
                histograms.insert(name, v.len() as u64);
            }
        }
    }
    let gauge = |n: &str| gauges.get(n).copied().unwrap_or(-1.0);
    assert_eq!(gauge("db.client.connection.count[idle]"), s.free as f64);
    assert_eq!(gauge("db.client.connection.count[used]"), 0.0);
    assert_eq!(gauge("db.client.connection.pending_requests"), 0.0);
    assert_eq!(gauge("db.client.connection.idle.min"), 2.0);
    assert_eq!(gauge("db.client.connection.idle.max"), 3.0);
    assert_eq!(gauge("db.client.connection.max"), 3.0);
    assert_eq!(
        counters.get("db.client.connection.timeouts").copied(),
        Some(c.acquire_timeouts)
    );
    assert_eq!(c.acquire_timeouts, 1);
    let histogram = |n: &str| histograms.get(n).copied().unwrap_or(0);
    assert_eq!(
        histogram("db.client.connection.create_time"),
        c.connections_opened
    );
    // Every checkout that obtained a connection is one wait sample (0 when one was free) and,
    // once given back, one use sample.
    assert_eq!(
        histogram("db.client.connection.wait_time"),
        c.acquires - c.acquire_errors,
        "{c:?}"
    );
    assert_eq!(
        histogram("db.client.connection.use_time"),
        c.acquires - c.acquire_errors,
        "{c:?}"
    );
    pool.close().await;
}

/// The settings an operator expects: keepalives on unless the DSN says otherwise, a connect
/// timeout by default, and zero or absurd durations refused at `build()` with the setting named.
pub async fn operator_defaults_and_bounds(ctx: &Ctx) {
    let options: ConnectOptions = ctx.dsn().parse().unwrap();
    assert!(options.as_tokio_postgres().get_keepalives());
    let off: ConnectOptions = format!("{} keepalives=0", ctx.dsn()).parse().unwrap();
    assert!(!off.as_tokio_postgres().get_keepalives());
    let pool = ctx.pool_builder().build().unwrap();
    assert_eq!(
        pool.config().max_lifetime,
        Some(Duration::from_secs(30 * 60))
    );
    pool.close().await;
    let zero = Duration::ZERO;
    let year_and_a_day = Duration::from_secs(366 * 24 * 3600);
    let cases: Vec<(&str, momoko_core::PoolBuilder)> = vec![
        (
            "max_lifetime",
            ctx.pool_builder().max_lifetime(Duration::from_millis(500)),
        ),
        (
            "max_lifetime",
            ctx.pool_builder().max_lifetime(Duration::MAX),
        ),
        ("acquire_timeout", ctx.pool_builder().acquire_timeout(zero)),
        (
            "statement_timeout",
            ctx.pool_builder().statement_timeout(year_and_a_day),
        ),
        ("connect_timeout", ctx.pool_builder().connect_timeout(zero)),
        (
            "reconnect_interval",
            ctx.pool_builder().reconnect_interval(zero),
        ),
        ("shrink_delay", ctx.pool_builder().shrink_delay(zero)),
        (
            "shrink_period",
            ctx.pool_builder().shrink_period(Duration::MAX),
        ),
        ("leak_threshold", ctx.pool_builder().leak_threshold(zero)),
        ("max_size", ctx.pool_builder().max_size(usize::MAX)),
    ];
    for (name, builder) in cases {
        let err = builder.build().expect_err(name);
        assert!(err.is_config(), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    let pool = ctx.pool_builder().max_lifetime(None).build().unwrap();
    assert_eq!(pool.config().max_lifetime, None);
    pool.close().await;
}
