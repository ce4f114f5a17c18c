//! TLS: libpq's `sslmode` and related settings and, with the `tls` feature, a rustls connector
//! for tokio-postgres.
//!
//! The connector speaks only tokio's I/O traits (through `tokio-rustls`), never tokio's runtime,
//! and uses rustls' `ring` provider, so it builds without a C toolchain and runs on any executor.

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
            settings.client_config = Some(imp::client_config(&settings)?);
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

#[cfg(feature = "tls")]
pub(crate) use imp::{server_name, Connector, HandshakeError};

#[cfg(feature = "tls")]
mod imp {
    use std::error::Error as StdError;
    use std::fmt;
    use std::future::Future;
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::{Resumption, WebPkiServerVerifier};
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::ParsedCertificate;
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

    use super::{RootCert, TlsSettings, TlsVersion, Verify};
    use crate::error::{Error, Result};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Builds the rustls configuration: protocol versions, the verifier `settings.verify` asks
    /// for, the client certificate, ALPN `postgresql` (required by PostgreSQL 17's direct TLS,
    /// harmless before), and no session resumption (PostgreSQL does not offer it).
    pub(crate) fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>> {
        let provider = provider();
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| *v >= settings.min_version && *v <= settings.max_version)
        .map(|(_, p)| p)
        .collect();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| Error::config(format!("TLS configuration: {e}")))?;
        let algs = provider.signature_verification_algorithms;

        let builder = match settings.verify {
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CertCheck { roots: None, algs })),
            Verify::Chain => {
                let roots = Arc::new(load_roots(settings)?);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CertCheck {
                        roots: Some(roots),
                        algs,
                    }))
            }
            Verify::Full => {
                let roots = Arc::new(load_roots(settings)?);
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| Error::config(format!("TLS certificate verifier: {e}")))?;
                builder.with_webpki_verifier(verifier)
            }
        };

        let mut config = match &settings.client_cert {
            Some((cert, key)) => {
                let chain = load_certs(cert, "sslcert")?;
                let key = load_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::config(format!(
                        "sslcert {} / sslkey {}: {e}",
                        cert.display(),
                        settings
                            .client_cert
                            .as_ref()
                            .map(|(_, k)| k.display().to_string())
                            .unwrap_or_default()
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        config.resumption = Resumption::disabled();
        config.enable_sni = settings.sni;
        Ok(Arc::new(config))
    }

    fn load_roots(settings: &TlsSettings) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match &settings.root_cert {
            Some(RootCert::File(path)) => {
                let certs = load_certs(path, "sslrootcert")?;
                let (added, _ignored) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::config(format!(
                        "sslrootcert {}: no usable CA certificate in the file",
                        path.display()
                    )));
                }
            }
            Some(RootCert::System) => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    return Err(Error::config(format!(
                        "sslrootcert=system: no CA certificate found in the operating system's \
                         store{why}"
                    )));
                }
            }
            None => {
                return Err(Error::config(
                    "certificate verification needs sslrootcert (no trusted CA certificates)",
                ))
            }
        }
        Ok(store)
    }

    fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::config(format!("{key} {}: {e}", path.display())))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::config(format!("{key} {}: not a PEM file: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "{key} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
                path.display()
            )));
        }
        Ok(certs)
    }

    fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
        check_key_permissions(path)?;
        let bytes = std::fs::read(path)
            .map_err(|e| Error::config(format!("sslkey {}: {e}", path.display())))?;
        if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err(Error::config(format!(
                "sslkey {}: encrypted private keys (sslpassword) are not supported; decrypt the \
                 key file",
                path.display()
            )));
        }
        // The key's bytes never reach a message.
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            let why = match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".to_owned()
                }
                _ => "not a valid PEM private key".to_owned(),
            };
            Error::config(format!("sslkey {}: {why}", path.display()))
        })
    }

    /// libpq refuses a private key that group or others can read (unless owned by root, then
    /// group read is allowed).
    #[cfg(unix)]
    fn check_key_permissions(path: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::config(format!("sslkey {}: {e}", path.display())))?;
        let mode = meta.mode() & 0o777;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let too_open =
            (meta.uid() == euid && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0);
        if !too_open {
            Ok(())
        } else {
            Err(Error::config(format!(
                "sslkey {}: private key file has group or world access; it must have \
                 permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r \
                 (0640) or less if owned by root",
                path.display()
            )))
        }
    }

    #[cfg(not(unix))]
    fn check_key_permissions(_path: &Path) -> Result<()> {
        Ok(())
    }

    /// The server-certificate check for every mode but `verify-full` (which uses rustls' own
    /// WebPKI verifier): with `roots`, the chain must lead to a trusted CA and be valid now, the
    /// host name unchecked (`verify-ca`, and `require` with a root certificate, as in libpq);
    /// without, no authentication of the server (`require` without a root certificate, `prefer`,
    /// `allow`). The handshake signatures are checked either way.
    #[derive(Debug)]
    struct CertCheck {
        roots: Option<Arc<RootCertStore>>,
        algs: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for CertCheck {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            if let Some(roots) = &self.roots {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.algs.all,
                )?;
            }
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    }

    /// The name a TLS session is opened for: the `host` of the target (checked by
    /// `verify-full`, sent as SNI when it is a DNS name), else the address connected to.
    pub(crate) fn server_name(
        host_name: Option<&str>,
        address: &str,
    ) -> std::result::Result<ServerName<'static>, String> {
        let name = host_name.unwrap_or(address);
        ServerName::try_from(name.to_owned())
            .or_else(|_| {
                // Bracketed IPv6 literals.
                name.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .map(ServerName::from)
            })
            .map_err(|_| format!("{name:?} is not a valid DNS name or IP address for TLS"))
    }

    /// A failed TLS handshake, with what was being checked.
    #[derive(Debug)]
    pub(crate) struct HandshakeError {
        message: String,
        source: io::Error,
    }

    impl fmt::Display for HandshakeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl StdError for HandshakeError {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.source)
        }
    }

    fn explain(e: &io::Error, name: &ServerName<'_>) -> String {
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let detail = match rustls_error {
            Some(rustls::Error::InvalidCertificate(c)) => {
                use rustls::CertificateError as C;
                let why = match c {
                    C::UnknownIssuer => {
                        "it is not signed by a trusted CA (check sslrootcert)".to_owned()
                    }
                    C::BadSignature => "its signature does not verify".to_owned(),
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        format!("it does not name the host {}: {c}", name.to_str())
                    }
                    other => other.to_string(),
                };
                format!("server certificate rejected: {why}")
            }
            Some(other) => other.to_string(),
            None => e.to_string(),
        };
        detail
    }

    /// A tokio-postgres TLS connector over rustls for one connection attempt.
    pub(crate) struct Connector {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        /// Set once a handshake starts: the server agreed to TLS.
        used: Arc<AtomicBool>,
    }

    impl Connector {
        pub(crate) fn new(
            config: Arc<ClientConfig>,
            name: ServerName<'static>,
            used: Arc<AtomicBool>,
        ) -> Connector {
            Connector { config, name, used }
        }
    }

    impl<S> TlsConnect<S> for Connector
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = RustlsStream<S>;
        type Error = HandshakeError;
        type Future = Pin<
            Box<dyn Future<Output = std::result::Result<RustlsStream<S>, HandshakeError>> + Send>,
        >;

        fn connect(self, stream: S) -> Self::Future {
            self.used.store(true, Ordering::SeqCst);
            Box::pin(async move {
                let connector = tokio_rustls::TlsConnector::from(self.config);
                match connector.connect(self.name.clone(), stream).await {
                    Ok(s) => Ok(RustlsStream(s)),
                    Err(source) => Err(HandshakeError {
                        message: explain(&source, &self.name),
                        source,
                    }),
                }
            })
        }
    }

    /// A TLS session to the server.
    pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

    crate::executor::forward_io!([S: AsyncRead + AsyncWrite + Unpin] RustlsStream<S>);

    impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
        /// `tls-server-end-point` (RFC 5929) for SCRAM-SHA-256-PLUS: the hash of the server's
        /// certificate with the hash of its signature algorithm (SHA-256 for MD5 and SHA-1), as
        /// the server computes it. Unknown algorithms give no binding, so the client then
        /// declares that it does not support channel binding and plain SCRAM is used.
        fn channel_binding(&self) -> ChannelBinding {
            let (_, session) = self.0.get_ref();
            let cert = session.peer_certificates().and_then(|c| c.first());
            match cert.and_then(|c| end_point_hash(c.as_ref())) {
                Some(hash) => ChannelBinding::tls_server_end_point(hash),
                None => ChannelBinding::none(),
            }
        }
    }

    /// The `tls-server-end-point` hash of a DER certificate, or `None` when its signature
    /// algorithm is not one PostgreSQL can bind to.
    pub(crate) fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
        let algorithm = signature_hash(cert_der)?;
        Some(ring::digest::digest(algorithm, cert_der).as_ref().to_vec())
    }

    /// The digest for a certificate's `signatureAlgorithm`, per RFC 5929 §4.1.
    fn signature_hash(cert_der: &[u8]) -> Option<&'static ring::digest::Algorithm> {
        use ring::digest::{SHA256, SHA384, SHA512};
        let oid = signature_algorithm_oid(cert_der)?;
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
        const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
        if let Some(rest) = oid.strip_prefix(RSA) {
            return match rest {
                [0x04] | [0x05] | [0x0b] => Some(&SHA256), // md5, sha1, sha256 WithRSA
                [0x0c] => Some(&SHA384),
                [0x0d] => Some(&SHA512),
                _ => None, // RSASSA-PSS, SHA-224: PostgreSQL cannot bind either
            };
        }
        if let Some(rest) = oid.strip_prefix(ECDSA) {
            return match rest {
                [0x01] | [0x03, 0x02] => Some(&SHA256), // ecdsa-with-SHA1, -SHA256
                [0x03, 0x03] => Some(&SHA384),
                [0x03, 0x04] => Some(&SHA512),
                _ => None,
            };
        }
        None
    }

    /// Reads `Certificate.signatureAlgorithm.algorithm` (the OID's content bytes) from DER:
    /// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … }`.
    pub(crate) fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
        let (tag, cert, _) = tlv(der)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, _tbs, rest) = tlv(cert)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, alg, _) = tlv(rest)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, oid, _) = tlv(alg)?;
        (tag == 0x06).then_some(oid)
    }

    /// One DER tag-length-value: (tag, content, what follows).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    mod tests {
        use super::*;

        #[test]
        fn real_certificate_binds_with_sha256() {
            let pem = crate::config::tests::TEST_CA_PEM;
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            // ecdsa-with-SHA256
            assert_eq!(
                signature_algorithm_oid(der.as_ref()),
                Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..])
            );
            assert_eq!(
                end_point_hash(der.as_ref()),
                Some(
                    ring::digest::digest(&ring::digest::SHA256, der.as_ref())
                        .as_ref()
                        .to_vec()
                )
            );
        }

        /// A DER certificate skeleton with the given signature algorithm OID (content bytes).
        fn skeleton(oid: &[u8]) -> Vec<u8> {
            let tbs = [0x30, 0x03, 0x02, 0x01, 0x05];
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            alg.extend_from_slice(&[0x05, 0x00]);
            let mut alg_seq = vec![0x30, alg.len() as u8];
            alg_seq.extend(alg);
            let sig = [0x03, 0x02, 0x00, 0xff];
            let mut body = Vec::new();
            body.extend_from_slice(&tbs);
            body.extend(alg_seq);
            body.extend_from_slice(&sig);
            // Long-form length on the outer sequence, to exercise it.
            let mut der = vec![0x30, 0x81, body.len() as u8];
            der.extend(body);
            der
        }

        #[test]
        fn signature_hash_follows_rfc_5929() {
            let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
            let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
            let sha512_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
            let pss = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
            let ecdsa384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
            let ed25519 = [0x2b, 0x65, 0x70];
            let len = |oid: &[u8]| end_point_hash(&skeleton(oid)).map(|h| h.len());
            assert_eq!(len(&sha256_rsa), Some(32));
            assert_eq!(len(&sha1_rsa), Some(32));
            assert_eq!(len(&sha512_rsa), Some(64));
            assert_eq!(len(&ecdsa384), Some(48));
            assert_eq!(len(&pss), None);
            assert_eq!(len(&ed25519), None);
            let der = skeleton(&sha256_rsa);
            assert_eq!(signature_algorithm_oid(&der), Some(&sha256_rsa[..]));
            assert_eq!(
                end_point_hash(&der),
                Some(
                    ring::digest::digest(&ring::digest::SHA256, &der)
                        .as_ref()
                        .to_vec()
                )
            );
            assert_eq!(signature_algorithm_oid(&der[..der.len() - 1]), None);
            assert_eq!(signature_algorithm_oid(b""), None);
        }

        #[test]
        fn server_names() {
            assert!(matches!(
                server_name(Some("localhost"), "127.0.0.1"),
                Ok(ServerName::DnsName(_))
            ));
            assert!(matches!(
                server_name(None, "127.0.0.1"),
                Ok(ServerName::IpAddress(_))
            ));
            assert!(matches!(
                server_name(Some("::1"), "::1"),
                Ok(ServerName::IpAddress(_))
            ));
            assert!(server_name(Some("bad name!"), "1.2.3.4").is_err());
        }
    }
}
