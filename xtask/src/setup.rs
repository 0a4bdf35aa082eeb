//! `cargo xtask setup`: bring `services/` to a runnable state, doing only the work
//! that is missing so that `demo` and `test` can call it every time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};
use sha2::{Digest as _, Sha256};

use crate::workspace::{run, step, Service, Workspace, SERVICES};

/// Records which requirement files the virtualenv was installed from. It lives inside
/// the virtualenv so that a fresh virtualenv always gets a fresh install.
const REQUIREMENTS_MARKER: &str = ".requirements-installed";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seeding {
    /// Seed only databases that did not exist, so data from an earlier demo survives.
    KeepExisting,
    /// Wipe and reseed every database.
    Reseed,
}

pub fn setup(workspace: &Workspace, seeding: Seeding) -> Result<()> {
    step("setting up services/");
    ensure_venv(workspace)?;
    ensure_requirements(workspace)?;
    for service in &SERVICES {
        prepare_database(workspace, service, seeding)?;
    }
    ensure_playground(workspace)?;
    ensure_audit_tool(workspace)
}

/// The GraphQL-over-HTTP spec's audit suite (graphql-http's `auditServer`),
/// which an integration test runs against the gateway. Pinned, so that a new
/// audit does not fail a build nobody changed.
const AUDIT_PACKAGES: [&str; 2] = ["graphql-http@1.23.1", "graphql@16.15.0"];

/// Installs the audit suite into `target/graphql-http-npm`.
fn ensure_audit_tool(workspace: &Workspace) -> Result<()> {
    let scratch = workspace.root().join("target").join("graphql-http-npm");
    let marker = scratch.join(".installed");
    let wanted = AUDIT_PACKAGES.join(" ");
    if scratch.join("node_modules").join("graphql-http").is_dir()
        && fs::read_to_string(&marker).unwrap_or_default().trim() == wanted
    {
        println!("    the GraphQL-over-HTTP audit suite is installed");
        return Ok(());
    }
    step(format!("installing the GraphQL-over-HTTP audit suite ({wanted}) with npm"));
    npm_install(&scratch, &AUDIT_PACKAGES, "the GraphQL-over-HTTP audit suite")?;
    fs::write(&marker, format!("{wanted}\n")).with_context(|| format!("writing {}", marker.display()))
}

/// `npm install`s `packages` into the scratch folder `scratch` (under
/// `target/`; nothing from it is committed).
fn npm_install(scratch: &Path, packages: &[&str], what: &str) -> Result<()> {
    fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    fs::write(scratch.join("package.json"), "{ \"private\": true }\n").context("writing the scratch package.json")?;
    if let Err(error) = Command::new("npm").arg("--version").stdout(Stdio::null()).status() {
        bail!("npm is needed to install {what} ({error}); install Node.js and npm, then run this again");
    }
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel", "error"])
            .args(packages)
            .current_dir(scratch)
            .stdin(Stdio::null()),
        &format!("npm install ({what})"),
    )
}

/// The npm packages whose UMD bundles make the GraphiQL playground. Pinned,
/// because the gateway's playground page is written against these builds
/// (graphiql 4+ ships ESM only and would need a bundler).
const PLAYGROUND_PACKAGES: [&str; 3] = ["graphiql@3.8.3", "react@18.3.1", "react-dom@18.3.1"];

/// Where each served asset comes from inside `node_modules`.
const PLAYGROUND_FILES: [(&str, &str); 4] = [
    ("graphiql/graphiql.min.js", "graphiql.min.js"),
    ("graphiql/graphiql.min.css", "graphiql.min.css"),
    ("react/umd/react.production.min.js", "react.production.min.js"),
    ("react-dom/umd/react-dom.production.min.js", "react-dom.production.min.js"),
];

