//! The hierarchical group-ARD update on the device: `kernels/ard.cu::group_ard_update`
//! computes gamma, omega, the combined `gamma_tilde` and every member's `C` for all groups of
//! a hierarchy at once, in f64. Its host reference is [`crate::ard::group_ard_update`].

use super::{drv, CudaBackend};
use crate::ard::{ArdInput, ArdOutput};
use crate::error::{Error, Result};

impl CudaBackend {
    /// Runs [`crate::ard::group_ard_update`] on this device (one kernel launch; the inputs
    /// are uploaded and the outputs copied back, which waits for the stream).
    pub fn group_ard_update(&self, inp: &ArdInput<'_>) -> Result<ArdOutput> {
        let groups = inp
            .groups()
            .ok_or_else(|| Error::Invalid("group_ard_update: group count overflows".into()))?;
        let values = groups
            .checked_mul(inp.n_members)
            .ok_or_else(|| Error::Invalid("group_ard_update: value count overflows".into()))?;
        for (what, len, want) in [
            ("w", inp.w.len(), values),
            ("h", inp.h.len(), values),
            ("gamma_in", inp.gamma_in.len(), groups),
            ("gamma_prev", inp.gamma_prev.len(), groups),
        ] {
            if len != want {
                return Err(Error::Shape {
                    op: "group_ard_update",
                    expected: format!(
                        "{want} values of {what} ({} parents x {} groups per parent{})",
                        inp.n_parents,
                        inp.n_children + 1,
                        if want == values {
                            format!(" x {} members", inp.n_members)
                        } else {
                            String::new()
                        }
                    ),
                    found: format!("{len}"),
                });
            }
        }
        if groups == 0 || inp.n_members == 0 {
            return Err(Error::Invalid(
                "group_ard_update: no groups or no members (nothing to update)".into(),
            ));
        }
        let w = self.htod(inp.w)?;
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
            self.raw(&w),
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
        // One thread per parent.
        self.launch(
            "group_ard_update",
            self.grid_stride(inp.n_parents),
            &ptrs,
            &prm,
        )?;
        let back = |b: &cudarc::driver::CudaSlice<f64>, n: usize| -> Result<Vec<f64>> {
            crate::device::counters::host_read();
            let mut v = self.stream.clone_dtoh(b).map_err(drv("copy to host"))?;
            v.truncate(n);
            Ok(v)
        };
        let back_i = |b: &cudarc::driver::CudaSlice<i32>| -> Result<Vec<i32>> {
            crate::device::counters::host_read();
            let mut v = self.stream.clone_dtoh(b).map_err(drv("copy to host"))?;
            v.truncate(groups);
            Ok(v)
        };
        Ok(ArdOutput {
            gamma: back(&gamma, groups)?,
            omega: back(&omega, groups)?,
            tilde: back(&tilde, groups)?,
            status: back_i(&st)?,
            clamped: back_i(&cl)?,
            c: back(&c, values)?,
        })
    }
}
