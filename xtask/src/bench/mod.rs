//! `cargo xtask bench`: portico against NGINX (REST passthrough) and
//! against a Node GraphQL peer (Apollo Server 4, the `Dashboard`
//! operation), on this machine, in one go, built so that the gateway, not
//! the load side, is the bottleneck.
//!
//! - The backends are NGINX `return 200` stubs (`stub.rs`), cheaper per
//!   request than any target; NGINX as the reverse proxy under test proxies
//!   to the same stub with upstream keep-alive (`nginx.rs`).
//! - Each target runs alone on one CPU (`taskset`); the stubs, `wrk` (one
//!   thread, fixed concurrency) and `perf` share the other. Targets take
//!   turns, interleaved over several rounds in a rotating order, so that
//!   background noise spreads over all of them.
//! - The headline is CPU time per request (user + system of every process
//!   of the target over the run, over the requests it answered): unlike
//!   req/s it does not depend on who set the pace. Each core's busy share is
//!   recorded per run and the report warns when the load core was
//!   saturated, when targets tie at its ceiling, when the target was not the
//!   limit, or when other processes shared the target's core (`report.rs`).
//! - `--before BINARY` runs a previous portico build as targets of its own,
//!   in the same rounds, for issue 11's "Dashboard no slower than before";
//!   `--profile` records one extra REST run of portico with perf
//!   (`profile.rs`).
//!
//! `--smoke` runs portico and NGINX only (debug build, a second per
//! target, pinned the same way, no Node) so that a test keeps this command
//! from rotting; its checks are reported, never enforced.

mod chart;
mod measure;
mod nginx;
mod profile;
mod report;
mod stub;
mod tools;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::children::Children;
use crate::workspace::{run, step, Workspace};
use measure::CoreTimes;
use report::{Cores, Run};
use tools::Cpus;

/// The contract's reference operation.
const DASHBOARD: &str = "query Dashboard($id: ID!) { student(id: $id) { fullName \
    readingSessions { wordsPerMinute accuracy lesson { title level } } payments { amount currency status } } }";
const REST_PATH: &str = "/student-api/users/1/";
const WRK_SCRIPT: &str = include_str!("../../bench/report.lua");
const NODE_SERVER: &str = include_str!("../../bench/node/server.js");
const NODE_PACKAGE: &str = include_str!("../../bench/node/package.json");

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Portico and NGINX only, debug build, very short runs.
    pub smoke: bool,
    /// Seconds per target per round.
    pub seconds: u32,
    /// Rounds over all targets.
    pub rounds: u32,
    /// Open connections of the load generator.
    pub concurrency: u32,
    /// Where results go.
    pub out_dir: PathBuf,
    /// The portico binary to run; built first when `None`.
    pub portico: Option<PathBuf>,
    /// A previous portico binary, measured alongside.
    pub before: Option<PathBuf>,
    /// One extra portico REST run under `perf record`.
    pub profile: bool,
}

impl Options {
    pub fn full(workspace: &Workspace) -> Self {
        Options {
            smoke: false,
            seconds: 10,
            rounds: 3,
            concurrency: 50,
            out_dir: workspace.target_dir().join("bench"),
            portico: None,
            before: None,
            profile: false,
        }
    }

    pub fn smoke(workspace: &Workspace) -> Self {
        Options {
            smoke: true,
            seconds: 1,
            rounds: 1,
            concurrency: 4,
            out_dir: workspace.target_dir().join("bench-smoke"),
            portico: None,
            before: None,
            profile: false,
        }
    }

    pub fn parse(workspace: &Workspace, args: &[&str]) -> Result<Self> {
        let mut options = if args.contains(&"--smoke") { Options::smoke(workspace) } else { Options::full(workspace) };
        let mut rest = args.iter().filter(|arg| **arg != "--smoke");
        while let Some(flag) = rest.next() {
            let mut value = || rest.next().with_context(|| format!("{flag} needs a value"));
            match *flag {
                "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
                "--rounds" => options.rounds = value()?.parse().context("--rounds")?,
                "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
                "--portico" => options.portico = Some(PathBuf::from(value()?)),
                "--before" => options.before = Some(PathBuf::from(value()?)),
                "--profile" => options.profile = true,
                other => bail!("unknown bench option {other:?}"),
            }
        }
        ensure!(options.seconds > 0 && options.rounds > 0 && options.concurrency > 0, "bench options must be positive");
        Ok(options)
    }
}

