//! `cargo xtask demo`: the services and the gateway, running until Ctrl-C.

use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::children::Children;
use crate::setup::{setup, Seeding};
use crate::workspace::{run, step, Service, Workspace, SERVICES};

/// The gateway's port; it must match `listen` in examples/portico.toml.
const GATEWAY_PORT: u16 = 8080;
const GATEWAY_CONFIG: &str = "examples/portico.toml";
/// How long all the services together get to answer their health check.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// One gunicorn: a service on a port. student_api runs twice, as the example
/// configuration balances over two replicas sharing one database.
struct Backend {
    service: &'static Service,
    port: u16,
}

impl Backend {
    fn label(&self) -> String {
        format!("{}:{}", self.service.name, self.port)
    }
}

fn backends() -> [Backend; 4] {
    let [student_api, live_reading, payment] = &SERVICES;
    [
        Backend { service: student_api, port: 8001 },
        Backend { service: student_api, port: 8011 },
        Backend { service: live_reading, port: 8002 },
        Backend { service: payment, port: 8003 },
    ]
}

pub fn demo(workspace: &Workspace) -> Result<()> {
    let backends = backends();
    // Checked first, because the release build below can take minutes.
    for backend in &backends {
        ensure_port_free(backend.port, &backend.label())?;
    }
    ensure_port_free(GATEWAY_PORT, "portico")?;

    setup(workspace, Seeding::KeepExisting)?;
    step("building the gateway: cargo build --release --bin portico");
    run(workspace.cargo().args(["build", "--release", "--bin", "portico"]), "cargo build --release")?;

    // Installed only now: until here, Ctrl-C should simply kill us and pip or cargo.
    let stop = stop_flag()?;
    let mut children = Children::default();
    start_services(workspace, &backends, &mut children, &stop)?;
    start_gateway(workspace, &mut children, &stop)?;
    print_banner(&backends, &logs_dir(workspace));
    supervise(&mut children, &stop)
}

fn start_services(
    workspace: &Workspace,
    backends: &[Backend],
    children: &mut Children,
    stop: &AtomicBool,
) -> Result<()> {
    step(format!("starting the services (access logs in {})", logs_dir(workspace).display()));
    std::fs::create_dir_all(logs_dir(workspace)).context("creating the demo's log folder")?;
    for backend in backends {
        children.spawn(&backend.label(), &mut gunicorn(workspace, backend))?;
    }
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for backend in backends {
        wait_until_healthy(children, stop, &backend.label(), local(backend.port), "/health/", deadline)?;
    }
    Ok(())
}

/// Where the services' access logs go: an access line per health check every 5 s
/// from four gunicorns would bury portico's own log on the terminal.
fn logs_dir(workspace: &Workspace) -> std::path::PathBuf {
    workspace.target_dir().join("demo")
}

fn access_log(workspace: &Workspace, backend: &Backend) -> std::path::PathBuf {
    logs_dir(workspace).join(format!("{}-{}.access.log", backend.service.name, backend.port))
}

fn gunicorn(workspace: &Workspace, backend: &Backend) -> Command {
    let mut command = Command::new(workspace.venv_bin("gunicorn"));
    command
        .arg("--chdir")
        .arg(backend.service.dir(workspace))
        .arg(format!("{}.wsgi:application", backend.service.name))
        .args(["--bind", &local(backend.port).to_string(), "--workers", "2", "--access-logfile"])
        .arg(access_log(workspace, backend))
        // The terminal keeps the services' warnings and errors (gunicorn's
        // and Django's, on stderr), not gunicorn's start-up chatter.
        .args(["--log-level", "warning"])
        // Every gunicorn would otherwise open the same ~/.gunicorn/gunicorn.ctl, and the
        // first one to stop would remove the socket the others still use.
        .arg("--no-control-socket");
    command
}

fn start_gateway(workspace: &Workspace, children: &mut Children, stop: &AtomicBool) -> Result<()> {
    step(format!("starting portico with {GATEWAY_CONFIG}"));
    let mut command = Command::new(workspace.release_binary("portico"));
    command.args(["serve", "--config", GATEWAY_CONFIG]).current_dir(workspace.root());
    children.spawn("portico", &mut command)?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    wait_until_healthy(children, stop, "portico", local(GATEWAY_PORT), "/healthz", deadline)
}

