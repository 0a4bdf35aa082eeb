//! `cargo xtask bench [--smoke]`: portico against NGINX (REST passthrough)
//! and against a Node GraphQL peer (Apollo Server 4, the `Dashboard`
//! operation), on this machine, in one go.
//!
//! Fairness on a two-core machine: every target runs pinned to CPU 0 with
//! `taskset`; the stub backends (inside this process) and the load
//! generator (`wrk`, fixed concurrency, one thread) share CPU 1. Targets
//! take turns, interleaved over several rounds in a rotating order, so
//! that background noise spreads over all of them; the ratios of one run
//! are the result, not the absolute numbers.
//!
//! `--smoke` runs portico alone (debug build, a second per target, no
//! thresholds) so that a test can keep this command from rotting.

mod chart;
mod stub;

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
    /// Portico alone, debug build, very short runs.
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
}

impl Options {
    pub fn full(workspace: &Workspace) -> Self {
        Options {
            smoke: false,
            seconds: 10,
            rounds: 3,
            concurrency: 32,
            out_dir: workspace.target_dir().join("bench"),
            portico: None,
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
                other => bail!("unknown bench option {other:?}"),
            }
        }
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
    /// The process whose (and whose children's) memory and CPU are measured.
    process: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rest,
    Graphql,
}

