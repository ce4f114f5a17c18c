//! libpq's two connection-string forms (key/value and URL), with the keys momoko handles itself
//! taken out: TLS, and session selection (`target_session_attrs`, `load_balance_hosts`), of
//! which tokio-postgres knows only some values.

use crate::config::session::SessionParams;
use crate::error::{Error, Result};
use crate::tls::SslParams;

/// A connection string split in two: what tokio-postgres parses, and the keys momoko handles.
#[derive(Debug, Default)]
pub(super) struct Split {
    pub(super) rest: String,
    pub(super) ssl: SslParams,
    pub(super) session: SessionParams,
}

impl Split {
    /// Takes `key = value` when it is one of momoko's; returns whether it was.
    fn take(&mut self, key: &str, value: impl FnOnce() -> Result<String>) -> Result<bool> {
        if SslParams::is_ours(key) {
            self.ssl.set(key, value()?);
            Ok(true)
        } else if SessionParams::is_ours(key) {
            self.session.set(key, value()?);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Splits `dsn` into what tokio-postgres will parse and the TLS settings momoko handles itself.
///
/// Key/value strings are tokenized as libpq does (single quotes, backslash escapes in quoted and
/// unquoted values) and the remaining pairs written back quoted; in URLs only the query string
/// is edited. Error messages never contain a value.
pub(super) fn split_dsn(dsn: &str) -> Result<Split> {
    for prefix in ["postgres://", "postgresql://"] {
        if dsn.starts_with(prefix) {
            return split_url(dsn, prefix.len());
        }
    }
    let mut split = Split::default();
    let mut rest = String::with_capacity(dsn.len());
    for (key, value) in tokenize_kv(dsn)? {
        let mut value = Some(value);
        if split.take(&key, || Ok(value.take().unwrap_or_default()))? {
            continue;
        }
        let value = value.unwrap_or_default();
        if !rest.is_empty() {
            rest.push(' ');
        }
        rest.push_str(&key);
        rest.push_str("='");
        for c in value.chars() {
            if c == '\\' || c == '\'' {
                rest.push('\\');
            }
            rest.push(c);
        }
        rest.push('\'');
    }
    split.rest = rest;
    Ok(split)
}

/// libpq's `isspace` in the C locale.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Tokenizes a libpq key/value connection string into (key, value) pairs, as `conninfo_parse`
/// does: `key = value` with optional spaces around `=`; a value is either single-quoted (`\'`
/// and `\\` escape) or runs to the next space (a backslash escapes the next character).
pub(super) fn tokenize_kv(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    loop {
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        let Some(&(start, _)) = it.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|&(_, c)| c != '=' && !is_space(c)) {
            key.push(c);
        }
        if key.is_empty() {
            return Err(Error::config(format!(
                "cannot parse the connection string: missing keyword before \"=\" at byte {start}"
            )));
        }
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        if it.next_if(|&(_, c)| c == '=').is_none() {
            // The word is not echoed: it may be a password typed without its key.
            return Err(Error::config(format!(
                "cannot parse the connection string: missing \"=\" after the keyword at byte \
                 {start}"
            )));
        }
        while it.next_if(|&(_, c)| is_space(c)).is_some() {}
        let mut value = String::new();
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next() {
                    None => {
                        return Err(Error::config(format!(
                            "cannot parse the connection string: unterminated quoted value \
                             (the value of the keyword at byte {start})"
                        )))
                    }
                    Some((_, '\\')) => {
                        if let Some((_, c)) = it.next() {
                            value.push(c);
                        }
                    }
                    Some((_, '\'')) => break,
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !is_space(c)) {
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// The URL form: the query string starts at the first `?` after the credentials (tokio-postgres
/// ends the credentials at the first `@`); our keys are taken out of it, the rest is kept as
/// written.
fn split_url(dsn: &str, body: usize) -> Result<Split> {
    let mut split = Split::default();
    let after_credentials = dsn[body..].find('@').map_or(body, |i| body + i + 1);
    let Some(q) = dsn[after_credentials..]
        .find('?')
        .map(|i| after_credentials + i)
    else {
        split.rest = dsn.to_owned();
        return Ok(split);
    };
    let mut kept: Vec<&str> = Vec::new();
    for part in dsn[q + 1..].split('&') {
        let Some((raw_key, raw_value)) = part.split_once('=') else {
            kept.push(part);
            continue;
        };
        let key = percent_decode(raw_key).unwrap_or_else(|| raw_key.to_owned());
        let taken = split.take(&key, || {
            percent_decode(raw_value).ok_or_else(|| {
                Error::config(format!(
                    "cannot parse the connection string: invalid percent-encoding in the value \
                     of {key}"
                ))
            })
        })?;
        if !taken {
            kept.push(part);
        }
    }
    let mut rest = dsn[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    split.rest = rest;
    Ok(split)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
