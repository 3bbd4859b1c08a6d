//! Loads a corpus directory of malformed inputs. Shared by the corpus tests of
//! rmb-core, rmb-relay and rmb-peer (included with `#[path]`).

use std::path::Path;

/// Every file of `dir` as (name, bytes), sorted by name; fails if there are fewer
/// than `at_least` (a missing corpus must not pass silently).
pub(crate) fn load(dir: &Path, at_least: usize) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "the corpus is missing: {}",
        dir.display()
    );
    files
}