/// One run of the load generator.
#[derive(Debug, Clone, Default)]
struct Run {
    requests: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    errors: u64,
    non_2xx: u64,
    cpu_seconds: f64,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the benchmark; see the module doc.
pub fn bench(workspace: &Workspace, options: &Options) -> Result<Value> {
    let tools = Tools::find(options.smoke)?;
    if !options.smoke {
        // Stubs are threads of this process, so the process goes to CPU 1;
        // children are pinned explicitly.
        pin_self_to_cpu(1)?;
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

    step("starting the stub backends");
    let stubs = stub::Stubs::start()?;
    let mut children = Children::default();
    let portico_port = free_port()?;
    let config_path = options.out_dir.join("portico.toml");
    std::fs::write(&config_path, portico_config(portico_port, &stubs))?;
    step(format!("starting portico on :{portico_port}"));
    children
        .spawn("portico", pinned(0, &portico).args(["serve", "--config"]).arg(&config_path).stdout(Stdio::null()))?;
    wait_until_answering(&mut children, "portico", local(portico_port), "/healthz")?;
    let token = mint_token(&portico, &config_path)?;

    let mut targets = vec![
        Target {
            name: "portico REST",
            kind: Kind::Rest,
            url: format!("http://{}{REST_PATH}", local(portico_port)),
            body: None,
            authorization: None,
            process: "portico",
        },
        Target {
            name: "portico Dashboard",
            kind: Kind::Graphql,
            url: format!("http://{}/graphql", local(portico_port)),
            body: Some(dashboard_body()),
            authorization: Some(format!("Bearer {token}")),
            process: "portico",
        },
    ];

    if !options.smoke {
        let nginx_port = free_port()?;
        let nginx_dir = options.out_dir.join("nginx");
        std::fs::create_dir_all(&nginx_dir)?;
        let nginx_config = nginx_dir.join("nginx.conf");
        std::fs::write(&nginx_config, nginx_config_text(nginx_port, &stubs, &nginx_dir))?;
        step(format!("starting nginx on :{nginx_port}"));
        children.spawn(
            "nginx",
            pinned(0, Path::new(&tools.nginx)).arg("-c").arg(&nginx_config).args(["-g", "daemon off;"]),
        )?;
        wait_until_answering(&mut children, "nginx", local(nginx_port), REST_PATH)?;
        targets.insert(
            1,
            Target {
                name: "NGINX REST",
                kind: Kind::Rest,
                url: format!("http://{}{REST_PATH}", local(nginx_port)),
                body: None,
                authorization: None,
                process: "nginx",
            },
        );

        let node_dir = install_node_peer(workspace)?;
        let node_port = free_port()?;
        step(format!("starting the Node peer (Apollo Server 4) on :{node_port}"));
        children.spawn(
            "node",
            pinned(0, Path::new("node"))
                .arg(node_dir.join("server.js"))
                .args([
                    format!("http://{}", stubs.student_api),
                    format!("http://{}", stubs.live_reading),
                    format!("http://{}", stubs.payment),
                    node_port.to_string(),
                ])
                .env("NODE_ENV", "production")
                .current_dir(&node_dir),
        )?;
        wait_until_answering(&mut children, "node", local(node_port), "/")?;
        targets.push(Target {
            name: "Node Dashboard",
            kind: Kind::Graphql,
            url: format!("http://{}/", local(node_port)),
            body: Some(dashboard_body()),
            authorization: Some(format!("Bearer {token}")),
            process: "node",
        });
    }

    let script = options.out_dir.join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    for target in &targets {
        check_answer(target)?;
    }

    // Warm-up: connection pools, JIT, allocator arenas.
    step("warming up");
    for target in &targets {
        load(&tools, &script, target, options.concurrency, 1)?;
    }

    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        let count = targets.len();
        for offset in 0..count {
            let index = (offset + round as usize) % count;
            let target = &targets[index];
            let pids = process_tree(children.pid(target.process).context("target process")?);
            let cpu_before = cpu_seconds(&pids);
            let mut result = load(&tools, &script, target, options.concurrency, options.seconds)?;
            result.cpu_seconds =
                cpu_seconds(&process_tree(children.pid(target.process).context("target")?)) - cpu_before;
            println!(
                "    round {} {:<18} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}",
                round + 1,
                target.name,
                result.throughput(),
                result.p50_us / 1000.0,
                result.p99_us / 1000.0,
                result.p999_us / 1000.0,
                result.errors + result.non_2xx
            );
            runs[index].push(result);
        }
    }

    let mut summaries = Vec::new();
    for (target, runs) in targets.iter().zip(&runs) {
        let pids = process_tree(children.pid(target.process).context("target process")?);
        let rss = peak_rss_bytes(&pids);
        summaries.push(summarize(target, runs, rss));
    }
    children.stop_all();
    drop(stubs);

    let report = report(options, &summaries);
    let markdown = markdown(&report);
    std::fs::write(options.out_dir.join("results.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(options.out_dir.join("results.md"), &markdown)?;
    chart::draw(&options.out_dir.join("results.png"), &report)?;
    println!("\n{markdown}");
    println!("results: {}/results.{{json,md,png}}", options.out_dir.display());
    for summary in &summaries {
        let failed = summary["errors"].as_u64().unwrap_or(0);
        ensure!(failed == 0, "{} answered {failed} requests with errors", summary["target"]);
    }
    Ok(report)
}

struct Tools {
    wrk: String,
    nginx: String,
}

impl Tools {
    /// Finds the load generator (and, for the full run, NGINX and Node),
    /// installing Debian packages that are missing when running as root.
    fn find(smoke: bool) -> Result<Tools> {
        ensure_command("wrk", "wrk", &["--version"])?;
        ensure_command("taskset", "util-linux", &["--version"])?;
        let nginx = if smoke {
            String::new()
        } else {
            ensure_command("nginx", "nginx", &["-v"])?;
            ensure!(
                Command::new("node").arg("--version").output().is_ok_and(|output| output.status.success()),
                "the Node peer needs Node.js (`node`) with npm; install Debian's nodejs and npm"
            );
            "nginx".to_owned()
        };
        Ok(Tools { wrk: "wrk".to_owned(), nginx })
    }
}

/// Makes sure `command` runs, installing Debian's `package` when it does not.
fn ensure_command(command: &str, package: &str, probe: &[&str]) -> Result<()> {
    let present = |name: &str| {
        Command::new(name).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
            || Path::new("/usr/sbin").join(name).is_file()
    };
    if present(command) {
        return Ok(());
    }
    println!("==> `{command}` is missing: installing Debian's {package} package (apt-get install {package})");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !matches!(installed, Ok(status) if status.success()) {
        // The package lists may be missing on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let retried = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        ensure!(
            matches!(retried, Ok(status) if status.success()),
            "could not install {package}; install it yourself (`sudo apt-get install {package}`) and run again"
        );
    }
    ensure!(present(command), "{command} is still missing after installing {package}");
    Ok(())
}

/// `taskset -c <cpu> <program>`: the program, pinned to one CPU.
fn pinned(cpu: u32, program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpu.to_string()).arg(program);
    command
}

fn pin_self_to_cpu(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU index")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the stubs and the load generator to CPU {cpu} (a machine with 2 CPUs?)"))
}

