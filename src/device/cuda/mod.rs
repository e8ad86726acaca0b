//! The CUDA backend: the project's handwritten kernels (compiled to PTX by `build.rs` and
//! embedded in the binary) plus cuBLAS for dense GEMMs, on one stream per device.
//!
//! * The driver and cuBLAS are opened at run time (cudarc's dynamic loading): every build
//!   compiles this module, and a machine without CUDA gets a clear [`Error::Device`] from
//!   [`backend`], never a panic and never a silent fallback to the CPU.
//! * One context and one non-blocking stream per device; every kernel, copy, memset and GEMM
//!   is queued on it, so work is ordered without events (cudarc's per-buffer event tracking is
//!   disabled before the first allocation). Only methods that return host values
//!   (`sum_all`, `dot`, the softmax loss) and `Tensor::to_vec` wait for the stream.
//! * Memory comes from the device's stream-ordered pool (`cuMemAllocAsync`, which cudarc uses
//!   when the device supports memory pools); the pool's release threshold is raised so that
//!   freed blocks stay in the pool and the step loop does not call into the allocator's slow
//!   path. Buffers are shared copy-on-write between tensor clones.
//! * Kernel modules are loaded once when the backend is created; functions are looked up once
//!   and cached by entry name.
//! * Faults: a kernel fault surfaces at a later synchronisation or copy, so device errors
//!   name the last kernel launched ([`last_kernel`]); `BAYESNAS_CUDA_SYNC=1` ([`sync_mode`])
//!   synchronises after every launch and names the failing kernel and its grid.
//! * `backend.rs` implements [`crate::Backend`] by delegating to one launcher module per
//!   kernel family, as the CPU backend: `elementwise`, `gemm`, `conv`, `batchnorm`, `pool`,
//!   `structure`, `mixed`, `loss`, `optim`. Operands are validated by the checks every backend
//!   shares (`device/shape.rs`); kernel parameter structs and op codes come from the generated
//!   [`params`].

mod ard;
mod backend;
mod batchnorm;
mod conv;
mod elementwise;
mod gemm;
mod loss;
mod mixed;
mod optim;
#[allow(clippy::all, unused)]
pub mod params;
mod pool;
mod structure;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};

use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// The PTX modules compiled into this build, `(module, ptx)`. Empty without nvcc.
pub fn ptx_modules() -> &'static [(&'static str, &'static str)] {
    generated::PTX_MODULES
}

/// Threads per block of the 1-D grid-stride kernels (the kernel contract).
pub(crate) const BLOCK: u32 = 256;

/// Blocks the split reductions aim for (about 4 per SM of an H100/H200); used only through
/// shape-derived split counts, so results never depend on the device.
pub(crate) const TARGET_BLOCKS: usize = 528;

/// `v` as a kernel's `int32` parameter, or an error when it does not fit.
pub(crate) fn i32c(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Invalid(format!("cuda: size {v} exceeds the i32 range")))
}

/// `v` as a kernel's `int64` parameter.
pub(crate) fn i64c(v: usize) -> i64 {
    v as i64
}

/// Device address of element `index` of an array of `T` starting at device address `base`.
pub(crate) fn elem_at<T>(base: u64, index: usize) -> u64 {
    base + (index * std::mem::size_of::<T>()) as u64
}

// SAFETY: the parameter structs are `#[repr(C)]` plain data matching the C header the
// kernels are compiled with; they are passed by value as kernel arguments.
unsafe impl DeviceRepr for params::EwParams {}
// Device pointers by value: the struct is plain data for the kernel.
unsafe impl DeviceRepr for params::AddIntoParams {}
unsafe impl DeviceRepr for params::ReduceParams {}
unsafe impl DeviceRepr for params::SumsqMultiParams {}
unsafe impl DeviceRepr for params::DwParams {}
unsafe impl DeviceRepr for params::SepParams {}
unsafe impl DeviceRepr for params::ConvParams {}
unsafe impl DeviceRepr for params::BnParams {}
unsafe impl DeviceRepr for params::PoolParams {}
unsafe impl DeviceRepr for params::CopyParams {}
unsafe impl DeviceRepr for params::ColumnsParams {}
unsafe impl DeviceRepr for params::MixedParams {}
unsafe impl DeviceRepr for params::LossParams {}
unsafe impl DeviceRepr for params::LassoParams {}
unsafe impl DeviceRepr for params::AxpyMultiParams {}
unsafe impl DeviceRepr for params::SgdMultiParams {}
unsafe impl DeviceRepr for params::BnRunningParams {}
unsafe impl DeviceRepr for params::SgdParams {}
unsafe impl DeviceRepr for params::ShiftParams {}
unsafe impl DeviceRepr for params::ArdParams {}

