//! Any molecule as an active-learning problem: an OpenMM System, a reference structure and a
//! [`ConditionalMolecule`] (its internal coordinates with CG dihedrals; alanine dipeptide's
//! hand-written one, or any molecule's from its bond graph). The start-up is MD from the
//! reference structure and training by example on its frames; the score is the KLD of the PMF's
//! 2D marginals against references of (CG dimension i, CG dimension j) pairs.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::AlConfig;
use super::problem::{AlProblem, Score, StartUp};
use super::record::AlEvent;
use super::search::{grid_centres, torus_grid_centres, CgDomain};
use crate::energy::{OpenMmEnergy, OpenMmEnergyConfig};
use crate::error::{Error, Result};
use crate::flow::molecular::{ConditionalMolecularTarget, ConditionalMolecule};
use crate::flow::optim::Adam;
use crate::flow::train::{ml_loss, TargetEnergy};
use crate::flow::{CouplingKind, Flow, FlowSpec};
use crate::md::walkers::{WalkerConfig, Walkers};
use crate::metrics::kl_to_free_energy;
use crate::openmm::{Platform, System};
use crate::pmf::ensemble::{CgFeatures, PmfEnsemble};

/// Bins per CG angle of a marginal reference.
pub const REFERENCE_BINS: usize = 100;

/// A reference of one 2D marginal: the bin probabilities of CG dimensions `pair` on the
/// [`REFERENCE_BINS`] x [`REFERENCE_BINS`] grid over [-pi, pi)^2, `[bin of i][bin of j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarginalReference {
    /// The two CG dimensions (0-based, in the order of the CG definition).
    pub pair: (usize, usize),
    /// Bin probabilities.
    pub probabilities: Vec<f64>,
}

/// A molecule's active-learning problem.
pub struct MoleculeProblem {
    system: System,
    platform: Platform,
    molecule: ConditionalMolecule,
    target: Arc<ConditionalMolecularTarget>,
    reference_structure_nm: Vec<f64>,
    reference_cg: Vec<f64>,
    references: Vec<MarginalReference>,
    other_bins: usize,
}

impl MoleculeProblem {
    /// Midpoints per integrated-out CG dimension of a marginal's KLD when the molecule has more
    /// than two CG angles.
    pub const DEFAULT_OTHER_BINS: usize = 12;

    /// The problem of `molecule` with energies of `system` on `platform`. `reference_structure_nm`
    /// (flat xyz, nm) starts the MD and is the energy origin; `references` score the PMF. Errors
    /// on a System of another size, a reference structure of the wrong length or without CG
    /// angles (non-finite, or atoms on top of each other), and a reference of the wrong shape or
    /// of a pair that is not two distinct CG dimensions.
    pub fn new(
        molecule: ConditionalMolecule,
        system: &System,
        platform: &Platform,
        reference_structure_nm: &[f64],
        references: Vec<MarginalReference>,
    ) -> Result<Self> {
        let n = molecule.n_atoms();
        if system.num_particles() != n {
            return Err(Error::invalid(format!(
                "the system has {} particles; the molecule has {n} atoms",
                system.num_particles()
            )));
        }
        if reference_structure_nm.len() != 3 * n {
            return Err(Error::invalid(format!(
                "the reference structure has {} values; {n} atoms need {}",
                reference_structure_nm.len(),
                3 * n
            )));
        }
        let dims = molecule.cg_dims();
        for r in &references {
            let (i, j) = r.pair;
            if i >= dims || j >= dims || i == j {
                return Err(Error::invalid(format!(
                    "reference of CG pair ({i}, {j}): the molecule has {dims} CG dimensions"
                )));
            }
            if r.probabilities.len() != REFERENCE_BINS * REFERENCE_BINS {
                return Err(Error::invalid(format!(
                    "reference of CG pair ({i}, {j}): expected {REFERENCE_BINS} x {REFERENCE_BINS} probabilities, got {}",
                    r.probabilities.len()
                )));
            }
        }
        let (_, reference_cg, _) = molecule.from_cartesian(reference_structure_nm)?;
        let energy = OpenMmEnergy::new(system, platform, &OpenMmEnergyConfig::default())?;
        let target = Arc::new(ConditionalMolecularTarget::new(molecule.clone(), Box::new(energy))?);
        Ok(Self {
            system: system.clone(),
            platform: platform.clone(),
            molecule,
            target,
            reference_structure_nm: reference_structure_nm.to_vec(),
            reference_cg,
            references,
            other_bins: Self::DEFAULT_OTHER_BINS,
        })
    }

    /// The same with `other_bins` midpoints per integrated-out dimension in the KLD of marginals.
    pub fn with_other_bins(mut self, other_bins: usize) -> Result<Self> {
        if other_bins == 0 {
            return Err(Error::invalid("marginal grid: other_bins must be positive"));
        }
        self.other_bins = other_bins;
        Ok(self)
    }

    /// The molecule (flow space).
    pub fn molecule(&self) -> &ConditionalMolecule {
        &self.molecule
    }

    /// The molecular training target (energies through OpenMM).
    pub fn molecular_target(&self) -> &Arc<ConditionalMolecularTarget> {
        &self.target
    }

    /// The marginal references.
    pub fn references(&self) -> &[MarginalReference] {
        &self.references
    }
}

impl AlProblem for MoleculeProblem {
    fn cg_dims(&self) -> usize {
        self.molecule.cg_dims()
    }

    fn domain(&self) -> CgDomain {
        CgDomain::Torus { dims: self.molecule.cg_dims() }
    }

    fn features(&self) -> CgFeatures {
        CgFeatures::Angles { count: self.molecule.cg_dims() }
    }

