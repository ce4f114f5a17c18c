//! The behaviour suite every momoko [`Executor`] must pass, against a real PostgreSQL.
//!
//! Each case is an `async fn` over a [`Ctx`] (an executor plus a fresh database on a throw-away
//! cluster from `momoko-testkit`). [`conformance_suite!`] stamps out one `#[test]` per case, so a
//! backend runs the whole suite with a single macro call:
//!
//! ```ignore
//! momoko_conformance::conformance_suite!(
//!     executor: momoko_tokio::TokioExecutor::shared(),
//!     block_on: my_block_on,
//! );
//! ```
//!
//! `block_on` is any `fn(F) -> F::Output` that runs a future to completion on the runtime under
//! test. Cases never skip: without `DATABASE_URL`/`MOMOKO_TEST_DSN` a cluster is started.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

pub use momoko_core::Executor;
#[doc(hidden)]
pub use momoko_testkit::test_db;
use momoko_testkit::TestDb;

pub mod cases;
mod pooled;
mod support;

pub use pooled::NOT_APPLICABLE_THROUGH_A_POOLER;

/// What a case gets: the executor under test and its own database.
#[derive(Debug)]
pub struct Ctx {
    /// The executor under test.
    pub executor: Arc<dyn Executor>,
    /// A database created for this case on the shared cluster.
    pub db: TestDb,
    /// The pgbouncer (transaction mode) the case's own connections go through, when the suite
    /// runs through one ([`conformance_suite!`]'s `through_pgbouncer` form).
    pub pooler: Option<&'static momoko_testkit::PgBouncer>,
}

impl Ctx {
    /// A context for case `name` on `executor`.
    pub fn new(name: &str, executor: Arc<dyn Executor>) -> Ctx {
        Ctx {
            executor,
            db: momoko_testkit::test_db(name),
            pooler: None,
        }
    }

    /// DSN of the case's database over TCP (through the pooler when the suite runs through
    /// one).
    pub fn dsn(&self) -> String {
        match self.pooler {
            Some(bouncer) => bouncer.dsn(self.db.name()),
            None => self.db.dsn(),
        }
    }

    /// DSN of the case's database over the Unix socket.
    pub fn unix_dsn(&self) -> String {
        self.db
            .unix_dsn()
            .expect("the test cluster has a Unix socket (unset DATABASE_URL to use one)")
    }

    /// A pool builder for the case's database over TCP, on the executor under test.
    pub fn pool_builder(&self) -> momoko_core::PoolBuilder {
        momoko_core::Pool::builder(&self.dsn(), self.executor.clone())
            .transaction_pooler(self.pooler.is_some())
    }

    /// The connection options of the case's database over TCP (with `transaction_pooler` on
    /// when the suite runs through a pooler).
    pub fn options(&self) -> momoko_core::ConnectOptions {
        momoko_core::ConnectOptions::parse(&self.dsn())
            .expect("the test DSN parses")
            .transaction_pooler(self.pooler.is_some())
    }

    /// A standalone connection to the case's database over TCP.
    pub async fn connect(&self) -> momoko_core::Connection {
        momoko_core::Connection::connect_with(&self.options(), self.executor.clone())
            .await
            .expect("connect to the test database")
    }

    /// Sleeps on the executor under test.
    pub async fn sleep(&self, d: Duration) {
        self.executor.sleep(d).await
    }
}

/// Runs the whole suite: one `#[test]` per case.
///
/// `executor` is an expression giving an `Arc<dyn Executor>`; it is evaluated inside `block_on`.
/// `block_on` is the path of a function that runs a future to completion on the runtime under
/// test.
#[macro_export]
macro_rules! conformance_suite {
    (executor: $executor:expr, block_on: $block_on:path $(,)?) => {
        $crate::__for_each_case!($executor; $block_on; direct);
    };
    // The same cases, the case's own connections going through a pgbouncer in transaction mode
    // with `transaction_pooler` on; the cases in `NOT_APPLICABLE_THROUGH_A_POOLER` say why they
    // do not apply and pass.
    (executor: $executor:expr, block_on: $block_on:path, through_pgbouncer $(,)?) => {
        $crate::__for_each_case!($executor; $block_on; pgbouncer);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($executor:expr; $block_on:path; $route:ident; $module:ident :: $case:ident) => {
        #[test]
        fn $case() {
            let name = concat!(stringify!($module), "_", stringify!($case));
            let path = concat!(stringify!($module), "::", stringify!($case));
            let Some(pooler) = $crate::__route(stringify!($route), path) else {
                return;
            };
            // The database is created (a blocking psql call) before the runtime runs anything.
            let db = $crate::test_db(name);
            $block_on(async {
                let executor: ::std::sync::Arc<dyn $crate::Executor> = $executor;
                let ctx = $crate::Ctx {
                    executor,
                    db,
                    pooler,
                };
                $crate::cases::$module::$case(&ctx).await;
            })
        }
    };
}

/// Where a case's connections go: `Some(None)` directly, `Some(Some(pgbouncer))` through the
/// shared pgbouncer, `None` when the case does not apply through a pooler (the reason is
/// printed).
#[doc(hidden)]
pub fn __route(route: &str, case: &str) -> Option<Option<&'static momoko_testkit::PgBouncer>> {
    if route != "pgbouncer" {
        return Some(None);
    }
    if let Some((_, why)) = NOT_APPLICABLE_THROUGH_A_POOLER
        .iter()
        .find(|(name, _)| *name == case || (name.ends_with("::") && case.starts_with(name)))
    {
        eprintln!("{case}: not applicable through a transaction pooler: {why}");
        return None;
    }
    Some(Some(pooled::shared_pgbouncer()))
}

