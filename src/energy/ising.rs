//! The 2D Ising model on an L x L periodic lattice, its exact references, and the continuous
//! relaxation a Boltzmann generator samples.
//!
//! - [`Ising`]: spins s_i = ±1 on an L x L torus, energy E(s) = -J Σ_<ij> s_i s_j - h Σ_i s_i,
//!   each site bonded to its right and lower neighbour (2 L² bonds; on L = 2 each pair of sites is
//!   bonded twice, as on any torus built this way). Temperatures are in units of J / k_B.
//! - Exact references: [`Ising::enumerate`] (every state, L² <= 20: the energy and |magnetisation|
//!   distributions), and [`Ising::kaufman_log_z`] (Kaufman's closed form of the finite-lattice
//!   partition function at h = 0, any L), with [`Ising::kaufman_mean_energy`] from it.
//! - [`IsingField`]: the Hubbard-Stratonovich (Gaussian-integral) transform. With
//!   K = J A / T + c I (A the adjacency matrix, c making K positive definite; c I adds the
//!   constant c N / 2 to every state's -E/T because s_i² = 1), summing the spins out of
//!   exp(-x^T K^-1 x / 2 + x^T s + h/T Σ s) leaves a smooth density on x ∈ R^N,
//!   u(x) = x^T K^-1 x / 2 - Σ_i ln 2 cosh(x_i + h/T),
//!   and given x the spins are independent with p(s_i = +1 | x) = e^(x_i + h/T) / 2 cosh(x_i + h/T).
//!   So a sampler of u, followed by spins drawn from p(s | x), samples the Ising model exactly,
//!   and importance weights of x are importance weights of (x, s). The partition functions are
//!   related by [`IsingField::log_z_spins`].

use nalgebra::{DMatrix, DVector};

use super::toy::Potential;
use crate::error::{Error, Result};

/// Largest lattice that [`Ising::enumerate`] enumerates: 2^20 states.
pub const MAX_ENUMERATED_SITES: usize = 20;

/// Largest lattice whose |M| distribution [`Ising::transfer_matrix_abs_magnetisation`] computes
/// (its matrices have 2^L rows).
pub const MAX_TRANSFER_SIZE: usize = 8;

/// Largest lattice that [`IsingField`] relaxes (it keeps dense N x N matrices).
pub const MAX_FIELD_SITES: usize = 4096;

/// The 2D Ising model on an L x L torus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ising {
    size: usize,
    coupling_j: f64,
    field_h: f64,
}

/// Exact equilibrium values of an Ising model at one temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct IsingExact {
    /// Temperature, J / k_B.
    pub temperature: f64,
    /// ln Z, Z = Σ_s exp(-E(s) / T).
    pub log_z: f64,
    /// Free energy -T ln Z.
    pub free_energy: f64,
    /// <E>.
    pub mean_energy: f64,
    /// <|M|>, M = Σ_i s_i.
    pub mean_abs_magnetisation: f64,
    /// (E, probability) for every energy level, ascending in E.
    pub energy_probabilities: Vec<(f64, f64)>,
    /// (|M|, probability) for every |M| level, ascending.
    pub abs_magnetisation_probabilities: Vec<(u64, f64)>,
}

impl Ising {
    /// An L x L model with coupling J and field h. Errors on L < 2 and on a coupling or field
    /// that is not finite.
    ///
    /// ```
    /// let ising = cgflow::energy::ising::Ising::new(3, 1.0, 0.0).unwrap();
    /// assert_eq!(ising.sites(), 9);
    /// assert!(cgflow::energy::ising::Ising::new(1, 1.0, 0.0).is_err());
    /// ```
    pub fn new(size: usize, coupling_j: f64, field_h: f64) -> Result<Self> {
        if size < 2 {
            return Err(Error::invalid(format!("an Ising lattice needs a size L >= 2, got {size}")));
        }
        if size > 65_536 {
            return Err(Error::invalid(format!("an Ising lattice of size {size} is too large (at most 65536)")));
        }
        if !coupling_j.is_finite() || !field_h.is_finite() {
            return Err(Error::invalid(format!(
                "the Ising coupling J and field h must be finite, got J = {coupling_j}, h = {field_h}"
            )));
        }
        Ok(Self { size, coupling_j, field_h })
    }

