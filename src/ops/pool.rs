//! Pooling ops (to be written).