/// The list of cases: one place, so every backend runs the same number.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($executor:expr; $block_on:path; $route:ident) => {
        $crate::__cases_list!($executor; $block_on; $route;
            runtime: [
                spawn_detaches,
                sleep_orders_wakeups,
                now_is_monotonic,
            ],
            connection: [
                connect_tcp,
                connect_unix,
                unreachable_host_fails_fast,
                blackholed_connect_times_out,
                wrong_password_is_auth_error,
                invalid_dsn_is_config_error,
                cursor_methods,
                param_types_round_trip,
                callproc_functions,
                mogrify_round_trips,
                mogrify_resists_injection,
                mogrify_nul_and_count_errors,
                mogrify_equals_execute,
                transaction_commits,
                transaction_rolls_back,
                transaction_with_closure,
                server_side_cursor,
                sql_error_leaves_connection_usable,
                wrong_parameters_are_clear_errors,
                statement_cache_reuses_statements,
                cancel_running_query,
                ping_version_and_close,
            ],
            pool: [
                parallel_queries_use_distinct_connections,
                queue_serialises_with_size_one,
                sequential_queries_never_stretch,
                concurrent_long_queries_stretch,
                concurrent_getconn_stretch,
                shrinks_idle_extras_to_size,
                setsession_applies_to_every_connection,
                failing_setsession_fails_the_connection,
                getconn_guard_returns_connection,
                putconn_from_another_pool_is_an_error,
                close_with_queued_and_in_flight_work,
                use_before_connect_waits,
                unreachable_server_partially_connected,
                acquire_timeout_fires_when_exhausted,
                query_methods_on_the_pool,
                server_side_cursor_on_held_connection,
                statement_timeout_cancels_on_server,
                dropped_query_future_is_safe,
                heals_after_backends_are_terminated,
                mixed_run_balances,
                mixed_run_balances_pipelined,
                pipelined_statements_share_connections,
                pipelining_never_joins_a_transaction,
                exclusive_caller_waits_for_pipelined_statements,
                pipelined_waiters_keep_their_turn,
                pipelining_avoids_a_stalled_connection,
                sequential_statements_rotate_over_connections,
                sequential_pipelined_statements_rotate,
            ],
            faults: [
                restart_fast_while_idle_heals,
                restart_immediate_while_idle_heals,
                restart_under_load,
                terminate_every_backend_under_load,
                proxy_sever_recovers,
                proxy_refuse_then_allow_fills_pool,
                blackhole_timeouts_hold,
                nothing_lost_across_restarts,
                queued_callers_fail_when_db_dies,
                close_with_in_flight_and_queued_during_fault,
                drop_stress_seeded,
            ],
            state: [
                transaction_opened_by_any_text_is_never_handed_on,
                pipelined_opener_never_captures_other_statements,
                cached_statement_on_a_silently_dead_connection,
                getconn_after_a_silent_disconnect,
                lost_reply_of_the_return_check_costs_no_wait,
                concurrent_prepare_is_single_flight,
                growth_is_paced_pool_wide,
                multi_statement_execute,
                transaction_status_follows_the_server,
            ],
            fleet: [
                target_session_attrs_choose_the_server,
                load_balance_hosts_spreads_connections,
                read_write_pool_leaves_a_read_only_server,
                cluster_routes_reads_to_the_standby,
                failover_keeps_every_acknowledged_write,
            ],
            pooler: [
                pgbouncer_transaction_mode_serves_mixed_load,
            ],
            lifecycle: [
                lifetime_rotates_connections_under_load,
                lifetime_rotates_pipelined_connections,
                drain_waits_for_in_flight_work,
                resize_up_and_down_under_load,
                credential_provider_follows_a_rotated_password,
                max_waiting_refuses_at_once,
                leak_warning_names_the_acquiring_line,
                metrics_equal_the_counters,
                operator_defaults_and_bounds,
            ],
            hostile: [
                malformed_dsns_and_unknown_hosts,
                wrong_parameters_everywhere,
                sql_errors_in_every_method,
                swallowed_error_is_not_a_commit,
                nul_bytes_rejected,
                ten_megabyte_query,
                mogrify_property_round_trip,
            ],
            transaction: [
                queryable_is_generic_over_every_target,
                guard_commits_and_rolls_back,
                dropped_guard_rolls_back,
                savepoints_nest,
                guard_options_and_aborted_commit,
            ],
            adaptive: [
                adaptive_pipelining_fills_few_connections,
                adaptive_pipelining_keeps_long_statements_apart,
                adaptive_pipelining_routes_around_a_stalled_connection,
                mixed_run_balances_adaptive,
            ],
            batch: [
                batch_isolates_errors,
                batch_atomic_is_all_or_nothing,
            ],
            copy: [
                copy_in_and_out,
                failed_and_dropped_copy_leave_the_pool_clean,
            ],
            deadpool: [
                deadpool_manager_recycles_by_exact_state,
            ],
            listen: [
                listener_receives_its_channels,
                listener_reconnects_and_reports_the_gap,
            ],
            stream: [
                million_row_stream_stays_flat,
                stream_dropped_halfway,
            ],
            typed: [
                rows_into_structs,
            ],
            tls: [
                tls_require_succeeds,
                tls_verify_full_succeeds,
                tls_wrong_ca_fails,
                tls_wrong_host_fails,
                tls_disable_against_hostssl_only_fails_clearly,
                tls_allow_and_prefer_fall_back,
                scram_and_md5_passwords,
                password_never_printed,
            ],
        );
    };
}

/// One test module per group (`runtime`, `connection`, `pool`, …), so `cargo test pool::`
/// selects a group.
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_list {
    ($executor:expr; $block_on:path; $route:ident; $($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $( $crate::__conformance_test!($executor; $block_on; $route; $module :: $case); )*
            }
        )*
    };
}