/// One thing under load.
struct Target {
    name: &'static str,
    kind: Kind,
    url: String,
    body: Option<String>,
    authorization: Option<String>,
    /// The child whose processes' CPU time and memory are the target's.
    process: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rest,
    Graphql,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Rest => "rest",
            Kind::Graphql => "graphql",
        }
    }
}

/// Runs the benchmark; see the module doc.
pub fn bench(workspace: &Workspace, options: &Options) -> Result<Value> {
    let cpus = Cpus::find()?;
    tools::ensure_command("wrk", "wrk", &["--version"])?;
    tools::ensure_command("taskset", "util-linux", &["--version"])?;
    let nginx = nginx::find()?;
    if options.profile {
        profile::ensure_perf()?;
    }
    if !options.smoke {
        ensure!(
            Command::new("node").arg("--version").output().is_ok_and(|output| output.status.success()),
            "the Node peer needs Node.js (`node`) with npm; install Debian's nodejs and npm"
        );
    }
    std::fs::create_dir_all(&options.out_dir).with_context(|| format!("creating {}", options.out_dir.display()))?;

    let portico = match &options.portico {
        Some(path) => path.clone(),
        None if options.smoke => {
            step("building the gateway: cargo build --bin portico");
            run(workspace.cargo().args(["build", "--bin", "portico"]), "cargo build")?;
            workspace.target_dir().join("debug").join("portico")
        }
        None => {
            step("building the gateway: cargo build --release --bin portico");
            run(workspace.cargo().args(["build", "--release", "--bin", "portico"]), "cargo build --release")?;
            workspace.release_binary("portico")
        }
    };
    ensure!(portico.is_file(), "{} does not exist; build it first", portico.display());
    if let Some(before) = &options.before {
        ensure!(before.is_file(), "--before {} does not exist", before.display());
    }

    // Configurations, pid files and logs of this run; removed at the end,
    // after `children` (declared later, dropped first) has stopped them.
    let scratch = tempfile::Builder::new().prefix("portico-bench-").tempdir().context("creating a temp dir")?;
    let mut children = Children::default();

    let stub_port = free_port()?;
    let stubs = nginx::Instance::write(scratch.path(), "stubs", &stub::http_body(stub_port))?;
    stubs.check(&nginx)?;
    step(format!("starting the NGINX stub backends on :{stub_port} (CPU {})", cpus.load));
    children.spawn("stubs", Cpus::pinned(cpus.load, &nginx).args(stubs.args()))?;
    let backend = local(stub_port);
    wait_until_answering(&mut children, "the stubs", backend, "/health/")?;

    // One portico process per load, so that each one's peak RSS is that
    // load's own (the REST target's limit is on memory, too).
    let mut start = |name, binary: &Path| start_portico(&mut children, name, binary, scratch.path(), backend, cpus);
    let portico_ports = (start("portico-rest", &portico)?, start("portico-dashboard", &portico)?);
    let before_ports = match &options.before {
        Some(before) => Some((start("portico-before-rest", before)?, start("portico-before-dashboard", before)?)),
        None => None,
    };
    let token = mint_token(&portico, &scratch.path().join("portico-rest.toml"))?;

    let nginx_port = free_port()?;
    let proxy = nginx::Instance::write(scratch.path(), "proxy", &nginx::proxy_body(nginx_port, backend))?;
    proxy.check(&nginx)?;
    step(format!("starting NGINX as the reverse proxy on :{nginx_port} (CPU {})", cpus.target));
    children.spawn("nginx", Cpus::pinned(cpus.target, &nginx).args(proxy.args()))?;
    wait_until_answering(&mut children, "nginx", local(nginx_port), REST_PATH)?;

    let node_port = if options.smoke {
        None
    } else {
        let node_dir = install_node_peer(workspace)?;
        let node_port = free_port()?;
        step(format!("starting the Node peer (Apollo Server 4) on :{node_port} (CPU {})", cpus.target));
        let base = format!("http://{backend}");
        children.spawn(
            "node",
            Cpus::pinned(cpus.target, Path::new("node"))
                .arg(node_dir.join("server.js"))
                .args([&base, &base, &base, &node_port.to_string()])
                .env("NODE_ENV", "production")
                .current_dir(&node_dir)
                .stdout(Stdio::null()),
        )?;
        wait_until_answering(&mut children, "node", local(node_port), "/")?;
        Some(node_port)
    };

    let rest = |name, process, port: u16| Target {
        name,
        kind: Kind::Rest,
        url: format!("http://{}{REST_PATH}", local(port)),
        body: None,
        authorization: None,
        process,
    };
    let dashboard = |name, process, port: u16, path: &str| Target {
        name,
        kind: Kind::Graphql,
        url: format!("http://{}{path}", local(port)),
        body: Some(dashboard_body()),
        authorization: Some(format!("Bearer {token}")),
        process,
    };
    let mut targets =
        vec![rest("portico REST", "portico-rest", portico_ports.0), rest("NGINX REST", "nginx", nginx_port)];
    if let Some((port, _)) = before_ports {
        targets.push(rest("portico (before) REST", "portico-before-rest", port));
    }
    targets.push(dashboard("portico Dashboard", "portico-dashboard", portico_ports.1, "/graphql"));
    if let Some(port) = node_port {
        targets.push(dashboard("Node Dashboard", "node", port, "/"));
    }
    if let Some((_, port)) = before_ports {
        targets.push(dashboard("portico (before) Dashboard", "portico-before-dashboard", port, "/graphql"));
    }

    let script = scratch.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    for target in &targets {
        check_answer(target)?;
    }

    // Warm-up: connection pools, JIT, allocator arenas.
    step("warming up");
    for target in &targets {
        load(&script, target, options.concurrency, 1, cpus)?;
    }

    step(format!(
        "measuring: {} rounds × {} targets × {} s, {} connections",
        options.rounds,
        targets.len(),
        options.seconds,
        options.concurrency
    ));
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        let count = targets.len();
        for offset in 0..count {
            let index = (offset + round as usize) % count;
            let target = &targets[index];
            let mut result = measured(&children, &script, target, options, cpus)?;
            result.round = round + 1;
            print_run(target, &result, cpus);
            runs[index].push(result);
        }
    }

    if options.profile {
        let target = targets.iter().find(|target| target.name == "portico REST").context("portico REST")?;
        let pid = children.pid(target.process).context("portico's process")?;
        step(format!("profiling portico under the REST load: perf record -g and perf stat for {} s", options.seconds));
        // perf outlasts the load by a second, so that the counts hold the
        // whole run (an idle portico adds next to nothing).
        let recording = profile::Recording::start(pid, options.seconds + 1, cpus.load, &options.out_dir)?;
        let result = load(&script, target, options.concurrency, options.seconds, cpus)?;
        let path = recording.finish(
            &format!(
                "portico ({}) under GET {REST_PATH}, {} connections: {:.0} req/s while recorded",
                portico.display(),
                options.concurrency,
                result.throughput()
            ),
            result.requests,
        )?;
        println!("    profile: {}", path.display());
    }

    let cores = Cores { target: cpus.target, load: cpus.load };
    let mut summaries = Vec::new();
    for (target, runs) in targets.iter().zip(&runs) {
        let pids = measure::process_tree(children.pid(target.process).context("target process")?);
        let rss = measure::peak_rss_bytes(&pids);
        summaries.push(report::summarize(target.name, target.kind.label(), runs, rss, cores));
    }
    children.stop_all();

    let comparisons = report::comparisons(&summaries);
    let checks = report::checks(&summaries, &comparisons);
    let warnings = report::warnings(&summaries, &comparisons, cores);
    let report = json!({
        "mode": if options.smoke { "smoke" } else { "full" },
        "machine": machine(),
        "command": command_line(options),
        "load": {
            "generator": "wrk -t1",
            "stubs": "NGINX return 200, one worker",
            "concurrency": options.concurrency,
            "seconds_per_run": options.seconds,
            "rounds": options.rounds,
            "cpus": { "target": cpus.target, "load": cpus.load },
        },
        "targets": summaries,
        "comparisons": comparisons,
        "checks": checks,
        "warnings": warnings,
    });
    let markdown = report::markdown(&report);
    std::fs::write(options.out_dir.join("results.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(options.out_dir.join("results.md"), &markdown)?;
    chart::draw(&options.out_dir.join("results.png"), &report)?;
    println!("\n{markdown}");
    println!("results: {}/results.{{json,md,png}}", options.out_dir.display());
    for summary in report["targets"].as_array().into_iter().flatten() {
        let failed = summary["errors"].as_u64().unwrap_or(0);
        ensure!(failed == 0, "{} answered {failed} requests with errors", summary["target"]);
    }
    Ok(report)
}

/// Starts a portico binary on CPU `cpus.target` over the stubs; its port.
fn start_portico(
    children: &mut Children,
    name: &'static str,
    binary: &Path,
    dir: &Path,
    backend: SocketAddr,
    cpus: Cpus,
) -> Result<u16> {
    let port = free_port()?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, portico_config(port, backend))?;
    step(format!("starting {name} ({}) on :{port} (CPU {})", binary.display(), cpus.target));
    children.spawn(
        name,
        Cpus::pinned(cpus.target, binary).args(["serve", "--config"]).arg(&config).stdout(Stdio::null()),
    )?;
    wait_until_answering(children, name, local(port), "/healthz")?;
    Ok(port)
}

