//! The closed-form HARD update (method note section 5) of one cell type on the device:
//! `kernels/bayes.cu::hard_update` computes gamma, omega, the combined `gamma_tilde` and every
//! cell's `C` for all groups at once, in f64.
//!
//! The CPU reference is `bayesnas_search::Prior::update`; the search crate calls
//! [`CudaBackend::hard_update`] when the search runs on a CUDA device and commits the result
//! into its `Prior` (see `Prior::update_on`).

use super::params::HardParams;
use super::{drv, CudaBackend};
use crate::error::{Error, Result};

/// `status` codes of [`HardOutput`] (`kernels/include/bayesnas_params.h`).
pub mod status {
    /// Updated normally.
    pub const UPDATED: i32 = 1;
    /// All switch values are zero.
    pub const DEAD: i32 = 2;
    /// No curvature evidence: the previous gamma is kept.
    pub const NO_CURVATURE: i32 = 3;
    /// A switch value or curvature is not finite.
    pub const ERR_NOT_FINITE: i32 = -1;
    /// A negative curvature while negative values are rejected.
    pub const ERR_NEGATIVE: i32 = -2;
    /// The prior variance in force is negative or not finite.
    pub const ERR_BAD_GAMMA: i32 = -3;
}

/// Inputs of one cell type, laid out as the kernel expects: `G = n_edges * (n_ops + 1)`
/// groups edge by edge, parent first; `s` and `h` are `[G][n_cells]` row-major.
#[derive(Clone, Copy, Debug)]
pub struct HardInput<'a> {
    pub n_edges: usize,
    pub n_ops: usize,
    pub n_cells: usize,
    /// Switch values `s_{g,c}`.
    pub s: &'a [f64],
    /// Curvatures `h_{g,c}` (already averaged over the curvature batches).
    pub h: &'a [f64],
    /// Prior variance in force per group (parent: `gamma0`; child: `gamma_tilde`).
    pub gamma_in: &'a [f64],
    /// The group's own previous gamma (kept when there is no curvature evidence).
    pub gamma_prev: &'a [f64],
    pub lambda_parent: f64,
    pub lambda_child: f64,
    /// Clamp negative curvature to 0 (`true`) or report it as [`status::ERR_NEGATIVE`].
    pub clamp_negative: bool,
}

/// Outputs per group (and per cell for `c`), copied back to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HardOutput {
    /// The group's own new gamma (parent: `gamma0`; child: raw `gamma_k`).
    pub gamma: Vec<f64>,
    pub omega: Vec<f64>,
    /// Children: `combine(gamma_k, new gamma0)`; parents: the new `gamma0`.
    pub tilde: Vec<f64>,
    /// One of [`status`] per group; a negative value is an error and the outputs must be
    /// discarded.
    pub status: Vec<i32>,
    /// Curvatures clamped to 0 per group.
    pub clamped: Vec<i32>,
    /// `C = 1 / (1/gamma_in + H)` per group and cell (`[G][n_cells]`).
    pub c: Vec<f64>,
}

impl HardInput<'_> {
    /// The kernel's parameter struct for these inputs.
    pub fn params(&self) -> HardParams {
        HardParams {
            n_edges: self.n_edges as i64,
            n_ops: self.n_ops as i64,
            n_cells: self.n_cells as i64,
            lambda_parent: self.lambda_parent,
            lambda_child: self.lambda_child,
            clamp_negative: i32::from(self.clamp_negative),
            _pad: 0,
        }
    }
}

impl CudaBackend {
    /// Runs the HARD update of one cell type on this device (one kernel launch; the inputs
    /// are uploaded and the outputs copied back, which waits for the stream).
    pub fn hard_update(&self, inp: &HardInput<'_>) -> Result<HardOutput> {
        let groups = inp
            .n_ops
            .checked_add(1)
            .and_then(|g| g.checked_mul(inp.n_edges))
            .ok_or_else(|| Error::Invalid("hard_update: group count overflows".into()))?;
        let values = groups
            .checked_mul(inp.n_cells)
            .ok_or_else(|| Error::Invalid("hard_update: value count overflows".into()))?;
        for (what, len, want) in [
            ("s", inp.s.len(), values),
            ("h", inp.h.len(), values),
            ("gamma_in", inp.gamma_in.len(), groups),
            ("gamma_prev", inp.gamma_prev.len(), groups),
        ] {
            if len != want {
                return Err(Error::Shape {
                    op: "hard_update",
                    expected: format!(
                        "{want} values of {what} ({} edges x {} groups per edge{})",
                        inp.n_edges,
                        inp.n_ops + 1,
                        if want == values {
                            format!(" x {} cells", inp.n_cells)
                        } else {
                            String::new()
                        }
                    ),
                    found: format!("{len}"),
                });
            }
        }
        if groups == 0 || inp.n_cells == 0 {
            return Err(Error::Invalid(
                "hard_update: no groups or no cells (nothing to update)".into(),
            ));
        }
        let s = self.htod(inp.s)?;
        let h = self.htod(inp.h)?;
        let gi = self.htod(inp.gamma_in)?;
        let gp = self.htod(inp.gamma_prev)?;
        let gamma = self.alloc_f64(groups)?;
        let omega = self.alloc_f64(groups)?;
        let tilde = self.alloc_f64(groups)?;
        let c = self.alloc_f64(values)?;
        // SAFETY: written by the kernel for every group before being read.
        let st = unsafe { self.stream.alloc::<i32>(groups) }.map_err(drv("allocation"))?;
        let cl = unsafe { self.stream.alloc::<i32>(groups) }.map_err(drv("allocation"))?;
        let prm = inp.params();
        let ptrs = [
            self.raw(&s),
            self.raw(&h),
            self.raw(&gi),
            self.raw(&gp),
            self.raw(&gamma),
            self.raw(&omega),
            self.raw(&tilde),
            self.raw(&st),
            self.raw(&cl),
            self.raw(&c),
        ];
        // One thread per edge.
        self.launch("hard_update", self.grid_stride(inp.n_edges), &ptrs, &prm)?;
        let back = |b: &cudarc::driver::CudaSlice<f64>, n: usize| -> Result<Vec<f64>> {
            let mut v = self.stream.clone_dtoh(b).map_err(drv("copy to host"))?;
            v.truncate(n);
            Ok(v)
        };
        let back_i = |b: &cudarc::driver::CudaSlice<i32>| -> Result<Vec<i32>> {
            let mut v = self.stream.clone_dtoh(b).map_err(drv("copy to host"))?;
            v.truncate(groups);
            Ok(v)
        };
        Ok(HardOutput {
            gamma: back(&gamma, groups)?,
            omega: back(&omega, groups)?,
            tilde: back(&tilde, groups)?,
            status: back_i(&st)?,
            clamped: back_i(&cl)?,
            c: back(&c, values)?,
        })
    }
}
