//! The cases, grouped by what they exercise.

pub mod adaptive;
pub mod batch;
pub mod connection;
pub mod copy;
pub mod deadpool;
pub mod faults;
pub mod fleet;
pub mod hostile;
pub mod lifecycle;
pub mod listen;
pub mod pool;
pub mod pooler;
pub mod runtime;
pub mod state;
pub mod stream;
pub mod tls;
pub mod transaction;
pub mod typed;
