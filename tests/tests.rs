//! Integration tests: one target, one module per area, shared helpers in `util`.

#[path = "suite/util.rs"]
mod util;

#[path = "suite/al.rs"]
mod al;
#[path = "suite/al_aldp.rs"]
mod al_aldp;
#[path = "suite/al_molecule.rs"]
mod al_molecule;
#[path = "suite/backmap.rs"]
mod backmap;
#[path = "suite/batched.rs"]
mod batched;
#[path = "suite/bg.rs"]
mod bg;
#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/compare.rs"]
mod compare;
#[path = "suite/coords.rs"]
mod coords;
#[path = "suite/errors.rs"]
mod errors;
#[path = "suite/flow.rs"]
mod flow;
#[path = "suite/flow_checkpoint.rs"]
mod flow_checkpoint;
#[path = "suite/ising.rs"]
mod ising;
#[path = "suite/md.rs"]
mod md;
#[path = "suite/molecular.rs"]
mod molecular;
#[path = "suite/opencl.rs"]
mod opencl;
#[path = "suite/openmm_reference.rs"]
mod openmm_reference;
#[path = "suite/pmf.rs"]
mod pmf;
#[path = "suite/reference.rs"]
mod reference;
#[path = "suite/toys.rs"]
mod toys;
#[path = "suite/walkers.rs"]
mod walkers;
