//! The cases, grouped by what they exercise.

pub mod connection;
pub mod faults;
pub mod fleet;
pub mod hostile;
pub mod pool;
pub mod pooler;
pub mod runtime;
pub mod state;
pub mod tls;
