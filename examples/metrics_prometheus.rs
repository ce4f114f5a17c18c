//! The pool's metrics served to Prometheus: `db.client.connection.*` (OpenTelemetry's
//! database-client names) through the `metrics` facade and metrics-exporter-prometheus.
//!
//! ```text
//! cargo run --example metrics_prometheus --features metrics
//! curl -s http://127.0.0.1:9187/metrics | grep db_client_connection
//! ```
//!
//! Prometheus writes the dots as underscores (`db_client_connection_count{...,
//! db_client_connection_state="idle"}`); the histograms are summaries by default (quantiles), or
//! histograms with `set_buckets`, as below. With `DATABASE_URL` set it uses that server;
//! otherwise it starts a throw-away PostgreSQL cluster. It runs some load, then serves until
//! Ctrl-C (or for `MOMOKO_EXAMPLE_SECONDS` seconds).

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dsn, _cluster_guard) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = momoko_testkit::test_db("metrics_prometheus");
            eprintln!("DATABASE_URL is unset: started a throw-away PostgreSQL");
            (db.dsn(), Some(db))
        }
    };

    // The recorder must be installed before the pool is built: the pool registers its metrics
    // once, with the recorder in place then.
    let addr: SocketAddr = ([127, 0, 0, 1], 9187).into();
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Seconds; the connection times of a healthy pool sit between 100 µs and a second.
        .set_buckets(&[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])?
        .install()?;

    let pool = momoko::tokio::pool(&dsn)
        .name("app")
        .size(2)
        .max_size(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    // Some load, so that every series has values.
    let calls = (0..200).map(|i| {
        let pool = pool.clone();
        async move {
            pool.execute("SELECT pg_sleep(0.002), $1::int4", &[&i])
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }
    println!("serving http://{addr}/metrics; stats: {:?}", pool.stats());

    let seconds: Option<u64> = std::env::var("MOMOKO_EXAMPLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => tokio::signal::ctrl_c().await?,
    }
    pool.close().await;
    Ok(())
}
