//! The cases, grouped by what they exercise.

pub mod connection;
pub mod faults;
pub mod hostile;
pub mod lifecycle;
pub mod pool;
pub mod runtime;
pub mod state;
pub mod tls;
