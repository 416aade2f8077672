// cgflow_openmm.cpp: the C++ side of cgflow's OpenMM bridge. See cgflow_openmm.h for the contract.
//
// Every exported function funnels its body through `guarded`, which catches every C++ exception
// (OpenMM throws OpenMMException for bad input; the standard library may throw bad_alloc) and turns
// it into CGF_ERROR plus a message. Nothing here may let an exception escape into Rust.

#include "cgflow_openmm.h"

#include "OpenMM.h"
#include "openmm/reference/SimTKOpenMMRealType.h"  // ONE_4PI_EPS0, the constant OpenMM itself uses

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

struct cgf_system {
    std::unique_ptr<OpenMM::System> system;
};

struct cgf_context {
    // Declaration order matters: the context refers to the integrator and the system, so it is
    // declared last and destroyed first.
    std::unique_ptr<OpenMM::System> system;
    std::unique_ptr<OpenMM::Integrator> integrator;
    std::unique_ptr<OpenMM::Context> context;
    int num_particles = 0;
    // Reused buffers, so that a batch evaluation allocates nothing per configuration.
    std::vector<OpenMM::Vec3> positions;
};

namespace {

// OpenMM's XML serialization formats numbers with a dtoa that keeps global state, and parts of
// Context creation are not re-entrant either: two threads creating contexts at once crashed in
// dtoa. Everything that serializes, deserializes or creates a Context holds this lock.
std::mutex setup_mutex;

// While alive, the process's standard output (file descriptor 1) goes to standard error. OpenMM
// prints diagnostics on stdout while it creates a Context (the OpenCL platform's "WARNING: Using an
// unsupported OpenCL implementation", for example), where they would corrupt results a program
// writes there, such as `cgflow energy --json`. Used only under setup_mutex, so two of these never
// nest; output that another thread writes to stdout meanwhile goes to stderr too, which loses nothing.
class StdoutToStderr {
public:
    StdoutToStderr() {
        std::cout.flush();
        std::fflush(stdout);
        saved_ = dup(1);
        if (saved_ >= 0 && dup2(2, 1) < 0) {
            close(saved_);
            saved_ = -1;
        }
    }
    ~StdoutToStderr() {
        std::cout.flush();
        std::fflush(stdout);
        if (saved_ >= 0) {
            dup2(saved_, 1);
            close(saved_);
        }
    }
    StdoutToStderr(const StdoutToStderr&) = delete;
    StdoutToStderr& operator=(const StdoutToStderr&) = delete;

private:
    int saved_ = -1;
};

void set_message(cgf_error* error, const std::string& message) {
    if (error == nullptr) return;
    std::size_t n = std::min(message.size(), static_cast<std::size_t>(CGF_ERROR_MESSAGE_LEN - 1));
    std::memcpy(error->message, message.data(), n);
    error->message[n] = '\0';
}

template <typename F>
int32_t guarded(cgf_error* error, F&& body) {
    set_message(error, "");
    try {
        body();
        return CGF_OK;
    } catch (const OpenMM::OpenMMException& e) {
        // Bare: the Rust side's error type says "OpenMM: " already.
        set_message(error, e.what());
    } catch (const std::bad_alloc&) {
        set_message(error, "out of memory");
    } catch (const std::exception& e) {
        set_message(error, std::string("C++ exception: ") + e.what());
    } catch (...) {
        set_message(error, "unknown C++ exception");
    }
    return CGF_ERROR;
}

void require(bool condition, const std::string& message) {
    if (!condition) throw OpenMM::OpenMMException(message);
}

void copy_string(const std::string& text, char* buffer, int64_t buffer_len) {
    require(buffer != nullptr && buffer_len > 0, "empty output buffer");
    std::size_t n = std::min(text.size(), static_cast<std::size_t>(buffer_len - 1));
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
}

void load_positions(cgf_context* ctx, const double* flat) {
    for (int i = 0; i < ctx->num_particles; i++)
        ctx->positions[i] = OpenMM::Vec3(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]);
}

void store_vectors(const std::vector<OpenMM::Vec3>& vectors, double* flat) {
    for (std::size_t i = 0; i < vectors.size(); i++) {
        flat[3 * i] = vectors[i][0];
        flat[3 * i + 1] = vectors[i][1];
        flat[3 * i + 2] = vectors[i][2];
    }
}

