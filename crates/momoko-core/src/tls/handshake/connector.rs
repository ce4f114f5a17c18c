//! The connector tokio-postgres calls for a TLS session, and what a failed handshake says.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::channel_binding::end_point_hash;

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
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<RustlsStream<S>, HandshakeError>> + Send>>;

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
