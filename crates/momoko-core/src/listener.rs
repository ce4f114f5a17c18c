//! LISTEN/NOTIFY: a [`Listener`] on a connection of its own, which comes back by itself after
//! the connection is lost and says that notifications may have been missed meanwhile.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::sql;

/// A notification: its channel, its payload, and the server process that sent it.
pub use tokio_postgres::Notification;

/// What a [`Listener`] receives.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A notification on one of the channels listened to.
    Notification(Notification),
    /// The listener's connection was lost and has been replaced; the new one listens to every
    /// channel again. Notifications sent while it was down are lost: re-read whatever state
    /// they would have announced.
    Reconnected {
        /// From the moment the loss was noticed to the moment every channel was listened to
        /// again.
        down_for: Duration,
    },
}

/// LISTEN/NOTIFY on a dedicated connection (compare sqlx's `PgListener`, psycopg's
/// `notifies()`), opened with a pool's settings (connection options, `setsession`) but not taken
/// from the pool: a listening session is never handed to anyone else.
///
/// Listen to channels with [`listen`](Listener::listen), then receive with
/// [`recv`](Listener::recv) or as a [`Stream`] ([`into_stream`](Listener::into_stream)). When
/// the connection is lost (a server restart, a network failure), the listener reconnects by
/// itself, every `reconnect_interval` of the pool until it succeeds, listens to every channel
/// again, and then yields [`ListenerEvent::Reconnected`]: notifications sent in the gap were
/// not received.
///
/// Notifications are queued in memory until received; a listener nobody reads from grows.
///
/// ```no_run
/// # async fn demo(pool: &momoko_core::Pool) -> momoko_core::Result<()> {
/// use momoko_core::ListenerEvent;
/// let mut listener = pool.listener().await?;
/// listener.listen("jobs").await?;
/// loop {
///     match listener.recv().await? {
///         ListenerEvent::Notification(n) => println!("{}: {}", n.channel(), n.payload()),
///         ListenerEvent::Reconnected { .. } => println!("may have missed some; re-reading"),
///         _ => {}
///     }
/// }
/// # }
/// ```
pub struct Listener {
    pool: Pool,
    live: Option<Live>,
    /// Channels listened to, exactly as given.
    channels: BTreeSet<String>,
    /// When the loss of the connection was noticed, until the `Reconnected` event is out.
    lost_at: Option<Instant>,
}

/// The current connection and its notifications.
struct Live {
    conn: Connection,
    notifications: UnboundedReceiver<Notification>,
}

impl Listener {
    /// Opens a listener with `pool`'s settings.
    ///
    /// # Errors
    ///
    /// As [`Connection::connect`], and a failing `setsession` statement.
    pub(crate) async fn open(pool: &Pool) -> Result<Listener> {
        let live = connect(pool).await?;
        Ok(Listener {
            pool: pool.clone(),
            live: Some(live),
            channels: BTreeSet::new(),
            lost_at: None,
        })
    }

    /// Listens to `channel` (its name exactly as given, as `pg_notify` takes it; case counts).
    /// Listening to a channel twice is harmless.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Parameter`](crate::ErrorKind::Parameter) for an empty name or one with a
    /// NUL byte. A lost connection is not an error: the channel is listened to when the
    /// listener reconnects.
    pub async fn listen(&mut self, channel: &str) -> Result<()> {
        let quoted = sql::quote_identifier(channel)?;
        self.channels.insert(channel.to_owned());
        self.send(&format!("LISTEN {quoted}")).await
    }

    /// Stops listening to `channel`.
    ///
    /// # Errors
    ///
    /// As [`listen`](Listener::listen).
    pub async fn unlisten(&mut self, channel: &str) -> Result<()> {
        let quoted = sql::quote_identifier(channel)?;
        self.channels.remove(channel);
        self.send(&format!("UNLISTEN {quoted}")).await
    }

    /// Stops listening to every channel.
    ///
    /// # Errors
    ///
    /// Only errors the server reports (a lost connection is not one).
    pub async fn unlisten_all(&mut self) -> Result<()> {
        self.channels.clear();
        self.send("UNLISTEN *").await
    }

    /// The channels listened to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(String::as_str)
    }

    /// Whether the listener's connection is up (as far as it knows).
    pub fn is_connected(&self) -> bool {
        self.live.as_ref().is_some_and(|l| !l.conn.is_closed())
    }

    /// Waits for the next notification, or for the news that the connection was lost and
    /// replaced (see [`ListenerEvent::Reconnected`]). While the database is unreachable it
    /// keeps trying, every `reconnect_interval` of the pool.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PoolClosed`](crate::ErrorKind::PoolClosed) when the connection must be
    /// replaced after the pool was closed.
    pub async fn recv(&mut self) -> Result<ListenerEvent> {
        loop {
            let Some(live) = &mut self.live else {
                return self.reconnect().await;
            };
            match live.notifications.next().await {
                Some(n) => return Ok(ListenerEvent::Notification(n)),
                None => self.lose("the connection ended"),
            }
        }
    }

    /// The listener as a stream of events (see [`recv`](Listener::recv)).
    pub fn into_stream(self) -> impl Stream<Item = Result<ListenerEvent>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut listener = state?;
            match listener.recv().await {
                Ok(event) => Some((Ok(event), Some(listener))),
                // After an error (the pool is closed) the stream ends.
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// Sends `sql` on the live connection, if any; a lost connection is noted for `recv`.
    async fn send(&mut self, sql: &str) -> Result<()> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        match live.conn.batch_execute(sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_lost() => {
                self.lose(&e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn lose(&mut self, why: &str) {
        if self.live.take().is_some() {
            warn!(target: "momoko", reason = why, "the listener's connection was lost; reconnecting");
            self.lost_at = Some(self.pool.executor().now());
        }
    }

    /// Opens a new connection and listens to every channel again, retrying every
    /// `reconnect_interval`.
    async fn reconnect(&mut self) -> Result<ListenerEvent> {
        let executor = std::sync::Arc::clone(self.pool.executor());
        let lost_at = *self.lost_at.get_or_insert_with(|| executor.now());
        let mut attempts = 0u64;
        loop {
            if self.pool.is_closed() {
                return Err(Error::pool_closed());
            }
            attempts += 1;
            match self.resubscribed().await {
                Ok(live) => {
                    self.live = Some(live);
                    self.lost_at = None;
                    let down_for = executor.now().saturating_duration_since(lost_at);
                    debug!(target: "momoko", attempts, ?down_for, "the listener reconnected");
                    return Ok(ListenerEvent::Reconnected { down_for });
                }
                Err(e) => {
                    debug!(target: "momoko", error = %e, attempts, "the listener could not reconnect yet");
                    executor.sleep(self.pool.config().reconnect_interval).await;
                }
            }
        }
    }

    /// A new connection listening to every channel.
    async fn resubscribed(&self) -> Result<Live> {
        let live = connect(&self.pool).await?;
        if !self.channels.is_empty() {
            let statements = self
                .channels
                .iter()
                .map(|c| sql::quote_identifier(c).map(|q| format!("LISTEN {q}")))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            live.conn.batch_execute(&statements.join("; ")).await?;
        }
        Ok(live)
    }
}

/// A dedicated connection with the pool's settings, subscribed to its notifications.
async fn connect(pool: &Pool) -> Result<Live> {
    let conn = pool.connect_dedicated().await?;
    let notifications = conn.notifications();
    Ok(Live {
        conn,
        notifications,
    })
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("channels", &self.channels)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}
