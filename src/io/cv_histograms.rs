//! The histogram record of an MD run folder, for runs too long to keep every CV value: `cv.json`
//! (as for [`super::cv_run`], with a `"histogram"` entry) beside `histograms/frames_NNNNNNNNN.npy`,
//! the cumulative 2D histogram of each CV pair after that many frames, at frames spaced evenly in
//! log scale (the *marks*). A cost curve needs the histogram at a few dozen run lengths, not the
//! trajectory: a 128-walker run of 1e8 evaluations keeps 2 MB of marks instead of 80 MB of CV
//! values, small enough to be committed and resumed in a later session.
//!
//! Each mark is a `(pairs, bins, bins)` array indexed `[pair][bin of the first CV][bin of the
//! second]` over `[-pi, pi)` per CV, as float32 when every count is below 2^24 (exact there) and
//! float64 otherwise.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metrics::histogram::Axis;

/// The folder of a run that holds its marks.
pub const MARKS_DIR: &str = "histograms";

/// What a histogram record counts: the CV pairs, the bins per CV, and how densely the marks lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSettings {
    /// Bins per CV over `[-pi, pi)`.
    pub bins: usize,
    /// CV index pairs, each histogrammed jointly.
    pub pairs: Vec<[usize; 2]>,
    /// Marks per decade of frames.
    pub marks_per_decade: usize,
}

impl HistogramSettings {
    /// The settings for `cvs` CVs taken two by two, (0, 1), (2, 3), ...: a run's (phi_i, psi_i)
    /// marginals. Errors on an odd CV count or zero bins or marks.
    pub fn consecutive_pairs(cvs: usize, bins: usize, marks_per_decade: usize) -> Result<HistogramSettings> {
        if cvs == 0 || cvs % 2 != 0 {
            return Err(Error::invalid(format!("a CV histogram pairs the CVs two by two; {cvs} CVs cannot be paired")));
        }
        if bins == 0 || marks_per_decade == 0 {
            return Err(Error::invalid("a CV histogram needs at least one bin and one mark per decade"));
        }
        Ok(HistogramSettings { bins, pairs: (0..cvs / 2).map(|p| [2 * p, 2 * p + 1]).collect(), marks_per_decade })
    }

    /// Values per histogram: pairs x bins x bins.
    pub fn size(&self) -> usize {
        self.pairs.len() * self.bins * self.bins
    }

