//! `cargo xtask test`: every check, in the order CI runs them, stopping at the first
//! failure. Cheap checks that fail often come before the long `cargo test`.

use std::process::Stdio;

use anyhow::Result;

use crate::setup::{setup, Seeding};
use crate::workspace::{run, step, Workspace, SERVICES};

pub fn test(workspace: &Workspace) -> Result<()> {
    setup(workspace, Seeding::KeepExisting)?;

    for service in &SERVICES {
        let what = format!("{} Django tests", service.name);
        step(&what);
        run(workspace.manage(service, &["test", "--noinput"]).stdin(Stdio::null()), &what)?;
    }

    step("cargo fmt --all -- --check");
    run(workspace.cargo().args(["fmt", "--all", "--", "--check"]), "cargo fmt --check")?;

    step("cargo clippy --workspace --all-targets -- -D warnings");
    run(workspace.cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]), "cargo clippy")?;

    step("no import cycle between the top-level modules of src/ (cargo modules dependencies)");
    crate::cycles::check(workspace)?;

    // The end-to-end tests start their own Django instances on free ports with
    // throwaway databases; these tell them where the services and their Python are.
    step("cargo test --workspace");
    run(
        workspace
            .cargo()
            .args(["test", "--workspace"])
            .env("PORTICO_SERVICES_DIR", workspace.services())
            .env("PORTICO_PYTHON", workspace.venv_bin("python")),
        "cargo test",
    )?;

    println!("==> all checks passed");
    Ok(())
}
