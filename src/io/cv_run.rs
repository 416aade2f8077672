//! The CV record of an MD or umbrella run folder: `cv.json` (what the run was: walkers, CV
//! definitions, steps per frame, frames as of the last checkpoint, system fingerprint, and for
//! umbrella runs the restraint of every walker) beside `cv.f32` (float32 little-endian values,
//! `[frame][walker][cv]`, radians), as `cgflow md` and `cgflow umbrella` write them.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The description file of a run folder.
pub const DESCRIPTION_FILE: &str = "cv.json";
/// The values file of a run folder.
pub const VALUES_FILE: &str = "cv.f32";

/// A run folder's CV record, read up to the frames its description announces.
#[derive(Debug, Clone, PartialEq)]
pub struct CvRun {
    /// `cv.json` as stored.
    pub description: serde_json::Value,
    /// Walkers (umbrella windows) per frame.
    pub walkers: usize,
    /// CVs per walker.
    pub cvs: usize,
    /// Frames read.
    pub frames: usize,
    /// MD steps between frames.
    pub steps_per_frame: u64,
    /// `[frame][walker][cv]`, radians.
    pub values: Vec<f32>,
}

/// Errors unless `description` (a run's `cv.json`) names the System whose XML (read from
/// `system_path`) is `system_xml`.
pub fn check_fingerprint(
    description: &serde_json::Value,
    dir: &Path,
    system_xml: &str,
    system_path: &Path,
) -> Result<()> {
    let fingerprint = crate::io::fingerprint(system_xml);
    if description["system_fingerprint"] != serde_json::json!(fingerprint) {
        return Err(Error::invalid(format!(
            "{} was recorded with another system (fingerprint {}, {} has {fingerprint})",
            dir.display(),
            description["system_fingerprint"],
            system_path.display()
        )));
    }
    Ok(())
}

/// Errors unless the runs described by `descriptions` (their `cv.json`) can be pooled into one:
/// the same CVs, system, time step, temperature, friction, steps per frame and histogram
/// settings, and no two with one seed (the same seed is the same trajectory, not an independent
/// one).
pub fn check_poolable(descriptions: &[&serde_json::Value]) -> Result<()> {
    let Some(first) = descriptions.first() else {
        return Err(Error::invalid("pooling MD runs: no run given"));
    };
    let same =
        ["cvs", "system_fingerprint", "step_fs", "temperature_k", "friction_per_ps", "steps_per_frame", "histogram"];
    let mut seeds = Vec::new();
    for (i, run) in descriptions.iter().enumerate() {
        if let Some(key) = same.iter().find(|k| run[**k] != first[**k]) {
            return Err(Error::invalid(format!(
                "pooling MD runs: run {i} has {key} {}, run 0 has {}",
                run[*key], first[*key]
            )));
        }
        let seed = &run["seed"];
        if seeds.contains(seed) {
            return Err(Error::invalid(format!(
                "pooling MD runs: run {i} has seed {seed} like an earlier run; it is not independent"
            )));
        }
        seeds.push(seed.clone());
    }
    Ok(())
}

fn field(description: &serde_json::Value, name: &str, path: &Path) -> Result<u64> {
    description[name]
        .as_u64()
        .ok_or_else(|| Error::invalid(format!("{}: '{name}' is missing or not a count", path.display())))
}