/// Device memory of one tensor: a buffer shared between clones (copy-on-write) and the
/// ordinal of its device.
#[derive(Clone, Debug)]
pub struct CudaBuffer {
    buf: Arc<CudaSlice<f32>>,
    ordinal: usize,
    /// For the argmax of a max pooling: the window it was computed with.
    pool: Option<crate::device::Pool2dSpec>,
}

impl CudaBuffer {
    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The pooling window recorded on a max-pooling argmax.
    pub(crate) fn pool_spec(&self) -> Option<crate::device::Pool2dSpec> {
        self.pool
    }

    pub(crate) fn set_pool_spec(&mut self, spec: crate::device::Pool2dSpec) {
        self.pool = Some(spec);
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Raw device address (the stream orders every use, see the module docs).
    pub(crate) fn ptr(&self) -> u64 {
        let stream = self.buf.stream().clone();
        let (p, _sync) = self.buf.device_ptr(&stream);
        p
    }

    /// Copy to host memory (waits for the stream).
    ///
    /// (Kept next to the buffer's `Drop`, which makes the context current before the last
    /// reference frees the memory, whatever thread drops it.)
    pub fn to_host(&self) -> Result<Vec<f32>> {
        let stream = self.buf.stream().clone();
        stream
            .clone_dtoh(self.buf.as_ref())
            .map_err(drv("copy to host"))
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.buf) == 1 {
            let ctx = self.buf.context();
            // SAFETY: makes the buffer's (live) context current so that its stream-ordered
            // free succeeds on any thread; errors are left to cudarc's recorded-error state.
            unsafe {
                if cudarc::driver::result::ctx::get_current().ok().flatten() != Some(ctx.cu_ctx()) {
                    let _ = cudarc::driver::result::ctx::set_current(ctx.cu_ctx());
                }
            }
        }
    }
}

/// Maps a driver error into an engine error naming what failed. Kernels run asynchronously,
/// so a fault surfaces at a later synchronisation or copy: any error other than out of
/// memory also names the last kernel launched (see [`last_kernel`]).
pub(crate) fn drv<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| {
        Error::Device(driver_error_message(
            what,
            &format!("{e:?}"),
            last_kernel(),
            sync_mode(),
        ))
    }
}

/// The message of [`drv`], from its parts.
fn driver_error_message(what: &str, err: &str, last: Option<&str>, sync: bool) -> String {
    if err.contains("OUT_OF_MEMORY") || err.contains("ALLOC_FAILED") {
        format!("cuda: out of device memory during {what} ({err})")
    } else {
        format!("cuda: {what} failed: {err}{}", last_kernel_note(last, sync))
    }
}

/// The environment variable of the synchronous debug mode.
pub const SYNC_ENV: &str = "BAYESNAS_CUDA_SYNC";

/// Whether `BAYESNAS_CUDA_SYNC` asks for the synchronous debug mode: every kernel launch
/// (cuBLAS GEMMs included) is followed by a stream synchronisation, and a failure names the
/// kernel and its grid. Read once per process. Slow: for finding a faulting kernel, never
/// for timing.
pub fn sync_mode() -> bool {
    static SYNC: OnceLock<bool> = OnceLock::new();
    *SYNC.get_or_init(|| sync_mode_from(std::env::var(SYNC_ENV).ok().as_deref()))
}

/// `1`, `true`, `yes` or `on` (any case, surrounding spaces ignored) turn the mode on;
/// anything else, or no variable, leaves it off.
fn sync_mode_from(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        ["1", "true", "yes", "on"]
            .iter()
            .any(|t| v.eq_ignore_ascii_case(t))
    })
}

/// The last kernel launched in this process (any device): 0 = none yet, [`LAST_CUBLAS`] =
/// a cuBLAS GEMM, else 1 + the kernel's index in [`kernel_entries`]. One relaxed store per
/// launch.
static LAST_KERNEL: AtomicUsize = AtomicUsize::new(0);
const LAST_CUBLAS: usize = usize::MAX;

