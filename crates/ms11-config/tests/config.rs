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
        env: vec![],
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
    // Relative to the config file's directory.
    let state_file = repo_root().join("config/tmp/session_state.json");
    assert_eq!(c.state_file, state_file);
    assert!(c.recovery_enabled && !c.auto_restart && !c.auto_relog);
    assert_eq!(c.crash_detection.check_interval, 30);
    assert_eq!(c.crash_detection.error_patterns.len(), 5);
    assert!(c.session_tracking.track_equipment);
    let sessions = c.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].name, "main");
    assert_eq!(c.state_file_of(0, &sessions[0]), state_file);
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
        env: vec![],
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
        env: vec![],
    })
    .unwrap_err();
    assert!(err.to_string().contains("--set nonsense"), "{err}");
    let err = load(&ConfigSources {
        file: None,
        overrides: vec!["save_intervall=3".into()],
        use_env: false,
        env: vec![],
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
    <dir>/ms11.toml:9: `session.1.name`: `a` is used by another session
    ");
}

fn with_env(env: &[(&str, &str)]) -> Result<ms11_config::LoadedConfig, ms11_config::ConfigError> {
    load(&ConfigSources {
        file: None,
        overrides: vec![],
        use_env: false,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

fn show_line(show: &str, key: &str) -> String {
    show.lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("{key} not in {show}"))
        .to_owned()
}

#[test]
fn environment_variables_work_in_upper_case_and_show_names_them() {
    let loaded = with_env(&[
        ("MS11_SAVE_INTERVAL", "7"),
        ("MS11_CRASH_DETECTION__ENABLED", "false"),
        ("MS11_CONFIG", "elsewhere.toml"),
    ])
    .unwrap();
    assert_eq!(loaded.config.save_interval, 7);
    assert!(!loaded.config.crash_detection.enabled);
    let show = loaded.show();
    assert!(
        show_line(&show, "save_interval").ends_with("# environment variable MS11_SAVE_INTERVAL"),
        "{show}"
    );
    assert!(
        show_line(&show, "crash_detection.enabled")
            .ends_with("# environment variable MS11_CRASH_DETECTION__ENABLED"),
        "{show}"
    );
}

#[test]
fn unknown_environment_variables_are_errors_naming_them() {
    let err = with_env(&[("MS11_SAVE_INTERVALL", "7"), ("MS11_WHATEVER", "1")]).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @r"
    invalid configuration:
      - environment variable MS11_SAVE_INTERVALL: unknown environment variable `MS11_SAVE_INTERVALL` (did you mean `MS11_SAVE_INTERVAL`?)
      - environment variable MS11_WHATEVER: unknown environment variable `MS11_WHATEVER`
    ");
    let err = with_env(&[("MS11_CRASH_DETECTION__ENABLD", "false")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("environment variable MS11_CRASH_DETECTION__ENABLD"),
        "{err}"
    );
}

#[test]
fn show_attributes_nested_defaults_to_the_defaults_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ms11.toml",
        "[[session]]\nname = \"a\"\n[session.client]\ncommand = [\"sh\"]\n",
    );
    let show = scrub(&from_file(&path).unwrap().show(), &dir);
    assert!(
        show_line(&show, "session.0.name").ends_with("# <dir>/ms11.toml:2"),
        "{show}"
    );
    assert!(
        show_line(&show, "session.0.client.command").ends_with("# <dir>/ms11.toml:4"),
        "{show}"
    );
    for key in [
        "session.0.ready.timeout_secs",
        "session.0.client.stop_grace_secs",
        "session.0.pipeline",
        "session.0.stall.timeout_ms",
    ] {
        assert!(
            show_line(&show, key).ends_with("# defaults"),
            "{key}: {show}"
        );
    }
}

#[test]
fn check_refuses_an_empty_pipeline_and_programs_that_cannot_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let not_executable = write(&dir, "client.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let executable = write(&dir, "bot.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = write(
        &dir,
        "ms11.toml",
        "[[session]]\nname = \"a\"\npipeline = []\n[session.client]\ncommand = [\"./client.sh\"]\n[session.bot]\ncommand = [\"./bot.sh\"]\n[session.ready]\nkind = \"delay\"\n\
         [[session]]\nname = \"b\"\n[session.client]\ncommand = [\"ms11-no-such-program\"]\n[session.bot]\ncommand = [\"./missing\"]\n[session.ready]\nkind = \"delay\"\n\
         [[session]]\nname = \"c\"\n[session.client]\ncommand = [\"sh\", \"-c\", \"true\"]\n[session.ready]\nkind = \"delay\"\n",
    );
    let loaded = from_file(&path).unwrap();
    let problems: Vec<String> = loaded
        .check(&[])
        .iter()
        .chain(&loaded.check_programs())
        .map(|p| scrub(&p.to_string(), &dir))
        .collect();
    insta::assert_snapshot!(problems.join("\n"), @r#"
    <dir>/ms11.toml:3: `session.0.pipeline`: must name at least one strategy (e.g. ["restart", "relog", "manual", "restore"])
    <dir>/ms11.toml:5: `session.0.client.command`: program `<dir>/./client.sh` is not executable
    <dir>/ms11.toml:13: `session.1.client.command`: program `ms11-no-such-program` not found on PATH
    <dir>/ms11.toml:15: `session.1.bot.command`: program `<dir>/./missing` does not exist
    "#);
}

#[test]
fn relative_paths_in_the_file_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    let path = write(
        &dir,
        "conf/ms11.toml",
        "state_file = \"state/s.json\"\n[plugins]\ndirs = [\"plugins\"]\n[[session]]\nname = \"a\"\nclient_log = \"logs/c.log\"\n[session.client]\ncommand = [\"bin/client\", \"arg/x\"]\n[session.bot]\ncommand = [\"./bot\"]\ncwd = \"work\"\n",
    );
    let loaded = load(&ConfigSources {
        file: Some(path),
        overrides: vec!["control_socket=run/s.sock".into()],
        use_env: false,
        env: vec![],
    })
    .unwrap();
    let c = &loaded.config;
    let base = dir.path().join("conf");
    assert_eq!(c.state_file, base.join("state/s.json"));
    assert_eq!(c.session[0].client_log, Some(base.join("logs/c.log")));
    let client = c.session[0].client.as_ref().unwrap();
    assert_eq!(
        client.command,
        [
            base.join("bin/client").display().to_string(),
            "arg/x".into()
        ]
    );
    let bot = c.session[0].bot.as_ref().unwrap();
    assert_eq!(bot.cwd, Some(base.join("work")));
    assert_eq!(
        bot.command[0],
        base.join("work/./bot").display().to_string()
    );
    assert_eq!(c.plugins.dirs, [base.join("plugins")]);
    assert!(loaded.check(&[]).is_empty(), "{:?}", loaded.check(&[]));
    // From `--set` (or the environment): relative to the working directory.
    assert_eq!(c.control_socket, Some(PathBuf::from("run/s.sock")));
}

#[test]
fn deeply_nested_files_are_refused_quickly_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (name, text) in [
        ("deep.yaml", format!("save_interval: 60\nx: {nested}\n")),
        ("deep.toml", format!("save_interval = 60\nx = {nested}\n")),
        (
            "braces.yaml",
            format!("x: {}{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
        ),
        ("block.yaml", format!("x:\n{}\n", "- ".repeat(depth))),
    ] {
        let path = write(&dir, name, &text);
        let started = std::time::Instant::now();
        let err = from_file(&path).unwrap_err().to_string();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{name}: {took:?}");
        assert!(
            err.contains(&format!("config file `{}`", path.display()))
                && err.contains("nested deeper than 128 levels"),
            "{name}: {err}"
        );
    }
    // A sensible nesting still loads.
    let path = write(
        &dir,
        "ok.toml",
        "[plugins.config.x]\na = [[1, [2]], {b = [3]}]\n",
    );
    from_file(&path).unwrap();
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
