//! The whole conformance suite on tokio (multi-threaded runtime, two workers).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(future)
}

momoko_conformance::conformance_suite!(
    executor: momoko_tokio::TokioExecutor::shared(),
    block_on: block_on,
);

/// The suite again, every case's connections going through pgbouncer in transaction mode.
mod through_pgbouncer {
    use super::block_on;

    momoko_conformance::conformance_suite!(
        executor: momoko_tokio::TokioExecutor::shared(),
        block_on: block_on,
        through_pgbouncer,
    );
}
