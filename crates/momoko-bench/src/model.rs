//! What is measured: workloads, transports, cells, and the figures of one run.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error from any contender or from the set-up, with a readable message.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One kind of query the benchmark repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    /// `SELECT 1`: the pool and protocol overhead alone.
    Select1,
    /// `SELECT balance FROM bench_accounts WHERE id = $1` on a 100k-row table.
    PointRead,
    /// `INSERT INTO bench_log (id, v) VALUES ($1, $2)` into an append-only table.
    Insert,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 3] =
        [Workload::Select1, Workload::PointRead, Workload::Insert];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Select1 => "select1",
            Workload::PointRead => "point-read",
            Workload::Insert => "insert",
        }
    }

    /// The SQL every contender sends (pgbench has its own spelling, see `pgbench_script`).
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Workload::Select1 => "SELECT 1",
            Workload::PointRead => "SELECT balance FROM bench_accounts WHERE id = $1",
            Workload::Insert => "INSERT INTO bench_log (id, v) VALUES ($1, $2)",
        }
    }

    /// The same statement as a pgbench script.
    pub(crate) fn pgbench_script(self) -> String {
        match self {
            Workload::Select1 => "SELECT 1;\n".to_owned(),
            Workload::PointRead => format!(
                "\\set id random(1, {ACCOUNTS})\nSELECT balance FROM bench_accounts WHERE id = :id;\n"
            ),
            Workload::Insert => "\\set id random(1, 9223372036854775806)\n\\set v random(1, 1000000)\n\
                 INSERT INTO bench_log (id, v) VALUES (:id, :v);\n"
                .to_owned(),
        }
    }

    /// Parses a command-line name.
    pub(crate) fn parse(s: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s || (s == "select-1" && *w == Workload::Select1))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows in `bench_accounts`.
pub(crate) const ACCOUNTS: i32 = 100_000;

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transport {
    /// TCP over loopback.
    Tcp,
    /// The server's Unix-domain socket.
    Unix,
}

impl Transport {
    /// Both transports, in report order.
    pub(crate) const ALL: [Transport; 2] = [Transport::Tcp, Transport::Unix];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }

    /// Parses a command-line name.
    pub(crate) fn parse(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workload on a transport with a number of connections: pgbench runs once per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub(crate) struct Group {
    /// The query.
    pub(crate) workload: Workload,
    /// TCP or Unix socket.
    pub(crate) transport: Transport,
    /// Connections each contender may open.
    pub(crate) conns: usize,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} · {} · {} connections",
            self.workload, self.transport, self.conns
        )
    }
}

/// One point of the matrix: a group plus the number of concurrent tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub(crate) struct Cell {
    /// Workload, transport and connections.
    pub(crate) group: Group,
    /// Tasks issuing queries at once.
    pub(crate) concurrency: usize,
}

/// The random arguments of one query (each workload uses the ones it needs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args {
    /// A primary key of `bench_accounts`, 1..=100_000.
    pub(crate) key: i32,
    /// A random id for `bench_log`.
    pub(crate) id: i64,
    /// A random value for `bench_log`.
    pub(crate) v: i32,
}

/// A xorshift64* generator: cheap, deterministic per task, good enough for picking keys.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator; `seed` may be anything (zero is remapped).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Arguments for one query.
    pub(crate) fn args(&mut self) -> Args {
        let r = self.next_u64();
        let key = (r % ACCOUNTS as u64) as i32 + 1;
        let id = (self.next_u64() >> 1) as i64;
        let v = (r >> 40) as i32;
        Args { key, id, v }
    }
}

/// CPU time used, in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Cpu {
    /// User-mode seconds.
    pub(crate) user: f64,
    /// Kernel-mode seconds.
    pub(crate) sys: f64,
}

impl Cpu {
    /// User plus system.
    pub(crate) fn total(self) -> f64 {
        self.user + self.sys
    }

