//! A reader and writer for the NumPy `.npy` arrays this project stores: little-endian float64
//! (`'<f8'`) or float32 (`'<f4'`), C order, any shape.
//!
//! The file is the magic string `\x93NUMPY`, a two-byte version, the header length (2 bytes
//! little-endian in version 1.0, 4 bytes in 2.0 and 3.0), a header that is a Python dict
//! literal such as `{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }`, then the raw
//! data. Reading accepts versions 1.0, 2.0 and 3.0; writing produces version 1.0 `'<f8'`.

use std::path::Path;

use super::Positions;
use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Data (and so the header end) is aligned to this many bytes, as NumPy does.
const ALIGNMENT: usize = 64;

/// An n-dimensional array of numbers in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements in C order (float32 files are widened to f64); `shape.iter().product()` of
    /// them.
    pub data: Vec<f64>,
}

impl NpyArray {
    /// Interprets the array as positions in nm: shape `(n_atoms, 3)` is one configuration,
    /// `(n_configs, n_atoms, 3)` a batch.
    ///
    /// Any other shape, or one with no atoms or no configurations, is an
    /// [`Error::InvalidInput`] naming the shape.
    pub fn into_positions(self) -> Result<Positions> {
        let (n_configs, n_atoms) = match self.shape[..] {
            [n_atoms, 3] => (1, n_atoms),
            [n_configs, n_atoms, 3] => (n_configs, n_atoms),
            _ => {
                return Err(Error::invalid(format!(
                    "positions array has shape {}; expected (n_atoms, 3) or (n_configs, n_atoms, 3)",
                    shape_literal(&self.shape)
                )))
            }
        };
        if n_atoms == 0 || n_configs == 0 {
            return Err(Error::invalid(format!(
                "positions array of shape {} holds no positions",
                shape_literal(&self.shape)
            )));
        }
        if Some(self.data.len()) != n_configs.checked_mul(n_atoms * 3) {
            return Err(Error::invalid(format!(
                "positions array of shape {} has {} values",
                shape_literal(&self.shape),
                self.data.len()
            )));
        }
        Ok(Positions { n_atoms, n_configs, positions_nm: self.data, elements: None })
    }
}

/// Reads an `.npy` file; see [`parse_npy`].
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses the bytes of an `.npy` file; `path_for_errors` only labels errors.
///
/// Errors ([`Error::Parse`]): a wrong magic string, an unsupported version, a truncated or
/// malformed header, Fortran order, a dtype other than `'<f8'` or `'<f4'` (named in the
/// message), or a data length that does not match the shape.
pub fn parse_npy(bytes: &[u8], path_for_errors: &Path) -> Result<NpyArray> {
    let err = |message: String| Error::parse(path_for_errors, message);
    let (header, data) = split_header(bytes).map_err(err)?;
    let header = Header::parse(header).map_err(|m| err(format!("npy header: {m}")))?;
    let data = decode_data(&header, data).map_err(err)?;
    Ok(NpyArray { shape: header.shape, data })
}

/// Checks magic and version; returns the header text and the data bytes.
fn split_header(bytes: &[u8]) -> std::result::Result<(&str, &[u8]), String> {
    if !bytes.starts_with(MAGIC) {
        return Err("not a NumPy .npy file (bad magic string)".into());
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err("npy file truncated inside its preamble".into()),
    };
    let (length_bytes, start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => return Err(format!("unsupported npy version {major}.{minor}")),
    };
    let length_field =
        bytes.get(8..8 + length_bytes).ok_or_else(|| "npy file truncated inside its preamble".to_string())?;
    let header_len = length_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let end = start + header_len;
    let header = bytes.get(start..end).ok_or_else(|| {
        format!("npy file truncated inside its header ({} bytes, header ends at byte {end})", bytes.len())
    })?;
    let header = std::str::from_utf8(header).map_err(|_| "npy header is not UTF-8 text".to_string())?;
    Ok((header, &bytes[end..]))
}

/// The element types this reader understands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F64,
    F32,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
        }
    }
}

