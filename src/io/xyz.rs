//! An XYZ reader and writer.
//!
//! Each frame is an atom-count line, a comment line, and one `Element x y z` line per atom
//! (further columns are ignored); frames follow one another in the same file. The XYZ standard
//! unit is the ångström; this project also stores files in nanometres and says so in the first
//! comment line (see [`read_xyz`]).

use std::fmt::Write as _;
use std::path::Path;

use super::{Positions, ANGSTROM_PER_NM};
use crate::error::{Error, Result};

/// The length unit of the coordinates in an XYZ file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Nanometres.
    Nanometre,
    /// Ångström (the XYZ standard).
    Angstrom,
}

impl LengthUnit {
    /// The unit stated in an XYZ comment line: [`Nanometre`](Self::Nanometre) when the line
    /// contains the word "nm" (any case) as a whole token, splitting on every character that is
    /// not alphanumeric (so "unit=nm" and "(nm)" count but "nmol" does not), else
    /// [`Angstrom`](Self::Angstrom).
    pub fn from_comment(comment: &str) -> Self {
        let says_nm = comment.split(|c: char| !c.is_alphanumeric()).any(|token| token.eq_ignore_ascii_case("nm"));
        if says_nm {
            Self::Nanometre
        } else {
            Self::Angstrom
        }
    }

    /// Converts a length in this unit to nanometres.
    pub fn to_nm(self, value: f64) -> f64 {
        match self {
            Self::Nanometre => value,
            Self::Angstrom => value / ANGSTROM_PER_NM,
        }
    }
}

/// Reads every frame of an XYZ file as [`Positions`] in nm, with the elements (upper-cased) of
/// the first frame in `elements` (always `Some`).
///
/// `unit` gives the file's unit; `None` detects it from the first comment line with
/// [`LengthUnit::from_comment`]. See [`parse_xyz`] for the errors.
pub fn read_xyz(path: &Path, unit: Option<LengthUnit>) -> Result<Positions> {
    parse_xyz(&super::read_text(path)?, unit, path)
}

/// Parses XYZ text; `path_for_errors` only labels errors.
///
/// Errors ([`Error::Parse`], with the line number): an atom-count line that is not a positive
/// integer, a frame cut short, an atom line without an element and three finite numbers, frames
/// with different atom counts or elements, or no frames at all. Blank lines after the last
/// frame are allowed.
pub fn parse_xyz(text: &str, unit: Option<LengthUnit>, path_for_errors: &Path) -> Result<Positions> {
    let err =
        |line_number: usize, message: String| Error::parse(path_for_errors, format!("line {line_number}: {message}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut elements: Option<Vec<String>> = None;
    let mut positions_nm = Vec::new();
    let mut n_configs = 0;
    let mut unit = unit;
    let mut next = 0;
    while let Some(count_index) = lines[next..].iter().position(|l| !l.trim().is_empty()) {
        let count_index = next + count_index;
        if count_index != next && n_configs > 0 {
            return Err(err(next + 1, "blank line between frames".into()));
        }
        let n_atoms = parse_atom_count(lines[count_index]).map_err(|m| err(count_index + 1, m))?;
        let comment_index = count_index + 1;
        // Compared before adding, so that a count near usize::MAX cannot wrap around.
        let lines_after_comment = lines.len().saturating_sub(comment_index + 1);
        if n_atoms > lines_after_comment {
            return Err(err(
                lines.len(),
                format!(
                    "file ends inside frame {} (the count on line {} says {n_atoms} atoms)",
                    n_configs + 1,
                    count_index + 1
                ),
            ));
        }
        let end = comment_index + 1 + n_atoms;
        let unit = *unit.get_or_insert_with(|| LengthUnit::from_comment(lines[comment_index]));
        let mut frame_elements = Vec::with_capacity(n_atoms);
        for (index, line) in lines.iter().enumerate().take(end).skip(comment_index + 1) {
            let (element, xyz) = parse_atom_line(line).map_err(|m| err(index + 1, m))?;
            frame_elements.push(element);
            positions_nm.extend(xyz.map(|value| unit.to_nm(value)));
        }
        match &elements {
            None => elements = Some(frame_elements),
            Some(first) => {
                check_same_atoms(first, &frame_elements, n_configs + 1).map_err(|m| err(count_index + 1, m))?
            }
        }
        n_configs += 1;
        next = end;
    }
    let elements = elements.ok_or_else(|| Error::parse(path_for_errors, "no XYZ frames"))?;
    Ok(Positions { n_atoms: elements.len(), n_configs, positions_nm, elements: Some(elements) })
}

fn parse_atom_count(line: &str) -> std::result::Result<usize, String> {
    match line.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive atom count, found '{}'", line.trim())),
    }
}

/// `Element x y z [anything else]` → upper-cased element and the three numbers.
fn parse_atom_line(line: &str) -> std::result::Result<(String, [f64; 3]), String> {
    let mut tokens = line.split_whitespace();
    let element = tokens.next().ok_or_else(|| "expected 'element x y z', found a blank line".to_string())?;
    let mut xyz = [0.0; 3];
    for (value, axis) in xyz.iter_mut().zip(['x', 'y', 'z']) {
        let token = tokens.next().ok_or_else(|| format!("expected 'element x y z', {axis} coordinate missing"))?;
        *value = match token.parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => return Err(format!("malformed {axis} coordinate '{token}'")),
        };
    }
    Ok((element.to_ascii_uppercase(), xyz))
}

