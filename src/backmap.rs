//! Backmapping: all-atom structures for given CG points from a conditional flow q(x_perp | s).
//!
//! For every CG point s_j (angles in radians, in [-pi, pi]) the flow draws fine coordinates
//! x_perp ~ q(. | s_j); [`to_cartesian`] builds the structure, whose CG angles equal s_j up to
//! rounding (the CG angles are coordinates of the Z-matrix, not fitted). Each
//! structure gets its reduced energy u (kT) and its importance log-weight
//!
//! ```text
//! ln w = ln p(s, x_perp) - ln q(x_perp | s) = -u(x) + ln|det dx/dz| - ln q(x_perp | s),
//! ```
//!
//! and the weights are normalised over the structures of each CG point: the normalised weights
//! turn averages over the structures of s_j into averages over the Boltzmann distribution of the
//! fine coordinates given s_j.
//!
//! Invalid structures (the wrong handedness at a chiral centre: D-alanine, the mirror image at CA,
//! in alanine dipeptide) are never evaluated and never returned,
//! and with an energy bound so are structures with u above it (or a non-finite u): those are
//! counted and redrawn, in rounds that draw exactly the missing number of structures of each
//! point, until every point has its n structures or [`BackmapConfig::max_rounds`] rounds have
//! passed, which is an error naming the point. Rejected draws have weight zero in p restricted to
//! valid (and bounded) structures, so the normalised weights of the kept structures are those of
//! that distribution, and [`PointSummary::free_energy_kt`] = -ln((1/draws) sum_kept w) counts
//! every draw of the point, rejected ones included.
//!
//! [`to_cartesian`]: crate::flow::molecular::ConditionalMolecule::to_cartesian

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::error::{Error, Result};
use crate::flow::molecular::ConditionalMolecularTarget;
use crate::flow::train::TargetEnergy;
use crate::flow::Flow;
use crate::metrics::weights::{effective_sample_size, log_sum_exp, normalized_weights};
use crate::units::{angle_to_radians, kt_kj_per_mol, AngleUnit};

/// Settings of [`backmap`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackmapConfig {
    /// Structures per CG point.
    pub samples_per_point: usize,
    /// Reject (and redraw) structures with u above this value, in kT (`None`: keep every valid
    /// structure with a finite energy).
    pub max_energy_kt: Option<f64>,
    /// Drawing rounds before giving up on a point that lacks structures.
    pub max_rounds: usize,
    /// Temperature of the target's energy model, in K: kT for the energies in kJ/mol.
    pub temperature_k: f64,
    /// Most structures per flow and energy call.
    pub chunk_rows: usize,
}

impl Default for BackmapConfig {
    /// 10 structures per point, no energy bound, 20 rounds, 300 K, chunks of 4096.
    fn default() -> Self {
        Self { samples_per_point: 10, max_energy_kt: None, max_rounds: 20, temperature_k: 300.0, chunk_rows: 4096 }
    }
}

/// What happened at one CG point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointSummary {
    /// Structures drawn from the flow (kept and rejected).
    pub draws: u64,
    /// Draws rejected for the wrong chirality (D-alanine; not evaluated).
    pub rejected_chirality: u64,
    /// Draws rejected for an energy above the bound or a non-finite energy (evaluated).
    pub rejected_energy: u64,
    /// Kish effective sample size of the point's kept structures, between 1 and n.
    pub ess: f64,
    /// -ln((1/draws) sum_kept w) in kT: the importance-sampling free energy of the point (of p
    /// restricted to valid, bounded structures), up to the constant of the unnormalised p.
    pub free_energy_kt: f64,
}

