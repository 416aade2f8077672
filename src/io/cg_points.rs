//! CG points from files: text (one point per line, values separated by commas and/or blanks, `#`
//! starts a comment) or NumPy `.npy` of shape `[points, cg_dims]`.
//!
//! Angles are converted to radians and checked by [`angle_to_radians`]: NaN, infinite and
//! out-of-range values are errors naming the line (text) or row (`.npy`), as are lines with the
//! wrong number of values and words that are not numbers (a header line must be a `#` comment).

use std::path::Path;

use crate::error::{Error, Result};
use crate::units::{angle_to_radians, AngleUnit};

/// Reads CG points of `cg_dims` angles each, given in `unit`, from a text file or an `.npy` file
/// (by extension). Returns the points flat (`points x cg_dims`), in radians in [-pi, pi].
pub fn read_cg_points(path: &Path, cg_dims: usize, unit: AngleUnit) -> Result<Vec<f64>> {
    if cg_dims == 0 {
        return Err(Error::invalid("CG points need at least one angle"));
    }
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let points = if is_npy {
        let array = super::npy::read_npy(path)?;
        if array.shape.len() != 2 || array.shape[1] != cg_dims {
            return Err(Error::parse(
                path,
                format!("array of shape {:?}; CG points need shape [points, {cg_dims}]", array.shape),
            ));
        }
        let mut out = Vec::with_capacity(array.data.len());
        for (row, values) in array.data.chunks_exact(cg_dims).enumerate() {
            for &v in values {
                out.push(angle_to_radians(v, unit).map_err(|m| Error::parse(path, format!("row {row}: {m}")))?);
            }
        }
        out
    } else {
        parse_cg_text(&super::read_text(path)?, cg_dims, unit, path)?
    };
    if points.is_empty() {
        return Err(Error::parse(path, "no CG points in the file"));
    }
    Ok(points)
}

/// Parses the text format (see the [module documentation](self)); `path` only labels errors.
pub fn parse_cg_text(text: &str, cg_dims: usize, unit: AngleUnit, path: &Path) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let content = line.split('#').next().unwrap_or("");
        let words: Vec<&str> =
            content.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            continue;
        }
        if words.len() != cg_dims {
            return Err(Error::parse(
                path,
                format!("line {line_no}: {} values, expected {cg_dims} (one CG point per line)", words.len()),
            ));
        }
        for word in words {
            let value: f64 = word.parse().map_err(|_| {
                Error::parse(path, format!("line {line_no}: '{word}' is not a number (comment lines start with '#')"))
            })?;
            out.push(angle_to_radians(value, unit).map_err(|m| Error::parse(path, format!("line {line_no}: {m}")))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_comments_commas_and_degrees() {
        let text = "# phi psi\n-1.5, 2.0\n\n  0.5 -0.25  # a comment\n";
        let p = parse_cg_text(text, 2, AngleUnit::Radians, Path::new("cg.txt")).unwrap();
        assert_eq!(p, vec![-1.5, 2.0, 0.5, -0.25]);
        let p = parse_cg_text("-90 180\n", 2, AngleUnit::Degrees, Path::new("cg.txt")).unwrap();
        assert_eq!(p, vec![-std::f64::consts::FRAC_PI_2, std::f64::consts::PI]);
    }

    #[test]
    fn bad_lines_are_named() {
        let path = Path::new("cg.txt");
        let m = parse_cg_text("0 0\n0.1 nan\n", 2, AngleUnit::Radians, path).unwrap_err().to_string();
        assert!(m.contains("line 2") && m.contains("NaN"), "{m}");
        let m = parse_cg_text("0 4\n", 2, AngleUnit::Radians, path).unwrap_err().to_string();
        assert!(m.contains("line 1") && m.contains("outside [-pi, pi]"), "{m}");
        let m = parse_cg_text("phi,psi\n", 2, AngleUnit::Radians, path).unwrap_err().to_string();
        assert!(m.contains("'phi' is not a number"), "{m}");
        let m = parse_cg_text("\n\n1 2 3\n", 2, AngleUnit::Radians, path).unwrap_err().to_string();
        assert!(m.contains("line 3: 3 values, expected 2"), "{m}");
        let m = parse_cg_text("-200 0\n", 2, AngleUnit::Degrees, path).unwrap_err().to_string();
        assert!(m.contains("outside [-180, 180]"), "{m}");
    }
}
