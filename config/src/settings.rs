//! Layered settings: built-in defaults → TOML file → environment → command-line flags.
//!
//! A binary defines one settings struct (`Serialize + DeserializeOwned + Default`, with
//! `#[serde(deny_unknown_fields)]` on it and on every nested section, and snake_case field
//! names) and calls [`load`]. Each layer overrides the one before it:
//!
//! 1. `S::default()`, serialized, so every key has a value;
//! 2. the TOML file given with `--config PATH`, if any (it must exist);
//! 3. environment variables under a prefix: `E2EE_LISTEN=...`, nested sections joined with
//!    `__` (`E2EE_LIMITS__MAX_CONNECTIONS=10`);
//! 4. overrides the binary builds from its flags, as dotted keys (`limits.max_connections`).
//!
//! A key that names no field, in any layer, is an error ([`SettingsError::UnknownKey`]),
//! and every error says which key and which layer it came from.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, FileFormat, Format, Map, Source, Value, ValueKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The prefix shared by the e2ee-chat binaries' environment variables. Each binary
/// reads settings under its own: [`RELAY_ENV_PREFIX`], [`AGENT_ENV_PREFIX`].
pub const ENV_PREFIX: &str = "E2EE";
/// The relay's settings prefix (`E2EE_RELAY_LISTEN`, `E2EE_RELAY_LIMITS__...`).
pub const RELAY_ENV_PREFIX: &str = "E2EE_RELAY";
/// The agent's settings prefix (`E2EE_AGENT_NAME`, `E2EE_AGENT_RECONNECT__...`).
pub const AGENT_ENV_PREFIX: &str = "E2EE_AGENT";
/// Every binary's own prefix, so that one binary does not read another's settings.
const BINARY_PREFIXES: [&str; 2] = [RELAY_ENV_PREFIX, AGENT_ENV_PREFIX];

/// Joins the prefix to the first key segment in a variable name: `E2EE` `_` `LISTEN`.
const ENV_PREFIX_SEPARATOR: &str = "_";

/// Joins nesting levels in a variable name: `LIMITS` `__` `MAX_CONNECTIONS`.
const ENV_SEPARATOR: &str = "__";

/// The origin the `config` crate records on values read from the environment.
const ENV_ORIGIN: &str = "the environment";

/// One command-line override, set at a dotted key after every other layer.
///
/// Build it with `From`: `("limits.max_connections", 10u32.into())`. A string is
/// converted to the field's type when the settings are deserialized, so
/// `OverrideValue::from("10")` also sets a number.
#[derive(Clone, Debug, PartialEq)]
pub enum OverrideValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string (also for paths and socket addresses).
    Str(String),
}

impl OverrideValue {
    fn into_kind(self) -> ValueKind {
        match self {
            Self::Bool(v) => ValueKind::Boolean(v),
            Self::Int(v) => ValueKind::I64(v),
            Self::UInt(v) => ValueKind::U64(v),
            Self::Float(v) => ValueKind::Float(v),
            Self::Str(v) => ValueKind::String(v),
        }
    }
}

impl From<bool> for OverrideValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<i32> for OverrideValue {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}

impl From<i64> for OverrideValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u16> for OverrideValue {
    fn from(v: u16) -> Self {
        Self::UInt(v.into())
    }
}

impl From<u32> for OverrideValue {
    fn from(v: u32) -> Self {
        Self::UInt(v.into())
    }
}

impl From<u64> for OverrideValue {
    fn from(v: u64) -> Self {
        Self::UInt(v)
    }
}

impl From<usize> for OverrideValue {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every target Rust supports.
        Self::UInt(v as u64)
    }
}

impl From<f64> for OverrideValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<String> for OverrideValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl From<&str> for OverrideValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}

/// The layer a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The settings type's `Default`.
    Defaults,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// A command-line flag (an override passed to [`load`]).
    Flag,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Defaults => f.write_str("built-in defaults"),
            Self::File(path) => write!(f, "config file `{}`", path.display()),
            Self::Env(var) => write!(f, "environment variable `{var}`"),
            Self::Flag => f.write_str("a command-line flag"),
        }
    }
}

