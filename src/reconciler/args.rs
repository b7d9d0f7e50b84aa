use clap::Args;

/// Flags of the reconciler, flattened into `serve`.
#[derive(Debug, Clone, Args)]
pub struct ReconcilerArgs {}
