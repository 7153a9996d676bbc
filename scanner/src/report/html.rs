//! placeholder until written
use super::Report; pub fn render_html(_r: &Report) -> String { String::new() }
