//! The FFI boundary: the bindgen declarations and the only `unsafe` code in the crate.
//!
//! Each function here calls one C function of the shim (`ffi/cgflow_openmm.h`) or of OpenMM's C
//! wrapper and turns its status into a [`Result`]. Soundness rests on three facts stated once here
//! and referred to below:
//! 1. The shim catches every C++ exception, so no unwinding crosses into Rust.
//! 2. Handles come from the matching create function, are non-null (checked), and are freed exactly
//!    once by `Drop` of the owning wrapper.
//! 3. Every buffer passed is a live Rust slice whose length was checked against the size the C side
//!    will read or write (particle count x 3, configuration count, or the stated capacity).

#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, missing_docs)]

use std::ffi::{CStr, CString};
use std::ptr;

use crate::error::{Error, Result};

mod raw {
    #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code)]
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/openmm_bindings.rs"));
}

pub use raw::cgf_integrator_kind as IntegratorKind;

fn new_error() -> raw::cgf_error {
    raw::cgf_error { message: [0; raw::CGF_ERROR_MESSAGE_LEN as usize] }
}

fn error_text(error: &raw::cgf_error) -> String {
    let bytes: Vec<u8> = error.message.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check(status: i32, error: &raw::cgf_error) -> Result<()> {
    if status == raw::CGF_OK as i32 {
        Ok(())
    } else {
        let message = error_text(error);
        Err(Error::OpenMm(if message.is_empty() { "unknown error".into() } else { message }))
    }
}

fn c_string(text: &str, what: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::invalid(format!("{what} contains a NUL byte")))
}