/// One measured run: the load, the target's CPU time and each core's busy
/// share over it.
fn measured(children: &Children, script: &Path, target: &Target, options: &Options, cpus: Cpus) -> Result<Run> {
    let pid = children.pid(target.process).context("target process")?;
    let cpu_before = measure::cpu_seconds(&measure::process_tree(pid));
    let cores_before = CoreTimes::now();
    let mut result = load(script, target, options.concurrency, options.seconds, cpus)?;
    result.cores = CoreTimes::now().busy_since(&cores_before);
    // The tree again: a process that appeared during the run counts from 0.
    result.cpu_seconds = measure::cpu_seconds(&measure::process_tree(pid)) - cpu_before;
    Ok(result)
}

fn print_run(target: &Target, run: &Run, cpus: Cpus) {
    let busy = |cpu: usize| run.cores.get(cpu).copied().unwrap_or(0.0) * 100.0;
    let load_busy = busy(cpus.load);
    println!(
        "    round {} {:<26} {:>6.1} µs CPU/req {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  \
         CPU {} {:.0} % (target {:.0} %)  CPU {} {:.0} %{}",
        run.round,
        target.name,
        run.cpu_us_per_request(),
        run.throughput(),
        run.p50_us / 1000.0,
        run.p99_us / 1000.0,
        run.errors + run.non_2xx,
        cpus.target,
        busy(cpus.target),
        run.target_share() * 100.0,
        cpus.load,
        load_busy,
        if load_busy >= report::SATURATED * 100.0 { "  WARNING: load core saturated" } else { "" },
    );
}

