//! TLS: libpq's `sslmode` and related settings and, with the `tls` feature, the rustls handshake
//! for tokio-postgres.
//!
//! * [`settings`]: what the connection string asks for (`sslmode`, root and client
//!   certificates, protocol versions), resolved like libpq;
//! * `handshake` (feature `tls`): the rustls client configuration and certificate checks, the
//!   tokio-postgres connector, and SCRAM channel binding.
//!
//! The connector speaks only tokio's I/O traits (through `tokio-rustls`), never tokio's runtime,
//! and uses rustls' `ring` provider, so it builds without a C toolchain and runs on any executor.

#[cfg(feature = "tls")]
mod handshake;
mod settings;

#[cfg(feature = "tls")]
pub(crate) use handshake::{client_config, server_name, Connector, HandshakeError};
pub use settings::SslMode;
pub(crate) use settings::{SslParams, TlsSettings, Verify};