    /// L.
    pub fn size(&self) -> usize {
        self.size
    }

    /// L².
    pub fn sites(&self) -> usize {
        self.size * self.size
    }

    /// J.
    pub fn coupling_j(&self) -> f64 {
        self.coupling_j
    }

    /// h.
    pub fn field_h(&self) -> f64 {
        self.field_h
    }

    /// The 2 L² bonds (i, j): each site with its right and its lower neighbour.
    pub fn bonds(&self) -> Vec<(usize, usize)> {
        let l = self.size;
        (0..l)
            .flat_map(|r| {
                (0..l).flat_map(move |c| [(r * l + c, r * l + (c + 1) % l), (r * l + c, ((r + 1) % l) * l + c)])
            })
            .collect()
    }

    /// E(s) for spins ±1, row by row. Errors on a wrong number of spins or a spin that is not ±1.
    pub fn energy(&self, spins: &[i8]) -> Result<f64> {
        self.check_spins(spins)?;
        Ok(self.energy_unchecked(spins))
    }

    fn energy_unchecked(&self, spins: &[i8]) -> f64 {
        let bonds: i64 = self.bonds().iter().map(|&(i, j)| i64::from(spins[i] * spins[j])).sum();
        let m: i64 = spins.iter().map(|&s| i64::from(s)).sum();
        -self.coupling_j * bonds as f64 - self.field_h * m as f64
    }

    fn check_spins(&self, spins: &[i8]) -> Result<()> {
        if spins.len() != self.sites() {
            return Err(Error::invalid(format!(
                "{} spins for an Ising lattice of {} sites",
                spins.len(),
                self.sites()
            )));
        }
        if let Some(i) = spins.iter().position(|&s| s != 1 && s != -1) {
            return Err(Error::invalid(format!("spin {i} is {}, not +1 or -1", spins[i])));
        }
        Ok(())
    }

    /// Single-spin-flip Metropolis at `temperature` from a random start: `burn_in_sweeps`, then
    /// `samples` states recorded every `thin_sweeps` sweeps (a sweep is L² proposals), flat
    /// `[sample][site]`. Returns the samples and the energy evaluations made (one per proposal).
    pub fn metropolis<R: rand::Rng>(
        &self,
        temperature: f64,
        samples: usize,
        thin_sweeps: usize,
        burn_in_sweeps: usize,
        rng: &mut R,
    ) -> Result<(Vec<i8>, u64)> {
        check_temperature(temperature)?;
        if thin_sweeps == 0 {
            return Err(Error::invalid("Metropolis needs at least one sweep between samples"));
        }
        let (l, n) = (self.size, self.sites());
        let mut spins: Vec<i8> = (0..n).map(|_| if rng.gen::<bool>() { 1 } else { -1 }).collect();
        let neighbours = |i: usize| {
            let (r, c) = (i / l, i % l);
            [r * l + (c + 1) % l, r * l + (c + l - 1) % l, ((r + 1) % l) * l + c, ((r + l - 1) % l) * l + c]
        };
        let mut proposals: u64 = 0;
        let mut out = Vec::with_capacity(samples * n);
        let mut sweep = |spins: &mut Vec<i8>| {
            for _ in 0..n {
                let i = rng.gen_range(0..n);
                let field: f64 =
                    neighbours(i).iter().map(|&j| f64::from(spins[j])).sum::<f64>() * self.coupling_j + self.field_h;
                let delta = 2.0 * f64::from(spins[i]) * field;
                if delta <= 0.0 || rng.gen::<f64>() < (-delta / temperature).exp() {
                    spins[i] = -spins[i];
                }
            }
            proposals += n as u64;
        };
        for _ in 0..burn_in_sweeps {
            sweep(&mut spins);
        }
        for _ in 0..samples {
            for _ in 0..thin_sweeps {
                sweep(&mut spins);
            }
            out.extend_from_slice(&spins);
        }
        Ok((out, proposals))
    }

