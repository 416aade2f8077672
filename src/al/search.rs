//! The search step of the active-learning loop (BRIEF section 5).

use crate::error::{Error, Result};
use crate::metrics::Axis;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

const PI: f64 = std::f64::consts::PI;

/// Where CG points live.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CgDomain {
    /// One real coordinate in [lo, hi] (Müller-Brown's s).
    Interval {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
    /// `dims` angles, each periodic on [-pi, pi) (alanine dipeptide's phi, psi).
    Torus {
        /// Number of angles.
        dims: usize,
    },
}

impl CgDomain {
    /// Coordinates per point.
    pub fn dims(&self) -> usize {
        match *self {
            CgDomain::Interval { .. } => 1,
            CgDomain::Torus { dims } => dims,
        }
    }

    /// Difference b - a per coordinate (minimum image on the torus).
    fn delta(&self, a: f64, b: f64) -> f64 {
        match self {
            CgDomain::Interval { .. } => b - a,
            CgDomain::Torus { .. } => wrap(b - a),
        }
    }

    /// Euclidean distance (minimum image on the torus).
    pub fn distance(&self, a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| self.delta(x, y).powi(2)).sum::<f64>().sqrt()
    }

    /// Brings a point into the domain: wraps angles; `false` if it lies outside an interval.
    pub fn normalize(&self, p: &mut [f64]) -> bool {
        match *self {
            CgDomain::Interval { lo, hi } => p.iter().all(|&v| (lo..=hi).contains(&v)),
            CgDomain::Torus { .. } => {
                p.iter_mut().for_each(|v| *v = wrap(*v));
                true
            }
        }
    }

    fn validate(&self) -> Result<()> {
        match *self {
            CgDomain::Interval { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo < hi) => {
                Err(Error::invalid(format!("CG interval [{lo}, {hi}] is empty or not finite")))
            }
            CgDomain::Torus { dims: 0 } => Err(Error::invalid("a CG torus needs at least one angle")),
            _ => Ok(()),
        }
    }
}

/// Wraps an angle to [-pi, pi).
fn wrap(a: f64) -> f64 {
    (a + PI).rem_euclid(2.0 * PI) - PI
}

/// A PMF model on flat CG points: (ensemble mean, ensemble std) in kT, one value per point.
pub type PmfModelFn<'a> = dyn FnMut(&[f64]) -> Result<(Vec<f64>, Vec<f64>)> + 'a;

/// Settings of the uncertainty search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Gaussian proposal step per coordinate.
    pub step: f64,
    /// A chain stops where the ensemble std exceeds this (kT).
    pub threshold_kt: f64,
    /// Stop after this many high-uncertainty points.
    pub wanted: usize,
    /// Total Metropolis steps over all chains before giving up (the stopping rule of the loop).
    pub max_steps: u64,
    /// Seed.
    pub seed: u64,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// Points whose ensemble std exceeded the threshold, in the order found.
    pub found: Vec<Vec<f64>>,
    /// Metropolis steps taken over all chains.
    pub steps: u64,
}

impl SearchOutcome {
    /// True when the budget ran out before `wanted` points were found.
    pub fn exhausted(&self, config: &SearchConfig) -> bool {
        self.found.len() < config.wanted
    }
}

