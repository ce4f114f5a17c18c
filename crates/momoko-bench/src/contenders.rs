//! The contenders: momoko on three runtimes, deadpool-postgres, bb8-postgres, sqlx, raw
//! tokio-postgres, and pgbench. Each builds its pool for one cell, runs the shared measuring loop
//! ([`drive`]) and closes the pool.

use std::sync::Arc;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use momoko_core::{Executor, Param, Pool, PoolBuilder, Query};
use sqlx::Row as _;
use tokio_postgres::{Client, NoTls, Statement};

use crate::db::{Endpoint, Server};
use crate::harness::{drive, AsyncStdSpawner, Phase, SmolSpawner, Spawner, Target, TokioSpawner};
use crate::model::{Args, BoxError, Cell, RawRun, Workload};
use crate::pgbench::{Pgbench, PIPELINE};

/// The async runtime a momoko variant runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// tokio, multi-threaded (`momoko_tokio::TokioExecutor`).
    Tokio,
    /// async-std's global executor (`momoko_async_std::AsyncStdExecutor`).
    AsyncStd,
    /// smol's global executor (`momoko_smol::SmolExecutor`).
    Smol,
}

/// How a momoko contender's task runs the workload's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// One statement per call: `pool.execute`.
    Execute,
    /// [`PIPELINE`] statements per call, each on its own: `pool.batch`.
    Batch,
    /// [`PIPELINE`] statements per call as one transaction: `pool.batch_atomic`.
    BatchAtomic,
}

/// One way of configuring momoko's pool: a name, a runtime, and builder settings on top of
/// `size(n).max_size(n)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MomokoVariant {
    /// Contender name in reports and on the command line.
    pub(crate) name: &'static str,
    /// Runtime it runs on.
    pub(crate) runtime: Runtime,
    /// Extra builder settings (e.g. `|b| b.pipeline(32)`).
    pub(crate) tune: fn(PoolBuilder) -> PoolBuilder,
    /// What one call of a task runs.
    pub(crate) call: Call,
    /// Runs without `--contenders` (the others only when named).
    pub(crate) standard: bool,
}

/// Leaves the builder as it is.
fn untuned(builder: PoolBuilder) -> PoolBuilder {
    builder
}

/// The momoko contenders; a new pool mode is one more line here. The pipelining depth study
/// (`momoko-pipelined-4`, `-8`) runs only when named with `--contenders`.
#[rustfmt::skip]
pub(crate) const MOMOKO_VARIANTS: &[MomokoVariant] = &[
    MomokoVariant { name: "momoko-tokio", runtime: Runtime::Tokio, tune: untuned, call: Call::Execute, standard: true },
    MomokoVariant { name: "momoko-async-std", runtime: Runtime::AsyncStd, tune: untuned, call: Call::Execute, standard: true },
    MomokoVariant { name: "momoko-smol", runtime: Runtime::Smol, tune: untuned, call: Call::Execute, standard: true },
    MomokoVariant { name: "momoko-pipelined", runtime: Runtime::Tokio, tune: |b| b.pipeline(32), call: Call::Execute, standard: true },
    MomokoVariant { name: "momoko-adaptive", runtime: Runtime::Tokio, tune: |b| b.adaptive_pipelining(true), call: Call::Execute, standard: true },
    MomokoVariant { name: "momoko-batch", runtime: Runtime::Tokio, tune: untuned, call: Call::Batch, standard: true },
    MomokoVariant { name: "momoko-batch-atomic", runtime: Runtime::Tokio, tune: untuned, call: Call::BatchAtomic, standard: true },
    MomokoVariant { name: "momoko-pipelined-4", runtime: Runtime::Tokio, tune: |b| b.pipeline(4), call: Call::Execute, standard: false },
    MomokoVariant { name: "momoko-pipelined-8", runtime: Runtime::Tokio, tune: |b| b.pipeline(8), call: Call::Execute, standard: false },
    MomokoVariant { name: "momoko-pipelined-2", runtime: Runtime::Tokio, tune: |b| b.pipeline(2), call: Call::Execute, standard: false },
    MomokoVariant { name: "momoko-pipelined-16", runtime: Runtime::Tokio, tune: |b| b.pipeline(16), call: Call::Execute, standard: false },
];

