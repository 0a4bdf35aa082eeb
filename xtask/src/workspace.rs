//! Paths inside the repository, the sample services, and running commands with
//! readable progress and errors.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

/// The repository checkout. Every path is absolute so that commands work the same
/// whatever directory `cargo xtask` was started from.
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    pub fn locate() -> Self {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = xtask_dir.parent().expect("xtask/ lives inside the workspace root").to_path_buf();
        Workspace { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn services(&self) -> PathBuf {
        self.root.join("services")
    }

    pub fn venv(&self) -> PathBuf {
        self.services().join(".venv")
    }

    /// An executable installed in the services' virtualenv (`python`, `pip`, `gunicorn`).
    pub fn venv_bin(&self, name: &str) -> PathBuf {
        self.venv().join("bin").join(name)
    }

    /// The gateway binary that `cargo build --release` produces.
    pub fn release_binary(&self, name: &str) -> PathBuf {
        self.target_dir().join("release").join(name)
    }

    /// Cargo's target directory.
    pub fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| self.root.join("target"), PathBuf::from)
    }

    /// `cargo` with the workspace root as working directory. Under `cargo xtask`,
    /// `CARGO` names the cargo that started us, so the same toolchain is used.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command.current_dir(&self.root);
        command
    }

    /// `python manage.py <args>` for one service, from the virtualenv.
    pub fn manage(&self, service: &Service, args: &[&str]) -> Command {
        let mut command = Command::new(self.venv_bin("python"));
        command.arg("manage.py").args(args).current_dir(service.dir(self));
        command
    }
}

/// One of the Django projects under `services/` (see services/README.md).
pub struct Service {
    /// Directory, Django project and log name alike.
    pub name: &'static str,
    /// Environment variable that overrides the SQLite file's path.
    pub db_env: &'static str,
}

pub const SERVICES: [Service; 3] = [
    Service { name: "student_api", db_env: "STUDENT_API_DB" },
    Service { name: "live_reading", db_env: "LIVE_READING_DB" },
    Service { name: "payment", db_env: "PAYMENT_DB" },
];

impl Service {
    pub fn dir(&self, workspace: &Workspace) -> PathBuf {
        workspace.services().join(self.name)
    }

    /// The SQLite file Django will use, following the same override as the
    /// service's settings. A relative override is relative to the service's
    /// directory, because that is where manage.py and gunicorn run.
    pub fn database(&self, workspace: &Workspace) -> PathBuf {
        match std::env::var_os(self.db_env).filter(|path| !path.is_empty()) {
            Some(path) => self.dir(workspace).join(path),
            None => self.dir(workspace).join("db.sqlite3"),
        }
    }
}

/// Prints the name of a step before it runs, so a failure's output has a heading.
pub fn step(what: impl std::fmt::Display) {
    println!("==> {what}");
}

/// Runs `command` to completion with the terminal as its output, and fails with
/// `what` in the message when it cannot start or exits non-zero.
pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("{what}: could not start {}", Path::new(command.get_program()).display()))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}
