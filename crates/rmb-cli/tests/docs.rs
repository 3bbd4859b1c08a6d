//! The documentation is tested: every fenced block in `README.md` and `docs/*.md` that
//! shows commands, JSON, TOML or HTTP is checked against the code, and the README's
//! tour is run for real.
//!
//! Conventions for doc writers (the info string is the text after the opening fence):
//!
//! - ` ```json ` — must parse. ` ```json <type> ` must also deserialize into that type and
//!   keep every field it shows (a misspelt field fails): `peer-request`,
//!   `peer-incoming-request`, `peer-reply`, `peer-incoming-reply` (rmb_core::peer_api,
//!   PROTOCOL.md §4), `registrar-account`, `registrar-accounts`, `registrar-create`,
//!   `registrar-update`, `registrar-error` (rmb_registrar_client::wire). Unknown types fail.
//! - ` ```toml ` — must parse as TOML.
//! - ` ```http ` — a request (`METHOD /path HTTP/1.1`, headers, blank line, body)
//!   followed by its response (`HTTP/1.1 <status> <reason>`, headers, blank line, JSON
//!   body). Each file's exchanges are replayed in order against a fresh registrar whose
//!   time window accepts any timestamp; status, listed headers and body must match
//!   exactly, except `created_at`/`updated_at` (any number) and `…` inside a string
//!   (any text).
//! - ` ```sh ` / `shell` / `bash` / `console` — every `rmb …` command must use a real
//!   subcommand and real flags (checked against `rmb <subcommand> --help`); `rmb-peer`,
//!   `rmb-relay` and `rmb-registrar` commands must use flags their clap definitions
//!   declare. Flag tables (rows starting with a flag) in docs/relay.md, docs/rmb-peer.md
//!   and docs/registrar.md name real flags, and every flag of those binaries is
//!   mentioned in its page.
//! - ` ```rust excerpt=<path> ` — the lines must appear, in order, in that file (which
//!   the workspace compiles). Other ` ```rust ` blocks fail: say where the code lives.
//! - ` ```sh tour ` and ` ```python tour ` (README only) — run in order against a real
//!   `rmb up` network on free ports, in a temp directory where `.rmb-up` is its data
//!   dir. `127.0.0.1:8080`, `127.0.0.1:8081` and `127.0.0.1:6379` are replaced by the
//!   actual registrar, relay and Redis addresses. `rmb …` lines run the real binary and
//!   must succeed; `rmb-peer …` starts the peer (in-process, from its flags); the
//!   SDK example line runs the example's calls in-process; setup lines (`scripts/demo`,
//!   `cargo install`, `pip install`, `redis-server`) are done by the harness, and any
//!   other line fails. A trailing `# → text` comment (or, in Python, a `# → text` line)
//!   means the output must contain `text` (whitespace runs compared as one space).
//!   The Python step is skipped with a note when python3 or redis-py is missing, like
//!   crates/rmb-peer/tests/examples.rs.
//! - Other blocks (` ```text `, bare fences for diagrams) are not checked.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmb_core::peer_api::{IncomingRequest, IncomingResponse, OutgoingRequest, OutgoingResponse};
use rmb_core::KeyType;
use rmb_registrar_client::wire::{AccountJson, CreateRequest, ErrorBody, UpdateRequest};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------
// Markdown: fenced blocks

#[derive(Debug, Clone)]
struct Block {
    file: String,
    line: usize,
    lang: String,
    tags: Vec<String>,
    body: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    fn tag_value(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
    }
}

