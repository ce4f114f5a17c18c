//! momoko connections in a deadpool pool: the manager opens them with momoko (any executor)
//! and recycles them by their exact state.

use momoko_core::deadpool::{Manager, Pool};
use momoko_core::{Queryable, TransactionStatus};

use crate::support::{backend_pid, eventually, scalar};
use crate::Ctx;

/// A connection returned inside a transaction is rolled back and reused (same backend); a
/// connection whose session ended is not recycled and deadpool opens another; `setsession`
/// runs on each new connection; a deadpool object is `Queryable`.
pub async fn deadpool_manager_recycles_by_exact_state(ctx: &Ctx) {
    let manager = Manager::new(&ctx.dsn(), ctx.executor.clone())
        .unwrap()
        .setsession(["SET application_name = 'momoko-deadpool'"]);
    let pool = Pool::builder(manager).max_size(2).build().unwrap();
    let observer = ctx.connect().await;

    let conn = pool.get().await.unwrap();
    conn.batch_execute("CREATE TABLE dp (n int)").await.unwrap();
    let pid = backend_pid(&conn).await;
    let name: String = conn
        .fetch_scalar("SELECT current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(name, "momoko-deadpool");

    // Left inside a transaction: rolled back, then reused.
    conn.batch_execute("BEGIN; INSERT INTO dp VALUES (1)")
        .await
        .unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::InTransaction);
    drop(conn);
    let conn = pool.get().await.unwrap();
    assert_eq!(backend_pid(&conn).await, pid, "recycled, not replaced");
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    conn.execute("INSERT INTO dp VALUES (2)", &[])
        .await
        .unwrap();
    let n: i64 = scalar(&observer, "SELECT count(*) FROM dp", &[]).await;
    assert_eq!(
        n, 1,
        "the open transaction was rolled back; the next insert committed"
    );

    // A session that ended is not recycled.
    let killed: bool = scalar(&observer, "SELECT pg_terminate_backend($1)", &[&pid]).await;
    assert!(killed);
    eventually(ctx, "the connection sees its end", || conn.is_closed()).await;
    drop(conn);
    let conn = pool.get().await.unwrap();
    assert_ne!(backend_pid(&conn).await, pid, "a new connection");
    let n: i64 = conn
        .fetch_scalar("SELECT count(*) FROM dp", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let status = pool.status();
    assert_eq!((status.size, status.available), (1, 1), "{status:?}");
}