// ---- the copy trick ------------------------------------------------------------------------------

// The constant every non-excluded pair inside the cut-off gets from a reaction field with
// dielectric 1: E_rf(r) = ONE_4PI_EPS0 q_i q_j (1/r - 1/r_c). Returns -ONE_4PI_EPS0/r_c * sum q_i q_j
// over non-excluded pairs of one copy.
double reaction_field_offset(const OpenMM::NonbondedForce& force, double cutoff_nm) {
    int n = force.getNumParticles();
    std::vector<double> charge(n);
    for (int i = 0; i < n; i++) {
        double sigma, epsilon;
        force.getParticleParameters(i, charge[i], sigma, epsilon);
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += charge[i];
    double squares = 0;
    for (int i = 0; i < n; i++) squares += charge[i] * charge[i];
    // sum over all unordered pairs = ((sum q)^2 - sum q^2) / 2, minus the excluded ones. Every
    // exception (1-2, 1-3 scaled 1-4) replaces the pair's reaction-field interaction entirely.
    double pairs = 0.5 * (total * total - squares);
    std::set<std::pair<int, int>> seen;
    for (int e = 0; e < force.getNumExceptions(); e++) {
        int i, j;
        double q, sigma, epsilon;
        force.getExceptionParameters(e, i, j, q, sigma, epsilon);
        auto key = std::make_pair(std::min(i, j), std::max(i, j));
        if (seen.insert(key).second) pairs -= charge[i] * charge[j];
    }
    return -ONE_4PI_EPS0 / cutoff_nm * pairs;
}

OpenMM::Force* replicate_nonbonded(const OpenMM::NonbondedForce& f, int n, int copies, double cutoff,
                                   double& offset) {
    require(f.getNonbondedMethod() == OpenMM::NonbondedForce::NoCutoff,
            "the copy trick needs NonbondedForce with NoCutoff in the original system");
    require(f.getNumGlobalParameters() == 0 && f.getNumParticleParameterOffsets() == 0 &&
                f.getNumExceptionParameterOffsets() == 0,
            "the copy trick does not support NonbondedForce global parameters or parameter offsets");
    auto* g = new OpenMM::NonbondedForce();
    g->setNonbondedMethod(OpenMM::NonbondedForce::CutoffNonPeriodic);
    g->setCutoffDistance(cutoff);
    g->setReactionFieldDielectric(1.0);
    g->setUseSwitchingFunction(false);
    g->setUseDispersionCorrection(false);
    g->setForceGroup(f.getForceGroup());
    for (int k = 0; k < copies; k++) {
        for (int i = 0; i < n; i++) {
            double q, sigma, epsilon;
            f.getParticleParameters(i, q, sigma, epsilon);
            g->addParticle(q, sigma, epsilon);
        }
        for (int e = 0; e < f.getNumExceptions(); e++) {
            int i, j;
            double q, sigma, epsilon;
            f.getExceptionParameters(e, i, j, q, sigma, epsilon);
            g->addException(i + k * n, j + k * n, q, sigma, epsilon);
        }
    }
    offset += reaction_field_offset(f, cutoff);
    return g;
}

OpenMM::Force* replicate_custom_gb(const OpenMM::CustomGBForce& f, int n, int copies, double cutoff) {
    require(f.getNonbondedMethod() == OpenMM::CustomGBForce::NoCutoff,
            "the copy trick needs CustomGBForce with NoCutoff in the original system");
    auto* g = new OpenMM::CustomGBForce();
    for (int p = 0; p < f.getNumGlobalParameters(); p++)
        g->addGlobalParameter(f.getGlobalParameterName(p), f.getGlobalParameterDefaultValue(p));
    for (int p = 0; p < f.getNumPerParticleParameters(); p++) g->addPerParticleParameter(f.getPerParticleParameterName(p));
    for (int t = 0; t < f.getNumTabulatedFunctions(); t++)
        g->addTabulatedFunction(f.getTabulatedFunctionName(t),
                                OpenMM::XmlSerializer::clone<OpenMM::TabulatedFunction>(f.getTabulatedFunction(t)));
    for (int c = 0; c < f.getNumComputedValues(); c++) {
        std::string name, expression;
        OpenMM::CustomGBForce::ComputationType type;
        f.getComputedValueParameters(c, name, expression, type);
        g->addComputedValue(name, expression, type);
    }
    for (int t = 0; t < f.getNumEnergyTerms(); t++) {
        std::string expression;
        OpenMM::CustomGBForce::ComputationType type;
        f.getEnergyTermParameters(t, expression, type);
        g->addEnergyTerm(expression, type);
    }
    for (int p = 0; p < f.getNumEnergyParameterDerivatives(); p++)
        g->addEnergyParameterDerivative(f.getEnergyParameterDerivativeName(p));
    g->setNonbondedMethod(OpenMM::CustomGBForce::CutoffNonPeriodic);
    g->setCutoffDistance(cutoff);
    g->setForceGroup(f.getForceGroup());
    std::vector<double> params;
    for (int k = 0; k < copies; k++) {
        for (int i = 0; i < n; i++) {
            f.getParticleParameters(i, params);
            g->addParticle(params);
        }
        for (int e = 0; e < f.getNumExclusions(); e++) {
            int i, j;
            f.getExclusionParticles(e, i, j);
            g->addExclusion(i + k * n, j + k * n);
        }
    }
    return g;
}

OpenMM::Force* replicate_force(const OpenMM::Force& force, int n, int copies, double cutoff, double& offset) {
    if (auto* f = dynamic_cast<const OpenMM::HarmonicBondForce*>(&force)) {
        auto* g = new OpenMM::HarmonicBondForce();
        for (int k = 0; k < copies; k++)
            for (int b = 0; b < f->getNumBonds(); b++) {
                int i, j;
                double length, stiffness;
                f->getBondParameters(b, i, j, length, stiffness);
                g->addBond(i + k * n, j + k * n, length, stiffness);
            }
        g->setForceGroup(f->getForceGroup());
        return g;
    }
    if (auto* f = dynamic_cast<const OpenMM::HarmonicAngleForce*>(&force)) {
        auto* g = new OpenMM::HarmonicAngleForce();
        for (int k = 0; k < copies; k++)
            for (int a = 0; a < f->getNumAngles(); a++) {
                int i, j, l;
                double angle, stiffness;
                f->getAngleParameters(a, i, j, l, angle, stiffness);
                g->addAngle(i + k * n, j + k * n, l + k * n, angle, stiffness);
            }
        g->setForceGroup(f->getForceGroup());
        return g;
    }
    if (auto* f = dynamic_cast<const OpenMM::PeriodicTorsionForce*>(&force)) {
        auto* g = new OpenMM::PeriodicTorsionForce();
        for (int k = 0; k < copies; k++)
            for (int t = 0; t < f->getNumTorsions(); t++) {
                int i, j, l, m, periodicity;
                double phase, stiffness;
                f->getTorsionParameters(t, i, j, l, m, periodicity, phase, stiffness);
                g->addTorsion(i + k * n, j + k * n, l + k * n, m + k * n, periodicity, phase, stiffness);
            }
        g->setForceGroup(f->getForceGroup());
        return g;
    }
    if (auto* f = dynamic_cast<const OpenMM::RBTorsionForce*>(&force)) {
        auto* g = new OpenMM::RBTorsionForce();
        for (int k = 0; k < copies; k++)
            for (int t = 0; t < f->getNumTorsions(); t++) {
                int i, j, l, m;
                double c0, c1, c2, c3, c4, c5;
                f->getTorsionParameters(t, i, j, l, m, c0, c1, c2, c3, c4, c5);
                g->addTorsion(i + k * n, j + k * n, l + k * n, m + k * n, c0, c1, c2, c3, c4, c5);
            }
        g->setForceGroup(f->getForceGroup());
        return g;
    }
    if (auto* f = dynamic_cast<const OpenMM::NonbondedForce*>(&force)) return replicate_nonbonded(*f, n, copies, cutoff, offset);
    if (auto* f = dynamic_cast<const OpenMM::CustomGBForce*>(&force)) return replicate_custom_gb(*f, n, copies, cutoff);
    throw OpenMM::OpenMMException("the copy trick does not support " + force.getName() +
                                  "; use the one-context-per-thread evaluator for this system");
}

}  // namespace

