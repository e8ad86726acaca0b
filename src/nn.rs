//! Layers that own their parameters (pending: waits for the conv and batch-norm ops).
