/* Everything bindgen reads: OpenMM's generated C wrapper and cgflow's exception-safe shim. */
#include "OpenMMCWrapper.h"
#include "cgflow_openmm.h"