/// Set on SIGINT or SIGTERM; the main thread polls it, as it also has to poll the
/// children and a signal handler can do neither safely.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Runs until a signal or until a child dies; either way `Children`'s drop stops the rest.
fn supervise(children: &mut Children, stop: &AtomicBool) -> Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            children.stop_all();
            return Ok(());
        }
        if let Some((name, status)) = children.first_exited()? {
            bail!("{name} exited unexpectedly ({status}); stopped everything else");
        }
        sleep(POLL);
    }
}

fn wait_until_healthy(
    children: &mut Children,
    stop: &AtomicBool,
    name: &str,
    address: SocketAddr,
    path: &str,
    deadline: Instant,
) -> Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {name}");
        }
        if let Some((exited, status)) = children.first_exited()? {
            bail!("{exited} exited during startup ({status}); its output above should say why");
        }
        if answers_ok(address, path) {
            println!("    {name} is up (GET http://{address}{path})");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{name} did not answer GET http://{address}{path} within {STARTUP_TIMEOUT:?}");
        }
        sleep(POLL);
    }
}

/// True when `GET path` gets a 200. Plain HTTP/1.1 over a socket is enough for a
/// health check and saves an HTTP client dependency.
fn answers_ok(address: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else { return false };
    if stream.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status_line = String::new();
    if BufReader::new(stream).read_line(&mut status_line).is_err() {
        return false;
    }
    status_line.split_whitespace().nth(1) == Some("200")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Fails early, naming whoever holds the port, rather than letting a gunicorn die
/// with "Address already in use" in the middle of its log.
fn ensure_port_free(port: u16, wanted_by: &str) -> Result<()> {
    match TcpListener::bind(local(port)) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AddrInUse => bail!(
            "port {port} (for {wanted_by}) is already in use{}; stop that process \
             (an earlier `cargo xtask demo` still running?) and try again",
            port_holder(port)
        ),
        Err(error) => Err(error).with_context(|| format!("checking that port {port} is free")),
    }
}

/// " by gunicorn (pid 123)" from `ss`, or a command to find out when `ss` cannot tell.
fn port_holder(port: u16) -> String {
    let fallback = format!(" (see `ss -ltnp 'sport = :{port}'` or `lsof -iTCP:{port} -sTCP:LISTEN`)");
    let Ok(output) = Command::new("ss").args(["-Hltnp", &format!("sport = :{port}")]).output() else {
        return fallback;
    };
    // Lines end in `users:(("gunicorn",pid=123,fd=5),("gunicorn",pid=124,fd=5))`.
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut holders: Vec<String> = Vec::new();
    for entry in listing.split("(\"").skip(1) {
        let Some((name, rest)) = entry.split_once('"') else { continue };
        let pid: String = rest.split("pid=").nth(1).unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
        let holder = format!("{name} (pid {pid})");
        if !pid.is_empty() && !holders.contains(&holder) {
            holders.push(holder);
        }
    }
    if holders.is_empty() {
        fallback
    } else {
        format!(" by {}", holders.join(", "))
    }
}

fn print_banner(backends: &[Backend], logs: &std::path::Path) {
    let services: Vec<String> = backends.iter().map(Backend::label).collect();
    println!(
        "
portico is up on http://localhost:{GATEWAY_PORT}, in front of {services}.
Try:
  curl localhost:{GATEWAY_PORT}/student-api/users/1/
  curl localhost:{GATEWAY_PORT}/live-reading/lesson/1/
  curl -X POST localhost:{GATEWAY_PORT}/student-api/register/ -H 'content-type: application/json' \\
       -d '{{\"username\":\"demo\",\"email\":\"demo@example.com\",\"full_name\":\"Demo User\",\"grade\":4,\"password\":\"demo-password\"}}'
  curl localhost:{GATEWAY_PORT}/readyz
The data survives restarts (a second register of \"demo\" gets 400); `cargo xtask setup --reseed` resets it.
Payments need a signed-in user; mint a demo token and pay:
  TOKEN=$(target/release/portico token --sub 1 --scope payments:read | tail -n 1)
  curl -X POST localhost:{GATEWAY_PORT}/payment/checkout/ -H \"authorization: Bearer $TOKEN\" -H 'Idempotency-Key: demo-1' \\
       -H 'content-type: application/json' -d '{{\"student_id\":1,\"amount\":\"49.00\",\"currency\":\"USD\"}}'
GraphQL: open http://localhost:{GATEWAY_PORT}/graphql in a browser (GraphiQL), or run examples/graphql/run.sh.
Metrics: curl localhost:{GATEWAY_PORT}/metrics
The terminal shows portico's log and the services' warnings and errors; their access logs are in {logs}/.
Press Ctrl-C to stop everything.
",
        services = services.join(", "),
        logs = logs.display()
    );
}
