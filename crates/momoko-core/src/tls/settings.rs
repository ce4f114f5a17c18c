//! libpq's TLS settings: `sslmode`, root and client certificates, protocol versions.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// libpq's `sslmode`: whether TLS is used and what is verified.
///
/// | mode | TLS | server certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `allow` | only if the server rejects a plain connection | checked against `sslrootcert` if given |
/// | `prefer` (default) | if the server offers it; a failed TLS attempt is retried in plain | checked against `sslrootcert` if given |
/// | `require` | always | checked against `sslrootcert` if given (then as `verify-ca`), else not at all |
/// | `verify-ca` | always | chain must lead to a CA of `sslrootcert` |
/// | `verify-full` | always | as `verify-ca`, and the certificate must name the `host` |
///
/// TLS is never used on Unix sockets (as in libpq). Without the `tls` feature of momoko-core,
/// `allow` and `prefer` connect in plain and the stronger modes are configuration errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plain first; TLS only when the server refuses the plain connection.
    Allow,
    /// TLS when the server supports it, else plain (libpq's default).
    #[default]
    Prefer,
    /// TLS or fail; the certificate is verified only when `sslrootcert` is given.
    Require,
    /// TLS with a certificate chain that leads to a CA in `sslrootcert`.
    VerifyCa,
    /// As [`SslMode::VerifyCa`], and the certificate must be valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling, like `"verify-full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection must use TLS (`require`, `verify-ca`, `verify-full`).
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    /// Parses libpq's spelling. The error never repeats the value.
    fn from_str(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::config(
                    "invalid value for sslmode (expected disable, allow, prefer, require, \
                     verify-ca or verify-full)",
                ))
            }
        })
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(p) => write!(f, "{}", p.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Nothing (the handshake signature still is).
    Nothing,
    /// The chain leads to a trusted CA.
    Chain,
    /// The chain, and the certificate names the host.
    Full,
}

/// A TLS protocol version for `ssl_min_protocol_version` / `ssl_max_protocol_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(key: &str, value: &str) -> Result<TlsVersion> {
        match value {
            "TLSv1.2" => Ok(TlsVersion::Tls12),
            "TLSv1.3" => Ok(TlsVersion::Tls13),
            "TLSv1" | "TLSv1.1" => Err(Error::config(format!(
                "{key}: TLS 1.0 and 1.1 are not supported (rustls speaks TLSv1.2 and TLSv1.3)"
            ))),
            _ => Err(Error::config(format!(
                "invalid value for {key} (expected TLSv1.2 or TLSv1.3)"
            ))),
        }
    }
}

/// The TLS settings of a connection string as written (before the environment and defaults).
/// Only values that are not secret are kept: `sslpassword` is dropped on sight.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SslParams {
    pub(crate) sslmode: Option<String>,
    pub(crate) sslrootcert: Option<String>,
    pub(crate) sslcert: Option<String>,
    pub(crate) sslkey: Option<String>,
    pub(crate) sslnegotiation: Option<String>,
    pub(crate) sslsni: Option<String>,
    pub(crate) ssl_min_protocol_version: Option<String>,
    pub(crate) ssl_max_protocol_version: Option<String>,
}

impl SslParams {
    /// The keys momoko handles itself (tokio-postgres does not know them, or knows only part of
    /// their values).
    pub(crate) const KEYS: [&'static str; 9] = [
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslnegotiation",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "sslpassword",
    ];

    /// Whether `key` is one of [`SslParams::KEYS`].
    pub(crate) fn is_ours(key: &str) -> bool {
        SslParams::KEYS.contains(&key)
    }

    /// Records `key = value` (the last one wins, as in libpq). `key` must be one of ours.
    pub(crate) fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslnegotiation" => &mut self.sslnegotiation,
            "sslsni" => &mut self.sslsni,
            "ssl_min_protocol_version" => &mut self.ssl_min_protocol_version,
            "ssl_max_protocol_version" => &mut self.ssl_max_protocol_version,
            // The passphrase of an encrypted client key: not supported, never kept.
            _ => return,
        };
        *slot = Some(value);
    }
}

