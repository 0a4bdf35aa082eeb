//! `--profile`: `perf record -g` on the portico process during one extra
//! REST run (not counted in the results: perf costs the target time), and
//! the top of `perf report --stdio` in `profile-<scenario>.txt`: where the time goes by
//! binary (kernel or user space), by function, and by function with its
//! callees, so that a change's before and after can be shown side by side.
//! Alongside, `perf stat` counts the process's system calls over the same
//! window: syscalls per request, in total and for the calls a proxy makes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _, Result};

use super::tools::{self, Cpus};

/// Sampling frequency: enough samples in a 10 s run, little overhead.
const FREQUENCY: &str = "999";
/// Lines kept of each `perf report` section.
const TOP_LINES: usize = 60;
/// The system calls counted one by one (the rest only in the total):
/// socket I/O, polling, waking, time, randomness and memory.
const SYSCALLS: [&str; 20] = [
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "accept4",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "futex",
    "sched_yield",
    "getrandom",
    "clock_gettime",
    "mmap",
    "munmap",
    "madvise",
    "brk",
];

/// A `perf record` and a `perf stat` attached to a process, until `finish`.
pub struct Recording {
    record: std::process::Child,
    stat: std::process::Child,
    data: PathBuf,
    counts: PathBuf,
}

/// Makes sure `perf` is there (Debian's `linux-perf`).
pub fn ensure_perf() -> Result<()> {
    tools::ensure_command("perf", "linux-perf", &["--version"])
}

impl Recording {
    /// Samples `pid` (all its threads, kernel and user stacks) and counts
    /// its system calls for `seconds`, perf itself on the load CPU.
    /// `name` tells this recording's files from another's (`rest`, `dashboard`).
    pub fn start(pid: u32, seconds: u32, load_cpu: usize, out_dir: &Path, name: &str) -> Result<Recording> {
        let data = out_dir.join(format!("perf-{name}.data"));
        let counts = out_dir.join(format!("syscalls-{name}.csv"));
        let pid = pid.to_string();
        // With a command, perf stops when the command ends.
        let duration = ["--", "sleep", &seconds.to_string()].map(str::to_owned);
        let record = Cpus::pinned(load_cpu, Path::new("perf"))
            .args(["record", "-g", "-F", FREQUENCY, "-p", &pid, "-o"])
            .arg(&data)
            .args(&duration)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record")?;
        let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
        events.extend(SYSCALLS.iter().map(|name| format!("syscalls:sys_enter_{name}")));
        let stat = Cpus::pinned(load_cpu, Path::new("perf"))
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p", &pid, "-o"])
            .arg(&counts)
            .args(&duration)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf stat")?;
        Ok(Recording { record, stat, data, counts })
    }

    /// Waits for the recording to end and writes `profile-<name>.txt` next to the
    /// data (`requests`: how many the load completed meanwhile); returns
    /// its path.
    pub fn finish(self, heading: &str, requests: u64) -> Result<PathBuf> {
        for (what, child) in [("perf record", self.record), ("perf stat", self.stat)] {
            let output = child.wait_with_output().with_context(|| format!("waiting for {what}"))?;
            ensure!(
                output.status.success(),
                "{what} failed (is perf_event_paranoid too strict? try `sysctl kernel.perf_event_paranoid=1`):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut text = format!("# {heading}\n# perf record -g -F {FREQUENCY}; data: {}\n", self.data.display());
        let counts =
            std::fs::read_to_string(&self.counts).with_context(|| format!("reading {}", self.counts.display()))?;
        let _ = writeln!(text, "\n## system calls per request ({requests} requests, perf stat)\n");
        for (name, count) in syscall_counts(&counts) {
            let _ = writeln!(text, "{:>10.2}  {name}", count as f64 / requests.max(1) as f64);
        }
        for (title, args) in [
            ("by binary (kernel vs user space), self time", &["--no-children", "-F", "overhead,dso", "-g", "none"][..]),
            ("by function, self time", &["--no-children", "-F", "overhead,dso,sym", "-g", "none"][..]),
            (
                "by function with its callees (children, then self)",
                &["--children", "-F", "overhead_children,overhead,sym", "-g", "none"][..],
            ),
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
                let _ = writeln!(text, "{}", line.trim_end());
            }
        }
        let name =
            self.data.file_stem().and_then(|stem| stem.to_str()).unwrap_or("perf").replacen("perf-", "profile-", 1);
        let path = self.data.with_file_name(format!("{name}.txt"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// `perf stat -x,` lines as (system call, count): the total first, then
/// the counted calls that happened, most frequent first.
fn syscall_counts(csv: &str) -> Vec<(String, u64)> {
    let mut total = None;
    let mut calls = Vec::new();
    for line in csv.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (fields.first().and_then(|count| count.parse::<u64>().ok()), fields.get(2))
        else {
            continue;
        };
        if *event == "raw_syscalls:sys_enter" {
            total = Some(count);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            if count > 0 {
                calls.push((name.to_owned(), count));
            }
        }
    }
    calls.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let total = total.unwrap_or(0);
    let counted: u64 = calls.iter().map(|(_, count)| count).sum();
    let mut result = vec![("all system calls".to_owned(), total)];
    result.extend(calls);
    if total > counted {
        result.push(("others".to_owned(), total - counted));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_counts_from_perf_stat() {
        let csv = "# started on Tue\n\n500,,raw_syscalls:sys_enter,100,100.00,,\n\
                   200,,syscalls:sys_enter_writev,100,100.00,,\n0,,syscalls:sys_enter_getrandom,100,100.00,,\n\
                   <not counted>,,syscalls:sys_enter_brk,0,0.00,,\n250,,syscalls:sys_enter_recvfrom,100,100.00,,\n";
        let counts = syscall_counts(csv);
        let expected = [("all system calls", 500), ("recvfrom", 250), ("writev", 200), ("others", 50)];
        assert_eq!(counts, expected.map(|(name, count)| (name.to_owned(), count)));
    }
}