    fn flow_spec(&self, config: &AlConfig) -> FlowSpec {
        let flow = &config.flow;
        FlowSpec {
            dims: self.molecule.fine_dims(),
            circular: self.molecule.fine_circular_indices(),
            context: self.molecule.context_width(),
            layers: flow.layers,
            coupling: CouplingKind::Spline { bins: flow.bins, tail_bound: flow.tail_bound },
            hidden: flow.hidden,
            blocks: flow.blocks,
            shift_every: flow.shift_every,
            seed: config.seed,
            precision: flow.precision,
        }
    }

    fn context_width(&self) -> usize {
        self.molecule.context_width()
    }

    fn context(&self, cg: &[f64]) -> Vec<f64> {
        self.molecule.context(cg)
    }

    fn target(&self) -> Arc<dyn TargetEnergy> {
        self.target.clone()
    }

    fn log_density(&self, fine: &[f64], cg: &[f64]) -> Result<Vec<f64>> {
        self.target.log_density(fine, cg)
    }

    fn log_density_of_energies(&self, fine: &[f64], cg: &[f64], energies: &[f64]) -> Result<Vec<f64>> {
        self.target.log_density_of_energies(fine, cg, energies)
    }

    fn rejected(&self) -> u64 {
        self.target.rejected()
    }

    fn grid(&self, points_per_dim: usize) -> Result<Vec<Vec<f64>>> {
        torus_grid_centres(self.molecule.cg_dims(), points_per_dim)
    }

    fn search_start(&self) -> Vec<f64> {
        self.reference_cg.clone()
    }

    /// Start-up MD from the reference structure (one OpenMM thread per Context keeps it
    /// reproducible on the CPU platform) and training by example on its valid frames.
    fn start(
        &self,
        config: &AlConfig,
        flow: &Flow,
        adam: &mut Adam,
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(AlEvent),
    ) -> Result<StartUp> {
        let md = &config.startup_md;
        let platform = self.platform.clone().single_threaded_cpu();
        let walker_config = WalkerConfig {
            walkers: md.walkers,
            seed: (config.seed % (i32::MAX as u64)) as i32 + 1,
            ..WalkerConfig::default()
        };
        let mut walkers =
            Walkers::new(&self.system, &platform, &walker_config, &self.reference_structure_nm, |_| vec![])?;
        let frames = md.steps / md.record_every;
        progress(AlEvent::Phase { name: "start-up MD (frames)", total: frames });
        let mut positions = Vec::new();
        for _ in 0..frames {
            walkers.step(md.record_every)?;
            positions.extend(walkers.positions()?);
            progress(AlEvent::Advance(1));
        }
        let startup_evaluations = walkers.evaluations();
        let (fine, cg, _) = self.molecule.from_cartesian(&positions)?;
        let valid = self.molecule.valid(&positions)?;
        let keep: Vec<usize> = (0..valid.len()).filter(|&i| valid[i]).collect();
        if keep.len() < 2 {
            return Err(Error::invalid("the start-up MD produced fewer than two valid frames"));
        }

        // Training by example.
        let (f, d) = (self.molecule.fine_dims(), self.molecule.cg_dims());
        let width = self.molecule.context_width();
        let ex = &config.example_training;
        progress(AlEvent::Phase { name: "training by example (steps)", total: ex.steps as u64 });
        for _ in 0..ex.steps {
            let rows: Vec<usize> = (0..ex.batch).map(|_| keep[rng.gen_range(0..keep.len())]).collect();
            let x: Vec<f64> = rows.iter().flat_map(|&i| fine[i * f..(i + 1) * f].iter().copied()).collect();
            let c: Vec<f64> = rows.iter().flat_map(|&i| cg[i * d..(i + 1) * d].iter().copied()).collect();
            let x = Tensor::from_vec(x, (rows.len(), f), &Device::Cpu)?.to_dtype(flow.dtype())?;
            let context = Tensor::from_vec(self.molecule.context(&c), (rows.len(), width), &Device::Cpu)?
                .to_dtype(flow.dtype())?;
            let (loss, _) = ml_loss(flow, &x, Some(&context))?;
            adam.step(flow.params(), &loss.backward()?, ex.lr)?;
            progress(AlEvent::Advance(1));
        }

        // The energy origin of the loss regulariser: the reference structure.
        let (fine_min, cg_min, _) = self.molecule.from_cartesian(&self.reference_structure_nm)?;
        let before = self.target.evaluations();
        let (e_min, _) = self.target.energies_and_gradients(&fine_min, Some(&cg_min))?;
        Ok(StartUp {
            candidates: keep.iter().map(|&i| cg[i * d..(i + 1) * d].to_vec()).collect(),
            startup_evaluations,
            other_evaluations: self.target.evaluations() - before,
            reference_energy: e_min[0],
        })
    }

    /// Two CG angles and the reference of (0, 1): the ensemble mean on the reference's bin
    /// centres; otherwise each marginal integrated over the other angles (and kept).
    fn score(&self, ensemble: &PmfEnsemble) -> Result<Score> {
        let dims = self.molecule.cg_dims();
        let mut score = Score::default();
        for r in &self.references {
            let free_energy = if dims == 2 && r.pair == (0, 1) {
                let grid: Vec<f64> = grid_centres(REFERENCE_BINS)?.iter().flatten().copied().collect();
                ensemble.predict(&grid)?.0
            } else {
                let f = ensemble.marginal_pmf(dims, r.pair, REFERENCE_BINS, self.other_bins)?;
                score.marginal_pmfs.push((r.pair, f.clone()));
                f
            };
            score.kld.push(kl_to_free_energy(&r.probabilities, &free_energy)?);
        }
        Ok(score)
    }
}
