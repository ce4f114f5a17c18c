//! The cases, grouped by what they exercise.

pub mod connection;
pub mod pool;
pub mod runtime;