/// Why settings could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file given explicitly does not exist.
    #[error("config file `{}` does not exist", path.display())]
    FileNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The config file exists but could not be read (permissions, not UTF-8, a directory).
    #[error("cannot read config file `{}`", path.display())]
    FileRead {
        /// The path as given.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file `{}` is not valid TOML: {reason}", path.display())]
    FileParse {
        /// The path as given.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// An environment variable under the prefix holds bytes that are not UTF-8.
    #[error("environment variable `{var}` is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable's name.
        var: String,
    },
    /// A variable under the shared `E2EE_` prefix names one of this binary's settings,
    /// as the releases before the per-binary prefixes did: it is refused (it would be
    /// ignored otherwise), naming the variable to use instead.
    #[error("environment variable `{var}` uses the old prefix `E2EE_`: this setting is now `{instead}`")]
    OldEnvPrefix {
        /// The variable as set.
        var: String,
        /// The name under this binary's prefix.
        instead: String,
    },
    /// A command-line override key is not a valid dotted key.
    #[error("invalid setting key `{key}` in a command-line override: {reason}")]
    BadOverrideKey {
        /// The key as given.
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A key names no setting.
    #[error("unknown setting `{key}`{}; {expected}", from_layer(layer))]
    UnknownKey {
        /// The dotted key (`limits.max_conections`).
        key: String,
        /// Where it was set, when that can be told.
        layer: Option<Layer>,
        /// The fields that would have been accepted at that level, as serde words it.
        expected: String,
    },
    /// A value does not fit its setting's type or range.
    #[error("invalid value for setting `{key}`{}: {reason}", from_layer(layer))]
    BadValue {
        /// The dotted key.
        key: String,
        /// Where the value was set, when that can be told.
        layer: Option<Layer>,
        /// What was wrong with it.
        reason: String,
    },
    /// The merged settings are invalid in a way that names no key.
    #[error("invalid settings: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
    },
    /// The settings type's `Default` could not be serialized as the first layer
    /// (a bug in the settings type, e.g. a map with non-string keys).
    #[error("built-in default settings cannot be serialized: {reason}")]
    Defaults {
        /// The serializer's message.
        reason: String,
    },
    /// The settings could not be rendered as TOML.
    #[error("settings cannot be rendered as TOML")]
    ToToml {
        /// The TOML serializer's error.
        #[source]
        source: toml::ser::Error,
    },
}

fn from_layer(layer: &Option<Layer>) -> String {
    layer
        .as_ref()
        .map(|layer| format!(" (from {layer})"))
        .unwrap_or_default()
}

/// Loads settings from defaults, `file`, the process environment under `env_prefix`,
/// then `overrides`, each layer overriding the one before.
///
/// `env_prefix` is e.g. [`ENV_PREFIX`] (`"E2EE"`; a trailing `_` is ignored). Every
/// variable under the prefix must name a setting, so a variable the binary reads itself
/// (such as `E2EE_CONFIG` through clap's `env`) must be filtered out: call
/// [`load_with_env`] with `std::env::vars_os().filter(..)` instead.
pub fn load<S>(
    file: Option<&Path>,
    env_prefix: &str,
    overrides: &[(&str, OverrideValue)],
) -> Result<S, SettingsError>
where
    S: DeserializeOwned + Serialize + Default,
{
    load_with_env(file, env_prefix, std::env::vars_os(), overrides)
}

/// Like [`load`], but reads environment variables from `env` instead of the process
/// environment (for tests, or to filter out variables the binary handles itself).
///
/// Environment values are kept as strings and converted to each field's type on
/// deserialization, so `E2EE_LIMITS__MAX_CONNECTIONS=10` fills a `u32`, `true`/`false`
/// fill a `bool`, and a string field keeps `007` exactly.
pub fn load_with_env<S, I, K, V>(
    file: Option<&Path>,
    env_prefix: &str,
    env: I,
    overrides: &[(&str, OverrideValue)],
) -> Result<S, SettingsError>
where
    S: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let prefix = env_prefix.trim_end_matches(ENV_PREFIX_SEPARATOR);
    let mut origins = Origins {
        prefix: prefix.to_owned(),
        ..Origins::default()
    };

    let defaults = Config::try_from(&S::default()).map_err(|err| SettingsError::Defaults {
        reason: err.to_string(),
    })?;
    let env: Vec<(OsString, OsString)> = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    refuse_old_prefix(prefix, &defaults, &env)?;
    let mut builder = Config::builder().add_source(defaults);

    if let Some(path) = file {
        let (label, table) = read_toml(path)?;
        builder = builder.add_source(ParsedFile(table));
        origins.file = Some((label, path.to_path_buf()));
    }

    let (env_map, env_names) = collect_env(prefix, env)?;
    origins.env = env_names;
    // Environment values stay strings (`try_parsing(false)`): `config` converts a
    // string to the target number or bool on deserialization, while parsing first
    // would turn a string field's "007" into 7 and "1e3" into 1000.
    builder = builder.add_source(
        Environment::default()
            .prefix(prefix)
            .prefix_separator(ENV_PREFIX_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(false)
            .source(Some(env_map)),
    );

    for (key, value) in overrides {
        builder = builder
            .set_override(*key, value.clone().into_kind())
            .map_err(|err| SettingsError::BadOverrideKey {
                key: (*key).to_owned(),
                reason: err.to_string(),
            })?;
        origins.flags.push((*key).to_owned());
    }

    let merged = builder.build().map_err(|err| SettingsError::Invalid {
        reason: err.to_string(),
    })?;
    let tree = merged.cache.clone();
    merged
        .try_deserialize::<S>()
        .map_err(|err| classify(err, &tree, &origins))
}

