//! Observing a TLS session: the connector tokio-postgres calls is wrapped so that the session's
//! plaintext side is observed once the handshake is done, and the raw socket (ciphertext from
//! then on) no longer is.

use std::sync::Arc;

use futures_core::future::BoxFuture;
use tokio_postgres::tls::TlsConnect;

use crate::connection::wire::{Observed, Wire};

/// A TLS connector whose sessions are observed: when the handshake starts, the raw stream's
/// observer stops (ciphertext from then on) and the TLS stream's plaintext side is observed.
pub(crate) struct TlsTap<C> {
    inner: C,
    wire: Arc<Wire>,
}

impl<C> TlsTap<C> {
    pub(crate) fn new(inner: C, wire: Arc<Wire>) -> TlsTap<C> {
        TlsTap { inner, wire }
    }
}

impl<S, C> TlsConnect<S> for TlsTap<C>
where
    C: TlsConnect<S>,
    C::Future: Send + 'static,
    C::Stream: Send + 'static,
{
    type Stream = Observed<C::Stream>;
    type Error = C::Error;
    type Future = BoxFuture<'static, Result<Observed<C::Stream>, C::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        self.wire.leave_plaintext();
        let wire = self.wire;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let tls = handshake.await?;
            // The startup packet goes over TLS, untyped, like on a plain stream.
            Ok(Observed::tls(tls, wire))
        })
    }
}
