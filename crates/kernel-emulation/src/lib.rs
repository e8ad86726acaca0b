//! Host emulation of the CUDA kernels in `kernels/*.cu`.
//!
//! build.rs compiles every kernel file with g++ (C++20) through `shim/cuda_host_shim.h`, which
//! runs each block's threads as fibers on the calling thread, switching at `__syncthreads`,
//! with `__shared__` as block-shared statics. Each kernel `k` is launched by `host_k(Launch, ..)`
//! with the same arguments as on the device. The tests in `tests/` compare the kernels with
//! the engine's CPU backend on random shapes and values, so CPU-only CI checks the kernels'
//! index arithmetic and formulas (not their speed, nor device-only paths such as `__ldg`).
//!
//! Between two barriers the threads of a block run one after the other, in the order
//! [`set_thread_order`] picks for the calling thread (ascending thread index by default,
//! descending, or a seeded shuffle per block and barrier phase). A correct kernel gives
//! bit-identical results under every order; `tests/barrier_orders.rs` requires that, so a
//! missing `__syncthreads` shows up on the host as it could on the device.

/// The kernels' parameter structs: the engine's (generated from
/// `kernels/include/bayesnas_params.h`), so host launches and device launches share one type.
pub use bayesnas_engine::device::cuda::params;

pub use params::*;
pub mod multi;

/// Grid (`gx`, `gy`, `gz`) and 1-D block size (`bx`) of a host launch.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    pub gx: u32,
    pub gy: u32,
    pub gz: u32,
    pub bx: u32,
}

impl Launch {
    /// A 1-D launch of `gx` blocks of `bx` threads.
    pub fn d1(gx: u32, bx: u32) -> Launch {
        Launch {
            gx,
            gy: 1,
            gz: 1,
            bx,
        }
    }
    /// A 3-D grid of blocks of `bx` threads.
    pub fn d3(gx: u32, gy: u32, gz: u32, bx: u32) -> Launch {
        Launch { gx, gy, gz, bx }
    }
}

