//! The command line as users see it: insta snapshots of `--help`, `stats`, `status`,
//! `config show`, the seed's flag spellings, and the documented exit codes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ms11-recovery");

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MS11_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&*dir.to_string_lossy(), "<dir>");
    (
        out.status.code().unwrap_or(-1),
        clean(&out.stdout),
        clean(&out.stderr),
    )
}

/// A session directory with the seed's sample state saved as the state file.
fn with_seed_state() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let seed = include_str!("../../ms11-state/tests/fixtures/seed_state.json");
    std::fs::write(dir.path().join("tmp/session_state.json"), seed).unwrap();
    dir
}

#[test]
fn help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn stats_of_the_seeds_state_as_text_and_json_and_the_seed_spelling() {
    let dir = with_seed_state();
    let (code, text, err) = run(dir.path(), &["stats"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("stats_text", text);
    let (code, json, _) = run(dir.path(), &["--stats", "--json"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("stats_json", json);
}

#[test]
fn without_a_saved_session_stats_is_empty_and_recover_fails_with_3() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["stats", "--json"]);
    assert_eq!((code, out.trim()), (0, "{}"));
    let (code, _, err) = run(dir.path(), &["--recover"]);
    assert_eq!(code, 3);
    assert!(err.contains("no saved session"), "{err}");
}

#[test]
fn status_without_a_runner_says_so_and_shows_the_saved_state() {
    let dir = with_seed_state();
    let (code, out, _) = run(dir.path(), &["status"]);
    assert_eq!(code, 4);
    let out = out.split(", saved ").next().unwrap_or_default().to_owned(); // the age changes
    insta::assert_snapshot!(out);
    let (code, _, err) = run(dir.path(), &["save"]);
    assert_eq!(code, 4, "{err}");
}

#[test]
fn config_show_names_the_origin_of_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ms11.yaml"),
        "save_interval: 120\nauto_relog: true\n",
    )
    .unwrap();
    let (code, out, err) = run(
        dir.path(),
        &[
            "--config",
            "ms11.yaml",
            "--set",
            "keep_generations=5",
            "config",
            "show",
        ],
    );
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!(out);
}

#[test]
fn a_bad_config_exits_6_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "save_intervall = 5\n").unwrap();
    let (code, _, err) = run(dir.path(), &["--config", "bad.toml", "config", "check"]);
    assert_eq!(code, 6);
    insta::assert_snapshot!(err);
}

#[test]
fn a_damaged_state_refuses_to_run_with_5_and_force_starts_fresh_keeping_the_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp/session_state.json"), "{\"planet\": ").unwrap();
    std::fs::write(
        dir.path().join("ms11.toml"),
        "[[session]]\nname = \"main\"\n[session.client]\ncommand = [\"sleep\", \"30\"]\n[session.ready]\nkind = \"delay\"\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["--config", "ms11.toml", "run"]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("none is valid") && err.contains("--force"),
        "{err}"
    );
    assert!(
        dir.path().join("tmp/session_state.json").exists(),
        "nothing moved without --force"
    );
}

