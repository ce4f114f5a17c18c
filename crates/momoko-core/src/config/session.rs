//! Which server of a host list a session may use: libpq's `target_session_attrs` (all six
//! values of libpq 14+) and `load_balance_hosts` (libpq 16).
//!
//! tokio-postgres knows only `any`, `read-write` and `read-only` and ignores load balancing, so
//! momoko takes both keys out of the connection string and decides itself, per new connection,
//! from what the server reports (see `connection/open.rs`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// What a session's server must be (libpq's `target_session_attrs`).
///
/// | value | the server … |
/// |---|---|
/// | `any` (default) | may be anything |
/// | `read-write` | accepts read-write transactions by default: not a hot standby, and `default_transaction_read_only` off |
/// | `read-only` | does not accept them by default: a hot standby, or `default_transaction_read_only` on |
/// | `primary` | is not a hot standby |
/// | `standby` | is a hot standby |
/// | `prefer-standby` | is a hot standby if any listed host is; else any server |
///
/// The server's role is read from what it reports at start-up (`in_hot_standby`,
/// `default_transaction_read_only`, PostgreSQL 14+), or asked with one query on older servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// Any server.
    #[default]
    Any,
    /// A server that accepts writes by default.
    ReadWrite,
    /// A server that does not accept writes by default.
    ReadOnly,
    /// A server that is not in hot standby.
    Primary,
    /// A server in hot standby.
    Standby,
    /// A server in hot standby when one is reachable, else any.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// libpq's spelling: `"read-write"`, `"prefer-standby"`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server in this `role` qualifies. `prefer-standby` accepts any server: the
    /// preference is applied by trying the hosts twice (see `connection/open.rs`).
    pub(crate) fn accepts(self, role: ServerRole) -> bool {
        match self {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
            TargetSessionAttrs::ReadWrite => !role.hot_standby && !role.read_only_default,
            TargetSessionAttrs::ReadOnly => role.hot_standby || role.read_only_default,
            TargetSessionAttrs::Primary => !role.hot_standby,
            TargetSessionAttrs::Standby => role.hot_standby,
        }
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = Error;

    fn from_str(s: &str) -> Result<TargetSessionAttrs> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(Error::config(format!(
                    "invalid target_session_attrs {other:?}: expected any, read-write, \
                     read-only, primary, standby or prefer-standby"
                )))
            }
        })
    }
}

/// In which order the hosts of a list are tried (libpq's `load_balance_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LoadBalanceHosts {
    /// In the order given (the default): the first host that qualifies gets every connection.
    #[default]
    Disable,
    /// In a random order, drawn anew for every connection, so connections spread over the hosts.
    Random,
}

impl LoadBalanceHosts {
    /// libpq's spelling: `"disable"` or `"random"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::Disable => "disable",
            LoadBalanceHosts::Random => "random",
        }
    }
}

impl FromStr for LoadBalanceHosts {
    type Err = Error;

    fn from_str(s: &str) -> Result<LoadBalanceHosts> {
        match s {
            "disable" => Ok(LoadBalanceHosts::Disable),
            "random" => Ok(LoadBalanceHosts::Random),
            other => Err(Error::config(format!(
                "invalid load_balance_hosts {other:?}: expected disable or random"
            ))),
        }
    }
}

/// What a server is, as far as `target_session_attrs` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerRole {
    /// In hot standby (recovery), so read-only.
    pub(crate) hot_standby: bool,
    /// `default_transaction_read_only` is on.
    pub(crate) read_only_default: bool,
}

/// The session-selection keys of a connection string, as written (parsed at the end, after the
/// environment filled what is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionParams {
    pub(crate) target_session_attrs: Option<String>,
    pub(crate) load_balance_hosts: Option<String>,
}

impl SessionParams {
    /// Whether momoko handles `key` (so tokio-postgres must not see it).
    pub(crate) fn is_ours(key: &str) -> bool {
        matches!(key, "target_session_attrs" | "load_balance_hosts")
    }

    /// Records `key = value` (the last one wins, as in libpq). `key` must be one of ours.
    pub(crate) fn set(&mut self, key: &str, value: String) {
        match key {
            "target_session_attrs" => self.target_session_attrs = Some(value),
            _ => self.load_balance_hosts = Some(value),
        }
    }

    /// The settings in force: the string's, else the environment's (`PGTARGETSESSIONATTRS`,
    /// `PGLOADBALANCEHOSTS`), else libpq's defaults.
    pub(crate) fn resolve(
        self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(TargetSessionAttrs, LoadBalanceHosts)> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let attrs = match self
            .target_session_attrs
            .or_else(|| var("PGTARGETSESSIONATTRS"))
        {
            Some(v) => v.parse()?,
            None => TargetSessionAttrs::Any,
        };
        let balance = match self
            .load_balance_hosts
            .or_else(|| var("PGLOADBALANCEHOSTS"))
        {
            Some(v) => v.parse()?,
            None => LoadBalanceHosts::Disable,
        };
        Ok((attrs, balance))
    }
}