extern "C" {
    pub fn host_ew_unary(launch: Launch, x: *const f32, y: *mut f32, p: EwParams);
    pub fn host_ew_binary(launch: Launch, a: *const f32, b: *const f32, y: *mut f32, p: EwParams);
    pub fn host_ew_axpy(launch: Launch, x: *const f32, y: *mut f32, p: EwParams);
    pub fn host_scale_samples(
        launch: Launch,
        x: *const f32,
        s: *const f32,
        y: *mut f32,
        p: EwParams,
    );
    pub fn host_fill(launch: Launch, y: *mut f32, p: EwParams);
    pub fn host_reduce_dot_partial(
        l: Launch,
        a: *const f32,
        b: *const f32,
        out: *mut f64,
        p: ReduceParams,
    );
    pub fn host_dw_conv_fwd(launch: Launch, x: *const f32, w: *const f32, y: *mut f32, p: DwParams);
    /// A depthwise then a pointwise convolution (`sep_conv_fwd`): writes mid and y.
    pub fn host_sep_conv_fwd(
        launch: Launch,
        x: *const f32,
        wdw: *const f32,
        wpw: *const f32,
        mid: *mut f32,
        y: *mut f32,
        p: SepParams,
    );
    pub fn host_dw_conv_fwd_k3(
        launch: Launch,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        p: DwParams,
    );
    pub fn host_dw_conv_bwd_input(
        l: Launch,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        p: DwParams,
    );
    pub fn host_dw_conv_bwd_weight(
        l: Launch,
        x: *const f32,
        dy: *const f32,
        dw: *mut f32,
        p: DwParams,
    );
    pub fn host_dw_conv_bwd_weight_partial(
        l: Launch,
        x: *const f32,
        dy: *const f32,
        part: *mut f32,
        p: DwParams,
    );
    pub fn host_dw_conv_bwd_weight_finalize(
        launch: Launch,
        part: *const f32,
        dw: *mut f32,
        p: DwParams,
    );
    pub fn host_conv_fwd_direct(
        l: Launch,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        p: ConvParams,
    );
    pub fn host_conv_bwd_input_direct(
        l: Launch,
        dy: *const f32,
        w: *const f32,
        dx: *mut f32,
        p: ConvParams,
    );
    pub fn host_conv_bwd_weight_direct(
        l: Launch,
        x: *const f32,
        dy: *const f32,
        dw: *mut f32,
        p: ConvParams,
    );
    pub fn host_im2col(launch: Launch, x: *const f32, col: *mut f32, p: ConvParams);
    pub fn host_col2im(launch: Launch, col: *const f32, dx: *mut f32, p: ConvParams);
    /// `rm`, `rv` null: no running-statistics update.
    pub fn host_bn_stats(
        l: Launch,
        x: *const f32,
        m: *mut f32,
        v: *mut f32,
        is: *mut f32,
        rm: *mut f32,
        rv: *mut f32,
        p: BnParams,
    );
    /// `w` null: no affine weight.
    pub fn host_bn_curvature_input(
        l: Launch,
        hy: *const f32,
        is: *const f32,
        w: *const f32,
        hx: *mut f32,
        p: BnParams,
    );
    pub fn host_channel_affine(
        l: Launch,
        x: *const f32,
        sc: *const f32,
        sh: *const f32,
        y: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_fwd_apply(
        l: Launch,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_bwd_reduce(
        l: Launch,
        dy: *const f32,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        sd: *mut f32,
        sdx: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_bwd_apply(
        l: Launch,
        dy: *const f32,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        w: *const f32,
        sd: *const f32,
        sdx: *const f32,
        dx: *mut f32,
        p: BnParams,
    );
    /// The batch norm fused with ReLU (`bn_relu_*`): `y` is the rectified output whose
    /// `y > 0` masks dy (hy).
    pub fn host_bn_relu_fwd_apply(
        l: Launch,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_relu_bwd_reduce(
        l: Launch,
        dy: *const f32,
        y: *const f32,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        sd: *mut f32,
        sdx: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_relu_bwd_partial(
        launch: Launch,
        dy: *const f32,
        y: *const f32,
        x: *const f32,
        m: *const f32,
        part: *mut f64,
        p: BnParams,
    );
    pub fn host_bn_relu_bwd_apply(
        l: Launch,
        dy: *const f32,
        y: *const f32,
        x: *const f32,
        m: *const f32,
        is: *const f32,
        w: *const f32,
        sd: *const f32,
        sdx: *const f32,
        dx: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_relu_curvature_input(
        l: Launch,
        hy: *const f32,
        y: *const f32,
        is: *const f32,
        w: *const f32,
        hx: *mut f32,
        p: BnParams,
    );
    pub fn host_channel_sums(
        launch: Launch,
        x: *const f32,
        y: *const f32,
        out: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_stats_partial(launch: Launch, x: *const f32, part: *mut f64, p: BnParams);
    pub fn host_bn_stats_finalize(
        launch: Launch,
        x: *const f32,
        part: *const f64,
        m: *mut f32,
        v: *mut f32,
        is: *mut f32,
        rm: *mut f32,
        rv: *mut f32,
        p: BnParams,
    );
    pub fn host_bn_bwd_partial(
        launch: Launch,
        dy: *const f32,
        x: *const f32,
        m: *const f32,
        part: *mut f64,
        p: BnParams,
    );
    pub fn host_bn_bwd_finalize(
        launch: Launch,
        part: *const f64,
        is: *const f32,
        sd: *mut f32,
        sdx: *mut f32,
        p: BnParams,
    );
    pub fn host_channel_sums_partial(
        launch: Launch,
        x: *const f32,
        y: *const f32,
        part: *mut f64,
        p: BnParams,
    );
    pub fn host_channel_sums_finalize(launch: Launch, part: *const f64, out: *mut f32, p: BnParams);
    pub fn host_maxpool_fwd(launch: Launch, x: *const f32, y: *mut f32, a: *mut f32, p: PoolParams);
    pub fn host_maxpool_bwd(
        launch: Launch,
        a: *const f32,
        dy: *const f32,
        dx: *mut f32,
        p: PoolParams,
    );
    pub fn host_maxpool_bwd_scatter(
        launch: Launch,
        a: *const f32,
        dy: *const f32,
        dx: *mut f32,
        bad: *mut i32,
        p: PoolParams,
    );
    pub fn host_avgpool_fwd(launch: Launch, x: *const f32, y: *mut f32, p: PoolParams);
    pub fn host_avgpool_bwd(launch: Launch, dy: *const f32, dx: *mut f32, p: PoolParams);
    pub fn host_gap_fwd(launch: Launch, x: *const f32, y: *mut f32, p: PoolParams);
    pub fn host_gap_bwd(launch: Launch, dy: *const f32, dx: *mut f32, p: PoolParams);
    pub fn host_copy_channels(launch: Launch, s: *const f32, d: *mut f32, p: CopyParams);
    pub fn host_shift_crop(launch: Launch, x: *const f32, y: *mut f32, p: ShiftParams);
    pub fn host_shift_crop_bwd(launch: Launch, dy: *const f32, dx: *mut f32, p: ShiftParams);
    pub fn host_select_columns(
        launch: Launch,
        x: *const f32,
        idx: *const i64,
        y: *mut f32,
        p: ColumnsParams,
    );
    pub fn host_select_columns_bwd(
        launch: Launch,
        dy: *const f32,
        pos: *const i64,
        dx: *mut f32,
        p: ColumnsParams,
    );
    pub fn host_mixed_fwd(
        l: Launch,
        xs: *const *const f32,
        s0: *const f32,
        s: *const f32,
        y: *mut f32,
        p: MixedParams,
    );
    pub fn host_mixed_bwd(
        l: Launch,
        xs: *const *const f32,
        dy: *const f32,
        s0: *const f32,
        s: *const f32,
        dxs: *const *mut f32,
        part: *mut f64,
        p: MixedParams,
    );
    pub fn host_mixed_reduce_finalize(
        launch: Launch,
        part: *const f64,
        r: *mut f32,
        p: MixedParams,
    );
    pub fn host_mixed_curv(
        l: Launch,
        xs: *const *const f32,
        hy: *const f32,
        s0: *const f32,
        s: *const f32,
        hxs: *const *mut f32,
        part: *mut f64,
        p: MixedParams,
    );
    pub fn host_mixed_curv_finalize(
        l: Launch,
        part: *const f64,
        s0: *const f32,
        hs: *mut f32,
        hs0: *mut f32,
        p: MixedParams,
    );
    pub fn host_mixed_switch_grads(
        l: Launch,
        r: *const f32,
        s0: *const f32,
        s: *const f32,
        ds: *mut f32,
        ds0: *mut f32,
        p: MixedParams,
    );
    pub fn host_softmax_ce_fwd(
        l: Launch,
        z: *const f32,
        l: *const u32,
        pr: *mut f32,
        lr: *mut f64,
        p: LossParams,
    );
    pub fn host_softmax_ce_bwd(
        l: Launch,
        pr: *const f32,
        l: *const u32,
        dz: *mut f32,
        p: LossParams,
    );
    pub fn host_softmax_ce_curv_seed(launch: Launch, pr: *const f32, h: *mut f32, p: LossParams);
    pub fn host_softmax_ce_loss(launch: Launch, lr: *const f64, l: *mut f32, p: LossParams);
    pub fn host_count_correct(
        launch: Launch,
        z: *const f32,
        labels: *const u32,
        c: *mut f32,
        p: LossParams,
    );
    pub fn host_sgd_momentum(launch: Launch, w: *mut f32, g: *const f32, m: *mut f32, p: SgdParams);
    pub fn host_group_lasso_grad(
        l: Launch,
        v: *const *const f32,
        g: *const *mut f32,
        st: *const i64,
        te: *const i64,
        el: *const i64,
        c: *const f64,
        ct: *mut f64,
        pen: *mut f32,
        p: LassoParams,
    );
    pub fn host_group_ard_update(
        l: Launch,
        w: *const f64,
        h: *const f64,
        gi: *const f64,
        gp: *const f64,
        go: *mut f64,
        om: *mut f64,
        ti: *mut f64,
        st: *mut i32,
        cl: *mut i32,
        c: *mut f64,
        p: ArdParams,
    );
}

/// The order in which the host emulation resumes the threads of a block within one barrier
/// phase (the code between two `__syncthreads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    /// Thread 0 first, then 1, 2, ... (the default).
    #[default]
    Ascending,
    /// The last thread first.
    Descending,
    /// A fresh permutation for every block and every barrier phase, drawn from the seed.
    Shuffled(u64),
}

extern "C" {
    fn bz_host_set_thread_order(kind: i32, seed: u64);
    fn bz_host_thread_order_kind() -> i32;
    fn bz_host_thread_order_seed() -> u64;
}

/// Sets the barrier order of the host launches made from the calling OS thread (a
/// thread-local setting: tests running in parallel threads do not see each other's).
pub fn set_thread_order(order: Order) {
    let (kind, seed) = match order {
        Order::Ascending => (0, 0),
        Order::Descending => (1, 0),
        Order::Shuffled(seed) => (2, seed),
    };
    // SAFETY: sets two thread-local variables of the shim.
    unsafe { bz_host_set_thread_order(kind, seed) }
}

/// The barrier order of the calling OS thread's host launches.
pub fn thread_order() -> Order {
    // SAFETY: reads two thread-local variables of the shim.
    let (kind, seed) = unsafe { (bz_host_thread_order_kind(), bz_host_thread_order_seed()) };
    match kind {
        1 => Order::Descending,
        2 => Order::Shuffled(seed),
        _ => Order::Ascending,
    }
}

/// Runs `f` with the calling thread's barrier order set to `order`, then restores the previous
/// order (also when `f` panics).
pub fn with_thread_order<R>(order: Order, f: impl FnOnce() -> R) -> R {
    struct Restore(Order);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_thread_order(self.0);
        }
    }
    let _restore = Restore(thread_order());
    set_thread_order(order);
    f()
}

/// The orders `tests/barrier_orders.rs` compares: ascending, descending and three shuffles.
pub const TEST_ORDERS: [Order; 5] = [
    Order::Ascending,
    Order::Descending,
    Order::Shuffled(0x5eed_0001),
    Order::Shuffled(0x5eed_0002),
    Order::Shuffled(0xdead_beef_cafe),
];