    /// Exact values by enumerating all 2^(L²) states (L² <= [`MAX_ENUMERATED_SITES`]).
    pub fn enumerate(&self, temperature: f64) -> Result<IsingExact> {
        check_temperature(temperature)?;
        let n = self.sites();
        if n > MAX_ENUMERATED_SITES {
            return Err(Error::invalid(format!(
                "enumerating an Ising lattice of {n} sites (2^{n} states): at most {MAX_ENUMERATED_SITES} sites"
            )));
        }
        // Bond and spin sums per state; energies are -J b - h m, so levels are keyed by (b, m).
        let bonds = self.bonds();
        let mut levels: std::collections::BTreeMap<(i64, i64), u64> = std::collections::BTreeMap::new();
        for state in 0u32..(1u32 << n) {
            let spin = |i: usize| if state >> i & 1 == 1 { 1i64 } else { -1 };
            let b: i64 = bonds.iter().map(|&(i, j)| spin(i) * spin(j)).sum();
            let m: i64 = (0..n).map(spin).sum();
            *levels.entry((b, m)).or_default() += 1;
        }
        let exponent = |b: i64, m: i64| (self.coupling_j * b as f64 + self.field_h * m as f64) / temperature;
        let largest = levels.keys().map(|&(b, m)| exponent(b, m)).fold(f64::NEG_INFINITY, f64::max);
        let weight = |b: i64, m: i64, count: u64| count as f64 * (exponent(b, m) - largest).exp();
        let total: f64 = levels.iter().map(|(&(b, m), &c)| weight(b, m, c)).sum();
        let log_z = largest + total.ln();
        let mut by_energy: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
        let mut by_abs_m: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
        let (mut mean_energy, mut mean_abs_m) = (0.0, 0.0);
        for (&(b, m), &count) in &levels {
            let p = weight(b, m, count) / total;
            let e = -self.coupling_j * b as f64 - self.field_h * m as f64;
            mean_energy += p * e;
            mean_abs_m += p * m.unsigned_abs() as f64;
            // Energy levels keyed exactly: by (b, m) collapsed to E through a fixed-point key.
            *by_energy.entry(energy_key(e)).or_default() += p;
            *by_abs_m.entry(m.unsigned_abs()).or_default() += p;
        }
        Ok(IsingExact {
            temperature,
            log_z,
            free_energy: -temperature * log_z,
            mean_energy,
            mean_abs_magnetisation: mean_abs_m,
            energy_probabilities: by_energy.into_iter().map(|(k, p)| (k as f64 / ENERGY_KEY_SCALE, p)).collect(),
            abs_magnetisation_probabilities: by_abs_m.into_iter().collect(),
        })
    }

