//! The rustls client configuration: protocol versions, trusted roots, client certificate, and
//! the server-certificate check each `sslmode` asks for.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};
use crate::tls::settings::{RootCert, TlsSettings, TlsVersion, Verify};

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
    let bytes =
        std::fs::read(path).map_err(|e| Error::config(format!("{key} {}: {e}", path.display())))?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

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