#[test]
fn cleanup_keeps_the_newest_state() {
    let dir = with_seed_state();
    let (code, out, err) = run(dir.path(), &["--cleanup", "--max-age", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kept the newest valid state"), "{out}");
    assert!(dir.path().join("tmp/session_state.json").exists());
}

#[test]
fn under_systemd_it_reports_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    std::fs::write(
        dir.path().join("ms11.toml"),
        "continue_previous = \"yes\"\n[[session]]\nname = \"main\"\n[session.client]\ncommand = [\"sleep\", \"60\"]\n[session.ready]\nkind = \"delay\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", "ms11.toml", "run"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.starts_with("WATCHDOG=1")) {
        let n = socket.recv(&mut buf).unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1") {
            break;
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn seventy_sessions_start_and_stop_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("continue_previous = \"yes\"\n");
    for n in 0..70 {
        config.push_str(&format!(
            "[[session]]\nname = \"s{n}\"\n[session.client]\ncommand = [\"sleep\", \"60\"]\nstop_grace_secs = 2\n[session.ready]\nkind = \"delay\"\n[session.window]\nenabled = false\n"
        ));
    }
    std::fs::write(dir.path().join("ms11.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", "ms11.toml", "run"])
        .current_dir(dir.path())
        .env_remove("DISPLAY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Every session saves at start: wait for all 70 state files.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let saved = |n: usize| {
        dir.path()
            .join(format!("tmp/s{n}/session_state.json"))
            .exists()
            || (n == 0 && dir.path().join("tmp/session_state.json").exists())
    };
    while !(0..70).all(saved) {
        assert!(std::time::Instant::now() < end, "not every session started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < end,
            "the runner did not stop after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
}

fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MS11_CONFIG")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&*dir.to_string_lossy(), "<dir>");
    (
        out.status.code().unwrap_or(-1),
        clean(&out.stdout),
        clean(&out.stderr),
    )
}

#[test]
fn environment_variables_work_in_upper_case_and_unknown_ones_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_with_env(
        dir.path(),
        &["config", "show"],
        &[
            ("MS11_SAVE_INTERVAL", "7"),
            ("MS11_CRASH_DETECTION__ENABLED", "false"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("save_interval") || l.starts_with("crash_detection.enabled"))
        .collect();
    insta::assert_snapshot!(lines.join("\n"), @r"
    crash_detection.enabled = false          # environment variable MS11_CRASH_DETECTION__ENABLED
    save_interval = 7                        # environment variable MS11_SAVE_INTERVAL
    ");
    let (code, _, err) = run_with_env(
        dir.path(),
        &["config", "check"],
        &[("MS11_SAVE_INTERVALL", "7")],
    );
    assert_eq!(code, 6);
    insta::assert_snapshot!(err, @r"
    ms11-recovery: error: invalid configuration:
      - environment variable MS11_SAVE_INTERVALL: unknown environment variable `MS11_SAVE_INTERVALL` (did you mean `MS11_SAVE_INTERVAL`?)
    ");
}

#[test]
fn printing_into_a_closed_pipe_exits_quietly_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["config", "show"])
        .current_dir(dir.path())
        .env_remove("MS11_CONFIG")
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

const SECRET_CONFIG: &str = r#"
[plugins.config.swg-emu]
password = "hunter2"
host = "login.example"
[[session]]
name = "main"
[session.client]
command = ["sh", "-c", "exec client --user bob --pass=hunter2"]
[session.recovery.notify]
webhook_url = "https://discord.com/api/webhooks/123/SECRETTOKEN"
"#;

#[test]
fn config_show_redacts_secrets_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ms11.toml"), SECRET_CONFIG).unwrap();
    let (code, out, err) = run(dir.path(), &["--config", "ms11.toml", "config", "show"]);
    assert_eq!(code, 0, "{err}");
    let wanted = |out: &str| -> String {
        out.lines()
            .filter(|l| {
                l.contains("plugins.config")
                    || l.contains("client.command")
                    || l.contains("webhook_url")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!(wanted(&out), @r#"
    plugins.config.swg-emu.host = "login.example"                             # ms11.toml:4
    plugins.config.swg-emu.password = "[redacted]"                            # ms11.toml:3
    session.0.client.command = ["sh","-c","exec client --user bob --pass=[redacted]"]  # ms11.toml:8
    session.0.recovery.notify.webhook_url = "[redacted]"                      # ms11.toml:10
    "#);
    let (_, json, _) = run(
        dir.path(),
        &["--config", "ms11.toml", "--json", "config", "show"],
    );
    assert!(
        !json.contains("hunter2") && !json.contains("SECRETTOKEN"),
        "{json}"
    );
    let (code, out, _) = run(
        dir.path(),
        &["--config", "ms11.toml", "config", "show", "--show-secrets"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("\"hunter2\"") && out.contains("SECRETTOKEN"),
        "{out}"
    );
}

#[test]
fn error_messages_never_echo_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        dir.path(),
        &[
            "--set",
            "https://discord.com/api/webhooks/1/SECRETTOKEN",
            "config",
            "check",
        ],
    );
    assert_eq!(code, 6);
    assert!(
        err.contains("--set https://discord.com/api/webhooks/1/[redacted]"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("ms11.toml"),
        "[[session]]\nname = \"a\"\n[session.recovery.notify]\nwebhook_format = \"https://user:hunter2@ntfy.example/topic?auth=SECRETTOKEN\"\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["--config", "ms11.toml", "config", "check"]);
    assert_eq!(code, 6);
    assert!(err.contains("webhook_format"), "{err}");
    assert!(
        !err.contains("hunter2") && !err.contains("SECRETTOKEN"),
        "{err}"
    );
    // A parse error quotes the line it stopped at.
    std::fs::write(
        dir.path().join("broken.toml"),
        "[plugins.config.x]\npassword = \"hunter2\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["--config", "broken.toml", "config", "check"]);
    assert_eq!(code, 6);
    assert!(err.contains("TOML parse error"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn config_check_refuses_an_empty_pipeline_and_a_missing_client_program() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ms11.toml"),
        "[[session]]\nname = \"main\"\npipeline = []\n[session.client]\ncommand = [\"./bin/client\"]\n[session.ready]\nkind = \"delay\"\n",
    )
    .unwrap();
    let (code, out, err) = run(dir.path(), &["--config", "ms11.toml", "config", "check"]);
    assert_eq!(code, 6, "{err}");
    insta::assert_snapshot!(out, @r#"
    configuration has 2 problem(s):
      - ms11.toml:3: `session.0.pipeline`: must name at least one strategy (e.g. ["restart", "relog", "manual", "restore"])
      - ms11.toml:5: `session.0.client.command`: program `./bin/client` does not exist
    "#);
}
