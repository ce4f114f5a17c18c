//! The whole conformance suite on async-std.

momoko_conformance::conformance_suite!(
    executor: momoko_async_std::AsyncStdExecutor::shared(),
    block_on: async_std::task::block_on,
);
