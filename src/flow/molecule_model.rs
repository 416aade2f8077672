//! Conditional molecular models on disk: a flow checkpoint (see [`flow_checkpoint`]) plus
//! `molecule.json`, which says which molecule the flow's coordinates belong to, so that the flow
//! can be turned back into structures (backmapping) without any other input.
//!
//! # Layout
//!
//! A model is a folder holding `flow.json` and `weights.safetensors` (written by
//! [`save_flow`], without training state) and `molecule.json`:
//!
//! ```json
//! {
//!   "format": "cgflow-molecule-model",
//!   "version": 2,
//!   "system_fingerprint": "89abcdef01234567",
//!   "n_atoms": 32,
//!   "reference_positions_nm": [[0.1962, 0.1209, 0.0683], ...],
//!   "cg": {"dihedrals": [[4, 6, 8, 14], ...], "masses": [1.008, ...], "bonds": [[0, 1], ...]},
//!   "temperature_k": 300.0,
//!   "provenance": null
//! }
//! ```
//!
//! - `system_fingerprint`: [`system_fingerprint`] of the OpenMM System the flow was trained on
//!   (the FNV-1a hash of its serialized XML; for a System file written by OpenMM this is the hash
//!   of the file's text, as in the other output files of the command line).
//! - `reference_positions_nm`: the structure the internal coordinates are normalised around (the
//!   minimum-energy structure for alanine dipeptide), one `[x, y, z]` per atom, in nm. Numbers are
//!   written in their shortest exact form, so the molecule, and with it every density, is
//!   reproduced bit for bit.
//! - `cg`: the CG definition. Any molecule: an object with its CG `dihedrals` (0-based atom
//!   indices), and the `masses` (u) and `bonds` of its System, from which the Z-matrix, the
//!   circular dimensions and the chiral centres are rebuilt
//!   ([`ConditionalMolecule::from_molecule`]); or the name `"aldp-phi-psi"` (alanine dipeptide
//!   given its backbone dihedrals, with its hand-written Z-matrix, [`ConditionalMolecule::aldp`]).
//! - Version 1 files (the `"aldp-phi-psi"` name only) still load; this build writes version 2.
//! - `temperature_k`: the temperature of the target density (kT of the reduced energies).
//! - `provenance`: any JSON the caller stores (training settings, iteration, data); not read.
//!
//! `molecule.json` is written after the flow, through a synced temporary file and a rename; a
//! crash in between leaves a folder that either lacks `molecule.json` (refused on loading) or
//! pairs the old description with the new flow of the same molecule.
//!
//! [`flow_checkpoint`]: crate::flow::checkpoint

use std::io::Write;
use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::checkpoint::{load_flow, save_flow, FLOW_FILE, WEIGHTS_FILE};
use crate::flow::molecular::ConditionalMolecule;
use crate::flow::{Flow, FlowSpec};
use crate::io::system_fingerprint;
use crate::openmm::System;

/// Name of the molecule description inside a model folder.
pub const MOLECULE_FILE: &str = "molecule.json";
/// The `format` field of `molecule.json`.
pub const FORMAT: &str = "cgflow-molecule-model";
/// The `version` field of `molecule.json` this build writes.
pub const VERSION: u64 = 2;
/// The versions of `molecule.json` this build reads.
pub const READABLE_VERSIONS: [u64; 2] = [1, 2];

/// How the CG coordinates of a model are defined.
#[derive(Debug, Clone, PartialEq)]
pub enum CgDefinition {
    /// Alanine dipeptide (22 atoms, the atom order of `data/alanine_dipeptide`) given its backbone
    /// dihedrals phi = dihedral(4, 6, 8, 14) and psi = dihedral(6, 8, 14, 16), with its
    /// hand-written Z-matrix.
    AldpPhiPsi,
    /// Any molecule given its CG dihedrals, with the masses and bonds its Z-matrix, circular
    /// dimensions and chiral centres are built from.
    Dihedrals {
        /// The CG dihedrals, 0-based atom indices.
        dihedrals: Vec<[usize; 4]>,
        /// Atom masses (u).
        masses: Vec<f64>,
        /// The bond graph.
        bonds: Vec<(usize, usize)>,
    },
}

/// The name of [`CgDefinition::AldpPhiPsi`] in `molecule.json`.
pub const ALDP_PHI_PSI: &str = "aldp-phi-psi";

impl CgDefinition {
    /// A short description for messages.
    pub fn name(&self) -> String {
        match self {
            CgDefinition::AldpPhiPsi => ALDP_PHI_PSI.to_string(),
            CgDefinition::Dihedrals { dihedrals, .. } => format!("with CG dihedrals {dihedrals:?}"),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            CgDefinition::AldpPhiPsi => serde_json::json!(ALDP_PHI_PSI),
            CgDefinition::Dihedrals { dihedrals, masses, bonds } => {
                serde_json::json!({"dihedrals": dihedrals, "masses": masses, "bonds": bonds})
            }
        }
    }