/// Installs GraphiQL's files into `assets/graphiql`, which the gateway serves
/// itself so that the playground works without internet access. npm runs in
/// a scratch folder under `target/`; nothing from it is committed.
fn ensure_playground(workspace: &Workspace) -> Result<()> {
    let assets = workspace.root().join("assets").join("graphiql");
    let marker = assets.join(".installed");
    let wanted = PLAYGROUND_PACKAGES.join(" ");
    let complete = PLAYGROUND_FILES.iter().all(|(_, name)| assets.join(name).is_file());
    if complete && fs::read_to_string(&marker).unwrap_or_default().trim() == wanted {
        println!("    GraphiQL playground files are installed");
        return Ok(());
    }
    let scratch = workspace.root().join("target").join("graphiql-npm");
    step(format!("installing the GraphiQL playground ({wanted}) with npm"));
    npm_install(&scratch, &PLAYGROUND_PACKAGES, "the GraphiQL playground's files")?;
    fs::create_dir_all(&assets).with_context(|| format!("creating {}", assets.display()))?;
    for (source, name) in PLAYGROUND_FILES {
        let from = scratch.join("node_modules").join(source);
        fs::copy(&from, assets.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    fs::write(&marker, format!("{wanted}\n")).with_context(|| format!("writing {}", marker.display()))
}

fn ensure_venv(workspace: &Workspace) -> Result<()> {
    let venv = workspace.venv();
    // A venv whose ensurepip step failed has a python but no pip; treat it as missing
    // so that the next run finishes it (`python -m venv` accepts an existing directory).
    if workspace.venv_bin("python").exists() && workspace.venv_bin("pip").exists() {
        println!("    virtualenv {} exists", venv.display());
        return Ok(());
    }
    let python = system_python()?;
    step(format!("creating virtualenv {} with {}", venv.display(), python.display()));
    let output = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run {}", python.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let message = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{}", message.trim_end());
    if message.contains("ensurepip") {
        bail!(
            "creating the virtualenv failed because Python's ensurepip is missing; \
             on Debian/Ubuntu install it with `apt-get install python3-venv`, then run this again"
        );
    }
    bail!("`{} -m venv {}` failed ({})", python.display(), venv.display(), output.status);
}

/// The interpreter that creates the virtualenv: `$PYTHON`, else `python3` from PATH.
fn system_python() -> Result<PathBuf> {
    let python =
        std::env::var_os("PYTHON").filter(|value| !value.is_empty()).map_or_else(|| "python3".into(), PathBuf::from);
    let hint = "install Python 3 (services/requirements.txt is pinned for 3.11) or set PYTHON to its path";
    let status = Command::new(&python)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("could not run {}: {hint}", python.display()))?;
    ensure!(status.success(), "`{} --version` failed ({status}): {hint}", python.display());
    Ok(python)
}

/// The pip requirement files installed into the virtualenv: the services'
/// own pins (all their image installs), then the tools the tests use.
const REQUIREMENT_FILES: [&str; 2] = ["requirements.txt", "requirements-test.txt"];

/// Runs pip only when the requirement files differ from what was last installed, because
/// even a no-op `pip install` takes seconds and would slow every demo and test run.
fn ensure_requirements(workspace: &Workspace) -> Result<()> {
    let mut contents = Vec::new();
    for name in REQUIREMENT_FILES {
        let path = workspace.services().join(name);
        contents.extend(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let wanted = sha256_hex(&contents);
    let marker = workspace.venv().join(REQUIREMENTS_MARKER);
    let installed = fs::read_to_string(&marker).unwrap_or_default();
    if installed.trim() == wanted {
        println!("    Python requirements are up to date");
        return Ok(());
    }
    let mut pip = Command::new(workspace.venv_bin("pip"));
    pip.args(["install", "--disable-pip-version-check"]);
    for name in REQUIREMENT_FILES {
        pip.arg("--requirement").arg(workspace.services().join(name));
    }
    step(format!("installing services/{}", REQUIREMENT_FILES.join(" and services/")));
    run(pip.stdin(Stdio::null()), "pip install")?;
    fs::write(&marker, format!("{wanted}\n")).with_context(|| format!("writing {}", marker.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Migrates always (cheap, and needed after a pull that adds migrations) but seeds
/// only a database that migrate had to create, since seeding wipes the tables.
fn prepare_database(workspace: &Workspace, service: &Service, seeding: Seeding) -> Result<()> {
    let database = service.database(workspace);
    let existed = database.exists();
    manage(workspace, service, &["migrate", "--noinput", "--verbosity", "0"])?;
    if existed && seeding == Seeding::KeepExisting {
        println!("    {}: migrated; keeping the data in {}", service.name, short(workspace, &database));
        return Ok(());
    }
    manage(workspace, service, &["seed"]).with_context(|| {
        format!(
            "{} now has an unseeded database; once the problem is fixed, run `cargo xtask setup --reseed`",
            service.name
        )
    })?;
    println!("    {}: migrated and seeded {}", service.name, short(workspace, &database));
    Ok(())
}

fn manage(workspace: &Workspace, service: &Service, args: &[&str]) -> Result<()> {
    let what = format!("{}: manage.py {}", service.name, args.join(" "));
    run(workspace.manage(service, args).stdin(Stdio::null()), &what)
}

/// A path relative to the repository when it is inside it, for shorter progress lines.
fn short<'a>(workspace: &Workspace, path: &'a Path) -> std::path::Display<'a> {
    path.strip_prefix(workspace.root()).unwrap_or(path).display()
}
