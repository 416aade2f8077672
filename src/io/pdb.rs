//! A PDB reader and writer for small molecules.
//!
//! Reading takes ATOM and HETATM records by their fixed columns, one [`PdbModel`] per
//! MODEL/ENDMDL block (a file without MODEL records is one model), and ignores every other
//! record. Coordinates are ångström in the file and nanometres in memory.
//!
//! The element comes from columns 77-78 when the file has them. Otherwise it is the first
//! letter of the atom name after any leading digits (" CH3" → "C", "1HH3" → "H",
//! "HH31" → "H", "CA" → "C"). That rule is right for the organic elements H, C, N, O, S and P
//! this project meets; two-letter elements (Cl, Ca, Fe, ...) need the element columns.

use std::fmt::Write as _;
use std::path::Path;

use super::{Positions, ANGSTROM_PER_NM};
use crate::error::{Error, Result};

/// One ATOM or HETATM record.
#[derive(Debug, Clone, PartialEq)]
pub struct PdbAtom {
    /// Atom serial number (columns 7-11).
    pub serial: i64,
    /// Atom name without surrounding blanks (columns 13-16), e.g. "CH3", "1HH3".
    pub name: String,
    /// Residue name without surrounding blanks (columns 18-20), e.g. "ACE".
    pub residue_name: String,
    /// Chain identifier (column 22), a blank when the file has none.
    pub chain: char,
    /// Residue sequence number (columns 23-26), 0 when blank.
    pub residue_number: i64,
    /// Upper-case element symbol, from columns 77-78 or derived from the atom name.
    pub element: String,
    /// Position in nm.
    pub position_nm: [f64; 3],
}

/// The atoms of one MODEL block (or of the whole file when it has no MODEL records).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PdbModel {
    /// The atoms in file order.
    pub atoms: Vec<PdbAtom>,
}

impl PdbModel {
    /// Each atom's name and residue number, what CG definitions by name resolve against
    /// ([`crate::coords::cg_definition::resolve`]).
    pub fn atom_labels(&self) -> Vec<crate::coords::cg_definition::AtomLabel> {
        self.atoms
            .iter()
            .map(|a| crate::coords::cg_definition::AtomLabel { name: a.name.clone(), residue: a.residue_number })
            .collect()
    }

    /// The positions of all atoms, flat (atom, xyz), in nm.
    pub fn positions_nm(&self) -> Vec<f64> {
        self.atoms.iter().flat_map(|a| a.position_nm).collect()
    }
}

/// Reads all models of a PDB file; see [`parse_pdb`].
pub fn read_pdb(path: &Path) -> Result<Vec<PdbModel>> {
    parse_pdb(&super::read_text(path)?, path)
}

/// Parses PDB text into its models; `path_for_errors` only labels errors.
///
/// Errors ([`Error::Parse`], with the line number where there is one): malformed numbers in
/// an ATOM/HETATM record, a record too short to hold coordinates, models with different atom
/// counts, a MODEL block without atoms, or no atoms at all.
pub fn parse_pdb(text: &str, path_for_errors: &Path) -> Result<Vec<PdbModel>> {
    let mut models = Vec::new();
    let mut current: Vec<PdbAtom> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let err = |message: String| Error::parse(path_for_errors, format!("line {line_number}: {message}"));
        match record_name(line) {
            "ATOM" | "HETATM" => current.push(parse_atom(line).map_err(err)?),
            "ENDMDL" if current.is_empty() => {
                return Err(err("ENDMDL closes a model without atoms".into()));
            }
            // A MODEL after atoms without an ENDMDL closes the model those atoms belong to.
            "ENDMDL" | "MODEL" if !current.is_empty() => models.push(PdbModel { atoms: std::mem::take(&mut current) }),
            _ => {}
        }
    }
    if !current.is_empty() {
        models.push(PdbModel { atoms: current });
    }
    check_models(&models).map_err(|message| Error::parse(path_for_errors, message))?;
    Ok(models)
}

/// Every model must have the same, non-zero number of atoms; returns the first.
fn check_models(models: &[PdbModel]) -> std::result::Result<&PdbModel, String> {
    let first = models.first().ok_or_else(|| "no ATOM or HETATM records".to_string())?;
    for (index, model) in models.iter().enumerate() {
        if model.atoms.len() != first.atoms.len() {
            return Err(format!(
                "model {} has {} atoms but model 1 has {}",
                index + 1,
                model.atoms.len(),
                first.atoms.len()
            ));
        }
    }
    Ok(first)
}

