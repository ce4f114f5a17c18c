//! Read routing over a replicated PostgreSQL: one host list, two pools — a writer on the
//! read-write server, and a reader on a standby that falls back to the primary.

use std::sync::Arc;

use crate::config::TargetSessionAttrs;
use crate::error::Result;
use crate::executor::Executor;
use crate::pool::{Pool, PoolBuilder};

/// A writer pool and a reader pool over the same servers (a primary and its streaming
/// standbys, as Patroni, RDS/Aurora or CloudNativePG run them).
///
/// * [`writer`](Cluster::writer) connects with `target_session_attrs=read-write`: only to the
///   server that accepts writes, and it follows a failover (a server that turns read-only is
///   left, and the hosts are walked again).
/// * [`reader`](Cluster::reader) connects with `target_session_attrs=prefer-standby`: to a
///   standby when one is up, else to the primary; with `load_balance_hosts=random` in the DSN
///   its connections spread over the standbys. Connections made to the primary while no standby
///   was up stay there until they are replaced (`max_lifetime`, `drain`, or a reconnect).
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn momoko_core::Executor>) -> momoko_core::Result<()> {
/// use momoko_core::Cluster;
///
/// let cluster = Cluster::builder("host=db1,db2,db3 dbname=app user=app", executor)
///     .writer(|pool| pool.size(4).max_size(16))
///     .reader(|pool| pool.size(4).max_size(32))
///     .connect()
///     .await?;
/// cluster.writer().execute("INSERT INTO visits (path) VALUES ($1)", &[&"/"]).await?;
/// let recent = cluster.reader().execute("SELECT count(*) FROM visits", &[]).await?;
/// # Ok(()) }
/// ```
///
/// # Read-your-writes
///
/// Standbys replay the primary's changes asynchronously unless the primary waits for them
/// (`synchronous_commit = remote_apply` with the standby in `synchronous_standby_names`): a read
/// on the reader right after a write on the writer may not see the write yet. Read what you
/// just wrote through the writer (or inside the same transaction); use the reader for reads that
/// tolerate a little staleness, typically milliseconds under normal load.
#[derive(Debug, Clone)]
pub struct Cluster {
    writer: Pool,
    reader: Pool,
}

impl Cluster {
    /// A builder for both pools on `dsn` (a host list: `host=a,b,c` or
    /// `postgresql://a,b,c/db`). Settings of the DSN apply to both pools; each pool's builder
    /// can be adjusted with [`ClusterBuilder::writer`] and [`ClusterBuilder::reader`].
    pub fn builder(dsn: &str, executor: Arc<dyn Executor>) -> ClusterBuilder {
        let writer = Pool::builder(dsn, Arc::clone(&executor))
            .map_options(|o| o.target_session_attrs(TargetSessionAttrs::ReadWrite));
        let reader = Pool::builder(dsn, executor)
            .map_options(|o| o.target_session_attrs(TargetSessionAttrs::PreferStandby));
        ClusterBuilder { writer, reader }
    }

    /// The pool for writes (and reads that must see them).
    pub fn writer(&self) -> &Pool {
        &self.writer
    }

    /// The pool for reads that tolerate replication lag.
    pub fn reader(&self) -> &Pool {
        &self.reader
    }

    /// Closes both pools (see [`Pool::close`]).
    pub async fn close(&self) {
        futures_util::future::join(self.writer.close(), self.reader.close()).await;
    }
}

/// Builds a [`Cluster`]: the two pools' builders, adjusted separately.
#[must_use = "a builder does nothing until `connect` or `build` is called"]
#[derive(Debug)]
pub struct ClusterBuilder {
    writer: PoolBuilder,
    reader: PoolBuilder,
}

impl ClusterBuilder {
    /// Adjusts the writer pool's builder (sizes, timeouts, …). Its `target_session_attrs` is
    /// `read-write`. Defaults to a pool's defaults.
    pub fn writer(mut self, adjust: impl FnOnce(PoolBuilder) -> PoolBuilder) -> ClusterBuilder {
        self.writer = adjust(self.writer);
        self
    }

    /// Adjusts the reader pool's builder. Its `target_session_attrs` is `prefer-standby`.
    /// Defaults to a pool's defaults.
    pub fn reader(mut self, adjust: impl FnOnce(PoolBuilder) -> PoolBuilder) -> ClusterBuilder {
        self.reader = adjust(self.reader);
        self
    }

    /// Creates both pools without waiting for their connections (see [`PoolBuilder::build`]).
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`], for either pool.
    pub fn build(self) -> Result<Cluster> {
        Ok(Cluster {
            writer: self.writer.build()?,
            reader: self.reader.build()?,
        })
    }

    /// Creates both pools and waits until their initial connections are open (see
    /// [`PoolBuilder::connect`]).
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::connect`], for either pool; the other is closed then.
    pub async fn connect(self) -> Result<Cluster> {
        let cluster = self.build()?;
        let (w, r) =
            futures_util::future::join(cluster.writer.connect(), cluster.reader.connect()).await;
        if let Err(e) = w.and(r) {
            cluster.close().await;
            return Err(e);
        }
        Ok(cluster)
    }
}