    /// As stored in `cv.json` and checkpoints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"bins": self.bins, "pairs": self.pairs, "marks_per_decade": self.marks_per_decade})
    }

    /// Reads [`HistogramSettings::to_json`]'s output. Errors name `origin`.
    pub fn from_json(value: &serde_json::Value, origin: &Path) -> Result<HistogramSettings> {
        let bad = |what: &str| Error::invalid(format!("{}: histogram settings: {what}", origin.display()));
        let bins = value["bins"].as_u64().ok_or_else(|| bad("'bins' is missing or not a count"))?;
        let per_decade =
            value["marks_per_decade"].as_u64().ok_or_else(|| bad("'marks_per_decade' is missing or not a count"))?;
        let pairs = value["pairs"].as_array().ok_or_else(|| bad("'pairs' is missing"))?;
        // Bounded before anything is allocated from them: 10^4 bins per CV is a 0.8 GB histogram.
        if bins == 0 || bins > 10_000 || per_decade == 0 || per_decade > 1000 || pairs.is_empty() || pairs.len() > 64 {
            return Err(bad(&format!(
                "{bins} bins, {per_decade} marks per decade and {} pairs are out of range",
                pairs.len()
            )));
        }
        let pairs = pairs
            .iter()
            .map(|p| match p.as_array().map(|a| a.iter().map(serde_json::Value::as_u64).collect::<Vec<_>>()) {
                Some(a) if a.len() == 2 && a.iter().all(Option::is_some) => {
                    Ok([a[0].unwrap_or(0) as usize, a[1].unwrap_or(0) as usize])
                }
                _ => Err(bad("a pair is not two CV indices")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HistogramSettings { bins: bins as usize, pairs, marks_per_decade: per_decade as usize })
    }

    /// Whether `frames` is a mark: `round(10^(k / marks_per_decade))` for some k >= 0.
    ///
    /// ```
    /// let s = cgflow::io::cv_histograms::HistogramSettings::consecutive_pairs(2, 100, 10).unwrap();
    /// let marks: Vec<u64> = (1..=40).filter(|&f| s.is_mark(f)).collect();
    /// assert_eq!(marks, vec![1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40]);
    /// ```
    pub fn is_mark(&self, frames: u64) -> bool {
        if frames == 0 {
            return false;
        }
        let k = (frames as f64).log10() * self.marks_per_decade as f64;
        [k.floor(), k.ceil()].iter().any(|&k| (10f64.powf(k / self.marks_per_decade as f64)).round() as u64 == frames)
    }

    /// Adds one frame's CV values (radians, `[cv]`) to `counts` (length [`HistogramSettings::size`]).
    /// Errors on a non-finite value.
    pub fn add_frame(&self, counts: &mut [f64], values: &[f64]) -> Result<()> {
        let axis = Axis::dihedral(self.bins)?;
        for (p, &[a, b]) in self.pairs.iter().enumerate() {
            let (Some(&x), Some(&y)) = (values.get(a), values.get(b)) else {
                return Err(Error::invalid(format!("CV pair ({a}, {b}) is beyond the {} CVs recorded", values.len())));
            };
            match (axis.bin_of(x), axis.bin_of(y)) {
                (Some(i), Some(j)) => counts[(p * self.bins + i) * self.bins + j] += 1.0,
                _ => return Err(Error::invalid(format!("non-finite CV value ({x}, {y})"))),
            }
        }
        Ok(())
    }
}

/// The file of the mark after `frames` frames in the run folder `dir`.
pub fn mark_path(dir: &Path, frames: u64) -> PathBuf {
    dir.join(MARKS_DIR).join(format!("frames_{frames:09}.npy"))
}

/// Writes the mark after `frames` frames atomically (see the module documentation for the layout).
pub fn write_mark(dir: &Path, settings: &HistogramSettings, frames: u64, counts: &[f64]) -> Result<()> {
    if counts.len() != settings.size() {
        return Err(Error::invalid(format!(
            "a histogram of {} values for settings of {}",
            counts.len(),
            settings.size()
        )));
    }
    let folder = dir.join(MARKS_DIR);
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let shape = [settings.pairs.len(), settings.bins, settings.bins];
    let exact_in_f32 = counts.iter().all(|&c| (0.0..16_777_216.0).contains(&c) && c.fract() == 0.0);
    let bytes = if exact_in_f32 {
        super::npy::format_npy_f32(&shape, &counts.iter().map(|&c| c as f32).collect::<Vec<_>>())?
    } else {
        super::npy::format_npy(&shape, counts)?
    };
    super::write_atomically(&mark_path(dir, frames), &bytes)
}

/// Removes the marks after `frames` frames (written by a run killed after its last checkpoint,
/// so that its resumed run writes them again) and returns the frames of those kept, ascending.
pub fn cut_marks_after(dir: &Path, frames: u64) -> Result<Vec<u64>> {
    let mut kept = Vec::new();
    for (f, path) in list_marks(dir)? {
        if f > frames {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        } else {
            kept.push(f);
        }
    }
    Ok(kept)
}

/// Removes the histograms written at earlier checkpoints that are not marks (those before
/// `frames`): only the latest checkpoint's histogram is kept beside the marks.
pub fn remove_between_marks_before(dir: &Path, settings: &HistogramSettings, frames: u64) -> Result<()> {
    for (f, path) in list_marks(dir)? {
        if f < frames && !settings.is_mark(f) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// The marks in `dir`, as (frames, path), ascending; none if the folder has no marks folder.
fn list_marks(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let folder = dir.join(MARKS_DIR);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(Vec::new());
    };
    let mut marks = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&folder, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(f) = name.strip_prefix("frames_").and_then(|n| n.strip_suffix(".npy")) {
            if let Ok(f) = f.parse::<u64>() {
                marks.push((f, path));
            }
        }
    }
    marks.sort();
    Ok(marks)
}

/// A run folder's histogram record: its description and every mark up to the frames the
/// description announces.
#[derive(Debug, Clone, PartialEq)]
pub struct CvHistogramRun {
    /// `cv.json` as stored.
    pub description: serde_json::Value,
    /// Walkers per frame.
    pub walkers: usize,
    /// MD steps between frames.
    pub steps_per_frame: u64,
    /// Frames as of the last checkpoint.
    pub frames: u64,
    /// What the marks count.
    pub settings: HistogramSettings,
    /// (frames, counts) per mark, ascending, counts laid out as [`HistogramSettings::size`].
    pub marks: Vec<(u64, Vec<f64>)>,
}

/// Whether the run folder `dir` keeps histograms rather than CV values.
pub fn is_histogram_run(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(super::cv_run::DESCRIPTION_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|d| d.get("histogram").is_some())
}

impl CvHistogramRun {
    /// Reads `cv.json` and the marks of `dir`. Errors on a description without histogram
    /// settings, a mark of another shape, counts that are negative, non-finite or do not add up
    /// to walkers x frames per pair, and no mark at the announced frames.
    pub fn read(dir: &Path) -> Result<CvHistogramRun> {
        let description_path = dir.join(super::cv_run::DESCRIPTION_FILE);
        let text = std::fs::read_to_string(&description_path).map_err(|e| Error::io(&description_path, e))?;
        let description: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&description_path, format!("not valid JSON: {e}")))?;
        let count = |name: &str| {
            description[name].as_u64().ok_or_else(|| {
                Error::invalid(format!("{}: '{name}' is missing or not a count", description_path.display()))
            })
        };
        let (walkers, frames, steps_per_frame) = (count("walkers")?, count("frames")?, count("steps_per_frame")?);
        if walkers == 0 || frames == 0 || steps_per_frame == 0 {
            return Err(Error::invalid(format!(
                "{}: nothing recorded yet (walkers {walkers}, frames {frames}, steps per frame {steps_per_frame})",
                description_path.display()
            )));
        }
        let settings = HistogramSettings::from_json(&description["histogram"], &description_path)?;
        let size = settings.size();
        let mut marks = Vec::new();
        for (f, path) in list_marks(dir)? {
            if f > frames {
                continue;
            }
            let array = super::npy::read_npy(&path)?;
            if array.shape != [settings.pairs.len(), settings.bins, settings.bins] {
                return Err(Error::invalid(format!(
                    "{}: shape {:?}, the settings in {} say ({}, {}, {})",
                    path.display(),
                    array.shape,
                    description_path.display(),
                    settings.pairs.len(),
                    settings.bins,
                    settings.bins
                )));
            }
            let expected = (walkers * f) as f64;
            for pair in array.data.chunks_exact(size / settings.pairs.len()) {
                if pair.iter().any(|c| !c.is_finite() || *c < 0.0) {
                    return Err(Error::invalid(format!("{}: a count is negative or not finite", path.display())));
                }
                let total: f64 = pair.iter().sum();
                if (total - expected).abs() > 0.5 {
                    return Err(Error::invalid(format!(
                        "{}: {total} counts in a pair, not the {walkers} walkers x {f} frames",
                        path.display()
                    )));
                }
            }
            marks.push((f, array.data));
        }
        if marks.last().map(|m| m.0) != Some(frames) {
            return Err(Error::invalid(format!(
                "{}: no histogram at the {frames} frames {} announces",
                dir.join(MARKS_DIR).display(),
                description_path.display()
            )));
        }
        Ok(CvHistogramRun { description, walkers: walkers as usize, steps_per_frame, frames, settings, marks })
    }

    /// Errors unless the run in `dir` was recorded with the System whose XML is `system_xml`.
    pub fn check_system(&self, dir: &Path, system_xml: &str, system_path: &Path) -> Result<()> {
        super::cv_run::check_fingerprint(&self.description, dir, system_xml, system_path)
    }

    /// The counts at `frames`, if that is a mark.
    pub fn at(&self, frames: u64) -> Option<&[f64]> {
        self.marks.iter().find(|(f, _)| *f == frames).map(|(_, c)| c.as_slice())
    }

    /// The run with only the histograms of the CV pair `pair` (e.g. [2, 3]: a peptide's second
    /// (phi, psi)), so that it reads as a run of that one pair. Errors when the run did not keep
    /// that pair.
    pub fn only_pair(mut self, pair: [usize; 2]) -> Result<CvHistogramRun> {
        let k = self.settings.pairs.iter().position(|p| *p == pair).ok_or_else(|| {
            Error::invalid(format!(
                "the run keeps histograms of the CV pairs {:?}, not of {pair:?}",
                self.settings.pairs
            ))
        })?;
        let per_pair = self.settings.bins * self.settings.bins;
        for (_, counts) in &mut self.marks {
            *counts = counts[k * per_pair..(k + 1) * per_pair].to_vec();
        }
        self.settings.pairs = vec![pair];
        Ok(self)
    }

    /// Frames of the marks every one of `runs` holds, ascending.
    pub fn common_marks(runs: &[CvHistogramRun]) -> Vec<u64> {
        let Some(first) = runs.first() else {
            return Vec::new();
        };
        first.marks.iter().map(|(f, _)| *f).filter(|&f| runs.iter().all(|r| r.at(f).is_some())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{CvHistogramRun, HistogramSettings};

    #[test]
    fn only_pair_keeps_that_pairs_counts_at_every_mark() {
        let settings = HistogramSettings::consecutive_pairs(4, 2, 10).expect("settings");
        // Two marks of two pairs of 2 x 2 bins: values 1-4 are pair (0, 1), values 5-8 pair (2, 3).
        let marks =
            vec![(1, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), (2, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])];
        let run = CvHistogramRun {
            description: serde_json::json!({}),
            walkers: 1,
            steps_per_frame: 10,
            frames: 2,
            settings,
            marks,
        };
        let second = run.clone().only_pair([2, 3]).expect("pair 2, 3");
        assert_eq!(second.settings.pairs, vec![[2, 3]]);
        assert_eq!(second.marks, vec![(1, vec![0.0, 0.0, 0.0, 1.0]), (2, vec![0.0, 0.0, 1.0, 1.0])]);
        let first = run.clone().only_pair([0, 1]).expect("pair 0, 1");
        assert_eq!(first.marks[1].1, vec![1.0, 1.0, 0.0, 0.0]);
        let err = run.only_pair([1, 2]).unwrap_err().to_string();
        assert!(err.contains("not of [1, 2]"), "{err}");
    }
}
