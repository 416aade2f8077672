/*
 * cgflow_openmm.h: a small C interface over the parts of OpenMM's C++ API that cgflow needs and
 * that OpenMM's generated C wrapper (OpenMMCWrapper.h) lacks or cannot call safely.
 *
 * Contract of every function here:
 *  - no C++ exception ever leaves it: each body runs inside try/catch and reports failures through
 *    the return value (CGF_OK or CGF_ERROR) and a message written into the caller's cgf_error;
 *  - handles are opaque and come in create/destroy pairs; the caller owns what a create returns;
 *  - arrays are caller-allocated, flat, row-major, float64, in OpenMM's units (nm, kJ/mol, ps, K).
 */
#ifndef CGFLOW_OPENMM_H
#define CGFLOW_OPENMM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CGF_OK 0
#define CGF_ERROR 1
#define CGF_ERROR_MESSAGE_LEN 2048

/** Error message written by a failing call; empty after a successful one. */
typedef struct cgf_error {
    char message[CGF_ERROR_MESSAGE_LEN];
} cgf_error;

/** An OpenMM::System. */
typedef struct cgf_system cgf_system;
/** An OpenMM::Context together with the integrator it owns. */
typedef struct cgf_context cgf_context;

/** Integrator kinds a context can be created with. */
typedef enum cgf_integrator_kind {
    /** Verlet with a 1 fs step; for energy and force evaluation only. */
    CGF_INTEGRATOR_VERLET = 0,
    /** OpenMM::LangevinMiddleIntegrator. */
    CGF_INTEGRATOR_LANGEVIN_MIDDLE = 1
} cgf_integrator_kind;

typedef struct cgf_integrator_spec {
    cgf_integrator_kind kind;
    double temperature_k;
    double friction_per_ps;
    double step_ps;
    /** Random seed of the Langevin integrator; 0 lets OpenMM choose one. */
    int32_t seed;
} cgf_integrator_spec;

/* ---- plugins and platforms ------------------------------------------------------------------ */

/** Loads every plugin library in `directory`; `loaded` receives the number loaded. Load failures
 *  of single plugins (for example a CUDA plugin without a driver) are not errors; they are listed
 *  by cgf_plugin_load_failures. A directory that does not exist is an error. */
int32_t cgf_load_plugins(const char* directory, int32_t* loaded, cgf_error* error);

/** Loads the shared library at `path` with global symbol visibility, so that plugins loaded later
 *  that name it (by its soname) use this copy; for example an OpenCL loader outside the linker's
 *  search path. A library that cannot be loaded is an error carrying dlerror's message. */
int32_t cgf_load_library_global(const char* path, cgf_error* error);

/** Writes the plugin load failures recorded so far, one per line, into `buffer` (truncated to
 *  `buffer_len` bytes including the terminating zero). */
int32_t cgf_plugin_load_failures(char* buffer, int64_t buffer_len, cgf_error* error);

/** Pins the calling thread to one CPU core (Linux). Threads it creates afterwards inherit the
 *  mask, which is how OpenMM's CPU-platform worker thread ends up beside its caller. */
int32_t cgf_pin_current_thread(int32_t cpu, cgf_error* error);

/** Writes the CPU indices the calling thread may run on (its affinity mask) into `cpus` (room for
 *  `capacity` values); `count` receives how many there are. */
int32_t cgf_allowed_cpus(int32_t* cpus, int32_t capacity, int32_t* count, cgf_error* error);

/* ---- systems -------------------------------------------------------------------------------- */

/** Deserializes a System from OpenMM XML text. */
int32_t cgf_system_from_xml(const char* xml, cgf_system** out, cgf_error* error);

void cgf_system_destroy(cgf_system* system);

int32_t cgf_system_num_particles(const cgf_system* system);

int32_t cgf_system_num_forces(const cgf_system* system);

/** Name of force `index` (Force::getName, for example "HarmonicBondForce"). */
int32_t cgf_system_force_name(const cgf_system* system, int32_t index, char* buffer, int64_t buffer_len,
                              cgf_error* error);

/** Masses of all particles in dalton; `masses` holds num_particles values. */
int32_t cgf_system_masses(const cgf_system* system, double* masses, cgf_error* error);

/** The bonds of the system: the particle pairs of every HarmonicBondForce and CustomBondForce, in
 *  force order. `pairs` has room for `capacity` pairs (2 x capacity values); `count` receives the
 *  number of bonds, which may exceed the capacity (then call again with more room). */
int32_t cgf_system_bonds(const cgf_system* system, int32_t* pairs, int64_t capacity, int64_t* count, cgf_error* error);

/** Serializes the system to XML; free the returned string with cgf_string_free. */
int32_t cgf_system_to_xml(const cgf_system* system, char** out, cgf_error* error);

void cgf_string_free(char* text);