fn parse_blocks(file: &str, text: &str) -> Vec<Block> {
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
fn doc_files() -> Vec<(String, String)> {
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

fn all_blocks() -> Vec<Block> {
    doc_files()
        .iter()
        .flat_map(|(name, text)| parse_blocks(name, text))
        .collect()
}

fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// JSON and TOML

/// Deserializes `value` into `T` and checks every field shown survives a round trip.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<(), String> {
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    shown_fields_kept(value, &back)
}

fn shown_fields_kept(shown: &Value, back: &Value) -> Result<(), String> {
    match (shown, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, v) in a {
                let kept = b
                    .get(key)
                    .ok_or_else(|| format!("field {key:?} is not part of the type"))?;
                shown_fields_kept(v, kept).map_err(|e| format!("{key}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .try_for_each(|(x, y)| shown_fields_kept(x, y)),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{a} reads back as {b}")),
    }
}

fn check_json_block(block: &Block) -> Result<(), String> {
    let value: Value =
        serde_json::from_str(&block.body).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(kind) = block.tags.first() else {
        return Ok(());
    };
    match kind.as_str() {
        "peer-request" => typed::<OutgoingRequest>(&value),
        "peer-incoming-request" => typed::<IncomingRequest>(&value),
        "peer-reply" => typed::<OutgoingResponse>(&value),
        "peer-incoming-reply" => typed::<IncomingResponse>(&value),
        "registrar-account" => typed::<AccountJson>(&value),
        "registrar-accounts" => typed::<Vec<AccountJson>>(&value),
        "registrar-create" => typed::<CreateRequest>(&value),
        "registrar-update" => typed::<UpdateRequest>(&value),
        "registrar-error" => typed::<ErrorBody>(&value),
        other => Err(format!("unknown JSON type {other:?}")),
    }
    .map_err(|e| format!("json {kind}: {e}"))
}

fn json_and_toml_problems(blocks: &[Block]) -> Vec<String> {
    let mut problems = Vec::new();
    for block in blocks {
        let result = match block.lang.as_str() {
            "json" => check_json_block(block),
            "toml" => toml::from_str::<toml::Table>(&block.body)
                .map(drop)
                .map_err(|e| format!("not valid TOML: {e}")),
            _ => Ok(()),
        };
        if let Err(e) = result {
            problems.push(format!("{}: {e}", block.at()));
        }
    }
    problems
}

#[test]
fn json_and_toml_blocks_parse_and_typed_ones_fit_their_types() {
    let blocks = all_blocks();
    let counted = |lang: &str| blocks.iter().filter(|b| b.lang == lang).count();
    assert!(counted("json") >= 5, "the docs show peer JSON; none found");
    fail_on(json_and_toml_problems(&blocks));
}

// ---------------------------------------------------------------------------------
// Shell lines

/// Splits one shell line into words, honouring quotes and backslashes, and returns the
/// words and the trailing comment (without `#`).
fn shell_words(line: &str) -> (Vec<String>, Option<String>) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => {
                let comment: String = chars.collect();
                return (words, Some(comment.trim().to_string()));
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    (words, None)
}

/// The logical lines of a shell block: continuations joined, prompts stripped.
fn shell_lines(body: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in body.lines() {
        let line = raw.trim();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if !current.trim().is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    lines
}

/// The simple commands of a line: split at `&&`, `||`, `;` and `|`, leading
/// `NAME=value` assignments dropped.
fn commands(words: &[String]) -> Vec<Vec<String>> {
    words
        .split(|w| matches!(w.as_str(), "&&" | "||" | ";" | "|" | "&"))
        .map(|cmd| {
            cmd.iter()
                .skip_while(|w| is_assignment(w))
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|cmd| !cmd.is_empty())
        .collect()
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

fn is_shell(block: &Block) -> bool {
    matches!(block.lang.as_str(), "sh" | "shell" | "bash" | "console")
}

/// The flags a `--help` text lists.
fn flags_in_help(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        let word = word.split('=').next().unwrap_or("");
        let long = word.strip_prefix("--").is_some_and(|f| {
            f.len() > 1 && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        let short =
            word.len() == 2 && word.starts_with('-') && word.as_bytes()[1].is_ascii_alphabetic();
        if long || short {
            flags.insert(word.to_string());
        }
    }
    flags
}

/// The subcommands a `--help` text lists under "Commands:".
fn subcommands_in_help(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `rmb … --help`, cached.
struct RmbHelp(HashMap<Vec<String>, String>);

impl RmbHelp {
    fn get(&mut self, path: &[String]) -> &str {
        self.0.entry(path.to_vec()).or_insert_with(|| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmb"))
                .args(path)
                .arg("--help")
                .output()
                .expect("rmb --help runs");
            assert!(out.status.success(), "rmb {path:?} --help failed");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }
}

/// Checks one `rmb …` command (words after `rmb`).
fn check_rmb_command(help: &mut RmbHelp, args: &[String]) -> Result<(), String> {
    let mut path: Vec<String> = Vec::new();
    let mut rest = args;
    // Walk down subcommands while the current level has them.
    loop {
        let subs = subcommands_in_help(help.get(&path));
        if subs.is_empty() {
            break;
        }
        let Some((first, tail)) = rest.split_first() else {
            return Err(format!("`rmb {}` needs a subcommand", path.join(" ")));
        };
        if first.starts_with('-')
            && path.is_empty()
            && flags_in_help(help.get(&path)).contains(first)
        {
            // A global flag before the subcommand (`rmb --debug up`) or --help/--version.
            rest = tail;
            if first == "--help" || first == "-h" || first == "--version" || first == "-V" {
                return Ok(());
            }
            continue;
        }
        if !subs.contains(first) {
            return Err(format!(
                "`rmb {}` has no subcommand {first:?} (it has {subs:?})",
                path.join(" ")
            ));
        }
        path.push(first.clone());
        rest = tail;
    }
    let known = flags_in_help(help.get(&path));
    for word in rest {
        if word.starts_with('-') && word.len() > 1 && !word.starts_with("---") {
            let flag = word.split('=').next().unwrap_or(word);
            if !known.contains(flag) {
                return Err(format!(
                    "`rmb {}` has no flag {flag} (see `rmb {} --help`)",
                    path.join(" "),
                    path.join(" ")
                ));
            }
        }
    }
    Ok(())
}

/// The long and short flags a crate's clap derive declares (`#[arg(long, short = 'x')]`
/// on a field), plus `--help`/`-h` and `--version`/`-V`.
fn declared_flags(crate_dir: &str) -> BTreeSet<String> {
    let mut flags: BTreeSet<String> = ["--help", "-h", "--version", "-V"]
        .into_iter()
        .map(str::to_string)
        .collect();
    let src = repo().join(crate_dir).join("src");
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        if path.extension().map_or(true, |e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("#[arg(") {
            let attr_start = &rest[start + "#[arg(".len()..];
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in attr_start.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let attr = &attr_start[..end];
            let after = &attr_start[end..];
            // The field this attribute belongs to: the next `name:` outside attributes
            // and comments.
            let field = after
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.starts_with("#[") && !l.starts_with("//") && !l.starts_with(')'))
                .find_map(|l| {
                    let l = l.strip_prefix("pub ").unwrap_or(l);
                    let (name, _) = l.split_once(':')?;
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                        .then(|| name.to_string())
                })
                .unwrap_or_default();
            for part in split_attr(attr) {
                let part = part.trim();
                if part == "long" {
                    flags.insert(format!("--{}", field.replace('_', "-")));
                } else if let Some(v) = part.strip_prefix("long =") {
                    flags.insert(format!("--{}", v.trim().trim_matches('"')));
                } else if let Some(v) = part.strip_prefix("alias =") {
                    // Another spelling of the long flag (the original binaries' names).
                    flags.insert(format!("--{}", v.trim().trim_matches('"')));
                } else if part == "short" {
                    flags.insert(format!("-{}", &field[..1]));
                } else if let Some(v) = part.strip_prefix("short =") {
                    flags.insert(format!("-{}", v.trim().trim_matches('\'')));
                }
            }
            rest = after;
        }
    }
    flags
}

/// Splits an attribute's arguments at top-level commas.
fn split_attr(attr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut depth, mut quoted) = (0, false);
    for c in attr.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// The binaries whose flags are read from their sources, and the page documenting each.
const BINARIES: [(&str, &str, &str); 3] = [
    ("rmb-peer", "crates/rmb-peer", "docs/rmb-peer.md"),
    ("rmb-relay", "crates/rmb-relay", "docs/relay.md"),
    ("rmb-registrar", "crates/rmb-registrar", "docs/registrar.md"),
];

fn check_flags_exist(
    program: &str,
    known: &BTreeSet<String>,
    args: &[String],
) -> Result<(), String> {
    for word in args {
        if word.starts_with('-') && word.len() > 1 {
            let flag = word.split('=').next().unwrap_or(word);
            // A cluster of short switches (`-dd`) is fine when each one exists.
            let cluster = !flag.starts_with("--")
                && flag[1..].chars().all(|c| known.contains(&format!("-{c}")));
            if !known.contains(flag) && !cluster {
                return Err(format!("`{program}` has no flag {flag}"));
            }
        }
    }
    Ok(())
}

fn shell_problems(blocks: &[Block], help: &mut RmbHelp) -> Vec<String> {
    let declared: HashMap<&str, BTreeSet<String>> = BINARIES
        .iter()
        .map(|(name, dir, _)| (*name, declared_flags(dir)))
        .collect();
    let mut problems = Vec::new();
    for block in blocks.iter().filter(|b| is_shell(b)) {
        for line in shell_lines(&block.body) {
            let (words, _) = shell_words(&line);
            for cmd in commands(&words) {
                let program = cmd[0].rsplit('/').next().unwrap_or(&cmd[0]);
                let result = match program {
                    "rmb" => check_rmb_command(help, &cmd[1..]),
                    p => match declared.get(p) {
                        Some(known) => check_flags_exist(p, known, &cmd[1..]),
                        None => Ok(()),
                    },
                };
                if let Err(e) = result {
                    problems.push(format!("{}: {line}\n    {e}", block.at()));
                }
            }
        }
    }
    problems
}

#[test]
fn shell_commands_use_real_subcommands_and_flags() {
    let blocks = all_blocks();
    let mut help = RmbHelp(HashMap::new());
    let rmb_lines = blocks
        .iter()
        .filter(|b| is_shell(b))
        .flat_map(|b| shell_lines(&b.body))
        .filter(|l| l.starts_with("rmb "))
        .count();
    assert!(
        rmb_lines >= 3,
        "the docs show rmb commands; found {rmb_lines}"
    );
    fail_on(shell_problems(&blocks, &mut help));
}

/// Flags named in the first cell of table rows (`| `-m, --domain HOST` | …`).
fn table_flags(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(cell) = line.strip_prefix("| `-") else {
            continue;
        };
        let cell = format!("`-{}", cell.split('|').next().unwrap_or(""));
        for flag in flags_in_help(&cell.replace('`', " ")) {
            found.push((i + 1, flag));
        }
    }
    found
}

fn flag_table_problems(page: &str, text: &str, known: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, flag) in table_flags(text) {
        if !known.contains(&flag) {
            problems.push(format!(
                "{page}:{line}: the table lists {flag}, which does not exist"
            ));
        }
    }
    for flag in known.iter().filter(|f| f.starts_with("--")) {
        if matches!(flag.as_str(), "--help" | "--version") {
            continue;
        }
        let mentioned = text.match_indices(flag.as_str()).any(|(at, _)| {
            !text[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        });
        if !mentioned {
            problems.push(format!("{page}: flag {flag} exists but is not documented"));
        }
    }
    problems
}

#[test]
fn flag_tables_match_the_binaries() {
    let files: HashMap<String, String> = doc_files().into_iter().collect();
    let mut problems = Vec::new();
    for (_, dir, page) in BINARIES {
        let text = files
            .get(page)
            .unwrap_or_else(|| panic!("{page} is missing"));
        assert!(!table_flags(text).is_empty(), "{page} has no flag table");
        problems.extend(flag_table_problems(page, text, &declared_flags(dir)));
    }
    fail_on(problems);
}

// ---------------------------------------------------------------------------------
// docs/architecture.md: the crates and source files it names exist

/// Problems with an architecture page: a crate table that does not list exactly the
/// directories in `crates`, or a `name.rs` that is in no crate's sources.
fn architecture_problems(text: &str, crates: &BTreeSet<String>, sources: &[String]) -> Vec<String> {
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
fn architecture_names_real_crates_and_files() {
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

// ---------------------------------------------------------------------------------
// Rust excerpts

fn excerpt_problem(block: &Block) -> Option<String> {
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
fn rust_blocks_are_excerpts_of_compiled_files() {
    let blocks = all_blocks();
    let rust: Vec<_> = blocks.iter().filter(|b| b.lang == "rust").collect();
    assert!(
        !rust.is_empty(),
        "the README shows the SDK; no rust block found"
    );
    fail_on(rust.iter().filter_map(|b| excerpt_problem(b)).collect());
}

// ---------------------------------------------------------------------------------
// HTTP exchanges against a real registrar

struct Http {
    start: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn parse_http(body: &str) -> Http {
    let (head, body) = body.split_once("\n\n").unwrap_or((body, ""));
    let mut lines = head.lines();
    let start = lines.next().unwrap_or_default().trim().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        start,
        headers,
        body: body.trim().to_string(),
    }
}

/// Compares an actual JSON answer with the documented one (see the conventions).
fn json_matches(expected: &Value, actual: &Value, key: &str) -> bool {
    match (expected, actual) {
        (Value::Number(_), Value::Number(_)) if key == "created_at" || key == "updated_at" => true,
        (Value::String(e), Value::String(a)) if e.contains('…') => {
            let mut rest = a.as_str();
            let pieces: Vec<&str> = e.split('…').collect();
            for (i, piece) in pieces.iter().enumerate() {
                match rest.find(piece) {
                    Some(at) if i > 0 || at == 0 => rest = &rest[at + piece.len()..],
                    _ => return false,
                }
            }
            pieces.last().is_some_and(|l| l.is_empty()) || rest.is_empty()
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| json_matches(v, av, k)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_matches(x, y, key))
        }
        (e, a) => e == a,
    }
}

/// Replays the file's exchanges against `base`; returns the number replayed.
async fn replay(blocks: &[&Block], base: &str) -> Result<usize, String> {
    let http = reqwest::Client::new();
    let mut replayed = 0;
    let mut iter = blocks.iter();
    while let Some(block) = iter.next() {
        let request = parse_http(&block.body);
        let mut start = request.start.split_whitespace();
        let (method, path) = (start.next().unwrap_or(""), start.next().unwrap_or(""));
        if method == "HTTP/1.1" {
            return Err(format!(
                "{}: a response without a request before it",
                block.at()
            ));
        }
        let Some(answer) = iter.next() else {
            return Err(format!("{}: a request without its response", block.at()));
        };
        let expected = parse_http(&answer.body);
        let mut send = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
            format!("{base}{path}"),
        );
        for (k, v) in &request.headers {
            send = send.header(k, v);
        }
        if !request.body.is_empty() {
            serde_json::from_str::<Value>(&request.body)
                .map_err(|e| format!("{}: request body is not JSON: {e}", block.at()))?;
            send = send.body(request.body.clone());
        }
        let response = send.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let got_headers = response.headers().clone();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let at = answer.at();
        let mut status_line = expected.start.split_whitespace().skip(1);
        let code: u16 = status_line
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{at}: expected `HTTP/1.1 <status> <reason>`"))?;
        let reason = status_line.collect::<Vec<_>>().join(" ");
        if status.as_u16() != code || status.canonical_reason() != Some(reason.as_str()) {
            return Err(format!(
                "{at}: {method} {path} answered {status} {text}, the doc says {code} {reason}"
            ));
        }
        for (k, v) in &expected.headers {
            let got = got_headers
                .get(k)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !got.starts_with(v.as_str()) {
                return Err(format!("{at}: header {k} is {got:?}, the doc says {v:?}"));
            }
        }
        let want: Value = serde_json::from_str(&expected.body)
            .map_err(|e| format!("{at}: response body is not JSON: {e}"))?;
        let got: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{at}: the server answered non-JSON {text:?}: {e}"))?;
        if !json_matches(&want, &got, "") {
            return Err(format!(
                "{at}: {method} {path} answered\n    {got}\n  the doc says\n    {want}"
            ));
        }
        replayed += 1;
    }
    Ok(replayed)
}

#[tokio::test]
async fn http_examples_replay_exactly_against_a_registrar() {
    let blocks = all_blocks();
    let mut files: Vec<&str> = blocks
        .iter()
        .filter(|b| b.lang == "http")
        .map(|b| b.file.as_str())
        .collect();
    files.dedup();
    assert!(
        files.contains(&"docs/registrar.md"),
        "docs/registrar.md shows no HTTP exchanges"
    );
    let mut problems = Vec::new();
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            rmb_registrar::Config::new(dir.path().join("r.db").to_string_lossy().to_string());
        // The examples carry fixed timestamps: accept any.
        config.time_window = Duration::from_secs(100 * 365 * 24 * 3600);
        let registrar = rmb_testkit::TestRegistrar::start_with_config(config)
            .await
            .unwrap();
        let exchanges: Vec<&Block> = blocks
            .iter()
            .filter(|b| b.lang == "http" && b.file == file)
            .collect();
        match replay(&exchanges, &registrar.url()).await {
            Ok(n) => assert!(n > 0),
            Err(e) => problems.push(e),
        }
    }
    fail_on(problems);
}

// ---------------------------------------------------------------------------------
// The README tour, for real

struct Network {
    child: tokio::process::Child,
    registrar: String,
    relay: String,
}

/// `rmb up` on free ports with `data` as its data dir; returns once it prints that it
/// is running.
async fn rmb_up(data: &Path, log: &Path) -> Network {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmb"))
        .args([
            "up",
            "--registrar-port",
            "0",
            "--relay-port",
            "0",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("RMB_UP_DIR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("rmb up's log"))
        .kill_on_drop(true)
        .spawn()
        .expect("rmb up starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops the network") {
                return true;
            }
        }
        false
    };
    let running = tokio::time::timeout(WAIT, read).await.unwrap_or(false);
    let stderr = || std::fs::read_to_string(log).unwrap_or_default();
    assert!(running, "rmb up did not start:\n{printed}\n{}", stderr());
    assert!(printed.contains("demo call succeeded"), "{printed}");
    let value = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("rmb up printed no {name} line:\n{printed}"))
            .to_string()
    };
    let (registrar, relay) = (value("registrar"), value("relay"));
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Network {
        child,
        registrar,
        relay,
    }
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where a documented command's output must contain `# → text`.
fn expectation(comment: &Option<String>) -> Option<String> {
    comment
        .as_deref()
        .and_then(|c| c.strip_prefix('→'))
        .map(squash)
}

struct Tour {
    dir: PathBuf,
    net: Network,
    /// Documented address → actual address.
    addresses: Vec<(&'static str, String)>,
    redis: Option<rmb_testkit::RedisServer>,
    peers: Vec<rmb_peer::Peer>,
    python_ok: Option<bool>,
    ran: Vec<String>,
}

impl Tour {
    fn substitute(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (documented, actual) in &self.addresses {
            text = text.replace(documented, actual);
        }
        text
    }

    fn redis(&mut self) -> String {
        if self.redis.is_none() {
            let redis = rmb_testkit::RedisServer::start().expect("redis-server for the tour");
            self.addresses
                .push(("127.0.0.1:6379", format!("127.0.0.1:{}", redis.port())));
            self.redis = Some(redis);
        }
        self.redis.as_ref().unwrap().url()
    }

    async fn python_available(&mut self) -> bool {
        if self.python_ok.is_none() {
            let ok = Command::new("python3")
                .args(["-c", "import redis"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            self.python_ok = Some(ok);
        }
        self.python_ok == Some(true)
    }

    /// `$(cat FILE)` → the file's content, as the shell would.
    fn expand(&self, word: &str) -> String {
        let mut word = word.to_string();
        while let Some(start) = word.find("$(cat ") {
            let end = word[start..]
                .find(')')
                .map(|e| start + e)
                .expect("closing )");
            let path = self.dir.join(word[start + 6..end].trim());
            let content = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            word.replace_range(start..=end, content.trim());
        }
        word
    }

    async fn run_line(&mut self, at: &str, line: &str) {
        let crates: BTreeSet<String> = ["rmb-core", "rmb-gone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let arch = "| `rmb-core` | x |\n| `rmb-new` | y |\nsee route.rs and nowhere.rs\n";
        let sources = vec!["crates/rmb-relay/src/route.rs".to_string()];
        let arch = architecture_problems(arch, &crates, &sources);
        assert_eq!(arch.len(), 2, "{arch:#?}"); // the crate lists differ; nowhere.rs

        let (words, comment) = shell_words(&self.substitute(line));
        let expect = expectation(&comment);
        let env: Vec<(String, String)> = words
            .iter()
            .take_while(|w| is_assignment(w))
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                (k.to_string(), self.expand(v))
            })
            .collect();
        let args: Vec<String> = words[env.len()..].iter().map(|w| self.expand(w)).collect();
        let joined = args.join(" ");
        self.ran.push(joined.clone());
        let output = match args.first().map(String::as_str) {
            Some("scripts/demo") => None, // the network this tour runs against
            Some("cargo") if joined.starts_with("cargo install --path crates/") => None,
            Some("pip" | "pip3") if joined.ends_with("install redis") => None,
            Some("redis-server") => {
                self.redis();
                None
            }
            Some("rmb") => Some(self.rmb(at, &args[1..]).await),
            Some("rmb-peer") => {
                self.start_peer(at, &args[1..]).await;
                None
            }
            Some("cargo") if joined.starts_with("cargo run -p rmb-sdk --example call -- ") => {
                Some(self.sdk_call(at, &env, &args[7..]).await)
            }
            _ => panic!("{at}: the tour harness does not know how to run `{line}`"),
        };
        if let Some(want) = expect {
            let got = output.unwrap_or_else(|| panic!("{at}: `{line}` has no output to check"));
            assert!(
                squash(&got).contains(&want),
                "{at}: `{line}` printed\n{got}\nwhich does not contain {want:?}"
            );
        }
    }

    async fn rmb(&self, at: &str, args: &[String]) -> String {
        let out = tokio::time::timeout(
            WAIT,
            Command::new(env!("CARGO_BIN_EXE_rmb"))
                .args(args)
                .current_dir(&self.dir)
                .env("RMB_REGISTRAR", &self.net.registrar)
                .env("RMB_RELAY", &self.net.relay)
                .env_remove("RMB_MNEMONIC")
                .env_remove("RMB_MNEMONIC_FILE")
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{at}: rmb {args:?} did not finish"))
        .expect("rmb runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{at}: rmb {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    async fn start_peer(&mut self, at: &str, args: &[String]) {
        let secret = match (
            Self::flag(args, "--mnemonic-file"),
            Self::flag(args, "--mnemonic"),
        ) {
            (Some(file), _) => std::fs::read_to_string(self.dir.join(file))
                .unwrap_or_else(|e| panic!("{at}: {file}: {e}"))
                .trim()
                .to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => panic!("{at}: rmb-peer without a secret"),
        };
        let key_type: KeyType = Self::flag(args, "--key-type")
            .unwrap_or("sr25519")
            .parse()
            .unwrap();
        let relays: Vec<String> = args
            .windows(2)
            .filter(|w| w[0] == "--relay")
            .map(|w| w[1].clone())
            .collect();
        let registrar = Self::flag(args, "--registrar")
            .expect("--registrar")
            .to_string();
        let redis = Self::flag(args, "--redis").expect("--redis").to_string();
        assert!(
            self.redis
                .as_ref()
                .is_some_and(|r| host_port(&r.url()) == host_port(&redis)),
            "{at}: the tour starts rmb-peer on a Redis it did not start"
        );
        let config = rmb_peer::PeerConfig::new(secret, key_type, relays.clone(), redis, registrar);
        let peer = rmb_peer::Peer::start(config)
            .await
            .expect("rmb-peer starts");
        assert!(
            peer.client().wait_connected(relays.len(), WAIT).await,
            "{at}: rmb-peer did not connect to {relays:?}"
        );
        self.peers.push(peer);
    }

    /// What crates/rmb-sdk/examples/call.rs does, with the env and arguments shown.
    async fn sdk_call(&self, at: &str, env: &[(String, String)], args: &[String]) -> String {
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{at}: {name} is not set on the example's line"))
        };
        let twin: u32 = args[0].parse().expect("twin id");
        let key_type: KeyType = env
            .iter()
            .find(|(k, _)| k == "RMB_KEY_TYPE")
            .map_or("sr25519", |(_, v)| v)
            .parse()
            .unwrap();
        let relays = var("RMB_RELAY");
        let client = rmb_sdk::Client::builder(var("RMB_MNEMONIC"), key_type)
            .registrar(var("RMB_REGISTRAR"))
            .relays(relays.split(',').map(str::trim))
            .build()
            .await
            .unwrap_or_else(|e| panic!("{at}: the SDK client: {e}"));
        let body = args.get(2).cloned().unwrap_or_default();
        let reply = client
            .call(twin, &args[1], body.into_bytes(), Duration::from_secs(30))
            .await;
        client.shutdown();
        let reply = reply.unwrap_or_else(|e| panic!("{at}: the SDK call failed: {e}"));
        String::from_utf8_lossy(&reply).into_owned()
    }

    async fn run_python(&mut self, at: &str, code: &str) {
        if !self.python_available().await {
            eprintln!(
                "skipped {at}: python3 with the redis package is not installed (pip install redis)"
            );
            return;
        }
        let code = self.substitute(code);
        let script = self.dir.join("tour.py");
        std::fs::write(&script, &code).unwrap();
        let out = tokio::time::timeout(
            WAIT,
            Command::new("python3")
                .arg(&script)
                .current_dir(&self.dir)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{at}: the Python snippet did not finish"))
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{at}: the Python snippet failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut checked = 0;
        for line in code.lines() {
            if let Some(want) = line.trim().strip_prefix("# →") {
                checked += 1;
                assert!(
                    squash(&stdout).contains(&squash(want)),
                    "{at}: the Python snippet printed {stdout:?}, the doc says {want:?}"
                );
            }
        }
        assert!(
            checked > 0,
            "{at}: the Python snippet says nothing about its output (# → ...)"
        );
        self.ran.push("python3".into());
    }
}

#[tokio::test]
async fn readme_tour_runs_against_a_real_network() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tour: Vec<Block> = parse_blocks("README.md", &readme)
        .into_iter()
        .filter(|b| b.tags.iter().any(|t| t == "tour"))
        .collect();
    assert!(tour.len() >= 3, "the README tour is missing");

    let dir = tempfile::tempdir().unwrap();
    let net = rmb_up(&dir.path().join(".rmb-up"), &dir.path().join("up.log")).await;
    let addresses = vec![
        ("127.0.0.1:8080", host_port(&net.registrar)),
        ("127.0.0.1:8081", host_port(&net.relay)),
    ];
    let mut run = Tour {
        dir: dir.path().to_path_buf(),
        net,
        addresses,
        redis: None,
        peers: Vec::new(),
        python_ok: None,
        ran: Vec::new(),
    };
    for block in &tour {
        match block.lang.as_str() {
            "python" => run.run_python(&block.at(), &block.body).await,
            _ if is_shell(block) => {
                for line in shell_lines(&block.body) {
                    run.run_line(&block.at(), &line).await;
                }
            }
            other => panic!("{}: a tour block in {other}", block.at()),
        }
    }
    for needed in [
        "scripts/demo",
        "rmb call",
        "rmb-peer",
        "cargo run -p rmb-sdk",
    ] {
        assert!(
            run.ran.iter().any(|r| r.starts_with(needed)),
            "the tour never runs {needed}: {:?}",
            run.ran
        );
    }
    for peer in run.peers.drain(..) {
        peer.shutdown().await;
    }
    let mut net = run.net;
    net.child.kill().await.unwrap();
}

// ---------------------------------------------------------------------------------
// The checkers themselves catch mistakes

#[test]
fn the_checkers_catch_broken_docs() {
    let doc = "\
```json peer-request
{\"ver\":1,\"ref\":null,\"command\":\"x\",\"dst\":[1],\"ret\":\"r\"}
```
```json
{not json}
```
```json registrar-acount
{}
```
```toml
a = [
```
```sh
rmb cal --dst 1
rmb call --dest 1 --cmd x
rmb-relay --domain r.example --no-such-flag
```
```rust
fn main() {}
```
```rust excerpt=crates/rmb-sdk/examples/call.rs
let nothing_like_this = 1;
```
";
    let blocks = parse_blocks("broken.md", doc);
    let json = json_and_toml_problems(&blocks);
    assert_eq!(json.len(), 4, "{json:#?}");
    assert!(
        json[0].contains("cmd") || json[0].contains("command"),
        "{}",
        json[0]
    );
    let shell = shell_problems(&blocks, &mut RmbHelp(HashMap::new()));
    assert_eq!(shell.len(), 3, "{shell:#?}");
    assert!(shell[1].contains("--dest"), "{}", shell[1]);
    let rust: Vec<_> = blocks
        .iter()
        .filter(|b| b.lang == "rust")
        .filter_map(excerpt_problem)
        .collect();
    assert_eq!(rust.len(), 2, "{rust:#?}");

    let known: BTreeSet<String> = ["--listen", "--db"].iter().map(|s| s.to_string()).collect();
    let table = "| `--listen ADDR` | x |\n| `--dbs X` | y |\n";
    let flags = flag_table_problems("t.md", table, &known);
    assert_eq!(flags.len(), 2, "{flags:#?}"); // --dbs is unknown, --db undocumented

    let expected: Value =
        serde_json::json!({"error": "X-Auth timestamp … is not newer", "created_at": 1});
    let actual: Value =
        serde_json::json!({"error": "X-Auth timestamp 5 is not newer", "created_at": 99});
    assert!(json_matches(&expected, &actual, ""));
    let other: Value =
        serde_json::json!({"error": "X-Auth timestamp 5 is newer", "created_at": 99});
    assert!(!json_matches(&expected, &other, ""));

    let (words, comment) =
        shell_words(r#"A=1 rmb call --data '{"hi":1}' "two words" # → {"hi":1}"#);
    assert_eq!(
        words,
        ["A=1", "rmb", "call", "--data", r#"{"hi":1}"#, "two words"]
    );
    assert_eq!(expectation(&comment).as_deref(), Some(r#"{"hi":1}"#));
}
