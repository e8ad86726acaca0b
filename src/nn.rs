//! Layers that own their parameters in a [`ParamStore`](crate::ParamStore) (to be written).