/**
 * Builds a System of `copies` non-interacting copies of `system` (the copy trick).
 *
 * Nonbonded forces (NonbondedForce, CustomGBForce) must use NoCutoff in `system`; in the copy they
 * use CutoffNonPeriodic with `cutoff_nm` (reaction-field dielectric 1, no switching function), and
 * the CustomGBForce keeps its energy expressions. While every pair of atoms of one copy lies within
 * the cut-off and copies lie farther apart than it, the forces on each copy equal those of the
 * NoCutoff system exactly, and each copy's energy differs from the NoCutoff energy by a constant,
 * written to `energy_offset_kj_per_mol` (E_copy = E_nocutoff + offset). The offset is the
 * reaction-field constant: -ONE_4PI_EPS0 / cutoff * sum of q_i q_j over the non-excluded pairs.
 * CMMotionRemover is dropped. Any other force type is an error naming it.
 */
int32_t cgf_system_replicate(const cgf_system* system, int32_t copies, double cutoff_nm, cgf_system** out,
                             double* energy_offset_kj_per_mol, cgf_error* error);

/**
 * A copy of `system` with one more force: flat-bottomed harmonic restraints on dihedral angles,
 * E = 0.5 k max(0, d - w)^2 with d the periodic distance |theta - theta0| wrapped to [0, pi] and
 * w the half-width of the flat bottom (0: plain harmonic) (an OpenMM CustomTorsionForce). `atoms`
 * holds 4 x count particle indices, `k_kj_per_mol_rad2`, `theta0_rad` and `half_width_rad` one value
 * per restraint. Used for umbrella sampling, one centre per walker.
 */
int32_t cgf_system_add_torsion_restraints(const cgf_system* system, const int32_t* atoms,
                                          const double* k_kj_per_mol_rad2, const double* theta0_rad,
                                          const double* half_width_rad, int64_t count, cgf_system** out,
                                          cgf_error* error);

/* ---- contexts ------------------------------------------------------------------------------- */

/** Creates a Context for `system` on the named platform with string properties (parallel arrays of
 *  `num_properties` keys and values). The System is copied into the context; `system` may be
 *  destroyed afterwards. */
int32_t cgf_context_create(const cgf_system* system, const char* platform_name, const char* const* property_keys,
                           const char* const* property_values, int32_t num_properties,
                           const cgf_integrator_spec* integrator, cgf_context** out, cgf_error* error);

void cgf_context_destroy(cgf_context* context);

/** Name of the platform the context runs on. */
int32_t cgf_context_platform_name(const cgf_context* context, char* buffer, int64_t buffer_len, cgf_error* error);

/** Value of a platform property of this context (for example "Threads" or "Precision"). */
int32_t cgf_context_platform_property(const cgf_context* context, const char* key, char* buffer,
                                      int64_t buffer_len, cgf_error* error);

/**
 * Evaluates `num_configs` configurations one after another: for each, sets the positions
 * (num_particles x 3 values, nm) and reads the potential energy (kJ/mol) and, when `forces` is not
 * null, the forces (kJ/mol/nm). `positions`: num_configs x num_particles x 3; `energies`:
 * num_configs; `forces`: like positions. Stops at the first failing configuration.
 */
int32_t cgf_context_evaluate_batch(cgf_context* context, const double* positions, int32_t num_configs,
                                   double* energies, double* forces, cgf_error* error);

/** Sets positions (num_particles x 3, nm). */
int32_t cgf_context_set_positions(cgf_context* context, const double* positions, cgf_error* error);

/** Sets velocities (num_particles x 3, nm/ps). */
int32_t cgf_context_set_velocities(cgf_context* context, const double* velocities, cgf_error* error);

/** Draws velocities from the Maxwell-Boltzmann distribution at `temperature_k`. */
int32_t cgf_context_set_velocities_to_temperature(cgf_context* context, double temperature_k, int32_t seed,
                                                  cgf_error* error);

/** Advances the integrator by `steps` steps. */
int32_t cgf_context_step(cgf_context* context, int32_t steps, cgf_error* error);

/** Reads the current state. Any output pointer may be null to skip that quantity. */
int32_t cgf_context_get_state(const cgf_context* context, double* positions, double* velocities, double* forces,
                              double* potential_energy_kj, double* kinetic_energy_kj, double* time_ps,
                              cgf_error* error);

/** Writes an OpenMM checkpoint of the context (positions, velocities, time, step count and the
 *  integrator's random state; platform-specific binary) into a new buffer; free it with
 *  cgf_bytes_free. */
int32_t cgf_context_create_checkpoint(cgf_context* context, char** out, int64_t* length, cgf_error* error);

/** Restores a checkpoint written by cgf_context_create_checkpoint for the same system and platform. */
int32_t cgf_context_load_checkpoint(cgf_context* context, const char* data, int64_t length, cgf_error* error);

void cgf_bytes_free(char* bytes);

#ifdef __cplusplus
}
#endif

#endif /* CGFLOW_OPENMM_H */