    fn from_json(value: &serde_json::Value, version: u64) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Graph {
            dihedrals: Vec<[usize; 4]>,
            masses: Vec<f64>,
            bonds: Vec<(usize, usize)>,
        }
        match value {
            serde_json::Value::String(name) if name == ALDP_PHI_PSI => Ok(CgDefinition::AldpPhiPsi),
            serde_json::Value::String(name) => Err(format!(
                "unknown CG definition \"{name}\" (this build knows \"{ALDP_PHI_PSI}\" and, from version 2, dihedrals)"
            )),
            serde_json::Value::Object(_) if version >= 2 => {
                let graph: Graph = serde_json::from_value(value.clone()).map_err(|e| format!("bad \"cg\": {e}"))?;
                Ok(CgDefinition::Dihedrals { dihedrals: graph.dihedrals, masses: graph.masses, bonds: graph.bonds })
            }
            _ => Err(format!(
                "\"cg\" must be \"{ALDP_PHI_PSI}\"{}",
                if version >= 2 { " or an object" } else { " in version 1" }
            )),
        }
    }
}

/// What `molecule.json` says about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct MoleculeModelInfo {
    /// [`system_fingerprint`] of the System the model was trained on.
    pub system_fingerprint: String,
    /// Number of atoms of the molecule.
    pub n_atoms: usize,
    /// The normalisation centre of the internal coordinates (atoms x 3, nm).
    pub reference_positions_nm: Vec<f64>,
    /// The CG definition.
    pub cg: CgDefinition,
    /// Temperature of the target density, in K.
    pub temperature_k: f64,
    /// Free-form provenance stored with the model (`null` when there is none).
    pub provenance: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoleculeFile {
    format: String,
    version: u64,
    system_fingerprint: String,
    n_atoms: usize,
    reference_positions_nm: Vec<[f64; 3]>,
    cg: serde_json::Value,
    temperature_k: f64,
    #[serde(default)]
    provenance: serde_json::Value,
}

impl MoleculeModelInfo {
    /// Alanine dipeptide conditioned on (phi, psi), trained on `system` at `temperature_k`, with
    /// internal coordinates normalised around `reference_positions_nm` (66 values, nm; the
    /// minimum-energy structure in the reference code). No provenance.
    pub fn aldp(system: &System, reference_positions_nm: &[f64], temperature_k: f64) -> Result<Self> {
        let info = Self {
            system_fingerprint: system_fingerprint(system)?,
            n_atoms: system.num_particles(),
            reference_positions_nm: reference_positions_nm.to_vec(),
            cg: CgDefinition::AldpPhiPsi,
            temperature_k,
            provenance: serde_json::Value::Null,
        };
        info.validate()?;
        Ok(info)
    }

    /// Any molecule of `system` conditioned on `cg_dihedrals` (0-based atom indices), trained at
    /// `temperature_k`, with internal coordinates from the System's bond graph normalised around
    /// `reference_positions_nm` (3 values per atom, nm). Errors where the molecule cannot be built
    /// (see [`crate::coords::molecule::Molecule::new`]).
    pub fn for_system(
        system: &System,
        reference_positions_nm: &[f64],
        cg_dihedrals: &[[usize; 4]],
        temperature_k: f64,
    ) -> Result<Self> {
        let info = Self {
            system_fingerprint: system_fingerprint(system)?,
            n_atoms: system.num_particles(),
            reference_positions_nm: reference_positions_nm.to_vec(),
            cg: CgDefinition::Dihedrals {
                dihedrals: cg_dihedrals.to_vec(),
                masses: system.masses()?,
                bonds: system.bonds()?,
            },
            temperature_k,
            provenance: serde_json::Value::Null,
        };
        info.validate()?;
        Ok(info)
    }

    /// The same with `provenance` stored beside it.
    pub fn with_provenance(mut self, provenance: serde_json::Value) -> Self {
        self.provenance = provenance;
        self
    }

