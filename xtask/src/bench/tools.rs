//! The programs the benchmark drives (wrk, taskset, NGINX, perf), installed
//! from Debian's packages when missing, the way `.ci/run` installs its
//! system packages, and the two CPUs it pins them to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _, Result};

/// Where Debian puts administrators' programs, which a non-root `PATH`
/// often lacks (`nginx`).
const SBIN: &str = "/usr/sbin";

/// `command` as a path: itself when it runs from `PATH`, else `/usr/sbin/<command>`.
pub fn resolve(command: &str) -> PathBuf {
    let on_path = Command::new(command).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if on_path {
        PathBuf::from(command)
    } else {
        Path::new(SBIN).join(command)
    }
}

/// Makes sure `command` runs, installing Debian's `package` when it does
/// not (`apt-get update`, then `apt-get install`; nothing when present).
pub fn ensure_command(command: &str, package: &str, probe: &[&str]) -> Result<()> {
    let present = || {
        Command::new(command).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
            || Path::new(SBIN).join(command).is_file()
    };
    if present() {
        return Ok(());
    }
    println!("==> `{command}` is missing: installing Debian's {package} package");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    let installed = apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "--no-install-recommends", package]);
    ensure!(
        installed && present(),
        "could not install {package}; install it yourself (`sudo apt-get install {package}`) and run again"
    );
    Ok(())
}

/// The CPUs the benchmark pins to: the target's and the load side's
/// (stubs, wrk, perf).
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    pub target: usize,
    pub load: usize,
}

impl Cpus {
    /// The first two CPUs this process may run on (CPU 0 and 1 on an
    /// unrestricted machine).
    pub fn find() -> Result<Cpus> {
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).context("reading CPU affinity")?;
        let mut cpus = (0..nix::sched::CpuSet::count()).filter(|cpu| allowed.is_set(*cpu).unwrap_or(false));
        match (cpus.next(), cpus.next()) {
            (Some(target), Some(load)) => Ok(Cpus { target, load }),
            _ => anyhow::bail!(
                "the benchmark needs two CPUs (the target alone on one, stubs and load on the other); \
                 this process may use fewer"
            ),
        }
    }

    /// `taskset -c <cpu> <program>`: the program, pinned to one CPU.
    pub fn pinned(cpu: usize, program: &Path) -> Command {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(program);
        command
    }
}
