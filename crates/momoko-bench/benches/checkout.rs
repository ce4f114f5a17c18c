//! Checkout microbenchmark, no I/O: take a connection from the pool and give it back, with 1, 8
//! and 32 tasks contending for a pool of 8, on a tokio multi-threaded runtime.
//!
//! * momoko: a real `Pool` of 8 connections to a throw-away cluster (momoko's pool holds only
//!   real connections); `pool.getconn().await` then drop. No statement runs, so the guard returns
//!   the connection synchronously and nothing touches the socket.
//! * deadpool: `deadpool::managed::Pool` (max 8) of trivial `()` objects; create and recycle
//!   return `Ok(())` at once.
//! * bb8: `bb8::Pool` (max 8, min_idle 8, defaults otherwise, so its checkout test runs) of
//!   trivial `()` connections; connect and `is_valid` return `Ok(())` at once.
//!
//! Two shapes per pool and task count:
//! * `get+drop`: back-to-back checkouts; tasks only contend when two workers hit the pool at once.
//! * `get+yield+drop`: the connection is held across `tokio::task::yield_now()`, so with more
//!   tasks than connections callers really queue and are woken by returns.
//!
//! The figure is wall time per checkout (total time / total checkouts over all tasks).
//! Results are also written as markdown to `$MOMOKO_BENCH_OUT/checkout.md` when that variable is
//! set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};

/// Pool size for every contender.
const POOL_SIZE: usize = 8;
/// Contending task counts.
const TASKS: [usize; 3] = [1, 8, 32];

/// deadpool manager of trivial objects.
struct UnitManager;

impl deadpool::managed::Manager for UnitManager {
    type Type = ();
    type Error = Infallible;

    async fn create(&self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn recycle(
        &self,
        _obj: &mut (),
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// bb8 manager of trivial connections.
struct UnitConnections;

impl bb8::ManageConnection for UnitConnections {
    type Connection = ();
    type Error = Infallible;

    async fn connect(&self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn is_valid(&self, _conn: &mut ()) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut ()) -> bool {
        false
    }
}

/// Runs `iters` checkouts spread over `tasks` tasks; returns the time for `iters` of them.
async fn contend<F, Fut>(tasks: usize, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = iters.div_ceil(tasks as u64).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("a checkout task panicked");
    }
    let elapsed = start.elapsed();
    elapsed.mul_f64(iters as f64 / (per_task * tasks as u64) as f64)
}

/// The three pools under test.
struct Pools {
    momoko: momoko_core::Pool,
    deadpool: deadpool::managed::Pool<UnitManager>,
    bb8: bb8::Pool<UnitConnections>,
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, pools: &Arc<Pools>) {
    for hold in [false, true] {
        let shape = if hold { "get+yield+drop" } else { "get+drop" };
        let mut group = c.benchmark_group(format!("checkout {shape}"));
        for tasks in TASKS {
            let p = Arc::clone(pools);
            group.bench_with_input(BenchmarkId::new("momoko", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    let p = Arc::clone(&p);
                    rt.block_on(contend(tasks, iters, move || {
                        let p = Arc::clone(&p);
                        async move {
                            let conn = p.momoko.getconn().await.expect("momoko getconn");
                            if hold {
                                tokio::task::yield_now().await;
                            }
                            drop(conn);
                        }
                    }))
                });
            });
            let p = Arc::clone(pools);
            group.bench_with_input(BenchmarkId::new("deadpool", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    let p = Arc::clone(&p);
                    rt.block_on(contend(tasks, iters, move || {
                        let p = Arc::clone(&p);
                        async move {
                            let obj = p.deadpool.get().await.expect("deadpool get");
                            if hold {
                                tokio::task::yield_now().await;
                            }
                            drop(obj);
                        }
                    }))
                });
            });
            let p = Arc::clone(pools);
            group.bench_with_input(BenchmarkId::new("bb8", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    let p = Arc::clone(&p);
                    rt.block_on(contend(tasks, iters, move || {
                        let p = Arc::clone(&p);
                        async move {
                            let conn = p.bb8.get().await.expect("bb8 get");
                            if hold {
                                tokio::task::yield_now().await;
                            }
                            drop(conn);
                        }
                    }))
                });
            });
        }
        group.finish();
    }
}

/// Reads criterion's estimates and writes a markdown summary with ratios to deadpool.
fn summary(criterion_dir: &Path) -> String {
    let mut md = String::from(
        "| shape | tasks | momoko | deadpool | bb8 | momoko / deadpool | bb8 / deadpool |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for shape in ["get+drop", "get+yield+drop"] {
        for tasks in TASKS {
            let read = |pool: &str| -> Option<f64> {
                // criterion keeps spaces and '+' in directory names.
                let group = format!("checkout {shape}");
                let path = criterion_dir
                    .join(group)
                    .join(pool)
                    .join(tasks.to_string())
                    .join("new/estimates.json");
                let text = std::fs::read_to_string(path).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v["mean"]["point_estimate"].as_f64()
            };
            let (m, d, b) = (read("momoko"), read("deadpool"), read("bb8"));
            let ns = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.0} ns"));
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {shape} | {tasks} | {} | {} | {} | {} | {} |",
                ns(m),
                ns(d),
                ns(b),
                ratio(m, d),
                ratio(b, d)
            );
        }
    }
    md
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // A throw-away cluster (or MOMOKO_TEST_DSN / DATABASE_URL) for momoko's real connections.
    let db = momoko_testkit::Cluster::shared()
        .create_database("momoko_bench_checkout")
        .expect("cannot create the checkout benchmark database");
    let pools = rt.block_on(async {
        let momoko = momoko_core::Pool::builder(&db.dsn(), momoko_tokio::TokioExecutor::shared())
            .size(POOL_SIZE)
            .max_size(POOL_SIZE)
            .connect()
            .await
            .expect("momoko pool");
        let deadpool = deadpool::managed::Pool::builder(UnitManager)
            .max_size(POOL_SIZE)
            .build()
            .expect("deadpool pool");
        let bb8 = bb8::Pool::builder()
            .max_size(POOL_SIZE as u32)
            .min_idle(Some(POOL_SIZE as u32))
            .build(UnitConnections)
            .await
            .expect("bb8 pool");
        Arc::new(Pools {
            momoko,
            deadpool,
            bb8,
        })
    });

    let criterion_dir =
        std::env::temp_dir().join(format!("momoko-criterion-{}", std::process::id()));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .output_directory(&criterion_dir)
        .configure_from_args();
    bench(&mut c, &rt, &pools);
    c.final_summary();

    let md = summary(&criterion_dir);
    println!("\n{md}");
    if let Some(out) = std::env::var_os("MOMOKO_BENCH_OUT").map(PathBuf::from) {
        let _ = std::fs::create_dir_all(&out);
        let text = format!(
            "# Checkout microbenchmark (criterion)\n\n\
             Mean wall time per checkout+return, pool of {POOL_SIZE}, tokio multi-threaded \
             runtime ({} worker threads), sample_size 10. momoko: real connections (getconn + \
             drop, no statement, so no I/O); deadpool and bb8: trivial `()` objects (bb8 with its \
             default checkout test, which is a no-op here). `get+yield+drop` holds the \
             connection across one `yield_now`, so tasks beyond 8 queue.\n\n{md}",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        std::fs::write(out.join("checkout.md"), text).expect("writing checkout.md");
    }
    rt.block_on(pools.momoko.close());
    let _ = std::fs::remove_dir_all(&criterion_dir);
}
