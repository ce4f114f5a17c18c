//! The pool's numbers through the [`metrics`](https://docs.rs/metrics) facade, under
//! OpenTelemetry's database-client semantic-convention names (with the `metrics` feature; without
//! it every method here is empty and the struct holds nothing).
//!
//! | name | kind | unit | what |
//! |---|---|---|---|
//! | `db.client.connection.count` | gauge | connections | open connections, by `db.client.connection.state` (`idle`, `used`) |
//! | `db.client.connection.idle.max` | gauge | connections | most idle connections kept (`max_size`) |
//! | `db.client.connection.idle.min` | gauge | connections | idle connections kept open (`size`) |
//! | `db.client.connection.max` | gauge | connections | most open connections (`max_size`) |
//! | `db.client.connection.pending_requests` | gauge | requests | callers waiting for a connection |
//! | `db.client.connection.timeouts` | counter | timeouts | callers that gave up after `acquire_timeout` |
//! | `db.client.connection.create_time` | histogram | seconds | time to open a connection (with `setsession`) |
//! | `db.client.connection.wait_time` | histogram | seconds | time to obtain a connection (0 when one was free) |
//! | `db.client.connection.use_time` | histogram | seconds | time a connection was held exclusively (a statement, a transaction, a `getconn` guard; pipelined statements are not sampled) |
//!
//! Every series carries `db.client.connection.pool.name` (see
//! [`PoolBuilder::name`](crate::PoolBuilder::name)). The handles are registered once, when the
//! pool is built, with the recorder installed then; updating them takes no lock of the pool's
//! beyond the one the update happens under anyway.

use std::time::Duration;

use crate::pool::PoolConfig;

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, Unit};

    use crate::pool::PoolConfig;

    /// The attribute naming the pool.
    const POOL_NAME: &str = "db.client.connection.pool.name";
    /// The attribute of `db.client.connection.count`.
    const STATE: &str = "db.client.connection.state";

    pub(crate) struct Handles {
        idle: Gauge,
        used: Gauge,
        idle_max: Gauge,
        idle_min: Gauge,
        max: Gauge,
        pending: Gauge,
        timeouts: Counter,
        create_time: Histogram,
        wait_time: Histogram,
        use_time: Histogram,
    }

    impl Handles {
        pub(crate) fn new(config: &PoolConfig) -> Handles {
            describe();
            let name = config.name.clone();
            Handles {
                idle: metrics::gauge!("db.client.connection.count", POOL_NAME => name.clone(), STATE => "idle"),
                used: metrics::gauge!("db.client.connection.count", POOL_NAME => name.clone(), STATE => "used"),
                idle_max: metrics::gauge!("db.client.connection.idle.max", POOL_NAME => name.clone()),
                idle_min: metrics::gauge!("db.client.connection.idle.min", POOL_NAME => name.clone()),
                max: metrics::gauge!("db.client.connection.max", POOL_NAME => name.clone()),
                pending: metrics::gauge!("db.client.connection.pending_requests", POOL_NAME => name.clone()),
                timeouts: metrics::counter!("db.client.connection.timeouts", POOL_NAME => name.clone()),
                create_time: metrics::histogram!("db.client.connection.create_time", POOL_NAME => name.clone()),
                wait_time: metrics::histogram!("db.client.connection.wait_time", POOL_NAME => name.clone()),
                use_time: metrics::histogram!("db.client.connection.use_time", POOL_NAME => name),
            }
        }

        pub(crate) fn connections(&self, idle: usize, used: usize, waiting: usize) {
            self.idle.set(idle as f64);
            self.used.set(used as f64);
            self.pending.set(waiting as f64);
        }

        pub(crate) fn sizes(&self, size: usize, max_size: usize) {
            self.idle_min.set(size as f64);
            self.idle_max.set(max_size as f64);
            self.max.set(max_size as f64);
        }

        pub(crate) fn timeout(&self) {
            self.timeouts.increment(1);
        }

        pub(crate) fn create_time(&self, d: Duration) {
            self.create_time.record(d.as_secs_f64());
        }

        pub(crate) fn waited(&self, d: Duration) {
            self.wait_time.record(d.as_secs_f64());
        }

        pub(crate) fn used_for(&self, d: Duration) {
            self.use_time.record(d.as_secs_f64());
        }
    }

    /// Units and descriptions, for exporters that show them (Prometheus' `# HELP`).
    fn describe() {
        let conns = Unit::Count;
        metrics::describe_gauge!(
            "db.client.connection.count",
            conns,
            "Open connections, by state (idle, used)"
        );
        metrics::describe_gauge!(
            "db.client.connection.idle.max",
            conns,
            "Most idle open connections allowed"
        );
        metrics::describe_gauge!(
            "db.client.connection.idle.min",
            conns,
            "Idle open connections kept"
        );
        metrics::describe_gauge!(
            "db.client.connection.max",
            conns,
            "Most open connections allowed"
        );
        metrics::describe_gauge!(
            "db.client.connection.pending_requests",
            Unit::Count,
            "Callers waiting for an open connection"
        );
        metrics::describe_counter!(
            "db.client.connection.timeouts",
            Unit::Count,
            "Callers that gave up waiting for a connection (acquire_timeout)"
        );
        metrics::describe_histogram!(
            "db.client.connection.create_time",
            Unit::Seconds,
            "Time it took to open a connection"
        );
        metrics::describe_histogram!(
            "db.client.connection.wait_time",
            Unit::Seconds,
            "Time it took to obtain an open connection from the pool"
        );
        metrics::describe_histogram!(
            "db.client.connection.use_time",
            Unit::Seconds,
            "Time between taking a connection and giving it back"
        );
    }
}

/// The pool's metric handles (empty without the `metrics` feature).
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    handles: enabled::Handles,
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl Metrics {
    pub(crate) fn new(config: &PoolConfig) -> Metrics {
        Metrics {
            #[cfg(feature = "metrics")]
            handles: enabled::Handles::new(config),
        }
    }

    /// Whether metrics are recorded: durations are measured (clock reads) only then.
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        cfg!(feature = "metrics")
    }

    /// Idle and used connections, and waiting callers, now.
    #[inline(always)]
    pub(crate) fn connections(&self, idle: usize, used: usize, waiting: usize) {
        #[cfg(feature = "metrics")]
        self.handles.connections(idle, used, waiting);
    }

    /// The sizes in force.
    #[inline(always)]
    pub(crate) fn sizes(&self, size: usize, max_size: usize) {
        #[cfg(feature = "metrics")]
        self.handles.sizes(size, max_size);
    }

    /// A caller gave up after `acquire_timeout`.
    #[inline(always)]
    pub(crate) fn timeout(&self) {
        #[cfg(feature = "metrics")]
        self.handles.timeout();
    }

    /// A connection opened in `d`.
    #[inline(always)]
    pub(crate) fn create_time(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.create_time(d);
    }

    /// A caller obtained a connection (or stopped waiting) after `d`.
    #[inline(always)]
    pub(crate) fn waited(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.waited(d);
    }

    /// A connection came back after being used for `d` (only measured with the feature).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn used_for(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.used_for(d);
    }
}
