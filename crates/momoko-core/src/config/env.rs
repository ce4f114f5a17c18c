//! Settings libpq takes from the environment: the `PG*` variables and the process's user.

use std::time::Duration;

use crate::error::{Error, Result};

pub(super) fn apply_env(
    pg: &mut tokio_postgres::Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        if let Some(hosts) = var("PGHOST") {
            for h in hosts.split(',') {
                pg.host(h);
            }
        }
        if let Some(addrs) = var("PGHOSTADDR") {
            for a in addrs.split(',') {
                let addr = a
                    .trim()
                    .parse()
                    .map_err(|_| Error::config(format!("PGHOSTADDR: invalid address {a:?}")))?;
                pg.hostaddr(addr);
            }
        }
    }
    if pg.get_ports().is_empty() {
        if let Some(ports) = var("PGPORT") {
            for p in ports.split(',') {
                let port = p
                    .trim()
                    .parse()
                    .map_err(|_| Error::config(format!("PGPORT: invalid port {p:?}")))?;
                pg.port(port);
            }
        }
    }
    if pg.get_user().is_none() {
        match var("PGUSER").or_else(os_user) {
            Some(u) => {
                pg.user(u);
            }
            None => {
                return Err(Error::config(
                    "no user name: set `user` in the connection string or PGUSER",
                ))
            }
        }
    }
    if pg.get_password().is_none() {
        if let Some(p) = var("PGPASSWORD") {
            pg.password(p);
        }
    }
    if pg.get_dbname().is_none() {
        if let Some(d) = var("PGDATABASE") {
            pg.dbname(d);
        }
    }
    if pg.get_application_name().is_none() {
        if let Some(a) = var("PGAPPNAME") {
            pg.application_name(a);
        }
    }
    if pg.get_options().is_none() {
        if let Some(o) = var("PGOPTIONS") {
            pg.options(o);
        }
    }
    if pg.get_connect_timeout().is_none() {
        if let Some(t) = var("PGCONNECT_TIMEOUT") {
            let secs: i64 = t
                .trim()
                .parse()
                .map_err(|_| Error::config(format!("PGCONNECT_TIMEOUT: invalid value {t:?}")))?;
            if secs > 0 {
                pg.connect_timeout(Duration::from_secs(secs.unsigned_abs()));
            }
        }
    }
    Ok(())
}

fn os_user() -> Option<String> {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
        // immediately and do not keep the pointer.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            if !pw.is_null() && !(*pw).pw_name.is_null() {
                let name = std::ffi::CStr::from_ptr((*pw).pw_name);
                return name.to_str().ok().map(str::to_owned);
            }
        }
    }
    None
}
