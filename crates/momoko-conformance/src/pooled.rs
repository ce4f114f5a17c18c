//! Running the suite through a pooler: one pgbouncer in transaction mode per test process, in
//! front of the shared cluster, and the cases that do not apply there, each with its reason.

use std::sync::OnceLock;

use momoko_testkit::{Cluster, PgBouncer, PgBouncerOptions};

/// Cases that do not apply when the case's connections go through a transaction-mode pooler
/// with `transaction_pooler` on, and why (a name ending in `::` stands for a whole group).
/// Everything else runs there unchanged.
pub const NOT_APPLICABLE_THROUGH_A_POOLER: &[(&str, &str)] = &[
    ("fleet::", OWN_SERVERS),
    ("tls::", OWN_SERVERS),
    ("pooler::", OWN_SERVERS),
    (
        "lifecycle::lifetime_rotates_connections_under_load",
        SERVER_SESSION,
    ),
    (
        "lifecycle::lifetime_rotates_pipelined_connections",
        SERVER_SESSION,
    ),
    ("lifecycle::drain_waits_for_in_flight_work", SERVER_SESSION),
    ("lifecycle::resize_up_and_down_under_load", SERVER_SESSION),
    (
        "lifecycle::leak_warning_names_the_acquiring_line",
        "it captures warnings with a process-wide tracing subscriber, which the direct run of \
         the same case in this process installs too; the pooler changes nothing it checks",
    ),
    ("faults::terminate_every_backend_under_load", SERVER_SESSION),
    ("batch::", PREPARED),
    ("copy::", PREPARED),
    ("stream::", PREPARED),
    (
        "listen::",
        "a listener needs a session of its own; with transaction_pooler on, Pool::listener is \
         refused with ErrorKind::Usage",
    ),
    (
        "transaction::queryable_is_generic_over_every_target",
        PREPARED,
    ),
    (
        "deadpool::deadpool_manager_recycles_by_exact_state",
        SERVER_SESSION,
    ),
    ("faults::restart_fast_while_idle_heals", OWN_SERVERS),
    ("faults::restart_immediate_while_idle_heals", OWN_SERVERS),
    ("faults::restart_under_load", OWN_SERVERS),
    ("faults::proxy_refuse_then_allow_fills_pool", OWN_SERVERS),
    ("faults::blackhole_timeouts_hold", OWN_SERVERS),
    ("faults::nothing_lost_across_restarts", OWN_SERVERS),
    ("faults::queued_callers_fail_when_db_dies", OWN_SERVERS),
    (
        "faults::close_with_in_flight_and_queued_during_fault",
        OWN_SERVERS,
    ),
    (
        "state::cached_statement_on_a_silently_dead_connection",
        OWN_SERVERS,
    ),
    ("state::getconn_after_a_silent_disconnect", OWN_SERVERS),
    (
        "state::lost_reply_of_the_return_check_costs_no_wait",
        OWN_SERVERS,
    ),
    ("state::growth_is_paced_pool_wide", OWN_SERVERS),
    ("connection::cancel_running_query", CANCEL),
    ("pool::statement_timeout_cancels_on_server", CANCEL),
    (
        "connection::connect_tcp",
        "the server sees the pooler's Unix-socket session, not the client's TCP session",
    ),
    (
        "connection::cursor_methods",
        "it reads the description of a result without rows, which comes from a prepared \
         statement's Describe; behind a transaction pooler nothing is prepared",
    ),
    ("connection::mogrify_equals_execute", MOGRIFY_TYPES),
    ("connection::mogrify_round_trips", MOGRIFY_TYPES),
    (
        "connection::statement_cache_reuses_statements",
        "nothing is prepared or cached",
    ),
    (
        "state::concurrent_prepare_is_single_flight",
        "nothing is prepared",
    ),
    ("connection::ping_version_and_close", SERVER_SESSION),
    ("pool::concurrent_getconn_stretch", SERVER_SESSION),
    ("pool::heals_after_backends_are_terminated", SERVER_SESSION),
    (
        "pool::sequential_statements_rotate_over_connections",
        SERVER_SESSION,
    ),
    (
        "pool::sequential_pipelined_statements_rotate",
        SERVER_SESSION,
    ),
    ("pool::shrinks_idle_extras_to_size", SERVER_SESSION),
    ("pool::setsession_applies_to_every_connection", SETSESSION),
    ("pool::failing_setsession_fails_the_connection", SETSESSION),
    ("pool::pipelined_waiters_keep_their_turn", SESSION_LOCKS),
    (
        "adaptive::adaptive_pipelining_fills_few_connections",
        SERVER_SESSION,
    ),
    (
        "adaptive::adaptive_pipelining_keeps_long_statements_apart",
        SERVER_SESSION,
    ),
    (
        "adaptive::adaptive_pipelining_routes_around_a_stalled_connection",
        SESSION_LOCKS,
    ),
    (
        "pool::pipelining_avoids_a_stalled_connection",
        SESSION_LOCKS,
    ),
    (
        "connection::wrong_parameters_are_clear_errors",
        TYPES_FROM_VALUES,
    ),
    ("hostile::wrong_parameters_everywhere", TYPES_FROM_VALUES),
    (
        "faults::proxy_sever_recovers",
        "without prepared statements the first statement after a sever goes out whole (Parse \
         and Execute together), so its failure is ambiguous and the Safe retry policy does not \
         run it again; with prepared statements its Parse fails first, provably before anything \
         ran",
    ),
];

const PREPARED: &str = "batches, row streams and COPY need prepared statements, which a \
     transaction-mode pooler does not keep; with transaction_pooler on they are refused with \
     ErrorKind::Usage";
const OWN_SERVERS: &str = "it starts its own servers (a replicated pair, a TLS cluster, a private \
     cluster to restart), its own fault proxy or its own pgbouncer, so it runs directly either \
     way (the pooler cases already run through pgbouncer)";
const TYPES_FROM_VALUES: &str = "behind a transaction pooler the parameter types come from the \
     Rust values: a String for an int4 placeholder is sent as text and converted by the server \
     (SQLSTATE 22P02 for \"seven\"), not refused before sending";

const CANCEL: &str =
    "pgbouncer 1.18 aborts (FATAL \"bad client state: 0\" in disconnect_client) on \
     the case's cancel request, right after forwarding it (\"successfully sent cancel \
     request\"): every later case would lose the pooler";
const MOGRIFY_TYPES: &str = "mogrify takes parameter types from the prepared statement; behind a \
     transaction pooler nothing is prepared, so a value that reads differently as several types \
     (SystemTime: timestamp or timestamptz) is refused as ambiguous";
const SERVER_SESSION: &str = "it observes which server session runs a statement (pg_backend_pid, \
     pg_terminate_backend of the client's own session), and the pooler multiplexes clients over \
     server sessions";
const SETSESSION: &str = "setsession is refused behind a transaction pooler: its settings would \
     stay on one server session";
const SESSION_LOCKS: &str = "it holds session-level advisory locks across statements, which do \
     not outlive a transaction behind a transaction pooler";

/// The pgbouncer every case of a `through_pgbouncer` suite shares (started on first use; the
/// kit cleans it up with the process).
pub(crate) fn shared_pgbouncer() -> &'static PgBouncer {
    static BOUNCER: OnceLock<PgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| {
        PgBouncer::start(Cluster::shared(), PgBouncerOptions::default()).unwrap_or_else(|e| {
            panic!(
                "momoko-conformance: cannot start pgbouncer in front of the shared cluster \
                 (apt-get install pgbouncer; DATABASE_URL must not be set): {e}"
            )
        })
    })
}
