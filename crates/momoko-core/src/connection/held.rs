//! What a transaction, a row stream or a COPY holds its connection by: a borrow of a connection
//! the caller holds, or a connection taken from a pool for the object's whole life (the pool's
//! one-shot methods). Either way the object reaches a [`Connection`]; a pooled one goes back to
//! its pool, by its exact state, when the object is dropped.

use std::fmt;
use std::ops::Deref;

use crate::connection::Connection;
use crate::pool::PooledConnection;

/// A connection borrowed from the caller, or owned from a pool.
pub(crate) enum Held<'c> {
    /// The caller's connection (a [`Connection`], a held [`PooledConnection`], or the
    /// connection of an enclosing transaction).
    Borrowed(&'c Connection),
    /// Taken from a pool for this object; returned when it is dropped.
    Pooled(PooledConnection),
}

impl Held<'_> {
    /// Whether the connection came from a pool for this object alone.
    pub(crate) fn is_pooled(&self) -> bool {
        matches!(self, Held::Pooled(_))
    }
}

impl Deref for Held<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Held::Borrowed(c) => c,
            Held::Pooled(p) => p,
        }
    }
}

impl fmt::Debug for Held<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Borrowed(c) => f.debug_tuple("Borrowed").field(c).finish(),
            Held::Pooled(p) => f.debug_tuple("Pooled").field(p).finish(),
        }
    }
}
