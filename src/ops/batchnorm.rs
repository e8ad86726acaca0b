//! Batch norm op (to be written).
