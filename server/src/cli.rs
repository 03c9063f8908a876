//! The command line of `checkpointd`: subcommands, the optional settings file and
//! `--print-config`. Each setting comes from, in order of precedence, a flag, its `CKPT_`
//! environment variable, the settings file, or the built-in default.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::admin::KeysCommand;
use crate::config::{Config, redact_url_password};

/// checkpointd: a networked checkpoint service for AI-agent sessions.
#[derive(Debug, Parser)]
#[command(name = "checkpointd", version, about)]
pub struct Cli {
    /// A TOML file of settings keyed by flag name, e.g. `db-max-connections = 32`. Flags and
    /// CKPT_ variables override what it says.
    #[arg(
        long = "config",
        env = "CKPT_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config_file: Option<PathBuf>,

    /// Print the effective configuration, and where each value came from, then exit.
    #[arg(long, global = true)]
    pub print_config: bool,

    #[command(flatten)]
    pub settings: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve gRPC until SIGTERM or SIGINT (what runs when no subcommand is given).
    Serve,
    /// Apply pending catalog migrations, then exit. Instances also migrate when they start;
    /// this runs it once, ahead of a rollout.
    Migrate,
    /// Create, list or revoke API keys, in the catalog --database names.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Settings the file may not set: they choose the file or what to do, not how to serve.
const NOT_SETTINGS: [&str; 4] = ["config_file", "print_config", "help", "version"];

/// Settings whose values are URLs that may hold a password.
const URL_SETTINGS: [&str; 2] = ["database", "store"];

/// Errors in the settings file; clap's own errors print their usage and exit instead.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("the settings file {path} sets `{key}`, which is not a setting (see --help)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("the settings file {path} sets `{key}` badly: {reason}")]
    FileValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("the settings file {path} sets `{key}` to a {kind}; use a string, number or boolean")]
    BadValue {
        path: PathBuf,
        key: String,
        kind: &'static str,
    },
}

/// The parsed command line, with where each setting came from.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    matches: ArgMatches,
    from_file: BTreeSet<String>,
}

impl Loaded {
    /// Parses the process's arguments; on a usage error prints it and exits like clap does.
    pub fn from_env() -> Result<Self, CliError> {
        Self::from_args(std::env::args_os())
    }

    /// Parses `args` (the first is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::try_from_args(args).map_err(|err| match err {
            Failure::Usage(err) => err.exit(),
            Failure::File(err) => err,
        })
    }

    fn try_from_args<I, T>(args: I) -> Result<Self, Failure>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();

        // A first pass only finds the file, which then supplies defaults for the second.
        let first = base_command()
            .try_get_matches_from(&args)
            .and_then(|matches| Cli::from_arg_matches(&matches))
            .map_err(Failure::Usage)?;
        let mut command = base_command();
        let mut from_file = BTreeSet::new();
        if let Some(path) = &first.config_file {
            for (id, value) in read_settings_file(&command, path)? {
                command = command.mut_arg(&id, |arg| arg.default_value(value));
                from_file.insert(id);
            }
        }

        // The first pass succeeded without the file, so a value that fails now came from it.
        let blame_file = |err: clap::Error| match (&first.config_file, invalid_setting(&err)) {
            (Some(path), Some(key)) if from_file.contains(&key.replace('-', "_")) => {
                Failure::File(CliError::FileValue {
                    path: path.clone(),
                    key,
                    reason: first_line(&err),
                })
            }
            _ => Failure::Usage(err),
        };
        let matches = command.try_get_matches_from(&args).map_err(blame_file)?;
        let cli = Cli::from_arg_matches(&matches).map_err(Failure::Usage)?;
        Ok(Self {
            cli,
            matches,
            from_file,
        })
    }

    /// The effective configuration as TOML that a settings file accepts, one setting per line
    /// with its source as a comment; passwords in URLs are replaced by `***`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for arg in settings() {
            let id = arg.get_id().as_str();
            let key = arg.get_long().unwrap_or(id);
            if let Some(value) = self.value(id) {
                let _ = writeln!(out, "{key} = {value}  # {}", self.source(id, arg.get_env()));
            } else if let Some(value) = self.derived(id) {
                let _ = writeln!(out, "{key} = {value}  # default, under data-dir");
            } else {
                let _ = writeln!(out, "# {key} is unset");
            }
        }
        out
    }

    /// The effective configuration on one line, `key=value` separated by spaces, for the
    /// start-up log; unset settings are left out and passwords in URLs replaced by `***`.
    pub fn summary(&self) -> String {
        let mut pairs = Vec::new();
        for arg in settings() {
            let id = arg.get_id().as_str();
            if let Some(value) = self.value(id) {
                pairs.push(format!("{}={value}", arg.get_long().unwrap_or(id)));
            }
        }
        pairs.join(" ")
    }

    /// The value in effect of a setting whose default depends on another.
    fn derived(&self, id: &str) -> Option<String> {
        let settings = &self.cli.settings;
        let value = match id {
            "database" => settings.database(),
            "store" => settings.store(),
            _ => return None,
        };
        Some(toml::Value::String(redact_url_password(&value)).to_string())
    }

    /// One setting's value as a TOML literal, redacted where needed.
    fn value(&self, id: &str) -> Option<String> {
        let raw: Vec<String> = self
            .matches
            .get_raw(id)?
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let mut text = raw.join(",");
        if URL_SETTINGS.contains(&id) {
            text = redact_url_password(&text);
        }
        let bare = text.parse::<i64>().is_ok() || text == "true" || text == "false";
        Some(if bare {
            text
        } else {
            toml::Value::String(text).to_string()
        })
    }

    fn source(&self, id: &str, env: Option<&std::ffi::OsStr>) -> String {
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => {
                format!(
                    "env {}",
                    env.map(|e| e.to_string_lossy()).unwrap_or_default()
                )
            }
            Some(ValueSource::DefaultValue) if self.from_file.contains(id) => {
                "settings file".to_owned()
            }
            _ => "default".to_owned(),
        }
    }
}

