//! Hierarchical group ARD (automatic relevance determination): the closed-form update of the
//! prior variances of groups of parameters, on the host in `f64`.
//!
//! # Groups
//!
//! A group of members with values `w_m` and curvatures `h_m` (the diagonal curvature of the
//! data loss with respect to `w_m`) has a prior variance `gamma` and a reweighting `omega`.
//! With `lambda` the group's penalty strength and `gamma` the prior variance in force:
//!
//! ```text
//! H_m    = h_m / lambda
//! C_m    = 1 / (1/gamma + H_m)                        posterior variance (Laplace)
//! omega  = sqrt( sum_m H_m / (1 + gamma H_m) )        each member's own term
//! gamma' = ||w||_2 / omega
//! ```
//!
//! [`GroupArd`] is this update for one group, member by member; every caller goes through it.
//! Its [`Evidence`] rule says what a group without usable evidence gets: the hierarchy's
//! update keeps the previous gamma; a caller that prunes groups lets such a group go
//! (`gamma = 0`).
//!
//! # Hierarchies
//!
//! [`group_ard_update`] updates a two-level hierarchy: `n_parents` parents with `n_children`
//! children each, every parent and every child a group of `n_members` members. Groups are laid
//! out parent by parent, parent first: group `p * (n_children + 1)` is parent `p` and
//! `p * (n_children + 1) + 1 + k` its child `k`; per-member values are `[group][member]`.
//! A child's prior variance in force is `gamma_tilde = 1 / (1/gamma_child + 1/gamma_parent)`
//! ([`combine`]) with the parent's NEW gamma. It is the host reference of the CUDA kernel
//! `kernels/ard.cu::group_ard_update` (same arithmetic in the same order) and what the CPU runs.
//!
//! # Edge cases ([`Evidence::KeepPrevious`], the hierarchy's rule)
//!
//! * `||w|| = 0`: `gamma = 0`, status [`status::DEAD`], whatever omega is.
//! * A term `H/(1 + gamma H)` that is not finite adds nothing; `omega = 0` (no curvature in
//!   any member) or `||w||/omega` not finite: the previous gamma is kept, status
//!   [`status::NO_CURVATURE`].
//! * `gamma = 0` in force: `C = 0` and the omega term is `H` (the limits of the formulas).
//! * Negative curvature: clamped to 0 or reported ([`status::ERR_NEGATIVE`]); a value or
//!   curvature that is not finite: [`status::ERR_NOT_FINITE`]; a prior variance in force that
//!   is negative or not finite: [`status::ERR_BAD_GAMMA`].

use crate::device::cuda::params::ArdParams;

/// Status codes of a group (`status` of [`ArdOutput`]), generated from
/// `kernels/include/bayesnas_params.h`.
pub mod status {
    pub use crate::device::cuda::params::{
        ARD_DEAD as DEAD, ARD_ERR_BAD_GAMMA as ERR_BAD_GAMMA, ARD_ERR_NEGATIVE as ERR_NEGATIVE,
        ARD_ERR_NOT_FINITE as ERR_NOT_FINITE, ARD_NO_CURVATURE as NO_CURVATURE,
        ARD_UPDATED as UPDATED,
    };
}

/// What a group without usable evidence gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A term that is not finite adds nothing; a group whose omega is 0, or whose
    /// `||w|| / omega` is not finite, keeps its previous gamma ([`status::NO_CURVATURE`]).
    /// Finite inputs give finite results.
    KeepPrevious,
    /// Every term adds as computed; a group none of whose members has a positive curvature
    /// (the data does not reach it, so nothing holds its variance up) gets `gamma = 0`
    /// ([`status::NO_CURVATURE`]), any other `||w|| / omega` as computed.
    Vanish,
}

/// One group's new values ([`GroupArd::finish`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupResult {
    /// The new gamma (the previous one where [`Evidence::KeepPrevious`] keeps it).
    pub gamma: f64,
    /// The new omega.
    pub omega: f64,
    /// [`status::UPDATED`], [`status::DEAD`] or [`status::NO_CURVATURE`].
    pub status: i32,
}

/// The closed-form update of one group, fed member by member in member order.
#[derive(Clone, Copy, Debug)]
pub struct GroupArd {
    gamma: f64,
    lambda: f64,
    rule: Evidence,
    omega_sq: f64,
    positive: bool,
}

/// `H = h / lambda`: a member's curvature relative to the group's penalty strength.
#[inline]
pub fn relative_curvature(h: f64, lambda: f64) -> f64 {
    h / lambda
}

