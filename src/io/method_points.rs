//! A method's cost points for `cgflow compare --method-points`: (energy evaluations, KLD) and
//! optionally the wall seconds it took, as CSV (two or three columns, an optional header line,
//! `#` comments) or JSON (an array of `[evaluations, kld(, wall_s)]` or of objects with
//! `"evaluations"`, `"kld"` and optionally `"wall_s"`, or an object holding such an array under
//! `"log"`, `"points"` or `"iterations"`); a `.jsonl` file (an active-learning `log.jsonl`) is
//! read as an array of its lines.

use std::path::Path;

use crate::error::{Error, Result};
use crate::metrics::cost_curve::CostPoint;

/// A method's point: its evaluations and KLD, and the wall time it took when known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodPoint {
    /// Evaluations and KLD.
    pub point: CostPoint,
    /// Wall seconds from the method's start to this point.
    pub wall_s: Option<f64>,
}

/// Reads the points of `path`; see the module documentation for the formats.
pub fn read_method_points(path: &Path) -> Result<Vec<MethodPoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_method_points(&text, path.extension().is_some_and(|e| e == "jsonl"), path)
}

/// Parses method points from `text` (`json_lines`: one JSON object per line); `path` names the
/// source in errors. No points, a malformed point, evaluations that are not finite and positive,
/// a KLD that is not finite and non-negative, or a wall time that is not finite and positive →
/// [`Error::Parse`].
pub fn parse_method_points(text: &str, json_lines: bool, path: &Path) -> Result<Vec<MethodPoint>> {
    let points = if text.trim_start().starts_with(['[', '{']) {
        parse_json(text, json_lines, path)?
    } else {
        parse_csv(text, path)?
    };
    if points.is_empty() {
        return Err(Error::parse(path, "no (evaluations, KLD) points"));
    }
    for (i, m) in points.iter().enumerate() {
        let p = m.point;
        if !(p.evaluations.is_finite() && p.evaluations > 0.0 && p.kld.is_finite() && p.kld >= 0.0) {
            return Err(Error::parse(
                path,
                format!(
                    "point {i} ({}, {}) needs positive evaluations and a finite non-negative KLD",
                    p.evaluations, p.kld
                ),
            ));
        }
        if let Some(w) = m.wall_s.filter(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::parse(path, format!("point {i} has wall time {w} s; it must be finite and positive")));
        }
    }
    Ok(points)
}

fn parse_json(text: &str, json_lines: bool, path: &Path) -> Result<Vec<MethodPoint>> {
    let value: serde_json::Value = if json_lines {
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<std::result::Result<Vec<serde_json::Value>, _>>()
            .map_err(|e| Error::parse(path, format!("not valid JSON Lines: {e}")))?;
        serde_json::Value::Array(rows)
    } else {
        serde_json::from_str(text).map_err(|e| Error::parse(path, format!("not valid JSON: {e}")))?
    };
    let array = match &value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => ["log", "points", "iterations"]
            .iter()
            .find_map(|k| o.get(*k).and_then(|v| v.as_array()))
            .ok_or_else(|| Error::parse(path, "no array under \"log\", \"points\" or \"iterations\""))?,
        _ => return Err(Error::parse(path, "expected an array of points")),
    };
    array
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (e, k, w) = match v {
                serde_json::Value::Array(row) if row.len() == 2 || row.len() == 3 => {
                    (row[0].as_f64(), row[1].as_f64(), row.get(2).and_then(|x| x.as_f64()))
                }
                serde_json::Value::Object(o) => (
                    o.get("evaluations").and_then(|x| x.as_f64()),
                    o.get("kld").and_then(|x| x.as_f64()),
                    o.get("wall_s").and_then(|x| x.as_f64()),
                ),
                _ => (None, None, None),
            };
            match (e, k) {
                (Some(evaluations), Some(kld)) => Ok(MethodPoint { point: CostPoint { evaluations, kld }, wall_s: w }),
                _ => Err(Error::parse(
                    path,
                    format!("point {i} is not [evaluations, kld(, wall_s)] or {{evaluations, kld(, wall_s)}}"),
                )),
            }
        })
        .collect()
}

fn parse_csv(text: &str, path: &Path) -> Result<Vec<MethodPoint>> {
    let mut points = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|f| !f.is_empty()).collect();
        let numbers: Vec<Option<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        let point = |evaluations: f64, kld: f64, wall_s| MethodPoint { point: CostPoint { evaluations, kld }, wall_s };
        match numbers.as_slice() {
            [Some(evaluations), Some(kld)] => points.push(point(*evaluations, *kld, None)),
            [Some(evaluations), Some(kld), Some(wall_s)] => points.push(point(*evaluations, *kld, Some(*wall_s))),
            _ if points.is_empty() && numbers.iter().all(Option::is_none) => {} // a header
            _ => {
                return Err(Error::parse(
                    path,
                    format!(
                        "line {}: expected two or three numbers: evaluations, KLD (and wall seconds)",
                        line_number + 1
                    ),
                ))
            }
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_json_and_json_lines_give_the_same_points() {
        let p = Path::new("m");
        let csv = parse_method_points("evaluations,kld,wall_s\n# c\n10, 0.5, 2\n20 0.25 4\n", false, p).unwrap();
        let json = parse_method_points(
            "{\"log\": [[10, 0.5, 2], {\"evaluations\": 20, \"kld\": 0.25, \"wall_s\": 4}]}",
            false,
            p,
        )
        .unwrap();
        let lines = parse_method_points(
            "{\"evaluations\": 10, \"kld\": 0.5, \"wall_s\": 2}\n\n{\"evaluations\": 20, \"kld\": 0.25, \"wall_s\": 4}\n",
            true,
            p,
        )
        .unwrap();
        assert_eq!(csv, json);
        assert_eq!(csv, lines);
        assert_eq!(csv[1], MethodPoint { point: CostPoint { evaluations: 20.0, kld: 0.25 }, wall_s: Some(4.0) });
        for (bad, why) in
            [("", "no (evaluations"), ("10,0.5\n20\n", "line 2"), ("[[10, -1]]", "point 0"), ("5", "line 1")]
        {
            let err = parse_method_points(bad, false, p).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