/// Who runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ContenderId {
    /// `MOMOKO_VARIANTS[i]`.
    Momoko(usize),
    /// deadpool-postgres with `prepare_cached`.
    Deadpool,
    /// bb8-postgres with its default checkout test; statements prepared once per connection.
    Bb8,
    /// sqlx `PgPool` with its defaults (statements prepared and cached per connection).
    Sqlx,
    /// One tokio-postgres client per connection, tasks assigned round-robin, one query in
    /// flight per client: no pool at all.
    Raw,
    /// `pgbench -M prepared`: the physical reference.
    Pgbench,
    /// `pgbench -M prepared` in pipeline mode, 32 statements per pipeline: the server's limit.
    PgbenchPipeline,
}

impl ContenderId {
    /// The contenders that run without `--contenders`, in the default order.
    pub(crate) fn standard() -> Vec<ContenderId> {
        ContenderId::all()
            .into_iter()
            .filter(|c| match c {
                ContenderId::Momoko(i) => MOMOKO_VARIANTS.get(*i).is_some_and(|v| v.standard),
                _ => true,
            })
            .collect()
    }

    /// Every contender, in the default order.
    pub(crate) fn all() -> Vec<ContenderId> {
        let mut all: Vec<ContenderId> = (0..MOMOKO_VARIANTS.len())
            .map(ContenderId::Momoko)
            .collect();
        all.extend([
            ContenderId::Deadpool,
            ContenderId::Bb8,
            ContenderId::Sqlx,
            ContenderId::Raw,
            ContenderId::Pgbench,
            ContenderId::PgbenchPipeline,
        ]);
        all
    }

    /// Whether this is pgbench (classic or pipelined): it runs once per group, its clients
    /// being the connections.
    pub(crate) fn is_pgbench(self) -> bool {
        matches!(self, ContenderId::Pgbench | ContenderId::PgbenchPipeline)
    }