/// Backmapped structures, ordered by CG point (the n structures of point 0, then of point 1...).
#[derive(Debug, Clone, PartialEq)]
pub struct Backmapped {
    /// Atoms per structure.
    pub n_atoms: usize,
    /// Positions (structures x atoms x 3, nm), in the frame of the internal coordinates.
    pub positions_nm: Vec<f64>,
    /// The CG point of each structure.
    pub cg_index: Vec<usize>,
    /// CG angles of each structure (structures x CG dims, radians in [-pi, pi)), measured back from
    /// the built structure.
    pub cg_achieved_rad: Vec<f64>,
    /// u = U/kT of each structure.
    pub reduced_energies: Vec<f64>,
    /// U of each structure in kJ/mol.
    pub energies_kj_per_mol: Vec<f64>,
    /// ln w = -u + ln|det dx/dz| - ln q of each structure.
    pub log_weights: Vec<f64>,
    /// Weights normalised over the structures of each CG point.
    pub normalized_weights: Vec<f64>,
    /// One summary per CG point.
    pub points: Vec<PointSummary>,
    /// Energy evaluations made (every evaluated draw, kept or rejected for its energy).
    pub evaluations: u64,
    /// Draws rejected for the wrong chirality, all points together.
    pub rejected_chirality: u64,
    /// Draws rejected for their energy, all points together.
    pub rejected_energy: u64,
}

