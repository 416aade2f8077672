//! Build script: finds OpenMM, generates the Rust declarations with bindgen and compiles the C++ shim.
//!
//! OpenMM is located through `OPENMM_HOME` (the `OpenMM.libs` folder of the PyPI wheel, or any
//! OpenMM 8 installation with `include/` and `lib/`). `.cargo/config.toml` points it at the copy that
//! `./setup.sh` installs; the `openmm-sys` dependency reads the same variable for the link lines.
//! bindgen needs libclang, found through `LIBCLANG_PATH` (also installed by `./setup.sh`).

use std::env;
use std::path::{Path, PathBuf};

fn fail(message: &str) -> ! {
    // A panic is how a build script reports an error; the message is what the user sees.
    panic!("\n\ncgflow build: {message}\n\n")
}

fn main() {
    println!("cargo:rerun-if-env-changed=OPENMM_HOME");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-changed=ffi/cgflow_openmm.h");
    println!("cargo:rerun-if-changed=ffi/cgflow_openmm.cpp");

    let home = env::var("OPENMM_HOME").unwrap_or_else(|_| {
        fail("OPENMM_HOME is not set. Run ./setup.sh, or set OPENMM_HOME to an OpenMM 8 installation.")
    });
    let home = PathBuf::from(home);
    let include = home.join("include");
    let lib = home.join("lib");
    if !include.join("OpenMM.h").is_file() || !include.join("OpenMMCWrapper.h").is_file() {
        fail(&format!(
            "no OpenMM headers in {} (OpenMM.h, OpenMMCWrapper.h). Run ./setup.sh first.",
            include.display()
        ));
    }
    if !lib.join("libOpenMM.so").is_file() && !lib.join("libOpenMM.dylib").is_file() {
        fail(&format!("no libOpenMM in {}. Run ./setup.sh first.", lib.display()));
    }
    // The OpenCL-for-CPUs install of `setup.sh --opencl-cpu` sits beside the installation
    // (.openmm/opencl next to .openmm/OpenMM.libs); taken before canonicalising, because
    // OpenMM.libs is a link into the virtual environment.
    let opencl_cpu = home.parent().map(|p| p.join("opencl")).unwrap_or_else(|| PathBuf::from("opencl"));
    println!("cargo:rustc-env=CGFLOW_OPENCL_CPU_DIR={}", opencl_cpu.display());
    let home = home.canonicalize().unwrap_or(home);
    let lib = home.join("lib");
    let include = home.join("include");

    compile_shim(&include);
    generate_bindings(&include);

    // The shared library is found at run time through an rpath to the installation, so that
    // binaries, tests and examples run without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=OpenMM");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=CGFLOW_OPENMM_PLUGIN_DIR={}", lib.join("plugins").display());
}

fn compile_shim(include: &Path) {
    cc::Build::new()
        .cpp(true)
        .file("ffi/cgflow_openmm.cpp")
        .include(include)
        .include("ffi")
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        // OpenMM's own headers trip -Wreorder; not ours to fix.
        .flag_if_supported("-Wno-reorder")
        .flag_if_supported("-Wno-unused-function")
        .opt_level(2)
        .compile("cgflow_openmm_shim");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

fn generate_bindings(include: &Path) {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("ffi/bindings.h")
        .clang_arg(format!("-I{}", include.display()))
        .clang_arg("-Iffi")
        // The shim: everything named cgf_*.
        .allowlist_function("cgf_.*")
        .allowlist_type("cgf_.*")
        .allowlist_var("CGF_.*")
        // From OpenMM's own C wrapper, only calls that cannot throw.
        .allowlist_function("OpenMM_Platform_getOpenMMVersion")
        .allowlist_function("OpenMM_Platform_getNumPlatforms")
        .allowlist_function("OpenMM_Platform_getPlatform")
        .allowlist_function("OpenMM_Platform_getName")
        .allowlist_function("OpenMM_Platform_getSpeed")
        .rustified_enum("cgf_integrator_kind")
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen failed: {e}. It needs libclang: run ./setup.sh, or set LIBCLANG_PATH to the folder holding libclang.so."
            ))
        });
    bindings
        .write_to_file(out.join("openmm_bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write the bindings: {e}")));
}