impl CvRun {
    /// Reads `cv.json` and the announced frames of `cv.f32` from `dir`. The size of `cv.f32` is
    /// checked against the description before anything is allocated. Errors on a missing or
    /// malformed description, zero walkers, CVs or frames, and a values file shorter than announced.
    pub fn read(dir: &Path) -> Result<CvRun> {
        let description_path = dir.join(DESCRIPTION_FILE);
        let text = std::fs::read_to_string(&description_path).map_err(|e| Error::io(&description_path, e))?;
        let description: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&description_path, format!("not valid JSON: {e}")))?;
        if description.get("histogram").is_some() {
            return Err(Error::invalid(format!(
                "{} keeps histograms of its CVs, not their values (cgflow md --histogram-bins); cgflow compare --md \
                 and cgflow reference --check-md read it, a reference estimate cannot",
                dir.display()
            )));
        }
        let walkers = field(&description, "walkers", &description_path)?;
        let frames = field(&description, "frames", &description_path)?;
        let steps_per_frame = field(&description, "steps_per_frame", &description_path)?;
        let cvs = description["cvs"].as_array().map_or(0, Vec::len) as u64;
        if walkers == 0 || frames == 0 || steps_per_frame == 0 || cvs == 0 {
            return Err(Error::invalid(format!(
                "{}: nothing recorded yet (walkers {walkers}, CVs {cvs}, frames {frames}, steps per frame {steps_per_frame})",
                description_path.display()
            )));
        }
        let values_path = dir.join(VALUES_FILE);
        let mut file = std::fs::File::open(&values_path).map_err(|e| Error::io(&values_path, e))?;
        let available = file.metadata().map_err(|e| Error::io(&values_path, e))?.len();
        let frame_bytes = walkers.checked_mul(cvs).and_then(|v| v.checked_mul(4));
        let wanted = frame_bytes.and_then(|b| b.checked_mul(frames));
        let (Some(frame_bytes), Some(wanted)) = (frame_bytes, wanted) else {
            return Err(Error::invalid(format!("{}: the announced size overflows", description_path.display())));
        };
        if available < wanted {
            return Err(Error::invalid(format!(
                "{} is truncated: {available} bytes is not the {frames} whole frames of {frame_bytes} bytes that {} announces",
                values_path.display(),
                description_path.display()
            )));
        }
        let mut bytes = vec![0u8; wanted as usize];
        file.read_exact(&mut bytes).map_err(|e| Error::io(&values_path, e))?;
        let values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(CvRun {
            description,
            walkers: walkers as usize,
            cvs: cvs as usize,
            frames: frames as usize,
            steps_per_frame,
            values,
        })
    }

    /// Errors unless the run in `dir` was recorded with the System whose XML (read from
    /// `system_path`) is `system_xml`.
    pub fn check_system(&self, dir: &Path, system_xml: &str, system_path: &Path) -> Result<()> {
        check_fingerprint(&self.description, dir, system_xml, system_path)
    }

    /// Pools independent runs of one system into one run whose walkers are theirs side by side
    /// (run 0's walkers first), cut to the frames every run has: independent walkers are one
    /// bigger run. The runs must record the same CVs of the same system at the same interval, and
    /// no two may share a seed (the same seed is the same trajectory, not an independent one).
    /// The pooled description is the first run's, with the pooled walkers and frames, and the
    /// pooled runs' seeds and walkers under `"pooled"`.
    pub fn pool(runs: Vec<CvRun>) -> Result<CvRun> {
        let Some(first) = runs.first() else {
            return Err(Error::invalid("pooling MD runs: no run given"));
        };
        for (i, run) in runs.iter().enumerate() {
            if run.steps_per_frame != first.steps_per_frame || run.cvs != first.cvs {
                return Err(Error::invalid(format!(
                    "pooling MD runs: run {i} records {} CVs every {} steps, run 0 {} every {}",
                    run.cvs, run.steps_per_frame, first.cvs, first.steps_per_frame
                )));
            }
        }
        check_poolable(&runs.iter().map(|r| &r.description).collect::<Vec<_>>())?;
        let frames = runs.iter().map(|r| r.frames).min().unwrap_or(0);
        let walkers: usize = runs.iter().map(|r| r.walkers).sum();
        let cvs = first.cvs;
        let mut values = Vec::with_capacity(frames * walkers * cvs);
        for f in 0..frames {
            for run in &runs {
                let row = run.walkers * cvs;
                values.extend_from_slice(&run.values[f * row..(f + 1) * row]);
            }
        }
        let mut description = first.description.clone();
        description["walkers"] = serde_json::json!(walkers);
        description["frames"] = serde_json::json!(frames);
        // Complete only when every run reached one common target.
        let target_steps = runs
            .iter()
            .map(|r| r.description["steps"].as_u64().unwrap_or(r.frames as u64 * r.steps_per_frame))
            .max()
            .unwrap_or(0);
        description["steps"] = serde_json::json!(target_steps);
        description["pooled"] = serde_json::json!(runs
            .iter()
            .map(|r| serde_json::json!({"seed": r.description["seed"], "walkers": r.walkers, "frames": r.frames}))
            .collect::<Vec<_>>());
        Ok(CvRun { description, walkers, cvs, frames, steps_per_frame: first.steps_per_frame, values })
    }

    /// The time series of one walker, `[frame] -> [cv0, cv1]`, for two-CV runs.
    pub fn walker_pairs(&self, walker: usize) -> Result<Vec<[f64; 2]>> {
        if self.cvs != 2 || walker >= self.walkers {
            return Err(Error::invalid(format!(
                "walker {walker} of {} with {} CVs: a (phi, psi) series needs two CVs",
                self.walkers, self.cvs
            )));
        }
        Ok((0..self.frames)
            .map(|f| {
                let at = (f * self.walkers + walker) * 2;
                [self.values[at] as f64, self.values[at + 1] as f64]
            })
            .collect())
    }
}
