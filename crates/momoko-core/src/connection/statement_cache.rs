//! The prepared statements of one connection: a small least-recently-used map, and single-flight
//! preparation (concurrent callers of one new statement share one Parse).
//!
//! Why single-flight: with pipelining, 32 concurrent `execute("SELECT 1")` on a fresh
//! connection used to send 32 Parse messages and leave 32 named statements on the server, of
//! which the cache kept one; the other 31 lived until the session ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_channel::oneshot;
use tokio_postgres::Statement;

/// What a caller does about a statement it needs.
pub(super) enum Lookup {
    /// It is prepared: use it.
    Ready(Statement),
    /// Another caller is preparing it: wait for its result (`Err` when that caller gave up or
    /// failed; then ask again).
    Wait(oneshot::Receiver<Statement>),
    /// Prepare it, then report with [`StatementCache::prepared`] or [`StatementCache::abandon`].
    Prepare,
}

enum Slot {
    Ready { statement: Statement, used: u64 },
    Preparing(Vec<oneshot::Sender<Statement>>),
}

pub(super) struct StatementCache {
    capacity: usize,
    tick: u64,
    map: HashMap<String, Slot>,
}

static CACHE_TICKS: AtomicU64 = AtomicU64::new(0);

impl StatementCache {
    pub(super) fn new(capacity: usize) -> StatementCache {
        StatementCache {
            capacity,
            tick: CACHE_TICKS.load(Ordering::Relaxed),
            map: HashMap::new(),
        }
    }

    pub(super) fn lookup(&mut self, sql: &str) -> Lookup {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(sql) {
            Some(Slot::Ready { statement, used }) => {
                *used = tick;
                Lookup::Ready(statement.clone())
            }
            Some(Slot::Preparing(waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Lookup::Wait(rx)
            }
            None => {
                self.map.insert(sql.to_owned(), Slot::Preparing(Vec::new()));
                Lookup::Prepare
            }
        }
    }

    /// The statement if it is prepared, counted as a use; unlike [`lookup`](Self::lookup), a
    /// miss changes nothing (nobody is asked to prepare it).
    pub(super) fn ready(&mut self, sql: &str) -> Option<Statement> {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(sql) {
            Some(Slot::Ready { statement, used }) => {
                *used = tick;
                Some(statement.clone())
            }
            _ => None,
        }
    }

    /// The statement if it is prepared; never asks for it to be prepared, and does not count as a
    /// use.
    pub(super) fn get(&self, sql: &str) -> Option<Statement> {
        match self.map.get(sql) {
            Some(Slot::Ready { statement, .. }) => Some(statement.clone()),
            _ => None,
        }
    }

    /// The caller that got [`Lookup::Prepare`] succeeded: keep the statement (unless the cache
    /// is off) and hand it to everyone who waited.
    pub(super) fn prepared(&mut self, sql: &str, statement: &Statement) {
        let waiters = match self.map.remove(sql) {
            Some(Slot::Preparing(waiters)) => waiters,
            Some(ready @ Slot::Ready { .. }) => {
                // Forgotten and prepared again meanwhile: keep the newer one.
                self.map.insert(sql.to_owned(), ready);
                Vec::new()
            }
            None => Vec::new(),
        };
        for w in waiters {
            let _ = w.send(statement.clone());
        }
        if self.capacity == 0 || self.map.contains_key(sql) {
            return;
        }
        if self.ready_len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .filter_map(|(k, slot)| match slot {
                    Slot::Ready { used, .. } => Some((k, *used)),
                    Slot::Preparing(_) => None,
                })
                .min_by_key(|(_, used)| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.tick += 1;
        self.map.insert(
            sql.to_owned(),
            Slot::Ready {
                statement: statement.clone(),
                used: self.tick,
            },
        );
    }

    /// The caller that got [`Lookup::Prepare`] failed or was dropped: the waiters are told
    /// (their receivers see the sender gone) and try themselves.
    pub(super) fn abandon(&mut self, sql: &str) {
        if let Some(Slot::Preparing(_)) = self.map.get(sql) {
            self.map.remove(sql);
        }
    }

    /// Forgets a statement the server no longer knows.
    pub(super) fn remove(&mut self, sql: &str) {
        if let Some(Slot::Ready { .. }) = self.map.get(sql) {
            self.map.remove(sql);
        }
    }

    pub(super) fn ready_len(&self) -> usize {
        self.map
            .values()
            .filter(|s| matches!(s, Slot::Ready { .. }))
            .count()
    }
}
