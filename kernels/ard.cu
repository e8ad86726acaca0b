// Hierarchical group-ARD update (closed form, in f64) of every group of one hierarchy:
// n_parents parents of n_children children each, every parent and every child a group of
// n_members members. The host reference is bayesnas_engine::ard::group_ard_update (same
// arithmetic in the same order).
//
// Layout: G = n_parents * (n_children + 1) groups, parent by parent, parent first
// (g = p (n_children + 1), child k at g + 1 + k); w and h are [G][n_members] row-major.
// Inputs per group: gamma_in[g] = the prior variance in force (parent: its gamma; child: the
// combined gamma_tilde) and gamma_prev[g] = the group's own previous gamma (kept when there is
// no curvature evidence).
// Per group, with H_m = h_m / lambda:
//   C_m = 1 / (1/gamma_in + H_m)          (0 when gamma_in is 0)
//   omega = sqrt(sum_m H_m / (1 + gamma_in H_m))   (terms that are not finite add nothing)
//   gamma = ||w|| / omega                  (0 for ||w|| = 0; gamma_prev when omega = 0 or the
//                                           quotient is not finite)
// Outputs per group: gamma_out (own gamma), omega_out, tilde_out (children:
// 1 / (1/gamma_child + 1/gamma_parent) with the parent's NEW gamma, 0 if either is 0;
// parents: the new gamma), status_out (ARD_*), clamped_out (curvatures clamped to 0); per
// member, c_out[g][m] = C (written for every member scanned before an error). A negative
// status is an error: the host must then discard all outputs.
// One thread per parent (the parent before its children); 1-D grid-stride over n_parents
// (any grid and block). Launch only when n_members > 0.
#include "bayesnas_common.cuh"

BZ_INLINE bool ard_finite(double v) { return v == v && v - v == 0.0; }

// One group. Returns the status; writes the new own gamma (or keeps `prev`) and omega.
BZ_INLINE int ard_group(const double* w, const double* h, int64_t members, double gamma,
                        double prev, double lambda, int clamp, double* gamma_new,
                        double* omega, int* clamped, double* c_out) {
    *gamma_new = prev;
    *omega = 0.0;
    *clamped = 0;
    if (!(ard_finite(gamma) && gamma >= 0.0)) return ARD_ERR_BAD_GAMMA;
    double omega_sq = 0.0, scale = 0.0;
    for (int64_t m = 0; m < members; ++m) {
        const double wm = w[m];
        double hm = h[m];
        if (!ard_finite(wm) || !ard_finite(hm)) return ARD_ERR_NOT_FINITE;
        if (hm < 0.0) {
            if (!clamp) return ARD_ERR_NEGATIVE;
            *clamped += 1;
            hm = 0.0;
        }
        const double big_h = hm / lambda;
        // C = 1/(1/gamma + H); with gamma = 0 the limit is 0.
        c_out[m] = gamma == 0.0 ? 0.0 : 1.0 / (1.0 / gamma + big_h);
        const double term = big_h / (1.0 + gamma * big_h);
        omega_sq += ard_finite(term) ? term : 0.0;
        const double a = wm < 0.0 ? -wm : wm;
        scale = a > scale ? a : scale;
    }
    *omega = sqrt(omega_sq);
    double norm = 0.0;
    if (scale != 0.0) {
        double sq = 0.0;
        for (int64_t m = 0; m < members; ++m) {
            const double q = w[m] / scale;
            sq += q * q;
        }
        norm = scale * sqrt(sq);
    }
    if (norm == 0.0) {
        *gamma_new = 0.0;
        return ARD_DEAD;
    }
    const double g = norm / *omega;
    if (*omega > 0.0 && ard_finite(g)) {
        *gamma_new = g;
        return ARD_UPDATED;
    }
    return ARD_NO_CURVATURE;
}

BZ_INLINE double ard_combine(double child, double parent) {
    return (child <= 0.0 || parent <= 0.0) ? 0.0 : 1.0 / (1.0 / child + 1.0 / parent);
}

extern "C" __global__ void group_ard_update(const double* __restrict__ w,
                                            const double* __restrict__ h,
                                            const double* __restrict__ gamma_in,
                                            const double* __restrict__ gamma_prev,
                                            double* __restrict__ gamma_out,
                                            double* __restrict__ omega_out,
                                            double* __restrict__ tilde_out,
                                            int32_t* __restrict__ status_out,
                                            int32_t* __restrict__ clamped_out,
                                            double* __restrict__ c_out, ArdParams p) {
    const int64_t per_parent = p.n_children + 1;
    BZ_GRID_STRIDE(parent, p.n_parents) {
        const int64_t g0 = parent * per_parent;
        double gamma0, omega;
        int clamped;
        int st = ard_group(w + g0 * p.n_members, h + g0 * p.n_members, p.n_members,
                           gamma_in[g0], gamma_prev[g0], p.lambda_parent, p.clamp_negative,
                           &gamma0, &omega, &clamped, c_out + g0 * p.n_members);
        gamma_out[g0] = gamma0;
        omega_out[g0] = omega;
        tilde_out[g0] = gamma0;
        status_out[g0] = st;
        clamped_out[g0] = clamped;
        for (int64_t k = 0; k < p.n_children; ++k) {
            const int64_t g = g0 + 1 + k;
            double gk;
            st = ard_group(w + g * p.n_members, h + g * p.n_members, p.n_members, gamma_in[g],
                           gamma_prev[g], p.lambda_child, p.clamp_negative, &gk, &omega,
                           &clamped, c_out + g * p.n_members);
            gamma_out[g] = gk;
            omega_out[g] = omega;
            tilde_out[g] = ard_combine(gk, gamma0);
            status_out[g] = st;
            clamped_out[g] = clamped;
        }
    }
}
