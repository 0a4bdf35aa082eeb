//! `--profile`: `perf record -g` on the portico process during one extra
//! REST run (not counted in the results: perf costs the target time), and
//! the top of `perf report --stdio` in `profile.txt`: where the time goes by
//! binary (kernel or user space), by function, and by function with its
//! callees, so that a change's before and after can be shown side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _, Result};

use super::tools::{self, Cpus};

/// Sampling frequency: enough samples in a 10 s run, little overhead.
const FREQUENCY: &str = "999";
/// Lines kept of each `perf report` section.
const TOP_LINES: usize = 60;

/// A `perf record` attached to a process, until `finish`.
pub struct Recording {
    perf: std::process::Child,
    data: PathBuf,
}

/// Makes sure `perf` is there (Debian's `linux-perf`).
pub fn ensure_perf() -> Result<()> {
    tools::ensure_command("perf", "linux-perf", &["--version"])
}

impl Recording {
    /// Samples `pid` (all its threads, kernel and user stacks) for
    /// `seconds`, perf itself on the load CPU.
    pub fn start(pid: u32, seconds: u32, load_cpu: usize, out_dir: &Path) -> Result<Recording> {
        let data = out_dir.join("perf.data");
        let perf = Cpus::pinned(load_cpu, Path::new("perf"))
            .args(["record", "-g", "-F", FREQUENCY, "-p", &pid.to_string(), "-o"])
            .arg(&data)
            // With a command, perf stops recording when the command ends.
            .args(["--", "sleep", &seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record")?;
        Ok(Recording { perf, data })
    }

    /// Waits for the recording to end and writes `profile.txt` next to the
    /// data; returns its path.
    pub fn finish(self, heading: &str) -> Result<PathBuf> {
        let output = self.perf.wait_with_output().context("waiting for perf record")?;
        ensure!(
            output.status.success(),
            "perf record failed (is perf_event_paranoid too strict? try `sysctl kernel.perf_event_paranoid=1`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut text = format!("# {heading}\n# perf record -g -F {FREQUENCY}; data: {}\n", self.data.display());
        for (title, args) in [
            ("by binary (kernel vs user space), self time", &["--no-children", "--sort", "dso", "-g", "none"][..]),
            ("by function, self time", &["--no-children", "--sort", "dso,symbol", "-g", "none"][..]),
            ("by function with callees (children), top callers", &["--children", "--sort", "symbol", "-g", "none"][..]),
        ] {
            let report = Command::new("perf")
                .args(["report", "--stdio", "--percent-limit", "0.3", "-i"])
                .arg(&self.data)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .context("running perf report")?;
            ensure!(report.status.success(), "perf report failed");
            let _ = writeln!(text, "\n## {title}\n");
            let body = String::from_utf8_lossy(&report.stdout);
            for line in body.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()).take(TOP_LINES) {
                let _ = writeln!(text, "{line}");
            }
        }
        let path = self.data.with_file_name("profile.txt");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
