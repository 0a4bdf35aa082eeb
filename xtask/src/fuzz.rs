//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets in
//! `fuzz/` on nightly, one after the other, each for a bounded time.
//!
//! libFuzzer adds every input that finds new coverage to the first corpus
//! folder it is given, so it gets a scratch folder under `fuzz/target/` and
//! reads the committed seeds (`fuzz/corpus/<target>/`) as a second one: the
//! committed corpus stays a handful of meaningful files. A crash is written
//! to `fuzz/artifacts/<target>/`; fix it, then commit the input to the
//! target's corpus so the stable test suite replays it from then on.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::workspace::{run, step, Workspace};

/// The targets, as `fuzz/Cargo.toml` and `portico::fuzzing::TARGETS` name them.
pub const TARGETS: [&str; 7] = ["config", "path", "sdl", "graphql_limits", "jwt", "cache_control", "backend_json"];

/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;

pub struct Options {
    seconds: u64,
    targets: Vec<&'static str>,
}

impl Options {
    pub fn parse(args: &[&str]) -> Result<Self> {
        let mut seconds = DEFAULT_SECONDS;
        let mut targets = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match *arg {
                "--seconds" => {
                    let value = args.next().context("--seconds needs a number")?;
                    seconds = value.parse().with_context(|| format!("--seconds {value:?} is not a number"))?;
                }
                name => match TARGETS.iter().find(|target| **target == name) {
                    Some(target) => targets.push(*target),
                    None => bail!("unknown fuzz target {name:?} (targets: {})", TARGETS.join(", ")),
                },
            }
        }
        if targets.is_empty() {
            targets = TARGETS.to_vec();
        }
        Ok(Self { seconds, targets })
    }
}

pub fn fuzz(workspace: &Workspace, options: &Options) -> Result<()> {
    let fuzz_dir = workspace.root().join("fuzz");
    for target in &options.targets {
        let scratch = fuzz_dir.join("target/corpus").join(target);
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        step(format!("cargo +nightly fuzz run {target} for {} s", options.seconds));
        // The rustup proxy picks the nightly toolchain; the variables cargo
        // set for this stable xtask process would pin stable's tools instead.
        let mut command = Command::new("cargo");
        command
            .current_dir(workspace.root())
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR")
            .args(["+nightly", "fuzz", "run", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            .arg("-print_final_stats=1");
        run(&mut command, &format!("fuzzing {target}"))?;
    }
    println!("==> no crash in {} target(s)", options.targets.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_are_those_of_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(Workspace::locate().root().join("fuzz/Cargo.toml")).expect("fuzz/");
        for target in TARGETS {
            assert!(manifest.contains(&format!("name = \"{target}\"")), "{target} is not in fuzz/Cargo.toml");
            let corpus = Workspace::locate().root().join("fuzz/corpus").join(target);
            assert!(corpus.is_dir(), "{target} has no seed corpus");
        }
    }

    #[test]
    fn options_default_to_every_target_for_a_minute() {
        let options = Options::parse(&[]).expect("valid");
        assert_eq!((options.seconds, options.targets.len()), (60, TARGETS.len()));
        let options = Options::parse(&["--seconds", "5", "jwt"]).expect("valid");
        assert_eq!((options.seconds, options.targets), (5, vec!["jwt"]));
        assert!(Options::parse(&["nope"]).is_err());
    }
}
