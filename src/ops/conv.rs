//! 2-D convolution op (to be written).