/// Renders settings as TOML, e.g. for `--print-config`. The output loads back as a
/// config file. `None` fields are left out.
pub fn to_toml<S: Serialize>(settings: &S) -> Result<String, SettingsError> {
    toml::to_string_pretty(settings).map_err(|source| SettingsError::ToToml { source })
}

/// [`to_toml`] for `--print-config`, with the optional top-level settings that are not
/// set shown too, as comments (`# metrics_listen = (not set: what that means)`), so
/// that every setting appears. `optional` lists each optional top-level key and what
/// leaving it unset means; a key that is set is printed as a value, not repeated.
pub fn to_toml_with_unset<S: Serialize>(
    settings: &S,
    optional: &[(&str, &str)],
) -> Result<String, SettingsError> {
    let text = to_toml(settings)?;
    let set: Value = Config::try_from(settings)
        .map_err(|err| SettingsError::Defaults {
            reason: err.to_string(),
        })?
        .cache;
    let set = set.into_table().unwrap_or_default();
    let unset: String = optional
        .iter()
        .filter(|(key, _)| set.get(*key).is_none_or(|v| matches!(v.kind, ValueKind::Nil)))
        .map(|(key, meaning)| format!("# {key} = (not set: {meaning})\n"))
        .collect();
    // Top-level values come before the first table in the output: the comments go there.
    Ok(match text.find("\n[") {
        Some(at) => format!("{}\n{unset}{}", &text[..at], &text[at..]),
        None => format!("{text}{unset}"),
    })
}

/// A TOML file already read and parsed, as a `config` source.
#[derive(Clone, Debug)]
struct ParsedFile(Map<String, Value>);

impl Source for ParsedFile {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        Ok(self.0.clone())
    }
}

/// Reads exactly `path` (the `config` crate's own file source would also try other
/// extensions) and parses it, tagging every value with the path as its origin.
fn read_toml(path: &Path) -> Result<(String, Map<String, Value>), SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SettingsError::FileNotFound {
            path: path.to_path_buf(),
        },
        _ => SettingsError::FileRead {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let label = path.display().to_string();
    let table = <FileFormat as Format>::parse(&FileFormat::Toml, Some(&label), &text).map_err(|err| {
        SettingsError::FileParse {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }
    })?;
    Ok((label, table))
}

/// The variables under the prefix, as `config`'s environment source wants them, and
/// each one's dotted key paired with its name.
type EnvVars = (Map<String, String>, Vec<(String, String)>);

/// For a binary's own prefix (`E2EE_RELAY`, `E2EE_AGENT`): refuses a variable directly
/// under the shared `E2EE_` prefix whose first segment is one of the binary's top-level
/// settings (`E2EE_LIMITS__MAX_CONNECTIONS` for the relay). Other `E2EE_` variables (the
/// other binary's, test hooks, `E2EE_PASSPHRASE`) are left alone.
fn refuse_old_prefix(
    prefix: &str,
    defaults: &Config,
    env: &[(OsString, OsString)],
) -> Result<(), SettingsError> {
    let prefix_upper = prefix.to_uppercase();
    if !BINARY_PREFIXES.contains(&prefix_upper.as_str()) {
        return Ok(());
    }
    let Ok(top) = defaults.cache.clone().into_table() else {
        return Ok(());
    };
    let shared = format!("{ENV_PREFIX}{ENV_PREFIX_SEPARATOR}").to_lowercase();
    for (name, _) in env {
        let Some(name) = name.to_str() else { continue };
        let lower = name.to_lowercase();
        let Some(rest) = lower.strip_prefix(&shared) else {
            continue;
        };
        let own = BINARY_PREFIXES
            .iter()
            .any(|p| lower.starts_with(&format!("{}{ENV_PREFIX_SEPARATOR}", p.to_lowercase())));
        let first = rest.split(ENV_SEPARATOR).next().unwrap_or(rest);
        if !own && top.contains_key(first) {
            return Err(SettingsError::OldEnvPrefix {
                var: name.to_owned(),
                instead: format!("{prefix_upper}{ENV_PREFIX_SEPARATOR}{}", &name[shared.len()..]),
            });
        }
    }
    Ok(())
}

