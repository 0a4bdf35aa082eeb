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
//! - Four scenarios (`--scenarios`, all by default): the REST passthrough,
//!   the contract's `Dashboard` (four backend calls), a large answer and a
//!   large fan-out, both reported as MiB/s of response JSON per core as
//!   well. The large answer, `readingSessions(studentId: 1000, first:
//!   6000)` with each session's lesson and student, is about 1 MB of
//!   response JSON from three backend calls (one long sessions page, one
//!   batched lesson call, one batched student call): it measures what
//!   the gateway does with backend JSON, and issue 12's 300 MiB/s and
//!   5 × Node targets apply to it. The fan-out, `students(first: 500)` with
//!   every student's reading sessions and their lessons, is also about
//!   1 MB but from 502 backend calls (one per student, by the contract):
//!   it measures HTTP fan-out more than JSON, and its numbers are reported
//!   without those targets. The answers of all targets of either scenario
//!   must be equal JSON (their `data`), so that no target is measured
//!   answering less; the size is measured from each target's actual
//!   answer.
//! - One operation per target is counted at the stubs (NGINX's
//!   `stub_status`, less the health checks the stubs log): the backend calls
//!   and new backend connections of the first operation and of one after
//!   the warm-up, and the stubs' CPU per operation during the runs, which
//!   should stay well below the target's.
//! - `--before BINARY` runs a previous portico build as targets of its own,
//!   in the same rounds, for "no slower than before" and "no more backend
//!   calls than before"; `--profile` records one extra REST run of portico
//!   with perf (`profile.rs`).
//!
//! `--replicas N` measures something else: N portico replicas sharing one
//! `redis-server` (one client's admitted rate against its policy, the
//! shared cache tier, recovery after a Redis restart; `replicas.rs`).
//!
//! `--smoke` runs portico and NGINX only (debug build, a second per
//! target, a large answer of 500 sessions and a fan-out of 50 students for
//! three seconds each, pinned the same way, no Node) so that a test keeps this command from rotting; its
//! checks are reported, never enforced.

mod chart;
mod measure;
mod nginx;
mod profile;
mod replicas;
mod report;
mod stub;
mod tools;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
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
/// The fan-out: every student of the stubs' `/users/` page with their
/// sessions (one backend call per student) and the sessions' lessons
/// (batched).
const FAN_OUT: &str = "query FanOut { students(first: 500) { id fullName \
    readingSessions { wordsPerMinute lesson { title level } } } }";

