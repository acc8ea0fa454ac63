//! `ms11-recovery`: session recovery and continuation engine for unattended game bots.
//! Everything lives in the `ms11_runner` library; this only runs it.

fn main() {
    let code = ms11_runner::run_cli(std::env::args_os().collect());
    std::process::exit(code.code());
}