/// Runs `wrk` against `target` and reads the report line the Lua script prints.
fn load(tools: &Tools, script: &Path, target: &Target, concurrency: u32, seconds: u32) -> Result<Run> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", &tools.wrk, "-t1"])
        .arg(format!("-c{concurrency}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(&target.url)
        .env("BENCH_BODY", target.body.as_deref().unwrap_or(""))
        .env("BENCH_AUTH", target.authorization.as_deref().unwrap_or(""))
        .stdin(Stdio::null());
    let output = command.output().context("running wrk")?;
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
        cpu_seconds: 0.0,
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
    if target.kind == Kind::Graphql {
        ensure!(
            answer.contains("\"fullName\":\"Ada Lovelace\"")
                && answer.contains("Lesson 7")
                && !answer.contains("\"errors\""),
            "{} did not answer Dashboard in full:\n{answer}",
            target.name
        );
    }
    Ok(())
}

fn dashboard_body() -> String {
    json!({"query": DASHBOARD, "operationName": "Dashboard", "variables": {"id": "1"}}).to_string()
}

fn portico_config(port: u16, stubs: &stub::Stubs) -> String {
    let service = |name: &str, address: SocketAddr| {
        format!(
            "[services.{name}]\nendpoints = [\"http://{address}\"]\nmax_idle_per_host = 256\n\
             health_check = {{ enabled = true, interval = \"5s\" }}\n\n"
        )
    };
    format!(
        "# Written by `cargo xtask bench`: REST passthrough and GraphQL over the stub backends.\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         # Access logs off, as for NGINX (`access_log off`); metrics stay on.\n\
         [telemetry]\nlog_level = \"warn\"\n\n\
         {}{}{}\
         [[routes]]\nprefix = \"/student-api/\"\nservice = \"student_api\"\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"portico-bench-secret-0123456789-0123456789\"\n\n\
         [graphql]\nenabled = true\n",
        service("student_api", stubs.student_api),
        service("live_reading", stubs.live_reading),
        service("payment", stubs.payment),
    )
}

fn nginx_config_text(port: u16, stubs: &stub::Stubs, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "# Written by `cargo xtask bench`: the same REST passthrough as portico's\n\
         # /student-api/ route, with upstream keep-alive and forwarding headers.\n\
         worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {dir}/body;\n\
         \x20   proxy_temp_path {dir}/proxy;\n\
         \x20   fastcgi_temp_path {dir}/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/uwsgi;\n\
         \x20   scgi_temp_path {dir}/scgi;\n\
         \x20   upstream student_api {{ server {}; keepalive 64; }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location /student-api/ {{\n\
         \x20           proxy_pass http://student_api/;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Real-IP $remote_addr;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           proxy_set_header X-Forwarded-Host $host;\n\
         \x20           proxy_set_header X-Request-Id $request_id;\n\
         \x20           add_header X-Request-Id $request_id;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        stubs.student_api
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

/// `pid` and its descendants (NGINX's workers, for instance).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut index = 0;
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|candidate| Some((candidate, stat_fields(candidate)?.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(all.iter().filter(|(_, ppid)| *ppid == parent).map(|(child, _)| *child));
        index += 1;
    }
    tree
}

/// Fields of `/proc/<pid>/stat` after the command name (state is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time of the processes, in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // Clock ticks; Linux has used 100 per second on every common build.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.iter()
        .filter_map(|pid| {
            let fields = stat_fields(*pid)?;
            // utime and stime are fields 14 and 15 of stat, 11 and 12 here.
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / TICKS_PER_SECOND)
        })
        .sum()
}

/// Sum of the processes' peak resident set (VmHWM).
fn peak_rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn summarize(target: &Target, runs: &[Run], rss: u64) -> Value {
    let requests: u64 = runs.iter().map(|run| run.requests).sum();
    let cpu: f64 = runs.iter().map(|run| run.cpu_seconds).sum();
    json!({
        "target": target.name,
        "kind": match target.kind { Kind::Rest => "rest", Kind::Graphql => "graphql" },
        "throughput_rps": median(runs.iter().map(Run::throughput).collect()),
        "p50_ms": median(runs.iter().map(|run| run.p50_us / 1000.0).collect()),
        "p99_ms": median(runs.iter().map(|run| run.p99_us / 1000.0).collect()),
        "p999_ms": median(runs.iter().map(|run| run.p999_us / 1000.0).collect()),
        "peak_rss_mib": rss as f64 / (1024.0 * 1024.0),
        "cpu_seconds_per_1000": if requests == 0 { 0.0 } else { cpu / requests as f64 * 1000.0 },
        "requests": requests,
        "errors": runs.iter().map(|run| run.errors + run.non_2xx).sum::<u64>(),
        "rounds": runs.iter().map(|run| json!({
            "throughput_rps": run.throughput(), "p50_ms": run.p50_us / 1000.0, "p99_ms": run.p99_us / 1000.0,
            "p999_ms": run.p999_us / 1000.0, "cpu_seconds": run.cpu_seconds, "requests": run.requests,
        })).collect::<Vec<_>>(),
    })
}

