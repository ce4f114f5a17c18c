//! A primary and a streaming standby, for failover and read-replica tests.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use crate::cluster::{
    command_failed, conf_quote, off_thread, with_context, Cluster, ClusterOptions, Owned, TestDb,
};
use crate::conninfo::Conninfo;

/// The standby's `application_name` towards the primary, which is also its replication slot's
/// name and the name `synchronous_standby_names` lists.
const STANDBY_NAME: &str = "momoko_standby";
/// How long start-up waits for the standby to stream (and, if synchronous, to be the
/// synchronous standby).
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// How long [`ReplicatedCluster::catch_up`] waits for replay.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// Whether the primary waits for the standby before it acknowledges a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncStandby {
    /// Asynchronous streaming: a commit is acknowledged without waiting for the standby, so
    /// the standby may lag (see [`ReplicatedCluster::catch_up`]). `synchronous_commit` keeps
    /// the kit's default (off); add `synchronous_commit=on` to
    /// [`ReplicationOptions::cluster`]'s `conf` for durability on the primary alone.
    #[default]
    Off,
    /// `synchronous_standby_names` names the standby and `synchronous_commit = on`: COMMIT
    /// returns once the standby has flushed the commit's WAL. An acknowledged commit survives
    /// the loss of the primary (crash, kill, promotion of the standby), though a query on the
    /// standby may not see it for a moment.
    ///
    /// While the standby is stopped, or after it was promoted, a COMMIT on the primary waits
    /// for it indefinitely (statement_timeout does not apply to that wait; cancelling the
    /// query ends it with a warning, the transaction committed locally). A session can opt out
    /// with `SET synchronous_commit = local`; the kit's own database management does.
    Flush,
    /// As [`Flush`](SyncStandby::Flush) with `synchronous_commit = remote_apply`: COMMIT
    /// returns once the standby has replayed the commit, so queries on the standby see it at
    /// once.
    Apply,
}

/// Options for [`ReplicatedCluster::start`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReplicationOptions {
    /// The primary's options. `pg_basebackup` copies the data directory, so its `conf` lines
    /// and `hba` apply to the standby as well. A custom `hba` must keep a `local replication`
    /// trust line for `postgres`: the standby streams over the primary's Unix socket.
    pub cluster: ClusterOptions,
    /// Extra `postgresql.conf` lines for the standby only, appended last (so they win).
    pub standby_conf: Vec<String>,
    /// Whether commits wait for the standby; [`SyncStandby::Off`] by default.
    pub sync: SyncStandby,
}

/// A primary server and a hot standby streaming from it (`pg_basebackup -R`), each a
/// private [`Cluster`] with its own directory, port and Unix socket, torn down like one
/// (including by the guardian processes if the test process dies).
///
/// The standby streams over the primary's Unix socket, through a physical replication slot,
/// so it never misses WAL while it is stopped. Both servers run with the kit's usual settings
/// (see [`Cluster::start_new`]); the primary also flushes WAL every 10 ms
/// (`wal_writer_delay`) so asynchronous commits reach the standby quickly, and the standby
/// retries a lost primary every 500 ms (`wal_retrieve_retry_interval`).
///
/// [`primary`](ReplicatedCluster::primary) and [`standby`](ReplicatedCluster::standby) keep
/// naming the servers they were started as: after
/// [`promote_standby`](ReplicatedCluster::promote_standby), `standby()` is a primary of its own
/// (its timeline has forked off; the old primary does not follow it).
#[derive(Debug)]
pub struct ReplicatedCluster {
    // Declared first so it is dropped first: the primary then never sees its standby vanish.
    standby: Cluster,
    primary: Cluster,
    sync: SyncStandby,
}

