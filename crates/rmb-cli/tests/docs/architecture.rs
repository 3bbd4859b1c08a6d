//! docs/architecture.md: the crates and source files it names exist.

use super::*;

/// Problems with an architecture page: a crate table that does not list exactly the
/// directories in `crates`, or a `name.rs` that is in no crate's sources.
pub(crate) fn architecture_problems(
    text: &str,
    crates: &BTreeSet<String>,
    sources: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `rmb-"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("rmb-{name}"))
        .collect();
    if &listed != crates {
        problems.push(format!(
            "docs/architecture.md lists crates {listed:?}, crates/ has {crates:?}"
        ));
    }
    let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || "_-/.".contains(c)));
    for word in words.filter(|w| w.ends_with(".rs")) {
        if !sources.iter().any(|s| s.ends_with(&format!("/{word}"))) {
            problems.push(format!(
                "docs/architecture.md names {word}, which no crate has"
            ));
        }
    }
    problems
}

#[test]
pub(crate) fn architecture_names_real_crates_and_files() {
    let crates: BTreeSet<String> = std::fs::read_dir(repo().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sources = Vec::new();
    let mut dirs: Vec<PathBuf> = crates
        .iter()
        .map(|c| repo().join("crates").join(c).join("src"))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                sources.push(path.to_string_lossy().into_owned());
            }
        }
    }
    let text = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    assert!(
        text.contains("state.rs"),
        "the relay's dispatch is described"
    );
    fail_on(architecture_problems(&text, &crates, &sources));
}