// ---- plugins and platforms ------------------------------------------------------------------------

extern "C" int32_t cgf_load_plugins(const char* directory, int32_t* loaded, cgf_error* error) {
    return guarded(error, [&] {
        require(directory != nullptr, "no plugin directory given");
        struct stat info;
        require(stat(directory, &info) == 0 && S_ISDIR(info.st_mode),
                std::string("OpenMM plugin directory not found: ") + directory);
        // Plugins such as libOpenMMAmoebaReference.so need their API library (libOpenMMAmoeba.so)
        // from the folder above; it is not on the loader's path, so load those first, globally.
        // A library that fails here shows up later as a plugin load failure, with OpenMM's reason.
        std::string parent = std::string(directory) + "/..";
        for (const char* api : {"libOpenMMAmoeba.so", "libOpenMMDrude.so", "libOpenMMRPMD.so"}) {
            std::string path = parent + "/" + api;
            if (stat(path.c_str(), &info) == 0) dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
        }
        std::vector<std::string> names = OpenMM::Platform::loadPluginsFromDirectory(directory);
        if (loaded != nullptr) *loaded = static_cast<int32_t>(names.size());
    });
}

extern "C" int32_t cgf_load_library_global(const char* path, cgf_error* error) {
    return guarded(error, [&] {
        require(path != nullptr, "no library path given");
        if (dlopen(path, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
            const char* reason = dlerror();
            throw OpenMM::OpenMMException(std::string("cannot load ") + path + ": " + (reason ? reason : "unknown"));
        }
    });
}

extern "C" int32_t cgf_plugin_load_failures(char* buffer, int64_t buffer_len, cgf_error* error) {
    return guarded(error, [&] {
        std::string all;
        for (const std::string& failure : OpenMM::Platform::getPluginLoadFailures()) all += failure + "\n";
        copy_string(all, buffer, buffer_len);
    });
}

extern "C" int32_t cgf_pin_current_thread(int32_t cpu, cgf_error* error) {
    return guarded(error, [&] {
        require(cpu >= 0 && cpu < CPU_SETSIZE, "CPU index out of range");
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        require(rc == 0, "pthread_setaffinity_np failed for CPU " + std::to_string(cpu));
    });
}

extern "C" int32_t cgf_allowed_cpus(int32_t* cpus, int32_t capacity, int32_t* count, cgf_error* error) {
    return guarded(error, [&] {
        cpu_set_t set;
        CPU_ZERO(&set);
        require(pthread_getaffinity_np(pthread_self(), sizeof(set), &set) == 0, "pthread_getaffinity_np failed");
        int32_t n = 0;
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &set)) {
                if (n < capacity) cpus[n] = cpu;
                n++;
            }
        *count = n;
    });
}

