//! Link settings of the extension module. It is installed as `site-packages/cgflow/_cgflow.abi3.so`
//! beside the `openmm` wheel, whose libOpenMM lies in `site-packages/OpenMM.libs/lib`: the run-time
//! search path names that folder relative to the module, so that `import cgflow` loads the very
//! libOpenMM that `import openmm` loads (one library, one set of registered platforms) in any
//! environment, and the wheel carries no copy of its own. The cgflow crate's own link lines
//! (`-lOpenMM`, the shim, libstdc++) come from its build script.

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../OpenMM.libs/lib");
}
