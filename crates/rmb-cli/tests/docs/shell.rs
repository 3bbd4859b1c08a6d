//! Shell lines.

use super::*;

/// Splits one shell line into words, honouring quotes and backslashes, and returns the
/// words and the trailing comment (without `#`).
pub(crate) fn shell_words(line: &str) -> (Vec<String>, Option<String>) {
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
pub(crate) fn shell_lines(body: &str) -> Vec<String> {
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
pub(crate) fn commands(words: &[String]) -> Vec<Vec<String>> {
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

pub(crate) fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

pub(crate) fn is_shell(block: &Block) -> bool {
    matches!(block.lang.as_str(), "sh" | "shell" | "bash" | "console")
}

/// The flags a `--help` text lists.
pub(crate) fn flags_in_help(help: &str) -> BTreeSet<String> {
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
pub(crate) fn subcommands_in_help(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `rmb … --help`, cached.
pub(crate) struct RmbHelp(pub(crate) HashMap<Vec<String>, String>);

impl RmbHelp {
    pub(crate) fn get(&mut self, path: &[String]) -> &str {
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
pub(crate) fn check_rmb_command(help: &mut RmbHelp, args: &[String]) -> Result<(), String> {
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
pub(crate) fn declared_flags(crate_dir: &str) -> BTreeSet<String> {
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
pub(crate) fn split_attr(attr: &str) -> Vec<String> {
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
pub(crate) const BINARIES: [(&str, &str, &str); 3] = [
    ("rmb-peer", "crates/rmb-peer", "docs/rmb-peer.md"),
    ("rmb-relay", "crates/rmb-relay", "docs/relay.md"),
    ("rmb-registrar", "crates/rmb-registrar", "docs/registrar.md"),
];

pub(crate) fn check_flags_exist(
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

pub(crate) fn shell_problems(blocks: &[Block], help: &mut RmbHelp) -> Vec<String> {
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
pub(crate) fn shell_commands_use_real_subcommands_and_flags() {
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
pub(crate) fn table_flags(text: &str) -> Vec<(usize, String)> {
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

pub(crate) fn flag_table_problems(page: &str, text: &str, known: &BTreeSet<String>) -> Vec<String> {
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
pub(crate) fn flag_tables_match_the_binaries() {
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
