//! Saving and loading a [`ParamStore`] as safetensors, atomically.
//!
//! Tensor names are the parameter names (`cells.0.edges.3.sep_conv_3x3.dw1.weight`,
//! `stem.bn.running_mean`, ...), dtype F32, shapes as in the store (convolution weights
//! `[out, in/groups, k, k]`, linear `[out, in]`, exactly PyTorch's layouts). Optimiser state,
//! when saved, is stored under `momentum/<name>`. String metadata travels in the header.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::tensor::Tensor;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises the store's values (and, with `with_momentum`, optimiser momenta) and
/// `metadata` to safetensors bytes.
pub fn store_to_safetensors(
    store: &ParamStore,
    with_momentum: bool,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (_, p) in store.iter() {
        owned.push((
            p.name.clone(),
            p.value.shape().to_vec(),
            to_bytes(&p.value.to_vec()),
        ));
        if with_momentum && p.trainable {
            owned.push((
                format!("momentum/{}", p.name),
                p.value.shape().to_vec(),
                to_bytes(&p.momentum.to_vec()),
            ));
        }
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("safetensors: tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::Invalid(format!("safetensors: {e}")))?;
    canonical_header(bytes)
}

/// The same file with its JSON header written with sorted keys (the safetensors crate writes
/// the metadata map in hash order, which differs between runs), padded with spaces to a
/// multiple of 8 bytes as the format asks. Tensor offsets are relative to the data, which is
/// unchanged, so the file stays valid and the same store gives the same bytes.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |m: &str| Error::Invalid(format!("safetensors: {m}"));
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(|| bad("no header size"))?
            .try_into()
            .expect("8 bytes"),
    ) as usize;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| bad("header out of range"))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| bad(&format!("header: {e}")))?;
    // Compact JSON with every object's keys sorted (whatever serde_json's map order).
    value.sort_all_objects();
    let mut json = value.to_string();
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Saves the store to `path` atomically (see [`store_to_safetensors`]).
pub fn save_store(
    store: &ParamStore,
    path: &Path,
    with_momentum: bool,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &store_to_safetensors(store, with_momentum, metadata)?)
}