fn command_line(options: &Options) -> String {
    let mut line = String::from("cargo xtask bench");
    if options.smoke {
        line.push_str(" --smoke");
    }
    let _ = write!(
        line,
        " --rounds {} --seconds {} --concurrency {}",
        options.rounds, options.seconds, options.concurrency
    );
    if options.before.is_some() {
        line.push_str(" --before <binary>");
    }
    if options.profile {
        line.push_str(" --profile");
    }
    line
}

/// Runs `wrk` on the load CPU against `target` and reads the report line
/// the Lua script prints.
fn load(script: &Path, target: &Target, concurrency: u32, seconds: u32, cpus: Cpus) -> Result<Run> {
    let output = Cpus::pinned(cpus.load, Path::new("wrk"))
        .arg("-t1")
        .arg(format!("-c{concurrency}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(script)
        .arg(&target.url)
        .env("BENCH_BODY", target.body.as_deref().unwrap_or(""))
        .env("BENCH_AUTH", target.authorization.as_deref().unwrap_or(""))
        .stdin(Stdio::null())
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed against {}: {stdout}{}",
        target.url,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("BENCH "))
        .with_context(|| format!("wrk printed no report line:\n{stdout}"))?;
    let value: Value = serde_json::from_str(line).with_context(|| format!("wrk's report {line:?}"))?;
    let number = |key: &str| value[key].as_f64().unwrap_or(0.0);
    Ok(Run {
        requests: value["requests"].as_u64().unwrap_or(0),
        seconds: number("duration_us") / 1e6,
        p50_us: number("p50_us"),
        p99_us: number("p99_us"),
        p999_us: number("p999_us"),
        errors: value["errors"].as_u64().unwrap_or(0),
        non_2xx: value["non_2xx"].as_u64().unwrap_or(0),
        ..Run::default()
    })
}

/// One request by hand, so that a misconfigured target fails loudly
/// instead of being benchmarked answering errors.
fn check_answer(target: &Target) -> Result<()> {
    let address: SocketAddr = target
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|authority| authority.parse().ok())
        .context("target address")?;
    let path = format!("/{}", target.url.trim_start_matches("http://").split_once('/').map_or("", |(_, path)| path));
    let mut request = match &target.body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n"),
    };
    if let Some(authorization) = &target.authorization {
        let _ = write!(request, "Authorization: {authorization}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(target.body.as_deref().unwrap_or(""));
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer)?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{} answered:\n{answer}", target.name);
    let complete = match target.kind {
        Kind::Rest => answer.contains(stub::USER),
        Kind::Graphql => {
            answer.contains("\"fullName\":\"Ada Lovelace\"")
                && answer.contains("Lesson 7")
                && !answer.contains("\"errors\"")
        }
    };
    ensure!(complete, "{} did not answer in full:\n{answer}", target.name);
    Ok(())
}

