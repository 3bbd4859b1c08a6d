//! Process plumbing the RMB binaries share: TOML config files layered under clap's
//! flags and environment, and the shutdown signal.
//!
//! A binary that parses its arguments with [`parse`] accepts `--config FILE` (and the
//! environment variable its `config` argument names). The file's keys are the binary's
//! long flag names in snake_case (`--max-envelope-size` becomes `max_envelope_size`);
//! its values become those flags' defaults. So the precedence is, highest first:
//! command line, environment variable, config file, built-in default.
//!
//! Values: a string or number for a flag that takes one value, an array for a flag that
//! may be repeated or takes several values, `true`/`false` for a switch. Unknown keys
//! and values the flag would refuse are errors naming the key and the file, so a typo
//! never silently falls back to a default.

pub mod deploy_files;
mod signal;

pub use signal::shutdown_signal;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, Parser};

/// Why the arguments could not be assembled from the command line, environment and
/// config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A key that names no flag of this binary.
    #[error("config file {}: unknown key `{key}` (known keys: {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    /// A value of the wrong TOML type, or one the flag itself refuses.
    #[error("config file {}: key `{key}`: {message}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// Two keys whose flags exclude each other.
    #[error("config file {}: `{key}` and `{other}` cannot both be set", path.display())]
    Conflict {
        path: PathBuf,
        key: String,
        other: String,
    },
    /// A required value given nowhere.
    #[error("missing {flag}: give it on the command line{env}, or as `{key}` in a config file (--config FILE)")]
    Missing {
        flag: String,
        /// ", as VAR in the environment" when the flag has a variable, else empty.
        env: String,
        key: String,
    },
}

/// Either clap's own outcome (a bad flag, or `--help`/`--version`, which clap prints and
/// exits on) or a config problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where a value came from, lowest precedence first, so sources compare with `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// Not given anywhere and no default.
    Absent,
    /// The flag's built-in default.
    Default,
    /// The config file.
    ConfigFile,
    /// The flag's environment variable.
    Environment,
    /// The command line.
    CommandLine,
}

/// Parsed arguments plus where each came from.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The arguments, as clap's derive would have produced them.
    pub args: T,
    matches: ArgMatches,
    config: Option<PathBuf>,
    from_file: HashSet<String>,
}

impl<T> Loaded<T> {
    /// Where the argument with this id (the field name) came from.
    pub fn source(&self, id: &str) -> Source {
        match self.matches.value_source(id) {
            None => Source::Absent,
            Some(ValueSource::CommandLine) => Source::CommandLine,
            Some(ValueSource::EnvVariable) => Source::Environment,
            Some(_) if self.from_file.contains(id) => Source::ConfigFile,
            Some(_) => Source::Default,
        }
    }

    /// Whether the config file sets the argument with this id, even if a flag or
    /// variable overrides it.
    pub fn in_config_file(&self, id: &str) -> bool {
        self.from_file.contains(id)
    }

    /// The config file that was read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// [`try_parse_from`] on the process's arguments. Clap's errors, `--help` and
/// `--version` are printed and exit as with [`Parser::parse`]; config problems are
/// returned so the binary reports them its own way.
pub fn parse<T: Parser>() -> Result<Loaded<T>, ConfigError> {
    match try_parse_from(std::env::args_os()) {
        Ok(loaded) => Ok(loaded),
        Err(Error::Clap(e)) => e.exit(),
        Err(Error::Config(e)) => Err(e),
    }
}

/// Parses `argv` (program name first) as `T`, with a config file from `--config FILE`
/// or the environment variable of `T`'s `config` argument supplying defaults.
pub fn try_parse_from<T, I, A>(argv: I) -> Result<Loaded<T>, Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = T::command();
    // Introspect a built copy (num_args, actions and value parsers are only final after
    // build), and change the unbuilt one that does the parsing.
    let mut probe = cmd.clone();
    probe.build();

    let config_env = probe
        .get_arguments()
        .find(|a| a.get_id() == "config")
        .and_then(|a| a.get_env())
        .map(|v| v.to_os_string());
    let config = config_path(&argv, config_env.and_then(std::env::var_os));

