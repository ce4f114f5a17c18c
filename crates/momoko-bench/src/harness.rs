//! The measuring loop, written once for every runtime: N tasks issue queries back to back through
//! a [`Target`]; a plain thread samples the process's CPU time at the window's edges.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::model::{Args, BoxError, Cpu, RawRun, Rng};

/// Something that runs one query of the current workload (a pool, a set of clients, …).
pub(crate) trait Target: Send + Sync + 'static {
    /// Runs one query for task `task` with `args`; returns a value read from the result (kept
    /// alive with `black_box` so nothing is optimised away).
    fn query(&self, task: usize, args: Args) -> impl Future<Output = Result<i64, BoxError>> + Send;

    /// Statements one call of [`query`](Target::query) runs (a batch runs several); throughput
    /// counts statements, latencies are per call.
    fn statements_per_call(&self) -> u64 {
        1
    }
}

/// Spawns measuring tasks on one async runtime.
pub(crate) trait Spawner: Copy + Send + Sync + 'static {
    /// Spawns `f` and returns a future of its output.
    fn spawn<F>(self, f: F) -> BoxFuture<'static, F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;
}

/// tokio's `spawn` (inside the benchmark's multi-threaded runtime).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn<F>(self, f: F) -> BoxFuture<'static, F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(f)
            .map(|r| match r {
                Ok(v) => v,
                Err(e) => panic!("a measuring task failed: {e}"),
            })
            .boxed()
    }
}

/// async-std's global executor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsyncStdSpawner;

impl Spawner for AsyncStdSpawner {
    fn spawn<F>(self, f: F) -> BoxFuture<'static, F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        async_std::task::spawn(f).boxed()
    }
}

/// smol's global executor (`SMOL_THREADS` threads; the benchmark sets it to the CPU count).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmolSpawner;

impl Spawner for SmolSpawner {
    fn spawn<F>(self, f: F) -> BoxFuture<'static, F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        smol::spawn(f).boxed()
    }
}

/// Timing of one measured run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// Queries run but not counted before the window opens.
    pub(crate) warmup: Duration,
    /// The measurement window.
    pub(crate) measure: Duration,
    /// Concurrent tasks.
    pub(crate) concurrency: usize,
    /// Seed of the tasks' random keys.
    pub(crate) seed: u64,
}

/// This process's CPU time so far (all threads).
pub(crate) fn cpu_self() -> Cpu {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of the waited-for children of this process so far.
pub(crate) fn cpu_children() -> Cpu {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> Cpu {
    // SAFETY: `getrusage` writes a `rusage` into the zeroed struct we pass; both arguments valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut ru) != 0 {
            return Cpu::default();
        }
        ru
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Cpu {
        user: secs(ru.ru_utime),
        sys: secs(ru.ru_stime),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Runs `phase.concurrency` tasks against `target` for the warm-up and the window; every query
/// that completes inside the window is counted and its latency recorded in the task's own
/// preallocated vector.
///
/// # Errors
///
/// The first query error of any task (the other tasks run on to the end of the window).
pub(crate) async fn drive<T: Target, S: Spawner>(
    target: Arc<T>,
    spawner: S,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let start = Instant::now();
    let warm_end = start + phase.warmup;
    let end = warm_end + phase.measure;

    // CPU is sampled off the runtime, exactly at the window's edges.
    let sampler = std::thread::Builder::new()
        .name("cpu-sampler".into())
        .spawn(move || {
            sleep_until(warm_end);
            let a = cpu_self();
            sleep_until(end);
            let b = cpu_self();
            b.since(a)
        })?;

    // Room for up to ~150k calls/s without reallocating during the window.
    let per_call = target.statements_per_call().max(1);
    let expected = (phase.measure.as_secs_f64() * 150_000.0) as usize / phase.concurrency.max(1);
    let capacity = expected.max(256);
    let mut handles = Vec::with_capacity(phase.concurrency);
    for task in 0..phase.concurrency {
        let target = Arc::clone(&target);
        let seed = phase.seed ^ ((task as u64 + 1) << 20);
        handles.push(spawner.spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(capacity);
            let mut rng = Rng::new(seed);
            let mut sink = 0i64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let args = rng.args();
                sink = sink.wrapping_add(target.query(task, args).await?);
                let t1 = Instant::now();
                if t1 >= warm_end && t1 <= end {
                    let ns = (t1 - t0).as_nanos();
                    latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
                }
            }
            black_box(sink);
            Ok::<Vec<u32>, BoxError>(latencies)
        }));
    }

    let mut latencies = Vec::new();
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok(l) => latencies.extend_from_slice(&l),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let cpu = match sampler.join() {
        Ok(cpu) => cpu,
        Err(_) => return Err("the CPU sampler thread panicked".into()),
    };
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(RawRun {
        queries: latencies.len() as u64 * per_call,
        per_call,
        latencies_ns: latencies,
        seconds: phase.measure.as_secs_f64(),
        cpu,
        reported_qps: None,
        reported_mean_us: None,
    })
}