/// The large answer: one student's `sessions` reading sessions (one
/// backend page), their lessons and their student (each batched into one
/// call).
fn large_query(sessions: u32) -> String {
    format!(
        "query Sessions {{ readingSessions(studentId: {}, first: {sessions}) {{ id startedAt wordsPerMinute \
         accuracy lesson {{ title level }} student {{ fullName }} }} }}",
        stub::READER
    )
}
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
    /// Which scenarios run.
    pub scenarios: Vec<Kind>,
    /// Open connections for the large answer: a few keep the target busy
    /// while others wait on the stubs, and with few open at the end of a
    /// run, little of the run's CPU time goes to requests it does not count
    /// (a slow target answers a few dozen per run).
    pub large_concurrency: u32,
    /// Seconds per large-answer run when not `seconds`: the smoke mode's
    /// debug build takes a second for one answer.
    pub large_seconds: Option<u32>,
    /// Sessions in the large answer (`stub::READER_SESSIONS`; fewer in the
    /// smoke mode).
    pub large_sessions: u32,
    /// Open connections for the fan-out: each of its operations fans out
    /// into 500 backend calls at once, so two keep the target busy, and a
    /// slow target answers a handful per run.
    pub fanout_concurrency: u32,
    /// Seconds per fan-out run when not `seconds`.
    pub fanout_seconds: Option<u32>,
    /// Students in the fan-out (`stub::STUDENTS`; fewer in the smoke mode,
    /// whose debug build would take seconds per answer).
    pub fanout_students: u32,
    /// `--replicas N`: instead of the comparison, N portico replicas over
    /// one Redis (`replicas.rs`).
    pub replicas: Option<u32>,
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
            scenarios: Kind::ALL.to_vec(),
            large_concurrency: 4,
            large_seconds: None,
            large_sessions: stub::READER_SESSIONS,
            fanout_concurrency: 2,
            fanout_seconds: None,
            fanout_students: stub::STUDENTS,
            replicas: None,
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
            scenarios: Kind::ALL.to_vec(),
            large_concurrency: 1,
            large_seconds: Some(3),
            large_sessions: 500,
            fanout_concurrency: 1,
            fanout_seconds: Some(3),
            fanout_students: 50,
            replicas: None,
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
                "--replicas" => options.replicas = Some(value()?.parse().context("--replicas")?),
                "--large-concurrency" => {
                    options.large_concurrency = value()?.parse().context("--large-concurrency")?;
                }
                "--fanout-concurrency" => {
                    options.fanout_concurrency = value()?.parse().context("--fanout-concurrency")?;
                }
                "--scenarios" => {
                    options.scenarios = value()?
                        .split(',')
                        .map(|name| {
                            Kind::ALL.into_iter().find(|kind| kind.label() == name.trim()).with_context(|| {
                                format!("unknown scenario {name:?} (rest, dashboard, large and fanout exist)")
                            })
                        })
                        .collect::<Result<_>>()?;
                }
                other => bail!("unknown bench option {other:?}"),
            }
        }
        ensure!(
            options.seconds > 0
                && options.rounds > 0
                && options.concurrency > 0
                && options.large_concurrency > 0
                && options.fanout_concurrency > 0,
            "bench options must be positive"
        );
        ensure!(!options.scenarios.is_empty(), "--scenarios names none");
        if options.profile {
            ensure!(
                [Kind::Rest, Kind::Dashboard, Kind::Large].iter().any(|kind| options.scenarios.contains(kind)),
                "--profile records the REST, Dashboard and large-answer scenarios; add one of them to --scenarios"
            );
        }
        Ok(options)
    }
}

/// One thing under load.
struct Target {
    name: String,
    kind: Kind,
    url: String,
    body: Option<String>,
    authorization: Option<String>,
    /// The child whose processes' CPU time and memory are the target's.
    process: &'static str,
    /// Open connections of the load generator.
    concurrency: u32,
    /// Seconds per measured run.
    seconds: u32,
    /// The size of the target's answer body, as checked before the load.
    response_bytes: u64,
    /// Backend calls of the target's first request, counted at the stubs.
    first_calls: Option<u64>,
    /// Backend calls of one request once warmed up (pools, caches).
    warm_calls: Option<u64>,
    /// New backend connections of one request once warmed up.
    warm_connections: Option<u64>,
}

/// A scenario: what the targets are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rest,
    Dashboard,
    /// About 1 MB of JSON from three backend calls.
    Large,
    /// About 1 MB of JSON from 502 backend calls.
    FanOut,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Rest, Kind::Dashboard, Kind::Large, Kind::FanOut];

    fn label(self) -> &'static str {
        match self {
            Kind::Rest => "rest",
            Kind::Dashboard => "dashboard",
            Kind::Large => "large",
            Kind::FanOut => "fanout",
        }
    }

    /// How target names end: "portico Large", "Node Fan-out".
    fn title(self) -> &'static str {
        match self {
            Kind::Rest => "REST",
            Kind::Dashboard => "Dashboard",
            Kind::Large => "Large",
            Kind::FanOut => "Fan-out",
        }
    }

    /// A ~1 MB answer, checked in full and reported in MiB/s per core.
    fn is_large(self) -> bool {
        matches!(self, Kind::Large | Kind::FanOut)
    }
}

