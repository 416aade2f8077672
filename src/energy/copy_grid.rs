//! Where the copy trick puts its copies: centroids on a cubic grid centred on the origin.

/// Centroid of one configuration (nm) and the largest distance of an atom from it.
pub fn centroid_and_radius(config: &[f64]) -> ([f64; 3], f64) {
    let n = (config.len() / 3).max(1) as f64;
    let mut c = [0.0; 3];
    for atom in config.chunks_exact(3) {
        for d in 0..3 {
            c[d] += atom[d];
        }
    }
    c.iter_mut().for_each(|v| *v /= n);
    let radius = config
        .chunks_exact(3)
        .map(|a| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2) + (a[2] - c[2]).powi(2)).sqrt())
        .fold(0.0, f64::max);
    (c, radius)
}

/// A cubic grid of `slots` points with the given spacing, centred on the origin (smaller
/// coordinates lose less to single precision).
#[derive(Debug, Clone, PartialEq)]
pub struct CopyGrid {
    side: usize,
    spacing_nm: f64,
}

impl CopyGrid {
    /// A grid for `slots` copies.
    pub fn new(slots: usize, spacing_nm: f64) -> Self {
        Self { side: (slots as f64).cbrt().ceil().max(1.0) as usize, spacing_nm }
    }

    /// The grid point of slot `slot`.
    pub fn point(&self, slot: usize) -> [f64; 3] {
        let side = self.side;
        let centre = (side as f64 - 1.0) / 2.0;
        let index = [slot % side, (slot / side) % side, slot / (side * side)];
        index.map(|i| (i as f64 - centre) * self.spacing_nm)
    }

    /// Writes `config` translated so that its centroid sits on slot `slot`'s grid point into `target`.
    pub fn place(&self, slot: usize, config: &[f64], target: &mut [f64]) {
        let (c, _) = centroid_and_radius(config);
        let g = self.point(slot);
        for (t, a) in target.chunks_exact_mut(3).zip(config.chunks_exact(3)) {
            for d in 0..3 {
                t[d] = a[d] - c[d] + g[d];
            }
        }
    }
}