    let mut from_file = HashSet::new();
    if let Some(path) = &config {
        for (key, value) in read_table(path)? {
            let arg = configurable(&probe)
                .find(|a| key_of(a) == key)
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.clone(),
                    key: key.clone(),
                    known: configurable(&probe)
                        .map(key_of)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let values =
                file_values(&probe, arg, &value).map_err(|message| ConfigError::BadValue {
                    path: path.clone(),
                    key: key.clone(),
                    message,
                })?;
            cmd = cmd.mut_arg(arg.get_id(), |a| a.default_values(values));
            from_file.insert(arg.get_id().to_string());
        }
        check_conflicts(&probe, &from_file, path)?;
    }

    // Required values may now come from the file, so clap must not insist on them; they
    // are checked below with a message that names all three places to give them.
    let required: Vec<&Arg> = probe
        .get_arguments()
        .filter(|a| a.is_required_set())
        .collect();
    for arg in &required {
        cmd = cmd.mut_arg(arg.get_id(), |a| a.required(false));
    }
    let matches = cmd.try_get_matches_from_mut(argv)?;
    if let Some(arg) = required
        .iter()
        .find(|a| matches.value_source(a.get_id().as_str()).is_none())
    {
        return Err(missing(arg).into());
    }
    let args = T::from_arg_matches(&matches)?;
    Ok(Loaded {
        args,
        matches,
        config,
        from_file,
    })
}

/// `--config FILE` or `--config=FILE` before any `--`, else the environment's value.
fn config_path(argv: &[OsString], from_env: Option<OsString>) -> Option<PathBuf> {
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else { continue };
        if word == "--" {
            break;
        }
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    from_env.filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
}

/// Arguments a config file may set: every long flag except the meta ones.
fn configurable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some() && !matches!(a.get_id().as_str(), "config" | "help" | "version")
    })
}

/// The config key of a flag: its long name in snake_case.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

/// The TOML value as the strings clap would have read on the command line, checked with
/// the flag's own value parser so a bad value is reported against the file.
fn file_values(cmd: &Command, arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value;
    if matches!(arg.get_action(), clap::ArgAction::Count) {
        // A counted flag (`-d`, `-dd`): a count, or a switch meaning once or not at all.
        return match value {
            Value::Boolean(b) => Ok(vec![u8::from(*b).to_string()]),
            Value::Integer(n) if (0..=i64::from(u8::MAX)).contains(n) => Ok(vec![n.to_string()]),
            _ => Err("expected true, false or a count from 0 to 255".into()),
        };
    }
    if !arg.get_action().takes_values() {
        return match value {
            Value::Boolean(b) => Ok(vec![b.to_string()]),
            _ => Err("expected true or false".into()),
        };
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        _ => Err(format!(
            "expected a string or a number, found {}",
            v.type_str()
        )),
    };
    let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
    let values = match value {
        Value::Array(items) => {
            if !repeatable && arg.get_num_args().is_some_and(|r| r.max_values() <= 1) {
                return Err("expected a single value, found an array".into());
            }
            items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
        }
        other => vec![scalar(other)?],
    };
    if values.is_empty() {
        return Err("expected at least one value, found an empty array".into());
    }
    // Let the flag itself judge the values, as if they were typed on the command line,
    // so the file accepts exactly what the flag does (types, counts, ranges).
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    let per_flag = arg.get_num_args().map_or(1, |r| r.max_values());
    let words: Vec<&str> = if per_flag <= 1 {
        values.iter().flat_map(|v| [flag.as_str(), v]).collect()
    } else {
        std::iter::once(flag.as_str())
            .chain(values.iter().map(String::as_str))
            .collect()
    };
    Command::new(cmd.get_name().to_string())
        .no_binary_name(true)
        .arg(bare(arg))
        .try_get_matches_from(words)
        .map_err(|e| clap_message(&e))?;
    Ok(values)
}

/// The flag with its value rules but without its ties to other flags (conflicts,
/// requirements), which would not resolve in a command of its own.
fn bare(arg: &Arg) -> Arg {
    let mut bare = Arg::new(arg.get_id().clone())
        .long(arg.get_long().unwrap_or_default().to_string())
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone())
        .value_delimiter(arg.get_value_delimiter());
    if let Some(range) = arg.get_num_args() {
        bare = bare.num_args(range);
    }
    if let Some(names) = arg.get_value_names() {
        bare = bare.value_names(names.iter().cloned());
    }
    bare
}

