//! `cargo xtask`: the project's own automation, written in Rust.
//!
//! Running the demo and the full test suite needs more than `cargo`: three Django
//! services with their own virtualenv, migrated and seeded databases, and gunicorn
//! processes on fixed ports. Shell scripts for that drift apart between developers'
//! machines and CI and leave processes behind when interrupted. Keeping it here means
//! the only prerequisites are `cargo` and `python3`, developers and CI run the very
//! same steps (`.ci/run` is just `cargo xtask test` plus system packages), and every
//! process the demo starts is stopped again.
//!
//! Commands:
//! - `cargo xtask setup [--reseed]`: virtualenv, Python requirements, migrations and
//!   seed data for `services/`; fast when nothing changed.
//! - `cargo xtask demo`: setup, then the services and the gateway, until Ctrl-C.
//! - `cargo xtask test`: setup, Django tests, fmt, clippy, the import-cycle check and
//!   `cargo test`, as CI runs them.
//! - `cargo xtask cycles`: only the import-cycle check.
//! - `cargo xtask bench [--smoke] [--profile] [--scenarios ...]`: portico against NGINX and a Node GraphQL peer under load;
//!   `--replicas N`: N replicas sharing one Redis (admitted rate, shared cache, recovery).
//! - `cargo xtask fuzz [--seconds N] [TARGET]...`: the cargo-fuzz targets on nightly, each for a bounded time.
//!
//! Unix only: the services run under gunicorn, which needs it.

mod bench;
mod check;
mod children;
mod cycles;
mod demo;
mod fuzz;
mod setup;
mod workspace;

use std::process::ExitCode;

use anyhow::bail;

use crate::workspace::Workspace;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup [--reseed]  create services/.venv, install the Python requirements when they changed,
                    migrate every service and seed the databases that did not exist yet
                    (--reseed wipes and reseeds them all)
  demo              setup, then start the services and the gateway on :8080 until Ctrl-C
  test              setup, Django tests, cargo fmt --check, clippy, the import-cycle check and
                    cargo test (what CI runs)
  cycles            only the import-cycle check: no cycle between the top-level modules of src/
                    (needs cargo-modules 0.27.0, which .ci/run installs)
  bench [--smoke] [--seconds N] [--rounds N] [--concurrency N] [--portico BINARY]
        [--scenarios rest,dashboard,large,fanout] [--large-concurrency N] [--fanout-concurrency N]
                    portico vs NGINX (REST passthrough) and vs a Node GraphQL peer (Apollo Server 4,
                    the Dashboard operation, a large answer, ~1 MB of JSON from 3 backend calls, and a
                    fan-out, ~1 MB from 502 backend calls) under wrk, over NGINX
                    stub backends; each target alone on CPU 0, stubs and wrk on CPU 1; headline: CPU µs
                    per request side by side, with each core's busy share, MiB/s of response JSON per
                    core, backend calls per operation and issues 11's and 12's targets as pass/fail;
                    results in target/bench/ (JSON, Markdown, PNG).
                    --smoke: portico and NGINX only, debug build, seconds-long, checks not enforced;
                    --scenarios: which to run (default all); --large-concurrency: connections for
                    the large answer (default 4); --fanout-concurrency: for the fan-out (default 2);
                    --portico: use this binary instead of building one;
                    --before: also measure this (previous) portico binary, for before/after;
                    --profile: one more portico run of REST, the Dashboard and the large answer under `perf record -g`
                    (target/bench/profile-rest.txt, profile-dashboard.txt, profile-large.txt)
  bench --replicas N [--seconds N] [--concurrency N] [--portico BINARY]
                    N portico replicas sharing one redis-server over the NGINX stubs: one client's
                    admitted requests vs its rate-limit policy under wrk on every replica at once, the
                    shared cache tier (a fill on one replica answering another), serving while Redis is
                    killed and the recovery time after it restarts; target/bench/replicas.{json,md}
  fuzz [--seconds N] [TARGET]...
                    run the cargo-fuzz targets in fuzz/ (nightly, cargo-fuzz) one after the other, each
                    for N seconds (default 60); targets: config, path, sdl, graphql_limits, jwt,
                    cache_control (default all)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let workspace = Workspace::locate();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["setup"] => setup::setup(&workspace, setup::Seeding::KeepExisting),
        ["setup", "--reseed"] => setup::setup(&workspace, setup::Seeding::Reseed),
        ["demo"] => demo::demo(&workspace),
        ["test"] => check::test(&workspace),
        ["cycles"] => cycles::check(&workspace),
        ["fuzz", options @ ..] => fuzz::fuzz(&workspace, &fuzz::Options::parse(options)?),
        ["bench", options @ ..] => bench::bench(&workspace, &bench::Options::parse(&workspace, options)?).map(drop),
        [] | ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
}
