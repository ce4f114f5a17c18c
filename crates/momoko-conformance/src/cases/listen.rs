//! LISTEN/NOTIFY: a listener on its own connection receives the notifications of the channels
//! it listens to, and after its connection is lost (a terminated backend, a server restart) it
//! comes back by itself and reports the gap.

use std::time::Duration;

use futures::StreamExt;
use momoko_core::{Listener, ListenerEvent, Pool};
use momoko_testkit::{ClusterOptions, StopMode};

use crate::support::{assert_settled, drop_off_thread, private_cluster, within};
use crate::Ctx;

/// Sends a notification through the pool, retrying while the pool heals after a restart.
async fn notify(ctx: &Ctx, pool: &Pool, channel: &str, payload: &str) {
    for _ in 0..300 {
        match pool
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_connection_lost() || e.is_database_not_available() => {
                ctx.sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("pg_notify: {e}"),
        }
    }
    panic!("pg_notify({channel}) kept failing");
}

/// The next event, within a liveness bound.
async fn next(ctx: &Ctx, listener: &mut Listener) -> ListenerEvent {
    within(
        ctx,
        Duration::from_secs(60),
        "the next listener event",
        listener.recv(),
    )
    .await
    .expect("the listener's next event")
}

/// The next event, which must be a notification: (channel, payload).
async fn next_notification(ctx: &Ctx, listener: &mut Listener) -> (String, String) {
    match next(ctx, listener).await {
        ListenerEvent::Notification(n) => (n.channel().to_owned(), n.payload().to_owned()),
        other => panic!("expected a notification, got {other:?}"),
    }
}

fn pair(channel: &str, payload: &str) -> (String, String) {
    (channel.to_owned(), payload.to_owned())
}

/// Notifications of the channels listened to arrive in order, channel names exactly as given;
/// other channels, unlistened ones and rolled-back notifications never arrive; the listener's
/// connection is not one of the pool's.
pub async fn listener_receives_its_channels(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    let mut listener = pool.listener().await.unwrap();
    listener.listen("jobs").await.unwrap();
    listener.listen("Mixed Case").await.unwrap();
    listener.listen("jobs").await.unwrap();
    assert_eq!(
        listener.channels().collect::<Vec<_>>(),
        ["Mixed Case", "jobs"]
    );
    assert!(listener.is_connected());
    let e = listener.listen("").await.unwrap_err();
    assert!(e.is_parameter(), "{e:?}");

    notify(ctx, &pool, "jobs", "a").await;
    notify(ctx, &pool, "nobody", "x").await;
    notify(ctx, &pool, "Mixed Case", "b").await;
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("jobs", "a")
    );
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("Mixed Case", "b")
    );

    // Only committed notifications are delivered.
    let tx = pool.begin().await.unwrap();
    tx.execute("SELECT pg_notify('jobs', 'rolled back')", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    listener.unlisten("Mixed Case").await.unwrap();
    notify(ctx, &pool, "Mixed Case", "not listened").await;
    notify(ctx, &pool, "jobs", "c").await;
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("jobs", "c")
    );

    assert_eq!(pool.status().total, 1, "the listener is not the pool's");
    listener.unlisten_all().await.unwrap();
    listener.listen("stream").await.unwrap();
    let mut events = listener.into_stream().boxed();
    notify(ctx, &pool, "stream", "d").await;
    match within(
        ctx,
        Duration::from_secs(60),
        "a streamed event",
        events.next(),
    )
    .await
    {
        Some(Ok(ListenerEvent::Notification(n))) => assert_eq!(n.payload(), "d"),
        other => panic!("expected a notification, got {other:?}"),
    }
    drop(events);
    assert_settled(ctx, &pool).await;
}

/// The listener's connection is lost twice: its backend terminated (the server stays up, and a
/// notification sent before the listener noticed is missed), then the server restarted. Each
/// time the listener reconnects with the pool's settings, listens again, reports the gap
/// (`Reconnected`) before any later notification, and receives the notifications sent after.
pub async fn listener_reconnects_and_reports_the_gap(ctx: &Ctx) {
    let cluster = private_cluster(ClusterOptions::default()).await;
    let pool = Pool::builder(&cluster.dsn("postgres"), ctx.executor.clone())
        .size(1)
        .reconnect_interval(Duration::from_millis(100))
        .setsession(["SET application_name = 'momoko-listener-case'"])
        .connect()
        .await
        .unwrap();
    let mut listener = pool.listener().await.unwrap();
    listener.listen("events").await.unwrap();
    notify(ctx, &pool, "events", "1").await;
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("events", "1")
    );

    // Its backend terminated; a notification is sent before the listener notices (once the
    // backend is gone: a backend being terminated can still deliver one).
    let pid: i32 = pool
        .execute(
            "SELECT pid FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .scalar()
        .unwrap();
    pool.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    for _ in 0..1500 {
        let alive: i64 = pool
            .execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .scalar()
            .unwrap();
        if alive == 0 {
            break;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    notify(ctx, &pool, "events", "missed").await;
    match next(ctx, &mut listener).await {
        ListenerEvent::Reconnected { down_for } => {
            eprintln!("listener_reconnects_and_reports_the_gap: back after {down_for:?} (terminated backend)");
        }
        other => panic!("expected the gap first, got {other:?}"),
    }
    notify(ctx, &pool, "events", "2").await;
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("events", "2")
    );
    // The new connection has the pool's settings.
    let named: i64 = pool
        .execute(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND application_name = 'momoko-listener-case'",
            &[],
        )
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(named, 1, "setsession ran on the listener's connection");

    // A server restart while the listener waits: it notices the end, fails to reconnect while
    // the server is down (every reconnect_interval), and comes back once it is up.
    let outage = async {
        cluster.stop(StopMode::Fast).await.expect("stop the server");
        ctx.sleep(Duration::from_millis(500)).await;
        cluster.start().await.expect("start the server");
    };
    let (event, ()) = futures::join!(next(ctx, &mut listener), outage);
    match event {
        ListenerEvent::Reconnected { down_for } => {
            eprintln!(
                "listener_reconnects_and_reports_the_gap: back after {down_for:?} (server restart)"
            );
        }
        other => panic!("expected the gap first, got {other:?}"),
    }
    assert!(listener.is_connected());
    notify(ctx, &pool, "events", "3").await;
    assert_eq!(
        next_notification(ctx, &mut listener).await,
        pair("events", "3")
    );

    pool.close().await;
    let e = within(ctx, Duration::from_secs(60), "recv after close", async {
        cluster.stop(StopMode::Fast).await.expect("stop the server");
        listener.recv().await
    })
    .await
    .unwrap_err();
    assert!(e.is_pool_closed(), "{e:?}");
    drop(listener);
    drop_off_thread(cluster).await;
}
