//! DCD trajectories (the CHARMM/NAMD binary format that VMD and mdtraj read): little-endian
//! Fortran records, coordinates in Å as float32, no unit cell.
//!
//! [`DcdWriter`] appends frames and keeps the frame count in the header current, so a file is
//! valid after every frame; [`DcdWriter::open_truncated`] reopens a file at a given frame count
//! (what a resumed run needs: frames written after the last checkpoint are dropped, then written
//! again). [`read_dcd`] reads files of this layout and reports truncation clearly.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const TITLE: &str = "cgflow trajectory, coordinates in angstrom";

fn record(out: &mut Vec<u8>, payload: &[u8]) {
    let n = (payload.len() as i32).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(payload);
    out.extend_from_slice(&n);
}

fn header(n_atoms: usize, frames: u32, steps_per_frame: u32, step_ps: f32) -> Vec<u8> {
    let mut control = Vec::with_capacity(84);
    control.extend_from_slice(b"CORD");
    let mut icntrl = [0i32; 20];
    icntrl[0] = frames as i32; // NSET
    icntrl[1] = steps_per_frame as i32; // ISTART
    icntrl[2] = steps_per_frame as i32; // NSAVC
    icntrl[3] = (frames * steps_per_frame) as i32; // NSTEP
    icntrl[9] = (step_ps / 0.048_888_82).to_bits() as i32; // DELTA in AKMA time units
    icntrl[19] = 24; // CHARMM version
    for v in icntrl {
        control.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::new();
    record(&mut out, &control);
    let mut title = Vec::with_capacity(84);
    title.extend_from_slice(&1i32.to_le_bytes());
    let mut line = [b' '; 80];
    line[..TITLE.len()].copy_from_slice(TITLE.as_bytes());
    title.extend_from_slice(&line);
    record(&mut out, &title);
    record(&mut out, &(n_atoms as i32).to_le_bytes());
    out
}

fn header_length(n_atoms: usize) -> u64 {
    header(n_atoms, 0, 1, 0.0).len() as u64
}

fn frame_length(n_atoms: usize) -> u64 {
    3 * (8 + 4 * n_atoms as u64)
}

/// Appends frames to a DCD file.
#[derive(Debug)]
pub struct DcdWriter {
    file: File,
    path: PathBuf,
    n_atoms: usize,
    frames: u32,
    steps_per_frame: u32,
    step_ps: f32,
}

impl DcdWriter {
    /// Creates (or replaces) a DCD file for `n_atoms` atoms; frames are `steps_per_frame` MD steps
    /// of `step_ps` apart (header information only).
    pub fn create(path: &Path, n_atoms: usize, steps_per_frame: u32, step_ps: f32) -> Result<Self> {
        let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
        file.write_all(&header(n_atoms, 0, steps_per_frame.max(1), step_ps)).map_err(|e| Error::io(path, e))?;
        Ok(Self { file, path: path.to_owned(), n_atoms, frames: 0, steps_per_frame: steps_per_frame.max(1), step_ps })
    }

    /// Reopens a file written by [`DcdWriter`] keeping its first `frames` frames and dropping the
    /// rest. Errors if the file holds fewer frames or another atom count.
    pub fn open_truncated(
        path: &Path,
        n_atoms: usize,
        frames: u32,
        steps_per_frame: u32,
        step_ps: f32,
    ) -> Result<Self> {
        let existing = read_dcd_header(path)?;
        if existing.n_atoms != n_atoms {
            return Err(Error::parse(path, format!("has {} atoms per frame, expected {n_atoms}", existing.n_atoms)));
        }
        let length = header_length(n_atoms) + frames as u64 * frame_length(n_atoms);
        let actual = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if actual < length {
            return Err(Error::parse(path, format!("holds fewer than the {frames} frames of the checkpoint")));
        }
        let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io(path, e))?;
        file.set_len(length).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
        let mut writer =
            Self { file, path: path.to_owned(), n_atoms, frames, steps_per_frame: steps_per_frame.max(1), step_ps };
        writer.update_header()?;
        Ok(writer)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    fn update_header(&mut self) -> Result<()> {
        let bytes = header(self.n_atoms, self.frames, self.steps_per_frame, self.step_ps);
        let io = |e| Error::io(&self.path, e);
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(&bytes[..bytes.len()]).map_err(|e| Error::io(&self.path, e))?;
        self.file.seek(SeekFrom::End(0)).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Appends one frame of positions in nm (written in Å) and updates the frame count.
    pub fn append(&mut self, positions_nm: &[f64]) -> Result<()> {
        if positions_nm.len() != 3 * self.n_atoms {
            return Err(Error::invalid(format!(
                "DCD frame: expected {} values, got {}",
                3 * self.n_atoms,
                positions_nm.len()
            )));
        }
        let mut out = Vec::with_capacity(frame_length(self.n_atoms) as usize);
        for d in 0..3 {
            let values: Vec<u8> =
                positions_nm.chunks_exact(3).flat_map(|a| ((a[d] * 10.0) as f32).to_le_bytes()).collect();
            record(&mut out, &values);
        }
        self.file.write_all(&out).map_err(|e| Error::io(&self.path, e))?;
        self.frames += 1;
        self.update_header()
    }

    /// Flushes to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// What a DCD header says.
#[derive(Debug, Clone, PartialEq)]
pub struct DcdHeader {
    /// Atoms per frame.
    pub n_atoms: usize,
    /// Frame count stored in the header.
    pub frames: u32,
}

fn read_record(file: &mut File, path: &Path, what: &str) -> Result<Vec<u8>> {
    let mut n = [0u8; 4];
    file.read_exact(&mut n).map_err(|_| Error::parse(path, format!("truncated DCD: {what} missing")))?;
    let len = i32::from_le_bytes(n);
    if !(0..=1 << 30).contains(&len) {
        return Err(Error::parse(path, format!("not a DCD file (bad record length {len} in {what})")));
    }
    // A record longer than what is left of the file is refused before its buffer is allocated.
    let left = file
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .len()
        .saturating_sub(file.stream_position().map_err(|e| Error::io(path, e))?);
    if len as u64 > left {
        return Err(Error::parse(path, format!("truncated DCD: {what} announces {len} bytes, {left} are left")));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload).map_err(|_| Error::parse(path, format!("truncated DCD: {what} is incomplete")))?;
    file.read_exact(&mut n).map_err(|_| Error::parse(path, format!("truncated DCD: {what} is incomplete")))?;
    if i32::from_le_bytes(n) != len {
        return Err(Error::parse(path, format!("corrupt DCD: record markers of {what} differ")));
    }
    Ok(payload)
}

fn read_header(file: &mut File, path: &Path) -> Result<DcdHeader> {
    let control = read_record(file, path, "header")?;
    if control.len() != 84 || &control[..4] != b"CORD" {
        return Err(Error::parse(path, "not a DCD file (no CORD header)"));
    }
    let frames = i32::from_le_bytes(control[4..8].try_into().expect("4 bytes")).max(0) as u32;
    read_record(file, path, "title")?;
    let atoms = read_record(file, path, "atom count")?;
    if atoms.len() != 4 {
        return Err(Error::parse(path, "corrupt DCD atom-count record"));
    }
    let n_atoms = i32::from_le_bytes(atoms[..4].try_into().expect("4 bytes"));
    if n_atoms <= 0 {
        return Err(Error::parse(path, format!("DCD with {n_atoms} atoms")));
    }
    Ok(DcdHeader { n_atoms: n_atoms as usize, frames })
}

/// Reads the header of a DCD file.
pub fn read_dcd_header(path: &Path) -> Result<DcdHeader> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    read_header(&mut file, path)
}

/// Reads every frame (positions in nm, flat per frame). A file with fewer complete frames than its
/// header announces is an error that says so.
pub fn read_dcd(path: &Path) -> Result<(DcdHeader, Vec<Vec<f64>>)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let header = read_header(&mut file, path)?;
    // Three records of 4 bytes per atom plus two 4-byte markers each, per frame: a frame count the
    // file cannot hold is refused before anything is allocated for it.
    let frame_bytes = 3 * (4 * header.n_atoms as u64 + 8);
    let left = file
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .len()
        .saturating_sub(file.stream_position().map_err(|e| Error::io(path, e))?);
    if header.frames as u64 * frame_bytes > left {
        return Err(Error::parse(
            path,
            format!(
                "truncated trajectory: the header announces {} frames of {} atoms but the file holds {} whole \
                 frames (frame {} is incomplete)",
                header.frames,
                header.n_atoms,
                left / frame_bytes,
                left / frame_bytes
            ),
        ));
    }
    let mut frames = Vec::with_capacity(header.frames as usize);
    for f in 0..header.frames {
        let mut positions = vec![0.0; 3 * header.n_atoms];
        for d in 0..3 {
            let values = read_record(&mut file, path, &format!("frame {f}")).map_err(|e| match e {
                Error::Parse { .. } => Error::parse(
                    path,
                    format!(
                        "truncated trajectory: the header announces {} frames but frame {f} is incomplete",
                        header.frames
                    ),
                ),
                other => other,
            })?;
            if values.len() != 4 * header.n_atoms {
                return Err(Error::parse(path, format!("frame {f} has the wrong size")));
            }
            for (a, c) in values.chunks_exact(4).enumerate() {
                positions[3 * a + d] = f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64 / 10.0;
            }
        }
        frames.push(positions);
    }
    Ok((header, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_truncate() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.dcd");
        let mut w = DcdWriter::create(&path, 2, 10, 0.001).expect("create");
        for f in 0..3 {
            w.append(&[0.1 * f as f64, 0.2, 0.3, -0.4, 0.5, 0.6]).expect("append");
        }
        drop(w);
        let (h, frames) = read_dcd(&path).expect("read");
        assert_eq!((h.n_atoms, h.frames, frames.len()), (2, 3, 3));
        assert!((frames[2][0] - 0.2).abs() < 1e-7 && (frames[1][3] + 0.4).abs() < 1e-7);
        // Resume at frame 2: frame 3 is dropped, a new one appended.
        let mut w = DcdWriter::open_truncated(&path, 2, 2, 10, 0.001).expect("reopen");
        w.append(&[9.0, 9.0, 9.0, 9.0, 9.0, 9.0]).expect("append");
        drop(w);
        let (h, frames) = read_dcd(&path).expect("read");
        assert_eq!(h.frames, 3);
        assert!((frames[2][0] - 9.0).abs() < 1e-6);
        // A torn file is reported as truncated.
        let bytes = std::fs::read(&path).expect("bytes");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("write");
        let m = read_dcd(&path).expect_err("torn").to_string();
        assert!(m.contains("truncated trajectory") && m.contains("frame 2"), "{m}");
        // A header announcing far more frames than the file holds is refused before allocating.
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).expect("write");
        let m = read_dcd(&path).expect_err("huge").to_string();
        assert!(m.contains("2147483647 frames") && m.contains("holds 3 whole frames"), "{m}");
        assert!(DcdWriter::open_truncated(&path, 3, 1, 10, 0.001).is_err());
    }
}
