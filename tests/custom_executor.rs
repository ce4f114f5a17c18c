//! The whole conformance suite on a hand-made runtime (a `futures` thread pool with async-io's
//! reactor and timers), the same [`Executor`](momoko::Executor) `examples/custom_executor.rs`
//! runs: proof that a runtime none of the backends provide works by implementing the trait.

#[path = "../examples/support/custom_runtime.rs"]
mod custom_runtime;

momoko_conformance::conformance_suite!(
    executor: crate::custom_runtime::CustomExecutor::shared(),
    block_on: futures::executor::block_on,
);