impl GroupArd {
    /// A group with prior variance in force `gamma` and penalty strength `lambda`.
    pub fn new(gamma: f64, lambda: f64, rule: Evidence) -> GroupArd {
        GroupArd {
            gamma,
            lambda,
            rule,
            omega_sq: 0.0,
            positive: false,
        }
    }

    /// Adds a member of curvature `h` (negative values are the caller's to clamp) and returns
    /// its `H = h / lambda`.
    #[inline]
    pub fn add(&mut self, h: f64) -> f64 {
        let big_h = relative_curvature(h, self.lambda);
        // Each member's own term: 1/gamma - C/gamma^2 = H / (1 + gamma H).
        let term = big_h / (1.0 + self.gamma * big_h);
        self.omega_sq += match self.rule {
            Evidence::KeepPrevious if !term.is_finite() => 0.0,
            _ => term,
        };
        self.positive |= h > 0.0;
        big_h
    }

    /// The posterior variance `C = 1 / (1/gamma + H)` of a member with `H` (0 when gamma is 0).
    #[inline]
    pub fn posterior_variance(&self, big_h: f64) -> f64 {
        // With gamma = 0 the limit is 0.
        if self.gamma == 0.0 {
            0.0
        } else {
            1.0 / (1.0 / self.gamma + big_h)
        }
    }

    /// The new gamma and omega from the group's norm `||w||` (the previous gamma `prev` is
    /// kept where the rule says so).
    pub fn finish(self, norm: f64, prev: f64) -> GroupResult {
        let omega = self.omega_sq.sqrt();
        let (gamma, status) = match self.rule {
            Evidence::KeepPrevious => {
                if norm == 0.0 {
                    (0.0, status::DEAD)
                } else {
                    let g = norm / omega;
                    if omega > 0.0 && g.is_finite() {
                        (g, status::UPDATED)
                    } else {
                        (prev, status::NO_CURVATURE)
                    }
                }
            }
            Evidence::Vanish => {
                if norm == 0.0 {
                    (0.0, status::DEAD)
                } else if !self.positive {
                    (0.0, status::NO_CURVATURE)
                } else {
                    (norm / omega, status::UPDATED)
                }
            }
        };
        GroupResult {
            gamma,
            omega,
            status,
        }
    }
}

/// Euclidean norm, scaled by the largest magnitude so that large values do not overflow
/// (values that are NaN do not count towards the scale).
pub fn scaled_norm(w: &[f64]) -> f64 {
    let scale = w
        .iter()
        .fold(0.0f64, |m, &x| if x.abs() > m { x.abs() } else { m });
    if scale == 0.0 {
        return 0.0;
    }
    let mut sq = 0.0;
    for &x in w {
        let q = x / scale;
        sq += q * q;
    }
    scale * sq.sqrt()
}

/// The hierarchical combination `1 / (1/gamma_child + 1/gamma_parent)`; 0 if either is 0.
pub fn combine(gamma_child: f64, gamma_parent: f64) -> f64 {
    if gamma_child <= 0.0 || gamma_parent <= 0.0 {
        0.0
    } else {
        1.0 / (1.0 / gamma_child + 1.0 / gamma_parent)
    }
}

/// One group's update with the checks of the kernel: `w`, `h` and `c_out` hold the group's
/// members (the same length; the shortest bounds the members scanned), `gamma` is the prior variance in force, `prev` the group's own
/// previous gamma. Writes `C` for every member scanned; returns the result (on an error
/// status: `prev`, omega 0) and the number of curvatures clamped to 0.
pub fn update_group(
    gamma: f64,
    prev: f64,
    w: &[f64],
    h: &[f64],
    lambda: f64,
    clamp_negative: bool,
    c_out: &mut [f64],
) -> (GroupResult, usize) {
    let mut clamped = 0;
    let failed = |status| GroupResult {
        gamma: prev,
        omega: 0.0,
        status,
    };
    if !(gamma.is_finite() && gamma >= 0.0) {
        return (failed(status::ERR_BAD_GAMMA), clamped);
    }
    let mut group = GroupArd::new(gamma, lambda, Evidence::KeepPrevious);
    for ((&wm, &hm), c) in w.iter().zip(h).zip(c_out.iter_mut()) {
        if !wm.is_finite() || !hm.is_finite() {
            return (failed(status::ERR_NOT_FINITE), clamped);
        }
        let hm = if hm < 0.0 {
            if !clamp_negative {
                return (failed(status::ERR_NEGATIVE), clamped);
            }
            clamped += 1;
            0.0
        } else {
            hm
        };
        let big_h = group.add(hm);
        *c = group.posterior_variance(big_h);
    }
    (group.finish(scaled_norm(w), prev), clamped)
}