/// Loads values (and momenta, when present) into an already built `store` whose names and
/// shapes must match the file exactly: a missing tensor, an extra tensor, a wrong shape or
/// dtype is an error naming the file and the tensor. Returns the metadata.
pub fn load_store(store: &mut ParamStore, path: &Path) -> Result<HashMap<String, String>> {
    let bytes = fs::read(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    load_store_bytes(store, &bytes, &path.display().to_string())
}

/// [`load_store`] from bytes; `origin` names the source in errors.
pub fn load_store_bytes(
    store: &mut ParamStore,
    bytes: &[u8],
    origin: &str,
) -> Result<HashMap<String, String>> {
    let bad = |m: String| Error::Invalid(format!("{origin}: {m}"));
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut seen = 0usize;
    let ids: Vec<_> = store.ids().collect();
    let read = |name: &str, shape: &[usize]| -> Result<Option<Tensor>> {
        let t = match st.tensor(name) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        };
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name}: expected dtype F32, found {:?}",
                t.dtype()
            )));
        }
        if t.shape() != shape {
            return Err(bad(format!(
                "tensor {name}: expected shape {shape:?}, found {:?}",
                t.shape()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Tensor::from_vec(v, shape).map(Some)
    };
    for id in ids {
        let (name, shape, device, trainable) = {
            let p = store.get(id);
            (
                p.name.clone(),
                p.value.shape().to_vec(),
                p.value.device(),
                p.trainable,
            )
        };
        let v = read(&name, &shape)?
            .ok_or_else(|| bad(format!("tensor {name} (shape {shape:?}) is missing")))?;
        seen += 1;
        store.get_mut(id).value = v.to_device(device)?;
        if trainable {
            if let Some(m) = read(&format!("momentum/{name}"), &shape)? {
                seen += 1;
                store.get_mut(id).momentum = m.to_device(device)?;
            }
        }
    }
    if seen != st.len() {
        let known: std::collections::HashSet<String> = store
            .iter()
            .flat_map(|(_, p)| [p.name.clone(), format!("momentum/{}", p.name)])
            .collect();
        let extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !known.contains(*n))
            .map(|s| s.to_string())
            .collect();
        return Err(bad(format!(
            "unexpected tensors not in the model: {}",
            extra.join(", ")
        )));
    }
    Ok(meta.metadata().clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn store(shape_b: &[usize]) -> ParamStore {
        let mut rng = Rng::new(1);
        let mut s = ParamStore::new();
        s.add("a.weight", "w", Tensor::randn(&[2, 3], 1.0, &mut rng))
            .unwrap();
        s.add("b.weight", "w", Tensor::randn(shape_b, 1.0, &mut rng))
            .unwrap();
        s.add_buffer("b.running_mean", Tensor::randn(&[4], 1.0, &mut rng))
            .unwrap();
        s
    }

    #[test]
    fn round_trip_with_momentum_and_metadata() {
        let dir = std::env::temp_dir().join(format!("bayesnas-io-{}", std::process::id()));
        let path = dir.join("ckpt.safetensors");
        let mut a = store(&[4]);
        let id = a.find("a.weight").unwrap();
        a.get_mut(id).momentum = Tensor::full(&[2, 3], 0.25);
        let meta = HashMap::from([("progress".to_string(), "{\"epoch\":3}".to_string())]);
        save_store(&a, &path, true, &meta).unwrap();
        let mut b = store(&[4]);
        b.get_mut(b.find("a.weight").unwrap()).value = Tensor::full(&[2, 3], 0.0);
        let m = load_store(&mut b, &path).unwrap();
        assert_eq!(m["progress"], "{\"epoch\":3}");
        for (id, p) in a.iter() {
            assert_eq!(p.value.to_vec(), b.value(id).to_vec());
            assert_eq!(p.momentum.to_vec(), b.get(id).momentum.to_vec());
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// The same store and metadata give the same bytes, whatever the metadata map's hash
    /// order (each `HashMap` below has its own random hasher); the file still loads.
    #[test]
    fn checkpoint_bytes_are_canonical() {
        let a = store(&[4]);
        // Canonical header: the bytes do not depend on the metadata map's hash order.
        let pairs: Vec<(String, String)> = (0..12)
            .map(|i| (format!("key{i}"), format!("value \"{i}\"")))
            .collect();
        let once: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let meta: HashMap<String, String> = pairs.iter().cloned().collect();
                store_to_safetensors(&a, true, &meta).unwrap()
            })
            .collect();
        assert!(once.windows(2).all(|w| w[0] == w[1]), "header order varies");
        assert_eq!(once[0].len() % 8, 0);
        let mut back = store(&[4]);
        let meta = load_store_bytes(&mut back, &once[0], "canonical.safetensors").unwrap();
        assert_eq!(meta, pairs.iter().cloned().collect::<HashMap<_, _>>());
    }

    #[test]
    fn wrong_shape_and_garbage_are_clear_errors() {
        let a = store(&[4]);
        let bytes = store_to_safetensors(&a, false, &HashMap::new()).unwrap();
        let mut b = store(&[5]);
        let e = load_store_bytes(&mut b, &bytes, "x.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("b.weight") && e.contains("[5]"),
            "{e}"
        );
        let e = load_store_bytes(&mut b, b"garbage", "y.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("y.safetensors") && e.contains("not a safetensors"),
            "{e}"
        );
        let mut c = store(&[4]);
        c.add("extra", "w", Tensor::full(&[1], 0.0)).unwrap();
        let e = load_store_bytes(&mut c, &bytes, "z")
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra") && e.contains("missing"), "{e}");
    }
}