    /// Checks the fields against each other: atom counts, finite reference, positive temperature,
    /// a fingerprint of 16 hex digits, and a molecule that can be built.
    pub fn validate(&self) -> Result<()> {
        if self.reference_positions_nm.len() != 3 * self.n_atoms {
            return Err(Error::invalid(format!(
                "the reference structure has {} values, {} atoms need {}",
                self.reference_positions_nm.len(),
                self.n_atoms,
                3 * self.n_atoms
            )));
        }
        if let Some(i) = self.reference_positions_nm.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "the reference structure has a non-finite coordinate at atom {}",
                i / 3
            )));
        }
        if !(self.temperature_k.is_finite() && self.temperature_k > 0.0) {
            return Err(Error::invalid(format!("temperature must be positive, got {} K", self.temperature_k)));
        }
        if self.system_fingerprint.len() != 16 || !self.system_fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "system fingerprint \"{}\" is not 16 hex digits",
                self.system_fingerprint
            )));
        }
        match &self.cg {
            CgDefinition::AldpPhiPsi if self.n_atoms != crate::coords::aldp::N_ATOMS => {
                return Err(Error::invalid(format!(
                    "CG definition {} is for alanine dipeptide ({} atoms), the model has {} atoms",
                    self.cg.name(),
                    crate::coords::aldp::N_ATOMS,
                    self.n_atoms
                )))
            }
            CgDefinition::Dihedrals { masses, .. } if masses.len() != self.n_atoms => {
                return Err(Error::invalid(format!("{} masses for {} atoms", masses.len(), self.n_atoms)))
            }
            _ => {}
        }
        self.molecule().map(|_| ())
    }

    /// The molecule in flow space: its internal coordinates around the reference structure, its
    /// CG angles and its chiral centres.
    pub fn molecule(&self) -> Result<ConditionalMolecule> {
        match &self.cg {
            CgDefinition::AldpPhiPsi => ConditionalMolecule::aldp(&self.reference_positions_nm),
            CgDefinition::Dihedrals { dihedrals, masses, bonds } => ConditionalMolecule::from_molecule(
                &crate::coords::molecule::Molecule::new(masses, bonds, &self.reference_positions_nm, dihedrals)?,
            ),
        }
    }

    /// Checks that `system` is the one the model was trained on (same fingerprint; and for a
    /// molecule given by its bond graph, the same masses and bonds as `molecule.json` stores, so
    /// that an edited graph cannot build another Z-matrix unnoticed).
    pub fn check_system(&self, system: &System) -> Result<()> {
        let found = system_fingerprint(system)?;
        if found != self.system_fingerprint {
            return Err(Error::invalid(format!(
                "the model was trained on another system: fingerprint {}, the given system has {found}",
                self.system_fingerprint
            )));
        }
        if let CgDefinition::Dihedrals { masses, bonds, .. } = &self.cg {
            if system.masses()? != *masses || system.bonds()? != *bonds {
                return Err(Error::invalid(
                    "the masses or bonds stored in molecule.json differ from the System's (an edited file?)",
                ));
            }
        }
        Ok(())
    }

    /// Checks that a flow of `spec` models this molecule's fine coordinates: its dims, context
    /// width and circular dimensions.
    pub fn check_flow_spec(&self, spec: &FlowSpec) -> Result<()> {
        let molecule = self.molecule()?;
        let circular = molecule.fine_circular_indices();
        if spec.dims != molecule.fine_dims() || spec.context != molecule.context_width() || spec.circular != circular {
            return Err(Error::invalid(format!(
                "the flow does not fit the molecule {}: the flow has {} dims, context width {} and circular dims \
                 {:?}; the molecule needs {} dims, context width {} and circular dims {:?}",
                self.cg.name(),
                spec.dims,
                spec.context,
                spec.circular,
                molecule.fine_dims(),
                molecule.context_width(),
                circular
            )));
        }
        Ok(())
    }

    fn to_file(&self) -> MoleculeFile {
        MoleculeFile {
            format: FORMAT.to_string(),
            version: VERSION,
            system_fingerprint: self.system_fingerprint.clone(),
            n_atoms: self.n_atoms,
            reference_positions_nm: self.reference_positions_nm.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            cg: self.cg.to_json(),
            temperature_k: self.temperature_k,
            provenance: self.provenance.clone(),
        }
    }
}

/// Saves a conditional molecular model: the flow as a checkpoint (weights and architecture, no
/// training state) and `molecule.json`, in the folder `dir` (created if needed; an earlier model
/// there is replaced).
///
/// Fails, writing nothing, when `info` is inconsistent (see [`MoleculeModelInfo::validate`]) or the
/// flow does not model the molecule's fine coordinates (see
/// [`MoleculeModelInfo::check_flow_spec`]).
pub fn save_molecule_model(dir: &Path, flow: &Flow, info: &MoleculeModelInfo) -> Result<()> {
    info.validate()?;
    info.check_flow_spec(flow.spec())?;
    let mut json = serde_json::to_vec_pretty(&info.to_file())
        .map_err(|e| Error::invalid(format!("{MOLECULE_FILE}: provenance cannot be written as JSON: {e}")))?;
    json.push(b'\n');
    save_flow(dir, flow, None)?;
    let path = dir.join(MOLECULE_FILE);
    let temporary = dir.join(format!("{MOLECULE_FILE}.tmp"));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(|e| Error::io(&path, e))?;
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))?;
    Ok(())
}

