//! Loading real files: defaults, the seed's YAML, TOML sessions, errors with file, line
//! and suggestion, layering with provenance, checks, and the generated reference.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ms11_config::{Config, ConfigSources, ContinuePrevious, ReadyKind, StateBackend, load};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn from_file(path: &Path) -> Result<ms11_config::LoadedConfig, ms11_config::ConfigError> {
    load(&ConfigSources {
        file: Some(path.to_path_buf()),
        overrides: vec![],
        use_env: false,
    })
}

/// Replaces the temp dir in messages so snapshots are stable.
fn scrub(text: &str, dir: &tempfile::TempDir) -> String {
    text.replace(&*dir.path().to_string_lossy(), "<dir>")
}

#[test]
fn the_embedded_defaults_are_the_types_defaults() {
    let loaded = load(&ConfigSources::default()).unwrap();
    assert_eq!(loaded.config, Config::default());
}

#[test]
fn the_seeds_example_yaml_loads_unchanged() {
    let loaded = from_file(&repo_root().join("config/seed-example.yaml")).unwrap();
    let c = &loaded.config;
    assert_eq!(c.save_interval, 300);
    assert_eq!(c.state_file, PathBuf::from("tmp/session_state.json"));
    assert!(c.recovery_enabled && !c.auto_restart && !c.auto_relog);
    assert_eq!(c.crash_detection.check_interval, 30);
    assert_eq!(c.crash_detection.error_patterns.len(), 5);
    assert!(c.session_tracking.track_equipment);
    let sessions = c.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].name, "main");
    assert_eq!(
        c.state_file_of(0, &sessions[0]),
        PathBuf::from("tmp/session_state.json")
    );
    // The seed's error patterns reach the session's log detector and compile.
    let patterns = c.log_patterns_of(&sessions[0]);
    assert_eq!(patterns.error_patterns.len(), 5);
    assert!(loaded.check(&[]).is_empty(), "{:?}", loaded.check(&[]));
}

const SESSIONS_TOML: &str = r#"
save_interval = 60
state_backend = "json-file"
continue_previous = "yes"

[[session]]
name = "main"
client_log = "logs/client.log"
pipeline = ["restart", "relog", "manual", "restore"]
[session.client]
command = ["sim-client", "--log", "logs/client.log"]
stop_grace_secs = 2
[session.bot]
command = ["sim-bot"]
[session.ready]
kind = "log_line"
pattern = "Login successful"
[session.stall]
timeout_ms = 5000

[[session]]
name = "alt"
[session.client]
command = ["sim-client"]
[session.ready]
kind = "delay"
delay_ms = 500
"#;

#[test]
fn toml_with_several_sessions_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ms11.toml", SESSIONS_TOML);
    let loaded = from_file(&path).unwrap();
    let c = &loaded.config;
    assert_eq!(c.save_interval, 60);
    assert_eq!(c.state_backend, StateBackend::JsonFile);
    assert_eq!(c.continue_previous, ContinuePrevious::Yes);
    assert_eq!(c.session.len(), 2);
    assert_eq!(c.session[0].client.as_ref().unwrap().stop_grace_secs, 2.0);
    assert_eq!(c.session[0].stall.timeout_ms, 5000);
    assert_eq!(c.session[1].ready.kind, ReadyKind::Delay);
    assert_eq!(
        c.state_file_of(1, &c.session[1]),
        PathBuf::from("tmp/alt/session_state.json")
    );
    assert!(loaded.check(&[]).is_empty(), "{:?}", loaded.check(&[]));
}

#[test]
fn unknown_keys_name_file_line_and_suggest() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.toml",
        "save_interval = 60\nauto_relogg = true\n\n[[session]]\nname = \"x\"\n[session.client]\ncommand = [\"a\"]\nstop_grase_secs = 1\n",
    );
    let err = from_file(&path).unwrap_err();
    insta::assert_snapshot!(scrub(&err.to_string(), &dir), @r"
    invalid configuration:
      - <dir>/bad.toml:2: `auto_relogg`: unknown key `auto_relogg` (did you mean `auto_relog`?)
    ");
    let path = write(
        &dir,
        "bad2.toml",
        "[[session]]\nname = \"x\"\n[session.client]\ncommand = [\"a\"]\nstop_grase_secs = 1\n",
    );
    let err = from_file(&path).unwrap_err();
    insta::assert_snapshot!(scrub(&err.to_string(), &dir), @r"
    invalid configuration:
      - <dir>/bad2.toml:5: `session.0.client.stop_grase_secs`: unknown key `stop_grase_secs` (did you mean `stop_grace_secs`?)
    ");
}

#[test]
fn wrong_types_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.yaml",
        "save_interval: soon\nstate_file: tmp/x.json\n",
    );
    let err = from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.yaml:1") && err.contains("`save_interval`"),
        "{err}"
    );
    assert!(err.contains("soon"), "{err}");
}