impl ReplicatedCluster {
    /// Starts a primary (initdb) and a standby (`pg_basebackup -R` from it), and waits until
    /// the standby streams (and, with [`SyncStandby::Flush`] or [`SyncStandby::Apply`], until
    /// the primary counts it as its synchronous standby). Blocking; typically under a second
    /// more than [`Cluster::start_new`].
    pub fn start(options: ReplicationOptions) -> io::Result<ReplicatedCluster> {
        let mut primary_options = options.cluster.clone();
        // Before the caller's lines, so theirs win. wal_level and max_wal_senders already
        // allow streaming by default since PostgreSQL 10; they are stated so that a caller's
        // `initdb_args` or conf cannot silently rely on that.
        let mut conf = vec![
            String::from("wal_level=replica"),
            String::from("max_wal_senders=10"),
            String::from("max_replication_slots=10"),
            String::from("hot_standby=on"),
            String::from("wal_writer_delay='10ms'"),
            String::from("wal_retrieve_retry_interval='500ms'"),
        ];
        conf.append(&mut primary_options.conf);
        primary_options.conf = conf;
        let primary = Cluster::start_new(primary_options)?;
        let standby = {
            let p = primary.owned().ok_or_else(|| {
                io::Error::other("Cluster::start_new returned an external cluster")
            })?;
            let owned = Owned::prepare(p.bins.clone(), p.run_as)?;
            Cluster::from_owned(owned.boot_standby(p, &options.standby_conf)?)
        };
        let cluster = ReplicatedCluster {
            standby,
            primary,
            sync: options.sync,
        };
        let name = quote_literal(STANDBY_NAME);
        cluster
            .primary
            .wait_for(
                &format!(
                    "EXISTS (SELECT FROM pg_stat_replication \
                     WHERE application_name = {name} AND state = 'streaming')"
                ),
                CONNECT_WAIT,
            )
            .map_err(|e| with_context(e, "waiting for the standby to stream"))?;
        let level = match options.sync {
            SyncStandby::Off => return Ok(cluster),
            SyncStandby::Flush => "on",
            SyncStandby::Apply => "remote_apply",
        };
        // Only now: a primary waiting for a standby that is not there yet would block the
        // kit's own commits during start-up. The lines go into postgresql.conf, so they hold
        // across restarts.
        cluster.primary.reload_with(
            &[
                &format!(
                    "synchronous_standby_names={}",
                    conf_quote(&format!("\"{STANDBY_NAME}\""))
                ),
                &format!("synchronous_commit={level}"),
            ],
            None,
        )?;
        cluster
            .primary
            .wait_for(
                &format!(
                    "EXISTS (SELECT FROM pg_stat_replication \
                     WHERE application_name = {name} AND sync_state = 'sync')"
                ),
                CONNECT_WAIT,
            )
            .map_err(|e| with_context(e, "waiting for the standby to become synchronous"))?;
        Ok(cluster)
    }

    /// The primary (the server the standby was cloned from).
    pub fn primary(&self) -> &Cluster {
        &self.primary
    }

    /// The standby (still this server after it was promoted).
    pub fn standby(&self) -> &Cluster {
        &self.standby
    }

    /// The standby's `application_name` as the primary sees it (`pg_stat_replication`), also
    /// the name of its replication slot on the primary.
    pub fn standby_name(&self) -> &str {
        STANDBY_NAME
    }

    /// How commits wait for the standby.
    pub fn sync(&self) -> SyncStandby {
        self.sync
    }

    /// A multi-host DSN listing the primary then the standby, both over TCP:
    /// `"host=127.0.0.1,127.0.0.1 port=<primary>,<standby> user=postgres dbname=<dbname>"`, for
    /// clients that pick a server by `target_session_attrs`.
    pub fn multi_host_dsn(&self, dbname: &str) -> String {
        Conninfo::from_pairs([
            (
                "host",
                format!("{},{}", self.primary.host(), self.standby.host()),
            ),
            (
                "port",
                format!("{},{}", self.primary.port(), self.standby.port()),
            ),
            ("user", String::from("postgres")),
            ("dbname", dbname.to_owned()),
        ])
        .to_string()
    }

    /// Creates a fresh database on the primary (see [`Cluster::create_database`]) and waits
    /// until the standby has it too. Blocking.
    pub fn create_database(&self, hint: &str) -> io::Result<TestDb> {
        let db = self.primary.create_database(hint)?;
        self.catch_up_blocking()?;
        Ok(db)
    }

    /// Crashes the primary ([`Cluster::kill`]): every server process gets `SIGKILL`. The
    /// standby keeps retrying it every 500 ms until it is started again or the standby is
    /// promoted.
    pub fn kill_primary(&self) -> io::Result<()> {
        self.primary.kill()
    }

    /// Promotes the standby ([`Cluster::promote`]) and returns once it accepts writes.
    pub async fn promote_standby(&self) -> io::Result<()> {
        self.standby.promote().await
    }