    /// The exact distribution of |M| by the row-to-row transfer matrix, for L <= [`MAX_TRANSFER_SIZE`]:
    /// Z(θ) = Tr T(θ)^L with the fugacity e^(iθ) per up spin at the K = L² + 1 angles
    /// θ_k = 2πk / K, whose discrete Fourier transform gives the weight of each number of up
    /// spins exactly (up to rounding: every term is positive at θ = 0, so the error is about
    /// 1e-15 of the total per level). Returns (|M|, probability) ascending in |M|.
    pub fn transfer_matrix_abs_magnetisation(&self, temperature: f64) -> Result<Vec<(u64, f64)>> {
        use nalgebra::Complex;
        check_temperature(temperature)?;
        let l = self.size;
        if l > MAX_TRANSFER_SIZE {
            return Err(Error::invalid(format!(
                "the transfer matrix of an L = {l} lattice has 2^{l} rows: at most L = {MAX_TRANSFER_SIZE}"
            )));
        }
        let (k, h) = (self.coupling_j / temperature, self.field_h / temperature);
        let rows = 1usize << l;
        let spin = |state: usize, c: usize| if state >> c & 1 == 1 { 1.0 } else { -1.0 };
        let intra = |a: usize| (0..l).map(|c| spin(a, c) * spin(a, (c + 1) % l)).sum::<f64>();
        let inter = |a: usize, b: usize| (0..l).map(|c| spin(a, c) * spin(b, c)).sum::<f64>();
        let magnet = |a: usize| (0..l).map(|c| spin(a, c)).sum::<f64>();
        let up = |a: usize| a.count_ones() as f64;
        // The exponent of each entry, less the largest, so that T^L stays in range.
        let exponent = |a: usize, b: usize| k * inter(a, b) + k * intra(b) + h * magnet(b);
        let largest = (0..rows)
            .flat_map(|a| (0..rows).map(move |b| (a, b)))
            .map(|(a, b)| exponent(a, b))
            .fold(f64::NEG_INFINITY, f64::max);
        let n = self.sites();
        let angles = n + 1;
        let mut z = vec![Complex::new(0.0, 0.0); angles];
        for (index, z_theta) in z.iter_mut().enumerate() {
            let theta = 2.0 * std::f64::consts::PI * index as f64 / angles as f64;
            let t = DMatrix::from_fn(rows, rows, |a, b| {
                Complex::from_polar((exponent(a, b) - largest).exp(), theta * up(b))
            });
            // T^L by squaring and multiplying.
            let (mut power, mut base, mut exponent_left) = (None::<DMatrix<Complex<f64>>>, t, l);
            while exponent_left > 0 {
                if exponent_left & 1 == 1 {
                    power = Some(match power {
                        None => base.clone(),
                        Some(p) => &p * &base,
                    });
                }
                exponent_left >>= 1;
                if exponent_left > 0 {
                    base = &base * &base;
                }
            }
            *z_theta = power.map_or(Complex::new(0.0, 0.0), |p| p.trace());
        }
        // Weight of n_up up spins: (1 / K) Σ_k Z(θ_k) e^(-i θ_k n_up).
        let weights: Vec<f64> = (0..=n)
            .map(|n_up| {
                z.iter()
                    .enumerate()
                    .map(|(index, zk)| {
                        let theta = 2.0 * std::f64::consts::PI * index as f64 / angles as f64;
                        (zk * Complex::from_polar(1.0, -theta * n_up as f64)).re
                    })
                    .sum::<f64>()
                    / angles as f64
            })
            .collect();
        let total = z[0].re;
        let mut by_abs_m: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
        for (n_up, w) in weights.iter().enumerate() {
            let m = (2 * n_up) as i64 - n as i64;
            *by_abs_m.entry(m.unsigned_abs()).or_default() += (w / total).max(0.0);
        }
        Ok(by_abs_m.into_iter().collect())
    }

    /// ln Z at h = 0 from Kaufman's closed form for the finite L x L torus (B. Kaufman, Phys. Rev.
    /// 76, 1232 (1949); in the form of P. D. Beale, Phys. Rev. Lett. 76, 78 (1996)):
    /// Z = ½ (2 sinh 2K)^(N/2) (Z1 + Z2 + Z3 + Z4) with K = J / T,
    /// Z1,2 = Π_{k odd} 2 cosh, 2 sinh (L γ_k / 2), Z3,4 = Π_{k even} 2 cosh, 2 sinh (L γ_k / 2)
    /// over k = 0 .. 2L - 1, cosh γ_k = cosh 2K coth 2K - cos(π k / L) and γ_0 = 2K + ln tanh K.
    /// Errors when h != 0 or J <= 0 (the closed form is for the ferromagnet in zero field).
    pub fn kaufman_log_z(&self, temperature: f64) -> Result<f64> {
        check_temperature(temperature)?;
        if self.field_h != 0.0 || self.coupling_j <= 0.0 {
            return Err(Error::invalid(format!(
                "Kaufman's partition function is for J > 0 and h = 0 (this model: J = {}, h = {})",
                self.coupling_j, self.field_h
            )));
        }
        let k = self.coupling_j / temperature;
        let l = self.size as f64;
        let gamma = |index: usize| -> f64 {
            if index == 0 {
                2.0 * k + k.tanh().ln()
            } else {
                let c = (2.0 * k).cosh() / (2.0 * k).tanh() - (std::f64::consts::PI * index as f64 / l).cos();
                (c + (c * c - 1.0).sqrt()).ln()
            }
        };
        // Each product in log space with its sign (only a sinh of γ_0 < 0 can be negative).
        let mut terms = [(0.0f64, 1.0f64); 4];
        for index in 0..2 * self.size {
            let half = l * gamma(index) / 2.0;
            let (cosh_term, sinh_term) = if index % 2 == 1 { (0, 1) } else { (2, 3) };
            terms[cosh_term].0 += ln_2cosh(half);
            let (ln_abs, sign) = ln_2sinh_abs(half);
            terms[sinh_term].0 += ln_abs;
            terms[sinh_term].1 *= sign;
        }
        let largest = terms.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|&(ln_abs, sign)| sign * (ln_abs - largest).exp()).sum();
        if sum <= 0.0 {
            return Err(Error::invalid(format!("Kaufman's sum is not positive at T = {temperature}")));
        }
        let n = self.sites() as f64;
        Ok(-std::f64::consts::LN_2 + n / 2.0 * (2.0 * (2.0 * k).sinh()).ln() + largest + sum.ln())
    }

    /// <E> at h = 0 from Kaufman's ln Z: -d ln Z / d(1/T), by a central difference of step
    /// 1e-5 / T in 1/T (its error is of order 1e-10 relative).
    pub fn kaufman_mean_energy(&self, temperature: f64) -> Result<f64> {
        check_temperature(temperature)?;
        let beta = 1.0 / temperature;
        let step = 1e-5 * beta;
        let up = self.kaufman_log_z(1.0 / (beta + step))?;
        let down = self.kaufman_log_z(1.0 / (beta - step))?;
        Ok(-(up - down) / (2.0 * step))
    }
}

