//! Minimal libpq connection-string handling: `key=value` strings and `postgres://` URLs.
//!
//! Both forms are parsed into an ordered list of `key=value` pairs, so a DSN can be re-targeted
//! (another database, another host and port) and written back out as a `key=value` string that
//! psql, libpq and tokio-postgres all accept.

use std::fmt;
use std::io;

/// An ordered list of libpq connection parameters.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Conninfo {
    pairs: Vec<(String, String)>,
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        for (k, v) in &self.pairs {
            if k == "password" {
                list.entry(k, &"<redacted>");
            } else {
                list.entry(k, v);
            }
        }
        list.finish()
    }
}

impl fmt::Display for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={}", quote_value(v))?;
        }
        Ok(())
    }
}

impl Conninfo {
    /// Builds a connection string from pairs.
    pub(crate) fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Conninfo {
        Conninfo {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Parses a `key=value` connection string or a `postgres://` / `postgresql://` URL.
    pub(crate) fn parse(s: &str) -> io::Result<Conninfo> {
        let t = s.trim();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            parse_url(t)
        } else {
            parse_kv(t)
        }
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` (replacing the first occurrence in place and removing any others, or appending).
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        let mut found = false;
        self.pairs.retain_mut(|(k, v)| {
            if k != key {
                return true;
            }
            if found {
                return false;
            }
            found = true;
            *v = value.to_owned();
            true
        });
        if !found {
            self.pairs.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Removes every occurrence of `key`.
    pub(crate) fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// A copy with `key` set to `value`.
    pub(crate) fn with(&self, key: &str, value: &str) -> Conninfo {
        let mut c = self.clone();
        c.set(key, value);
        c
    }
}

/// Quotes a value for a `key=value` string when needed.
pub(crate) fn quote_value(v: &str) -> String {
    let needs_quotes = v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if !needs_quotes {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn parse_kv(s: &str) -> io::Result<Conninfo> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "connection string: missing \"=\" after {key:?}"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(invalid(format!(
                            "connection string: unterminated quoted value for {key:?}"
                        )))
                    }
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    Ok(Conninfo { pairs })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_url(s: &str) -> io::Result<Conninfo> {
    let rest = s
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| invalid(format!("not a URL: {s:?}")))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, p),
        None => (before_query, ""),
    };
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };

    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    if !hostlist.is_empty() {
        for spec in hostlist.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| invalid(format!("URL: unterminated IPv6 address in {s:?}")))?;
                (h, after.strip_prefix(':').unwrap_or(""))
            } else {
                match spec.split_once(':') {
                    Some((h, p)) => (h, p),
                    None => (spec, ""),
                }
            };
            hosts.push(percent_decode(host));
            ports.push(port.to_owned());
        }
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        pairs.push(("host".into(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        pairs.push(("port".into(), ports.join(",")));
    }
    if let Some(u) = userinfo {
        let (user, password) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u, None),
        };
        if !user.is_empty() {
            pairs.push(("user".into(), percent_decode(user)));
        }
        if let Some(p) = password {
            pairs.push(("password".into(), percent_decode(p)));
        }
    }
    if !path.is_empty() {
        pairs.push(("dbname".into(), percent_decode(path)));
    }
    let mut info = Conninfo { pairs };
    if let Some(q) = query {
        for param in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            if k == "ssl" && v == "true" {
                info.set("sslmode", "require");
            } else {
                info.set(&k, &v);
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_round_trip_and_quoting() {
        let c = Conninfo::parse("host=localhost  port = 5433 user=me password='a b\\'c' dbname=x")
            .unwrap();
        assert_eq!(c.get("host"), Some("localhost"));
        assert_eq!(c.get("port"), Some("5433"));
        assert_eq!(c.get("password"), Some("a b'c"));
        let s = c.with("dbname", "other").to_string();
        assert_eq!(
            s,
            "host=localhost port=5433 user=me password='a b\\'c' dbname=other"
        );
        assert_eq!(Conninfo::parse(&s).unwrap().get("dbname"), Some("other"));
        assert!(!format!("{c:?}").contains("a b"), "Debug redacts passwords");
    }

    #[test]
    fn kv_errors() {
        assert!(Conninfo::parse("host").is_err());
        assert!(Conninfo::parse("host='abc").is_err());
        assert_eq!(Conninfo::parse("").unwrap().to_string(), "");
    }

    #[test]
    fn url_is_converted() {
        let c = Conninfo::parse(
            "postgresql://us%40er:p%3Ass@[::1]:6543,other/my%20db?sslmode=disable&application_name=t",
        )
        .unwrap();
        assert_eq!(c.get("host"), Some("::1,other"));
        assert_eq!(c.get("port"), Some("6543,"));
        assert_eq!(c.get("user"), Some("us@er"));
        assert_eq!(c.get("password"), Some("p:ss"));
        assert_eq!(c.get("dbname"), Some("my db"));
        assert_eq!(c.get("sslmode"), Some("disable"));
        assert_eq!(c.get("application_name"), Some("t"));

        let c = Conninfo::parse("postgres://localhost").unwrap();
        assert_eq!(c.to_string(), "host=localhost");
        let c = Conninfo::parse("postgres://u@h:1/d").unwrap();
        assert_eq!(
            c.with("dbname", "e").to_string(),
            "host=h port=1 user=u dbname=e"
        );
    }

    #[test]
    fn set_and_remove() {
        let mut c = Conninfo::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        c.set("a", "x");
        assert_eq!(c.to_string(), "a=x b=2");
        c.remove("b");
        c.set("c", "");
        assert_eq!(c.to_string(), "a=x c=''");
    }
}