fn dashboard_body() -> String {
    json!({"query": DASHBOARD, "operationName": "Dashboard", "variables": {"id": "1"}}).to_string()
}

/// portico over the stubs: every service on the one stub, the REST route,
/// JWT auth for the Dashboard; access logs off (`warn`), as NGINX's
/// `access_log off`, while metrics, request ids and trace context stay on
/// (their defaults).
fn portico_config(port: u16, backend: SocketAddr) -> String {
    let service = |name: &str| {
        format!(
            "[services.{name}]\nendpoints = [\"http://{backend}\"]\nmax_idle_per_host = 256\n\
             health_check = {{ enabled = true, interval = \"5s\" }}\n\n"
        )
    };
    format!(
        "# Written by `cargo xtask bench`: REST passthrough and GraphQL over the NGINX stubs.\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [telemetry]\nlog_level = \"warn\"\n\n\
         {}{}{}\
         [[routes]]\nprefix = \"/student-api/\"\nservice = \"student_api\"\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"portico-bench-secret-0123456789-0123456789\"\n\n\
         [graphql]\nenabled = true\n",
        service("student_api"),
        service("live_reading"),
        service("payment"),
    )
}

/// Installs the Node peer's packages into `target/bench-node` (not
/// committed) and copies its server there.
fn install_node_peer(workspace: &Workspace) -> Result<PathBuf> {
    let dir = workspace.target_dir().join("bench-node");
    std::fs::create_dir_all(&dir)?;
    let package = dir.join("package.json");
    let installed = dir.join("node_modules").join("@apollo").join("server").is_dir()
        && std::fs::read_to_string(&package).is_ok_and(|text| text == NODE_PACKAGE);
    std::fs::write(&package, NODE_PACKAGE)?;
    std::fs::write(dir.join("server.js"), NODE_SERVER)?;
    if !installed {
        step("installing the Node peer: npm install (Apollo Server 4, @apollo/datasource-rest, dataloader)");
        run(Command::new("npm").args(["install", "--no-audit", "--no-fund"]).current_dir(&dir), "npm install")?;
    }
    Ok(dir)
}