fn collect_env<I, K, V>(prefix: &str, env: I) -> Result<EnvVars, SettingsError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    // The same matching `config::Environment` does: case-insensitive prefix.
    let pattern = format!("{prefix}{ENV_PREFIX_SEPARATOR}").to_lowercase();
    let mut map = Map::new();
    let mut names = Vec::new();
    for (name, value) in env {
        // A name that is not UTF-8 cannot carry the prefix.
        let Ok(name) = name.into().into_string() else {
            continue;
        };
        let lower = name.to_lowercase();
        let Some(rest) = lower.strip_prefix(&pattern) else {
            continue;
        };
        let value = value
            .into()
            .into_string()
            .map_err(|_| SettingsError::EnvNotUnicode { var: name.clone() })?;
        names.push((rest.replace(ENV_SEPARATOR, "."), name.clone()));
        map.insert(name, value);
    }
    names.sort();
    Ok((map, names))
}

/// What is needed to tell which layer a key came from.
#[derive(Default)]
struct Origins {
    /// The config file's origin label and path.
    file: Option<(String, PathBuf)>,
    /// Dotted key and variable name of every variable under the prefix.
    env: Vec<(String, String)>,
    /// Dotted keys of the command-line overrides.
    flags: Vec<String>,
    /// The environment prefix (for the name of a variable not seen).
    prefix: String,
}

impl Origins {
    /// The layer that set `key` (or something under it) in the merged tree.
    fn layer_of(&self, tree: &Value, key: &str) -> Option<Layer> {
        let found = lookup(tree, key).and_then(first_origin);
        match found {
            Some(ENV_ORIGIN) => Some(Layer::Env(
                self.env_var(key)
                    .unwrap_or_else(|| fallback_env_name(&self.prefix, key)),
            )),
            Some(origin) => match &self.file {
                Some((label, path)) if label == origin => Some(Layer::File(path.clone())),
                _ => None,
            },
            // Defaults and overrides carry no origin; an empty table from a file or the
            // environment does not either.
            None if self.flags.iter().any(|flag| related(flag, key)) => Some(Layer::Flag),
            None => self.env_var(key).map(Layer::Env),
        }
    }

    fn env_var(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(dotted, _)| related(dotted, key))
            .map(|(_, name)| name.clone())
    }
}

/// Whether one dotted key is the other or lies under it.
fn related(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    under(a, b) || under(b, a)
}

fn fallback_env_name(prefix: &str, key: &str) -> String {
    format!(
        "{}{ENV_PREFIX_SEPARATOR}{}",
        prefix.to_uppercase(),
        key.replace('.', ENV_SEPARATOR).to_uppercase()
    )
}

/// The value at a dotted key, stopping at the deepest table that exists.
fn lookup<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    let mut node = tree;
    for segment in key.split('.') {
        // `[n]` array indexes end the walk at the array itself.
        let name = segment.split('[').next().unwrap_or(segment);
        match &node.kind {
            ValueKind::Table(table) => match table.get(name) {
                Some(child) => node = child,
                None => return None,
            },
            _ => break,
        }
        if name.len() != segment.len() {
            break;
        }
    }
    Some(node)
}

/// The origin of a value, or of the first value beneath it that has one.
fn first_origin(value: &Value) -> Option<&str> {
    if let Some(origin) = value.origin() {
        return Some(origin);
    }
    match &value.kind {
        ValueKind::Table(table) => table.values().find_map(first_origin),
        ValueKind::Array(items) => items.iter().find_map(first_origin),
        _ => None,
    }
}

/// Turns the `config` crate's deserialization error into a [`SettingsError`].
fn classify(err: ConfigError, tree: &Value, origins: &Origins) -> SettingsError {
    let (outer_key, inner) = match err {
        ConfigError::At { error, key, .. } => (key, *error),
        other => (None, other),
    };
    match inner {
        ConfigError::Message(message) => {
            if let Some((field, expected)) = parse_unknown_field(&message) {
                let key = match outer_key {
                    Some(parent) if !parent.is_empty() => format!("{parent}.{field}"),
                    _ => field.to_owned(),
                };
                return SettingsError::UnknownKey {
                    layer: origins.layer_of(tree, &key),
                    key,
                    expected: expected.to_owned(),
                };
            }
            keyed(outer_key, message, tree, origins)
        }
        ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => keyed(
            key.or(outer_key),
            format!("found {unexpected}, expected {expected}"),
            tree,
            origins,
        ),
        ConfigError::NotFound(key) => SettingsError::Invalid {
            reason: format!("missing setting `{key}`"),
        },
        other => keyed(outer_key, other.to_string(), tree, origins),
    }
}

fn keyed(key: Option<String>, reason: String, tree: &Value, origins: &Origins) -> SettingsError {
    match key {
        Some(key) => SettingsError::BadValue {
            layer: origins.layer_of(tree, &key),
            key,
            reason,
        },
        None => SettingsError::Invalid { reason },
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and the rest.
fn parse_unknown_field(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    Some((field, expected.trim_start_matches(", ")))
}

#[cfg(test)]
mod tests;
