//! Each binary reads settings from the environment under its own prefix: one shell can
//! hold both `E2EE_RELAY_…` and `E2EE_AGENT_…`, and a setting under the old shared
//! `E2EE_` prefix is refused with the name to use instead (docs/AGENT.md 1, README).

use std::process::{Command, Output};

use e2ee_integration::process::binary;

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary(program).expect("binary"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("runs")
}

#[test]
fn both_prefixes_in_one_shell_and_the_old_one_refused_with_the_new_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("relay");
    let state = tmp.path().join("alice");
    let shell = [
        ("E2EE_RELAY_LIMITS__MAX_CONNECTIONS", "77"),
        ("E2EE_AGENT_NAME", "alice"),
        ("E2EE_AGENT_RECONNECT__MAX_MS", "1234"),
    ];
    let relay = run(
        "e2ee-relay",
        &["--print-config", "--data-dir", data.to_str().expect("utf-8")],
        &shell,
    );
    assert!(
        relay.status.success(),
        "{}",
        String::from_utf8_lossy(&relay.stderr)
    );
    let printed = String::from_utf8_lossy(&relay.stdout);
    assert!(printed.contains("max_connections = 77"), "{printed}");
    let agent = run(
        "e2ee-agent",
        &["--print-config", "--state", state.to_str().expect("utf-8")],
        &shell,
    );
    assert!(
        agent.status.success(),
        "{}",
        String::from_utf8_lossy(&agent.stderr)
    );
    let printed = String::from_utf8_lossy(&agent.stdout);
    assert!(
        printed.contains("name = \"alice\"") && printed.contains("max_ms = 1234"),
        "{printed}"
    );

    // The old prefix: refused by the binary whose setting it names, ignored by the other.
    let old = [("E2EE_NAME", "alice"), ("E2EE_LIMITS__MAX_CONNECTIONS", "77")];
    let agent = run("e2ee-agent", &["--print-config"], &old[..1]);
    assert!(!agent.status.success());
    let said = String::from_utf8_lossy(&agent.stderr);
    assert!(
        said.contains("E2EE_NAME") && said.contains("E2EE_AGENT_NAME"),
        "{said}"
    );
    let relay = run("e2ee-relay", &["--print-config"], &old);
    assert!(!relay.status.success());
    let said = String::from_utf8_lossy(&relay.stderr);
    assert!(said.contains("E2EE_RELAY_LIMITS__MAX_CONNECTIONS"), "{said}");
    let relay = run("e2ee-relay", &["--print-config"], &old[..1]);
    assert!(
        relay.status.success(),
        "E2EE_NAME is not a relay setting: {}",
        String::from_utf8_lossy(&relay.stderr)
    );
}