fn mint_token(portico: &Path, config: &Path) -> Result<String> {
    let output = Command::new(portico)
        .args(["token", "--sub", "1", "--scope", "payments:read", "--ttl", "2h", "--config"])
        .arg(config)
        .stderr(Stdio::null())
        .output()
        .context("minting a token with `portico token`")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let token = text.lines().last().unwrap_or("").trim().to_owned();
    ensure!(output.status.success() && !token.is_empty(), "`portico token` failed");
    Ok(token)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn wait_until_answering(children: &mut Children, name: &str, address: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((exited, status)) = children.first_exited()? {
            bail!("{exited} exited during startup ({status})");
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            let mut status_line = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && BufReader::new(stream).read_line(&mut status_line).is_ok()
                && status_line.starts_with("HTTP/1.1 ")
            {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "{name} did not answer on {address} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // Counted from cpuinfo: this process may be pinned to one CPU by now.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map_or(0, |text| text.lines().filter(|line| line.starts_with("processor")).count());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().next()?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(String::new(), |kib| format!(", {} GiB RAM", kib / 1024 / 1024));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or(String::new(), |text| format!(", Linux {}", text.trim()));
    format!("{cores} × {cpu}{memory}{kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smoke mode, so that the command cannot rot: portico and NGINX
    /// over the NGINX stubs, each measured with its CPU per request and the
    /// cores' busy shares. `cargo test --workspace` has built the debug
    /// `portico` binary (the integration tests need it) before any test runs.
    #[test]
    fn smoke_mode_measures_portico_and_nginx() {
        let workspace = Workspace::locate();
        let binary = workspace.target_dir().join("debug").join("portico");
        assert!(
            binary.is_file(),
            "{} is missing; run `cargo test --workspace` (or `cargo build`) first",
            binary.display()
        );
        let mut options = Options::smoke(&workspace);
        options.portico = Some(binary);
        options.out_dir = workspace.target_dir().join("bench-smoke-test");
        let report = bench(&workspace, &options).expect("the smoke benchmark runs");
        let targets = report["targets"].as_array().expect("targets");
        let names: Vec<&str> = targets.iter().filter_map(|target| target["target"].as_str()).collect();
        assert_eq!(names, ["portico REST", "NGINX REST", "portico Dashboard"], "{report}");
        for target in targets {
            assert!(target["requests"].as_u64().unwrap_or(0) > 0, "{target}");
            assert!(target["peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{target}");
            assert!(target["cpu_us_per_request"].as_f64().unwrap_or(0.0) > 0.0, "{target}");
            let busy = &target["rounds"][0]["core_busy"];
            assert!(busy.as_array().is_some_and(|cores| cores.len() >= 2), "{target}");
        }
        let comparison = &report["comparisons"][0];
        assert_eq!(comparison["label"], "REST passthrough: portico / NGINX", "{report}");
        assert!(comparison["ratios"]["cpu_us_per_request"].as_f64().is_some(), "{report}");
        let checks = report["checks"].as_array().expect("checks");
        assert!(checks.iter().any(|check| check["pass"].is_boolean()), "{report}");
        let markdown = std::fs::read_to_string(options.out_dir.join("results.md")).expect("results.md");
        assert!(markdown.starts_with("| CPU µs per request |"), "{markdown}");
        for file in ["results.json", "results.png"] {
            assert!(options.out_dir.join(file).is_file(), "{file} missing");
        }
    }

    #[test]
    fn options_parse() {
        let workspace = Workspace::locate();
        let options =
            Options::parse(&workspace, &["--profile", "--before", "/old/portico", "--rounds", "2"]).expect("parsed");
        assert!(options.profile && !options.smoke);
        assert_eq!(options.before.as_deref(), Some(Path::new("/old/portico")));
        assert_eq!((options.rounds, options.concurrency), (2, 50));
        assert!(Options::parse(&workspace, &["--rounds", "0"]).is_err());
        assert!(Options::parse(&workspace, &["--bogus"]).is_err());
    }
}
