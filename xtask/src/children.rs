//! Long-running child processes that must not outlive the demo.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a child gets to shut down cleanly after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

struct Named {
    name: String,
    process: Child,
}

/// Every process the demo started; dropping it stops them all, so an early return
/// with `?` cannot leave a gunicorn behind.
#[derive(Default)]
pub struct Children {
    running: Vec<Named>,
}

impl Children {
    /// Starts `command` in a process group of its own. That keeps the terminal's
    /// Ctrl-C away from it, so that shutdown happens in our order, and lets a signal
    /// reach gunicorn's workers as well as its master.
    pub fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        let process = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start {name} ({})", Path::new(command.get_program()).display()))?;
        self.running.push(Named { name: name.to_owned(), process });
        Ok(())
    }

    /// The process id of the child called `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running.iter().find(|child| child.name == name).map(|child| child.process.id())
    }

    /// The first child that has exited, with its status, if any has.
    pub fn first_exited(&mut self) -> Result<Option<(String, ExitStatus)>> {
        for child in &mut self.running {
            if let Some(status) = child.process.try_wait().with_context(|| format!("checking on {}", child.name))? {
                return Ok(Some((child.name.clone(), status)));
            }
        }
        Ok(None)
    }

    /// SIGTERM to every child, newest first (the gateway before the services it
    /// needs), then SIGKILL to whatever is still running after the grace period.
    pub fn stop_all(&mut self) {
        if self.running.is_empty() {
            return;
        }
        println!("==> stopping {}", self.names());
        for child in self.running.iter().rev() {
            signal_group(&child.process, Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline && self.reap_exited() {
            sleep(POLL);
        }
        for mut child in self.running.drain(..) {
            eprintln!("    {} did not stop within {GRACE:?}; killing it", child.name);
            signal_group(&child.process, Signal::SIGKILL);
            // Reap it so that no zombie is left; SIGKILL cannot be ignored.
            let _ = child.process.wait();
        }
    }

    /// Forgets the children that have exited; true while some are still running.
    fn reap_exited(&mut self) -> bool {
        self.running.retain_mut(|child| matches!(child.process.try_wait(), Ok(None)));
        !self.running.is_empty()
    }

    fn names(&self) -> String {
        self.running.iter().map(|child| child.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Signals the child's whole process group (its id is the child's pid, see `spawn`).
fn signal_group(process: &Child, signal: Signal) {
    let Ok(pid) = i32::try_from(process.id()) else { return };
    // An error means the group is already gone, which is what we want.
    let _ = killpg(Pid::from_raw(pid), signal);
}
