//! The TLS handshake over rustls: client configuration and certificate checks, the connector
//! tokio-postgres calls, and SCRAM channel binding.

mod channel_binding;
mod config;
mod connector;

pub(crate) use config::{client_config, server_name};
pub(crate) use connector::{Connector, HandshakeError};