// ---- systems ----------------------------------------------------------------------------------------

extern "C" int32_t cgf_system_from_xml(const char* xml, cgf_system** out, cgf_error* error) {
    return guarded(error, [&] {
        require(xml != nullptr && out != nullptr, "null argument");
        *out = nullptr;
        std::lock_guard<std::mutex> lock(setup_mutex);
        std::istringstream stream(xml);
        std::unique_ptr<OpenMM::System> system(OpenMM::XmlSerializer::deserialize<OpenMM::System>(stream));
        require(system != nullptr, "the XML did not contain a System");
        require(system->getNumParticles() > 0, "the System has no particles");
        *out = new cgf_system{std::move(system)};
    });
}

extern "C" void cgf_system_destroy(cgf_system* system) { delete system; }

extern "C" int32_t cgf_system_num_particles(const cgf_system* system) { return system->system->getNumParticles(); }

extern "C" int32_t cgf_system_num_forces(const cgf_system* system) { return system->system->getNumForces(); }

extern "C" int32_t cgf_system_force_name(const cgf_system* system, int32_t index, char* buffer, int64_t buffer_len,
                                         cgf_error* error) {
    return guarded(error, [&] {
        require(index >= 0 && index < system->system->getNumForces(), "force index out of range");
        copy_string(system->system->getForce(index).getName(), buffer, buffer_len);
    });
}