/// The resolved TLS settings of a [`ConnectOptions`](crate::ConnectOptions).
#[derive(Clone)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    /// `sslnegotiation=direct` (PostgreSQL 17+): TLS from the first byte, no SSLRequest.
    pub(crate) direct: bool,
    pub(crate) root_cert: Option<RootCert>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) verify: Verify,
    pub(crate) sni: bool,
    pub(crate) min_version: TlsVersion,
    pub(crate) max_version: TlsVersion,
    /// The rustls configuration, built once (files read, keys parsed) when TLS may be used.
    #[cfg(feature = "tls")]
    pub(crate) client_config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mode", &self.mode)
            .field("direct", &self.direct)
            .field("root_cert", &self.root_cert)
            .field("client_cert", &self.client_cert)
            .field("verify", &self.verify)
            .field("sni", &self.sni)
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Resolves the settings written in a connection string with the `PGSSL*` environment
    /// variables and libpq's defaults, and (with the `tls` feature) loads the certificates.
    pub(crate) fn resolve(
        params: SslParams,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<TlsSettings> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let from = |written: Option<String>, name: &str| written.or_else(|| var(name));

        let explicit_mode = match from(params.sslmode, "PGSSLMODE") {
            Some(m) => Some(m.parse::<SslMode>()?),
            None => None,
        };
        let root_cert = from(params.sslrootcert, "PGSSLROOTCERT").map(|r| {
            if r == "system" {
                RootCert::System
            } else {
                RootCert::File(PathBuf::from(r))
            }
        });
        // libpq: sslrootcert=system defaults sslmode to verify-full and refuses weaker modes.
        let mode = match (&root_cert, explicit_mode) {
            (Some(RootCert::System), None) => SslMode::VerifyFull,
            (Some(RootCert::System), Some(m)) if m != SslMode::VerifyFull => {
                return Err(Error::config(format!(
                    "weak sslmode \"{m}\" may not be used with sslrootcert=system \
                     (use \"verify-full\")"
                )))
            }
            (_, m) => m.unwrap_or_default(),
        };

        #[cfg(not(feature = "tls"))]
        if mode.requires_tls() {
            return Err(Error::config(format!(
                "TLS requested (sslmode={mode}) but momoko-core was built without the `tls` \
                 feature"
            )));
        }

        let direct = match from(params.sslnegotiation, "PGSSLNEGOTIATION").as_deref() {
            None | Some("postgres") => false,
            Some("direct") => true,
            Some(_) => {
                return Err(Error::config(
                    "invalid value for sslnegotiation (expected postgres or direct)",
                ))
            }
        };
        if direct && !mode.requires_tls() {
            return Err(Error::config(format!(
                "weak sslmode \"{mode}\" may not be used with sslnegotiation=direct \
                 (use \"require\", \"verify-ca\", or \"verify-full\")"
            )));
        }

        let sni = match params.sslsni.as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(_) => return Err(Error::config("invalid value for sslsni (expected 0 or 1)")),
        };
        let min_version = match params.ssl_min_protocol_version.as_deref() {
            None | Some("") => TlsVersion::Tls12,
            Some(v) => TlsVersion::parse("ssl_min_protocol_version", v)?,
        };
        let max_version = match params.ssl_max_protocol_version.as_deref() {
            None | Some("") => TlsVersion::Tls13,
            Some(v) => TlsVersion::parse("ssl_max_protocol_version", v)?,
        };
        if min_version > max_version {
            return Err(Error::config(
                "ssl_min_protocol_version is higher than ssl_max_protocol_version",
            ));
        }

        let client_cert = match (
            from(params.sslcert, "PGSSLCERT"),
            from(params.sslkey, "PGSSLKEY"),
        ) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (Some(_), None) => {
                return Err(Error::config(
                    "sslcert is given without sslkey: give both (or neither)",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "sslkey is given without sslcert: give both (or neither)",
                ))
            }
        };

        // verify-* need trusted roots; like libpq, fall back to ~/.postgresql/root.crt.
        let root_cert = match root_cert {
            Some(r) => Some(r),
            None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                let default = var("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"));
                match default {
                    Some(p) if p.is_file() => Some(RootCert::File(p)),
                    _ => {
                        return Err(Error::config(format!(
                            "sslmode={mode} needs trusted CA certificates: set sslrootcert to a \
                             PEM file (or \"system\" for the operating system's store), or \
                             place them in ~/.postgresql/root.crt"
                        )))
                    }
                }
            }
            None => None,
        };

        let verify = match mode {
            SslMode::VerifyFull => Verify::Full,
            // libpq: with a root certificate, the weaker modes verify the chain too.
            _ if root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };

        #[allow(unused_mut)]
        let mut settings = TlsSettings {
            mode,
            direct,
            root_cert,
            client_cert,
            verify,
            sni,
            min_version,
            max_version,
            #[cfg(feature = "tls")]
            client_config: None,
        };
        #[cfg(feature = "tls")]
        if mode != SslMode::Disable {
            settings.client_config = Some(super::client_config(&settings)?);
        }
        Ok(settings)
    }

    /// Whether TLS can be attempted at all (the feature is on and the mode is not `disable`).
    pub(crate) fn available(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.client_config.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// A short description for error messages: `sslmode=verify-full, sslrootcert=/x/ca.pem`.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("sslmode={}", self.mode);
        if let Some(r) = &self.root_cert {
            s.push_str(&format!(", sslrootcert={r}"));
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_spellings_round_trip() {
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(SslMode::default(), SslMode::Prefer);
        assert!(SslMode::VerifyCa.requires_tls() && !SslMode::Allow.requires_tls());
        let e = "Require".parse::<SslMode>().unwrap_err();
        assert!(e.is_config() && !e.to_string().contains("Require"), "{e}");
    }
}