/// The flag name (`zstd-level`) of the setting a clap error is about, if any.
fn invalid_setting(err: &clap::Error) -> Option<String> {
    let clap::error::ContextValue::String(arg) = err.get(clap::error::ContextKind::InvalidArg)?
    else {
        return None;
    };
    let long = arg.strip_prefix("--")?;
    Some(long.split([' ', '=']).next()?.to_owned())
}

/// A clap error's message without its `error: ` prefix and usage hints.
fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Every setting's argument, in `Config`'s order.
fn settings() -> Vec<clap::Arg> {
    Config::augment_args(clap::Command::new("settings"))
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .cloned()
        .collect()
}

/// The command line with every setting accepted before or after the subcommand.
fn base_command() -> clap::Command {
    let mut command = Cli::command();
    for arg in settings() {
        command = command.mut_arg(arg.get_id().clone(), |arg| arg.global(true));
    }
    command
}

enum Failure {
    Usage(clap::Error),
    File(CliError),
}

impl From<CliError> for Failure {
    fn from(err: CliError) -> Self {
        Failure::File(err)
    }
}

/// The file's settings as (argument id, value text) pairs, each checked to name a setting.
fn read_settings_file(
    command: &clap::Command,
    path: &Path,
) -> Result<Vec<(String, String)>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| CliError::Toml {
        path: path.to_owned(),
        source: Box::new(source),
    })?;

    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in table {
        let known = command.get_arguments().find(|arg| {
            arg.get_long() == Some(key.as_str()) && !NOT_SETTINGS.contains(&arg.get_id().as_str())
        });
        let Some(arg) = known else {
            return Err(CliError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(CliError::BadValue {
                    path: path.to_owned(),
                    key,
                    kind: other.type_str(),
                });
            }
        };
        settings.push((arg.get_id().to_string(), text));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn settings_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn load(args: &[&str]) -> Result<Loaded, CliError> {
        let mut all = vec!["checkpointd"];
        all.extend_from_slice(args);
        Loaded::try_from_args(all).map_err(|err| match err {
            Failure::Usage(err) => panic!("usage error: {err}"),
            Failure::File(err) => err,
        })
    }

    #[test]
    fn the_file_sets_what_flags_leave_alone_and_flags_win() {
        let file =
            settings_file("db-max-connections = 40\nzstd-level = 9\nlisten = \"0.0.0.0:9000\"\n");
        let path = file.path().to_str().unwrap();
        let loaded = load(&["--config", path, "--zstd-level", "5"]).unwrap();
        let settings = &loaded.cli.settings;
        assert_eq!(settings.db_max_connections, 40);
        assert_eq!(settings.zstd_level, 5);
        assert_eq!(settings.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(settings.shutdown_grace, std::time::Duration::from_secs(30));

        let described = loaded.describe();
        assert!(
            described.contains("db-max-connections = 40  # settings file"),
            "{described}"
        );
        assert!(described.contains("zstd-level = 5  # flag"), "{described}");
        assert!(
            described.contains("shutdown-grace = \"30s\"  # default"),
            "{described}"
        );
        assert!(
            described.contains(
                "database = \"./checkpointd-data/catalog.db\"  # default, under data-dir"
            ),
            "{described}"
        );
        let summary = loaded.summary();
        assert!(summary.contains(" db-max-connections=40 "), "{summary}");
        assert!(!summary.contains("database="), "{summary}");
    }

    #[test]
    fn the_file_may_follow_a_subcommand() {
        let file = settings_file("zstd-level = 7\n");
        let loaded = load(&["migrate", "--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(loaded.cli.command, Some(Command::Migrate));
        assert_eq!(loaded.cli.settings.zstd_level, 7);
    }

    #[test]
    fn unknown_keys_and_tables_are_refused_by_name() {
        let file = settings_file("zstd-levle = 3\n");
        let err = load(&["--config", file.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&err, CliError::UnknownKey { key, .. } if key == "zstd-levle"));
        assert!(err.to_string().contains("`zstd-levle`"), "{err}");

        let file = settings_file("print-config = true\n");
        let err = load(&["--config", file.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&err, CliError::UnknownKey { key, .. } if key == "print-config"));

        let file = settings_file("[listen]\nport = 1\n");
        let err = load(&["--config", file.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, CliError::BadValue { kind: "table", .. }));
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file_and_the_setting() {
        let file = settings_file("zstd-level = 99\n");
        let path = file.path().to_str().unwrap();
        let err = load(&["--config", path]).unwrap_err();
        assert!(
            matches!(&err, CliError::FileValue { key, .. } if key == "zstd-level"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(path), "{message}");
        assert!(message.contains("99 is not in 1..=19"), "{message}");

        // The same value on the command line stays a usage error.
        let args = ["checkpointd", "--zstd-level", "99"];
        assert!(matches!(
            Loaded::try_from_args(args),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn described_urls_hide_their_password() {
        let loaded = load(&["--database", "postgres://ckpt:hunter2@db:5432/ckpt"]).unwrap();
        let described = loaded.describe();
        assert!(!described.contains("hunter2"), "{described}");
        assert!(described.contains("database = \"postgres://ckpt:***@db:5432/ckpt\"  # flag"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(&["--config", "/nonexistent/checkpointd.toml"]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/checkpointd.toml"),
            "{err}"
        );
    }
}
