//! `Backend` for [`CudaBackend`]: shape checks (the CPU backend's, shared where they exist),
//! then kernel launches on the device's stream. See `kernels/README.md` for each kernel's
//! launch geometry and the layout of its reduction partials.

use super::params::{
    BnParams, ColumnsParams, ConvParams, CopyParams, DwParams, EwParams, LossParams, MixedParams,
    PoolParams, ReduceParams, SgdParams, ShiftParams,
};
use super::CudaBackend;
use crate::device::cpu::loss::check_rows;
use crate::device::cpu::{conv as cpu_conv, pool as cpu_pool};
use crate::device::{
    nchw, same_shape, shape, Backend, BatchNormForward, BatchNormGrads, Binary, Conv2dSpec, Device,
    Pool2dSpec, Unary,
};
use crate::error::{shape_err, Error, Result};
use crate::tensor::{numel, Tensor};
use cudarc::driver::LaunchConfig;

/// Most f64 partials a reduction writes (fixed, so results do not depend on the GPU model).
const REDUCE_PARTS: usize = 1024;

/// Blocks the split reductions aim for (about 4 per SM of an H100/H200); used only through
/// shape-derived split counts, so results never depend on the device.
const TARGET_BLOCKS: usize = 528;

/// Largest `col(X)` buffer of the im2col path, in f32 (the batch is processed in chunks).
const COL_BUDGET: usize = 1 << 26;

fn i32c(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Invalid(format!("cuda: size {v} exceeds the i32 range")))
}

fn i64c(v: usize) -> i64 {
    v as i64
}

