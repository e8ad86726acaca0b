//! Per-thread counts of device-to-host reads and kernel launches, so that the CPU can check
//! how often a step would wait on a GPU and how many kernels it would launch.
//!
//! Counting rule:
//! * `host_reads`: one per copy of device data into host memory. [`Tensor::try_to_vec`]
//!   (and so `to_vec` and `item`) and [`Tensor::into_vec`] count one on every device (on
//!   the CPU the same calls count, since on a GPU they would be reads). Backend methods that
//!   return a host value count the reads their CUDA implementation makes: `sum_all`, `dot`
//!   and `sum_of_squares` (one for all its groups); the CPU backend counts one for each of
//!   these calls too. `softmax_cross_entropy`, `mixed_switch_grads` and `group_lasso_grad`
//!   leave their results on the device and count none. CUDA's `max_pool2d_backward` reads
//!   an offset-check flag only for an argmax that its own `max_pool2d_forward` did not make
//!   (one uploaded from the host); a training step never passes one, and the CPU backend
//!   counts none. The CUDA HARD update (`group_ard_update`) counts its six result copies.
//! * `launches`: on CUDA, every kernel launch and every cuBLAS call (device-to-device
//!   copies, memsets, uploads and allocations are not counted). On the CPU backend, one per
//!   call of a [`crate::Backend`] method that does work (every method but `device`), since
//!   each would be at least one launch on a GPU; a method that several kernels implement on
//!   CUDA still counts one on the CPU, so the CPU count is a lower bound of the CUDA count.
//!
//! The counts are thread-local: they count on the thread that calls the backend method or
//! reads the tensor. The engine's rayon workers only run the CPU kernels' inner loops
//! (which use host slices, never backend methods or tensor reads), so a computation counts
//! on the thread that drives it. Code run through [`crate::run_in_pool`] counts on the pool
//! thread running it: take the snapshots inside the same closure.
//!
//! [`Tensor::try_to_vec`]: crate::Tensor::try_to_vec
//! [`Tensor::into_vec`]: crate::Tensor::into_vec

use std::cell::Cell;

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
    static LAUNCHES: Cell<u64> = const { Cell::new(0) };
}

/// The counts of this thread since it started (or, from [`Counts::since`], between two
/// snapshots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Device-to-host reads.
    pub host_reads: u64,
    /// Kernel launches (on the CPU backend: backend calls that would be launches).
    pub launches: u64,
}

impl Counts {
    /// What was counted between `earlier` and `self` (both snapshots of the same thread).
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            host_reads: self.host_reads.wrapping_sub(earlier.host_reads),
            launches: self.launches.wrapping_sub(earlier.launches),
        }
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, earlier: Counts) -> Counts {
        self.since(earlier)
    }
}

/// This thread's counts so far.
pub fn snapshot() -> Counts {
    Counts {
        host_reads: HOST_READS.with(Cell::get),
        launches: LAUNCHES.with(Cell::get),
    }
}

/// The counts `f` adds on this thread, with its result.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    let before = snapshot();
    let r = f();
    (r, snapshot().since(before))
}

/// Counts one device-to-host read.
pub(crate) fn host_read() {
    HOST_READS.with(|c| c.set(c.get().wrapping_add(1)));
}

/// Counts one launch.
pub(crate) fn launch() {
    LAUNCHES.with(|c| c.set(c.get().wrapping_add(1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use crate::Device;

    #[test]
    fn counts_reads_and_calls_of_a_known_sequence() {
        let be = Device::Cpu.backend().unwrap();
        let t0 = snapshot();
        // Host-side constructors are neither reads nor launches.
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let b = Tensor::full(&[3], 2.0);
        assert_eq!(snapshot().since(t0), Counts::default());
        // Three backend calls: one launch each; `sum_all` also reads its result.
        let c = be.binary(&a, &b, crate::device::Binary::Mul).unwrap();
        let mut d = be.zeros(&[3]).unwrap();
        be.axpy(1.0, &c, &mut d).unwrap();
        let s = be.sum_all(&d).unwrap();
        assert_eq!(s, 12.0);
        let mid = snapshot();
        assert_eq!(
            mid - t0,
            Counts {
                host_reads: 1,
                launches: 4
            }
        );
        // Reads: to_vec, try_to_vec, item (one each); shape queries count nothing.
        assert_eq!(d.to_vec(), vec![2.0, 4.0, 6.0]);
        let _ = c.try_to_vec().unwrap();
        let one = Tensor::scalar(5.0);
        assert_eq!(one.item().unwrap(), 5.0);
        let _ = (d.shape(), d.numel(), d.device());
        let ((), inner) = measure(|| {
            let _ = be.dot(&a, &b).unwrap();
        });
        assert_eq!(
            inner,
            Counts {
                host_reads: 1,
                launches: 1
            }
        );
        assert_eq!(
            snapshot().since(mid),
            Counts {
                host_reads: 4,
                launches: 1
            }
        );
    }

    #[test]
    fn counts_are_per_thread() {
        let before = snapshot();
        std::thread::spawn(|| {
            let t = Tensor::scalar(1.0);
            let _ = t.to_vec();
            let _ = Device::Cpu.backend().unwrap().zeros(&[2]).unwrap();
            assert_eq!(
                snapshot(),
                Counts {
                    host_reads: 1,
                    launches: 1
                }
            );
        })
        .join()
        .unwrap();
        assert_eq!(snapshot().since(before), Counts::default());
    }
}