/// Runs the benchmark; see the module doc.
pub fn bench(workspace: &Workspace, options: &Options) -> Result<Value> {
    if let Some(replicas) = options.replicas {
        return replicas::bench(workspace, options, replicas);
    }
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
    // NGINX's workers run as `nobody` and read the stubs' files from here.
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))?;
    let stub_data = scratch.path().join("stub-data");
    std::fs::create_dir_all(&stub_data)?;
    let stubs = nginx::Instance::write(
        scratch.path(),
        "stubs",
        &stub::http_body(stub_port, &stub_data, options.fanout_students, options.large_sessions)?,
    )?;
    stubs.check(&nginx)?;
    step(format!("starting the NGINX stub backends on :{stub_port} (CPU {})", cpus.load));
    children.spawn("stubs", Cpus::pinned(cpus.load, &nginx).args(stubs.args()))?;
    let backend = local(stub_port);
    wait_until_answering(&mut children, "the stubs", backend, "/health/")?;

    // One portico process per load, so that each one's peak RSS is that
    // load's own (the REST target's limit is on memory, too).
    let scenarios = &options.scenarios;
    let wants = |kind: Kind| scenarios.contains(&kind);
    let mut ports: Vec<(Kind, &'static str, &'static str, u16)> = Vec::new();
    for (kind, process, before_process) in [
        (Kind::Rest, "portico-rest", "portico-before-rest"),
        (Kind::Dashboard, "portico-dashboard", "portico-before-dashboard"),
        (Kind::Large, "portico-large", "portico-before-large"),
        (Kind::FanOut, "portico-fanout", "portico-before-fanout"),
    ] {
        if !wants(kind) {
            continue;
        }
        let port = start_portico(&mut children, process, &portico, scratch.path(), backend, cpus)?;
        ports.push((kind, "portico", process, port));
        if let Some(before) = &options.before {
            let port = start_portico(&mut children, before_process, before, scratch.path(), backend, cpus)?;
            ports.push((kind, "portico (before)", before_process, port));
        }
    }
    let token_config = scratch.path().join(format!("{}.toml", ports[0].2));
    let token = mint_token(&portico, &token_config)?;

    let nginx_port = if wants(Kind::Rest) {
        let nginx_port = free_port()?;
        let proxy = nginx::Instance::write(scratch.path(), "proxy", &nginx::proxy_body(nginx_port, backend))?;
        proxy.check(&nginx)?;
        step(format!("starting NGINX as the reverse proxy on :{nginx_port} (CPU {})", cpus.target));
        children.spawn("nginx", Cpus::pinned(cpus.target, &nginx).args(proxy.args()))?;
        wait_until_answering(&mut children, "nginx", local(nginx_port), REST_PATH)?;
        Some(nginx_port)
    } else {
        None
    };

    // One Node process per GraphQL scenario, for the same reason as above.
    let mut node_ports = Vec::new();
    if !options.smoke {
        let node_dir = install_node_peer(workspace)?;
        for (kind, process) in [(Kind::Dashboard, "node"), (Kind::Large, "node-large"), (Kind::FanOut, "node-fanout")] {
            if !wants(kind) {
                continue;
            }
            let node_port = free_port()?;
            step(format!("starting the Node peer (Apollo Server 4) {process} on :{node_port} (CPU {})", cpus.target));
            let base = format!("http://{backend}");
            children.spawn(
                process,
                Cpus::pinned(cpus.target, Path::new("node"))
                    .arg(node_dir.join("server.js"))
                    .args([&base, &base, &base, &node_port.to_string()])
                    .env("NODE_ENV", "production")
                    .current_dir(&node_dir)
                    .stdout(Stdio::null()),
            )?;
            wait_until_answering(&mut children, process, local(node_port), "/")?;
            node_ports.push((kind, process, node_port));
        }
    }

    let target = |name, kind, process, url: String| {
        let (body, authorization, concurrency, seconds) = match kind {
            Kind::Rest => (None, None, options.concurrency, options.seconds),
            Kind::Dashboard => {
                (Some(dashboard_body()), Some(format!("Bearer {token}")), options.concurrency, options.seconds)
            }
            Kind::Large => (
                Some(large_body(options.large_sessions)),
                None,
                options.large_concurrency,
                options.large_seconds.unwrap_or(options.seconds),
            ),
            Kind::FanOut => (
                Some(fan_out_body()),
                None,
                options.fanout_concurrency,
                options.fanout_seconds.unwrap_or(options.seconds),
            ),
        };
        Target {
            name,
            kind,
            url,
            body,
            authorization,
            process,
            concurrency,
            seconds,
            response_bytes: 0,
            first_calls: None,
            warm_calls: None,
            warm_connections: None,
        }
    };
    let portico_target = |kind: Kind, who: &str, process, port: u16| {
        let path = if kind == Kind::Rest { REST_PATH } else { "/graphql" };
        target(format!("{who} {}", kind.title()), kind, process, format!("http://{}{path}", local(port)))
    };
    let mut targets = Vec::new();
    for kind in Kind::ALL {
        let mut of_kind = ports.iter().filter(|(of, ..)| *of == kind);
        if let Some((_, who, process, port)) = of_kind.next() {
            targets.push(portico_target(kind, who, process, *port));
        }
        if let (Kind::Rest, Some(port)) = (kind, nginx_port) {
            targets.push(target("NGINX REST".to_owned(), kind, "nginx", format!("http://{}{REST_PATH}", local(port))));
        }
        for (_, process, port) in node_ports.iter().filter(|(of, ..)| *of == kind) {
            targets.push(target(format!("Node {}", kind.title()), kind, process, format!("http://{}/", local(*port))));
        }
        for (_, who, process, port) in of_kind {
            targets.push(portico_target(kind, who, process, *port));
        }
    }

    let script = scratch.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    // The first answer of each large scenario, which the others must equal.
    let mut large_data: Vec<(Kind, String, Value)> = Vec::new();
    let counter = Counter { address: backend, health_log: stub_data.join(stub::HEALTH_LOG) };
    for target in &mut targets {
        let (answer, tally) = counter.calls(|| check_answer(target))?;
        target.response_bytes = answer.len() as u64;
        target.first_calls = Some(tally.calls);
        if target.kind.is_large() {
            let data = match target.kind {
                Kind::FanOut => fan_out_answer_data(&target.name, &answer, options.fanout_students)?,
                _ => large_answer_data(&target.name, &answer, options.large_sessions)?,
            };
            match large_data.iter().find(|(kind, ..)| *kind == target.kind) {
                None => large_data.push((target.kind, target.name.clone(), data)),
                Some((_, first, expected)) => ensure!(
                    same_json(expected, &data),
                    "{} and {first} answered the {} query differently: the benchmark would compare unequal work",
                    target.name,
                    target.kind.label()
                ),
            }
            println!("    {}: answer of {} bytes, data equal to every other target's", target.name, answer.len());
        }
    }

    // Warm-up: connection pools, JIT, allocator arenas.
    step("warming up");
    for target in &targets {
        load(&script, target, 1, cpus)?;
        settle(children.pid(target.process).context("target process")?);
    }

    // After the warm-up, as the measured runs see them (pools and any
    // gateway cache warm).
    step("counting backend calls per operation at the stubs");
    for target in &mut targets {
        // Health checks only add calls: the fewest of three is the count.
        // Connections vary either way (idle ones time out): the median.
        let (mut fewest, mut connections) = (u64::MAX, Vec::new());
        for _ in 0..3 {
            let tally = counter.calls(|| check_answer(target))?.1;
            fewest = fewest.min(tally.calls);
            connections.push(tally.connections);
        }
        connections.sort_unstable();
        let connections = connections[1];
        target.warm_calls = Some(fewest);
        target.warm_connections = Some(connections);
        println!(
            "    {:<26} {} backend calls per operation ({} on new connections), {} in the first",
            target.name,
            fewest,
            connections,
            target.first_calls.unwrap_or(0)
        );
    }

    step(format!(
        "measuring: {} rounds × {} targets × {} s, {} connections ({} for the large answer, {} for the fan-out)",
        options.rounds,
        targets.len(),
        options.seconds,
        options.concurrency,
        options.large_concurrency,
        options.fanout_concurrency
    ));
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        let count = targets.len();
        for offset in 0..count {
            let index = (offset + round as usize) % count;
            let target = &targets[index];
            let mut result = measured(&children, &script, target, cpus)?;
            result.round = round + 1;
            print_run(target, &result, cpus);
            runs[index].push(result);
        }
    }

    if options.profile {
        // The gateway under each of its own scenarios that ran.
        let profiled = [
            ("rest", "portico REST", format!("GET {REST_PATH}")),
            ("dashboard", "portico Dashboard", "the Dashboard operation".to_owned()),
            ("large", "portico Large", "the large answer".to_owned()),
        ];
        for (name, wanted, what) in profiled {
            let Some(target) = targets.iter().find(|target| target.name == wanted) else { continue };
            let pid = children.pid(target.process).context("portico's process")?;
            step(format!("profiling portico under {what}: perf record -g and perf stat for {} s", options.seconds));
            // perf outlasts the load by a second, so that the counts hold the
            // whole run (an idle portico adds next to nothing).
            let recording = profile::Recording::start(pid, options.seconds + 1, cpus.load, &options.out_dir, name)?;
            let result = load(&script, target, options.seconds, cpus)?;
            let path = recording.finish(
                &format!(
                    "portico ({}) under {what}, {} connections: {:.1} req/s while recorded",
                    portico.display(),
                    target.concurrency,
                    result.throughput()
                ),
                result.requests,
            )?;
            println!("    profile: {}", path.display());
        }
    }

    let cores = Cores { target: cpus.target, load: cpus.load };
    let mut summaries = Vec::new();
    for (target, runs) in targets.iter().zip(&runs) {
        let pids = measure::process_tree(children.pid(target.process).context("target process")?);
        let rss = measure::peak_rss_bytes(&pids);
        let answer = report::Answer {
            bytes: target.response_bytes,
            first_calls: target.first_calls,
            warm_calls: target.warm_calls,
            warm_connections: target.warm_connections,
        };
        summaries.push(report::summarize(&target.name, target.kind.label(), runs, rss, answer, cores));
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
            "large_concurrency": options.large_concurrency,
            "fanout_concurrency": options.fanout_concurrency,
            "large_query": large_query(options.large_sessions),
            "fanout_query": FAN_OUT,
            "scenarios": options.scenarios.iter().map(|kind| kind.label()).collect::<Vec<_>>(),
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
fn measured(children: &Children, script: &Path, target: &Target, cpus: Cpus) -> Result<Run> {
    let pid = children.pid(target.process).context("target process")?;
    let stubs = measure::process_tree(children.pid("stubs").context("the stubs' process")?);
    let cpu_before = measure::cpu_seconds(&measure::process_tree(pid));
    let stubs_before = measure::cpu_seconds(&stubs);
    let cores_before = CoreTimes::now();
    let mut result = load(script, target, target.seconds, cpus)?;
    result.cores = CoreTimes::now().busy_since(&cores_before);
    // The tree again: a process that appeared during the run counts from 0.
    result.cpu_seconds = measure::cpu_seconds(&measure::process_tree(pid)) - cpu_before;
    result.stub_cpu_seconds = measure::cpu_seconds(&stubs) - stubs_before;
    result.concurrency = target.concurrency;
    settle(pid);
    Ok(result)
}

/// Waits (up to 30 s) until the target has stopped working on the requests
/// `wrk` abandoned at the end of its run (Node finishes them; a large
/// answer takes it seconds), so that the next target has the core to
/// itself.
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = measure::cpu_seconds(&measure::process_tree(pid));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = measure::cpu_seconds(&measure::process_tree(pid));
        // Under 5 % of a core: idle but for timers and health checks.
        if now - last < 0.01 {
            return;
        }
        last = now;
    }
}

