//! The whole conformance suite on smol.

momoko_conformance::conformance_suite!(
    executor: momoko_smol::SmolExecutor::shared(),
    block_on: smol::block_on,
);
