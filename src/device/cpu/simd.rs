//! Run-time instruction-set dispatch of the CPU kernels: one [`Isa`], the multiply-add
//! flavours of the kernels generic over [`Madd`], and the `isa_dispatch!` macro that compiles
//! a kernel once per instruction set and picks the copy at run time.
//!
//! Kernels written without [`Madd`] are the same operations in the same order in every copy
//! (Rust never contracts `a * b + c` into a fused multiply-add by itself), so all their
//! copies give bitwise identical results. Kernels generic over [`Madd`] round each
//! multiply-add once in the AVX2/AVX-512 copies (`mul_add`, one FMA instruction) and twice in
//! the portable copy.

/// Which compiled copy of a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// Portable code (whatever the build's target features allow).
    Base,
    /// The same code compiled with AVX2 and FMA enabled.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// The same code compiled with AVX-512F as well (16-wide vectors).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest copy this CPU runs.
    pub(super) fn detect() -> Isa {
        #[cfg(test)]
        if FORCE_BASE.with(|f| f.get()) {
            return Isa::Base;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            return Isa::Avx2Fma;
        }
        Isa::Base
    }

    /// The copy for kernels whose AVX-512 copy measured slower or equal (the convolution
    /// weight-gradient dot products, the batch-norm and most pooling kernels): AVX2 in its
    /// place.
    pub(super) fn at_most_avx2(self) -> Isa {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2Fma,
            other => other,
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: make [`Isa::detect`] pick the portable copies (for calls from this thread).
    static FORCE_BASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: runs `f` with the portable copies of the kernels.
#[cfg(test)]
pub(super) fn with_portable_kernels<R>(f: impl FnOnce() -> R) -> R {
    FORCE_BASE.with(|b| b.set(true));
    let r = f();
    FORCE_BASE.with(|b| b.set(false));
    r
}

/// `a * b + c`, rounded once where the copy of the kernel has fused multiply-add.
pub(super) trait Madd {
    /// Whether the copy has 16-wide vectors (AVX-512).
    const WIDE: bool = false;
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Separate multiply and add (the portable copy: `mul_add` would be a libm call there).
pub(super) struct Separate;

impl Madd for Separate {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Fused multiply-add (only in the copy compiled with FMA, where it is one instruction).
#[cfg(target_arch = "x86_64")]
pub(super) struct Fused;

#[cfg(target_arch = "x86_64")]
impl Madd for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Fused multiply-add in the copy compiled with AVX-512F (the same arithmetic as [`Fused`],
/// so both copies give bitwise the same results).
#[cfg(target_arch = "x86_64")]
pub(super) struct Fused512;

#[cfg(target_arch = "x86_64")]
impl Madd for Fused512 {
    const WIDE: bool = true;
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Defines `$name(isa, args..)` running the portable copy of `$imp` or, on AVX2+FMA
/// (AVX-512F) CPUs, the copy of `$imp` compiled with those features enabled (`$imp` should be
/// `#[inline(always)]`). With `$imp::<Madd>`, the copies instantiate `$imp` with
/// [`Separate`], [`Fused`] and [`Fused512`] respectively.
macro_rules! isa_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $imp:ident::<Madd>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $crate::device::cpu::simd::isa_dispatch! {
            @copies $(#[$meta])* $vis fn $name($($arg: $ty),*) $(-> $ret)?;
            $imp::<$crate::device::cpu::simd::Separate>,
            $imp::<$crate::device::cpu::simd::Fused>,
            $imp::<$crate::device::cpu::simd::Fused512>
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $imp:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $crate::device::cpu::simd::isa_dispatch! {
            @copies $(#[$meta])* $vis fn $name($($arg: $ty),*) $(-> $ret)?; $imp, $imp, $imp
        }
    };
    (@copies $(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;
        $base:path, $avx2:path, $avx512:path) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::device::cpu::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                $avx2($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                $avx512($($arg),*)
            }

            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx2Fma` is only produced after detecting AVX2 and FMA.
                $crate::device::cpu::simd::Isa::Avx2Fma => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx512` is only produced after detecting AVX2, FMA and
                // AVX-512F.
                $crate::device::cpu::simd::Isa::Avx512 => unsafe { avx512($($arg),*) },
                $crate::device::cpu::simd::Isa::Base => $base($($arg),*),
            }
        }
    };
}
pub(super) use isa_dispatch;
