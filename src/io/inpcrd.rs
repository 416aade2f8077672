//! AMBER coordinate files (`.crd`, `.inpcrd`, `.rst7` in ASCII): a title line, a line whose first
//! number is the atom count, then the coordinates in Å, six per line in fields 12 characters wide.
//! Velocities and box information that may follow are ignored.

use std::path::Path;

use super::Positions;
use super::ANGSTROM_PER_NM;
use crate::error::{Error, Result};

/// Reads an ASCII AMBER coordinate file; positions in nm.
pub fn read_inpcrd(path: &Path) -> Result<Positions> {
    parse_inpcrd(&super::read_text(path)?, path)
}

/// Parses the text of an ASCII AMBER coordinate file; `path` only names the file in errors.
///
/// ```
/// let text = "title\n    2\n   1.0000000   2.0000000   3.0000000   4.0000000   5.0000000   6.0000000\n";
/// let p = cgflow::io::inpcrd::parse_inpcrd(text, "x.crd".as_ref()).unwrap();
/// assert_eq!(p.positions_nm, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
/// ```
pub fn parse_inpcrd(text: &str, path: &Path) -> Result<Positions> {
    let mut lines = text.lines();
    lines.next().ok_or_else(|| Error::parse(path, "empty file"))?;
    let count_line = lines.next().ok_or_else(|| Error::parse(path, "line 2: missing atom count"))?;
    let n_atoms: usize = count_line
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::parse(path, format!("line 2: expected a positive atom count, got '{count_line}'")))?;
    // Every coordinate takes at least one byte of the file: a count beyond that is refused before
    // anything is allocated for it.
    let needed = n_atoms.checked_mul(3).filter(|&n| n <= text.len()).ok_or_else(|| {
        Error::parse(path, format!("line 2: {n_atoms} atoms cannot fit in a file of {} bytes", text.len()))
    })?;
    let mut values = Vec::with_capacity(needed);
    for (index, line) in lines.enumerate() {
        let line_number = index + 3;
        // Fixed-width fields of 12 characters; whitespace splitting would merge touching fields.
        let mut start = 0;
        while start < line.len() && values.len() < needed {
            let end = (start + 12).min(line.len());
            let field = line.get(start..end).unwrap_or("").trim();
            if !field.is_empty() {
                let v: f64 = field
                    .parse()
                    .map_err(|_| Error::parse(path, format!("line {line_number}: '{field}' is not a number")))?;
                values.push(v / ANGSTROM_PER_NM);
            }
            start = end;
        }
        if values.len() == needed {
            break;
        }
    }
    if values.len() < needed {
        return Err(Error::parse(
            path,
            format!("expected {needed} coordinates for {n_atoms} atoms, found {} (truncated file?)", values.len()),
        ));
    }
    Ok(Positions { n_atoms, n_configs: 1, positions_nm: values, elements: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shipped_alanine_dipeptide_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alanine_dipeptide/alanine-dipeptide.crd");
        let p = read_inpcrd(&path).expect("crd");
        assert_eq!(p.n_atoms, 22);
        assert!((p.positions_nm[0] - 0.2000001).abs() < 1e-12);
        assert!((p.positions_nm[4] - 0.209).abs() < 1e-12);
    }

    #[test]
    fn truncated_and_malformed_files_are_errors() {
        let text = "t\n    2\n   1.0000000   2.0000000   3.0000000\n";
        assert!(parse_inpcrd(text, "a.crd".as_ref()).unwrap_err().to_string().contains("truncated"));
        let text = "t\n    1\n   1.0000000   x.0000000   3.0000000\n";
        assert!(parse_inpcrd(text, "a.crd".as_ref()).unwrap_err().to_string().contains("line 3"));
        assert!(parse_inpcrd("t\nabc\n", "a.crd".as_ref()).is_err());
        // A header count far beyond the file's size is refused before any allocation.
        let huge = parse_inpcrd("t\n2999999999999\n   1.0\n", "a.crd".as_ref()).unwrap_err().to_string();
        assert!(huge.contains("cannot fit"), "{huge}");
        assert!(parse_inpcrd(&format!("t\n{}\n", usize::MAX), "a.crd".as_ref()).is_err());
    }
}
