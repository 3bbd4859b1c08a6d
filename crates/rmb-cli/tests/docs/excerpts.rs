//! Rust excerpts.

use super::*;

pub(crate) fn excerpt_problem(block: &Block) -> Option<String> {
    let Some(path) = block.tag_value("excerpt") else {
        return Some(format!(
            "{}: a rust block must name the compiled file it is taken from (```rust excerpt=<path>)",
            block.at()
        ));
    };
    let source = match std::fs::read_to_string(repo().join(path)) {
        Ok(s) => s,
        Err(e) => return Some(format!("{}: {path}: {e}", block.at())),
    };
    let mut source_lines = source.lines().map(str::trim);
    for line in block.body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !source_lines.any(|s| s == line) {
            return Some(format!(
                "{}: `{line}` is not in {path} (in this order)",
                block.at()
            ));
        }
    }
    None
}

#[test]
pub(crate) fn rust_blocks_are_excerpts_of_compiled_files() {
    let blocks = all_blocks();
    let rust: Vec<_> = blocks.iter().filter(|b| b.lang == "rust").collect();
    assert!(
        !rust.is_empty(),
        "the README shows the SDK; no rust block found"
    );
    fail_on(rust.iter().filter_map(|b| excerpt_problem(b)).collect());
}