    /// Blocking variant of [`promote_standby`](ReplicatedCluster::promote_standby).
    pub fn promote_standby_blocking(&self) -> io::Result<()> {
        self.standby.promote_blocking()
    }

    /// Waits until the standby has replayed everything the primary had written when the call
    /// began (`pg_last_wal_replay_lsn()` on the standby reaches `pg_current_wal_insert_lsn()`
    /// of the primary), so queries on the standby see every transaction committed before.
    /// Runs on a fresh std thread like [`Cluster::stop`].
    ///
    /// Errors: either server is down, the standby was promoted, or replay did not get there
    /// within 30 s ([`io::ErrorKind::TimedOut`]).
    pub async fn catch_up(&self) -> io::Result<()> {
        let primary = self.primary.handle();
        let standby = self.standby.handle();
        off_thread(move || catch_up(&primary, &standby)).await
    }

    /// Blocking variant of [`catch_up`](ReplicatedCluster::catch_up).
    pub fn catch_up_blocking(&self) -> io::Result<()> {
        catch_up(&self.primary, &self.standby)
    }
}

fn catch_up(primary: &Cluster, standby: &Cluster) -> io::Result<()> {
    let target = primary.psql("postgres", "SELECT pg_current_wal_insert_lsn()")?;
    let target = target.trim();
    if !standby.is_in_recovery()? {
        return Err(io::Error::other(
            "the standby is no longer in recovery (promoted): there is nothing to catch up",
        ));
    }
    let start = Instant::now();
    standby
        .wait_for(
            &format!(
                "pg_last_wal_replay_lsn() >= {}::pg_lsn",
                quote_literal(target)
            ),
            CATCH_UP_WAIT,
        )
        .map_err(|e| {
            let replayed = standby
                .psql("postgres", "SELECT pg_last_wal_replay_lsn()")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|e| format!("unknown ({e})"));
            with_context(
                e,
                format!(
                    "standby replay stuck at {replayed} after {:?}, primary at {target}",
                    start.elapsed()
                ),
            )
        })
}

/// A single-quoted SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Owned {
    /// Fills this prepared directory with a base backup of `primary` (`pg_basebackup -R`,
    /// creating a replication slot) and starts it as a hot standby of it.
    fn boot_standby(self, primary: &Owned, conf: &[String]) -> io::Result<Owned> {
        let basebackup = self.bins.tool("pg_basebackup")?;
        let source = Conninfo::from_pairs([
            ("host", primary.sock_dir.to_string_lossy().as_ref()),
            ("port", &primary.port.to_string()),
            ("user", "postgres"),
            ("application_name", STANDBY_NAME),
        ])
        .to_string();
        let mut cmd = self.server_command(&basebackup);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                // -R: standby.signal plus primary_conninfo (with our application_name) and
                // primary_slot_name in postgresql.auto.conf.
                OsStr::new("-R"),
                OsStr::new("-X"),
                OsStr::new("stream"),
                OsStr::new("-c"),
                OsStr::new("fast"),
                OsStr::new("--no-sync"),
                OsStr::new("-C"),
                OsStr::new("-S"),
                OsStr::new(STANDBY_NAME),
                OsStr::new("-d"),
            ])
            .arg(&source);
        let out = cmd
            .output()
            .map_err(|e| with_context(e, format!("running {}", basebackup.display())))?;
        if !out.status.success() {
            return Err(command_failed(
                &format!("pg_basebackup -D {}", self.data_dir.display()),
                &out,
            ));
        }

        // The copied postgresql.conf carries the primary's socket directory and port; these
        // lines come later, so they win (`first_start` appends the port).
        let sock = self
            .sock_dir
            .to_str()
            .ok_or_else(|| io::Error::other("socket directory path is not UTF-8"))?;
        let mut text = String::from("\n# added by momoko-testkit for the standby\n");
        let _ = writeln!(text, "unix_socket_directories={}", conf_quote(sock));
        // Once promoted, the standby must not wait for a synchronous standby of its own.
        text.push_str("synchronous_standby_names=''\n");
        for line in conf {
            text.push_str(line);
            text.push('\n');
        }
        self.append_conf(&text)?;
        self.first_start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("0/3000060"), "'0/3000060'");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn replicated_cluster_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<ReplicatedCluster>();
    }
}