/// Energy levels are multiples of J and h; keys at this resolution collect equal energies.
const ENERGY_KEY_SCALE: f64 = 1e9;

fn energy_key(e: f64) -> i64 {
    (e * ENERGY_KEY_SCALE).round() as i64
}

fn check_temperature(temperature: f64) -> Result<()> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!("the Ising temperature must be finite and positive, got {temperature}")))
    }
}

/// ln(2 cosh x) without overflow.
fn ln_2cosh(x: f64) -> f64 {
    let a = x.abs();
    a + (-2.0 * a).exp().ln_1p()
}

/// (ln |2 sinh x|, sign of x) without overflow; ln 0 = -inf at x = 0.
fn ln_2sinh_abs(x: f64) -> (f64, f64) {
    let a = x.abs();
    (a + (-(-2.0 * a).exp()).ln_1p(), if x < 0.0 { -1.0 } else { 1.0 })
}

/// The Hubbard-Stratonovich relaxation of an [`Ising`] model at one temperature: the smooth
/// reduced energy u(x) on R^N whose spins-given-x are independent (see the module docs).
#[derive(Debug, Clone)]
pub struct IsingField {
    ising: Ising,
    temperature: f64,
    shift: f64,
    /// K, N x N.
    coupling: DMatrix<f64>,
    /// The lower Cholesky factor of K.
    coupling_cholesky: DMatrix<f64>,
    /// K^-1, N x N.
    precision: DMatrix<f64>,
    /// ln det K.
    log_det_k: f64,
}

impl IsingField {
    /// The relaxation at `temperature` with K = J A / T + c I, c = 4 |J| / T + `margin` (the
    /// adjacency matrix of the torus has eigenvalues in [-4, 4], so K is positive definite for any
    /// margin > 0). Errors on a margin that is not finite and positive, on J = 0 (no coupling to
    /// relax), on more than [`MAX_FIELD_SITES`] sites and on a bad temperature.
    pub fn new(ising: Ising, temperature: f64, margin: f64) -> Result<Self> {
        check_temperature(temperature)?;
        if !(margin.is_finite() && margin > 0.0) {
            return Err(Error::invalid(format!("the shift margin must be finite and positive, got {margin}")));
        }
        if ising.coupling_j == 0.0 {
            return Err(Error::invalid("an Ising model with J = 0 has no coupling to relax"));
        }
        let n = ising.sites();
        if n > MAX_FIELD_SITES {
            return Err(Error::invalid(format!(
                "the relaxation keeps a dense {n} x {n} coupling matrix: at most {MAX_FIELD_SITES} sites (L <= 64)"
            )));
        }
        let shift = 4.0 * ising.coupling_j.abs() / temperature + margin;
        let mut k = DMatrix::<f64>::identity(n, n) * shift;
        for (i, j) in ising.bonds() {
            let w = ising.coupling_j / temperature;
            k[(i, j)] += w;
            k[(j, i)] += w;
        }
        let cholesky = k
            .clone()
            .cholesky()
            .ok_or_else(|| Error::invalid("the shifted coupling matrix is not positive definite"))?;
        let coupling_cholesky = cholesky.l();
        let log_det_k = 2.0 * coupling_cholesky.diagonal().iter().map(|d| d.ln()).sum::<f64>();
        let precision = cholesky.inverse();
        Ok(Self { ising, temperature, shift, coupling: k, coupling_cholesky, precision, log_det_k })
    }