/// The record name (columns 1-6) without trailing blanks.
fn record_name(line: &str) -> &str {
    line.get(..6).unwrap_or(line).trim_end()
}

/// Columns `first..=last` (1-based, inclusive) of an ASCII line, clipped to its length.
fn columns(line: &str, first: usize, last: usize) -> &str {
    let end = last.min(line.len());
    let start = first.saturating_sub(1).min(end);
    line.get(start..end).unwrap_or("")
}

fn parse_atom(line: &str) -> std::result::Result<PdbAtom, String> {
    if !line.is_ascii() {
        return Err("ATOM/HETATM record contains non-ASCII characters".into());
    }
    if line.len() < 54 {
        return Err(format!("ATOM/HETATM record is {} characters long; coordinates need columns 31-54", line.len()));
    }
    let name = columns(line, 13, 16).trim().to_string();
    let element = match columns(line, 77, 78).trim() {
        "" => element_from_name(&name).ok_or_else(|| format!("cannot derive an element from atom name '{name}'"))?,
        symbol => symbol.to_ascii_uppercase(),
    };
    Ok(PdbAtom {
        serial: parse_integer(line, 7, 11, "serial number")?,
        name,
        residue_name: columns(line, 18, 20).trim().to_string(),
        chain: columns(line, 22, 22).chars().next().unwrap_or(' '),
        residue_number: parse_integer(line, 23, 26, "residue number")?,
        element,
        position_nm: [
            parse_coordinate(line, 31, 38, 'x')?,
            parse_coordinate(line, 39, 46, 'y')?,
            parse_coordinate(line, 47, 54, 'z')?,
        ],
    })
}

/// An integer field; blank reads as 0.
fn parse_integer(line: &str, first: usize, last: usize, what: &str) -> std::result::Result<i64, String> {
    let field = columns(line, first, last).trim();
    if field.is_empty() {
        return Ok(0);
    }
    field.parse().map_err(|_| format!("malformed {what} '{field}' in columns {first}-{last}"))
}

/// A coordinate field in Å, returned in nm.
fn parse_coordinate(line: &str, first: usize, last: usize, axis: char) -> std::result::Result<f64, String> {
    let field = columns(line, first, last).trim();
    match field.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value / ANGSTROM_PER_NM),
        _ => Err(format!("malformed {axis} coordinate '{field}' in columns {first}-{last}")),
    }
}

/// The element of an atom name without element columns: the first letter after any leading
/// digits, upper-cased (see the module docs for when this is right).
fn element_from_name(name: &str) -> Option<String> {
    name.trim()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .chars()
        .next()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase().to_string())
}

/// Combines models (as from [`read_pdb`]) into [`Positions`], with the first model's elements.
///
/// An empty list or models with different atom counts are an [`Error::InvalidInput`].
pub fn positions_from_models(models: &[PdbModel]) -> Result<Positions> {
    let first = check_models(models).map_err(Error::invalid)?;
    Ok(Positions {
        n_atoms: first.atoms.len(),
        n_configs: models.len(),
        positions_nm: models.iter().flat_map(PdbModel::positions_nm).collect(),
        elements: Some(first.atoms.iter().map(|a| a.element.clone()).collect()),
    })
}

/// Writes `models_nm` with the names and residues of `template` to `path`; see [`format_pdb`].
pub fn write_pdb(path: &Path, template: &[PdbAtom], models_nm: &[Vec<f64>]) -> Result<()> {
    super::write_file(path, format_pdb(template, models_nm)?)
}

