//! Layered loading: defaults, file, environment, flags; errors naming key and layer.

use super::*;
use serde::Deserialize;
use std::io::Write as _;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSettings {
    listen: String,
    name: String,
    verbose: bool,
    motd: Option<String>,
    limits: Limits,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_connections: u32,
    rate_per_sec: f64,
    strict: bool,
}

impl Default for TestSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7000".into(),
            name: "relay".into(),
            verbose: false,
            motd: None,
            limits: Limits {
                max_connections: 100,
                rate_per_sec: 5.0,
                strict: false,
            },
        }
    }
}

const NO_ENV: [(&str, &str); 0] = [];

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

fn load_test(
    file: Option<&Path>,
    env: &[(&str, &str)],
    overrides: &[(&str, OverrideValue)],
) -> Result<TestSettings, SettingsError> {
    load_with_env(file, ENV_PREFIX, env.iter().copied(), overrides)
}

#[test]
fn defaults_only() {
    let got: TestSettings = load_with_env(None, ENV_PREFIX, NO_ENV, &[]).expect("defaults load");
    assert_eq!(got, TestSettings::default());
}

#[test]
fn file_overrides_defaults() {
    let file = toml_file("name = \"from-file\"\n[limits]\nmax_connections = 5\n");
    let got = load_test(Some(file.path()), &[], &[]).expect("load");
    assert_eq!(got.name, "from-file");
    assert_eq!(got.limits.max_connections, 5);
    // Untouched keys, also in the section the file names, keep their defaults.
    assert_eq!(got.limits.rate_per_sec, 5.0);
    assert_eq!(got.listen, "127.0.0.1:7000");
}

#[test]
fn env_overrides_file() {
    let file = toml_file("name = \"from-file\"\nlisten = \"0.0.0.0:1\"\n");
    let got = load_test(Some(file.path()), &[("E2EE_NAME", "from-env")], &[]).expect("load");
    assert_eq!(got.name, "from-env");
    assert_eq!(got.listen, "0.0.0.0:1");
}

#[test]
fn flag_overrides_env() {
    let file = toml_file("[limits]\nmax_connections = 5\n");
    let got = load_test(
        Some(file.path()),
        &[("E2EE_LIMITS__MAX_CONNECTIONS", "10"), ("E2EE_NAME", "env")],
        &[("limits.max_connections", 20u32.into())],
    )
    .expect("load");
    assert_eq!(got.limits.max_connections, 20);
    assert_eq!(got.name, "env");
}

#[test]
fn string_flag_fills_a_number() {
    let got = load_test(None, &[], &[("limits.max_connections", "7".into())]).expect("load");
    assert_eq!(got.limits.max_connections, 7);
}