/// The System a model carries beside its flow, so that it can be used away from the files it was
/// trained with.
pub const SYSTEM_FILE: &str = "system.xml";

/// The System a saved model is used with: `system` when given, else the `system.xml` the model
/// folder carries. Does not check that it is the one the model was trained on
/// ([`MoleculeModelInfo::check_system`] does).
pub fn model_system(dir: &Path, system: Option<&Path>) -> Result<crate::openmm::System> {
    let path = match system {
        Some(path) => path.to_path_buf(),
        None => {
            let carried = dir.join(SYSTEM_FILE);
            if !carried.exists() {
                return Err(Error::invalid(format!(
                    "the model {} carries no {SYSTEM_FILE} (it was saved before models carried their System): give \
                     the System it was trained on",
                    dir.display()
                )));
            }
            carried
        }
    };
    crate::openmm::System::from_xml_file(&path)
}

/// Stores `system` in the model folder `dir` as [`SYSTEM_FILE`] (atomically), after checking that
/// it is the System the model's `molecule.json` names.
pub fn save_model_system(dir: &Path, system: &crate::openmm::System) -> Result<()> {
    read_molecule_info(dir)?.check_system(system)?;
    crate::io::write_atomically(&dir.join(SYSTEM_FILE), system.to_xml()?.as_bytes())
}

/// Reads and checks `molecule.json` of the model folder `dir` (without loading the flow).
pub fn read_molecule_info(dir: &Path) -> Result<MoleculeModelInfo> {
    let metadata = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !metadata.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a folder (a molecule model is a folder holding {FLOW_FILE}, {WEIGHTS_FILE} and {MOLECULE_FILE})",
            dir.display()
        )));
    }
    let path = dir.join(MOLECULE_FILE);
    if !path.exists() {
        return Err(Error::invalid(format!(
            "{}: no {MOLECULE_FILE}, so this is not a molecule model (a flow checkpoint alone does not say which \
             molecule its coordinates belong to; save models with save_molecule_model)",
            dir.display()
        )));
    }
    let text = crate::io::read_text(&path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::parse(&path, format!("malformed JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::parse(
                &path,
                format!("not a cgflow molecule model: format is \"{other}\", expected \"{FORMAT}\""),
            ))
        }
        None => {
            return Err(Error::parse(&path, format!("not a cgflow molecule model: no \"format\": \"{FORMAT}\" field")))
        }
    }
    let version = match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if READABLE_VERSIONS.contains(&v) => v,
        Some(other) => {
            return Err(Error::parse(
                &path,
                format!("unsupported molecule model version {other} (this build reads versions 1 and 2)"),
            ))
        }
        None => return Err(Error::parse(&path, "no integer \"version\" field")),
    };
    let file: MoleculeFile =
        serde_json::from_value(value).map_err(|e| Error::parse(&path, format!("bad molecule description: {e}")))?;
    let cg = CgDefinition::from_json(&file.cg, version).map_err(|m| Error::parse(&path, m))?;
    let info = MoleculeModelInfo {
        system_fingerprint: file.system_fingerprint,
        n_atoms: file.n_atoms,
        reference_positions_nm: file.reference_positions_nm.into_iter().flatten().collect(),
        cg,
        temperature_k: file.temperature_k,
        provenance: file.provenance,
    };
    info.validate().map_err(|e| {
        Error::parse(
            &path,
            match e {
                Error::InvalidInput(m) => m,
                other => other.to_string(),
            },
        )
    })?;
    Ok(info)
}

/// Loads a model saved by [`save_molecule_model`]: the flow (on `device`) and its molecule.
///
/// Errors: a missing folder or `molecule.json`, malformed or inconsistent JSON, an unknown CG
/// definition, any flow-checkpoint error (see [`load_flow`]), and a flow whose dims, context width
/// or circular dims do not fit the molecule (58, 4 and the 10 circular fine dims for alanine
/// dipeptide's hand-written Z-matrix). A training state stored in the checkpoint is ignored.
pub fn load_molecule_model(dir: &Path, device: &Device) -> Result<(Flow, MoleculeModelInfo)> {
    let info = read_molecule_info(dir)?;
    let (flow, _) = load_flow(dir, device)?;
    info.check_flow_spec(flow.spec()).map_err(|e| {
        Error::invalid(format!(
            "{}: {}",
            dir.display(),
            match e {
                Error::InvalidInput(m) => m,
                other => other.to_string(),
            }
        ))
    })?;
    Ok((flow, info))
}