/// Name of the last kernel launched in this process, if any (`cuBLAS sgemm` for a GEMM).
pub fn last_kernel() -> Option<&'static str> {
    match LAST_KERNEL.load(Ordering::Relaxed) {
        0 => None,
        LAST_CUBLAS => Some("cuBLAS sgemm"),
        i => kernel_entries().get(i - 1).map(|(_, e)| *e),
    }
}

/// The suffix a device error gets when a kernel ran before it: the kernel launched last
/// (with asynchronous launches the faulting one is that or an earlier one).
fn last_kernel_note(last: Option<&str>, sync: bool) -> String {
    match (last, sync) {
        (None, _) => String::new(),
        (Some(k), true) => format!(" (last kernel launched: {k})"),
        (Some(k), false) => format!(
            " (last kernel launched: {k}; rerun with {SYNC_ENV}=1 or CUDA_LAUNCH_BLOCKING=1 to \
             name the faulting kernel)"
        ),
    }
}

/// The error of a kernel whose synchronisation failed in the synchronous debug mode.
fn kernel_failed_message(kernel: &str, cfg: &LaunchConfig, err: &str) -> String {
    format!(
        "cuda: kernel {kernel} failed: {err} (grid {:?}, block {:?}, {} B dynamic shared \
         memory; {SYNC_ENV}=1)",
        cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes
    )
}

/// The kernels and handles of one CUDA device.
pub struct CudaBackend {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS handles are not meant to be driven by several threads at once.
    blas_lock: Mutex<()>,
    /// Small immutable device arrays reused across calls: pointer arrays of the mixed op
    /// (the pool hands out the same addresses step after step) and vectors of ones.
    small: Mutex<SmallCache>,
    /// Kernel functions by entry name, with their index in [`kernel_entries`].
    functions: HashMap<String, (usize, CudaFunction)>,
    sms: u32,
}

/// See [`CudaBackend::cached_u64`] and [`CudaBackend::ones`].
#[derive(Default)]
struct SmallCache {
    u64s: HashMap<Vec<u64>, Arc<CudaSlice<u64>>>,
    ones: HashMap<usize, Arc<CudaSlice<f32>>>,
}

/// Entries kept before the cache is emptied (frees are stream-ordered, so queued kernels
/// still reading an evicted array are safe).
const SMALL_CACHE_MAX: usize = 4096;

// Registry of lazily created backends, one per ordinal; a failure is kept too (it names
// the reason, and retrying cannot fix a missing driver).
type Slot = Arc<OnceLock<std::result::Result<&'static CudaBackend, String>>>;
static REGISTRY: OnceLock<Mutex<HashMap<usize, Slot>>> = OnceLock::new();

/// The backend of CUDA device `ordinal`, created on first use. Errors (never panics) when
/// this build has no PTX, the CUDA driver library is absent, there is no such device, the
/// kernels do not load, or cuBLAS is missing.
pub fn backend(ordinal: usize) -> Result<&'static CudaBackend> {
    let slot = {
        let mut map = REGISTRY
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .map_err(|_| Error::Device("cuda: backend registry poisoned".into()))?;
        map.entry(ordinal).or_default().clone()
    };
    slot.get_or_init(|| {
        CudaBackend::create(ordinal)
            .map(|b| &*Box::leak(Box::new(b)))
            .map_err(|e| match e {
                Error::Device(m) => m,
                other => other.to_string(),
            })
    })
    .clone()
    .map_err(Error::Device)
}

/// Why CUDA cannot be used here, or `None` when device 0 is available.
pub fn unavailable_reason() -> Option<String> {
    backend(0).err().map(|e| match e {
        Error::Device(m) => m,
        other => other.to_string(),
    })
}

/// The kernel entry points of this build's PTX, `(module, entry)`.
pub fn kernel_entries() -> &'static [(&'static str, &'static str)] {
    generated::KERNEL_ENTRIES
}

