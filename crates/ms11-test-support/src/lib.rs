//! Shared helpers for the test suites. [`skip`] is the one way a test that needs
//! something this machine may lack (Xvfb, root for a tmpfs, python3, or *not* being
//! root) gives up: locally it prints why and the test passes without running, but when
//! the environment variable `MS11_REQUIRE` (comma-separated: `xvfb,root,python3,nonroot,wine`)
//! names the need, the test fails instead. CI sets `MS11_REQUIRE` for everything it
//! installs, so CI cannot pass by skipping.

use std::fmt;

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The `Xvfb` virtual X server.
    Xvfb,
    /// Running as root (mounting a tmpfs).
    Root,
    /// A `python3` interpreter.
    Python3,
    /// Running as an unprivileged user (mode bits stop writes).
    NonRoot,
    /// Wine and mingw (the Windows test client).
    Wine,
}

impl Need {
    /// The name used in `MS11_REQUIRE`.
    pub fn name(self) -> &'static str {
        match self {
            Need::Xvfb => "xvfb",
            Need::Root => "root",
            Need::Python3 => "python3",
            Need::NonRoot => "nonroot",
            Need::Wine => "wine",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable naming the needs that must be met.
pub const REQUIRE_ENV: &str = "MS11_REQUIRE";

/// Whether `require` (the value of `MS11_REQUIRE`) names `need`.
pub fn names(require: &str, need: Need) -> bool {
    require
        .split(',')
        .map(str::trim)
        .any(|n| n.eq_ignore_ascii_case(need.name()))
}

/// Whether `MS11_REQUIRE` names `need` in this process's environment.
pub fn required(need: Need) -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| names(&v, need))
}

/// Gives up a test that cannot run here because `need` is not met (`why` says how).
/// Panics (the test fails) when `MS11_REQUIRE` names `need`; otherwise prints why the
/// test is skipped, and the caller returns.
///
/// # Panics
///
/// When `MS11_REQUIRE` names `need`.
#[allow(clippy::print_stderr)]
pub fn skip(test: &str, need: Need, why: &str) {
    let require = std::env::var(REQUIRE_ENV).unwrap_or_default();
    match verdict(&require, test, need, why) {
        Ok(skipped) => eprintln!("{skipped}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// What [`skip`] does under `require`: `Ok` with the line saying why the test is
/// skipped, or `Err` with the failure.
pub fn verdict(require: &str, test: &str, need: Need, why: &str) -> Result<String, String> {
    if names(require, need) {
        Err(format!(
            "{test}: cannot run ({why}), and {REQUIRE_ENV} requires `{need}`"
        ))
    } else {
        Ok(format!(
            "skipped {test}: {why} (set {REQUIRE_ENV}={need} to make this a failure)"
        ))
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_lists_are_comma_separated_and_forgiving_about_spaces_and_case() {
        assert!(names("xvfb,root,python3", Need::Root));
        assert!(names(" xvfb , Python3", Need::Python3));
        assert!(names("nonroot", Need::NonRoot));
        assert!(!names("nonroot", Need::Root));
        assert!(!names("", Need::Xvfb));
        assert!(!names("xvfbx", Need::Xvfb));
    }

    #[test]
    fn a_required_need_that_is_missing_is_a_failure_not_a_skip() {
        let failure =
            verdict("xvfb,python3", "t", Need::Python3, "python3 is missing").unwrap_err();
        assert!(
            failure.contains("MS11_REQUIRE requires `python3`"),
            "{failure}"
        );
        let skipped = verdict("xvfb", "t", Need::Python3, "python3 is missing").unwrap();
        assert!(
            skipped.starts_with("skipped t: python3 is missing"),
            "{skipped}"
        );
    }

    #[test]
    fn root_is_read_from_the_effective_uid() {
        let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let effective_zero = uid
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        assert_eq!(is_root(), effective_zero);
    }
}
