//! File formats for molecular positions: PDB ([`pdb`]), XYZ ([`xyz`]) and NumPy `.npy`
//! ([`npy`]).
//!
//! Every reader returns positions in nanometres as a flat, row-major `Vec<f64>`
//! (configuration, atom, xyz). [`read_positions`] picks the reader from the file extension and
//! returns a [`Positions`] whatever the format.
//!
//! Units by format: PDB files are in ångström (converted on reading and writing), XYZ files are
//! in ångström unless their first comment line says `nm` (see [`xyz::read_xyz`]), and `.npy`
//! arrays are taken to be in nanometres.

pub mod cg_points;
pub mod checkpoint;
pub mod cv_histograms;
pub mod cv_run;
pub mod dcd;
pub mod inpcrd;
pub mod method_points;
pub mod npy;
pub mod pdb;
pub mod plot;
pub mod xyz;

use std::path::Path;

use crate::error::{Error, Result};

/// The position file formats [`read_positions`] understands, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionsFormat {
    /// Protein Data Bank text format (`.pdb`), one configuration per MODEL block.
    Pdb,
    /// XYZ text format (`.xyz`), one configuration per frame.
    Xyz,
    /// NumPy binary array (`.npy`) of shape `(n_atoms, 3)` or `(n_configs, n_atoms, 3)`, in nm.
    Npy,
    /// AMBER ASCII coordinates (`.crd`, `.inpcrd`, `.rst7`), in Å.
    Inpcrd,
}

impl PositionsFormat {
    /// The format named by the extension of `path` (`.pdb`, `.xyz` or `.npy`, any case).
    ///
    /// Any other extension, or none, is an [`Error::InvalidInput`].
    pub fn from_path(path: &Path) -> Result<Self> {
        let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("pdb") => Ok(Self::Pdb),
            Some("xyz") => Ok(Self::Xyz),
            Some("npy") => Ok(Self::Npy),
            Some("crd" | "inpcrd" | "rst7") => Ok(Self::Inpcrd),
            Some(other) => Err(Error::invalid(format!(
                "{}: unknown positions file extension '.{other}'; expected .pdb, .xyz, .npy, .crd or .inpcrd",
                path.display()
            ))),
            None => Err(Error::invalid(format!(
                "{}: positions file has no extension; expected .pdb, .xyz, .npy, .crd or .inpcrd",
                path.display()
            ))),
        }
    }
}

/// One or more configurations of the same set of atoms, in nanometres.
#[derive(Debug, Clone, PartialEq)]
pub struct Positions {
    /// Number of atoms in each configuration.
    pub n_atoms: usize,
    /// Number of configurations.
    pub n_configs: usize,
    /// Positions in nm, row-major (configuration, atom, xyz): `n_configs * n_atoms * 3` values.
    pub positions_nm: Vec<f64>,
    /// Upper-case element symbols ("C", "H", ...), one per atom, when the format records them
    /// (PDB and XYZ do, `.npy` does not).
    pub elements: Option<Vec<String>>,
}

impl Positions {
    /// The positions of configuration `index` (`n_atoms * 3` values in nm), or `None` when out
    /// of range.
    pub fn frame(&self, index: usize) -> Option<&[f64]> {
        let len = self.n_atoms.checked_mul(3)?;
        let start = index.checked_mul(len)?;
        self.positions_nm.get(start..start.checked_add(len)?)
    }

    /// Iterates over the configurations, each `n_atoms * 3` values in nm.
    pub fn frames(&self) -> impl Iterator<Item = &[f64]> {
        (0..self.n_configs).map_while(|i| self.frame(i))
    }
}

/// Reads positions from a `.pdb`, `.xyz` or `.npy` file, chosen by extension (see
/// [`PositionsFormat`]).
///
/// XYZ units are detected from the first comment line (see [`xyz::read_xyz`]); `.npy` arrays
/// must have shape `(n_atoms, 3)` or `(n_configs, n_atoms, 3)` and are taken to be in nm.
/// A missing or unreadable file is an [`Error::Io`] naming the path.
pub fn read_positions(path: &Path) -> Result<Positions> {
    match PositionsFormat::from_path(path)? {
        PositionsFormat::Pdb => pdb::positions_from_models(&pdb::read_pdb(path)?),
        PositionsFormat::Xyz => xyz::read_xyz(path, None),
        PositionsFormat::Inpcrd => inpcrd::read_inpcrd(path),
        PositionsFormat::Npy => npy::read_npy(path)?.into_positions().map_err(|e| match e {
            Error::InvalidInput(message) => Error::invalid(format!("{}: {message}", path.display())),
            other => other,
        }),
    }
}

