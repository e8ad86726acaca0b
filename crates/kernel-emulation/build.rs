//! Compiles kernels/*.cu for the HOST with g++ (C++20) through shim/cuda_host_shim.h, plus
//! csrc/*.cpp (the `host_<kernel>` launchers, the barrier-order setting, test-only planted
//! kernels).
//!
//! BAYESNAS_EMU_SANITIZE=address (opt-in, used by tools/emulation-asan.sh) compiles all of it
//! with AddressSanitizer; the test binary must then run with the ASan runtime preloaded.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = dir.join("../..");
    let kernels = root.join("kernels");
    let shim = dir.join("shim/cuda_host_shim.h");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", dir.join("shim").display());
    println!("cargo:rerun-if-changed={}", dir.join("csrc").display());
    println!("cargo:rerun-if-env-changed=CXX");
    println!("cargo:rerun-if-env-changed=BAYESNAS_EMU_SANITIZE");
    let sanitize = std::env::var("BAYESNAS_EMU_SANITIZE").unwrap_or_default();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        panic!(
            "bayesnas-kernel-emulation needs a C++20 compiler to emulate the CUDA kernels on the \
             host: `{cxx}` was not found (install g++ >= 11, e.g. `apt-get install g++`, or \
             set CXX)"
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .expect("kernels/ folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    let mut b = cc::Build::new();
    b.cpp(true)
        .compiler(&cxx)
        .std("c++20")
        .opt_level(2)
        .include(kernels.join("include"))
        .flag("-x")
        .flag("c++")
        .flag("-include")
        .flag(shim.to_str().unwrap())
        .flag("-pthread")
        .flag("-fno-fast-math")
        .flag("-ffp-contract=off")
        .flag("-Wno-unknown-pragmas")
        .flag("-Wno-unused-parameter")
        .warnings(true);
    match sanitize.as_str() {
        "" => {}
        "address" => {
            b.flag("-fsanitize=address")
                .flag("-fno-omit-frame-pointer")
                .flag("-g");
        }
        other => panic!("BAYESNAS_EMU_SANITIZE={other}: only `address` is supported"),
    }
    for f in &files {
        b.file(f);
    }
    // csrc/*.cpp: the launchers, the barrier-order setting and the test-only planted kernels.
    let mut csrc: Vec<PathBuf> = std::fs::read_dir(dir.join("csrc"))
        .expect("csrc/ folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    csrc.sort();
    for f in &csrc {
        b.file(f);
    }
    b.compile("bayesnas_kernels_host");
    println!("cargo:rustc-link-lib=pthread");
    if sanitize == "address" {
        // The instrumented objects call into the ASan runtime (preloaded when the tests run).
        println!("cargo:rustc-link-lib=dylib=asan");
    }
}
