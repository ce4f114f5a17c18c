//! Through a real pgbouncer in transaction mode (Debian's 1.18, which does not track prepared
//! statements): with `transaction_pooler` on, no statement relies on session state.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;
use momoko_core::{Error, Pool};
use momoko_testkit::{PgBouncer, PgBouncerOptions};

use crate::support::{drop_off_thread, off_thread};
use crate::Ctx;

/// A pgbouncer in transaction mode in front of the case's cluster, with fewer server
/// connections than the pool has client connections, so consecutive transactions of one client
/// land on different server sessions.
async fn pgbouncer(ctx: &Ctx, server_connections: u32) -> PgBouncer {
    let cluster = ctx.db.cluster().handle();
    off_thread(move || {
        let mut options = PgBouncerOptions::default();
        options.default_pool_size = server_connections;
        PgBouncer::start(&cluster, options)
    })
    .await
    .expect("start pgbouncer (apt-get install pgbouncer); the shared cluster must be the kit's")
}

/// 16 tasks of mixed statements (parameterised reads, writes, transactions, `callproc`,
/// `mogrify`, a multi-statement string) through pgbouncer in transaction mode: with
/// `transaction_pooler`, none fails, and none sees "prepared statement … does not exist".
pub async fn pgbouncer_transaction_mode_serves_mixed_load(ctx: &Ctx) {
    let bouncer = pgbouncer(ctx, 2).await;
    let dsn = bouncer.dsn(ctx.db.name());
    let pool = Pool::builder(&dsn, ctx.executor.clone())
        .size(8)
        .transaction_pooler(true)
        .connect()
        .await
        .unwrap();
    pool.execute(
        "CREATE TABLE pooled (id bigint PRIMARY KEY, note text, at timestamptz DEFAULT now())",
        &[],
    )
    .await
    .unwrap();
    pool.execute(
        "CREATE FUNCTION pooled_count(min bigint) RETURNS bigint LANGUAGE sql \
         AS 'SELECT count(*) FROM pooled WHERE id >= min'",
        &[],
    )
    .await
    .unwrap();
    let next = AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let task = |t: u64| {
        let (pool, next, failures) = (&pool, &next, &failures);
        async move {
            for i in 0..20u64 {
                let id = i64::try_from(next.fetch_add(1, Ordering::SeqCst)).unwrap();
                let note = format!("task {t} step {i}");
                let r: Result<(), Error> = async {
                    match i % 5 {
                        0 => {
                            pool.execute(
                                "INSERT INTO pooled (id, note) VALUES ($1, $2)",
                                &[&id, &note],
                            )
                            .await?;
                        }
                        1 => {
                            pool.transaction([
                                (
                                    "INSERT INTO pooled (id, note) VALUES ($1, $2)",
                                    &[&id as momoko_core::Param<'_>, &note][..],
                                )
                                    .into(),
                                (
                                    "UPDATE pooled SET note = note || '!' WHERE id = $1",
                                    &[&id as momoko_core::Param<'_>][..],
                                )
                                    .into(),
                            ])
                            .await?;
                        }
                        2 => {
                            let c = pool
                                .execute("SELECT count(*) FROM pooled WHERE id <= $1", &[&id])
                                .await?;
                            let _: i64 = c.scalar()?;
                        }
                        3 => {
                            let c = pool.callproc("pooled_count", &[&id]).await?;
                            let _: i64 = c.scalar()?;
                        }
                        _ => {
                            let sql = pool
                                .mogrify("SELECT $1::bigint, $2::text", &[&id, &note])
                                .await?;
                            pool.execute(&format!("{sql}; SELECT 1"), &[]).await?;
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = r {
                    failures.lock().unwrap().push(format!("{e}"));
                }
            }
        }
    };
    join_all((0..16).map(task)).await;
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} statements failed through pgbouncer: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // No named statement was left on the server session this lands on.
    let named: i64 = pool
        .execute("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(named, 0);
    // What needs prepared statements or a session is refused, clearly.
    let Err(e) = pool.execute_stream("SELECT 1", &[]).await else {
        panic!("a row stream behind a transaction pooler");
    };
    assert_eq!(e.kind(), momoko_core::ErrorKind::Usage, "{e}");
    let Err(e) = pool.listener().await else {
        panic!("a listener behind a transaction pooler");
    };
    assert_eq!(e.kind(), momoko_core::ErrorKind::Usage, "{e}");
    pool.close().await;
    // setsession needs a session: refused, clearly.
    let e = Pool::builder(&dsn, ctx.executor.clone())
        .transaction_pooler(true)
        .setsession(["SET TIME ZONE 'UTC'"])
        .build()
        .expect_err("setsession behind a transaction pooler");
    assert!(
        e.is_config() && e.to_string().contains("transaction_pooler"),
        "{e}"
    );
    drop_off_thread(bouncer).await;
}
