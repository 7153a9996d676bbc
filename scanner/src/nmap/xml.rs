//! Reading nmap's XML safely: located errors, a depth guard in front of
//! the recursive parser, and small helpers for walking elements.

use roxmltree::Node;

use super::NmapError;

/// Maps a roxmltree error to a located [`NmapError::Xml`]. roxmltree reports
/// "root never closed" / "unexpected end" at 1:1; those mean the text stops
/// early (nmap killed mid-run), so they are located at the end of the input.
pub(super) fn xml_error(xml: &str, file: &str, e: &roxmltree::Error) -> NmapError {
    let (line, column, message) = match e {
        roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream => {
            let (l, c) = end_pos(xml);
            (
                l,
                c,
                "XML ends before </nmaprun>: truncated nmap output (was nmap killed mid-run?)"
                    .to_string(),
            )
        }
        roxmltree::Error::NoRootNode => {
            let (l, c) = end_pos(xml);
            (
                l,
                c,
                "no XML element at all: expected <nmaprun>".to_string(),
            )
        }
        other => {
            let p = other.pos();
            (p.row, p.col, format!("malformed XML: {other}"))
        }
    };
    NmapError::Xml {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) just past the last character.
pub(super) fn end_pos(text: &str) -> (u32, u32) {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    let col = last.chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

/// Deepest element nesting accepted in the whole document. nmap writes
/// about 10 levels; roxmltree parses nested elements recursively, so an
/// unbounded depth would overflow the stack (an abort, not a panic) before
/// any error could be reported.
pub(super) const MAX_XML_DEPTH: usize = 320;

/// Rejects, before roxmltree sees them, documents nested deeper than
/// [`MAX_XML_DEPTH`] and DTD internal subsets (nmap writes a bare
/// `<!DOCTYPE nmaprun>`; declared entities could expand into nesting this
/// scan cannot see). A quick tag scanner: anything else malformed is left for
/// roxmltree to report precisely.
pub(super) fn check_nesting(xml: &str, file: &str) -> Result<(), NmapError> {
    let fail = |at: usize, message: String| {
        let head = xml.get(..at).unwrap_or(xml);
        let (line, column) = end_pos(head);
        Err(NmapError::Xml {
            file: file.to_string(),
            line,
            column,
            message,
        })
    };
    let b = xml.as_bytes();
    let find = |from: usize, pat: &str| -> Option<usize> {
        xml.get(from..).and_then(|t| t.find(pat)).map(|i| i + from)
    };
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(lt) = find(i, "<") {
        let rest = xml.get(lt..).unwrap_or("");
        let skip_to = |pat: &str| find(lt, pat).map(|e| e + pat.len());
        let next = if rest.starts_with("<!--") {
            skip_to("-->")
        } else if rest.starts_with("<![CDATA[") {
            skip_to("]]>")
        } else if rest.starts_with("<?") {
            skip_to("?>")
        } else {
            // A tag or declaration: up to the `>` outside quotes.
            let mut quote = None;
            let mut end = None;
            let mut j = lt + 1;
            while let Some(&c) = b.get(j) {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(c),
                    (None, b'[') if rest.starts_with("<!") => return fail(
                        lt,
                        "DTD internal subset not accepted (nmap writes a bare <!DOCTYPE nmaprun>)"
                            .to_string(),
                    ),
                    (None, b'>') => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            if let Some(e) = end {
                if rest.starts_with("</") {
                    depth = depth.saturating_sub(1);
                } else if !rest.starts_with("<!") && b.get(e.wrapping_sub(1)) != Some(&b'/') {
                    depth += 1;
                    if depth > MAX_XML_DEPTH {
                        return fail(
                            lt,
                            format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
                        );
                    }
                }
            }
            end.map(|e| e + 1)
        };
        match next {
            Some(n) => i = n,
            // Unterminated construct: roxmltree reports it with its position.
            None => break,
        }
    }
    Ok(())
}

/// Child elements of `node` with the given tag name.
pub(super) fn elements<'a, 'i>(
    node: Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

pub(super) fn first<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    elements(node, name).next()
}