extern "C" int32_t cgf_system_masses(const cgf_system* system, double* masses, cgf_error* error) {
    return guarded(error, [&] {
        for (int i = 0; i < system->system->getNumParticles(); i++) masses[i] = system->system->getParticleMass(i);
    });
}

extern "C" int32_t cgf_system_bonds(const cgf_system* system, int32_t* pairs, int64_t capacity, int64_t* count,
                                    cgf_error* error) {
    return guarded(error, [&] {
        int64_t n = 0;
        auto add = [&](int i, int j) {
            if (n < capacity) {
                pairs[2 * n] = i;
                pairs[2 * n + 1] = j;
            }
            n++;
        };
        const OpenMM::System& s = *system->system;
        for (int f = 0; f < s.getNumForces(); f++) {
            if (auto* bonds = dynamic_cast<const OpenMM::HarmonicBondForce*>(&s.getForce(f))) {
                for (int b = 0; b < bonds->getNumBonds(); b++) {
                    int i, j;
                    double length, k;
                    bonds->getBondParameters(b, i, j, length, k);
                    add(i, j);
                }
            } else if (auto* custom = dynamic_cast<const OpenMM::CustomBondForce*>(&s.getForce(f))) {
                std::vector<double> parameters;
                for (int b = 0; b < custom->getNumBonds(); b++) {
                    int i, j;
                    custom->getBondParameters(b, i, j, parameters);
                    add(i, j);
                }
            }
        }
        *count = n;
    });
}

extern "C" int32_t cgf_system_to_xml(const cgf_system* system, char** out, cgf_error* error) {
    return guarded(error, [&] {
        std::lock_guard<std::mutex> lock(setup_mutex);
        std::ostringstream stream;
        OpenMM::XmlSerializer::serialize<OpenMM::System>(system->system.get(), "System", stream);
        std::string text = stream.str();
        char* copy = new char[text.size() + 1];
        std::memcpy(copy, text.c_str(), text.size() + 1);
        *out = copy;
    });
}

extern "C" void cgf_string_free(char* text) { delete[] text; }

extern "C" int32_t cgf_system_replicate(const cgf_system* system, int32_t copies, double cutoff_nm, cgf_system** out,
                                        double* energy_offset_kj_per_mol, cgf_error* error) {
    return guarded(error, [&] {
        require(copies >= 1, "the number of copies must be at least 1");
        require(std::isfinite(cutoff_nm) && cutoff_nm > 0, "the cut-off must be a positive number of nm");
        std::lock_guard<std::mutex> lock(setup_mutex);
        const OpenMM::System& original = *system->system;
        require(original.getNumConstraints() == 0, "the copy trick needs a System without constraints");
        int n = original.getNumParticles();
        require(static_cast<long long>(n) * copies < (1LL << 30), "too many particles in the copy system");
        for (int i = 0; i < n; i++)
            require(!original.isVirtualSite(i), "the copy trick does not support virtual sites");
        auto copy = std::make_unique<OpenMM::System>();
        for (int k = 0; k < copies; k++)
            for (int i = 0; i < n; i++) copy->addParticle(original.getParticleMass(i));
        double offset = 0;
        for (int f = 0; f < original.getNumForces(); f++) {
            const OpenMM::Force& force = original.getForce(f);
            // The centre-of-mass motion remover acts on the whole system during MD only; it has no
            // energy, and across non-interacting copies it would couple them. Dropped.
            if (dynamic_cast<const OpenMM::CMMotionRemover*>(&force) != nullptr) continue;
            copy->addForce(replicate_force(force, n, copies, cutoff_nm, offset));
        }
        *energy_offset_kj_per_mol = offset;
        *out = new cgf_system{std::move(copy)};
    });
}

