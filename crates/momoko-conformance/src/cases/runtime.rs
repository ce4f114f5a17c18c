//! The executor contract itself, without a database.

use std::time::Duration;

use futures::channel::oneshot;

use crate::Ctx;

/// A spawned task runs to completion although nobody keeps a handle to it.
pub async fn spawn_detaches(ctx: &Ctx) {
    let (tx, rx) = oneshot::channel();
    let executor = ctx.executor.clone();
    ctx.executor.spawn(Box::pin(async move {
        // Yield through the timer once so the task must be polled again after spawn returned.
        executor.sleep(Duration::from_millis(1)).await;
        let _ = tx.send(42u32);
    }));
    assert_eq!(rx.await.expect("the detached task ran"), 42);
}

/// A sleep never ends early by the executor's own clock, and a much shorter sleep started at
/// the same time ends first.
pub async fn sleep_orders_wakeups(ctx: &Ctx) {
    let start = ctx.executor.now();
    ctx.sleep(Duration::from_millis(20)).await;
    assert!(
        ctx.executor.now() - start >= Duration::from_millis(20),
        "sleep ended early"
    );

    let (tx, rx) = futures::channel::mpsc::unbounded();
    for (label, ms) in [("long", 400u64), ("short", 1)] {
        let tx = tx.clone();
        let executor = ctx.executor.clone();
        ctx.executor.spawn(Box::pin(async move {
            executor.sleep(Duration::from_millis(ms)).await;
            let _ = tx.unbounded_send(label);
        }));
    }
    drop(tx);
    use futures::StreamExt;
    let order: Vec<&str> = rx.collect().await;
    assert_eq!(order, ["short", "long"]);
}

/// The clock does not go backwards and advances across a sleep.
pub async fn now_is_monotonic(ctx: &Ctx) {
    let a = ctx.executor.now();
    ctx.sleep(Duration::from_millis(5)).await;
    let b = ctx.executor.now();
    assert!(b > a, "now() advanced across a 5 ms sleep");
}