fn print_run(target: &Target, run: &Run, cpus: Cpus) {
    let busy = |cpu: usize| run.cores.get(cpu).copied().unwrap_or(0.0) * 100.0;
    let load_busy = busy(cpus.load);
    println!(
        "    round {} {:<26} {:>6.1} µs CPU/req {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  \
         CPU {} {:.0} % (target {:.0} %)  CPU {} {:.0} %{}{}",
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
        if target.kind.is_large() {
            format!("  {:.1} MiB/s of JSON per core", report::mib_per_s_per_core(target.response_bytes, run))
        } else {
            String::new()
        },
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
        " --rounds {} --seconds {} --concurrency {} --large-concurrency {} --fanout-concurrency {} --scenarios {}",
        options.rounds,
        options.seconds,
        options.concurrency,
        options.large_concurrency,
        options.fanout_concurrency,
        options.scenarios.iter().map(|kind| kind.label()).collect::<Vec<_>>().join(",")
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
fn load(script: &Path, target: &Target, seconds: u32, cpus: Cpus) -> Result<Run> {
    let output = Cpus::pinned(cpus.load, Path::new("wrk"))
        .arg("-t1")
        .arg(format!("-c{}", target.concurrency))
        .arg(format!("-d{seconds}s"))
        // A large answer from a slow target takes seconds.
        .args(["--timeout", if target.kind.is_large() { "60s" } else { "5s" }, "-s"])
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
/// instead of being benchmarked answering errors; the answer's body.
fn check_answer(target: &Target) -> Result<String> {
    let address: SocketAddr = target
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|authority| authority.parse().ok())
        .context("target address")?;
    let path = format!("/{}", target.url.trim_start_matches("http://").split_once('/').map_or("", |(_, path)| path));
    let (status, body) = http_request(address, &path, target.body.as_deref(), target.authorization.as_deref())?;
    ensure!(status == 200, "{} answered {status}:\n{body}", target.name);
    let complete = match target.kind {
        Kind::Rest => body.contains(stub::USER),
        Kind::Dashboard => {
            body.contains("\"fullName\":\"Ada Lovelace\"") && body.contains("Lesson 7") && !body.contains("\"errors\"")
        }
        // Checked in full by `large_answer_data` and `fan_out_answer_data`.
        Kind::Large | Kind::FanOut => true,
    };
    ensure!(complete, "{} did not answer in full:\n{body}", target.name);
    Ok(body)
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`):
/// the status and the body, de-chunked.
fn http_request(
    address: SocketAddr,
    path: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> Result<(u16, String)> {
    let mut request = match body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n"),
    };
    if let Some(authorization) = authorization {
        let _ = write!(request, "Authorization: {authorization}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(body.unwrap_or(""));
    let mut stream = TcpStream::connect(address)?;
    // The debug build's large answer takes a while.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).with_context(|| format!("reading {address}{path}"))?;
    let answer = String::from_utf8(answer).with_context(|| format!("{address}{path} answered other than UTF-8"))?;
    let (head, payload) = answer.split_once("\r\n\r\n").with_context(|| format!("{address}{path}: {answer}"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{address}{path} answered:\n{answer}"))?;
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(payload).with_context(|| format!("{address}{path}'s chunks"))?
    } else {
        payload.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut payload: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, rest) = payload.split_once("\r\n").context("a chunk size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).context("a chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(rest.get(..size).context("a chunk shorter than its size")?);
        payload = rest.get(size..).and_then(|rest| rest.strip_prefix("\r\n")).context("a chunk's end")?;
    }
}

/// The `data` of an answer without errors.
fn answer_data(name: &str, answer: &str) -> Result<Value> {
    let mut answer: Value = serde_json::from_str(answer).with_context(|| format!("{name}'s answer is not JSON"))?;
    ensure!(answer.get("errors").is_none(), "{name}'s answer has errors: {}", answer["errors"]);
    Ok(answer["data"].take())
}

/// The `data` of a large answer, checked to be complete: every session of
/// the reader's page, each with its lesson and its student.
fn large_answer_data(name: &str, answer: &str, expected: u32) -> Result<Value> {
    let data = answer_data(name, answer)?;
    let sessions =
        data["readingSessions"].as_array().with_context(|| format!("{name}'s large answer has no sessions"))?;
    ensure!(sessions.len() == expected as usize, "{name} answered {} sessions, not {expected}", sessions.len());
    let reader = format!("Student {}", stub::READER);
    let complete = sessions
        .iter()
        .all(|session| session["lesson"]["title"].is_string() && session["student"]["fullName"] == reader.as_str());
    ensure!(complete, "{name}'s large answer lacks lessons or students");
    Ok(data)
}

/// The `data` of a fan-out answer, checked to be complete: every student of
/// the stubs, none missing its sessions, no errors.
fn fan_out_answer_data(name: &str, answer: &str, students: u32) -> Result<Value> {
    let data = answer_data(name, answer)?;
    let expected = students;
    let students = data["students"].as_array().with_context(|| format!("{name}'s fan-out has no students"))?;
    ensure!(students.len() == expected as usize, "{name} answered {} students, not {expected}", students.len());
    let complete = students.iter().all(|student| {
        student["readingSessions"].as_array().is_some_and(|sessions| {
            !sessions.is_empty() && sessions.iter().all(|session| session["lesson"]["title"].is_string())
        })
    });
    ensure!(complete, "{name}'s fan-out lacks sessions or lessons");
    Ok(data)
}

/// Equal JSON, numbers compared by value (`112.0` and `112` alike: Node
/// and serde print whole floats differently).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, a)| b.get(key).is_some_and(|b| same_json(a, b)))
        }
        (a, b) => a == b,
    }
}

/// Counts backend calls at the stubs: NGINX's `stub_status` request count
/// around a request, less the count's own request and the gateways' health
/// checks (which land on the same stubs now and then, and are logged).
struct Counter {
    address: SocketAddr,
    health_log: PathBuf,
}

impl Counter {
    /// Requests and connections the stubs have served (the status
    /// request's included) and health checks logged so far.
    fn now(&self) -> Result<(u64, u64, u64)> {
        let health = std::fs::read(&self.health_log).map_or(0, |log| log.iter().filter(|b| **b == b'\n').count());
        let (status, body) = http_request(self.address, stub::STATUS_PATH, None, None)?;
        ensure!(status == 200, "the stubs' status answered {status}");
        // "Active connections: 1\n server accepts handled requests\n 1 1 1\n ..."
        let counts: Vec<u64> = body
            .lines()
            .nth(2)
            .map(|line| line.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        let [accepted, _, requests] = counts[..] else { bail!("the stubs' status: {body}") };
        Ok((requests, accepted, health as u64))
    }

    /// `request`'s result, the backend calls made meanwhile and the
    /// connections opened to the stubs for them.
    fn calls<T>(&self, request: impl FnOnce() -> Result<T>) -> Result<(T, Tally)> {
        let (requests, accepted, health) = self.now()?;
        let result = request()?;
        // A health check counted by NGINX may reach the log an instant
        // later: read the log after the count.
        let (requests_after, accepted_after, _) = self.now()?;
        let health_after = self.now()?.2;
        let calls = requests_after.saturating_sub(requests).saturating_sub(1).saturating_sub(health_after - health);
        let connections = accepted_after.saturating_sub(accepted).saturating_sub(1);
        Ok((result, Tally { calls, connections }))
    }
}

/// What one operation cost the stubs.
#[derive(Debug, Clone, Copy)]
struct Tally {
    calls: u64,
    /// New connections (a gateway keeping fewer idle connections than it
    /// has calls in flight opens more).
    connections: u64,
}

fn dashboard_body() -> String {
    json!({"query": DASHBOARD, "operationName": "Dashboard", "variables": {"id": "1"}}).to_string()
}

fn large_body(sessions: u32) -> String {
    json!({"query": large_query(sessions), "operationName": "Sessions"}).to_string()
}

fn fan_out_body() -> String {
    json!({"query": FAN_OUT, "operationName": "FanOut"}).to_string()
}

/// portico over the stubs: every service on the one stub, the REST route,
/// JWT auth for the Dashboard; access logs off (`warn`), as NGINX's
/// `access_log off`, while metrics, request ids and trace context stay on
/// (their defaults). The large answers' costs (6000 sessions; 500
/// students, each with up to 50 sessions by `@listSize`) are above the
/// default `max_cost`, which protects a public API; the benchmark raises it.
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
         [graphql]\nenabled = true\nmax_cost = 1000000\n",
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
    /// cores' busy shares, and portico's large answer and fan-out (short
    /// ones) with their size, MiB/s per core and backend calls. `cargo test --workspace` has
    /// built the debug `portico` binary (the integration tests need it)
    /// before any test runs.
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
        assert_eq!(
            names,
            ["portico REST", "NGINX REST", "portico Dashboard", "portico Large", "portico Fan-out"],
            "{report}"
        );
        for target in targets {
            assert!(target["requests"].as_u64().unwrap_or(0) > 0, "{target}");
            assert!(target["peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{target}");
            assert!(target["cpu_us_per_request"].as_f64().unwrap_or(0.0) > 0.0, "{target}");
            let busy = &target["rounds"][0]["core_busy"];
            assert!(busy.as_array().is_some_and(|cores| cores.len() >= 2), "{target}");
            assert!(target["response_bytes"].as_u64().unwrap_or(0) > 100, "{target}");
        }
        // The REST passthrough is one call; the Dashboard's first operation
        // is the contract's four (a warm one may take the lessons from
        // portico's cache); the large answer's three (sessions, lessons,
        // student); the fan-out one per student and more.
        let calls = |index: usize, key: &str| targets[index][key].as_u64().unwrap_or(0);
        assert_eq!((calls(0, "first_backend_calls"), calls(0, "backend_calls")), (1, 1), "{report}");
        assert_eq!(calls(2, "first_backend_calls"), 4, "{report}");
        assert_eq!(calls(3, "first_backend_calls"), 3, "{report}");
        assert!(calls(4, "first_backend_calls") > 50 && calls(4, "backend_calls") > 50, "{report}");
        for large in &targets[3..] {
            assert!(large["response_bytes"].as_u64().unwrap_or(0) > 50_000, "{large}");
            assert!(large["response_mib_per_s_per_core"].as_f64().unwrap_or(0.0) > 0.0, "{large}");
        }
        let comparison = &report["comparisons"][0];
        assert_eq!(comparison["label"], "REST passthrough: portico / NGINX", "{report}");
        assert!(comparison["ratios"]["cpu_us_per_request"].as_f64().is_some(), "{report}");
        let checks = report["checks"].as_array().expect("checks");
        assert!(checks.iter().any(|check| check["pass"].is_boolean()), "{report}");
        let markdown = std::fs::read_to_string(options.out_dir.join("results.md")).expect("results.md");
        assert!(markdown.starts_with("| CPU µs per request |"), "{markdown}");
        assert!(markdown.contains("| issue 12 target |"), "{markdown}");
        for file in ["results.json", "results.png"] {
            assert!(options.out_dir.join(file).is_file(), "{file} missing");
        }
    }

    /// The large answers of two targets compare by value, not by how they
    /// print numbers, and a missing field is a difference.
    #[test]
    fn large_answers_compare_as_json() {
        let portico: Value = serde_json::from_str(r#"{"a":[{"wpm":112.0,"t":"x"}]}"#).expect("JSON");
        let node: Value = serde_json::from_str(r#"{"a":[{"t":"x","wpm":112}]}"#).expect("JSON");
        assert!(same_json(&portico, &node));
        let short: Value = serde_json::from_str(r#"{"a":[{"t":"x"}]}"#).expect("JSON");
        assert!(!same_json(&portico, &short) && !same_json(&short, &portico));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").expect("chunks"), "{\"a\":1}");
        assert!(dechunk("9\r\nshort\r\n").is_err());
    }

    #[test]
    fn options_parse() {
        let workspace = Workspace::locate();
        let options =
            Options::parse(&workspace, &["--profile", "--before", "/old/portico", "--rounds", "2"]).expect("parsed");
        assert!(options.profile && !options.smoke);
        assert_eq!(options.before.as_deref(), Some(Path::new("/old/portico")));
        assert_eq!((options.rounds, options.concurrency), (2, 50));
        assert_eq!(options.scenarios, Kind::ALL);
        let options = Options::parse(&workspace, &["--scenarios", "fanout,large,dashboard"]).expect("parsed");
        assert_eq!(options.scenarios, [Kind::FanOut, Kind::Large, Kind::Dashboard]);
        assert!(Options::parse(&workspace, &["--scenarios", "graphql"]).is_err());
        let options = Options::parse(&workspace, &["--replicas", "2", "--seconds", "3"]).expect("parsed");
        assert_eq!((options.replicas, options.seconds), (Some(2), 3));
        assert!(Options::parse(&workspace, &["--replicas"]).is_err());
        assert!(Options::parse(&workspace, &["--rounds", "0"]).is_err());
        assert!(Options::parse(&workspace, &["--bogus"]).is_err());
    }
}
