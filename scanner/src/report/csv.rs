//! placeholder until written
use super::Report; pub fn render_csv(_r: &Report) -> String { String::new() }
