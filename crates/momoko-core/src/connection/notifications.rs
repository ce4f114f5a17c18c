//! Where a session's asynchronous notifications (`NOTIFY`) go: nowhere, until a
//! [`Listener`](crate::Listener) subscribes on its dedicated connection. The session's I/O task
//! hands each one over as it reads it, and closes the channel when the session ends, which is
//! how the listener learns that its connection is gone.

use std::sync::{Mutex, PoisonError};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use tokio_postgres::Notification;

/// The receiving end a listener subscribed, if any.
#[derive(Debug, Default)]
pub(crate) struct Notifications {
    sender: Mutex<Option<UnboundedSender<Notification>>>,
    /// Set when the session ended: a later subscriber gets a closed channel at once.
    ended: Mutex<bool>,
}

impl Notifications {
    /// Subscribes: every notification read from now on goes to the returned receiver, which
    /// ends when the session does.
    pub(crate) fn subscribe(&self) -> UnboundedReceiver<Notification> {
        let (tx, rx) = unbounded();
        let ended = *self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if !ended {
            *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        }
        rx
    }

    /// The I/O task read a notification.
    pub(crate) fn deliver(&self, notification: Notification) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        match sender.as_ref() {
            Some(tx) => {
                // A receiver dropped meanwhile only means nobody listens any more.
                let _ = tx.unbounded_send(notification);
            }
            None => tracing::debug!(
                target: "momoko",
                channel = notification.channel(),
                "notification on a connection nobody listens on; dropped"
            ),
        }
    }

    /// The session ended: the subscriber's stream ends.
    pub(crate) fn end(&self) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}