/// Clap's one-line reason, without its "error: " prefix and help hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn check_conflicts(
    cmd: &Command,
    from_file: &HashSet<String>,
    path: &Path,
) -> Result<(), ConfigError> {
    for arg in cmd.get_arguments() {
        if !from_file.contains(arg.get_id().as_str()) {
            continue;
        }
        if let Some(other) = cmd
            .get_arg_conflicts_with(arg)
            .into_iter()
            .find(|o| from_file.contains(o.get_id().as_str()))
        {
            return Err(ConfigError::Conflict {
                path: path.to_path_buf(),
                key: key_of(arg),
                other: key_of(other),
            });
        }
    }
    Ok(())
}

fn missing(arg: &Arg) -> ConfigError {
    ConfigError::Missing {
        flag: format!("--{}", arg.get_long().unwrap_or_default()),
        env: arg
            .get_env()
            .map(|v| format!(", as {} in the environment", v.to_string_lossy()))
            .unwrap_or_default(),
        key: key_of(arg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Flags of each kind the binaries use.
    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long = "domain", value_delimiter = ',', required = true)]
        domains: Vec<String>,
        #[arg(long, default_value = "0.0.0.0:8081")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 60)]
        limit_window: u64,
        #[arg(long, num_args = 2, value_delimiter = ' ')]
        limit: Option<Vec<u64>>,
        #[arg(long)]
        registrar: String,
        #[arg(long)]
        federation_http: bool,
        #[arg(long, conflicts_with = "mnemonic_file")]
        mnemonic: Option<String>,
        #[arg(long)]
        mnemonic_file: Option<PathBuf>,
        #[arg(short, long, action = clap::ArgAction::Count)]
        debug: u8,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(file: &tempfile::NamedTempFile, flags: &[&str]) -> Result<Loaded<Args>, Error> {
        let path = file.path().to_str().unwrap();
        let argv = ["prog", "--config", path]
            .into_iter()
            .chain(flags.iter().copied());
        try_parse_from(argv)
    }

    fn config_error(result: Result<Loaded<Args>, Error>) -> ConfigError {
        match result {
            Err(Error::Config(e)) => e,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_value_is_read_from_the_file() {
        let f = file(
            r#"
            domain = ["a.example", "b.example"]
            listen = "127.0.0.1:9000"
            limit_window = 5
            limit = [100, 2048]
            registrar = "http://reg"
            federation_http = true
            "#,
        );
        let loaded = load(&f, &[]).unwrap();
        let a = &loaded.args;
        assert_eq!(a.domains, ["a.example", "b.example"]);
        assert_eq!(a.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(a.limit_window, 5);
        assert_eq!(a.limit, Some(vec![100, 2048]));
        assert_eq!(a.registrar, "http://reg");
        assert!(a.federation_http);
        assert_eq!(loaded.source("listen"), Source::ConfigFile);
        assert_eq!(loaded.source("mnemonic"), Source::Absent);
        assert!(loaded.in_config_file("listen") && !loaded.in_config_file("mnemonic"));
        assert_eq!(loaded.config_file(), Some(f.path()));
    }

    #[test]
    fn a_counted_flag_takes_a_count_or_a_switch_from_the_file() {
        let base = "domain = \"a\"\nregistrar = \"r\"\n";
        for (value, count) in [("true", 1), ("false", 0), ("2", 2)] {
            let f = file(&format!("{base}debug = {value}\n"));
            assert_eq!(load(&f, &[]).unwrap().args.debug, count, "debug = {value}");
        }
        let f = file(&format!("{base}debug = 1\n"));
        assert_eq!(load(&f, &["-ddd"]).unwrap().args.debug, 3, "flags win");
        for bad in ["\"yes\"", "-1", "256"] {
            let f = file(&format!("{base}debug = {bad}\n"));
            assert!(
                matches!(config_error(load(&f, &[])), ConfigError::BadValue { ref key, .. } if key == "debug"),
                "debug = {bad}"
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let f = file("domain = \"file.example\"\nregistrar = \"http://file\"\nlimit_window = 7\n");
        let loaded = load(&f, &["--domain", "flag.example", "--registrar=http://flag"]).unwrap();
        assert_eq!(loaded.args.domains, ["flag.example"]);
        assert_eq!(loaded.args.registrar, "http://flag");
        assert_eq!(loaded.source("registrar"), Source::CommandLine);
        assert_eq!(loaded.args.limit_window, 7);
        assert_eq!(loaded.args.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(loaded.source("listen"), Source::Default);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let f = file("domain = \"a\"\nregistrar = \"r\"\nlisten_addr = \"x\"\n");
        let e = config_error(load(&f, &[]));
        let text = e.to_string();
        assert!(matches!(e, ConfigError::UnknownKey { ref key, .. } if key == "listen_addr"));
        assert!(text.contains("`listen_addr`"), "{text}");
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(
            text.contains("limit_window"),
            "lists the known keys: {text}"
        );
    }

    #[test]
    fn kebab_case_keys_are_unknown() {
        let f = file("limit-window = 3\n");
        let e = config_error(load(&f, &["--domain", "a", "--registrar", "r"]));
        assert!(matches!(e, ConfigError::UnknownKey { ref key, .. } if key == "limit-window"));
    }

    #[test]
    fn missing_required_value_says_where_to_give_it() {
        let f = file("domain = \"a\"\n");
        let e = config_error(load(&f, &[]));
        assert_eq!(
            e.to_string(),
            "missing --registrar: give it on the command line, or as `registrar` in a config file (--config FILE)"
        );
    }

    #[test]
    fn bad_values_are_reported_against_the_file() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("limit_window = \"soon\"", "limit_window"),
            ("limit = [1]", "limit"),
            ("federation_http = \"yes\"", "federation_http"),
            ("registrar = [\"a\", \"b\"]", "registrar"),
            ("domain = []", "domain"),
        ];
        for (text, expected) in cases {
            let f = file(text);
            match config_error(load(&f, &["--domain", "d", "--registrar", "r"])) {
                ConfigError::BadValue { key, message, .. } => {
                    assert_eq!(key, expected, "{text}: {message}")
                }
                other => panic!("{text}: {other}"),
            }
        }
    }

    #[test]
    fn conflicting_keys_in_the_file_are_refused() {
        let f = file("mnemonic = \"x\"\nmnemonic_file = \"/k\"\n");
        let e = config_error(load(&f, &["--domain", "d", "--registrar", "r"]));
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
    }

    #[test]
    fn syntax_and_read_errors_name_the_file() {
        let f = file("domain = \n");
        assert!(matches!(
            config_error(load(&f, &[])),
            ConfigError::Syntax { .. }
        ));
        let argv = ["prog", "--config", "/nonexistent/rmb.toml"];
        let e = try_parse_from::<Args, _, _>(argv).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/rmb.toml"), "{e}");
    }

    /// Its own variables, so tests running in parallel never see them.
    #[derive(Parser, Debug)]
    struct EnvArgs {
        #[arg(long, env = "RMB_CONFIG_TEST_ENV_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "RMB_CONFIG_TEST_ENV_WINDOW", default_value_t = 60)]
        limit_window: u64,
        #[arg(long)]
        registrar: String,
    }

    #[test]
    fn environment_beats_the_file_and_names_the_config() {
        let f = file("registrar = \"r\"\nlimit_window = 5\n");
        std::env::set_var("RMB_CONFIG_TEST_ENV_WINDOW", "11");
        std::env::set_var("RMB_CONFIG_TEST_ENV_CONFIG", f.path());
        let loaded = try_parse_from::<EnvArgs, _, _>(["prog"]).unwrap();
        std::env::remove_var("RMB_CONFIG_TEST_ENV_WINDOW");
        std::env::remove_var("RMB_CONFIG_TEST_ENV_CONFIG");
        assert_eq!(loaded.args.registrar, "r");
        assert_eq!(loaded.source("registrar"), Source::ConfigFile);
        assert_eq!(loaded.args.limit_window, 11);
        assert_eq!(loaded.source("limit_window"), Source::Environment);
    }

    #[test]
    fn without_a_config_file_it_behaves_like_clap() {
        let loaded =
            try_parse_from::<Args, _, _>(["prog", "--domain", "a,b", "--registrar", "r"]).unwrap();
        assert_eq!(loaded.args.domains, ["a", "b"]);
        assert_eq!(loaded.config_file(), None);
        let e = try_parse_from::<Args, _, _>(["prog", "--registrar", "r"]).unwrap_err();
        assert!(e.to_string().contains("missing --domain"), "{e}");
    }
}