#[test]
fn unknown_key_in_file_is_an_error() {
    let file = toml_file("[limits]\nmax_conections = 5\n");
    let err = load_test(Some(file.path()), &[], &[]).expect_err("unknown key");
    match &err {
        SettingsError::UnknownKey { key, layer, .. } => {
            assert_eq!(key, "limits.max_conections");
            assert_eq!(layer, &Some(Layer::File(file.path().to_path_buf())));
        }
        other => panic!("wrong error: {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("max_connections"), "{message}");
    assert!(message.contains(&file.path().display().to_string()), "{message}");
}

#[test]
fn unknown_top_level_section_in_file_is_an_error() {
    let file = toml_file("[bogus]\nx = 1\n");
    let err = load_test(Some(file.path()), &[], &[]).expect_err("unknown key");
    assert!(
        matches!(&err, SettingsError::UnknownKey { key, layer: Some(Layer::File(_)), .. } if key == "bogus"),
        "{err:?}"
    );
}

#[test]
fn unknown_env_key_is_an_error() {
    let err = load_test(None, &[("E2EE_LIMITS__BOGUS", "1")], &[]).expect_err("unknown key");
    match &err {
        SettingsError::UnknownKey { key, layer, .. } => {
            assert_eq!(key, "limits.bogus");
            assert_eq!(layer, &Some(Layer::Env("E2EE_LIMITS__BOGUS".into())));
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(err.to_string().contains("E2EE_LIMITS__BOGUS"), "{err}");
}

#[test]
fn unknown_flag_key_is_an_error() {
    let err = load_test(None, &[], &[("limits.bogus", true.into())]).expect_err("unknown");
    assert!(
        matches!(&err, SettingsError::UnknownKey { key, layer: Some(Layer::Flag), .. } if key == "limits.bogus"),
        "{err:?}"
    );
}

#[test]
fn missing_explicit_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nope.toml");
    let err = load_test(Some(&path), &[], &[]).expect_err("missing file");
    assert!(
        matches!(&err, SettingsError::FileNotFound { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn invalid_toml_names_the_path() {
    let file = toml_file("name = \n");
    let err = load_test(Some(file.path()), &[], &[]).expect_err("bad toml");
    assert!(matches!(err, SettingsError::FileParse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn nested_env_keys_parse_numbers_and_bools() {
    let got = load_test(
        None,
        &[
            ("E2EE_LIMITS__MAX_CONNECTIONS", "10"),
            ("E2EE_LIMITS__RATE_PER_SEC", "2.5"),
            ("E2EE_LIMITS__STRICT", "true"),
            ("E2EE_VERBOSE", "TRUE"),
            ("E2EE_MOTD", "hello"),
        ],
        &[],
    )
    .expect("load");
    assert_eq!(got.limits.max_connections, 10);
    assert_eq!(got.limits.rate_per_sec, 2.5);
    assert!(got.limits.strict);
    assert!(got.verbose);
    assert_eq!(got.motd.as_deref(), Some("hello"));
}

#[test]
fn env_strings_are_kept_verbatim() {
    let got = load_test(None, &[("E2EE_NAME", "007")], &[]).expect("load");
    assert_eq!(got.name, "007");
}

#[test]
fn variables_outside_the_prefix_are_ignored() {
    let got = load_test(
        None,
        &[("PATH", "/bin"), ("E2EEX_NAME", "x"), ("OTHER_E2EE_NAME", "y")],
        &[],
    )
    .expect("load");
    assert_eq!(got, TestSettings::default());
}

#[test]
fn prefix_with_trailing_underscore_is_accepted() {
    let got: TestSettings = load_with_env(None, "E2EE_", [("E2EE_NAME", "n")], &[]).expect("load");
    assert_eq!(got.name, "n");
}

#[test]
fn bad_env_value_names_the_variable() {
    let err = load_test(None, &[("E2EE_LIMITS__MAX_CONNECTIONS", "lots")], &[]).expect_err("bad value");
    match &err {
        SettingsError::BadValue { key, layer, .. } => {
            assert_eq!(key, "limits.max_connections");
            assert_eq!(layer, &Some(Layer::Env("E2EE_LIMITS__MAX_CONNECTIONS".into())));
        }
        other => panic!("wrong error: {other:?}"),
    }
}

#[test]
fn out_of_range_value_is_an_error() {
    let file = toml_file("[limits]\nmax_connections = -1\n");
    let err = load_test(Some(file.path()), &[], &[]).expect_err("out of range");
    assert!(
        matches!(&err, SettingsError::BadValue { key, layer: Some(Layer::File(_)), .. } if key == "limits.max_connections"),
        "{err:?}"
    );
}

#[test]
fn invalid_override_key_is_an_error() {
    let err = load_test(None, &[], &[("limits..x", 1u32.into())]).expect_err("bad key");
    assert!(matches!(err, SettingsError::BadOverrideKey { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn non_utf8_env_value_is_an_error() {
    use std::os::unix::ffi::OsStringExt as _;
    let env = [(OsString::from("E2EE_NAME"), OsString::from_vec(vec![0x66, 0xff]))];
    let err = load_with_env::<TestSettings, _, _, _>(None, ENV_PREFIX, env, &[]).expect_err("not utf-8");
    assert!(
        matches!(&err, SettingsError::EnvNotUnicode { var } if var == "E2EE_NAME"),
        "{err:?}"
    );
}

#[test]
fn log_options_load_from_any_layer_in_any_case() {
    use crate::{LogFormat, LogLevel};

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WithLog {
        log_format: LogFormat,
        log_level: LogLevel,
    }

    let file = toml_file("log_format = \"json\"\nlog_level = \"debug\"\n");
    let got: WithLog = load_with_env(Some(file.path()), ENV_PREFIX, NO_ENV, &[]).expect("file");
    assert_eq!(
        (got.log_format, got.log_level),
        (LogFormat::Json, LogLevel::Debug)
    );

    let env = [("E2EE_LOG_FORMAT", "JSON"), ("E2EE_LOG_LEVEL", "warning")];
    let got: WithLog = load_with_env(None, ENV_PREFIX, env, &[]).expect("env");
    assert_eq!((got.log_format, got.log_level), (LogFormat::Json, LogLevel::Warn));

    let err = load_with_env::<WithLog, _, _, _>(None, ENV_PREFIX, [("E2EE_LOG_LEVEL", "loud")], &[])
        .expect_err("bad level");
    assert!(
        matches!(&err, SettingsError::BadValue { key, .. } if key == "log_level"),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected one of"), "{err}");
}

#[test]
fn to_toml_round_trips_through_a_file() {
    let defaults = TestSettings::default();
    let settings = TestSettings {
        name: "round".into(),
        motd: Some("hi".into()),
        limits: Limits {
            strict: true,
            ..defaults.limits
        },
        ..defaults
    };
    let text = to_toml(&settings).expect("render");
    let file = toml_file(&text);
    let got = load_test(Some(file.path()), &[], &[]).expect("load rendered");
    assert_eq!(got, settings);
}

#[test]
fn a_binary_prefix_refuses_its_settings_under_the_old_prefix_and_ignores_the_rest() {
    let load = |env: &[(&str, &str)]| {
        load_with_env::<TestSettings, _, _, _>(None, RELAY_ENV_PREFIX, env.iter().copied(), &[])
    };
    let err = load(&[("E2EE_LIMITS__MAX_CONNECTIONS", "10")]).expect_err("old prefix");
    assert!(
        matches!(&err, SettingsError::OldEnvPrefix { var, instead }
            if var == "E2EE_LIMITS__MAX_CONNECTIONS" && instead == "E2EE_RELAY_LIMITS__MAX_CONNECTIONS"),
        "{err}"
    );
    assert!(
        err.to_string().contains("E2EE_RELAY_LIMITS__MAX_CONNECTIONS"),
        "{err}"
    );
    // Another binary's settings, hooks and unknown names under E2EE_ are not ours.
    let got = load(&[
        ("E2EE_AGENT_NAME", "alice"),
        ("E2EE_PASSPHRASE", "secret"),
        ("E2EE_CRASH_AT", "x"),
        ("E2EE_RELAY_LIMITS__MAX_CONNECTIONS", "7"),
    ])
    .expect("loads");
    assert_eq!(got.limits.max_connections, 7);
    // The shared prefix itself keeps reading E2EE_ directly.
    let got: TestSettings =
        load_with_env(None, ENV_PREFIX, [("E2EE_LIMITS__MAX_CONNECTIONS", "9")], &[]).expect("shared");
    assert_eq!(got.limits.max_connections, 9);
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WithOptional {
    listen: String,
    metrics: Option<String>,
    table: Table,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    size: u32,
}

#[test]
fn unset_optional_settings_are_shown_as_comments_and_the_output_loads_back() {
    let settings = WithOptional {
        listen: "x".into(),
        ..WithOptional::default()
    };
    let text = to_toml_with_unset(&settings, &[("metrics", "no metrics")]).expect("toml");
    let comment = text.find("# metrics = (not set: no metrics)").expect("shown");
    assert!(comment < text.find("[table]").expect("table"), "{text}");
    let back: toml::Value = toml::from_str(&text).expect("loads back");
    assert!(back.get("metrics").is_none());
    let set = WithOptional {
        metrics: Some("127.0.0.1:9".into()),
        ..settings
    };
    let text = to_toml_with_unset(&set, &[("metrics", "no metrics")]).expect("toml");
    assert!(
        text.contains("metrics = \"127.0.0.1:9\"") && !text.contains("not set"),
        "{text}"
    );
}
