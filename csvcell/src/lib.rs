//! One CSV cell, as both popscan's reports and `popgate audit search` write
//! them: quoted per RFC 4180 when needed, and guarded against formula
//! injection. Cell text comes from scanned servers and from agencies
//! (purposes, paths), and officers open these files in spreadsheets, which
//! run a cell starting with `=`, `+`, `-`, `@`, tab or CR as a formula
//! (`=HYPERLINK(…)` exfiltrates, `=cmd|…` executes on some). Such a cell
//! gets a leading apostrophe, which spreadsheets show as text.

/// The cell as it must appear in the file.
pub fn cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// A whole row, cells joined with commas (no line ending).
pub fn row<S: AsRef<str>>(cells: &[S]) -> String {
    cells
        .iter()
        .map(|c| cell(c.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_quoting_follows_rfc_4180() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(row(&["a", "=b"]), "a,'=b");
    }
}
