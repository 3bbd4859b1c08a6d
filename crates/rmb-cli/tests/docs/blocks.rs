//! Markdown: fenced blocks.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) lang: String,
    pub(crate) tags: Vec<String>,
    pub(crate) body: String,
}

impl Block {
    pub(crate) fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    pub(crate) fn tag_value(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
    }
}

pub(crate) fn parse_blocks(file: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace().map(str::to_string);
                    open = Some(Block {
                        file: file.to_string(),
                        line: i + 1,
                        lang: words.next().unwrap_or_default(),
                        tags: words.collect(),
                        body: String::new(),
                    });
                }
            }
            Some(block) => {
                if trimmed.trim_end() == "```" {
                    blocks.push(open.take().expect("open block"));
                } else {
                    block.body.push_str(line);
                    block.body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is never closed");
    blocks
}

/// README.md and every docs/*.md, as (relative path, text).
pub(crate) fn doc_files() -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_string(), repo().join("README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        files.push((name, path));
    }
    files
        .into_iter()
        .map(|(name, path)| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect()
}

pub(crate) fn all_blocks() -> Vec<Block> {
    doc_files()
        .iter()
        .flat_map(|(name, text)| parse_blocks(name, text))
        .collect()
}

pub(crate) fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
