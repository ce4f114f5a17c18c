//! Throw-away PostgreSQL clusters for tests, and a fault-injecting TCP proxy. No mocks: real
//! servers, real sockets.
//!
//! * [`Cluster::shared`] / [`test_db`]: one cluster per test process (started with `initdb` +
//!   `pg_ctl` on first use, or an existing server given by `MOMOKO_TEST_DSN` / `DATABASE_URL`),
//!   and a fresh database per test.
//! * [`Cluster::start_new`]: a private cluster a test may stop, restart or reconfigure.
//! * [`ReplicatedCluster::start`]: a primary and a streaming hot standby (optionally
//!   synchronous), for failover and read-replica tests; with [`Cluster::kill`] (crash),
//!   [`Cluster::promote`] and [`Cluster::set_read_only`].
//! * [`PgBouncer::start`]: a real pgbouncer (transaction pooling by default) in front of a
//!   private cluster. pgbouncer must be installed (`apt-get install -y pgbouncer`).
//! * [`FaultProxy`]: a loopback proxy that severs, refuses, black-holes or delays connections.
//!
//! The kit depends on no async runtime: its async functions run their blocking work on plain
//! std threads and complete through `futures` oneshot channels, so they work on any executor and
//! tests can prove that no tokio runtime exists in the process.
//!
//! # Environment
//!
//! * `MOMOKO_TEST_DSN`, else `DATABASE_URL`: use that server for the shared cluster instead of
//!   starting one (a `key=value` DSN or a `postgres://` URL; the role must be able to create
//!   databases).
//! * `PGTEST_TMPDIR`: where cluster directories are created (default `/dev/shm` when writable
//!   with at least 512 MiB free, else the system temporary directory).
//!
//! Server binaries are looked up as `initdb` in `$PATH`, then in `/usr/lib/postgresql/*/bin`
//! (highest version). When the tests run as root, the server runs as the `postgres` user.
//!
//! # Cleanup
//!
//! Every owned cluster (each server of a [`ReplicatedCluster`] too) has a guardian child
//! process (`sh`, in its own process group) that waits for EOF on a pipe held by the test
//! process; when the test process exits — normally, by a panic, Ctrl-C or `kill -9` — the
//! guardian stops the server (immediate) and removes the cluster directory. A [`PgBouncer`] has
//! one too, which kills it and removes its directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod conninfo;
mod failover;
mod pgbouncer;
mod proxy;
mod replication;
mod sys;

pub use cluster::{test_db, Cluster, ClusterOptions, StopMode, TestDb};
pub use pgbouncer::{PgBouncer, PgBouncerOptions, PoolMode};
pub use proxy::FaultProxy;
pub use replication::{ReplicatedCluster, ReplicationOptions, SyncStandby};