    /// `self - earlier`.
    pub(crate) fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
}

/// What one measured run of one contender in one cell produced, before summarising.
#[derive(Debug, Default)]
pub(crate) struct RawRun {
    /// Latency of every query completed in the measurement window, in nanoseconds (empty for
    /// pgbench, whose per-transaction log uses a lazily updated clock and is not comparable).
    pub(crate) latencies_ns: Vec<u32>,
    /// Statements completed in the window.
    pub(crate) queries: u64,
    /// Statements per call (a batch or a pgbench pipeline runs several; 0 is read as 1).
    pub(crate) per_call: u64,
    /// Length of the measurement window.
    pub(crate) seconds: f64,
    /// CPU the client used during the window.
    pub(crate) cpu: Cpu,
    /// Throughput as reported by the contender itself (pgbench), if any.
    pub(crate) reported_qps: Option<f64>,
    /// Mean latency in microseconds as reported by the contender itself (pgbench), if any.
    pub(crate) reported_mean_us: Option<f64>,
}

fn one() -> u64 {
    1
}

/// The figures of one run: one contender, one cell, one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Contender name.
    pub(crate) contender: String,
    /// The query.
    pub(crate) workload: Workload,
    /// TCP or Unix socket.
    pub(crate) transport: Transport,
    /// Connections.
    pub(crate) conns: usize,
    /// Concurrent tasks (pgbench: its client count, equal to `conns`).
    pub(crate) concurrency: usize,
    /// Repetition number, from 0.
    pub(crate) rep: usize,
    /// Statements completed in the window.
    pub(crate) queries: u64,
    /// Statements per call: 1, or the size of a batch or pipeline; latencies are per call.
    #[serde(default = "one")]
    pub(crate) per_call: u64,
    /// Window length in seconds.
    pub(crate) seconds: f64,
    /// Queries per second.
    pub(crate) qps: f64,
    /// Median latency, microseconds (`None` for pgbench).
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile latency, microseconds (`None` for pgbench).
    pub(crate) p99_us: Option<f64>,
    /// Mean latency, microseconds (pgbench: its own "latency average").
    pub(crate) mean_us: Option<f64>,
    /// Client CPU (user + sys) seconds per 10 000 queries.
    pub(crate) cpu_s_per_10k: f64,
    /// Client CPU during the window.
    pub(crate) cpu: Cpu,
    /// Why the run failed, if it did (the figures are then zero).
    pub(crate) error: Option<String>,
}

impl Sample {
    /// Summarises a run.
    pub(crate) fn from_run(contender: &str, cell: Cell, rep: usize, mut run: RawRun) -> Sample {
        let lat = &mut run.latencies_ns;
        lat.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            if lat.is_empty() {
                return None;
            }
            let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
            Some(f64::from(lat[rank - 1]) / 1000.0)
        };
        let mean = if lat.is_empty() {
            run.reported_mean_us
        } else {
            Some(lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 / 1000.0)
        };
        let qps = run
            .reported_qps
            .unwrap_or(run.queries as f64 / run.seconds.max(1e-9));
        let cpu_per_10k = if run.queries == 0 {
            0.0
        } else {
            run.cpu.total() / run.queries as f64 * 10_000.0
        };
        Sample {
            contender: contender.to_owned(),
            workload: cell.group.workload,
            transport: cell.group.transport,
            conns: cell.group.conns,
            concurrency: cell.concurrency,
            rep,
            queries: run.queries,
            per_call: run.per_call.max(1),
            seconds: run.seconds,
            qps,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            mean_us: mean,
            cpu_s_per_10k: cpu_per_10k,
            cpu: run.cpu,
            error: None,
        }
    }

    /// A failed run.
    pub(crate) fn failed(contender: &str, cell: Cell, rep: usize, error: String) -> Sample {
        let mut s = Sample::from_run(contender, cell, rep, RawRun::default());
        s.error = Some(error);
        s
    }
}