/// Inputs of one hierarchy, laid out as the kernel expects (see the module documentation):
/// `G = n_parents * (n_children + 1)` groups; `w` and `h` are `[G][n_members]`.
#[derive(Clone, Copy, Debug)]
pub struct ArdInput<'a> {
    pub n_parents: usize,
    /// Children per parent.
    pub n_children: usize,
    /// Members per group.
    pub n_members: usize,
    /// Member values `w_{g,m}`.
    pub w: &'a [f64],
    /// Member curvatures `h_{g,m}`.
    pub h: &'a [f64],
    /// Prior variance in force per group (parent: its gamma; child: `gamma_tilde`).
    pub gamma_in: &'a [f64],
    /// The group's own previous gamma (kept when there is no curvature evidence).
    pub gamma_prev: &'a [f64],
    pub lambda_parent: f64,
    pub lambda_child: f64,
    /// Clamp negative curvature to 0 (`true`) or report it as [`status::ERR_NEGATIVE`].
    pub clamp_negative: bool,
}

/// Outputs per group (and per member for `c`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArdOutput {
    /// The group's own new gamma.
    pub gamma: Vec<f64>,
    pub omega: Vec<f64>,
    /// Children: `combine(gamma_child, new gamma_parent)`; parents: the new gamma.
    pub tilde: Vec<f64>,
    /// One of [`status`] per group; a negative value is an error and the outputs must be
    /// discarded.
    pub status: Vec<i32>,
    /// Curvatures clamped to 0 per group.
    pub clamped: Vec<i32>,
    /// `C = 1 / (1/gamma_in + H)` per group and member (`[G][n_members]`).
    pub c: Vec<f64>,
}

impl ArdInput<'_> {
    /// The kernel's parameter struct for these inputs.
    pub fn params(&self) -> ArdParams {
        ArdParams {
            n_parents: self.n_parents as i64,
            n_children: self.n_children as i64,
            n_members: self.n_members as i64,
            lambda_parent: self.lambda_parent,
            lambda_child: self.lambda_child,
            clamp_negative: i32::from(self.clamp_negative),
            _pad: 0,
        }
    }

    /// Number of groups, `n_parents * (n_children + 1)` (`None` on overflow).
    pub fn groups(&self) -> Option<usize> {
        self.n_children
            .checked_add(1)
            .and_then(|g| g.checked_mul(self.n_parents))
    }
}