/// CG points given flat in `unit` (`cg_dims` angles per point) as radians, checked: finite and in
/// [-pi, pi] (radians) or [-180, 180] (degrees). Errors name the point (0-based).
pub fn cg_points_to_radians(values: &[f64], cg_dims: usize, unit: AngleUnit) -> Result<Vec<f64>> {
    if cg_dims == 0 || values.len() % cg_dims != 0 {
        return Err(Error::invalid(format!(
            "{} values are not a whole number of CG points of {cg_dims} angles",
            values.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            angle_to_radians(v, unit).map_err(|m| {
                Error::invalid(format!("CG point {}, angle {} of {cg_dims}: {m}", i / cg_dims, i % cg_dims + 1))
            })
        })
        .collect()
}

/// One kept structure.
struct Kept {
    positions: Vec<f64>,
    u: f64,
    log_weight: f64,
}

/// Draws `config.samples_per_point` structures for every CG point of `cg_rad` (flat, radians in
/// [-pi, pi], the molecule's CG dims per point) from `flow`, evaluates them with `target`, and
/// returns them with their energies and importance weights (see the [module documentation](self)).
///
/// Errors: a flow that does not fit the molecule (dims, context width, circular dims), CG angles that are not
/// finite or outside [-pi, pi] (naming the point), bad settings, and a point that still lacks
/// structures after `max_rounds` rounds (naming the point and the rejections).
pub fn backmap<R: Rng>(
    flow: &Flow,
    target: &ConditionalMolecularTarget,
    cg_rad: &[f64],
    config: &BackmapConfig,
    rng: &mut R,
) -> Result<Backmapped> {
    let molecule = target.molecule();
    let (cg_dims, fine_dims, n_atoms) = (molecule.cg_dims(), molecule.fine_dims(), molecule.n_atoms());
    let circular = molecule.fine_circular_indices();
    let spec = flow.spec();
    if spec.dims != fine_dims || spec.context != molecule.context_width() || spec.circular != circular {
        return Err(Error::invalid(format!(
            "the flow ({} dims, context width {}, circular dims {:?}) does not fit the molecule ({fine_dims} fine \
             dims, context width {}, circular dims {circular:?})",
            spec.dims,
            spec.context,
            spec.circular,
            molecule.context_width()
        )));
    }
    let cg_rad = cg_points_to_radians(cg_rad, cg_dims, AngleUnit::Radians)?;
    let n_points = cg_rad.len() / cg_dims;
    let n = config.samples_per_point;
    if n_points == 0 {
        return Err(Error::invalid("no CG points to backmap"));
    }
    if n == 0 || config.max_rounds == 0 || config.chunk_rows == 0 {
        return Err(Error::invalid("samples per point, max_rounds and chunk_rows must be positive"));
    }
    if !(config.temperature_k.is_finite() && config.temperature_k > 0.0) {
        return Err(Error::invalid(format!("temperature must be positive, got {} K", config.temperature_k)));
    }
    if config.max_energy_kt.is_some_and(f64::is_nan) {
        return Err(Error::invalid("the energy bound is NaN"));
    }
    let stride = 3 * n_atoms;
    let evaluations_before = target.evaluations();
    let mut kept: Vec<Vec<Kept>> = (0..n_points).map(|_| Vec::with_capacity(n)).collect();
    let mut summaries =
        vec![
            PointSummary { draws: 0, rejected_chirality: 0, rejected_energy: 0, ess: 0.0, free_energy_kt: 0.0 };
            n_points
        ];
    for _ in 0..config.max_rounds {
        let rows: Vec<usize> = (0..n_points).flat_map(|j| std::iter::repeat(j).take(n - kept[j].len())).collect();
        if rows.is_empty() {
            break;
        }
        for chunk in rows.chunks(config.chunk_rows) {
            let cg: Vec<f64> =
                chunk.iter().flat_map(|&j| cg_rad[j * cg_dims..(j + 1) * cg_dims].iter().copied()).collect();
            let context =
                Tensor::from_vec(molecule.context(&cg), (chunk.len(), molecule.context_width()), flow.device())?
                    .to_dtype(flow.dtype())?;
            let (x, log_q) = flow.sample(chunk.len(), Some(&context), rng)?;
            let fine: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            let log_q: Vec<f64> = log_q.to_dtype(DType::F64)?.to_vec1()?;
            let evaluation = target.evaluate(&fine, &cg)?;
            for (i, &j) in chunk.iter().enumerate() {
                let summary = &mut summaries[j];
                summary.draws += 1;
                if !evaluation.valid[i] {
                    summary.rejected_chirality += 1;
                    continue;
                }
                let u = evaluation.reduced_energies[i];
                if !u.is_finite() || config.max_energy_kt.is_some_and(|bound| u > bound) {
                    summary.rejected_energy += 1;
                    continue;
                }
                let log_weight = -u + evaluation.structures.log_det_dx_dz[i] - log_q[i];
                if !log_weight.is_finite() {
                    return Err(Error::invalid(format!(
                        "CG point {j}: a structure of finite energy has the non-finite log-weight {log_weight} \
                         (ln q = {})",
                        log_q[i]
                    )));
                }
                let positions = evaluation.structures.positions_nm[i * stride..(i + 1) * stride].to_vec();
                kept[j].push(Kept { positions, u, log_weight });
            }
        }
    }
    if let Some(j) = (0..n_points).find(|&j| kept[j].len() < n) {
        let s = &summaries[j];
        let bound = match config.max_energy_kt {
            Some(b) => format!("above the energy bound of {b} kT or non-finite"),
            None => "of non-finite energy".to_string(),
        };
        return Err(Error::invalid(format!(
            "CG point {j} at {:?} rad: only {} of {n} structures after {} rounds of drawing ({} draws: {} of the wrong chirality (D), \
             {} {bound}); the flow puts little mass on valid structures there (train it on this region{})",
            &cg_rad[j * cg_dims..(j + 1) * cg_dims],
            kept[j].len(),
            config.max_rounds,
            s.draws,
            s.rejected_chirality,
            s.rejected_energy,
            if config.max_energy_kt.is_some() { ", or raise the energy bound" } else { "" }
        )));
    }

    let kt = kt_kj_per_mol(config.temperature_k);
    let total = n_points * n;
    let mut out = Backmapped {
        n_atoms,
        positions_nm: Vec::with_capacity(total * stride),
        cg_index: Vec::with_capacity(total),
        cg_achieved_rad: Vec::new(),
        reduced_energies: Vec::with_capacity(total),
        energies_kj_per_mol: Vec::with_capacity(total),
        log_weights: Vec::with_capacity(total),
        normalized_weights: Vec::with_capacity(total),
        points: Vec::with_capacity(n_points),
        evaluations: target.evaluations() - evaluations_before,
        rejected_chirality: summaries.iter().map(|s| s.rejected_chirality).sum(),
        rejected_energy: summaries.iter().map(|s| s.rejected_energy).sum(),
    };
    for (j, (structures, mut summary)) in kept.into_iter().zip(summaries).enumerate() {
        let log_weights: Vec<f64> = structures.iter().map(|k| k.log_weight).collect();
        out.normalized_weights.extend(normalized_weights(&log_weights)?);
        summary.ess = effective_sample_size(&log_weights)?;
        summary.free_energy_kt = -(log_sum_exp(&log_weights) - (summary.draws as f64).ln());
        out.points.push(summary);
        for k in structures {
            out.positions_nm.extend_from_slice(&k.positions);
            out.cg_index.push(j);
            out.reduced_energies.push(k.u);
            out.energies_kj_per_mol.push(k.u * kt);
            out.log_weights.push(k.log_weight);
        }
    }
    out.cg_achieved_rad = molecule.from_cartesian(&out.positions_nm)?.1;
    Ok(out)
}
