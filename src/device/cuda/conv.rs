//! Convolutions (`kernels/depthwise.cu`, `kernels/conv_direct.cu`, im2col + cuBLAS).

use cudarc::driver::LaunchConfig;

use super::elementwise::ew;
use super::params::*;
use super::{elem_at, i32c, i64c, CudaBackend, TARGET_BLOCKS};
use crate::device::{shape, Backend, Conv2dSpec};
use crate::error::{shape_err, Result};
use crate::tensor::{numel, Tensor};

/// Largest `col(X)` buffer of the im2col path, in f32 (the batch is processed in chunks).
const COL_BUDGET: usize = 1 << 26;

/// Geometry of one convolution on the device.
struct ConvGeom {
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    spec: Conv2dSpec,
}

impl ConvGeom {
    fn new(op: &'static str, x: &[usize], w: &[usize], spec: Conv2dSpec) -> Result<ConvGeom> {
        let c = shape::conv2d(op, x, w, spec)?;
        Ok(ConvGeom {
            n: c.n,
            cin: c.c_in,
            h: c.h,
            w: c.w,
            cout: c.c_out,
            k: c.k,
            ho: c.ho,
            wo: c.wo,
            spec,
        })
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.ho, self.wo]
    }
    fn is_depthwise(&self) -> bool {
        self.spec.groups == self.cin && self.cout == self.cin
    }
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.spec.stride == 1 && self.spec.padding == 0
    }
    fn dw(&self, square: bool) -> Result<DwParams> {
        Ok(DwParams {
            n: i64c(self.n),
            c: i64c(self.cin),
            h: i64c(self.h),
            w: i64c(self.w),
            ho: i64c(self.ho),
            wo: i64c(self.wo),
            k: i32c(self.k)?,
            stride: i32c(self.spec.stride)?,
            padding: i32c(self.spec.padding)?,
            dilation: i32c(self.spec.dilation)?,
            square_w: 0,
            square_x: square as i32,
            splits: i32c(self.dw_splits())?,
            _pad: 0,
        })
    }
    /// Sample splits of the depthwise weight gradient: about 4 blocks per SM of a large GPU
    /// in total, from the shape only (the sum order must not depend on the device).
    fn dw_splits(&self) -> usize {
        TARGET_BLOCKS
            .div_ceil(self.cin.max(1))
            .clamp(1, self.n.max(1))
    }

    fn conv(&self, n: usize, square: bool) -> Result<ConvParams> {
        Ok(ConvParams {
            n: i64c(n),
            c_in: i64c(self.cin),
            c_out: i64c(self.cout),
            h: i64c(self.h),
            w: i64c(self.w),
            ho: i64c(self.ho),
            wo: i64c(self.wo),
            k: i32c(self.k)?,
            stride: i32c(self.spec.stride)?,
            padding: i32c(self.spec.padding)?,
            dilation: i32c(self.spec.dilation)?,
            groups: i32c(self.spec.groups)?,
            square_x: square as i32,
        })
    }
    /// Rows of `col(X)` per image (`C_in k k`) and its columns (`H_out W_out`).
    fn col_dims(&self) -> (usize, usize) {
        (self.cin * self.k * self.k, self.ho * self.wo)
    }
    /// Images per im2col chunk.
    fn col_chunk(&self) -> usize {
        let (r, p) = self.col_dims();
        (COL_BUDGET / (r * p).max(1)).clamp(1, self.n)
    }
}