/// Metropolis chains on the ensemble-mean free energy F(s) (kT) from `starts`, advanced together so
/// that `model` (flat points -> (mean, std)) is called once per step for all live chains. A chain
/// stops at the first proposal whose std exceeds the threshold, and that point is recorded; a
/// stopped chain restarts from the most recent start point. Ends with `wanted` points or after
/// `max_steps` steps.
pub fn uncertainty_search(
    domain: &CgDomain,
    starts: &[Vec<f64>],
    config: &SearchConfig,
    model: &mut PmfModelFn,
) -> Result<SearchOutcome> {
    domain.validate()?;
    let d = domain.dims();
    if starts.is_empty() || starts.iter().any(|s| s.len() != d || s.iter().any(|v| !v.is_finite())) {
        return Err(Error::invalid(format!("search needs at least one finite start point of {d} coordinates")));
    }
    if !(config.step.is_finite() && config.step > 0.0 && config.threshold_kt.is_finite() && config.threshold_kt > 0.0) {
        return Err(Error::invalid("search step and threshold must be finite and positive"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut chains: Vec<Vec<f64>> = starts.to_vec();
    for c in &mut chains {
        domain.normalize(c);
    }
    let flat: Vec<f64> = chains.iter().flatten().copied().collect();
    let (mut energy, _) = model(&flat)?;
    if energy.len() != chains.len() {
        return Err(Error::invalid("the model returned the wrong number of values"));
    }
    let mut found = Vec::new();
    let mut steps = 0u64;
    while found.len() < config.wanted && steps < config.max_steps {
        let proposals: Vec<Vec<f64>> = chains
            .iter()
            .map(|c| c.iter().map(|&v| v + config.step * rng.sample::<f64, _>(StandardNormal)).collect())
            .collect();
        let mut inside = Vec::with_capacity(proposals.len());
        let mut flat = Vec::with_capacity(proposals.len() * d);
        for p in &proposals {
            let mut q = p.clone();
            inside.push(domain.normalize(&mut q));
            flat.extend(q);
        }
        let (mean, std) = model(&flat)?;
        if mean.len() != chains.len() || std.len() != chains.len() {
            return Err(Error::invalid("the model returned the wrong number of values"));
        }
        for i in 0..chains.len() {
            steps += 1;
            if !inside[i] {
                continue;
            }
            let q = flat[i * d..(i + 1) * d].to_vec();
            if !(mean[i].is_finite() && std[i].is_finite()) {
                return Err(Error::invalid(format!("the PMF model is not finite at {q:?}")));
            }
            if std[i] > config.threshold_kt {
                found.push(q);
                // Restart this chain from the newest start point.
                chains[i] = starts[starts.len() - 1 - (i % starts.len())].clone();
                domain.normalize(&mut chains[i]);
                let (e, _) = model(&chains[i])?;
                energy[i] = e[0];
                if found.len() >= config.wanted {
                    break;
                }
                continue;
            }
            if rng.gen::<f64>() < (energy[i] - mean[i]).exp() {
                chains[i] = q;
                energy[i] = mean[i];
            }
        }
    }
    Ok(SearchOutcome { found, steps })
}

/// Greedy farthest-point selection of `k` of `candidates`: each pick is the candidate farthest
/// from everything picked so far and from `existing` (e.g. the training points).
pub fn farthest_point_selection(
    domain: &CgDomain,
    candidates: &[Vec<f64>],
    existing: &[Vec<f64>],
    k: usize,
) -> Vec<Vec<f64>> {
    let mut nearest: Vec<f64> = candidates
        .iter()
        .map(|c| existing.iter().map(|e| domain.distance(c, e)).fold(f64::INFINITY, f64::min))
        .collect();
    let mut picked = Vec::new();
    let mut used = vec![false; candidates.len()];
    while picked.len() < k.min(candidates.len()) {
        let mut best = None;
        for (i, &dist) in nearest.iter().enumerate() {
            if !used[i] && best.map_or(true, |(_, b)| dist > b) {
                best = Some((i, dist));
            }
        }
        let Some((i, _)) = best else { break };
        used[i] = true;
        picked.push(candidates[i].clone());
        for (j, c) in candidates.iter().enumerate() {
            nearest[j] = nearest[j].min(domain.distance(c, &candidates[i]));
        }
    }
    picked
}

/// `per_point` points uniform in the ball of `radius` around each centre (kept inside an interval
/// domain by rejection, wrapped on the torus).
pub fn spread_points<R: Rng>(
    domain: &CgDomain,
    centres: &[Vec<f64>],
    per_point: usize,
    radius: f64,
    rng: &mut R,
) -> Result<Vec<Vec<f64>>> {
    domain.validate()?;
    if !(radius.is_finite() && radius > 0.0) {
        return Err(Error::invalid("spread radius must be finite and positive"));
    }
    let d = domain.dims();
    let mut out = Vec::with_capacity(centres.len() * per_point);
    for c in centres {
        if c.len() != d {
            return Err(Error::invalid(format!("a CG point has {} coordinates, expected {d}", c.len())));
        }
        let mut made = 0;
        let mut tries = 0;
        while made < per_point {
            tries += 1;
            if tries > 1000 * per_point.max(1) {
                return Err(Error::invalid(format!("cannot place points within {radius} of {c:?} inside the domain")));
            }
            let offset: Vec<f64> = (0..d).map(|_| rng.gen_range(-radius..radius)).collect();
            if offset.iter().map(|v| v * v).sum::<f64>() > radius * radius {
                continue;
            }
            let mut p: Vec<f64> = c.iter().zip(&offset).map(|(a, b)| a + b).collect();
            if domain.normalize(&mut p) {
                out.push(p);
                made += 1;
            }
        }
    }
    Ok(out)
}

/// Centres of the `bins` x `bins` grid over [-pi, pi)^2, [phi bin][psi bin] order.
pub fn grid_centres(bins: usize) -> Result<Vec<[f64; 2]>> {
    let c = Axis::dihedral(bins)?.centres();
    Ok(c.iter().flat_map(|&phi| c.iter().map(move |&psi| [phi, psi])).collect())
}

/// Centres of the grid of `bins` per dimension over [-pi, pi)^dims, the last dimension fastest
/// (for two dimensions, [`grid_centres`]). Errors on zero bins or dimensions, or a grid of more
/// than 10^7 points.
pub fn torus_grid_centres(dims: usize, bins: usize) -> Result<Vec<Vec<f64>>> {
    let total = (bins as u64).checked_pow(dims as u32).filter(|&t| t <= 10_000_000 && dims > 0);
    let total = total.ok_or_else(|| Error::invalid(format!("a grid of {bins}^{dims} points is too large or empty")))?;
    let c = Axis::dihedral(bins)?.centres();
    Ok((0..total as usize)
        .map(|mut index| {
            let mut p = vec![0.0; dims];
            for k in (0..dims).rev() {
                p[k] = c[index % bins];
                index /= bins;
            }
            p
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torus_distance_uses_the_minimum_image() {
        let t = CgDomain::Torus { dims: 2 };
        assert!((t.distance(&[3.0, 0.0], &[-3.0, 0.0]) - (2.0 * PI - 6.0)).abs() < 1e-12);
        let i = CgDomain::Interval { lo: -2.5, hi: 1.1 };
        assert_eq!(i.distance(&[1.0], &[-2.0]), 3.0);
    }

    #[test]
    fn search_stops_where_the_model_is_uncertain() {
        // F = s^2 (kT), std high only beyond s = 0.8: chains from 0 must end up there.
        let domain = CgDomain::Interval { lo: -2.0, hi: 2.0 };
        let config = SearchConfig { step: 0.1, threshold_kt: 0.2, wanted: 5, max_steps: 1_000_000, seed: 1 };
        let mut calls = 0;
        let mut model = |p: &[f64]| -> Result<(Vec<f64>, Vec<f64>)> {
            calls += 1;
            Ok((p.iter().map(|s| s * s).collect(), p.iter().map(|&s| if s.abs() > 0.8 { 1.0 } else { 0.0 }).collect()))
        };
        let out = uncertainty_search(&domain, &[vec![0.0], vec![0.1]], &config, &mut model).unwrap();
        assert_eq!(out.found.len(), 5);
        assert!(out.found.iter().all(|p| p[0].abs() > 0.8 && p[0].abs() < 1.3), "{:?}", out.found);
        // No uncertainty anywhere: the budget runs out.
        let mut calm = |p: &[f64]| -> Result<(Vec<f64>, Vec<f64>)> { Ok((vec![0.0; p.len()], vec![0.0; p.len()])) };
        let config = SearchConfig { max_steps: 1000, ..config };
        let out = uncertainty_search(&domain, &[vec![0.0]], &config, &mut calm).unwrap();
        assert!(out.found.is_empty() && out.steps >= 1000 && out.exhausted(&config));
    }

    #[test]
    fn search_samples_the_boltzmann_distribution_of_the_mean() {
        // With no uncertainty the chains are plain Metropolis on F(s) = s^2 / 2: variance 1.
        let domain = CgDomain::Interval { lo: -8.0, hi: 8.0 };
        let mut sum2 = 0.0;
        let mut count = 0.0;
        let mut model = |p: &[f64]| -> Result<(Vec<f64>, Vec<f64>)> {
            if p.len() > 1 {
                sum2 += p.iter().map(|s| s * s).sum::<f64>();
                count += p.len() as f64;
            }
            Ok((p.iter().map(|s| 0.5 * s * s).collect(), vec![0.0; p.len()]))
        };
        let config = SearchConfig { step: 1.0, threshold_kt: 0.2, wanted: 1, max_steps: 200_000, seed: 3 };
        uncertainty_search(&domain, &vec![vec![0.0]; 20], &config, &mut model).unwrap();
        // Proposals are N(chain, 1): E[proposal^2] = E[s^2] + 1 = 2.
        let second_moment = sum2 / count;
        assert!((second_moment - 2.0).abs() < 0.05, "E[q^2] = {second_moment}");
    }

    #[test]
    fn farthest_points_spread_out_and_avoid_existing_points() {
        let domain = CgDomain::Interval { lo: 0.0, hi: 10.0 };
        let candidates: Vec<Vec<f64>> = (0..=10).map(|i| vec![i as f64]).collect();
        let picked = farthest_point_selection(&domain, &candidates, &[vec![0.0]], 3);
        // After 10 and 5, the candidates 2, 3, 7 and 8 all lie 2 from the nearest pick; ties go to
        // the first.
        assert_eq!(picked, vec![vec![10.0], vec![5.0], vec![2.0]]);
    }

    #[test]
    fn spread_points_stay_within_the_radius_and_domain() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let torus = CgDomain::Torus { dims: 2 };
        let pts = spread_points(&torus, &[vec![3.0, -3.0]], 200, 0.6, &mut rng).unwrap();
        assert_eq!(pts.len(), 200);
        assert!(pts.iter().all(|p| torus.distance(p, &[3.0, -3.0]) <= 0.6 + 1e-12));
        assert!(pts.iter().all(|p| p.iter().all(|v| (-PI..PI).contains(v))));
        assert!(pts.iter().any(|p| p[0] < 0.0), "points must wrap across the boundary");
        let interval = CgDomain::Interval { lo: -2.5, hi: 1.1 };
        let pts = spread_points(&interval, &[vec![1.0]], 65, 0.5, &mut rng).unwrap();
        assert!(pts.iter().all(|p| p[0] >= 0.5 && p[0] <= 1.1));
        assert!(spread_points(&interval, &[vec![1.0, 2.0]], 1, 0.5, &mut rng).is_err());
    }
}