/// The fields of an npy header dict.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let entries = HeaderParser::new(text).dict()?;
        let mut descr = None;
        let mut fortran_order = None;
        let mut shape = None;
        for (key, value) in entries {
            match (key.as_str(), value) {
                ("descr", Value::Str(s)) => descr = Some(s),
                ("fortran_order", Value::Bool(b)) => fortran_order = Some(b),
                ("shape", Value::Tuple(t)) => shape = Some(t),
                ("descr" | "fortran_order" | "shape", value) => {
                    return Err(format!("unexpected value {value:?} for '{key}'"))
                }
                _ => {}
            }
        }
        let descr = descr.ok_or("missing 'descr'")?;
        let dtype = match descr.as_str() {
            "<f8" => Dtype::F64,
            "<f4" => Dtype::F32,
            other => return Err(format!("unsupported dtype '{other}'; only '<f8' and '<f4' are read")),
        };
        if fortran_order.ok_or("missing 'fortran_order'")? {
            return Err("Fortran-order arrays are not supported; save in C order".into());
        }
        let shape = shape.ok_or("missing 'shape'")?;
        Ok(Header { dtype, shape })
    }
}

fn decode_data(header: &Header, data: &[u8]) -> std::result::Result<Vec<f64>, String> {
    let size = header.dtype.size();
    let expected_bytes = header
        .shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {} is too large", shape_literal(&header.shape)))?;
    if data.len() != expected_bytes {
        return Err(format!(
            "shape {} needs {expected_bytes} data bytes but the file has {}",
            shape_literal(&header.shape),
            data.len()
        ));
    }
    let values = data.chunks_exact(size);
    Ok(match header.dtype {
        Dtype::F64 => values.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        Dtype::F32 => values.map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
    })
}

/// A value in the header dict.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A recursive-descent parser for the Python literal subset npy headers use.
struct HeaderParser<'a> {
    rest: &'a str,
}

impl<'a> HeaderParser<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Consumes `c` (after blanks) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at '{}'", self.excerpt()))
        }
    }

    fn excerpt(&self) -> String {
        self.rest.chars().take(20).collect()
    }

    /// `{ 'key': value, ... }` with an optional trailing comma, followed only by blanks.
    fn dict(mut self) -> std::result::Result<Vec<(String, Value)>, String> {
        self.expect('{')?;
        let mut entries = Vec::new();
        while !self.eat('}') {
            let key = self.string()?;
            self.expect(':')?;
            entries.push((key, self.value()?));
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        self.skip_space();
        if !self.rest.is_empty() {
            return Err(format!("unexpected text after the dict: '{}'", self.excerpt()));
        }
        Ok(entries)
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        self.skip_space();
        if self.rest.starts_with(['\'', '"']) {
            return self.string().map(Value::Str);
        }
        if self.rest.starts_with('(') {
            return self.tuple().map(Value::Tuple);
        }
        if self.rest.starts_with('[') {
            return Err("structured (record) dtypes are not supported".into());
        }
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(Value::Bool(value));
            }
        }
        Err(format!("unexpected value at '{}'", self.excerpt()))
    }

    /// A single- or double-quoted string without escapes.
    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_space();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted string at '{}'", self.excerpt())),
        };
        let body = &self.rest[1..];
        let end = body.find(quote).ok_or_else(|| "unterminated string".to_string())?;
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    /// `()`, `(3,)`, `(2, 3)`, ... of non-negative integers (a Python 2 `L` suffix is allowed).
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut items = Vec::new();
        while !self.eat(')') {
            items.push(self.integer()?);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(items)
    }

    fn integer(&mut self) -> std::result::Result<usize, String> {
        self.skip_space();
        let digits = self.rest.len() - self.rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let value = self.rest[..digits].parse().map_err(|_| format!("expected a dimension at '{}'", self.excerpt()))?;
        self.rest = &self.rest[digits..];
        self.rest = self.rest.strip_prefix('L').unwrap_or(self.rest);
        Ok(value)
    }
}

