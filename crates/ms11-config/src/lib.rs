//! The configuration of ms11-recovery, and nothing else.
//!
//! Types ([`Config`], one [`SessionConfig`] per character), layering (embedded
//! `config/default.toml` < config file (TOML, or the seed's YAML) < `MS11_*` environment
//! < `--set KEY=VALUE`) in [`load`], `config show` with the origin of every value
//! ([`LoadedConfig::show`]), semantic checks ([`LoadedConfig::check`]) and the generated
//! reference ([`reference_markdown`], which is `docs/configuration.md`).

mod check;
mod load;
mod model;
mod paths;
mod reference;
mod show;
mod signals;

pub use check::BUILTIN_STRATEGIES;
pub use load::{
    ConfigError, ConfigProblem, ConfigSources, DEFAULT_TOML, LoadedConfig, MAX_NESTING,
    NON_CONFIG_ENV, TOP_LEVEL_KEYS, load,
};
pub use model::{
    Config, ContinuePrevious, CrashDetection, PluginsConfig, ProcessConfig, ReadyConfig, ReadyKind,
    ScreenshotConfig, SessionConfig, SessionTracking, StateBackend, WineConfig, default_pipeline,
};
pub use reference::reference_markdown;
pub use show::redact_secret_values;
pub use signals::signal_number;