impl CudaBackend {
    fn create(ordinal: usize) -> Result<CudaBackend> {
        if ptx_modules().is_empty() {
            return Err(Error::Device(format!(
                "cuda:{ordinal} requested but this build has no CUDA kernels (built without nvcc; \
                 rebuild with nvcc available, e.g. BAYESNAS_REQUIRE_NVCC=1)"
            )));
        }
        // SAFETY: only probes whether the shared library can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Device(format!(
                "cuda:{ordinal} requested but the CUDA driver library (libcuda.so) was not found \
                 (no NVIDIA driver on this machine, or set LD_LIBRARY_PATH to its folder)"
            )));
        }
        let created = std::panic::catch_unwind(|| CudaContext::new(ordinal));
        let ctx = match created {
            Err(_) => {
                return Err(Error::Device(format!(
                    "cuda:{ordinal}: the CUDA driver could not be initialised (the driver \
                     library panicked while loading)"
                )))
            }
            Ok(Err(e)) => {
                let count = std::panic::catch_unwind(CudaContext::device_count)
                    .ok()
                    .and_then(|r| r.ok());
                return Err(Error::Device(match count {
                    Some(c) if ordinal >= c.max(0) as usize => format!(
                        "cuda:{ordinal} requested but this machine has {c} CUDA device(s) ({e:?})"
                    ),
                    _ => format!("cuda:{ordinal}: cannot create a context: {e:?}"),
                }));
            }
            Ok(Ok(ctx)) => ctx,
        };
        // SAFETY: one stream per device orders every use of every buffer (module docs);
        // called before any buffer exists.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("stream creation"))?;
        Self::keep_pool_memory(&ctx)?;
        let mut functions = HashMap::new();
        for (module, ptx) in ptx_modules() {
            let m = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(*ptx))
                .map_err(|e| {
                    Error::Device(format!(
                        "cuda:{ordinal}: PTX module {module} does not load: {e:?} (a PTX ISA \
                         newer than the driver supports gives CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"
                    ))
                })?;
            for (index, (_, entry)) in kernel_entries()
                .iter()
                .enumerate()
                .filter(|(_, (m, _))| m == module)
            {
                let f = m.load_function(entry).map_err(|e| {
                    Error::Device(format!("cuda:{ordinal}: kernel {module}::{entry}: {e:?}"))
                })?;
                functions.insert(entry.to_string(), (index, f));
            }
        }
        // SAFETY: only probes whether the shared library can be opened.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device(format!(
                "cuda:{ordinal}: libcublas was not found (install the CUDA runtime libraries or \
                 set LD_LIBRARY_PATH)"
            )));
        }
        let blas = std::panic::catch_unwind(|| CudaBlas::new(stream.clone()))
            .map_err(|_| Error::Device(format!("cuda:{ordinal}: cuBLAS failed to load")))?
            .map_err(|e| Error::Device(format!("cuda:{ordinal}: cuBLAS handle: {e:?}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .unwrap_or(80)
            .max(1) as u32;
        Ok(CudaBackend {
            ordinal,
            name,
            ctx,
            stream,
            blas,
            blas_lock: Mutex::new(()),
            small: Mutex::new(SmallCache::default()),
            functions,
            sms,
        })
    }

    /// Keeps freed memory in the device's default pool (release threshold = max), so that
    /// the allocations of every step after the first are served from the pool.
    fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<()> {
        if !ctx.has_async_alloc() {
            return Ok(());
        }
        use cudarc::driver::result::mem_pool;
        // SAFETY: the device handle comes from a live context; the attribute takes a u64.
        unsafe {
            let pool = cudarc::driver::result::device::get_default_mem_pool(ctx.cu_device())
                .map_err(drv("memory pool query"))?;
            let mut threshold: u64 = u64::MAX;
            mem_pool::set_attribute(
                pool,
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            )
            .map_err(drv("memory pool setup"))?;
        }
        Ok(())
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream every operation of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Waits until every queued operation has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// Kernel entry by name, with its index in [`kernel_entries`].
    fn func(&self, name: &str) -> Result<&(usize, CudaFunction)> {
        self.functions.get(name).ok_or_else(|| {
            Error::Device(format!(
                "cuda:{}: kernel {name} is not in this build's PTX",
                self.ordinal
            ))
        })
    }

    /// Uninitialised device memory for `len` f32 (from the stream-ordered pool).
    pub(crate) fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: every caller writes the whole buffer before reading it.
        unsafe { self.stream.alloc::<f32>(len.max(1)) }.map_err(drv("allocation"))
    }

    /// Uninitialised device memory for `len` f64.
    pub(crate) fn alloc_f64(&self, len: usize) -> Result<CudaSlice<f64>> {
        // SAFETY: every caller writes the whole buffer before reading it.
        unsafe { self.stream.alloc::<f64>(len.max(1)) }.map_err(drv("allocation"))
    }

    /// Zeroed device memory.
    pub(crate) fn alloc_zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(drv("allocation"))
    }

    /// Wraps device memory into a tensor of `shape`.
    pub(crate) fn wrap(&self, buf: CudaSlice<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_storage(
            Storage::Cuda(CudaBuffer {
                buf: Arc::new(buf),
                ordinal: self.ordinal,
                pool: None,
            }),
            shape,
        )
    }

    /// Host data to device memory.
    pub(crate) fn htod<T: DeviceRepr + Copy>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        if v.is_empty() {
            // A one-element buffer keeps every address valid.
            // SAFETY: never read (length 0 for the kernels).
            return unsafe { self.stream.alloc::<T>(1) }.map_err(drv("allocation"));
        }
        self.stream.clone_htod(v).map_err(drv("copy to device"))
    }

    /// A device copy of `v`, shared with earlier calls that passed the same values (the
    /// contents never change).
    pub(crate) fn cached_u64(&self, v: Vec<u64>) -> Result<Arc<CudaSlice<u64>>> {
        let mut c = self.small.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = c.u64s.get(&v) {
            return Ok(s.clone());
        }
        if c.u64s.len() >= SMALL_CACHE_MAX {
            c.u64s.clear();
        }
        let s = Arc::new(self.htod(&v)?);
        c.u64s.insert(v, s.clone());
        Ok(s)
    }

    /// `n` ones on the device (shared, never written).
    pub(crate) fn ones(&self, n: usize) -> Result<Arc<CudaSlice<f32>>> {
        let mut c = self.small.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = c.ones.get(&n) {
            return Ok(s.clone());
        }
        if c.ones.len() >= SMALL_CACHE_MAX {
            c.ones.clear();
        }
        let s = Arc::new(self.htod(&vec![1.0f32; n])?);
        c.ones.insert(n, s.clone());
        Ok(s)
    }

    /// The buffer of a tensor on this device, or an error naming `what`.
    pub(crate) fn buf<'t>(&self, what: &'static str, t: &'t Tensor) -> Result<&'t CudaBuffer> {
        match t.storage() {
            Storage::Cuda(b) if b.ordinal == self.ordinal => Ok(b),
            _ => Err(Error::Device(format!(
                "{what}: tensor is on {} but the operation runs on cuda:{}",
                t.device(),
                self.ordinal
            ))),
        }
    }

    /// Device address of a device buffer.
    pub(crate) fn raw<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _sync) = cudarc::driver::DevicePtr::device_ptr(s, self.stream());
        p
    }

    /// Device address of a tensor on this device.
    pub(crate) fn ptr(&self, what: &'static str, t: &Tensor) -> Result<u64> {
        Ok(self.buf(what, t)?.ptr())
    }

    /// Device address of a tensor that is about to be written in place: its buffer is
    /// copied first when another tensor shares it (copy-on-write).
    pub(crate) fn ptr_mut(&self, what: &'static str, t: &mut Tensor) -> Result<u64> {
        self.buf(what, t)?;
        let Storage::Cuda(b) = t.storage_mut() else {
            unreachable!("checked above")
        };
        if Arc::get_mut(&mut b.buf).is_none() {
            let copy = self
                .stream
                .clone_dtod(b.buf.as_ref())
                .map_err(drv("copy-on-write"))?;
            b.buf = Arc::new(copy);
        }
        Ok(b.ptr())
    }

    /// Grid of a 1-D grid-stride kernel over `work` items (enough blocks to fill the GPU,
    /// never more than the work needs).
    pub(crate) fn grid_stride(&self, work: usize) -> LaunchConfig {
        let blocks = work.div_ceil(BLOCK as usize).max(1);
        let cap = (self.sms as usize) * 32;
        LaunchConfig {
            grid_dim: (blocks.min(cap) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `blocks` blocks of [`BLOCK`] threads (per-block reductions, one block per channel).
    pub(crate) fn blocks(&self, blocks: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (blocks.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Launches kernel `name` with the given raw pointer arguments followed by `params`.
    /// Records it as the last kernel launched; with [`sync_mode`], waits for it and names it
    /// (and its grid) if it failed.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &str,
        cfg: LaunchConfig,
        ptrs: &[u64],
        params: &P,
    ) -> Result<()> {
        let (index, f) = self.func(name)?;
        crate::device::counters::launch();
        let mut b = self.stream.launch_builder(f);
        for p in ptrs {
            b.arg(p);
        }
        b.arg(params);
        // SAFETY: the pointers address live buffers of the sizes the params describe (checked
        // by the callers); the stream orders the kernel after their writes and before their
        // frees.
        unsafe { b.launch(cfg) }.map_err(|e| {
            // A launch also reports a fault of an earlier kernel (errors are sticky).
            Error::Device(format!(
                "cuda: launch of {name} failed: {e:?}{}",
                last_kernel_note(last_kernel(), sync_mode())
            ))
        })?;
        LAST_KERNEL.store(index + 1, Ordering::Relaxed);
        self.sync_after(name, &cfg)
    }

    /// In the synchronous debug mode, waits for the kernel just queued; a failure names it.
    /// (A host wait, not a device-to-host read: not counted by `device::counters`.)
    fn sync_after(&self, kernel: &str, cfg: &LaunchConfig) -> Result<()> {
        if !sync_mode() {
            return Ok(());
        }
        self.stream
            .synchronize()
            .map_err(|e| Error::Device(kernel_failed_message(kernel, cfg, &format!("{e:?}"))))
    }

    /// Copies `len` f32 between device addresses (queued on the stream).
    pub(crate) fn copy_dtod(&self, dst: u64, src: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        // SAFETY: both ranges lie within live buffers (callers check sizes).
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst,
                src,
                len * std::mem::size_of::<f32>(),
                self.stream.cu_stream(),
            )
        }
        .map_err(drv("device copy"))
    }

    /// Row-major GEMM `C = alpha op(A) op(B) + beta C` (`C` is `m x n`), optionally strided-
    /// batched over `batch = (count, stride_a, stride_b, stride_c)` (element strides).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        (m, n, k): (usize, usize, usize),
        a: u64,
        b: u64,
        c: u64,
        beta: f32,
        batch: Option<(usize, usize, usize, usize)>,
    ) -> Result<()> {
        use cudarc::cublas::sys::cublasOperation_t as Op;
        let to_i = |v: usize| -> Result<i32> {
            i32::try_from(v).map_err(|_| Error::Invalid(format!("gemm: size {v} too large")))
        };
        // Row-major C^T = op(B)^T op(A)^T is column-major with the operands swapped.
        let (op_a, lda) = if trans_a {
            (Op::CUBLAS_OP_T, m)
        } else {
            (Op::CUBLAS_OP_N, k)
        };
        let (op_b, ldb) = if trans_b {
            (Op::CUBLAS_OP_T, k)
        } else {
            (Op::CUBLAS_OP_N, n)
        };
        let alpha = 1.0f32;
        crate::device::counters::launch();
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let _guard = self.blas_lock.lock().unwrap_or_else(|p| p.into_inner());
        let h = *self.blas.handle();
        // SAFETY: the addresses are live device buffers of the sizes implied by the
        // dimensions (callers check); cuBLAS runs on this backend's stream.
        let r = unsafe {
            match batch {
                None => cudarc::cublas::result::sgemm(
                    h,
                    op_b,
                    op_a,
                    to_i(n)?,
                    to_i(m)?,
                    to_i(k)?,
                    &alpha,
                    b as *const f32,
                    to_i(ldb.max(1))?,
                    a as *const f32,
                    to_i(lda.max(1))?,
                    &beta,
                    c as *mut f32,
                    to_i(n.max(1))?,
                ),
                Some((count, sa, sb, sc)) => cudarc::cublas::result::sgemm_strided_batched(
                    h,
                    op_b,
                    op_a,
                    to_i(n)?,
                    to_i(m)?,
                    to_i(k)?,
                    &alpha,
                    b as *const f32,
                    to_i(ldb.max(1))?,
                    sb as i64,
                    a as *const f32,
                    to_i(lda.max(1))?,
                    sa as i64,
                    &beta,
                    c as *mut f32,
                    to_i(n.max(1))?,
                    sc as i64,
                    to_i(count)?,
                ),
            }
        };
        r.map_err(|e| {
            Error::Device(format!(
                "cuda: cuBLAS sgemm failed: {e:?}{}",
                last_kernel_note(last_kernel(), sync_mode())
            ))
        })?;
        LAST_KERNEL.store(LAST_CUBLAS, Ordering::Relaxed);
        if sync_mode() {
            let shape = format!("sgemm m={m} n={n} k={k} batch={}", batch.map_or(1, |b| b.0));
            self.stream.synchronize().map_err(|e| {
                Error::Device(format!(
                    "cuda: kernel cuBLAS {shape} failed: {e:?} ({SYNC_ENV}=1)"
                ))
            })?;
        }
        Ok(())
    }

    /// Sum of f64 partials computed on the device, in index order on the host (the one
    /// synchronising read of a reduction).
    pub(crate) fn host_sum(&self, partials: &CudaSlice<f64>, len: usize) -> Result<f64> {
        crate::device::counters::host_read();
        let v = self
            .stream
            .clone_dtoh(partials)
            .map_err(drv("copy to host"))?;
        Ok(v[..len].iter().sum())
    }
}