    /// The name in reports and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ContenderId::Momoko(i) => MOMOKO_VARIANTS.get(i).map_or("momoko-?", |v| v.name),
            ContenderId::Deadpool => "deadpool-postgres",
            ContenderId::Bb8 => "bb8-postgres",
            ContenderId::Sqlx => "sqlx",
            ContenderId::Raw => "tokio-postgres-raw",
            ContenderId::Pgbench => "pgbench",
            ContenderId::PgbenchPipeline => "pgbench-pipeline",
        }
    }

    /// Parses a name (a few short aliases too).
    pub(crate) fn parse(s: &str) -> Option<ContenderId> {
        let alias = match s {
            "deadpool" => "deadpool-postgres",
            "bb8" => "bb8-postgres",
            "raw" | "tokio-postgres" => "tokio-postgres-raw",
            "momoko" => "momoko-tokio",
            other => other,
        };
        ContenderId::all().into_iter().find(|c| c.name() == alias)
    }

    /// Runs this contender in `cell`: builds its pool (not timed), runs warm-up and window,
    /// closes the pool.
    ///
    /// # Errors
    ///
    /// Set-up failures and query errors, with the contender's message.
    pub(crate) fn run(
        self,
        cell: Cell,
        server: &Server,
        phase: Phase,
        tokio: &tokio::runtime::Runtime,
        pgbench: &Pgbench,
    ) -> Result<RawRun, BoxError> {
        let transport = cell.group.transport;
        let ep = server.endpoint(transport).ok_or_else(|| {
            format!("no {transport} endpoint for this server (DATABASE_URL gives TCP only)")
        })?;
        let conns = cell.group.conns;
        let workload = cell.group.workload;
        match self {
            ContenderId::Momoko(i) => {
                let variant = MOMOKO_VARIANTS.get(i).ok_or("unknown momoko variant")?;
                // The calling thread only waits, on every runtime: tokio's `block_on` does no I/O
                // on it, and a plain `futures` block_on keeps it out of async-io's reactor too
                // (`smol::block_on` / `async_std::task::block_on` would make it a third thread
                // taking turns at the reactor, costing extra wake-ups: 0.59 vs 0.42 context
                // switches per query for smol at 16 tasks). The runtimes' own worker threads do
                // all the work.
                match variant.runtime {
                    Runtime::Tokio => tokio.block_on(run_momoko(
                        momoko_tokio::TokioExecutor::shared(),
                        TokioSpawner,
                        variant,
                        ep,
                        conns,
                        workload,
                        phase,
                    )),
                    Runtime::AsyncStd => futures::executor::block_on(run_momoko(
                        momoko_async_std::AsyncStdExecutor::shared(),
                        AsyncStdSpawner,
                        variant,
                        ep,
                        conns,
                        workload,
                        phase,
                    )),
                    Runtime::Smol => futures::executor::block_on(run_momoko(
                        momoko_smol::SmolExecutor::shared(),
                        SmolSpawner,
                        variant,
                        ep,
                        conns,
                        workload,
                        phase,
                    )),
                }
            }
            ContenderId::Deadpool => tokio.block_on(run_deadpool(ep, conns, workload, phase)),
            ContenderId::Bb8 => tokio.block_on(run_bb8(ep, conns, workload, phase)),
            ContenderId::Sqlx => tokio.block_on(run_sqlx(ep, conns, workload, phase)),
            ContenderId::Raw => tokio.block_on(run_raw(ep, conns, workload, phase)),
            ContenderId::Pgbench => pgbench.run(ep, cell.group, phase.measure, false),
            ContenderId::PgbenchPipeline => pgbench.run(ep, cell.group, phase.measure, true),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// momoko

/// momoko's pool; statements are prepared and cached per connection by momoko itself.
struct MomokoTarget {
    pool: Pool,
    workload: Workload,
    call: Call,
}

impl Target for MomokoTarget {
    fn statements_per_call(&self) -> u64 {
        match self.call {
            Call::Execute => 1,
            Call::Batch | Call::BatchAtomic => PIPELINE as u64,
        }
    }

    async fn query(&self, _task: usize, a: Args) -> Result<i64, BoxError> {
        if self.call != Call::Execute {
            return self.batch(a).await;
        }
        let sql = self.workload.sql();
        Ok(match self.workload {
            Workload::Select1 => {
                let cursor = self.pool.execute(sql, &[]).await?;
                i64::from(cursor.scalar::<i32>()?)
            }
            Workload::PointRead => {
                let cursor = self.pool.execute(sql, &[&a.key]).await?;
                cursor
                    .rows()
                    .first()
                    .map_or(0, |r| i64::from(r.get::<_, i32>(0)))
            }
            Workload::Insert => {
                let cursor = self.pool.execute(sql, &[&a.id, &a.v]).await?;
                cursor.rowcount().unwrap_or_default() as i64
            }
        })
    }
}

impl MomokoTarget {
    /// [`PIPELINE`] statements of the workload in one batch; every statement gets its own
    /// arguments (derived from `a`, as pgbench draws them per statement).
    async fn batch(&self, a: Args) -> Result<i64, BoxError> {
        let sql = self.workload.sql();
        let keys: [i32; PIPELINE] =
            std::array::from_fn(|i| (a.key + i as i32 * 7919) % crate::model::ACCOUNTS + 1);
        let ids: [i64; PIPELINE] = std::array::from_fn(|i| a.id ^ (i as i64) << 56);
        let key_params: [[Param<'_>; 1]; PIPELINE] =
            std::array::from_fn(|i| [&keys[i] as Param<'_>]);
        let log_params: [[Param<'_>; 2]; PIPELINE] =
            std::array::from_fn(|i| [&ids[i] as Param<'_>, &a.v as Param<'_>]);
        let queries = (0..PIPELINE).map(|i| match self.workload {
            Workload::Select1 => Query::new(sql, &[]),
            Workload::PointRead => Query::new(sql, &key_params[i]),
            Workload::Insert => Query::new(sql, &log_params[i]),
        });
        let cursors = match self.call {
            Call::BatchAtomic => self.pool.batch_atomic(queries).await?,
            _ => self
                .pool
                .batch(queries)
                .await?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(cursors.len() as i64)
    }
}

async fn run_momoko<S: Spawner>(
    executor: Arc<dyn Executor>,
    spawner: S,
    variant: &MomokoVariant,
    ep: &Endpoint,
    conns: usize,
    workload: Workload,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let builder = Pool::builder(&ep.dsn, executor).size(conns).max_size(conns);
    let pool = (variant.tune)(builder)
        .connect()
        .await
        .map_err(|e| format!("{}: cannot open the pool: {e}", variant.name))?;
    let target = Arc::new(MomokoTarget {
        pool: pool.clone(),
        workload,
        call: variant.call,
    });
    let result = drive(target, spawner, phase).await;
    pool.close().await;
    result
}

// ---------------------------------------------------------------------------------------------
// deadpool-postgres

/// deadpool-postgres with its defaults (`RecyclingMethod::Fast`) and `prepare_cached`.
struct DeadpoolTarget {
    pool: deadpool_postgres::Pool,
    workload: Workload,
}

impl Target for DeadpoolTarget {
    async fn query(&self, _task: usize, a: Args) -> Result<i64, BoxError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(self.workload.sql()).await?;
        run_statement(&client, &statement, self.workload, a).await
    }
}

/// Runs `statement` on a tokio-postgres client, collecting rows like momoko's `Cursor` does.
async fn run_statement(
    client: &Client,
    statement: &Statement,
    workload: Workload,
    a: Args,
) -> Result<i64, BoxError> {
    Ok(match workload {
        Workload::Select1 => {
            let rows = client.query(statement, &[]).await?;
            rows.first().map_or(0, |r| i64::from(r.get::<_, i32>(0)))
        }
        Workload::PointRead => {
            let rows = client.query(statement, &[&a.key]).await?;
            rows.first().map_or(0, |r| i64::from(r.get::<_, i32>(0)))
        }
        Workload::Insert => client.execute(statement, &[&a.id, &a.v]).await? as i64,
    })
}

async fn run_deadpool(
    ep: &Endpoint,
    conns: usize,
    workload: Workload,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let manager = deadpool_postgres::Manager::from_config(
        ep.pg_config()?,
        NoTls,
        deadpool_postgres::ManagerConfig::default(),
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(conns)
        .build()
        .map_err(|e| format!("deadpool-postgres: cannot build the pool: {e}"))?;
    // Open every connection before the clock starts, as the other pools do.
    {
        let mut held = Vec::with_capacity(conns);
        for _ in 0..conns {
            held.push(
                pool.get()
                    .await
                    .map_err(|e| format!("deadpool-postgres: cannot connect: {e}"))?,
            );
        }
    }
    let target = Arc::new(DeadpoolTarget {
        pool: pool.clone(),
        workload,
    });
    let result = drive(target, TokioSpawner, phase).await;
    pool.close();
    result
}

// ---------------------------------------------------------------------------------------------
// bb8-postgres

/// A tokio-postgres client with the workload's statement prepared when it connected.
pub(crate) struct PreparedClient {
    pub(crate) client: Client,
    pub(crate) statement: Statement,
}

/// bb8-postgres' manager, plus preparing the workload's statement once per connection.
/// Connect, validity test (`simple_query("")` on every checkout, bb8's default) and breakage
/// check are bb8-postgres' own.
pub(crate) struct PreparingManager {
    pub(crate) inner: PostgresConnectionManager<NoTls>,
    pub(crate) sql: &'static str,
}

impl ManageConnection for PreparingManager {
    type Connection = PreparedClient;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PreparedClient, tokio_postgres::Error> {
        let client = self.inner.connect().await?;
        let statement = client.prepare(self.sql).await?;
        Ok(PreparedClient { client, statement })
    }

    async fn is_valid(&self, conn: &mut PreparedClient) -> Result<(), tokio_postgres::Error> {
        self.inner.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut PreparedClient) -> bool {
        self.inner.has_broken(&mut conn.client)
    }
}

/// bb8 with default settings (checkout test on), sized to the cell.
struct Bb8Target {
    pool: bb8::Pool<PreparingManager>,
    workload: Workload,
}

impl Target for Bb8Target {
    async fn query(&self, _task: usize, a: Args) -> Result<i64, BoxError> {
        let conn = self.pool.get().await?;
        run_statement(&conn.client, &conn.statement, self.workload, a).await
    }
}

async fn run_bb8(
    ep: &Endpoint,
    conns: usize,
    workload: Workload,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let manager = PreparingManager {
        inner: PostgresConnectionManager::new(ep.pg_config()?, NoTls),
        sql: workload.sql(),
    };
    let size = u32::try_from(conns)?;
    let pool = bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .build(manager)
        .await
        .map_err(|e| format!("bb8-postgres: cannot build the pool: {e}"))?;
    let target = Arc::new(Bb8Target { pool, workload });
    drive(target, TokioSpawner, phase).await
}

// ---------------------------------------------------------------------------------------------
// sqlx

/// sqlx's `PgPool` with defaults; `sqlx::query` prepares and caches per connection.
struct SqlxTarget {
    pool: sqlx::PgPool,
    workload: Workload,
}

impl Target for SqlxTarget {
    async fn query(&self, _task: usize, a: Args) -> Result<i64, BoxError> {
        let sql = self.workload.sql();
        Ok(match self.workload {
            Workload::Select1 => {
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                match rows.first() {
                    Some(r) => i64::from(r.try_get::<i32, _>(0)?),
                    None => 0,
                }
            }
            Workload::PointRead => {
                let rows = sqlx::query(sql).bind(a.key).fetch_all(&self.pool).await?;
                match rows.first() {
                    Some(r) => i64::from(r.try_get::<i32, _>(0)?),
                    None => 0,
                }
            }
            Workload::Insert => sqlx::query(sql)
                .bind(a.id)
                .bind(a.v)
                .execute(&self.pool)
                .await?
                .rows_affected() as i64,
        })
    }
}

async fn run_sqlx(
    ep: &Endpoint,
    conns: usize,
    workload: Workload,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let size = u32::try_from(conns)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .connect_with(ep.sqlx_options())
        .await
        .map_err(|e| format!("sqlx: cannot open the pool: {e}"))?;
    // Open every connection before the clock starts.
    {
        let mut held = Vec::with_capacity(conns);
        for _ in 0..conns {
            held.push(
                pool.acquire()
                    .await
                    .map_err(|e| format!("sqlx: cannot connect: {e}"))?,
            );
        }
    }
    let target = Arc::new(SqlxTarget {
        pool: pool.clone(),
        workload,
    });
    let result = drive(target, TokioSpawner, phase).await;
    pool.close().await;
    result
}

// ---------------------------------------------------------------------------------------------
// raw tokio-postgres

/// One client and its prepared statement; the mutex keeps one query in flight on it.
struct RawSlot {
    turn: tokio::sync::Mutex<()>,
    client: Client,
    statement: Statement,
}

/// No pool: task `i` always uses client `i % n`.
struct RawTarget {
    slots: Vec<RawSlot>,
    workload: Workload,
}

impl Target for RawTarget {
    async fn query(&self, task: usize, a: Args) -> Result<i64, BoxError> {
        let slot = &self.slots[task % self.slots.len()];
        let _turn = slot.turn.lock().await;
        run_statement(&slot.client, &slot.statement, self.workload, a).await
    }
}

async fn run_raw(
    ep: &Endpoint,
    conns: usize,
    workload: Workload,
    phase: Phase,
) -> Result<RawRun, BoxError> {
    let config = ep.pg_config()?;
    let mut slots = Vec::with_capacity(conns);
    let mut drivers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| format!("tokio-postgres: cannot connect: {e}"))?;
        drivers.push(tokio::spawn(connection));
        let statement = client.prepare(workload.sql()).await?;
        slots.push(RawSlot {
            turn: tokio::sync::Mutex::new(()),
            client,
            statement,
        });
    }
    let target = Arc::new(RawTarget { slots, workload });
    let result = drive(Arc::clone(&target), TokioSpawner, phase).await;
    drop(target);
    for d in drivers {
        let _ = d.await;
    }
    result
}