extern "C" int32_t cgf_system_add_torsion_restraints(const cgf_system* system, const int32_t* atoms,
                                                     const double* k_kj_per_mol_rad2, const double* theta0_rad,
                                                     const double* half_width_rad, int64_t count, cgf_system** out,
                                                     cgf_error* error) {
    return guarded(error, [&] {
        require(out != nullptr, "null argument");
        *out = nullptr;
        std::lock_guard<std::mutex> lock(setup_mutex);
        std::unique_ptr<OpenMM::System> copy(OpenMM::XmlSerializer::clone<OpenMM::System>(*system->system));
        int n = copy->getNumParticles();
        auto* force = new OpenMM::CustomTorsionForce(
            "0.5*k*max(0, d-w)^2; d=min(dt, 2*pi-dt); dt=abs(theta-theta0); pi=3.141592653589793");
        force->addPerTorsionParameter("k");
        force->addPerTorsionParameter("theta0");
        force->addPerTorsionParameter("w");
        force->setName("TorsionRestraints");
        copy->addForce(force);  // owned by the system from here on, also if a check below throws
        for (int64_t r = 0; r < count; r++) {
            const int32_t* a = atoms + 4 * r;
            for (int j = 0; j < 4; j++)
                require(a[j] >= 0 && a[j] < n, "restraint " + std::to_string(r) + ": particle " + std::to_string(a[j]) +
                                                   " does not exist (the system has " + std::to_string(n) + ")");
            require(std::isfinite(k_kj_per_mol_rad2[r]) && k_kj_per_mol_rad2[r] >= 0 && std::isfinite(theta0_rad[r]) &&
                        std::isfinite(half_width_rad[r]) && half_width_rad[r] >= 0,
                    "restraint " + std::to_string(r) +
                        ": force constant and flat-bottom half-width must be >= 0 and the centre finite");
            force->addTorsion(a[0], a[1], a[2], a[3], {k_kj_per_mol_rad2[r], theta0_rad[r], half_width_rad[r]});
        }
        *out = new cgf_system{std::move(copy)};
    });
}

// ---- contexts -----------------------------------------------------------------------------------------

extern "C" int32_t cgf_context_create(const cgf_system* system, const char* platform_name,
                                      const char* const* property_keys, const char* const* property_values,
                                      int32_t num_properties, const cgf_integrator_spec* spec, cgf_context** out,
                                      cgf_error* error) {
    return guarded(error, [&] {
        require(system != nullptr && platform_name != nullptr && spec != nullptr && out != nullptr, "null argument");
        *out = nullptr;
        std::lock_guard<std::mutex> lock(setup_mutex);
        OpenMM::Platform& platform = OpenMM::Platform::getPlatformByName(platform_name);
        std::map<std::string, std::string> properties;
        for (int i = 0; i < num_properties; i++) properties[property_keys[i]] = property_values[i];
        auto ctx = std::make_unique<cgf_context>();
        ctx->system.reset(OpenMM::XmlSerializer::clone<OpenMM::System>(*system->system));
        switch (spec->kind) {
            case CGF_INTEGRATOR_VERLET:
                ctx->integrator = std::make_unique<OpenMM::VerletIntegrator>(0.001);
                break;
            case CGF_INTEGRATOR_LANGEVIN_MIDDLE: {
                require(spec->temperature_k > 0 && spec->friction_per_ps >= 0 && spec->step_ps > 0,
                        "Langevin integrator needs temperature > 0, friction >= 0 and step > 0");
                auto langevin = std::make_unique<OpenMM::LangevinMiddleIntegrator>(spec->temperature_k,
                                                                                    spec->friction_per_ps, spec->step_ps);
                langevin->setRandomNumberSeed(spec->seed);
                ctx->integrator = std::move(langevin);
                break;
            }
            default:
                throw OpenMM::OpenMMException("unknown integrator kind");
        }
        {
            StdoutToStderr diagnostics;
            ctx->context = std::make_unique<OpenMM::Context>(*ctx->system, *ctx->integrator, platform, properties);
        }
        ctx->num_particles = ctx->system->getNumParticles();
        ctx->positions.resize(ctx->num_particles);
        *out = ctx.release();
    });
}

extern "C" void cgf_context_destroy(cgf_context* context) { delete context; }

extern "C" int32_t cgf_context_platform_name(const cgf_context* context, char* buffer, int64_t buffer_len,
                                             cgf_error* error) {
    return guarded(error, [&] { copy_string(context->context->getPlatform().getName(), buffer, buffer_len); });
}

