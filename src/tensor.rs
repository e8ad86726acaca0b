//! Dense f32 tensors in NCHW order, contiguous, tagged with their device.

use crate::device::cuda::CudaBuffer;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::rng::Rng;

/// Where a tensor's elements live.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
    /// Memory of a CUDA device (shared copy-on-write buffer plus its device ordinal).
    Cuda(CudaBuffer),
}

/// A dense, contiguous f32 tensor. Image tensors are NCHW.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor from host data. `data.len()` must equal the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "Tensor::from_vec",
                expected: format!("{} elements for shape {shape:?}", numel(shape)),
                found: format!("{} elements", data.len()),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        })
    }

    /// A tensor from a storage (crate-internal: backends build their outputs with it).
    /// The caller guarantees `storage` holds `numel(shape)` elements.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage,
        }
    }

    /// Mutable storage (crate-internal: in-place kernels).
    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// A tensor of zeros on `device`.
    pub fn zeros(shape: &[usize], device: Device) -> Result<Tensor> {
        device.backend()?.zeros(shape)
    }

    /// A tensor filled with `value` on the CPU.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(vec![value; numel(shape)]),
        }
    }

    /// A one-element tensor of shape `[1]` on the CPU.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[1], value)
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The device holding the elements.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(b) => Device::Cuda(b.ordinal()),
        }
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Host slice of a CPU tensor.
    ///
    /// # Panics
    /// When the tensor is not on the CPU (a programming error inside a CPU kernel).
    pub fn cpu(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
            other => panic!("Tensor::cpu on a tensor on {}", other_device(other)),
        }
    }

    /// Mutable host slice of a CPU tensor (panics like [`Tensor::cpu`]).
    pub fn cpu_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
            other => panic!("Tensor::cpu_mut on a tensor on {}", other_device(other)),
        }
    }

    /// Copy of the elements in host memory, whatever the device (a device tensor waits for
    /// its stream).
    ///
    /// # Panics
    /// When the device fails the copy (a lost device); use [`Tensor::try_to_vec`] to get
    /// that as an error.
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec()
            .unwrap_or_else(|e| panic!("Tensor::to_vec: {e}"))
    }

    /// Copy of the elements in host memory, or the device's error.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        crate::device::counters::host_read();
        match &self.storage {
            Storage::Cpu(v) => Ok(v.clone()),
            // Device buffers hold at least one element (empty tensors included).
            Storage::Cuda(b) => b.to_host().map(|mut v| {
                v.truncate(self.numel());
                v
            }),
        }
    }

    /// Consume into host data (panics like [`Tensor::to_vec`]).
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => {
                crate::device::counters::host_read();
                v
            }
            // `to_vec` counts the read.
            Storage::Cuda(_) => self.to_vec(),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return shape_err("Tensor::item", "one element", &self.shape);
        }
        Ok(self.to_vec()[0])
    }

    /// The same elements viewed with another shape of equal size.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::Shape {
                op: "Tensor::reshape",
                expected: format!("{} elements", self.numel()),
                found: format!("shape {shape:?}"),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Copy to `device`.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let backend = device.backend()?;
        backend.upload(self.try_to_vec()?, &self.shape)
    }

    /// Normal(0, std^2) entries from `rng`.
    pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
        let data = (0..numel(shape))
            .map(|_| (rng.normal() as f32) * std)
            .collect();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        }
    }

    /// Uniform(lo, hi) entries from `rng`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
        let data = (0..numel(shape))
            .map(|_| rng.uniform_range(lo as f64, hi as f64) as f32)
            .collect();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        }
    }

    /// Kaiming-normal initialisation for a weight whose fan-in is the product of all dims but
    /// the first (conv `[out, in/groups, k, k]`, linear `[out, in]`): std = sqrt(2 / fan_in)
    /// (ReLU gain, fan-in mode; `torch.nn.init.kaiming_normal_` defaults).
    pub fn kaiming_normal(shape: &[usize], rng: &mut Rng) -> Tensor {
        let fan_in = fan_in(shape);
        Tensor::randn(shape, (2.0 / fan_in as f32).sqrt(), rng)
    }

    /// Kaiming-uniform initialisation as PyTorch's default for `Conv2d` and `Linear` weights
    /// (`kaiming_uniform_(a = sqrt(5))`): bound = 1 / sqrt(fan_in).
    pub fn kaiming_uniform(shape: &[usize], rng: &mut Rng) -> Tensor {
        let bound = 1.0 / (fan_in(shape) as f32).sqrt();
        Tensor::rand_uniform(shape, -bound, bound, rng)
    }

    /// Largest absolute difference to `other` (host comparison, for tests and checks).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        self.to_vec()
            .iter()
            .zip(other.to_vec().iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Whether every element is finite.
    pub fn all_finite(&self) -> bool {
        self.to_vec().iter().all(|v| v.is_finite())
    }
}

fn other_device(s: &Storage) -> Device {
    match s {
        Storage::Cpu(_) => Device::Cpu,
        Storage::Cuda(b) => Device::Cuda(b.ordinal()),
    }
}

/// Fan-in of a weight shape: product of all dimensions but the first.
pub fn fan_in(shape: &[usize]) -> usize {
    shape.iter().skip(1).product::<usize>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        assert!(Tensor::from_vec(vec![1.0; 5], &[2, 3]).is_err());
        let t = Tensor::from_vec(vec![1.0; 6], &[2, 3]).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.device(), Device::Cpu);
    }

    #[test]
    fn kaiming_normal_std() {
        let mut rng = Rng::new(0);
        let t = Tensor::kaiming_normal(&[64, 32, 3, 3], &mut rng);
        let v = t.to_vec();
        let var = v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64;
        let expect = 2.0 / (32.0 * 9.0);
        assert!((var / expect - 1.0).abs() < 0.05, "{var} vs {expect}");
        let u = Tensor::kaiming_uniform(&[10, 100], &mut rng).to_vec();
        assert!(u.iter().all(|x| x.abs() <= 0.1));
        assert!(u.iter().any(|x| x.abs() > 0.09));
    }
}
