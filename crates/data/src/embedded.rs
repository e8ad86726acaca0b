//! The Fashion-MNIST test set, compiled into the binary so that `bayesnas` runs from any
//! directory without a download. The files live in `data/fashion-mnist-test/` at the
//! repository root (MIT, (c) 2017 Zalando SE: see the COPYRIGHT file there).

/// Name shown in error messages for the embedded images file.
pub const IMAGES_NAME: &str = "<embedded>/fashion-mnist-test/t10k-images-idx3-ubyte.gz";
/// Name shown in error messages for the embedded labels file.
pub const LABELS_NAME: &str = "<embedded>/fashion-mnist-test/t10k-labels-idx1-ubyte.gz";

/// gzip-compressed IDX images (10,000 x 28 x 28).
pub const IMAGES_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-test/t10k-images-idx3-ubyte.gz");
/// gzip-compressed IDX labels (10,000).
pub const LABELS_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-test/t10k-labels-idx1-ubyte.gz");