fn check_same_atoms(first: &[String], frame: &[String], frame_number: usize) -> std::result::Result<(), String> {
    if first.len() != frame.len() {
        return Err(format!("frame {frame_number} has {} atoms but frame 1 has {}", frame.len(), first.len()));
    }
    match first.iter().zip(frame).position(|(a, b)| a != b) {
        Some(i) => {
            Err(format!("frame {frame_number} has element {} for atom {i} but frame 1 has {}", frame[i], first[i]))
        }
        None => Ok(()),
    }
}

/// Writes frames in nm to an XYZ file; see [`format_xyz`].
pub fn write_xyz(path: &Path, elements: &[String], frames_nm: &[Vec<f64>], comment: &str) -> Result<()> {
    super::write_file(path, format_xyz(elements, frames_nm, comment)?)
}

/// Formats frames as XYZ text in nm. Every frame's comment line is `unit=nm` followed by
/// `comment`, so [`read_xyz`] detects the unit. Coordinates are written in Rust's shortest
/// round-trip form, so reading the text back gives the same `f64` values.
///
/// Errors ([`Error::InvalidInput`]): no elements or no frames, an element that is empty or
/// contains whitespace, a comment with a line break, a frame whose length is not
/// `3 * elements.len()`, or a non-finite coordinate.
pub fn format_xyz(elements: &[String], frames_nm: &[Vec<f64>], comment: &str) -> Result<String> {
    if elements.is_empty() {
        return Err(Error::invalid("XYZ output needs at least one atom"));
    }
    if frames_nm.is_empty() {
        return Err(Error::invalid("no frames to write to XYZ"));
    }
    if let Some((i, e)) = elements.iter().enumerate().find(|(_, e)| e.is_empty() || e.contains(char::is_whitespace)) {
        return Err(Error::invalid(format!("XYZ element {i} ('{e}') is empty or contains whitespace")));
    }
    if comment.contains(['\n', '\r']) {
        return Err(Error::invalid("XYZ comment must be a single line"));
    }
    let comment_line = if comment.is_empty() { "unit=nm".to_string() } else { format!("unit=nm {comment}") };
    let mut text = String::new();
    for (frame_index, frame) in frames_nm.iter().enumerate() {
        check_frame(frame, elements.len()).map_err(|m| Error::invalid(format!("XYZ frame {frame_index}: {m}")))?;
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{}\n{comment_line}", elements.len());
        for (element, xyz) in elements.iter().zip(frame.chunks_exact(3)) {
            let _ = writeln!(text, "{element} {} {} {}", xyz[0], xyz[1], xyz[2]);
        }
    }
    Ok(text)
}