/// A shape as NumPy writes it: `()`, `(3,)`, `(2, 3)`.
fn shape_literal(shape: &[usize]) -> String {
    match shape {
        [single] => format!("({single},)"),
        _ => {
            let items: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// Writes `data` (C order, `shape.iter().product()` values) as a version 1.0 `'<f8'` `.npy`
/// file; see [`format_npy`].
pub fn write_npy(path: &Path, shape: &[usize], data: &[f64]) -> Result<()> {
    super::write_file(path, format_npy(shape, data)?)
}

/// The bytes of a `'<f8'` `.npy` file holding `data` with `shape`: version 1.0 (2.0 only if the
/// header would not fit 1.0's 65535 bytes), the header padded with blanks and a newline so the
/// data starts at a multiple of 64 bytes.
///
/// A `data` length other than the product of `shape` (1 for the scalar shape `[]`) is an
/// [`Error::InvalidInput`].
pub fn format_npy(shape: &[usize], data: &[f64]) -> Result<Vec<u8>> {
    let values: Vec<[u8; 8]> = data.iter().map(|v| v.to_le_bytes()).collect();
    format_npy_bytes(shape, "<f8", values.len(), values.as_flattened())
}

/// The bytes of a `'<f4'` `.npy` file holding `data` with `shape`, laid out as [`format_npy`]'s.
/// For arrays whose values float32 holds exactly (counts below 2^24, say) at half the size.
pub fn format_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let values: Vec<[u8; 4]> = data.iter().map(|v| v.to_le_bytes()).collect();
    format_npy_bytes(shape, "<f4", values.len(), values.as_flattened())
}

fn format_npy_bytes(shape: &[usize], descr: &str, count: usize, data: &[u8]) -> Result<Vec<u8>> {
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(count) {
        return Err(Error::invalid(format!("npy shape {} does not match {count} data values", shape_literal(shape))));
    }
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}", shape_literal(shape));
    // The header is the dict, blanks, and the newline NumPy ends every header with.
    let padded_len = |preamble: usize| (preamble + dict.len() + 1).next_multiple_of(ALIGNMENT) - preamble;
    let (version, length_bytes) = if padded_len(10) <= usize::from(u16::MAX) { (1u8, 2) } else { (2u8, 4) };
    let preamble = MAGIC.len() + 2 + length_bytes;
    let header_len = padded_len(preamble);
    let header_len_bytes = u32::try_from(header_len)
        .map_err(|_| Error::invalid(format!("npy header for shape {} is too long", shape_literal(shape))))?
        .to_le_bytes();
    let mut bytes = Vec::with_capacity(preamble + header_len + data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[version, 0]);
    bytes.extend_from_slice(&header_len_bytes[..length_bytes]);
    bytes.extend_from_slice(dict.as_bytes());
    bytes.resize(preamble + header_len - 1, b' ');
    bytes.push(b'\n');
    bytes.extend_from_slice(data);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("test.npy")
    }

    /// A file with the given version, header dict and data bytes (header padded to 64 bytes).
    fn build(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let preamble = if major == 1 { 10 } else { 12 };
        let header_len = (preamble + dict.len() + 1).next_multiple_of(64) - preamble;
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend_from_slice(&[major, 0]);
        let len = (header_len as u32).to_le_bytes();
        bytes.extend_from_slice(if major == 1 { &len[..2] } else { &len[..] });
        bytes.extend_from_slice(dict.as_bytes());
        bytes.resize(preamble + header_len - 1, b' ');
        bytes.push(b'\n');
        bytes.extend_from_slice(data);
        bytes
    }

    fn parse_err(bytes: &[u8]) -> String {
        let err = parse_npy(bytes, path()).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn round_trips_several_shapes() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [vec![5], vec![2, 3], vec![2, 4, 3], vec![]] {
            let n: usize = shape.iter().product();
            let data: Vec<f64> = (0..n).map(|i| i as f64 * 0.25 - 1.0 / 3.0).collect();
            let file = dir.path().join("a.npy");
            write_npy(&file, &shape, &data).unwrap();
            let bytes = std::fs::read(&file).unwrap();
            let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(bytes.len(), 10 + header_len + 8 * n);
            let array = read_npy(&file).unwrap();
            assert_eq!(array.shape, shape);
            assert_eq!(array.data, data);
        }
    }

    #[test]
    fn header_looks_like_numpys() {
        let bytes = format_npy(&[2, 3], &[0.0; 6]).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 118);
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert_eq!(header.trim_end(), "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }");
        assert!(header.ends_with(" \n"));
        assert_eq!(shape_literal(&[3]), "(3,)");
        assert_eq!(shape_literal(&[]), "()");
        assert_eq!(shape_literal(&[2, 4, 3]), "(2, 4, 3)");
    }

    #[test]
    fn reads_float32() {
        let data: Vec<u8> = [1.5f32, -2.25, 1e-3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = build(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &data);
        let array = parse_npy(&bytes, path()).unwrap();
        assert_eq!(array.shape, vec![3]);
        assert_eq!(array.data, vec![1.5, -2.25, f64::from(1e-3f32)]);
    }

    #[test]
    fn reads_version_2_and_3_headers() {
        let data: Vec<u8> = [7.0f64, 8.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for major in [2, 3] {
            let bytes = build(major, "{\"descr\":\"<f8\",\"fortran_order\":False,\"shape\":(1L,2L)}", &data);
            assert_eq!(&bytes[8..12], &[116, 0, 0, 0]);
            let array = parse_npy(&bytes, path()).unwrap();
            assert_eq!(array.shape, vec![1, 2]);
            assert_eq!(array.data, vec![7.0, 8.0]);
        }
    }

    #[test]
    fn rejects_bad_files() {
        let f8 = |shape: &str| format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
        assert!(parse_err(b"\x93NUMPX\x01\x00").contains("bad magic"));
        assert!(parse_err(b"\x93NUMPY\x04\x00\x00\x00").contains("version 4.0"));
        let int = build(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
        assert!(parse_err(&int).contains("unsupported dtype '<i8'"));
        let big_endian = build(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
        assert!(parse_err(&big_endian).contains("'>f8'"));
        let fortran = build(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (1,), }", &[0; 8]);
        assert!(parse_err(&fortran).contains("Fortran"));
        let short = build(1, &f8("(2, 3)"), &[0; 40]);
        assert!(parse_err(&short).contains("shape (2, 3) needs 48 data bytes but the file has 40"));
        let long = build(1, &f8("(1,)"), &[0; 9]);
        assert!(parse_err(&long).contains("needs 8 data bytes"));
        let garbled = build(1, "{'descr': '<f8', 'shape': (2, x), }", &[]);
        assert!(parse_err(&garbled).contains("npy header: expected a dimension"));
        let missing = build(1, "{'descr': '<f8', 'shape': (1,), }", &[0; 8]);
        assert!(parse_err(&missing).contains("missing 'fortran_order'"));
        let record = build(1, "{'descr': [('x', '<f8')], 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
        assert!(parse_err(&record).contains("structured"));
    }

    #[test]
    fn truncated_files_are_errors() {
        let bytes = format_npy(&[2, 3], &[1.0; 6]).unwrap();
        assert!(parse_err(&bytes[..bytes.len() - 1]).contains("needs 48 data bytes but the file has 47"));
        assert!(parse_err(&bytes[..100]).contains("truncated inside its header"));
        assert!(parse_err(&bytes[..9]).contains("truncated inside its preamble"));
        assert!(parse_err(&bytes[..7]).contains("truncated inside its preamble"));
        assert!(parse_err(&[]).contains("bad magic"));
    }

    #[test]
    fn writing_checks_the_shape() {
        let err = format_npy(&[2, 3], &[0.0; 5]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains("(2, 3)"), "{err}");
        assert!(format_npy(&[], &[]).is_err());
        assert!(format_npy(&[0, 3], &[]).is_ok());
    }

    #[test]
    fn positions_from_shapes() {
        let single = NpyArray { shape: vec![2, 3], data: vec![1.0; 6] }.into_positions().unwrap();
        assert_eq!((single.n_atoms, single.n_configs), (2, 1));
        let batch = NpyArray { shape: vec![4, 2, 3], data: vec![1.0; 24] }.into_positions().unwrap();
        assert_eq!((batch.n_atoms, batch.n_configs), (2, 4));
        for shape in [vec![6], vec![2, 4], vec![1, 2, 3, 1]] {
            let n = shape.iter().product();
            let err = NpyArray { shape: shape.clone(), data: vec![0.0; n] }.into_positions().unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)));
            assert!(err.to_string().contains(&shape_literal(&shape)), "{err}");
        }
        let err = NpyArray { shape: vec![0, 3], data: vec![] }.into_positions().unwrap_err();
        assert!(err.to_string().contains("no positions"), "{err}");
    }

    #[test]
    fn numpy_interop() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.npy");
        let theirs = dir.path().join("theirs.npy");
        write_npy(&ours, &[2, 3], &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0]).unwrap();
        let script = format!(
            "import numpy as np\n\
             a = np.load(r'{}')\n\
             assert a.dtype == np.float64 and a.shape == (2, 3), (a.dtype, a.shape)\n\
             assert (a == np.arange(1, 7).reshape(2, 3) * 0.5).all()\n\
             np.save(r'{}', np.array([[[1, 2, 3]]], dtype=np.float32) / 4)\n",
            ours.display(),
            theirs.display()
        );
        let status = std::process::Command::new("python3").args(["-c", &script]).output();
        match status {
            Ok(out) if out.status.success() => {}
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
                eprintln!("skipping numpy interop: numpy not installed");
                return;
            }
            Ok(out) => panic!("numpy check failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => {
                eprintln!("skipping numpy interop: python3 not found");
                return;
            }
        }
        let array = read_npy(&theirs).unwrap();
        assert_eq!(array.shape, vec![1, 1, 3]);
        assert_eq!(array.data, vec![0.25, 0.5, 0.75]);
    }
}
