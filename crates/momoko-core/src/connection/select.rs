//! Which host a new session goes to, as libpq 14–16 decides it: the hosts in order (or shuffled
//! anew for each connection with `load_balance_hosts=random`), each within `connect_timeout`,
//! keeping the first whose server qualifies for `target_session_attrs`; for `prefer-standby`, a
//! first pass that takes standbys only and a second that takes any server.
//!
//! A server's role comes from what it reports at start-up (`in_hot_standby` and
//! `default_transaction_read_only`, PostgreSQL 14+): no round trip. An older server is asked
//! (`pg_is_in_recovery()`, `SHOW default_transaction_read_only`), once per new session.

use tracing::debug;

use crate::config::{ConnectOptions, LoadBalanceHosts, ServerRole, Target, TargetSessionAttrs};
use crate::connection::open::{start_session, Opened, Session};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{maybe_timeout, SharedExecutor};

/// Opens a session on the first host that starts one and qualifies; otherwise the last error,
/// with a summary of every host's.
pub(crate) async fn open(options: &ConnectOptions, executor: &SharedExecutor) -> Result<Opened> {
    let mut order: Vec<&Target> = options.targets.iter().collect();
    if options.load_balance_hosts == LoadBalanceHosts::Random {
        fastrand::shuffle(&mut order);
    }
    let wanted = options.target_session_attrs;
    let passes: &[TargetSessionAttrs] = match wanted {
        // libpq: standbys first; when none of the hosts is one, any server.
        TargetSessionAttrs::PreferStandby => {
            &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
        }
        _ => std::slice::from_ref(&options.target_session_attrs),
    };
    let mut failures: Vec<Error> = Vec::new();
    for &pass in passes {
        for target in &order {
            match attempt(options, executor, target, pass).await {
                Ok(opened) => return Ok(opened),
                Err(e) => {
                    debug!(target: "momoko", %target, error = %e, "connect attempt failed");
                    // Authentication problems are not cured by another host of the same
                    // cluster, but libpq still tries the next host; so do we.
                    failures.push(e);
                }
            }
        }
    }
    Err(summarize(failures))
}

/// One host, within `connect_timeout`.
async fn attempt(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    target: &Target,
    wanted: TargetSessionAttrs,
) -> Result<Opened> {
    let timeout = options.pg.get_connect_timeout().copied();
    let attempt = open_one(options, executor, target, wanted);
    match maybe_timeout(&**executor, timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::timeout(format!(
            "{target}: connect_timeout of {:?} elapsed",
            timeout.unwrap_or_default()
        ))),
    }
}

fn summarize(mut failures: Vec<Error>) -> Error {
    match failures.len() {
        0 => Error::config("no host to connect to"),
        1 => failures.remove(0),
        _ => {
            let summary = failures
                .iter()
                .map(|e| e.message().to_owned())
                .collect::<Vec<_>>()
                .join("; ");
            // Keep the most telling kind: auth beats timeout beats connect.
            let kind = if failures.iter().any(Error::is_auth) {
                ErrorKind::Auth
            } else if failures.iter().all(Error::is_timeout) {
                ErrorKind::Timeout
            } else {
                ErrorKind::Connect
            };
            let last = failures.pop();
            let e = Error::new(kind, format!("every host failed: {summary}"));
            match last {
                Some(last) => e.with_source(last),
                None => e,
            }
        }
    }
}

async fn open_one(
    options: &ConnectOptions,
    executor: &SharedExecutor,
    target: &Target,
    wanted: TargetSessionAttrs,
) -> Result<Opened> {
    let (
        Session {
            client,
            driver,
            wire,
        },
        tls_in_use,
    ) = start_session(options, executor, target).await?;
    if wanted != TargetSessionAttrs::Any {
        let role = match wire.role() {
            Some(role) => role,
            None => ask_role(&client)
                .await
                .map_err(|e| Error::from_pg_connect(e, &target.to_string()))?,
        };
        if !wanted.accepts(role) {
            let what = match (role.hot_standby, role.read_only_default) {
                (true, _) => "a hot standby",
                (false, true) => "a primary with default_transaction_read_only on",
                (false, false) => "a read-write primary",
            };
            return Err(Error::new(
                ErrorKind::Connect,
                format!("{target}: the server is {what}, not target_session_attrs={wanted}"),
            ));
        }
    }
    let mut target = target.clone();
    if let Target::Tcp { session_tls, .. } = &mut target {
        *session_tls = tls_in_use;
    }
    Ok(Opened {
        client,
        driver,
        wire,
        target,
    })
}

/// Asks a server that does not report `in_hot_standby` (before PostgreSQL 14) what it is.
async fn ask_role(
    client: &tokio_postgres::Client,
) -> std::result::Result<ServerRole, tokio_postgres::Error> {
    let rows = client
        .simple_query(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')",
        )
        .await?;
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    Ok(ServerRole {
        hot_standby: row.and_then(|r| r.get(0)) == Some("t"),
        read_only_default: row.and_then(|r| r.get(1)) == Some("on"),
    })
}