fn check_frame(frame: &[f64], n_atoms: usize) -> std::result::Result<(), String> {
    if frame.len() != 3 * n_atoms {
        return Err(format!("{} values; expected {} (3 per atom for {n_atoms} atoms)", frame.len(), 3 * n_atoms));
    }
    match frame.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("non-finite coordinate {} for atom {}", frame[i], i / 3)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("test.xyz")
    }

    fn parse(text: &str, unit: Option<LengthUnit>) -> Result<Positions> {
        parse_xyz(text, unit, path())
    }

    #[test]
    fn unit_detection_needs_nm_as_a_whole_token() {
        for comment in ["unit=nm", "positions (nm)", "in NM", "x_nm.pt decoded", "nm"] {
            assert_eq!(LengthUnit::from_comment(comment), LengthUnit::Nanometre, "{comment}");
        }
        for comment in ["", "angstrom", "nmol", "5nm", "written by tool"] {
            assert_eq!(LengthUnit::from_comment(comment), LengthUnit::Angstrom, "{comment}");
        }
    }

    #[test]
    fn angstrom_by_default_and_nm_when_stated() {
        let angstrom = parse("2\nwater\nO 1.0 2.0 3.0\nh 0.5 -1.5 10\n", None).unwrap();
        assert_eq!((angstrom.n_atoms, angstrom.n_configs), (2, 1));
        assert_eq!(angstrom.elements, Some(vec!["O".to_string(), "H".to_string()]));
        let expected = [0.1, 0.2, 0.3, 0.05, -0.15, 1.0];
        for (a, e) in angstrom.positions_nm.iter().zip(expected) {
            assert!((a - e).abs() < 1e-15, "{a} != {e}");
        }
        let nm = parse("2\nwater, nm\nO 1.0 2.0 3.0\nH 0.5 -1.5 10\n", None).unwrap();
        assert_eq!(nm.positions_nm, vec![1.0, 2.0, 3.0, 0.5, -1.5, 10.0]);
        let forced = parse("2\nwater, nm\nO 1.0 2.0 3.0\nH 0.5 -1.5 10\n", Some(LengthUnit::Angstrom)).unwrap();
        assert_eq!(forced.positions_nm[..3], [0.1, 0.2, 0.3]);
    }

    #[test]
    fn reads_several_frames_with_extra_columns_and_trailing_blank_lines() {
        let text = "1\nunit=nm\nC 1 2 3 0.5\n1\nsecond\nC 4 5 6\n\n\n";
        let positions = parse(text, None).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (1, 2));
        assert_eq!(positions.positions_nm, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn malformed_files_report_the_line() {
        let cases = [
            ("two\nc\nC 1 2 3\n", "line 1: expected a positive atom count, found 'two'"),
            ("0\nc\n", "line 1: expected a positive atom count"),
            ("1\nc\nC 1 2 z\n", "line 3: malformed z coordinate 'z'"),
            ("1\nc\nC 1 2\n", "line 3: expected 'element x y z', z coordinate missing"),
            ("1\nc\nC 1 2 inf\n", "line 3: malformed z coordinate 'inf'"),
            ("1\nc\nC 1 2 3\n2\nc\nC 1 2 3\nH 1 2 3\n", "line 4: frame 2 has 2 atoms but frame 1 has 1"),
            ("1\nc\nC 1 2 3\n1\nc\nN 1 2 3\n", "line 4: frame 2 has element N for atom 0"),
            ("1\nc\nC 1 2 3\n\n1\nc\nC 1 2 3\n", "line 4: blank line between frames"),
            ("", "no XYZ frames"),
        ];
        for (text, expected) in cases {
            let err = parse(text, None).unwrap_err();
            assert!(matches!(err, Error::Parse { .. }));
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
            assert!(err.to_string().starts_with("test.xyz: "), "{err}");
        }
    }

    #[test]
    fn truncated_file_is_a_parse_error() {
        let err = parse("3\ncomment\nC 1 2 3\nH 1 2 3\n", None).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }));
        let message = err.to_string();
        assert!(message.contains("line 4: file ends inside frame 1"), "{message}");
        assert!(message.contains("says 3 atoms"), "{message}");
        let err = parse("3\n", None).unwrap_err();
        assert!(err.to_string().contains("file ends inside frame 1"), "{err}");
        // Found by the fuzz harness: a count near usize::MAX wrapped the frame's end around
        // and then asked for a vector of that capacity.
        let huge = format!("{}\ncomment\nC 1 2 3\n", usize::MAX);
        let err = parse(&huge, None).unwrap_err();
        assert!(err.to_string().contains("file ends inside frame 1"), "{err}");
    }

    #[test]
    fn round_trip_is_exact_and_in_nm() {
        let elements = vec!["C".to_string(), "H".to_string()];
        let frames = vec![
            vec![0.1, 0.2, 0.30000000000000004, -1e-20, 123.456789012345, 0.0],
            vec![1.0 / 3.0, 2.0, -3.5, 4.0, 5.0, 6.0],
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.xyz");
        write_xyz(&file, &elements, &frames, "from a test").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("2\nunit=nm from a test\nC 0.1 0.2 0.30000000000000004\n"), "{text}");
        let positions = read_xyz(&file, None).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (2, 2));
        assert_eq!(positions.elements, Some(elements));
        assert_eq!(positions.positions_nm, frames.concat());
    }

    #[test]
    fn writing_rejects_bad_input() {
        let elements = vec!["C".to_string()];
        let bad = [
            format_xyz(&elements, &[vec![1.0, 2.0]], ""),
            format_xyz(&elements, &[vec![1.0, f64::NAN, 2.0]], ""),
            format_xyz(&elements, &[vec![1.0, 2.0, 3.0]], "two\nlines"),
            format_xyz(&["C H".to_string()], &[vec![1.0, 2.0, 3.0]], ""),
            format_xyz(&elements, &[], ""),
            format_xyz(&[], &[vec![]], ""),
        ];
        for result in bad {
            assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
        }
        assert_eq!(format_xyz(&elements, &[vec![1.0, 2.0, 3.0]], "").unwrap(), "1\nunit=nm\nC 1 2 3\n");
    }

    #[test]
    fn reads_the_alanine_dipeptide_minimum() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alanine_dipeptide/position_min_energy_nm.xyz");
        let positions = read_xyz(&file, None).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (22, 1));
        assert_eq!(positions.positions_nm[..3], [0.196222398871, 0.120941821582, 0.068297158704]);
        let elements = positions.elements.unwrap();
        assert_eq!(elements[0], "H");
        assert_eq!(elements[1], "C");
    }
}