    /// The model relaxed.
    pub fn ising(&self) -> &Ising {
        &self.ising
    }

    /// Its temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The diagonal shift c of K.
    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// Draws x from p(x | s) = N(K s, K), the field given the spins: how spin samples (from
    /// Metropolis) become training data of a generator of x. Errors on a bad spin vector.
    pub fn sample_field_given_spins<R: rand::Rng>(&self, spins: &[i8], rng: &mut R) -> Result<Vec<f64>> {
        self.ising.check_spins(spins)?;
        let n = spins.len();
        let s = DVector::from_iterator(n, spins.iter().map(|&v| f64::from(v)));
        let noise = DVector::from_iterator(n, (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)));
        Ok((&self.coupling * s + &self.coupling_cholesky * noise).iter().copied().collect())
    }

    /// Draws spins from p(s | x): independent, up with probability
    /// [`IsingField::spin_up_probabilities`].
    pub fn sample_spins_given_field<R: rand::Rng>(&self, x: &[f64], rng: &mut R) -> Result<Vec<i8>> {
        Ok(self.spin_up_probabilities(x)?.into_iter().map(|p| if rng.gen::<f64>() < p { 1 } else { -1 }).collect())
    }

    /// ln Z of the spins from ln Z_x = ln ∫ exp(-u(x)) dx:
    /// ln Z = ln Z_x - (N/2) ln 2π - ½ ln det K - c N / 2.
    pub fn log_z_spins(&self, log_z_field: f64) -> f64 {
        let n = self.ising.sites() as f64;
        log_z_field - n / 2.0 * (2.0 * std::f64::consts::PI).ln() - 0.5 * self.log_det_k - self.shift * n / 2.0
    }

    /// p(s_i = +1 | x) for every site.
    pub fn spin_up_probabilities(&self, x: &[f64]) -> Result<Vec<f64>> {
        self.check(x)?;
        let h = self.ising.field_h / self.temperature;
        Ok(x.iter().map(|&xi| 1.0 / (1.0 + (-2.0 * (xi + h)).exp())).collect())
    }

    /// E[E(s) | x]: the energy averaged over the spins given x, exact (no sampling), since the
    /// spins are independent given x and no bond joins a site to itself.
    pub fn mean_energy_given(&self, x: &[f64]) -> Result<f64> {
        self.check(x)?;
        let h = self.ising.field_h / self.temperature;
        let m: Vec<f64> = x.iter().map(|&xi| (xi + h).tanh()).collect();
        let bonds: f64 = self.ising.bonds().iter().map(|&(i, j)| m[i] * m[j]).sum();
        Ok(-self.ising.coupling_j * bonds - self.ising.field_h * m.iter().sum::<f64>())
    }

    fn check(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.ising.sites() {
            return Err(Error::invalid(format!("{} field values for {} sites", x.len(), self.ising.sites())));
        }
        Ok(())
    }
}

impl Potential for IsingField {
    fn dim(&self) -> usize {
        self.ising.sites()
    }

    fn energy(&self, x: &[f64]) -> f64 {
        let mut grad = vec![0.0; x.len()];
        self.energy_and_gradient(x, &mut grad)
    }

    fn energy_and_gradient(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let n = self.ising.sites();
        if x.len() != n || grad.len() != n {
            grad.iter_mut().for_each(|g| *g = f64::NAN);
            return f64::NAN;
        }
        let h = self.ising.field_h / self.temperature;
        let v = DVector::from_column_slice(x);
        let kx = &self.precision * &v;
        let mut u = 0.5 * v.dot(&kx);
        for i in 0..n {
            u -= ln_2cosh(x[i] + h);
            grad[i] = kx[i] - (x[i] + h).tanh();
        }
        u
    }
}
