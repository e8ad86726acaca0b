//! Geometry of one convolution, validated by [`crate::device::shape::conv2d`].

use super::*;

/// Validated geometry of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) k: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    pub(super) s: usize,
    pub(super) p: usize,
    pub(super) d: usize,
    pub(super) groups: usize,
}

impl Geom {
    pub(super) fn cig(&self) -> usize {
        self.c_in / self.groups
    }
    pub(super) fn cog(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of `col(X)` per group: `c_in / groups * k * k`.
    pub(super) fn ckk(&self) -> usize {
        self.cig() * self.k * self.k
    }
    pub(super) fn hw(&self) -> usize {
        self.h * self.w
    }
    pub(super) fn howo(&self) -> usize {
        self.ho * self.wo
    }
    pub(super) fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.ho, self.wo]
    }
    pub(super) fn w_len(&self) -> usize {
        self.c_out * self.ckk()
    }
    pub(super) fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.c_out == self.c_in
    }
    /// A 1x1, stride-1, unpadded convolution: `col(X)` is `X` itself.
    pub(super) fn col_is_input(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
}

pub(super) fn geometry(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    spec: Conv2dSpec,
) -> Result<Geom> {
    let c = shape::conv2d(op, x, w, spec)?;
    Ok(Geom {
        n: c.n,
        c_in: c.c_in,
        h: c.h,
        w: c.w,
        c_out: c.c_out,
        k: c.k,
        ho: c.ho,
        wo: c.wo,
        s: spec.stride,
        p: spec.padding,
        d: spec.dilation,
        groups: spec.groups,
    })
}

pub(super) fn expect_shape(op: &'static str, what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(Error::Shape {
            op,
            expected: format!("{what} {want:?}"),
            found: format!("{:?}", t.shape()),
        });
    }
    Ok(())
}
