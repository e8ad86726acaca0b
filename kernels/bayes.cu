// HARD closed-form update (method note section 5) of every group of ONE cell type, in f64,
// mirroring crates/search/src/bayes.rs (Prior::update / update_group / combine) exactly.
//
// Layout (as CellTypeStats): G = n_edges * (n_ops + 1) groups, edge by edge, parent first
// (g = e (n_ops + 1), child op j at g + 1 + j); s and h are [G][n_cells] row-major.
// Inputs per group: gamma_in[g] = the prior variance in force (parent: gamma0, child:
// gamma_tilde; Prior::gammas_in_force) and gamma_prev[g] = the group's own previous gamma
// (parent: gamma0, child: raw gamma_k; kept when there is no curvature evidence).
// Outputs per group: gamma_out (own gamma: gamma0 / raw gamma_k), omega_out, tilde_out
// (children: combine(gamma_k, new gamma0); parents: the new gamma0), status_out (HARD_*),
// clamped_out (curvatures clamped to 0); per cell, c_out[g][c] = C = 1 / (1/gamma_in + H)
// (0 when gamma_in is 0; written for every cell scanned before an error). A negative status is an error: the host must then
// discard all outputs (the CPU update leaves the prior unchanged on error).
// One thread per edge (parents before children of the same edge, as the CPU); 1-D
// grid-stride over n_edges (any grid and block). Launch only when n_cells > 0.
#include "bayesnas_common.cuh"

BZ_INLINE bool hard_finite(double v) { return v == v && v - v == 0.0; }

// One group. Returns the status; writes the new own gamma (or keeps `prev`) and omega.
BZ_INLINE int hard_group(const double* s, const double* h, int64_t cells, double gamma,
                         double prev, double lambda, int clamp, double* gamma_new,
                         double* omega, int* clamped, double* c_out) {
    *gamma_new = prev;
    *omega = 0.0;
    *clamped = 0;
    if (!(hard_finite(gamma) && gamma >= 0.0)) return HARD_ERR_BAD_GAMMA;
    double omega_sq = 0.0, scale = 0.0;
    for (int64_t c = 0; c < cells; ++c) {
        const double sc = s[c];
        double hc = h[c];
        if (!hard_finite(sc) || !hard_finite(hc)) return HARD_ERR_NOT_FINITE;
        if (hc < 0.0) {
            if (!clamp) return HARD_ERR_NEGATIVE;
            *clamped += 1;
            hc = 0.0;
        }
        const double big_h = hc / lambda;
        // C = 1/(1/gamma + H); with gamma = 0 the limit is 0.
        c_out[c] = gamma == 0.0 ? 0.0 : 1.0 / (1.0 / gamma + big_h);
        const double term = big_h / (1.0 + gamma * big_h);
        omega_sq += hard_finite(term) ? term : 0.0;
        const double a = sc < 0.0 ? -sc : sc;
        scale = a > scale ? a : scale;
    }
    *omega = sqrt(omega_sq);
    double norm = 0.0;
    if (scale != 0.0) {
        double sq = 0.0;
        for (int64_t c = 0; c < cells; ++c) {
            const double q = s[c] / scale;
            sq += q * q;
        }
        norm = scale * sqrt(sq);
    }
    if (norm == 0.0) {
        *gamma_new = 0.0;
        return HARD_DEAD;
    }
    const double g = norm / *omega;
    if (*omega > 0.0 && hard_finite(g)) {
        *gamma_new = g;
        return HARD_UPDATED;
    }
    return HARD_NO_CURVATURE;
}

BZ_INLINE double hard_combine(double child, double parent) {
    return (child <= 0.0 || parent <= 0.0) ? 0.0 : 1.0 / (1.0 / child + 1.0 / parent);
}

extern "C" __global__ void hard_update(const double* __restrict__ s,
                                       const double* __restrict__ h,
                                       const double* __restrict__ gamma_in,
                                       const double* __restrict__ gamma_prev,
                                       double* __restrict__ gamma_out,
                                       double* __restrict__ omega_out,
                                       double* __restrict__ tilde_out,
                                       int32_t* __restrict__ status_out,
                                       int32_t* __restrict__ clamped_out,
                                       double* __restrict__ c_out, HardParams p) {
    const int64_t per_edge = p.n_ops + 1;
    BZ_GRID_STRIDE(e, p.n_edges) {
        const int64_t g0 = e * per_edge;
        double gamma0, omega;
        int clamped;
        int st = hard_group(s + g0 * p.n_cells, h + g0 * p.n_cells, p.n_cells, gamma_in[g0],
                            gamma_prev[g0], p.lambda_parent, p.clamp_negative, &gamma0, &omega,
                            &clamped, c_out + g0 * p.n_cells);
        gamma_out[g0] = gamma0;
        omega_out[g0] = omega;
        tilde_out[g0] = gamma0;
        status_out[g0] = st;
        clamped_out[g0] = clamped;
        for (int64_t j = 0; j < p.n_ops; ++j) {
            const int64_t g = g0 + 1 + j;
            double gk;
            st = hard_group(s + g * p.n_cells, h + g * p.n_cells, p.n_cells, gamma_in[g],
                            gamma_prev[g], p.lambda_child, p.clamp_negative, &gk, &omega,
                            &clamped, c_out + g * p.n_cells);
            gamma_out[g] = gk;
            omega_out[g] = omega;
            tilde_out[g] = hard_combine(gk, gamma0);
            status_out[g] = st;
            clamped_out[g] = clamped;
        }
    }
}