fn buffer_text(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

// ---- OpenMM's C wrapper: platform registry queries (these calls cannot throw) -------------------

/// The OpenMM version string, e.g. "8.6.1".
pub fn openmm_version() -> String {
    // SAFETY: getOpenMMVersion returns a pointer to a static, NUL-terminated string owned by
    // libOpenMM; it does not throw.
    unsafe {
        let p = raw::OpenMM_Platform_getOpenMMVersion();
        if p.is_null() {
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Names and speeds of the platforms registered so far (after plugins are loaded).
pub fn registered_platforms() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    // SAFETY: getNumPlatforms does not throw; each index passed to getPlatform is in
    // 0..getNumPlatforms, so it returns a valid pointer to a registry-owned Platform whose name is
    // a NUL-terminated string that lives as long as the registry (the process).
    unsafe {
        let n = raw::OpenMM_Platform_getNumPlatforms();
        for i in 0..n {
            let platform = raw::OpenMM_Platform_getPlatform(i);
            if platform.is_null() {
                continue;
            }
            let name = CStr::from_ptr(raw::OpenMM_Platform_getName(platform)).to_string_lossy().into_owned();
            out.push((name, raw::OpenMM_Platform_getSpeed(platform)));
        }
    }
    out
}

// ---- the shim: plugins and threads ------------------------------------------------------------------

/// Loads the plugins in `directory`; returns how many loaded.
pub fn load_plugins(directory: &str) -> Result<usize> {
    let dir = c_string(directory, "plugin directory")?;
    let mut loaded = 0i32;
    let mut error = new_error();
    // SAFETY: (1); `dir` is a valid NUL-terminated string and `loaded`/`error` are live locals.
    let status = unsafe { raw::cgf_load_plugins(dir.as_ptr(), &mut loaded, &mut error) };
    check(status, &error)?;
    Ok(loaded.max(0) as usize)
}

/// Loads the shared library at `path` with global symbol visibility (see the shim's header).
pub fn load_library_global(path: &str) -> Result<()> {
    let path = c_string(path, "library path")?;
    let mut error = new_error();
    // SAFETY: (1); `path` is a valid NUL-terminated string and `error` a live local. Loading a
    // library runs its initialisers; the only caller passes the OpenCL loader that setup.sh linked.
    let status = unsafe { raw::cgf_load_library_global(path.as_ptr(), &mut error) };
    check(status, &error)
}

/// The plugin load failures OpenMM recorded, one string each.
pub fn plugin_load_failures() -> Result<Vec<String>> {
    let mut buffer = vec![0u8; 16384];
    let mut error = new_error();
    // SAFETY: (1), (3): the buffer's true length is passed.
    let status = unsafe { raw::cgf_plugin_load_failures(buffer.as_mut_ptr().cast(), buffer.len() as i64, &mut error) };
    check(status, &error)?;
    Ok(buffer_text(&buffer).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut error = new_error();
    // SAFETY: (1); plain integer argument and a live error struct.
    let status = unsafe { raw::cgf_pin_current_thread(cpu as i32, &mut error) };
    check(status, &error)
}

/// CPU indices the calling thread may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let mut cpus = vec![0i32; 1024];
    let mut count = 0i32;
    let mut error = new_error();
    // SAFETY: (1), (3): capacity equals the buffer length; the shim writes at most that many.
    let status = unsafe { raw::cgf_allowed_cpus(cpus.as_mut_ptr(), cpus.len() as i32, &mut count, &mut error) };
    check(status, &error)?;
    let count = (count.max(0) as usize).min(cpus.len());
    Ok(cpus[..count].iter().map(|&c| c as usize).collect())
}

// ---- systems ---------------------------------------------------------------------------------------------

/// Owner of a `cgf_system` handle.
pub struct SystemHandle {
    ptr: *mut raw::cgf_system,
}

// SAFETY: a System is only read after construction. Its const accessors have no hidden mutable
// state; the operations that do touch global state (XML serialization, whose number formatting is
// not re-entrant, and Context creation, which copies the System) hold one lock inside the shim. So
// sharing and sending the handle between threads is sound.
unsafe impl Send for SystemHandle {}
unsafe impl Sync for SystemHandle {}

impl Drop for SystemHandle {
    fn drop(&mut self) {
        // SAFETY: (2): ptr came from cgf_system_from_xml/replicate and is freed only here.
        unsafe { raw::cgf_system_destroy(self.ptr) }
    }
}

impl SystemHandle {
    fn from_raw(ptr: *mut raw::cgf_system) -> Result<Self> {
        if ptr.is_null() {
            return Err(Error::OpenMm("the shim returned no System".into()));
        }
        Ok(Self { ptr })
    }

    /// Parses OpenMM XML.
    pub fn from_xml(xml: &str) -> Result<Self> {
        let text = c_string(xml, "System XML")?;
        let mut out = ptr::null_mut();
        let mut error = new_error();
        // SAFETY: (1); `text` is NUL-terminated; `out` receives a new handle on success.
        let status = unsafe { raw::cgf_system_from_xml(text.as_ptr(), &mut out, &mut error) };
        check(status, &error)?;
        Self::from_raw(out)
    }

    /// Number of particles.
    pub fn num_particles(&self) -> usize {
        // SAFETY: (2): valid handle; the accessor cannot throw.
        unsafe { raw::cgf_system_num_particles(self.ptr).max(0) as usize }
    }

    /// Names of the forces, in order.
    pub fn force_names(&self) -> Result<Vec<String>> {
        // SAFETY: (2): valid handle; the accessor cannot throw.
        let n = unsafe { raw::cgf_system_num_forces(self.ptr) };
        let mut names = Vec::with_capacity(n.max(0) as usize);
        for i in 0..n {
            let mut buffer = vec![0u8; 256];
            let mut error = new_error();
            // SAFETY: (1), (2), (3): index in range, buffer length passed.
            let status = unsafe {
                raw::cgf_system_force_name(self.ptr, i, buffer.as_mut_ptr().cast(), buffer.len() as i64, &mut error)
            };
            check(status, &error)?;
            names.push(buffer_text(&buffer));
        }
        Ok(names)
    }

    /// Particle masses in dalton.
    pub fn masses(&self) -> Result<Vec<f64>> {
        let mut masses = vec![0.0; self.num_particles()];
        let mut error = new_error();
        // SAFETY: (1), (2), (3): `masses` holds num_particles values, as the shim writes.
        let status = unsafe { raw::cgf_system_masses(self.ptr, masses.as_mut_ptr(), &mut error) };
        check(status, &error)?;
        Ok(masses)
    }

    /// Bonded particle pairs (HarmonicBondForce and CustomBondForce).
    pub fn bonds(&self) -> Result<Vec<(usize, usize)>> {
        let mut capacity = 4 * self.num_particles().max(1);
        loop {
            let mut pairs = vec![0i32; 2 * capacity];
            let mut count = 0i64;
            let mut error = new_error();
            // SAFETY: (1), (2), (3): `pairs` holds 2 x capacity values and the capacity is passed.
            let status =
                unsafe { raw::cgf_system_bonds(self.ptr, pairs.as_mut_ptr(), capacity as i64, &mut count, &mut error) };
            check(status, &error)?;
            let count = count.max(0) as usize;
            if count <= capacity {
                return Ok(pairs[..2 * count].chunks_exact(2).map(|p| (p[0] as usize, p[1] as usize)).collect());
            }
            capacity = count;
        }
    }

    /// Serializes to OpenMM XML.
    pub fn to_xml(&self) -> Result<String> {
        let mut out: *mut std::os::raw::c_char = ptr::null_mut();
        let mut error = new_error();
        // SAFETY: (1), (2); on success `out` is a new[]-allocated NUL-terminated string that we copy
        // and hand back to cgf_string_free exactly once.
        unsafe {
            let status = raw::cgf_system_to_xml(self.ptr, &mut out, &mut error);
            check(status, &error)?;
            if out.is_null() {
                return Err(Error::OpenMm("serialization returned nothing".into()));
            }
            let text = CStr::from_ptr(out).to_string_lossy().into_owned();
            raw::cgf_string_free(out);
            Ok(text)
        }
    }

    /// A copy with flat-bottomed harmonic dihedral restraints added (`atoms`: 4 per restraint).
    pub fn with_torsion_restraints(
        &self,
        atoms: &[i32],
        k: &[f64],
        theta0: &[f64],
        half_width: &[f64],
    ) -> Result<SystemHandle> {
        let count = k.len();
        if atoms.len() != 4 * count || theta0.len() != count || half_width.len() != count {
            return Err(Error::invalid("restraints: 4 atoms, one force constant, centre and half-width each"));
        }
        let mut out = ptr::null_mut();
        let mut error = new_error();
        // SAFETY: (1), (2), (3): atoms holds 4 x count values, k, theta0 and half_width count values each.
        let status = unsafe {
            raw::cgf_system_add_torsion_restraints(
                self.ptr,
                atoms.as_ptr(),
                k.as_ptr(),
                theta0.as_ptr(),
                half_width.as_ptr(),
                count as i64,
                &mut out,
                &mut error,
            )
        };
        check(status, &error)?;
        Self::from_raw(out)
    }

    /// Builds the copy-trick system; returns it with the per-copy energy offset in kJ/mol.
    pub fn replicate(&self, copies: usize, cutoff_nm: f64) -> Result<(SystemHandle, f64)> {
        let copies = i32::try_from(copies).map_err(|_| Error::invalid("too many copies"))?;
        let mut out = ptr::null_mut();
        let mut offset = 0.0;
        let mut error = new_error();
        // SAFETY: (1), (2); `out` and `offset` are live locals written on success.
        let status =
            unsafe { raw::cgf_system_replicate(self.ptr, copies, cutoff_nm, &mut out, &mut offset, &mut error) };
        check(status, &error)?;
        Ok((Self::from_raw(out)?, offset))
    }
}

// ---- contexts ----------------------------------------------------------------------------------------------

/// Integrator settings passed to the shim.
#[derive(Debug, Clone, Copy)]
pub struct IntegratorSpec {
    /// Which integrator.
    pub kind: IntegratorKind,
    /// Temperature (Langevin only).
    pub temperature_k: f64,
    /// Friction (Langevin only).
    pub friction_per_ps: f64,
    /// Time step (Langevin only).
    pub step_ps: f64,
    /// Random seed (Langevin only; 0 = chosen by OpenMM).
    pub seed: i32,
}

/// Owner of a `cgf_context` handle.
pub struct ContextHandle {
    ptr: *mut raw::cgf_context,
    num_particles: usize,
}

// SAFETY: an OpenMM Context may be used from any thread as long as calls are not concurrent; the
// handle is only reachable through `&mut self` for every call that touches it, so sending it to
// another thread is sound. It is deliberately not Sync.
unsafe impl Send for ContextHandle {}

impl Drop for ContextHandle {
    fn drop(&mut self) {
        // SAFETY: (2): ptr came from cgf_context_create and is freed only here.
        unsafe { raw::cgf_context_destroy(self.ptr) }
    }
}

impl ContextHandle {
    /// Creates a context for `system` on `platform` with string properties.
    pub fn create(
        system: &SystemHandle,
        platform: &str,
        properties: &[(String, String)],
        integrator: IntegratorSpec,
    ) -> Result<Self> {
        let name = c_string(platform, "platform name")?;
        let keys = properties.iter().map(|(k, _)| c_string(k, "property name")).collect::<Result<Vec<_>>>()?;
        let values = properties.iter().map(|(_, v)| c_string(v, "property value")).collect::<Result<Vec<_>>>()?;
        let key_ptrs: Vec<*const std::os::raw::c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let value_ptrs: Vec<*const std::os::raw::c_char> = values.iter().map(|v| v.as_ptr()).collect();
        let spec = raw::cgf_integrator_spec {
            kind: integrator.kind,
            temperature_k: integrator.temperature_k,
            friction_per_ps: integrator.friction_per_ps,
            step_ps: integrator.step_ps,
            seed: integrator.seed,
        };
        let mut out = ptr::null_mut();
        let mut error = new_error();
        // SAFETY: (1), (2); the key/value pointer arrays have `properties.len()` entries pointing at
        // CStrings that outlive the call; the shim copies the System.
        let status = unsafe {
            raw::cgf_context_create(
                system.ptr,
                name.as_ptr(),
                key_ptrs.as_ptr(),
                value_ptrs.as_ptr(),
                properties.len() as i32,
                &spec,
                &mut out,
                &mut error,
            )
        };
        check(status, &error)?;
        if out.is_null() {
            return Err(Error::OpenMm("the shim returned no Context".into()));
        }
        Ok(Self { ptr: out, num_particles: system.num_particles() })
    }

    /// Number of particles of the context's system.
    pub fn num_particles(&self) -> usize {
        self.num_particles
    }

    /// The platform's name.
    pub fn platform_name(&self) -> Result<String> {
        let mut buffer = vec![0u8; 256];
        let mut error = new_error();
        // SAFETY: (1), (2), (3).
        let status = unsafe {
            raw::cgf_context_platform_name(self.ptr, buffer.as_mut_ptr().cast(), buffer.len() as i64, &mut error)
        };
        check(status, &error)?;
        Ok(buffer_text(&buffer))
    }

    /// A platform property's value in this context.
    pub fn platform_property(&self, key: &str) -> Result<String> {
        let key = c_string(key, "property name")?;
        let mut buffer = vec![0u8; 1024];
        let mut error = new_error();
        // SAFETY: (1), (2), (3).
        let status = unsafe {
            raw::cgf_context_platform_property(
                self.ptr,
                key.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len() as i64,
                &mut error,
            )
        };
        check(status, &error)?;
        Ok(buffer_text(&buffer))
    }

    fn check_len(&self, len: usize, what: &str, configs: usize) -> Result<()> {
        let expected = configs * self.num_particles * 3;
        if len != expected {
            return Err(Error::invalid(format!("{what}: expected {expected} values, got {len}")));
        }
        Ok(())
    }

    /// Evaluates `energies.len()` configurations in one call. `forces` may be `None`.
    pub fn evaluate_batch(
        &mut self,
        positions_nm: &[f64],
        energies_kj: &mut [f64],
        forces: Option<&mut [f64]>,
    ) -> Result<()> {
        let configs = energies_kj.len();
        self.check_len(positions_nm.len(), "positions", configs)?;
        let forces_ptr = match forces {
            Some(f) => {
                self.check_len(f.len(), "forces", configs)?;
                f.as_mut_ptr()
            }
            None => ptr::null_mut(),
        };
        let configs = i32::try_from(configs).map_err(|_| Error::invalid("batch too large"))?;
        let mut error = new_error();
        // SAFETY: (1), (2), (3): positions and forces hold configs x particles x 3 values and
        // energies holds configs values, as checked above.
        let status = unsafe {
            raw::cgf_context_evaluate_batch(
                self.ptr,
                positions_nm.as_ptr(),
                configs,
                energies_kj.as_mut_ptr(),
                forces_ptr,
                &mut error,
            )
        };
        check(status, &error)
    }

    /// Sets positions (nm).
    pub fn set_positions(&mut self, positions_nm: &[f64]) -> Result<()> {
        self.check_len(positions_nm.len(), "positions", 1)?;
        let mut error = new_error();
        // SAFETY: (1), (2), (3).
        let status = unsafe { raw::cgf_context_set_positions(self.ptr, positions_nm.as_ptr(), &mut error) };
        check(status, &error)
    }

    /// Sets velocities (nm/ps).
    pub fn set_velocities(&mut self, velocities: &[f64]) -> Result<()> {
        self.check_len(velocities.len(), "velocities", 1)?;
        let mut error = new_error();
        // SAFETY: (1), (2), (3).
        let status = unsafe { raw::cgf_context_set_velocities(self.ptr, velocities.as_ptr(), &mut error) };
        check(status, &error)
    }

    /// Maxwell-Boltzmann velocities.
    pub fn set_velocities_to_temperature(&mut self, temperature_k: f64, seed: i32) -> Result<()> {
        let mut error = new_error();
        // SAFETY: (1), (2).
        let status =
            unsafe { raw::cgf_context_set_velocities_to_temperature(self.ptr, temperature_k, seed, &mut error) };
        check(status, &error)
    }

    /// Integrator steps.
    pub fn step(&mut self, steps: i32) -> Result<()> {
        let mut error = new_error();
        // SAFETY: (1), (2).
        let status = unsafe { raw::cgf_context_step(self.ptr, steps, &mut error) };
        check(status, &error)
    }

    /// An OpenMM checkpoint (binary, platform-specific).
    pub fn create_checkpoint(&mut self) -> Result<Vec<u8>> {
        let mut out: *mut std::os::raw::c_char = ptr::null_mut();
        let mut length = 0i64;
        let mut error = new_error();
        // SAFETY: (1), (2); on success `out` holds `length` bytes allocated with new[], copied here
        // and handed back to cgf_bytes_free exactly once.
        unsafe {
            let status = raw::cgf_context_create_checkpoint(self.ptr, &mut out, &mut length, &mut error);
            check(status, &error)?;
            if out.is_null() {
                return Err(Error::OpenMm("checkpoint returned nothing".into()));
            }
            let bytes = std::slice::from_raw_parts(out.cast::<u8>(), length.max(0) as usize).to_vec();
            raw::cgf_bytes_free(out);
            Ok(bytes)
        }
    }

    /// Restores an OpenMM checkpoint.
    pub fn load_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let mut error = new_error();
        // SAFETY: (1), (2), (3): the pointer and length describe a live byte slice.
        let status = unsafe {
            raw::cgf_context_load_checkpoint(self.ptr, bytes.as_ptr().cast(), bytes.len() as i64, &mut error)
        };
        check(status, &error)
    }

    /// Reads the state; each output is optional.
    #[allow(clippy::too_many_arguments)]
    pub fn get_state(
        &mut self,
        positions: Option<&mut [f64]>,
        velocities: Option<&mut [f64]>,
        forces: Option<&mut [f64]>,
        potential_kj: Option<&mut f64>,
        kinetic_kj: Option<&mut f64>,
        time_ps: Option<&mut f64>,
    ) -> Result<()> {
        let vector_ptr = |v: Option<&mut [f64]>, what: &str| -> Result<*mut f64> {
            match v {
                Some(s) => {
                    self.check_len(s.len(), what, 1)?;
                    Ok(s.as_mut_ptr())
                }
                None => Ok(ptr::null_mut()),
            }
        };
        let p = vector_ptr(positions, "positions")?;
        let v = vector_ptr(velocities, "velocities")?;
        let f = vector_ptr(forces, "forces")?;
        let scalar = |s: Option<&mut f64>| s.map_or(ptr::null_mut(), |r| r as *mut f64);
        let mut error = new_error();
        // SAFETY: (1), (2), (3): each non-null vector pointer covers particles x 3 values (checked),
        // scalar pointers come from live `&mut f64`.
        let status = unsafe {
            raw::cgf_context_get_state(
                self.ptr,
                p,
                v,
                f,
                scalar(potential_kj),
                scalar(kinetic_kj),
                scalar(time_ps),
                &mut error,
            )
        };
        check(status, &error)
    }
}