/// Grid of the tiled depthwise kernels: `(tiles, channels, samples)` blocks of 256 threads,
/// one block per output tile of a `rows x cols` plane (the kernels' tile rule; any
/// `gridDim.x >= 1` is correct, this one gives each block one tile).
fn dw_grid(rows: usize, cols: usize, c: usize, n: usize) -> LaunchConfig {
    let tw = if cols <= 16 { 16 } else { 32 };
    let ty = super::BLOCK as usize / tw;
    let rpt = if rows >= 4 * ty {
        4
    } else if rows >= 2 * ty {
        2
    } else {
        1
    };
    let th = ty * rpt;
    let tiles = cols.div_ceil(tw) * rows.div_ceil(th);
    LaunchConfig {
        grid_dim: (tiles.clamp(1, 1 << 16) as u32, c as u32, n as u32),
        block_dim: (super::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn expect(op: &'static str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return shape_err(op, format!("{want:?}"), t.shape());
    }
    Ok(())
}

impl CudaBackend {
    /// `col(X)` of images `[n0, n0 + cnt)` into `col` (`[cnt, C_in k k, H_out W_out]`),
    /// squared when `square`.
    fn im2col(
        &self,
        g: &ConvGeom,
        x: u64,
        n0: usize,
        cnt: usize,
        col: u64,
        sq: bool,
    ) -> Result<()> {
        let xo = elem_at::<f32>(x, n0 * g.cin * g.h * g.w);
        let (r, p) = g.col_dims();
        self.launch(
            "im2col",
            self.grid_stride(cnt * r * p),
            &[xo, col],
            &g.conv(cnt, sq)?,
        )
    }

    /// A 1x1 stride-1 unpadded convolution as one strided-batched GEMM over the images:
    /// `dst[n] = W src[n]` (`C_out x HW` from `C_in x HW`), or with `trans_w`
    /// `dst[n] = W^T src[n]` (`C_in x HW` from `C_out x HW`).
    fn pointwise_gemm(
        &self,
        g: &ConvGeom,
        trans_w: bool,
        w: u64,
        src: u64,
        dst: u64,
    ) -> Result<()> {
        let p = g.ho * g.wo;
        let (c_dst, c_src) = if trans_w {
            (g.cin, g.cout)
        } else {
            (g.cout, g.cin)
        };
        self.gemm(
            trans_w,
            false,
            (c_dst, p, c_src),
            w,
            src,
            dst,
            0.0,
            Some((g.n, 0, c_src * p, c_dst * p)),
        )
    }

    /// Runs `f(n0, cnt, col)` over the chunks `[n0, n0 + cnt)` of the batch in order, with
    /// `col` the device address of a `col(X)` scratch buffer sized for one chunk.
    fn col_chunks(
        &self,
        g: &ConvGeom,
        mut f: impl FnMut(usize, usize, u64) -> Result<()>,
    ) -> Result<()> {
        let (r, p) = g.col_dims();
        let chunk = g.col_chunk();
        let col = self.alloc(chunk * r * p)?;
        let cp = self.raw(&col);
        for n0 in (0..g.n).step_by(chunk) {
            f(n0, chunk.min(g.n - n0), cp)?;
        }
        Ok(())
    }

    fn dense_forward(&self, g: &ConvGeom, x: &Tensor, w: &Tensor, y: u64) -> Result<()> {
        let (xp, wp) = (self.ptr("conv2d x", x)?, self.ptr("conv2d w", w)?);
        if g.is_pointwise() {
            // y[n] (C_out x HW) = W (C_out x C_in) x[n] (C_in x HW), all images in one call.
            return self.pointwise_gemm(g, false, wp, xp, y);
        }
        let (r, p) = g.col_dims();
        self.col_chunks(g, |n0, cnt, cp| {
            self.im2col(g, xp, n0, cnt, cp, false)?;
            let yo = elem_at::<f32>(y, n0 * g.cout * p);
            self.gemm(
                false,
                false,
                (g.cout, p, r),
                wp,
                cp,
                yo,
                0.0,
                Some((cnt, 0, r * p, g.cout * p)),
            )
        })
    }

    fn dense_backward_input(&self, g: &ConvGeom, dy: &Tensor, w: &Tensor, dx: u64) -> Result<()> {
        let (dp, wp) = (self.ptr("conv2d dy", dy)?, self.ptr("conv2d w", w)?);
        if g.is_pointwise() {
            // dx[n] (C_in x HW) = W^T dy[n].
            return self.pointwise_gemm(g, true, wp, dp, dx);
        }
        let (r, p) = g.col_dims();
        self.col_chunks(g, |n0, cnt, cp| {
            let dyo = elem_at::<f32>(dp, n0 * g.cout * p);
            self.gemm(
                true,
                false,
                (r, p, g.cout),
                wp,
                dyo,
                cp,
                0.0,
                Some((cnt, 0, g.cout * p, r * p)),
            )?;
            let dxo = elem_at::<f32>(dx, n0 * g.cin * g.h * g.w);
            self.launch(
                "col2im",
                self.grid_stride(cnt * g.cin * g.h * g.w),
                &[cp, dxo],
                &g.conv(cnt, false)?,
            )
        })
    }

    /// `dW = sum_n dy[n] col(x[n])^T`: per-image products in one strided-batched GEMM, then
    /// their sum over the images as one more GEMM with a ones vector (cuBLAS' fixed order:
    /// deterministic); chunks of images accumulate into `dW` in order.
    fn dense_backward_weight(
        &self,
        g: &ConvGeom,
        x: &Tensor,
        dy: &Tensor,
        dw: u64,
        square: bool,
    ) -> Result<()> {
        let (xp, dp) = (self.ptr("conv2d x", x)?, self.ptr("conv2d dy", dy)?);
        let (r, p) = g.col_dims();
        // A 1x1 stride-1 unpadded convolution reads `x` itself as col(X) (unless squared).
        let direct = g.is_pointwise() && !square;
        let by_products = (COL_BUDGET / (g.cout * r).max(1)).clamp(1, g.n);
        let chunk = if direct {
            by_products
        } else {
            g.col_chunk().min(by_products)
        };
        let col = if direct {
            None
        } else {
            Some(self.alloc(chunk * r * p)?)
        };
        let per_image = self.alloc(chunk * g.cout * r)?;
        let pi = self.raw(&per_image);
        let ones = self.ones(chunk)?;
        let mut n0 = 0;
        while n0 < g.n {
            let cnt = chunk.min(g.n - n0);
            let cp = match &col {
                None => elem_at::<f32>(xp, n0 * r * p),
                Some(c) => {
                    let cp = self.raw(c);
                    if g.is_pointwise() {
                        // col(X) = X: copy and square.
                        let len = cnt * r * p;
                        let xo = elem_at::<f32>(xp, n0 * r * p);
                        let cfg = self.grid_stride(len);
                        self.launch("ew_unary", cfg, &[xo, cp], &ew(len, EW_UNARY_SQUARE, 0.0))?;
                    } else {
                        self.im2col(g, xp, n0, cnt, cp, square)?;
                    }
                    cp
                }
            };
            let dyo = elem_at::<f32>(dp, n0 * g.cout * p);
            let batch = Some((cnt, g.cout * p, r * p, g.cout * r));
            self.gemm(false, true, (g.cout, r, p), dyo, cp, pi, 0.0, batch)?;
            let beta = if n0 == 0 { 0.0 } else { 1.0 };
            let op = self.raw(&ones);
            self.gemm(false, false, (1, g.cout * r, cnt), op, pi, dw, beta, None)?;
            n0 += cnt;
        }
        Ok(())
    }

    /// The correlation of `x` (squared elementwise when `square`: the weight curvature) with
    /// `dy`, summed over the batch.
    pub(super) fn weight_correlation(
        &self,
        op: &'static str,
        x: &Tensor,
        dy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
        square: bool,
    ) -> Result<Tensor> {
        let g = ConvGeom::new(op, x.shape(), w_shape, spec)?;
        expect(op, dy, &g.y_shape())?;
        let dw = self.alloc(numel(w_shape))?;
        let dwp = self.raw(&dw);
        let (xp, dp) = (self.ptr(op, x)?, self.ptr(op, dy)?);
        if g.is_depthwise() && g.k <= 7 {
            let prm = g.dw(square)?;
            let splits = prm.splits as usize;
            if splits == 1 {
                // One block per channel (kernels/README.md).
                self.launch(
                    "dw_conv_bwd_weight",
                    self.blocks(g.cin),
                    &[xp, dp, dwp],
                    &prm,
                )?;
            } else {
                // Blocks (c, split) write per-split partials, added in split order.
                let partials = self.alloc(g.cin * splits * g.k * g.k)?;
                let pp = self.raw(&partials);
                let cfg = LaunchConfig {
                    grid_dim: (g.cin as u32, splits as u32, 1),
                    block_dim: (super::BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                self.launch("dw_conv_bwd_weight_partial", cfg, &[xp, dp, pp], &prm)?;
                let cfg = self.grid_stride(numel(w_shape));
                self.launch("dw_conv_bwd_weight_finalize", cfg, &[pp, dwp], &prm)?;
            }
        } else if spec.groups == 1 {
            self.dense_backward_weight(&g, x, dy, dwp, square)?;
        } else {
            self.launch(
                "conv_bwd_weight_direct",
                self.blocks(numel(w_shape)),
                &[xp, dp, dwp],
                &g.conv(g.n, square)?,
            )?;
        }
        Ok(self.wrap(dw, w_shape))
    }
}

pub(super) fn conv2d_forward(
    be: &CudaBackend,
    x: &Tensor,
    w: &Tensor,
    spec: Conv2dSpec,
) -> Result<Tensor> {
    let g = ConvGeom::new("conv2d_forward", x.shape(), w.shape(), spec)?;
    let ys = g.y_shape();
    let y = be.alloc(numel(&ys))?;
    let yp = be.raw(&y);
    if g.is_depthwise() {
        let p = [be.ptr("conv2d x", x)?, be.ptr("conv2d w", w)?, yp];
        let cfg = dw_grid(g.ho, g.wo, g.cin, g.n);
        // k = 3 has a leaner variant (fewer registers, same results).
        let entry = if g.k == 3 {
            "dw_conv_fwd_k3"
        } else {
            "dw_conv_fwd"
        };
        be.launch(entry, cfg, &p, &g.dw(false)?)?;
    } else if spec.groups == 1 {
        be.dense_forward(&g, x, w, yp)?;
    } else {
        let p = [be.ptr("conv2d x", x)?, be.ptr("conv2d w", w)?, yp];
        be.launch(
            "conv_fwd_direct",
            be.grid_stride(numel(&ys)),
            &p,
            &g.conv(g.n, false)?,
        )?;
    }
    Ok(be.wrap(y, &ys))
}

pub(super) fn conv2d_backward_input(
    be: &CudaBackend,
    dy: &Tensor,
    w: &Tensor,
    spec: Conv2dSpec,
    x_shape: &[usize],
    square_w: bool,
) -> Result<Tensor> {
    let op = if square_w {
        "conv2d_backward_input_sq"
    } else {
        "conv2d_backward_input"
    };
    let g = ConvGeom::new(op, x_shape, w.shape(), spec)?;
    expect(op, dy, &g.y_shape())?;
    let dx = be.alloc(numel(x_shape))?;
    let dxp = be.raw(&dx);
    if g.is_depthwise() {
        // The depthwise kernel squares the weight as it loads it.
        let p = [be.ptr(op, dy)?, be.ptr(op, w)?, dxp];
        let cfg = dw_grid(g.h, g.w, g.cin, g.n);
        let prm = DwParams {
            square_w: square_w as i32,
            ..g.dw(false)?
        };
        be.launch("dw_conv_bwd_input", cfg, &p, &prm)?;
        return Ok(be.wrap(dx, x_shape));
    }
    // Dense and grouped weights: square into scratch first (one more launch).
    let w2;
    let w = if square_w {
        w2 = be.unary(w, crate::device::Unary::Square)?;
        &w2
    } else {
        w
    };
    if spec.groups == 1 {
        be.dense_backward_input(&g, dy, w, dxp)?;
    } else {
        let p = [be.ptr(op, dy)?, be.ptr(op, w)?, dxp];
        be.launch(
            "conv_bwd_input_direct",
            be.grid_stride(numel(x_shape)),
            &p,
            &g.conv(g.n, false)?,
        )?;
    }
    Ok(be.wrap(dx, x_shape))
}

/// A depthwise convolution then a pointwise one (`sep_conv_fwd`, one launch); returns `(mid,
/// y)`. A channel count whose one-position tile does not fit the kernel's shared memory
/// (more than `SEP_SMEM` channels) or a batch past the grid's y limit (65,535) takes the
/// two convolutions' own launches.
pub(super) fn depthwise_pointwise_forward(
    be: &CudaBackend,
    x: &Tensor,
    w_dw: &Tensor,
    dw_spec: Conv2dSpec,
    w_pw: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (d, p) = shape::depthwise_pointwise(x.shape(), w_dw.shape(), dw_spec, w_pw.shape())?;
    let smem = SEP_SMEM as usize;
    if d.c_in > smem || d.n > 65_535 {
        let mid = conv2d_forward(be, x, w_dw, dw_spec)?;
        let y = conv2d_forward(be, &mid, w_pw, Conv2dSpec::new())?;
        return Ok((mid, y));
    }
    let plane = d.ho * d.wo;
    // Output positions per block: as many as the shared memory holds for all channels, at
    // most 64 (a quarter of the block's threads per channel row) and at most the plane.
    let tile = (smem / d.c_in).min(64).min(plane).max(1);
    let mid = be.wrap(be.alloc(d.n * d.c_in * plane)?, &[d.n, d.c_in, d.ho, d.wo]);
    let y = be.wrap(
        be.alloc(d.n * p.c_out * plane)?,
        &[d.n, p.c_out, d.ho, d.wo],
    );
    let prm = SepParams {
        n: i64c(d.n),
        c: i64c(d.c_in),
        co: i64c(p.c_out),
        h: i64c(d.h),
        w: i64c(d.w),
        ho: i64c(d.ho),
        wo: i64c(d.wo),
        k: i32c(d.k)?,
        stride: i32c(dw_spec.stride)?,
        padding: i32c(dw_spec.padding)?,
        dilation: i32c(dw_spec.dilation)?,
        tile: i32c(tile)?,
        _pad: 0,
    };
    // gridDim.x allows 2^31 - 1 blocks: the i32 range.
    let tiles = i32c(plane.div_ceil(tile))?;
    let cfg = LaunchConfig {
        grid_dim: (tiles as u32, d.n as u32, 1),
        block_dim: (super::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let ptrs = [
        be.ptr("depthwise_pointwise x", x)?,
        be.ptr("depthwise_pointwise w_dw", w_dw)?,
        be.ptr("depthwise_pointwise w_pw", w_pw)?,
        be.ptr("mid", &mid)?,
        be.ptr("y", &y)?,
    ];
    be.launch("sep_conv_fwd", cfg, &ptrs, &prm)?;
    Ok((mid, y))
}