extern "C" int32_t cgf_context_platform_property(const cgf_context* context, const char* key, char* buffer,
                                                 int64_t buffer_len, cgf_error* error) {
    return guarded(error, [&] {
        const OpenMM::Context& c = *context->context;
        copy_string(c.getPlatform().getPropertyValue(c, key), buffer, buffer_len);
    });
}

extern "C" int32_t cgf_context_evaluate_batch(cgf_context* context, const double* positions, int32_t num_configs,
                                              double* energies, double* forces, cgf_error* error) {
    return guarded(error, [&] {
        int types = OpenMM::State::Energy | (forces != nullptr ? OpenMM::State::Forces : 0);
        std::size_t stride = 3 * static_cast<std::size_t>(context->num_particles);
        for (int c = 0; c < num_configs; c++) {
            load_positions(context, positions + c * stride);
            context->context->setPositions(context->positions);
            OpenMM::State state = context->context->getState(types);
            energies[c] = state.getPotentialEnergy();
            if (forces != nullptr) store_vectors(state.getForces(), forces + c * stride);
        }
    });
}

extern "C" int32_t cgf_context_set_positions(cgf_context* context, const double* positions, cgf_error* error) {
    return guarded(error, [&] {
        load_positions(context, positions);
        context->context->setPositions(context->positions);
    });
}

extern "C" int32_t cgf_context_set_velocities(cgf_context* context, const double* velocities, cgf_error* error) {
    return guarded(error, [&] {
        load_positions(context, velocities);
        context->context->setVelocities(context->positions);
    });
}

extern "C" int32_t cgf_context_set_velocities_to_temperature(cgf_context* context, double temperature_k,
                                                             int32_t seed, cgf_error* error) {
    return guarded(error, [&] { context->context->setVelocitiesToTemperature(temperature_k, seed); });
}

extern "C" int32_t cgf_context_step(cgf_context* context, int32_t steps, cgf_error* error) {
    return guarded(error, [&] {
        require(steps >= 0, "negative number of steps");
        context->integrator->step(steps);
    });
}

extern "C" int32_t cgf_context_get_state(const cgf_context* context, double* positions, double* velocities,
                                         double* forces, double* potential_energy_kj, double* kinetic_energy_kj,
                                         double* time_ps, cgf_error* error) {
    return guarded(error, [&] {
        int types = 0;
        if (positions != nullptr) types |= OpenMM::State::Positions;
        if (velocities != nullptr) types |= OpenMM::State::Velocities;
        if (forces != nullptr) types |= OpenMM::State::Forces;
        if (potential_energy_kj != nullptr || kinetic_energy_kj != nullptr) types |= OpenMM::State::Energy;
        OpenMM::State state = context->context->getState(types);
        if (positions != nullptr) store_vectors(state.getPositions(), positions);
        if (velocities != nullptr) store_vectors(state.getVelocities(), velocities);
        if (forces != nullptr) store_vectors(state.getForces(), forces);
        if (potential_energy_kj != nullptr) *potential_energy_kj = state.getPotentialEnergy();
        if (kinetic_energy_kj != nullptr) *kinetic_energy_kj = state.getKineticEnergy();
        if (time_ps != nullptr) *time_ps = state.getTime();
    });
}

extern "C" int32_t cgf_context_create_checkpoint(cgf_context* context, char** out, int64_t* length, cgf_error* error) {
    return guarded(error, [&] {
        std::ostringstream stream(std::ios::binary);
        context->context->createCheckpoint(stream);
        std::string bytes = stream.str();
        char* copy = new char[bytes.size()];
        std::memcpy(copy, bytes.data(), bytes.size());
        *out = copy;
        *length = static_cast<int64_t>(bytes.size());
    });
}

extern "C" int32_t cgf_context_load_checkpoint(cgf_context* context, const char* data, int64_t length,
                                               cgf_error* error) {
    return guarded(error, [&] {
        require(data != nullptr && length > 0, "empty checkpoint");
        std::istringstream stream(std::string(data, static_cast<std::size_t>(length)), std::ios::binary);
        context->context->loadCheckpoint(stream);
    });
}

extern "C" void cgf_bytes_free(char* bytes) { delete[] bytes; }
