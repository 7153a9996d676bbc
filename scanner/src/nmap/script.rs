//! NSE script output: nmap's `<table>`/`<elem>` tree, read into a bounded
//! structure the TLS mapping can query by key.

use roxmltree::Node;

use super::{Cx, NmapError};

/// Deepest `<table>` nesting accepted inside a `<script>`. Real nmap output
/// nests 3–4 levels; the bound keeps hostile input from exhausting the stack
/// when the tree is dropped.
pub(super) const MAX_SCRIPT_DEPTH: usize = 256;

/// A script's structured output: nmap's `<table>`/`<elem>` tree
/// (nmap.dtd: `<!ELEMENT script (#PCDATA|table|elem)*>`,
/// `<!ELEMENT table (table|elem)*>`, both with an optional `key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub(super) entries: Vec<Entry>,
    /// Byte offset of the element, for located errors.
    pub(super) at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) key: Option<String>,
    pub(super) value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Elem { text: String, at: usize },
    Table(Table),
}

impl Table {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .map(|e| &e.value)
    }

    pub(super) fn table(&self, key: &str) -> Option<&Table> {
        match self.get(key) {
            Some(Value::Table(t)) => Some(t),
            _ => None,
        }
    }

    pub(super) fn elem(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Elem { text, .. }) => Some(text),
            _ => None,
        }
    }

    /// Values of the entries without a key (nmap's list items).
    pub(super) fn items(&self) -> impl Iterator<Item = &Value> {
        self.entries
            .iter()
            .filter(|e| e.key.is_none())
            .map(|e| &e.value)
    }
}

/// All text inside an element (entity references already decoded).
pub(super) fn text_of(node: Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

impl Cx<'_, '_> {
    pub(super) fn invalid_at(&self, at: usize, message: String) -> NmapError {
        let p = self.doc.text_pos_at(at);
        NmapError::Invalid {
            file: self.file.to_string(),
            line: p.row,
            column: p.col,
            message,
        }
    }

    /// Builds the [`Table`] tree of a `<script>` without recursion.
    pub(super) fn script_table(&self, script: Node) -> Result<Table, NmapError> {
        struct Open<'a, 'i> {
            children: roxmltree::Children<'a, 'i>,
            table: Table,
            key: Option<String>,
        }
        let mut stack = vec![Open {
            children: script.children(),
            table: Table {
                entries: Vec::new(),
                at: script.range().start,
            },
            key: None,
        }];
        loop {
            let Some(top) = stack.last_mut() else {
                // Unreachable: the loop returns when the script element closes.
                return Ok(Table::default());
            };
            match top.children.next() {
                Some(child) if child.is_element() => {
                    let key = child.attribute("key").map(str::to_string);
                    match child.tag_name().name() {
                        "elem" => top.table.entries.push(Entry {
                            key,
                            value: Value::Elem {
                                text: text_of(child),
                                at: child.range().start,
                            },
                        }),
                        "table" => {
                            if stack.len() > MAX_SCRIPT_DEPTH {
                                return Err(self.invalid(
                                    child,
                                    format!(
                                        "<script> output nested deeper than {MAX_SCRIPT_DEPTH} tables"
                                    ),
                                ));
                            }
                            stack.push(Open {
                                children: child.children(),
                                table: Table {
                                    entries: Vec::new(),
                                    at: child.range().start,
                                },
                                key,
                            });
                        }
                        other => {
                            return Err(self.invalid(
                                child,
                                format!("unexpected <{other}> in <script> output: expected <table> or <elem>"),
                            ))
                        }
                    }
                }
                Some(_) => {} // whitespace text, comments
                None => {
                    let Some(done) = stack.pop() else {
                        return Ok(Table::default());
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.table.entries.push(Entry {
                            key: done.key,
                            value: Value::Table(done.table),
                        }),
                        None => return Ok(done.table),
                    }
                }
            }
        }
    }
}
