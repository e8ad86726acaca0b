//! Build script: compiles `kernels/*.cu` to PTX with nvcc when nvcc exists; otherwise warns
//! and builds the CPU-only engine. (The CUDA backend issue fills in the compilation; this
//! version already finds nvcc and degrades gracefully.)

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = env::var(var) {
            let p = Path::new(&home).join("bin/nvcc");
            if p.exists() {
                return Some(p);
            }
        }
    }
    if let Ok(path) = env::var("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.exists() {
                return Some(p);
            }
        }
    }
    let venv = root.join(".venv-cuda/lib");
    if let Ok(entries) = fs::read_dir(&venv) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/nvidia/cu13/bin/nvcc");
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=kernels");
    for v in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "BAYESNAS_REQUIRE_NVCC",
        "BAYESNAS_CUDA_ARCH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo::rustc-check-cfg=cfg(bayesnas_cuda)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kernels: Vec<PathBuf> = fs::read_dir(root.join("kernels"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .collect()
        })
        .unwrap_or_default();
    let nvcc = find_nvcc(&root);
    if nvcc.is_none() {
        if env::var("BAYESNAS_REQUIRE_NVCC").is_ok_and(|v| v == "1") {
            panic!("BAYESNAS_REQUIRE_NVCC=1 but nvcc was not found (set NVCC or CUDA_HOME, or install the pinned wheels into .venv-cuda)");
        }
        if !kernels.is_empty() {
            println!("cargo:warning=nvcc not found: building the CPU-only engine");
        }
    }
    // No kernels are compiled yet: the generated module lists none.
    fs::write(
        out.join("kernels.rs"),
        "/// PTX modules compiled into this build: (name, ptx).\npub const PTX_MODULES: &[(&str, &str)] = &[];\n",
    )
    .unwrap();
}
