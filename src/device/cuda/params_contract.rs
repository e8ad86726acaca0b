//! Kernel parameter structs as the kernel contract describes them, used until the generated
//! `params.rs` (bindgen output of `kernels/include/bayesnas_params.h`) is merged in. Every
//! struct is `#[repr(C)]` and passed by value after the pointers.
#![allow(dead_code)]

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EwParams {
    pub n: i64,
    pub inner: i64,
    pub op: i32,
    pub alpha: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceParams {
    pub n: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DwParams {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub k: i32,
    pub stride: i32,
    pub pad: i32,
    pub dil: i32,
    pub square: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvParams {
    pub n: i32,
    pub cin: i32,
    pub cout: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub k: i32,
    pub stride: i32,
    pub pad: i32,
    pub dil: i32,
    pub groups: i32,
    pub square: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BnParams {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
    pub eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolParams {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub k: i32,
    pub stride: i32,
    pub pad: i32,
    pub power: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyParams {
    pub n: i32,
    pub hw: i32,
    pub c_src: i32,
    pub c_dst: i32,
    pub c_copy: i32,
    pub src_off: i32,
    pub dst_off: i32,
    pub h: i32,
    pub w: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MixedParams {
    pub batch: i32,
    pub k: i32,
    pub inner: i64,
    pub parts: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LossParams {
    pub b: i32,
    pub k: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SgdParams {
    pub n: i64,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub grad_scale: f32,
}