#[test]
fn layers_override_in_order_and_show_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ms11.toml", "save_interval = 60\nauto_relog = true\n");
    // SAFETY-free: the test sets a variable only this test reads through `use_env`.
    let loaded = load(&ConfigSources {
        file: Some(path),
        overrides: vec![
            "keep_generations=5".into(),
            "state_file=other/state.json".into(),
        ],
        use_env: false,
    })
    .unwrap();
    assert_eq!(loaded.config.save_interval, 60);
    assert_eq!(loaded.config.keep_generations, 5);
    let show = scrub(&loaded.show(), &dir);
    let line = |key: &str| {
        show.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("save_interval").ends_with("# <dir>/ms11.toml:1"),
        "{show}"
    );
    assert!(
        line("auto_relog").ends_with("# <dir>/ms11.toml:2"),
        "{show}"
    );
    assert!(line("keep_generations").ends_with("# --set"), "{show}");
    assert!(line("state_file").contains("other/state.json"), "{show}");
    assert!(line("recovery_enabled").ends_with("# defaults"), "{show}");
}

#[test]
fn bad_set_arguments_are_refused() {
    let err = load(&ConfigSources {
        file: None,
        overrides: vec!["nonsense".into()],
        use_env: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("--set nonsense"), "{err}");
    let err = load(&ConfigSources {
        file: None,
        overrides: vec!["save_intervall=3".into()],
        use_env: false,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean `save_interval`"),
        "{err}"
    );
}

#[test]
fn check_finds_semantic_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ms11.toml",
        "save_interval = 0\n[[session]]\nname = \"a\"\npipeline = [\"restart\", \"teleport\"]\n[session.client]\ncommand = []\nstop_signal = \"NOPE\"\n[[session]]\nname = \"a\"\n",
    );
    let loaded = from_file(&path).unwrap();
    let problems: Vec<String> = loaded
        .check(&["swg-emu-wait-login-server".into()])
        .iter()
        .map(|p| scrub(&p.to_string(), &dir))
        .collect();
    insta::assert_snapshot!(problems.join("\n"), @r"
    <dir>/ms11.toml:1: `save_interval`: must be at least 1 second
    <dir>/ms11.toml:4: `session.0.pipeline`: unknown strategy `teleport` (known: restart, relog, manual, restore, swg-emu-wait-login-server)
    <dir>/ms11.toml:6: `session.0.client.command`: must name a program
    <dir>/ms11.toml:7: `session.0.client.stop_signal`: unknown signal `NOPE`
    <dir>/ms11.toml: `session.0.ready.kind`: `log_line` readiness needs `client_log`
    <dir>/ms11.toml:9: `session.1.name`: `a` is used by another session
    ");
}

#[test]
fn the_configuration_reference_is_generated_from_the_types() {
    let generated = ms11_config::reference_markdown();
    let path = repo_root().join("docs/configuration.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/configuration.md is out of date: run `UPDATE_DOCS=1 cargo test -p ms11-config` and commit it"
    );
    for key in [
        "save_interval",
        "session.N.client.stop_grace_secs",
        "session.N.log_patterns.patterns",
        "session.N.recovery.breaker.max_incidents",
    ] {
        assert!(
            generated.contains(&format!("`{key}`")),
            "{key} missing from the reference"
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a config file holds, loading it returns a config or an error; it never panics.
        #[test]
        fn arbitrary_config_files_never_panic(text in "(?s).{0,400}", yaml in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, if yaml { "c.yaml" } else { "c.toml" }, &text);
            let _ = from_file(&path).map(|l| l.check(&[]));
        }

        /// Key-value lines made of real key names and arbitrary values never panic either.
        #[test]
        fn plausible_config_files_never_panic(
            lines in prop::collection::vec(
                (prop::sample::select(ms11_config::TOP_LEVEL_KEYS.to_vec()), "[a-z0-9\"\\[\\]{}=., -]{0,20}"),
                0..8,
            )
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, "c.toml", &text);
            let _ = from_file(&path).map(|l| (l.show(), l.check(&[])));
        }
    }
}

#[test]
fn check_refuses_size_limits_a_load_could_not_honour() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ms11.toml",
        "max_state_bytes = 100000000\nmax_patch_bytes = 200000000\n",
    );
    let loaded = from_file(&path).unwrap();
    assert_eq!(loaded.config.max_state_bytes, 100_000_000);
    let problems: Vec<String> = loaded.check(&[]).iter().map(|p| p.key.clone()).collect();
    assert_eq!(problems, ["max_state_bytes", "max_patch_bytes"]);
    let defaults = ms11_config::Config::default();
    assert_eq!(
        (defaults.max_state_bytes, defaults.max_patch_bytes),
        (16 * 1024 * 1024, 1024 * 1024)
    );
}