fn report(options: &Options, summaries: &[Value]) -> Value {
    let find = |name: &str| summaries.iter().find(|summary| summary["target"] == name);
    let ratio = |a: &str, b: &str, key: &str| -> Value {
        match (find(a), find(b)) {
            (Some(a), Some(b)) => {
                let (a, b) = (a[key].as_f64().unwrap_or(0.0), b[key].as_f64().unwrap_or(0.0));
                if b > 0.0 {
                    json!(a / b)
                } else {
                    Value::Null
                }
            }
            _ => Value::Null,
        }
    };
    json!({
        "mode": if options.smoke { "smoke" } else { "full" },
        "machine": machine(),
        "command": if options.smoke { "cargo xtask bench --smoke" } else { "cargo xtask bench" },
        "load": { "generator": "wrk -t1", "concurrency": options.concurrency, "seconds_per_run": options.seconds, "rounds": options.rounds },
        "targets": summaries,
        "ratios": {
            "rest_throughput_portico_over_nginx": ratio("portico REST", "NGINX REST", "throughput_rps"),
            "rest_p99_portico_over_nginx": ratio("portico REST", "NGINX REST", "p99_ms"),
            "dashboard_throughput_portico_over_node": ratio("portico Dashboard", "Node Dashboard", "throughput_rps"),
            "dashboard_p99_portico_over_node": ratio("portico Dashboard", "Node Dashboard", "p99_ms"),
        },
    })
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

fn markdown(report: &Value) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "| target | req/s | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | CPU s / 1000 req |");
    let _ = writeln!(text, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for target in report["targets"].as_array().into_iter().flatten() {
        let number = |key: &str| target[key].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.3} |",
            target["target"].as_str().unwrap_or(""),
            number("throughput_rps"),
            number("p50_ms"),
            number("p99_ms"),
            number("p999_ms"),
            number("peak_rss_mib"),
            number("cpu_seconds_per_1000"),
        );
    }
    let ratios = &report["ratios"];
    let mut lines = Vec::new();
    for (key, label) in [
        ("rest_throughput_portico_over_nginx", "REST throughput portico / NGINX"),
        ("rest_p99_portico_over_nginx", "REST p99 portico / NGINX"),
        ("dashboard_throughput_portico_over_node", "Dashboard throughput portico / Node"),
        ("dashboard_p99_portico_over_node", "Dashboard p99 portico / Node"),
    ] {
        if let Some(value) = ratios[key].as_f64() {
            lines.push(format!("{label}: **{value:.2}**"));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(text, "\n{}", lines.join(" · "));
    }
    let load = &report["load"];
    let _ = writeln!(
        text,
        "\n{} · {} at {} connections, {} s per target per round, {} rounds (medians); targets on CPU 0, stubs and load generator on CPU 1.",
        report["machine"].as_str().unwrap_or(""),
        load["generator"].as_str().unwrap_or(""),
        load["concurrency"],
        load["seconds_per_run"],
        load["rounds"],
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smoke mode, so that the command cannot rot. `cargo test
    /// --workspace` has built the debug `portico` binary (the integration
    /// tests need it) before any test runs.
    #[test]
    fn smoke_mode_measures_portico() {
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
        assert_eq!(targets.len(), 2, "{report}");
        for target in targets {
            assert!(target["requests"].as_u64().unwrap_or(0) > 0, "{target}");
            assert!(target["peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{target}");
        }
        for file in ["results.json", "results.md", "results.png"] {
            assert!(options.out_dir.join(file).is_file(), "{file} missing");
        }
    }

    #[test]
    fn medians_and_markdown() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let report =
            json!({"targets": [{"target": "x", "throughput_rps": 10.0}], "ratios": {}, "machine": "m", "load": {}});
        assert!(markdown(&report).contains("| x | 10 |"));
    }
}