/// Formats PDB text: one block of ATOM records per entry of `models_nm` (each `3 *
/// template.len()` values in nm), wrapped in MODEL/ENDMDL when there is more than one, then END.
///
/// Atom names, residues, serials and elements come from `template`; its positions are ignored.
/// Coordinates are written in Å with 3 decimals. Errors ([`Error::InvalidInput`]): an empty
/// template or model list, a model of the wrong length, a non-finite coordinate or one too
/// large for the 8-column field, and template fields that do not fit their columns.
pub fn format_pdb(template: &[PdbAtom], models_nm: &[Vec<f64>]) -> Result<String> {
    if template.is_empty() {
        return Err(Error::invalid("PDB template has no atoms"));
    }
    if models_nm.is_empty() {
        return Err(Error::invalid("no models to write to PDB"));
    }
    for (index, atom) in template.iter().enumerate() {
        check_template_atom(atom).map_err(|m| Error::invalid(format!("PDB template atom {index}: {m}")))?;
    }
    let multi_model = models_nm.len() > 1;
    let mut text = String::new();
    for (model_index, positions_nm) in models_nm.iter().enumerate() {
        if positions_nm.len() != 3 * template.len() {
            return Err(Error::invalid(format!(
                "PDB model {model_index} has {} values; expected {} (3 per atom for {} atoms)",
                positions_nm.len(),
                3 * template.len(),
                template.len()
            )));
        }
        if multi_model {
            // Infallible: writing to a String cannot fail.
            let _ = writeln!(text, "MODEL     {:>4}", model_index + 1);
        }
        for (atom_index, (atom, xyz_nm)) in template.iter().zip(positions_nm.chunks_exact(3)).enumerate() {
            let xyz_angstrom = angstrom_coordinates(xyz_nm)
                .map_err(|m| Error::invalid(format!("PDB model {model_index}, atom {atom_index}: {m}")))?;
            push_atom_record(&mut text, atom, xyz_angstrom);
        }
        if multi_model {
            text.push_str("ENDMDL\n");
        }
    }
    text.push_str("END\n");
    Ok(text)
}

/// The template fields must fit their fixed columns.
fn check_template_atom(atom: &PdbAtom) -> std::result::Result<(), String> {
    let fits = |value: &str, width: usize| value.is_ascii() && value.len() <= width;
    if !fits(&atom.name, 4) {
        return Err(format!("name '{}' is not 1-4 ASCII characters", atom.name));
    }
    if !fits(&atom.residue_name, 3) {
        return Err(format!("residue name '{}' is not 0-3 ASCII characters", atom.residue_name));
    }
    if !fits(&atom.element, 2) {
        return Err(format!("element '{}' is not 0-2 ASCII characters", atom.element));
    }
    if atom.name.is_empty() {
        return Err("empty atom name".into());
    }
    if !atom.chain.is_ascii() || atom.chain.is_ascii_control() {
        return Err(format!("chain {:?} is not a printable ASCII character", atom.chain));
    }
    if !(-9999..=99999).contains(&atom.serial) {
        return Err(format!("serial {} does not fit columns 7-11", atom.serial));
    }
    if !(-999..=9999).contains(&atom.residue_number) {
        return Err(format!("residue number {} does not fit columns 23-26", atom.residue_number));
    }
    Ok(())
}

/// Converts one atom's position to Å, checking it fits the `%8.3f` coordinate fields.
fn angstrom_coordinates(xyz_nm: &[f64]) -> std::result::Result<[f64; 3], String> {
    let mut out = [0.0; 3];
    for (value_out, &value_nm) in out.iter_mut().zip(xyz_nm) {
        if !value_nm.is_finite() {
            return Err(format!("non-finite coordinate {value_nm}"));
        }
        let angstrom = value_nm * ANGSTROM_PER_NM;
        if !(-999.9995..9999.9995).contains(&angstrom) {
            return Err(format!("coordinate {angstrom} Å does not fit the 8-column PDB field"));
        }
        *value_out = angstrom;
    }
    Ok(out)
}

/// Appends one ATOM record with the standard columns (name in 13-16, x/y/z in 31-54,
/// occupancy 1.00, temperature factor 0.00, element right-justified in 77-78).
fn push_atom_record(text: &mut String, atom: &PdbAtom, [x, y, z]: [f64; 3]) {
    let _ = writeln!(
        text,
        "ATOM  {serial:>5} {name:<4} {residue:>3} {chain}{residue_number:>4}    \
         {x:>8.3}{y:>8.3}{z:>8.3}{occupancy:>6.2}{b_factor:>6.2}          {element:>2}",
        serial = atom.serial,
        name = padded_name(atom),
        residue = atom.residue_name,
        chain = atom.chain,
        residue_number = atom.residue_number,
        occupancy = 1.0,
        b_factor = 0.0,
        element = atom.element,
    );
}

