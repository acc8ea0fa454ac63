//! `cargo xtask dist`: release binaries plus shell completions (bash, zsh, fish) and a
//! man page generated from the CLI definition, under `target/dist/`.

use std::fs;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::util;

/// Builds the distribution directory.
pub fn run() -> Result<()> {
    let args: Vec<String> = [
        "build",
        "--release",
        "-p",
        "ms11-runner",
        "-p",
        "ms11-plugin-host",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    util::cargo(&args)?;
    let dist = util::target_dir().join("dist");
    fs::create_dir_all(dist.join("completions"))?;
    for bin in ["ms11-recovery", "ms11-plugin-host"] {
        let from = util::target_dir().join("release").join(bin);
        fs::copy(&from, dist.join(bin)).with_context(|| format!("copying {}", from.display()))?;
    }
    let mut command = ms11_runner::cli::Cli::command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(
            shell,
            &mut command,
            "ms11-recovery",
            dist.join("completions"),
        )?;
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(ms11_runner::cli::Cli::command()).render(&mut page)?;
    fs::write(dist.join("ms11-recovery.1"), page)?;
    println!("written: {}", dist.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn completions_and_man_page_cover_every_subcommand() {
        let mut command = ms11_runner::cli::Cli::command();
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command,
            "ms11-recovery",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        let mut page = Vec::new();
        clap_mangen::Man::new(ms11_runner::cli::Cli::command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        for sub in [
            "run",
            "recover",
            "stats",
            "cleanup",
            "status",
            "plugins",
            "detect\\-crashes",
        ] {
            assert!(page.contains(sub), "man page lacks {sub}");
        }
        assert!(bash.contains("detect-crashes") && bash.contains("--max-age"));
    }
}
