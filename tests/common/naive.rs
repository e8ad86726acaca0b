//! Naive f64 forward references of the network ops, written for clarity only (the GGN oracle
//! composes them into a whole network).
#![allow(dead_code, clippy::too_many_arguments)]

/// NCHW f64 tensor.
#[derive(Clone, Debug)]
pub struct T {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub d: Vec<f64>,
}

impl T {
    pub fn new(n: usize, c: usize, h: usize, w: usize, d: Vec<f64>) -> T {
        assert_eq!(d.len(), n * c * h * w);
        T { n, c, h, w, d }
    }
    pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> T {
        T::new(n, c, h, w, vec![0.0; n * c * h * w])
    }
    pub fn at(&self, n: usize, c: usize, i: usize, j: usize) -> f64 {
        self.d[((n * self.c + c) * self.h + i) * self.w + j]
    }
    pub fn idx(&self, n: usize, c: usize, i: usize, j: usize) -> usize {
        ((n * self.c + c) * self.h + i) * self.w + j
    }
}

/// Convolution, weight `[co, ci/groups, k, k]`.
pub fn conv2d(
    x: &T,
    wt: &[f64],
    co: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
) -> T {
    let ho = (x.h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    let wo = (x.w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    let cig = x.c / groups;
    let cog = co / groups;
    let mut y = T::zeros(x.n, co, ho, wo);
    for n in 0..x.n {
        for o in 0..co {
            let g = o / cog;
            for i in 0..ho {
                for j in 0..wo {
                    let mut s = 0.0;
                    for ci in 0..cig {
                        for a in 0..k {
                            for b in 0..k {
                                let ii = (i * stride + a * dil) as isize - pad as isize;
                                let jj = (j * stride + b * dil) as isize - pad as isize;
                                if ii < 0 || jj < 0 || ii >= x.h as isize || jj >= x.w as isize {
                                    continue;
                                }
                                s += x.at(n, g * cig + ci, ii as usize, jj as usize)
                                    * wt[((o * cig + ci) * k + a) * k + b];
                            }
                        }
                    }
                    let id = y.idx(n, o, i, j);
                    y.d[id] = s;
                }
            }
        }
    }
    y
}

/// Training-mode batch norm without affine parameters (biased batch variance).
pub fn batch_norm(x: &T, eps: f64) -> T {
    let mut y = x.clone();
    let m = (x.n * x.h * x.w) as f64;
    for c in 0..x.c {
        let mut mean = 0.0;
        for n in 0..x.n {
            for i in 0..x.h {
                for j in 0..x.w {
                    mean += x.at(n, c, i, j);
                }
            }
        }
        mean /= m;
        let mut var = 0.0;
        for n in 0..x.n {
            for i in 0..x.h {
                for j in 0..x.w {
                    var += (x.at(n, c, i, j) - mean).powi(2);
                }
            }
        }
        var /= m;
        for n in 0..x.n {
            for i in 0..x.h {
                for j in 0..x.w {
                    let id = x.idx(n, c, i, j);
                    y.d[id] = (x.d[id] - mean) / (var + eps).sqrt();
                }
            }
        }
    }
    y
}

pub fn relu(x: &T) -> T {
    let mut y = x.clone();
    y.d.iter_mut().for_each(|v| *v = v.max(0.0));
    y
}

/// Max pool (k, stride, pad); padding never wins.
pub fn max_pool(x: &T, k: usize, stride: usize, pad: usize) -> T {
    pool(x, k, stride, pad, |win| {
        win.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
    })
}

/// Average pool excluding padding from the count.
pub fn avg_pool(x: &T, k: usize, stride: usize, pad: usize) -> T {
    pool(x, k, stride, pad, |win| {
        win.iter().fold(0.0, |s, &v| s + v) / win.len() as f64
    })
}

/// Pooling (k, stride, pad): `reduce` of the in-image values of each window, in row-major
/// window order.
fn pool(x: &T, k: usize, stride: usize, pad: usize, reduce: impl Fn(&[f64]) -> f64) -> T {
    let ho = (x.h + 2 * pad - k) / stride + 1;
    let wo = (x.w + 2 * pad - k) / stride + 1;
    let mut y = T::zeros(x.n, x.c, ho, wo);
    let mut win = Vec::with_capacity(k * k);
    for n in 0..x.n {
        for c in 0..x.c {
            for i in 0..ho {
                for j in 0..wo {
                    win.clear();
                    for a in 0..k {
                        for b in 0..k {
                            let ii = (i * stride + a) as isize - pad as isize;
                            let jj = (j * stride + b) as isize - pad as isize;
                            if ii >= 0 && jj >= 0 && (ii as usize) < x.h && (jj as usize) < x.w {
                                win.push(x.at(n, c, ii as usize, jj as usize));
                            }
                        }
                    }
                    let id = y.idx(n, c, i, j);
                    y.d[id] = reduce(&win);
                }
            }
        }
    }
    y
}

/// `[N, C, H, W] -> [N, C]` means (returned as flat `N*C`).
pub fn global_avg_pool(x: &T) -> Vec<f64> {
    let mut y = vec![0.0; x.n * x.c];
    for n in 0..x.n {
        for c in 0..x.c {
            let mut s = 0.0;
            for i in 0..x.h {
                for j in 0..x.w {
                    s += x.at(n, c, i, j);
                }
            }
            y[n * x.c + c] = s / (x.h * x.w) as f64;
        }
    }
    y
}

/// `y = x W^T + b`, `x: [B, din]`, `W: [dout, din]`.
pub fn linear(x: &[f64], w: &[f64], b: &[f64], bsz: usize, din: usize, dout: usize) -> Vec<f64> {
    let mut y = vec![0.0; bsz * dout];
    for n in 0..bsz {
        for o in 0..dout {
            let mut s = b[o];
            for i in 0..din {
                s += x[n * din + i] * w[o * din + i];
            }
            y[n * dout + o] = s;
        }
    }
    y
}

/// Elementwise sum with coefficients.
pub fn weighted_sum(xs: &[&T], coef: &[f64]) -> T {
    let mut y = T::zeros(xs[0].n, xs[0].c, xs[0].h, xs[0].w);
    for (x, &c) in xs.iter().zip(coef) {
        for (a, b) in y.d.iter_mut().zip(&x.d) {
            *a += c * b;
        }
    }
    y
}

/// Channel concat.
pub fn concat(xs: &[&T]) -> T {
    let c: usize = xs.iter().map(|x| x.c).sum();
    let (n, h, w) = (xs[0].n, xs[0].h, xs[0].w);
    let mut d = Vec::with_capacity(n * c * h * w);
    for ni in 0..n {
        for x in xs {
            d.extend_from_slice(&x.d[ni * x.c * h * w..(ni + 1) * x.c * h * w]);
        }
    }
    T::new(n, c, h, w, d)
}

/// Per-channel biased batch statistics `(mean, var)` of `x` over N, H, W (the statistics
/// `batch_norm` uses).
pub fn batch_norm_stats(x: &T) -> (Vec<f64>, Vec<f64>) {
    let m = (x.n * x.h * x.w) as f64;
    let (mut mean, mut var) = (vec![0.0; x.c], vec![0.0; x.c]);
    for c in 0..x.c {
        for n in 0..x.n {
            for i in 0..x.h {
                for j in 0..x.w {
                    mean[c] += x.at(n, c, i, j);
                }
            }
        }
        mean[c] /= m;
        for n in 0..x.n {
            for i in 0..x.h {
                for j in 0..x.w {
                    var[c] += (x.at(n, c, i, j) - mean[c]).powi(2);
                }
            }
        }
        var[c] /= m;
    }
    (mean, var)
}

/// Batch norm without affine parameters using the given per-channel `mean` and `var` (a fixed
/// affine map of `x`, e.g. frozen statistics from another forward pass).
pub fn batch_norm_fixed(x: &T, mean: &[f64], var: &[f64], eps: f64) -> T {
    assert_eq!(mean.len(), x.c);
    assert_eq!(var.len(), x.c);
    let mut y = x.clone();
    for n in 0..x.n {
        for c in 0..x.c {
            let inv = 1.0 / (var[c] + eps).sqrt();
            for i in 0..x.h {
                for j in 0..x.w {
                    let id = x.idx(n, c, i, j);
                    y.d[id] = (x.d[id] - mean[c]) * inv;
                }
            }
        }
    }
    y
}