/// Timing and bandwidth helpers for `bayesnas bench kernels`.
pub mod timing {
    use super::*;
    use cudarc::driver::sys::CUevent_flags;

    /// Median of the per-repetition GPU times (µs) of `f`, each measured with CUDA events
    /// around one call of `f`, after `warmup` untimed calls. (`bench kernels --calls N`
    /// makes `f` N back-to-back calls of the kernel.)
    pub fn median_us(
        be: &CudaBackend,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        for _ in 0..warmup {
            f()?;
        }
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t0 = be
                .stream
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))?;
            f()?;
            let t1 = be
                .stream
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))?;
            t1.synchronize().map_err(drv("event sync"))?;
            times.push(t0.elapsed_ms(&t1).map_err(drv("event time"))? as f64 * 1e3);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times[times.len() / 2])
    }

    /// The device's default memory pool (every buffer of the backend comes from it), or
    /// `None` on a device without memory pools.
    fn default_pool(be: &CudaBackend) -> Result<Option<cudarc::driver::sys::CUmemoryPool>> {
        if !be.ctx.has_async_alloc() {
            return Ok(None);
        }
        be.ctx.bind_to_thread().map_err(drv("bind context"))?;
        // SAFETY: the device handle comes from a live context.
        unsafe { cudarc::driver::result::device::get_default_mem_pool(be.ctx.cu_device()) }
            .map(Some)
            .map_err(drv("memory pool query"))
    }

    /// Peak bytes in use from the default pool since the backend came up or the last
    /// [`reset_pool_peak`] (the driver's `CU_MEMPOOL_ATTR_USED_MEM_HIGH`): every tensor and
    /// scratch buffer, not the context, the kernel images or cuBLAS's workspace. The figure
    /// to set against PyTorch's `torch.cuda.max_memory_allocated`. `None` without pools.
    pub fn pool_peak_bytes(be: &CudaBackend) -> Result<Option<u64>> {
        let Some(pool) = default_pool(be)? else {
            return Ok(None);
        };
        let mut v: u64 = 0;
        // SAFETY: a live pool; the attribute is a cuuint64_t.
        unsafe {
            cudarc::driver::result::mem_pool::get_attribute(
                pool,
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut v as *mut u64 as *mut std::ffi::c_void,
            )
        }
        .map_err(drv("memory pool query"))?;
        Ok(Some(v))
    }

    /// Restarts [`pool_peak_bytes`] from the memory in use now.
    pub fn reset_pool_peak(be: &CudaBackend) -> Result<()> {
        let Some(pool) = default_pool(be)? else {
            return Ok(());
        };
        let mut zero: u64 = 0;
        // SAFETY: a live pool; the attribute is a cuuint64_t, and 0 is the only value the
        // driver accepts for it (reset).
        unsafe {
            cudarc::driver::result::mem_pool::set_attribute(
                pool,
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut std::ffi::c_void,
            )
        }
        .map_err(drv("memory pool setup"))
    }

    /// Measured device-to-device copy bandwidth (GB/s, counting read + write) of a
    /// `bytes`-sized buffer: the reference the kernels' achieved bandwidth is compared with.
    pub fn dtod_bandwidth_gbs(be: &CudaBackend, bytes: usize, reps: usize) -> Result<f64> {
        let n = bytes / 4;
        let src = be.alloc_zeros(n)?;
        let dst = be.alloc(n)?;
        let (s, _g1) = src.device_ptr(&be.stream);
        let (d, _g2) = dst.device_ptr(&be.stream);
        let us = median_us(be, 2, reps, || be.copy_dtod(d, s, n))?;
        Ok(2.0 * (n * 4) as f64 / (us * 1e-6) / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel the backend launches is in the build's entry list (when PTX was built).
    #[test]
    fn launched_kernels_exist_in_the_ptx() {
        if ptx_modules().is_empty() {
            eprintln!("skipped: launched_kernels_exist_in_the_ptx: no PTX in this build");
            return;
        }
        let src = [
            include_str!("batchnorm.rs"),
            include_str!("conv.rs"),
            include_str!("elementwise.rs"),
            include_str!("ard.rs"),
            include_str!("loss.rs"),
            include_str!("mixed.rs"),
            include_str!("optim.rs"),
            include_str!("pool.rs"),
            include_str!("structure.rs"),
        ]
        .concat();
        let (mut missing, mut checked) = (Vec::new(), 0);
        for part in src.split("launch(").skip(1) {
            let name = part.trim_start().trim_start_matches('"');
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let quoted = part.trim_start().starts_with('"');
            if quoted {
                checked += 1;
                if !kernel_entries().iter().any(|(_, e)| *e == name) {
                    missing.push(name);
                }
            }
        }
        assert!(missing.is_empty(), "kernels not in the PTX: {missing:?}");
        assert!(checked >= 30, "only {checked} launches found");
    }

    #[test]
    fn sync_mode_is_opt_in() {
        for on in ["1", "true", "TRUE", "yes", "On", " 1 "] {
            assert!(sync_mode_from(Some(on)), "{on:?}");
        }
        for off in ["", "0", "false", "no", "off", "2", "sync"] {
            assert!(!sync_mode_from(Some(off)), "{off:?}");
        }
        assert!(!sync_mode_from(None));
    }

    #[test]
    fn device_errors_name_the_last_kernel() {
        let err =
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")";
        // Nothing launched yet: the message is unchanged.
        assert_eq!(
            driver_error_message("copy to host", err, None, false),
            format!("cuda: copy to host failed: {err}")
        );
        let m = driver_error_message("synchronize", err, Some("mixed_bwd"), false);
        assert_eq!(
            m,
            format!(
                "cuda: synchronize failed: {err} (last kernel launched: mixed_bwd; rerun with \
                 BAYESNAS_CUDA_SYNC=1 or CUDA_LAUNCH_BLOCKING=1 to name the faulting kernel)"
            )
        );
        // In the debug mode the kernel is already named by its own check.
        assert!(
            driver_error_message("synchronize", err, Some("mixed_bwd"), true)
                .ends_with("(last kernel launched: mixed_bwd)")
        );
        // Out of memory is not a kernel fault.
        let oom = driver_error_message("allocation", "CUDA_ERROR_OUT_OF_MEMORY", Some("k"), false);
        assert_eq!(
            oom,
            "cuda: out of device memory during allocation (CUDA_ERROR_OUT_OF_MEMORY)"
        );
    }

    #[test]
    fn sync_mode_failure_names_kernel_and_grid() {
        let cfg = LaunchConfig {
            grid_dim: (12, 3, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 1024,
        };
        assert_eq!(
            kernel_failed_message("mixed_bwd", &cfg, "CUDA_ERROR_ILLEGAL_ADDRESS"),
            "cuda: kernel mixed_bwd failed: CUDA_ERROR_ILLEGAL_ADDRESS (grid (12, 3, 1), block \
             (256, 1, 1), 1024 B dynamic shared memory; BAYESNAS_CUDA_SYNC=1)"
        );
    }

    #[test]
    fn unavailable_without_gpu_is_an_error_not_a_panic() {
        // On a machine with a GPU and PTX this is Ok; everywhere else a clear message.
        match backend(0) {
            Ok(b) => assert_eq!(b.ordinal(), 0),
            Err(Error::Device(m)) => assert!(m.contains("cuda"), "{m}"),
            Err(e) => panic!("unexpected error kind: {e:?}"),
        }
        // Out-of-range ordinals always fail cleanly.
        assert!(backend(4096).is_err());
    }
}