/// The PDB convention for the 4-column name field: four-character names fill it; shorter
/// names of one-letter elements start in column 14, so the element sits in column 14.
fn padded_name(atom: &PdbAtom) -> String {
    if atom.name.len() < 4 && atom.element.len() < 2 {
        format!(" {}", atom.name)
    } else {
        atom.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "\
REMARK  test molecule
ATOM      1  N   ALA A   7      11.104  -6.134   0.250  1.00 20.00           N
ATOM      2  CA  ALA A   7      12.000  13.500 -14.125  1.00 20.00           C
HETATM    3 CL   CLX B  12      -0.001   0.000 100.000  1.00  0.00          CL
TER
END
";

    fn path() -> &'static Path {
        Path::new("test.pdb")
    }

    fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= tolerance, "{actual:?} != {expected:?}");
        }
    }

    #[test]
    fn parses_fixed_columns() {
        let models = parse_pdb(SNIPPET, path()).unwrap();
        assert_eq!(models.len(), 1);
        let atoms = &models[0].atoms;
        assert_eq!(atoms.len(), 3);
        assert_eq!(atoms[0].serial, 1);
        assert_eq!(atoms[0].name, "N");
        assert_eq!(atoms[0].residue_name, "ALA");
        assert_eq!(atoms[0].chain, 'A');
        assert_eq!(atoms[0].residue_number, 7);
        assert_eq!(atoms[0].element, "N");
        assert_close(&atoms[0].position_nm, &[1.1104, -0.6134, 0.025], 1e-12);
        assert_eq!(atoms[1].name, "CA");
        assert_eq!(atoms[1].element, "C");
        assert_close(&atoms[1].position_nm, &[1.2, 1.35, -1.4125], 1e-12);
        assert_eq!(atoms[2].serial, 3);
        assert_eq!(atoms[2].name, "CL");
        assert_eq!(atoms[2].residue_name, "CLX");
        assert_eq!(atoms[2].chain, 'B');
        assert_eq!(atoms[2].residue_number, 12);
        assert_eq!(atoms[2].element, "CL");
        assert_close(&atoms[2].position_nm, &[-0.0001, 0.0, 10.0], 1e-12);
    }

    #[test]
    fn element_falls_back_to_the_atom_name() {
        assert_eq!(element_from_name("1HH3").as_deref(), Some("H"));
        assert_eq!(element_from_name(" CH3").as_deref(), Some("C"));
        assert_eq!(element_from_name(" N  ").as_deref(), Some("N"));
        assert_eq!(element_from_name("HH31").as_deref(), Some("H"));
        assert_eq!(element_from_name("123"), None);
        let text = "ATOM      1 1HH3 ACE     1       2.000   1.000  -0.000\n\
                    ATOM      2  CH3 ACE     1       2.000   2.090   0.000\n\
                    ATOM      3  N   ALA     2       3.555   3.970  -0.000\n";
        let atoms = &parse_pdb(text, path()).unwrap()[0].atoms;
        let elements: Vec<&str> = atoms.iter().map(|a| a.element.as_str()).collect();
        assert_eq!(elements, ["H", "C", "N"]);
        assert_eq!(atoms[0].name, "1HH3");
        assert_eq!(atoms[0].chain, ' ');
    }

    #[test]
    fn broken_coordinate_reports_the_line() {
        let text = "REMARK\n\
                    ATOM      1  N   ALA A   1       1.000   2.000   3.000\n\
                    ATOM      2  C   ALA A   1       1.000   2.0x0   3.000\n";
        let err = parse_pdb(text, path()).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }));
        let message = err.to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("y coordinate '2.0x0'"), "{message}");
        assert!(message.contains("test.pdb"), "{message}");
    }

    #[test]
    fn short_record_and_empty_file_are_errors() {
        let err = parse_pdb("ATOM      1  N   ALA A   1       1.000   2.000\n", path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_pdb("REMARK nothing\nEND\n", path()).unwrap_err();
        assert!(err.to_string().contains("no ATOM or HETATM"), "{err}");
    }

    #[test]
    fn reads_models_and_checks_their_sizes() {
        let text = "MODEL        1\n\
                    ATOM      1  O   HOH     1       1.000   2.000   3.000\n\
                    ENDMDL\n\
                    MODEL        2\n\
                    ATOM      1  O   HOH     1       4.000   5.000   6.000\n\
                    ENDMDL\n\
                    END\n";
        let models = parse_pdb(text, path()).unwrap();
        assert_eq!(models.len(), 2);
        assert_close(&models[1].positions_nm(), &[0.4, 0.5, 0.6], 1e-12);
        let positions = positions_from_models(&models).unwrap();
        assert_eq!((positions.n_atoms, positions.n_configs), (1, 2));
        assert_close(&positions.positions_nm, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1e-12);

        let without_endmdl = "MODEL 1\nATOM      1  O   HOH     1       1.000   2.000   3.000\n\
                              MODEL 2\nATOM      1  O   HOH     1       4.000   5.000   6.000\n";
        assert_eq!(parse_pdb(without_endmdl, path()).unwrap(), models);

        let uneven = text.replace("ENDMDL\nEND", "ATOM      2  H   HOH     1       4.000   5.000   7.000\nENDMDL\nEND");
        let err = parse_pdb(&uneven, path()).unwrap_err();
        assert!(err.to_string().contains("model 2 has 2 atoms but model 1 has 1"), "{err}");
    }

    fn template() -> Vec<PdbAtom> {
        let atom = |serial: i64, name: &str, residue_name: &str, element: &str| PdbAtom {
            serial,
            name: name.into(),
            residue_name: residue_name.into(),
            chain: 'A',
            residue_number: serial,
            element: element.into(),
            position_nm: [0.0; 3],
        };
        vec![atom(1, "1HH3", "ACE", "H"), atom(2, "CH3", "ACE", "C"), atom(3, "CL", "CLX", "CL")]
    }

    #[test]
    fn writes_standard_columns() {
        let text = format_pdb(&template(), &[vec![0.1, -0.2, 0.3, 1.0, 2.0, -3.0, 0.0, 0.0, 0.0]]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ATOM      1 1HH3 ACE A   1       1.000  -2.000   3.000  1.00  0.00           H",
                "ATOM      2  CH3 ACE A   2      10.000  20.000 -30.000  1.00  0.00           C",
                "ATOM      3 CL   CLX A   3       0.000   0.000   0.000  1.00  0.00          CL",
                "END",
            ]
        );
    }

    #[test]
    fn round_trip_keeps_positions_to_a_thousandth_of_an_angstrom() {
        let models_nm = vec![
            vec![0.12345, -0.98765, 1.5, 2.0004, -0.00004, 0.333333, -99.9, 999.9, 0.0],
            vec![0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3],
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.pdb");
        write_pdb(&file, &template(), &models_nm).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("MODEL        1\n"));
        assert!(text.ends_with("ENDMDL\nEND\n"));
        let models = read_pdb(&file).unwrap();
        assert_eq!(models.len(), 2);
        for (model, expected) in models.iter().zip(&models_nm) {
            // 1e-3 Å = 1e-4 nm, half of it from rounding to 3 decimals.
            assert_close(&model.positions_nm(), expected, 0.5e-4 + 1e-12);
            for (read, written) in model.atoms.iter().zip(template()) {
                assert_eq!(read.name, written.name);
                assert_eq!(read.residue_name, written.residue_name);
                assert_eq!(read.element, written.element);
                assert_eq!(read.serial, written.serial);
                assert_eq!(read.chain, written.chain);
                assert_eq!(read.residue_number, written.residue_number);
            }
        }
    }

    #[test]
    fn writing_rejects_bad_models() {
        let err = format_pdb(&template(), &[vec![0.0; 8]]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains("expected 9"), "{err}");
        let mut model = vec![0.0; 9];
        model[4] = f64::NAN;
        let err = format_pdb(&template(), &[model]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains("atom 1"), "{err}");
        let err = format_pdb(&template(), &[vec![1e3; 9]]).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let mut bad = template();
        bad[0].name = "TOOLONG".into();
        assert!(matches!(format_pdb(&bad, &[vec![0.0; 9]]), Err(Error::InvalidInput(_))));
        assert!(matches!(format_pdb(&[], &[vec![]]), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = read_pdb(Path::new("/nonexistent/dir/x.pdb")).unwrap_err();
        assert!(matches!(err, Error::Io { ref path, .. } if path == Path::new("/nonexistent/dir/x.pdb")));
    }

    #[test]
    fn reads_the_alanine_dipeptide_file() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alanine_dipeptide/alanine-dipeptide.pdb");
        let models = read_pdb(&file).unwrap();
        assert_eq!(models.len(), 1);
        let atoms = &models[0].atoms;
        assert_eq!(atoms.len(), 22);
        assert_close(&atoms[0].position_nm, &[0.2, 0.1, -0.0], 1e-12);
        assert_eq!(atoms[0].name, "1HH3");
        assert_eq!(atoms[1].name, "CH3");
        assert_eq!(atoms[1].residue_name, "ACE");
        assert_eq!(atoms[21].residue_name, "NME");
        assert_eq!(atoms[21].residue_number, 3);
        let elements: String = atoms.iter().map(|a| a.element.as_str()).collect();
        assert_eq!(elements, "HCHHCONHCHCHHHCONHCHHH");
    }
}
