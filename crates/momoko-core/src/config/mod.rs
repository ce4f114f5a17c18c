//! Connection settings: what a connection string says, and what the environment adds.
//!
//! * [`dsn`]: libpq's two string forms, with the TLS keys taken out for momoko's own TLS;
//! * [`env`]: the `PG*` environment variables and the operating-system user;
//! * [`hosts`]: the host, `hostaddr` and port lists turned into the places a connect tries;
//! * [`session`]: which server of a host list a session may use (`target_session_attrs`,
//!   `load_balance_hosts`);
//! * [`options`]: [`ConnectOptions`], the parsed result users hold.
//! * [`options`]: [`ConnectOptions`], the parsed result users hold;
//! * [`credentials`]: a provider asked for the password or the options of each new connection.

mod credentials;
mod dsn;
mod env;
mod hosts;
mod options;
mod session;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use credentials::{Credentials, Provided};
pub(crate) use hosts::Target;
pub use options::ConnectOptions;
pub(crate) use session::ServerRole;
pub use session::{LoadBalanceHosts, TargetSessionAttrs};