fn ew(n: usize, op: i32, alpha: f32) -> EwParams {
    EwParams {
        n: n as i64,
        inner: 0,
        op,
        alpha,
    }
}

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
        let (ho, wo) = cpu_conv::out_hw(op, x, w, spec)?;
        Ok(ConvGeom {
            n: x[0],
            cin: x[1],
            h: x[2],
            w: x[3],
            cout: w[0],
            k: w[2],
            ho,
            wo,
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

fn pool_geom(
    op: &'static str,
    shape: &[usize],
    spec: Pool2dSpec,
    power: i32,
) -> Result<(PoolParams, [usize; 4])> {
    let (ho, wo) = cpu_pool::out_hw(op, shape, spec)?;
    let p = PoolParams {
        n: i64c(shape[0]),
        c: i64c(shape[1]),
        h: i64c(shape[2]),
        w: i64c(shape[3]),
        ho: i64c(ho),
        wo: i64c(wo),
        k: i32c(spec.kernel)?,
        stride: i32c(spec.stride)?,
        padding: i32c(spec.padding)?,
        power,
    };
    Ok((p, [shape[0], shape[1], ho, wo]))
}

fn bn_params(x: &Tensor, eps: f32) -> Result<(BnParams, usize, usize, usize)> {
    let (n, c, s) = match x.shape() {
        [n, c, rest @ ..] => (*n, *c, rest.iter().product::<usize>()),
        _ => return shape_err("batch_norm input", "[N, C, ...]", x.shape()),
    };
    Ok((
        BnParams {
            n: i64c(n),
            c: i64c(c),
            s: i64c(s),
            eps,
            // Sample splits of the split reductions, from the shape only.
            splits: i32c(TARGET_BLOCKS.div_ceil(c.max(1)).clamp(1, n.max(1)))?,
        },
        n,
        c,
        s,
    ))
}

fn check_vec(op: &'static str, t: Option<&Tensor>, c: usize) -> Result<()> {
    match t {
        Some(t) if t.shape() != [c] => shape_err(op, format!("[{c}]"), t.shape()),
        _ => Ok(()),
    }
}

impl CudaBackend {
    fn ew_unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        let n = x.numel();
        let (code, alpha) = match op {
            Unary::Relu => (0, 0.0),
            Unary::Square => (1, 0.0),
            Unary::Scale(a) => (2, a),
        };
        let y = self.alloc(n)?;
        let yt = self.wrap(y, x.shape());
        if n > 0 {
            let p = [self.ptr("unary", x)?, self.ptr("unary", &yt)?];
            self.launch("ew_unary", self.grid_stride(n), &p, &ew(n, code, alpha))?;
        }
        Ok(yt)
    }

    /// Reduction of `a` (or of `a * b`) to f64 partials, summed on the host.
    fn reduce(&self, a: &Tensor, b: Option<&Tensor>) -> Result<f64> {
        let n = a.numel();
        if n == 0 {
            return Ok(0.0);
        }
        let parts = n.div_ceil(4096).min(REDUCE_PARTS);
        let partials = self.alloc_f64(parts)?;
        let pp = {
            let (p, _s) = cudarc::driver::DevicePtr::device_ptr(&partials, self.stream());
            p
        };
        let bp = match b {
            Some(b) => self.ptr("dot", b)?,
            None => 0,
        };
        let p = [self.ptr("reduce", a)?, bp, pp];
        let prm = ReduceParams {
            n: n as i64,
            blocks: parts as i64,
        };
        self.launch("reduce_dot_partial", self.blocks(parts), &p, &prm)?;
        self.host_sum(&partials, parts)
    }

    /// `sum_i dot(xs[i], xs[i])` with ONE synchronisation: every tensor's partials go to one
    /// buffer, read once; each tensor's partials are added in index order, then the tensors
    /// in order (the same f64 arithmetic as summing [`Backend::dot`]s).
    pub fn sum_of_squares(&self, xs: &[&Tensor]) -> Result<f64> {
        let parts: Vec<usize> = xs
            .iter()
            .map(|x| x.numel().div_ceil(4096).min(REDUCE_PARTS))
            .collect();
        let total: usize = parts.iter().sum();
        if total == 0 {
            return Ok(0.0);
        }
        let partials = self.alloc_f64(total)?;
        let base = self.raw(&partials);
        let mut off = 0;
        for (x, &np) in xs.iter().zip(&parts) {
            if np == 0 {
                continue;
            }
            let xp = self.ptr("sum_of_squares", x)?;
            let p = [xp, xp, base + (off * 8) as u64];
            let prm = ReduceParams {
                n: x.numel() as i64,
                blocks: np as i64,
            };
            self.launch("reduce_dot_partial", self.blocks(np), &p, &prm)?;
            off += np;
        }
        let host = self
            .stream()
            .clone_dtoh(&partials)
            .map_err(super::drv("copy to host"))?;
        let mut s = 0.0f64;
        let mut off = 0;
        for &np in &parts {
            s += host[off..off + np].iter().sum::<f64>();
            off += np;
        }
        Ok(s)
    }

    /// Grid `(c, splits)` of 256-thread blocks (the split per-channel reductions).
    fn split_grid(&self, c: usize, splits: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (c as u32, splits as u32, 1),
            block_dim: (super::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Channel-block copy between a `[n, c_block, hw]` block and channels
    /// `[c_off, c_off + c_block)` of an `[n, c_big, hw]` tensor (direction 0: block -> big).
    fn copy_params(
        n: usize,
        hw: usize,
        c_block: usize,
        c_big: usize,
        c_off: usize,
        dir: i32,
    ) -> CopyParams {
        CopyParams {
            n: i64c(n),
            hw: i64c(hw),
            c_src: i64c(c_block),
            c_dst: i64c(c_big),
            c_off: i64c(c_off),
            direction: dir,
            _pad: 0,
        }
    }

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
        let xo = x + (n0 * g.cin * g.h * g.w * 4) as u64;
        let (r, p) = g.col_dims();
        self.launch(
            "im2col",
            self.grid_stride(cnt * r * p),
            &[xo, col],
            &g.conv(cnt, sq)?,
        )
    }

    fn dense_forward(&self, g: &ConvGeom, x: &Tensor, w: &Tensor, y: u64) -> Result<()> {
        let (xp, wp) = (self.ptr("conv2d x", x)?, self.ptr("conv2d w", w)?);
        let (r, p) = g.col_dims();
        if g.is_pointwise() {
            // y[n] (C_out x HW) = W (C_out x C_in) x[n] (C_in x HW), all images in one call.
            return self.gemm(
                false,
                false,
                (g.cout, p, g.cin),
                wp,
                xp,
                y,
                0.0,
                Some((g.n, 0, g.cin * p, g.cout * p)),
            );
        }
        let chunk = g.col_chunk();
        let col = self.alloc(chunk * r * p)?;
        let cp = self.raw(&col);
        for n0 in (0..g.n).step_by(chunk) {
            let cnt = chunk.min(g.n - n0);
            self.im2col(g, xp, n0, cnt, cp, false)?;
            let yo = y + (n0 * g.cout * p * 4) as u64;
            self.gemm(
                false,
                false,
                (g.cout, p, r),
                wp,
                cp,
                yo,
                0.0,
                Some((cnt, 0, r * p, g.cout * p)),
            )?;
        }
        Ok(())
    }

    fn dense_backward_input(&self, g: &ConvGeom, dy: &Tensor, w: &Tensor, dx: u64) -> Result<()> {
        let (dp, wp) = (self.ptr("conv2d dy", dy)?, self.ptr("conv2d w", w)?);
        let (r, p) = g.col_dims();
        if g.is_pointwise() {
            // dx[n] (C_in x HW) = W^T dy[n].
            return self.gemm(
                true,
                false,
                (g.cin, p, g.cout),
                wp,
                dp,
                dx,
                0.0,
                Some((g.n, 0, g.cout * p, g.cin * p)),
            );
        }
        let chunk = g.col_chunk();
        let col = self.alloc(chunk * r * p)?;
        let cp = self.raw(&col);
        for n0 in (0..g.n).step_by(chunk) {
            let cnt = chunk.min(g.n - n0);
            let dyo = dp + (n0 * g.cout * p * 4) as u64;
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
            let dxo = dx + (n0 * g.cin * g.h * g.w * 4) as u64;
            self.launch(
                "col2im",
                self.grid_stride(cnt * g.cin * g.h * g.w),
                &[cp, dxo],
                &g.conv(cnt, false)?,
            )?;
        }
        Ok(())
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
                None => xp + (n0 * r * p * 4) as u64,
                Some(c) => {
                    let cp = self.raw(c);
                    if g.is_pointwise() {
                        // col(X) = X: copy and square.
                        let len = cnt * r * p;
                        let xo = xp + (n0 * r * p * 4) as u64;
                        let cfg = self.grid_stride(len);
                        self.launch("ew_unary", cfg, &[xo, cp], &ew(len, 1, 0.0))?;
                    } else {
                        self.im2col(g, xp, n0, cnt, cp, square)?;
                    }
                    cp
                }
            };
            let dyo = dp + (n0 * g.cout * p * 4) as u64;
            let batch = Some((cnt, g.cout * p, r * p, g.cout * r));
            self.gemm(false, true, (g.cout, r, p), dyo, cp, pi, 0.0, batch)?;
            let beta = if n0 == 0 { 0.0 } else { 1.0 };
            let op = self.raw(&ones);
            self.gemm(false, false, (1, g.cout * r, cnt), op, pi, dw, beta, None)?;
            n0 += cnt;
        }
        Ok(())
    }

    pub(crate) fn raw<T>(&self, s: &cudarc::driver::CudaSlice<T>) -> u64 {
        let (p, _sync) = cudarc::driver::DevicePtr::device_ptr(s, self.stream());
        p
    }

    fn weight_correlation(
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

    /// Mixed-op parameters: `chunks` partial-sum chunks per sample, so that the reduction
    /// kernels get `n * chunks` blocks.
    /// `max_pool2d_backward` for an argmax whose window is unknown: one thread per plane
    /// scatters in output order (the CPU's exact sums) and flags offsets outside the plane,
    /// which are an error as on the CPU (this path waits for the flag).
    fn max_pool_backward_scatter(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
        let ds = dy.shape();
        let prm = PoolParams {
            n: i64c(n),
            c: i64c(c),
            h: i64c(h),
            w: i64c(w),
            ho: i64c(ds[2]),
            wo: i64c(ds[3]),
            ..Default::default()
        };
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        let bad = self
            .stream()
            .alloc_zeros::<i32>(1)
            .map_err(super::drv("allocation"))?;
        let p = [
            self.ptr("argmax", argmax)?,
            self.ptr("dy", dy)?,
            self.ptr("", &dx)?,
            self.raw(&bad),
        ];
        self.launch("maxpool_bwd_scatter", self.grid_stride(n * c), &p, &prm)?;
        let flag = self
            .stream()
            .clone_dtoh(&bad)
            .map_err(super::drv("copy to host"))?;
        if flag[0] != 0 {
            return Err(Error::Invalid(format!(
                "max_pool2d_backward: argmax holds an offset outside the {h}x{w} input plane"
            )));
        }
        Ok(dx)
    }

    fn mixed_params(&self, n: usize, k: usize, per: usize) -> Result<MixedParams> {
        // From the shape only (the sum order must not depend on the device): enough blocks
        // to fill a large GPU, at least 256 elements per block, at most 64 chunks.
        let want = per.div_ceil(8192).max(TARGET_BLOCKS.div_ceil(n.max(1)));
        let chunks = want.clamp(1, per.div_ceil(super::BLOCK as usize).clamp(1, 64));
        Ok(MixedParams {
            n: i64c(n),
            inner: i64c(per),
            chunks: i64c(chunks),
            k: i32c(k)?,
            _pad: 0,
        })
    }

    fn ptr_array(
        &self,
        what: &'static str,
        xs: &[&Tensor],
    ) -> Result<std::sync::Arc<cudarc::driver::CudaSlice<u64>>> {
        let ptrs: Vec<u64> = xs
            .iter()
            .map(|x| self.ptr(what, x))
            .collect::<Result<_>>()?;
        self.cached_u64(ptrs)
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.wrap(self.alloc_zeros(numel(shape))?, shape))
    }

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "upload",
                expected: format!("{} elements for shape {shape:?}", numel(shape)),
                found: format!("{} elements", data.len()),
            });
        }
        Ok(self.wrap(self.htod(&data)?, shape))
    }

    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        self.ew_unary(x, op)
    }

    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
        same_shape("binary", a, b)?;
        let n = a.numel();
        let code = match op {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::ReluMask => 3,
        };
        let y = self.wrap(self.alloc(n)?, a.shape());
        if n > 0 {
            let p = [
                self.ptr("binary a", a)?,
                self.ptr("binary b", b)?,
                self.ptr("binary", &y)?,
            ];
            self.launch("ew_binary", self.grid_stride(n), &p, &ew(n, code, 0.0))?;
        }
        Ok(y)
    }

    fn axpy(&self, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
        same_shape("axpy", x, y)?;
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let xp = self.ptr("axpy x", x)?;
        let yp = self.ptr_mut("axpy y", y)?;
        self.launch("ew_axpy", self.grid_stride(n), &[xp, yp], &ew(n, 0, alpha))
    }

    fn sum_all(&self, x: &Tensor) -> Result<f64> {
        self.reduce(x, None)
    }

    fn dot(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        same_shape("dot", a, b)?;
        self.reduce(a, Some(b))
    }

    fn scale_samples(&self, x: &Tensor, scale: &[f32]) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        if scale.len() != n || n == 0 {
            return shape_err(
                "scale_samples",
                format!("[{}, ...] for {} scales", scale.len(), scale.len()),
                x.shape(),
            );
        }
        let len = x.numel();
        let sc = self.htod(scale)?;
        let y = self.wrap(self.alloc(len)?, x.shape());
        if len > 0 {
            let p = [
                self.ptr("scale_samples", x)?,
                self.raw(&sc),
                self.ptr("scale_samples", &y)?,
            ];
            let mut prm = ew(len, 0, 0.0);
            prm.inner = (len / n) as i64;
            self.launch("scale_samples", self.grid_stride(len), &p, &prm)?;
        }
        Ok(y)
    }

    fn matmul(&self, a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor> {
        let (&[ar, ac], &[br, bc]) = (a.shape(), b.shape()) else {
            return shape_err(
                "matmul",
                "2-D operands",
                if a.rank() != 2 { a.shape() } else { b.shape() },
            );
        };
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
        if k != k2 {
            return Err(Error::Shape {
                op: "matmul",
                expected: format!("inner dimensions to agree ({k})"),
                found: format!("{k2} (a {:?}, b {:?})", a.shape(), b.shape()),
            });
        }
        let c = self.wrap(self.alloc_zeros(m * n)?, &[m, n]);
        if m * n > 0 && k > 0 {
            let (ap, bp, cp) = (
                self.ptr("matmul a", a)?,
                self.ptr("matmul b", b)?,
                self.ptr("matmul", &c)?,
            );
            self.gemm(trans_a, trans_b, (m, n, k), ap, bp, cp, 0.0, None)?;
        }
        Ok(c)
    }

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
        let g = ConvGeom::new("conv2d_forward", x.shape(), w.shape(), spec)?;
        let ys = g.y_shape();
        let y = self.alloc(numel(&ys))?;
        let yp = self.raw(&y);
        if g.is_depthwise() {
            let p = [self.ptr("conv2d x", x)?, self.ptr("conv2d w", w)?, yp];
            let cfg = dw_grid(g.ho, g.wo, g.cin, g.n);
            // k = 3 has a leaner variant (fewer registers, same results).
            let entry = if g.k == 3 {
                "dw_conv_fwd_k3"
            } else {
                "dw_conv_fwd"
            };
            self.launch(entry, cfg, &p, &g.dw(false)?)?;
        } else if spec.groups == 1 {
            self.dense_forward(&g, x, w, yp)?;
        } else {
            let p = [self.ptr("conv2d x", x)?, self.ptr("conv2d w", w)?, yp];
            self.launch(
                "conv_fwd_direct",
                self.grid_stride(numel(&ys)),
                &p,
                &g.conv(g.n, false)?,
            )?;
        }
        Ok(self.wrap(y, &ys))
    }

    fn conv2d_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        let op = "conv2d_backward_input";
        let g = ConvGeom::new(op, x_shape, w.shape(), spec)?;
        expect(op, dy, &g.y_shape())?;
        let dx = self.alloc(numel(x_shape))?;
        let dxp = self.raw(&dx);
        if g.is_depthwise() {
            let p = [self.ptr(op, dy)?, self.ptr(op, w)?, dxp];
            let cfg = dw_grid(g.h, g.w, g.cin, g.n);
            self.launch("dw_conv_bwd_input", cfg, &p, &g.dw(false)?)?;
        } else if spec.groups == 1 {
            self.dense_backward_input(&g, dy, w, dxp)?;
        } else {
            let p = [self.ptr(op, dy)?, self.ptr(op, w)?, dxp];
            self.launch(
                "conv_bwd_input_direct",
                self.grid_stride(numel(x_shape)),
                &p,
                &g.conv(g.n, false)?,
            )?;
        }
        Ok(self.wrap(dx, x_shape))
    }

    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        self.weight_correlation("conv2d_backward_weight", x, dy, spec, w_shape, false)
    }

    fn conv2d_backward_weight_sq(
        &self,
        x: &Tensor,
        hy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        self.weight_correlation("conv2d_backward_weight_sq", x, hy, spec, w_shape, true)
    }

    fn batch_norm_train_forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<BatchNormForward> {
        let (prm, n, c, s) = bn_params(x, eps)?;
        check_vec("batch_norm weight", weight, c)?;
        check_vec("batch_norm bias", bias, c)?;
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::Invalid(format!(
                "batch_norm: eps must be finite and >= 0, got {eps}"
            )));
        }
        if c == 0 {
            return Ok(BatchNormForward {
                y: self.zeros(x.shape())?,
                mean: self.zeros(&[0])?,
                var: self.zeros(&[0])?,
                invstd: self.zeros(&[0])?,
            });
        }
        if n * s < 2 {
            return Err(Error::Invalid(format!(
                "batch_norm: training needs more than one value per channel, input has shape {:?}",
                x.shape()
            )));
        }
        let (mean, var, invstd) = (self.alloc(c)?, self.alloc(c)?, self.alloc(c)?);
        let (mean, var, invstd) = (
            self.wrap(mean, &[c]),
            self.wrap(var, &[c]),
            self.wrap(invstd, &[c]),
        );
        let p = [
            self.ptr("batch_norm", x)?,
            self.ptr("bn", &mean)?,
            self.ptr("bn", &var)?,
            self.ptr("bn", &invstd)?,
        ];
        if prm.splits > 1 {
            let sp = prm.splits as usize;
            let partials = self.alloc_f64(c * sp * 2)?;
            let pp = self.raw(&partials);
            self.launch(
                "bn_stats_partial",
                self.split_grid(c, sp),
                &[p[0], pp],
                &prm,
            )?;
            let q = [p[0], pp, p[1], p[2], p[3]];
            self.launch("bn_stats_finalize", self.grid_stride(c), &q, &prm)?;
        } else {
            self.launch("bn_stats", self.blocks(c), &p, &prm)?;
        }
        let y = self.wrap(self.alloc(x.numel())?, x.shape());
        let opt = |t: Option<&Tensor>| t.map_or(Ok(0), |t| self.ptr("batch_norm affine", t));
        let p = [
            self.ptr("batch_norm", x)?,
            self.ptr("", &mean)?,
            self.ptr("", &invstd)?,
            opt(weight)?,
            opt(bias)?,
            self.ptr("", &y)?,
        ];
        self.launch("bn_fwd_apply", self.grid_stride(x.numel()), &p, &prm)?;
        Ok(BatchNormForward {
            y,
            mean,
            var,
            invstd,
        })
    }

    fn channel_affine(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
        let (prm, _, c, _) = match x.shape() {
            [_, _, ..] => bn_params(x, 0.0)?,
            _ => return shape_err("channel_affine input", "[N, C, ...]", x.shape()),
        };
        check_vec("channel_affine scale", Some(scale), c)?;
        check_vec("channel_affine shift", shift, c)?;
        let len = x.numel();
        let y = self.wrap(self.alloc(len)?, x.shape());
        if len > 0 {
            let sp = match shift {
                Some(t) => self.ptr("channel_affine shift", t)?,
                None => 0,
            };
            let p = [
                self.ptr("channel_affine", x)?,
                self.ptr("channel_affine scale", scale)?,
                sp,
                self.ptr("y", &y)?,
            ];
            self.launch("channel_affine", self.grid_stride(len), &p, &prm)?;
        }
        Ok(y)
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads> {
        let (prm, n, c, s) = match x.shape() {
            [_, _, ..] => bn_params(x, 0.0)?,
            _ => return shape_err("batch_norm_backward x", "[N, C, ...]", x.shape()),
        };
        if dy.shape() != x.shape() {
            return shape_err(
                "batch_norm_backward dy",
                format!("{:?}", x.shape()),
                dy.shape(),
            );
        }
        check_vec("batch_norm_backward mean", Some(mean), c)?;
        check_vec("batch_norm_backward invstd", Some(invstd), c)?;
        check_vec("batch_norm_backward weight", weight, c)?;
        if c == 0 {
            return Ok(BatchNormGrads {
                dx: self.zeros(x.shape())?,
                dweight: self.zeros(&[0])?,
                dbias: self.zeros(&[0])?,
            });
        }
        if n * s == 0 {
            return Err(Error::Invalid(format!(
                "batch_norm_backward: no values per channel in shape {:?}",
                x.shape()
            )));
        }
        let dbias = self.wrap(self.alloc(c)?, &[c]);
        let dweight = self.wrap(self.alloc(c)?, &[c]);
        let (dyp, xp) = (self.ptr("bn dy", dy)?, self.ptr("bn x", x)?);
        let (mp, ip) = (self.ptr("bn mean", mean)?, self.ptr("bn invstd", invstd)?);
        let (sd, sdx) = (self.ptr("", &dbias)?, self.ptr("", &dweight)?);
        if prm.splits > 1 {
            let sp = prm.splits as usize;
            let partials = self.alloc_f64(c * sp * 2)?;
            let pp = self.raw(&partials);
            self.launch(
                "bn_bwd_partial",
                self.split_grid(c, sp),
                &[dyp, xp, mp, pp],
                &prm,
            )?;
            let q = [pp, ip, sd, sdx];
            self.launch("bn_bwd_finalize", self.grid_stride(c), &q, &prm)?;
        } else {
            self.launch(
                "bn_bwd_reduce",
                self.blocks(c),
                &[dyp, xp, mp, ip, sd, sdx],
                &prm,
            )?;
        }
        let wp = match weight {
            Some(w) => self.ptr("bn weight", w)?,
            None => 0,
        };
        let dx = self.wrap(self.alloc(x.numel())?, x.shape());
        let p = [dyp, xp, mp, ip, wp, sd, sdx, self.ptr("", &dx)?];
        self.launch("bn_bwd_apply", self.grid_stride(x.numel()), &p, &prm)?;
        Ok(BatchNormGrads { dx, dweight, dbias })
    }

    fn channel_sums(&self, x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let (prm, _, c, _) = match x.shape() {
            [_, _, ..] => bn_params(x, 0.0)?,
            _ => return shape_err("channel_sums x", "[N, C, ...]", x.shape()),
        };
        if let Some(y) = y {
            if y.shape() != x.shape() {
                return shape_err("channel_sums y", format!("{:?}", x.shape()), y.shape());
            }
        }
        let out = self.wrap(self.alloc_zeros(c)?, &[c]);
        if x.numel() > 0 {
            let yp = match y {
                Some(t) => self.ptr("channel_sums y", t)?,
                None => 0,
            };
            let p = [self.ptr("channel_sums x", x)?, yp, self.ptr("", &out)?];
            if prm.splits > 1 {
                let sp = prm.splits as usize;
                let partials = self.alloc_f64(c * sp)?;
                let pp = self.raw(&partials);
                let q = [p[0], p[1], pp];
                self.launch("channel_sums_partial", self.split_grid(c, sp), &q, &prm)?;
                self.launch(
                    "channel_sums_finalize",
                    self.grid_stride(c),
                    &[pp, p[2]],
                    &prm,
                )?;
            } else {
                self.launch("channel_sums", self.blocks(c), &p, &prm)?;
            }
        }
        Ok(out)
    }

    fn max_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<(Tensor, Tensor)> {
        let (prm, ys) = pool_geom("max_pool2d", x.shape(), spec, 0)?;
        if x.shape()[2] * x.shape()[3] > 1 << 24 {
            return Err(Error::Invalid(format!(
                "max_pool2d: planes of {}x{} are too large (argmax offsets are f32, at most 2^24 per plane)",
                x.shape()[2],
                x.shape()[3]
            )));
        }
        let len = numel(&ys);
        let (y, arg) = (
            self.wrap(self.alloc(len)?, &ys),
            self.wrap(self.alloc(len)?, &ys),
        );
        let p = [
            self.ptr("max_pool2d", x)?,
            self.ptr("", &y)?,
            self.ptr("", &arg)?,
        ];
        self.launch("maxpool_fwd", self.grid_stride(len), &p, &prm)?;
        let mut arg = arg;
        if let crate::tensor::Storage::Cuda(b) = arg.storage_mut() {
            b.set_pool_spec(spec);
        }
        Ok((y, arg))
    }

    fn max_pool2d_backward(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        let &[n, c, h, w] = x_shape else {
            return shape_err("max_pool2d_backward x", "[N, C, H, W]", x_shape);
        };
        let ds = dy.shape();
        if ds.len() != 4 || ds[0] != n || ds[1] != c {
            return shape_err("max_pool2d_backward dy", format!("[{n}, {c}, Ho, Wo]"), ds);
        }
        if argmax.shape() != ds {
            return shape_err(
                "max_pool2d_backward argmax",
                format!("{ds:?}"),
                argmax.shape(),
            );
        }
        if h * w == 0 {
            return shape_err("max_pool2d_backward x", "H, W >= 1", x_shape);
        }
        // The gather kernel needs the window geometry, which the forward recorded on the
        // argmax buffer (the trait passes only shapes).
        let Some(spec) = self.buf("max_pool2d_backward argmax", argmax)?.pool_spec() else {
            return self.max_pool_backward_scatter(argmax, dy, x_shape);
        };
        let (prm, ys) = pool_geom("max_pool2d_backward", x_shape, spec, 1)?;
        if ys != ds {
            return shape_err("max_pool2d_backward dy", format!("{ys:?}"), ds);
        }
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        if dy.numel() > 0 {
            let p = [
                self.ptr("argmax", argmax)?,
                self.ptr("dy", dy)?,
                self.ptr("", &dx)?,
            ];
            self.launch("maxpool_bwd", self.grid_stride(numel(x_shape)), &p, &prm)?;
        }
        Ok(dx)
    }

    fn avg_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
        let (prm, ys) = pool_geom("avg_pool2d", x.shape(), spec, 1)?;
        let y = self.wrap(self.alloc(numel(&ys))?, &ys);
        let p = [self.ptr("avg_pool2d", x)?, self.ptr("", &y)?];
        self.launch("avgpool_fwd", self.grid_stride(numel(&ys)), &p, &prm)?;
        Ok(y)
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        spec: Pool2dSpec,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        let (prm, ys) = pool_geom("avg_pool2d_backward", x_shape, spec, power)?;
        if dy.shape() != ys {
            return shape_err("avg_pool2d_backward dy", format!("{ys:?}"), dy.shape());
        }
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        let p = [self.ptr("avg_pool2d_backward", dy)?, self.ptr("", &dx)?];
        self.launch("avgpool_bwd", self.grid_stride(numel(x_shape)), &p, &prm)?;
        Ok(dx)
    }

    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = nchw("global_avg_pool", x)?;
        if h * w == 0 {
            return shape_err("global_avg_pool", "H, W >= 1", x.shape());
        }
        let prm = PoolParams {
            n: i64c(n),
            c: i64c(c),
            h: i64c(h),
            w: i64c(w),
            ho: 1,
            wo: 1,
            power: 1,
            ..Default::default()
        };
        let y = self.wrap(self.alloc(n * c)?, &[n, c]);
        if n * c > 0 {
            let p = [self.ptr("global_avg_pool", x)?, self.ptr("", &y)?];
            // One block per plane, blocks striding over the planes.
            let blocks = (n * c).min(32 * self.sms as usize);
            self.launch("gap_fwd", self.blocks(blocks), &p, &prm)?;
        }
        Ok(y)
    }

    fn global_avg_pool_backward(
        &self,
        dy: &Tensor,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        let &[n, c, h, w] = x_shape else {
            return shape_err("global_avg_pool_backward x", "[N, C, H, W]", x_shape);
        };
        if h * w == 0 {
            return shape_err("global_avg_pool_backward x", "H, W >= 1", x_shape);
        }
        if dy.shape() != [n, c] {
            return shape_err(
                "global_avg_pool_backward dy",
                format!("[{n}, {c}]"),
                dy.shape(),
            );
        }
        let prm = PoolParams {
            n: i64c(n),
            c: i64c(c),
            h: i64c(h),
            w: i64c(w),
            ho: 1,
            wo: 1,
            power,
            ..Default::default()
        };
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        if dx.numel() > 0 {
            let p = [
                self.ptr("global_avg_pool_backward", dy)?,
                self.ptr("", &dx)?,
            ];
            self.launch("gap_bwd", self.grid_stride(numel(x_shape)), &p, &prm)?;
        }
        Ok(dx)
    }

    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor> {
        if xs.is_empty() {
            return Err(Error::Invalid("concat_channels: no inputs".into()));
        }
        let (n, _, h, w) = nchw("concat_channels", xs[0])?;
        let mut cs = Vec::with_capacity(xs.len());
        for x in xs {
            let (n2, c, h2, w2) = nchw("concat_channels", x)?;
            if (n2, h2, w2) != (n, h, w) {
                return shape_err("concat_channels", format!("[{n}, _, {h}, {w}]"), x.shape());
            }
            cs.push(c);
        }
        let ctot: usize = cs.iter().sum();
        let y = self.wrap(self.alloc(n * ctot * h * w)?, &[n, ctot, h, w]);
        let yp = self.ptr("", &y)?;
        let mut off = 0;
        for (x, &c) in xs.iter().zip(&cs) {
            if c * n * h * w > 0 {
                let prm = Self::copy_params(n, h * w, c, ctot, off, 0);
                let p = [self.ptr("concat_channels", x)?, yp];
                self.launch("copy_channels", self.grid_stride(n * c * h * w), &p, &prm)?;
            }
            off += c;
        }
        Ok(y)
    }

    fn split_channels(&self, y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let (n, c, h, w) = nchw("split_channels", y)?;
        if sizes.iter().sum::<usize>() != c {
            return shape_err(
                "split_channels",
                format!("{} channels", sizes.iter().sum::<usize>()),
                y.shape(),
            );
        }
        let yp = self.ptr("split_channels", y)?;
        let mut off = 0;
        let mut outs = Vec::with_capacity(sizes.len());
        for &ci in sizes {
            let o = self.wrap(self.alloc(n * ci * h * w)?, &[n, ci, h, w]);
            if o.numel() > 0 {
                let prm = Self::copy_params(n, h * w, ci, c, off, 1);
                let p = [yp, self.ptr("", &o)?];
                self.launch("copy_channels", self.grid_stride(o.numel()), &p, &prm)?;
            }
            outs.push(o);
            off += ci;
        }
        Ok(outs)
    }

    fn shift_crop(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = nchw("shift_crop", x)?;
        if h < 2 || w < 2 {
            return shape_err("shift_crop", "H >= 2 and W >= 2", x.shape());
        }
        let ys = [n, c, h - 1, w - 1];
        let y = self.wrap(self.alloc(numel(&ys))?, &ys);
        if y.numel() > 0 {
            let prm = ShiftParams {
                n: i64c(n),
                c: i64c(c),
                h: i64c(h),
                w: i64c(w),
            };
            let p = [self.ptr("shift_crop", x)?, self.ptr("", &y)?];
            self.launch("shift_crop", self.grid_stride(y.numel()), &p, &prm)?;
        }
        Ok(y)
    }

    fn shift_crop_backward(&self, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
        let (n, c, ho, wo) = nchw("shift_crop_backward", dy)?;
        if x_shape != [n, c, ho + 1, wo + 1] {
            return shape_err(
                "shift_crop_backward",
                format!("x of [{n}, {c}, {}, {}]", ho + 1, wo + 1),
                x_shape,
            );
        }
        let (h, w) = (ho + 1, wo + 1);
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        if dx.numel() > 0 {
            let prm = ShiftParams {
                n: i64c(n),
                c: i64c(c),
                h: i64c(h),
                w: i64c(w),
            };
            let p = [self.ptr("shift_crop_backward", dy)?, self.ptr("", &dx)?];
            self.launch("shift_crop_bwd", self.grid_stride(dx.numel()), &p, &prm)?;
        }
        Ok(dx)
    }

    fn select_columns(&self, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
        let (n, cols) = shape::select_columns(x.shape(), idx)?;
        let m = idx.len();
        let y = self.wrap(self.alloc(n * m)?, &[n, m]);
        if y.numel() > 0 {
            let map: Vec<i64> = idx.iter().map(|&i| i64c(i)).collect();
            let map = self.htod(&map)?;
            let prm = ColumnsParams {
                n: i64c(n),
                cols: i64c(cols),
                m: i64c(m),
            };
            let p = [
                self.ptr("select_columns", x)?,
                self.raw(&map),
                self.ptr("", &y)?,
            ];
            self.launch("select_columns", self.grid_stride(y.numel()), &p, &prm)?;
        }
        Ok(y)
    }

    fn select_columns_backward(&self, dy: &Tensor, idx: &[usize], cols: usize) -> Result<Tensor> {
        let n = shape::select_columns_backward(dy.shape(), idx, cols)?;
        let m = idx.len();
        let dx = self.wrap(self.alloc(n * cols)?, &[n, cols]);
        if dx.numel() > 0 {
            // pos[i] = j where idx[j] = i, else -1: one thread per dx entry, no scatter.
            let mut pos = vec![-1i64; cols];
            for (j, &i) in idx.iter().enumerate() {
                pos[i] = i64c(j);
            }
            let pos = self.htod(&pos)?;
            let prm = ColumnsParams {
                n: i64c(n),
                cols: i64c(cols),
                m: i64c(m),
            };
            let p = [
                self.ptr("select_columns_backward", dy)?,
                self.raw(&pos),
                self.ptr("", &dx)?,
            ];
            self.launch("select_columns_bwd", self.grid_stride(dx.numel()), &p, &prm)?;
        }
        Ok(dx)
    }

    fn mixed_forward(&self, xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<Tensor> {
        let (n, per) = crate::device::mixed_shapes(xs, s0, s)?;
        let k = xs.len();
        let y = self.wrap(self.alloc(xs[0].numel())?, xs[0].shape());
        if y.numel() > 0 {
            let arr = self.ptr_array("mixed_forward", xs)?;
            let prm = self.mixed_params(n, k, per)?;
            let p = [
                self.raw(&arr),
                self.ptr("s0", s0)?,
                self.ptr("s", s)?,
                self.ptr("", &y)?,
            ];
            self.launch("mixed_fwd", self.grid_stride(y.numel()), &p, &prm)?;
        }
        Ok(y)
    }

    fn mixed_backward(
        &self,
        xs: &[&Tensor],
        dy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let (n, per) = crate::device::mixed_shapes(xs, s0, s)?;
        if dy.shape() != xs[0].shape() {
            return shape_err("mixed op dy", format!("{:?}", xs[0].shape()), dy.shape());
        }
        let k = xs.len();
        let prm = self.mixed_params(n, k, per)?;
        let parts = prm.chunks as usize;
        let dxs: Vec<Tensor> = (0..k)
            .map(|_| Ok(self.wrap(self.alloc(xs[0].numel())?, xs[0].shape())))
            .collect::<Result<_>>()?;
        let r = self.wrap(self.alloc_zeros(n * k)?, &[n, k]);
        if per > 0 {
            let xa = self.ptr_array("mixed_backward", xs)?;
            let dxr: Vec<&Tensor> = dxs.iter().collect();
            let da = self.ptr_array("mixed_backward", &dxr)?;
            let partials = self.alloc_f64(n * k * parts)?;
            let pp = self.raw(&partials);
            let p = [
                self.raw(&xa),
                self.ptr("dy", dy)?,
                self.ptr("s0", s0)?,
                self.ptr("s", s)?,
                self.raw(&da),
                pp,
            ];
            self.launch("mixed_bwd", self.blocks(n * parts), &p, &prm)?;
            self.launch(
                "mixed_reduce_finalize",
                self.grid_stride(n * k),
                &[pp, self.ptr("", &r)?],
                &prm,
            )?;
        }
        Ok((dxs, r))
    }

    fn mixed_curvature(
        &self,
        xs: &[&Tensor],
        hy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
        let (n, per) = crate::device::mixed_shapes(xs, s0, s)?;
        if hy.shape() != xs[0].shape() {
            return shape_err("mixed op hy", format!("{:?}", xs[0].shape()), hy.shape());
        }
        let k = xs.len();
        let prm = self.mixed_params(n, k, per)?;
        let parts = prm.chunks as usize;
        let hxs: Vec<Tensor> = (0..k)
            .map(|_| Ok(self.wrap(self.alloc(xs[0].numel())?, xs[0].shape())))
            .collect::<Result<_>>()?;
        let hs = self.wrap(self.alloc_zeros(k)?, &[k]);
        let hs0 = self.wrap(self.alloc_zeros(1)?, &[1]);
        if xs[0].numel() > 0 {
            let xa = self.ptr_array("mixed_curvature", xs)?;
            let hr: Vec<&Tensor> = hxs.iter().collect();
            let ha = self.ptr_array("mixed_curvature", &hr)?;
            // Partials [n * chunks, k + 1]: per block, k branch sums then the z^2 hy sum.
            let partials = self.alloc_f64((k + 1) * n * parts)?;
            let pp = self.raw(&partials);
            let (s0p, sp) = (self.ptr("s0", s0)?, self.ptr("s", s)?);
            let p = [
                self.raw(&xa),
                self.ptr("hy", hy)?,
                s0p,
                sp,
                self.raw(&ha),
                pp,
            ];
            self.launch("mixed_curv", self.blocks(n * parts), &p, &prm)?;
            let p = [pp, s0p, self.ptr("", &hs)?, self.ptr("", &hs0)?];
            self.launch("mixed_curv_finalize", self.blocks(1), &p, &prm)?;
        }
        Ok((hxs, hs, hs0))
    }

    fn softmax_cross_entropy(&self, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, f32)> {
        let (b, k) = check_rows("softmax_cross_entropy", logits, Some(labels))?;
        let probs = self.wrap(self.alloc(b * k)?, &[b, k]);
        if b == 0 {
            return Ok((probs, f32::NAN));
        }
        let lab = self.htod(labels)?;
        let rows = self.alloc_f64(b)?;
        let prm = LossParams {
            b: i64c(b),
            k: i64c(k),
        };
        let p = [
            self.ptr("logits", logits)?,
            self.raw(&lab),
            self.ptr("", &probs)?,
            self.raw(&rows),
        ];
        self.launch("softmax_ce_fwd", self.grid_stride(b), &p, &prm)?;
        let loss = self.host_sum(&rows, b)? / b as f64;
        Ok((probs, loss as f32))
    }

    fn softmax_cross_entropy_backward(&self, probs: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (b, k) = check_rows("softmax_cross_entropy_backward", probs, Some(labels))?;
        let d = self.wrap(self.alloc(b * k)?, &[b, k]);
        if b * k == 0 {
            return Ok(d);
        }
        let lab = self.htod(labels)?;
        let prm = LossParams {
            b: i64c(b),
            k: i64c(k),
        };
        let p = [self.ptr("probs", probs)?, self.raw(&lab), self.ptr("", &d)?];
        self.launch("softmax_ce_bwd", self.grid_stride(b * k), &p, &prm)?;
        Ok(d)
    }

    fn softmax_cross_entropy_curvature(&self, probs: &Tensor) -> Result<Tensor> {
        let (b, k) = check_rows("softmax_cross_entropy_curvature", probs, None)?;
        let h = self.wrap(self.alloc(b * k)?, &[b, k]);
        if b * k == 0 {
            return Ok(h);
        }
        let prm = LossParams {
            b: i64c(b),
            k: i64c(k),
        };
        let p = [self.ptr("probs", probs)?, self.ptr("", &h)?];
        self.launch("softmax_ce_curv_seed", self.grid_stride(b * k), &p, &prm)?;
        Ok(h)
    }

    fn sgd_momentum(
        &self,
        w: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        grad_scale: f32,
    ) -> Result<()> {
        same_shape("sgd_momentum grad", w, g)?;
        same_shape("sgd_momentum momentum", w, m)?;
        let n = w.numel();
        if n == 0 {
            return Ok(());
        }
        let gp = self.ptr("sgd grad", g)?;
        let wp = self.ptr_mut("sgd weight", w)?;
        let mp = self.ptr_mut("sgd momentum", m)?;
        let prm = SgdParams {
            n: n as i64,
            lr,
            momentum,
            weight_decay,
            grad_scale,
        };
        self.launch("sgd_momentum", self.grid_stride(n), &[wp, gp, mp], &prm)
    }
}