/// The update of every group of a hierarchy on the host: the reference of the kernel
/// `group_ard_update` (parents in order, each parent before its children). `C` of members
/// after an error is left 0. Panics if the slices are shorter than the layout needs.
pub fn group_ard_update(inp: &ArdInput<'_>) -> ArdOutput {
    let per_parent = inp.n_children + 1;
    let groups = inp.n_parents * per_parent;
    let nm = inp.n_members;
    let mut out = ArdOutput {
        gamma: vec![0.0; groups],
        omega: vec![0.0; groups],
        tilde: vec![0.0; groups],
        status: vec![0; groups],
        clamped: vec![0; groups],
        c: vec![0.0; groups * nm],
    };
    for p in 0..inp.n_parents {
        let g0 = p * per_parent;
        let mut gamma0 = 0.0;
        for g in g0..g0 + per_parent {
            let lambda = if g == g0 {
                inp.lambda_parent
            } else {
                inp.lambda_child
            };
            let members = g * nm..(g + 1) * nm;
            let (r, clamped) = update_group(
                inp.gamma_in[g],
                inp.gamma_prev[g],
                &inp.w[members.clone()],
                &inp.h[members.clone()],
                lambda,
                inp.clamp_negative,
                &mut out.c[members],
            );
            if g == g0 {
                gamma0 = r.gamma;
            }
            out.gamma[g] = r.gamma;
            out.omega[g] = r.omega;
            out.tilde[g] = if g == g0 {
                r.gamma
            } else {
                combine(r.gamma, gamma0)
            };
            out.status[g] = r.status;
            out.clamped[g] = clamped as i32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    /// One parent (w = (3, 4), h = (0.5, 0.5), lambda 0.5: H = (1, 1), omega = 1, gamma = 5)
    /// with one child (w = (1, 1), h = (0.75, 0.75), lambda 0.25: H = (3, 3),
    /// omega = sqrt(3/2), gamma = 2/sqrt(3), tilde = 1/(sqrt(3)/2 + 1/5)), gamma 1 in force.
    #[test]
    fn hierarchy_matches_hand_computation() {
        let inp = ArdInput {
            n_parents: 1,
            n_children: 1,
            n_members: 2,
            w: &[3.0, 4.0, 1.0, 1.0],
            h: &[0.5, 0.5, 0.75, 0.75],
            gamma_in: &[1.0, 1.0],
            gamma_prev: &[1.0, 1.0],
            lambda_parent: 0.5,
            lambda_child: 0.25,
            clamp_negative: false,
        };
        let out = group_ard_update(&inp);
        assert_eq!(out.status, vec![status::UPDATED; 2]);
        let s3 = 3f64.sqrt();
        for (got, want) in [
            (out.gamma[0], 5.0),
            (out.omega[0], 1.0),
            (out.tilde[0], 5.0),
            (out.gamma[1], 2.0 / s3),
            (out.omega[1], 1.5f64.sqrt()),
            (out.tilde[1], 1.0 / (s3 / 2.0 + 0.2)),
            (out.c[0], 0.5),
            (out.c[3], 0.25),
        ] {
            assert!(close(got, want), "{got} vs {want}");
        }
        assert_eq!(inp.params().n_children, 1);
    }

    /// The two rules differ only where there is no usable evidence.
    #[test]
    fn evidence_rules() {
        let run = |rule, gamma: f64, h: &[f64], norm| {
            let mut g = GroupArd::new(gamma, 0.5, rule);
            for &x in h {
                g.add(x);
            }
            g.finish(norm, 7.0)
        };
        for rule in [Evidence::KeepPrevious, Evidence::Vanish] {
            let r = run(rule, 1.0, &[0.5, 0.5], 2.0);
            assert_eq!((r.gamma, r.omega, r.status), (2.0, 1.0, status::UPDATED));
            let r = run(rule, 1.0, &[0.5], 0.0);
            assert_eq!((r.gamma, r.status), (0.0, status::DEAD));
        }
        // No curvature: kept, or gone.
        let keep = run(Evidence::KeepPrevious, 1.0, &[0.0, 0.0], 2.0);
        assert_eq!(
            (keep.gamma, keep.omega, keep.status),
            (7.0, 0.0, status::NO_CURVATURE)
        );
        let gone = run(Evidence::Vanish, 1.0, &[0.0, 0.0], 2.0);
        assert_eq!((gone.gamma, gone.status), (0.0, status::NO_CURVATURE));
        // A term that is not finite: dropped, or counted.
        let keep = run(Evidence::KeepPrevious, 1.0, &[f64::INFINITY, 0.5], 1.0);
        assert_eq!(
            (keep.gamma, keep.omega),
            (1.0 / 0.5f64.sqrt(), 0.5f64.sqrt())
        );
        let counted = run(Evidence::Vanish, 1.0, &[f64::INFINITY, 0.5], 1.0);
        assert!(counted.omega.is_nan() && counted.gamma.is_nan());
    }

    #[test]
    fn group_checks_and_norm() {
        let mut c = [9.0; 2];
        let (r, clamped) = update_group(1.0, 3.0, &[1.0, 1.0], &[-1.0, 0.5], 0.5, true, &mut c);
        assert_eq!((r.status, clamped, c[0]), (status::UPDATED, 1, 1.0));
        let (r, _) = update_group(1.0, 3.0, &[1.0, 1.0], &[-1.0, 0.5], 0.5, false, &mut c);
        assert_eq!(
            (r.status, r.gamma, r.omega),
            (status::ERR_NEGATIVE, 3.0, 0.0)
        );
        let (r, _) = update_group(1.0, 3.0, &[f64::NAN], &[0.5], 0.5, false, &mut c);
        assert_eq!(r.status, status::ERR_NOT_FINITE);
        let (r, _) = update_group(-1.0, 3.0, &[1.0], &[0.5], 0.5, false, &mut c);
        assert_eq!(r.status, status::ERR_BAD_GAMMA);
        let (r, _) = update_group(0.0, 3.0, &[1.0], &[0.5], 0.5, false, &mut c);
        assert_eq!((c[0], r.omega), (0.0, 1.0));
        assert_eq!(scaled_norm(&[3e300, 4e300]), 5e300);
        assert_eq!(scaled_norm(&[0.0, -0.0]), 0.0);
        assert_eq!(combine(2.0, 2.0), 1.0);
        assert_eq!(combine(0.0, 2.0), 0.0);
    }
}
