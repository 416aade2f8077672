//! Checkpoint files: a JSON header and named binary sections, written atomically (to a temporary
//! file, synced, then renamed over the old one), so a run killed at any moment leaves either the
//! previous checkpoint or the new one, never a torn file.
//!
//! Layout: the 8-byte magic `CGFLOWCK`, a little-endian u64 header length, the UTF-8 JSON header
//! `{"meta": ..., "sections": [{"name": ..., "length": ...}, ...]}`, then the sections' bytes in order.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CGFLOWCK";

#[derive(Serialize, Deserialize)]
struct Header {
    meta: serde_json::Value,
    sections: Vec<SectionHeader>,
}

#[derive(Serialize, Deserialize)]
struct SectionHeader {
    name: String,
    length: u64,
}

/// The contents of a checkpoint: free-form metadata and named byte sections.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Metadata (run settings, counters).
    pub meta: serde_json::Value,
    /// Named binary sections.
    pub sections: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
    }
}

/// f64 values as little-endian bytes.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes back to f64 values.
pub fn bytes_f64(bytes: &[u8]) -> Result<Vec<f64>> {
    if bytes.len() % 8 != 0 {
        return Err(Error::invalid("a float64 section's length is not a multiple of 8"));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Writes a checkpoint atomically.
pub fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let header = Header {
        meta: checkpoint.meta.clone(),
        sections: checkpoint
            .sections
            .iter()
            .map(|(name, bytes)| SectionHeader { name: name.clone(), length: bytes.len() as u64 })
            .collect(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| Error::invalid(format!("checkpoint header: {e}")))?;
    let temporary = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        for (_, bytes) in &checkpoint.sections {
            file.write_all(bytes)?;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| Error::io(path, e))
}

/// Reads a checkpoint, checking the magic and every section's length.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(Error::parse(path, "not a cgflow checkpoint"));
    }
    let header_length = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let body = bytes.get(16..16 + header_length).ok_or_else(|| Error::parse(path, "truncated checkpoint header"))?;
    let header: Header =
        serde_json::from_slice(body).map_err(|e| Error::parse(path, format!("bad checkpoint header: {e}")))?;
    let mut offset = 16 + header_length;
    let mut sections = Vec::with_capacity(header.sections.len());
    for s in header.sections {
        let end = offset + s.length as usize;
        let data = bytes
            .get(offset..end)
            .ok_or_else(|| Error::parse(path, format!("truncated checkpoint: section '{}' is incomplete", s.name)))?;
        sections.push((s.name, data.to_vec()));
        offset = end;
    }
    Ok(Checkpoint { meta: header.meta, sections })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("run.ckpt");
        let checkpoint = Checkpoint {
            meta: serde_json::json!({"steps": 1234, "seed": 7}),
            sections: vec![("a".into(), vec![1, 2, 3]), ("values".into(), f64_bytes(&[1.5, -2.25]))],
        };
        write_checkpoint(&path, &checkpoint).expect("write");
        let back = read_checkpoint(&path).expect("read");
        assert_eq!(back, checkpoint);
        assert_eq!(bytes_f64(back.section("values").expect("values")).expect("f64"), vec![1.5, -2.25]);
        let bytes = std::fs::read(&path).expect("bytes");
        std::fs::write(&path, &bytes[..bytes.len() - 5]).expect("truncate");
        let m = read_checkpoint(&path).expect_err("truncated").to_string();
        assert!(m.contains("truncated") && m.contains("values"), "{m}");
        std::fs::write(&path, b"hello world, not a checkpoint").expect("write");
        assert!(read_checkpoint(&path).expect_err("magic").to_string().contains("not a cgflow checkpoint"));
    }
}