/// The fingerprint of a serialized OpenMM System: the 64-bit FNV-1a hash of its XML text as 16
/// lower-case hex digits. Enough to notice output files or models that belong to another system
/// (it is not a cryptographic hash).
///
/// ```
/// assert_eq!(cgflow::io::fingerprint(""), "cbf29ce484222325");
/// assert_ne!(cgflow::io::fingerprint("<System/>"), cgflow::io::fingerprint("<System />"));
/// ```
pub fn fingerprint(text: &str) -> String {
    fnv1a64_hex(text.as_bytes())
}

/// The 64-bit FNV-1a hash of `bytes` as 16 lower-case hex digits: the checksum that model and
/// checkpoint files record of the weights files beside them.
///
/// ```
/// assert_eq!(cgflow::io::fnv1a64_hex(b"a"), "af63dc4c8601ec8c");
/// ```
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME));
    format!("{hash:016x}")
}

/// The [`fingerprint`] of a System's XML as OpenMM serializes it ([`System::to_xml`]). For a System
/// read from a file that OpenMM's `XmlSerializer` wrote (such as the shipped
/// `data/alanine_dipeptide/*.xml`), this equals the fingerprint of the file's text.
///
/// [`System::to_xml`]: crate::openmm::System::to_xml
pub fn system_fingerprint(system: &crate::openmm::System) -> Result<String> {
    Ok(fingerprint(&system.to_xml()?))
}

/// Ångström per nanometre (exactly 10.0). Dividing by it, rather than multiplying by
/// [`NM_PER_ANGSTROM`](crate::units::NM_PER_ANGSTROM), rounds "2.000" Å to the `f64` nearest
/// 0.2 nm.
pub(crate) const ANGSTROM_PER_NM: f64 = 1.0 / crate::units::NM_PER_ANGSTROM;

/// Reads a whole file as UTF-8 text: [`Error::Io`] when it cannot be read, [`Error::Parse`]
/// when it is not UTF-8.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::parse(path, format!("not valid UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
    })
}

/// Writes `contents` to `path`, mapping failures to [`Error::Io`].
pub(crate) fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: to a temporary file beside it, synced, then renamed over
/// it, so a reader (or a run killed meanwhile) sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn format_from_extension_is_case_insensitive() {
        assert_eq!(PositionsFormat::from_path(Path::new("a/b.PDB")).unwrap(), PositionsFormat::Pdb);
        assert_eq!(PositionsFormat::from_path(Path::new("x.Xyz")).unwrap(), PositionsFormat::Xyz);
        assert_eq!(PositionsFormat::from_path(Path::new("x.npy")).unwrap(), PositionsFormat::Npy);
    }

    #[test]
    fn unknown_extension_names_it_and_the_accepted_ones() {
        let err = PositionsFormat::from_path(Path::new("coords.gro")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(message.contains(".gro"), "{message}");
        assert!(message.contains(".pdb") && message.contains(".xyz") && message.contains(".npy"));
        let err = PositionsFormat::from_path(Path::new("coords")).unwrap_err();
        assert!(err.to_string().contains("no extension"));
    }

    #[test]
    fn missing_file_is_an_io_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["missing.pdb", "missing.xyz", "missing.npy"] {
            let path = dir.path().join(name);
            match read_positions(&path) {
                Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
                other => panic!("expected Io error for {name}, got {other:?}"),
            }
        }
    }

    #[test]
    fn dispatches_on_extension() {
        let dir = tempfile::tempdir().unwrap();
        let pdb = write_temp(&dir, "m.pdb", b"ATOM      1  N   ALA A   1       1.000   2.000   3.000\n");
        let positions = read_positions(&pdb).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (1, 1));
        assert_eq!(positions.positions_nm, vec![0.1, 0.2, 0.3]);
        assert_eq!(positions.elements, Some(vec!["N".to_string()]));

        let xyz = write_temp(&dir, "m.xyz", b"1\nunit=nm\nO 1.5 2.5 3.5\n");
        let positions = read_positions(&xyz).unwrap();
        assert_eq!(positions.positions_nm, vec![1.5, 2.5, 3.5]);
        assert_eq!(positions.elements, Some(vec!["O".to_string()]));

        let npy = dir.path().join("m.npy");
        npy::write_npy(&npy, &[2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let positions = read_positions(&npy).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (1, 2));
        assert_eq!(positions.frame(1), Some(&[4.0, 5.0, 6.0][..]));
        assert_eq!(positions.frame(2), None);
        assert_eq!(positions.frames().count(), 2);
        assert_eq!(positions.elements, None);
    }

    #[test]
    fn npy_of_wrong_shape_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("flat.npy");
        npy::write_npy(&npy, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let err = read_positions(&npy).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        let message = err.to_string();
        assert!(message.contains("flat.npy") && message.contains("(4,)"), "{message}");
    }
}
