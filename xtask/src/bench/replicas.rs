//! `cargo xtask bench --replicas N`: N portico replicas sharing one
//! `redis-server`, measured for what running several replicas promises
//! (issue 15): one client's combined admitted rate against its rate-limit
//! policy under load on every replica at once, the shared (Redis) cache
//! tier answering one replica from another's fill, and how the replicas
//! serve while Redis is down and how long after its restart they use it
//! again.
//!
//! The replicas run on the target CPU, the NGINX stubs, `redis-server`
//! and one `wrk` per replica on the load CPU, as in the main benchmark;
//! the figures are about correctness and recovery, not CPU per request.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use super::{free_port, load, local, mint_token, nginx, stub, tools, wait_until_answering, Counter, Kind, Options};
use super::{Target, WRK_SCRIPT};
use crate::children::Children;
use crate::workspace::{run, step, Workspace};
use tools::Cpus;

/// The one client's policy: far below what the replicas answer, so the
/// limiter, not the gateway, sets the admitted rate.
const PER_SECOND: f64 = 500.0;
const BURST: f64 = 50.0;
/// The limited route, over the stubs' user answer.
const LIMITED_PATH: &str = "/limited/users/1/";
/// The publicly cached route.
const CACHED_PATH: &str = "/cached/1/";
/// Replicas behind one name see the same Host, which is part of the cache key.
const HOST: &str = "portico.bench";
/// How long the load runs while Redis is down.
const OUTAGE_SECONDS: u32 = 2;

/// Runs the replicas benchmark; see the module doc.
pub fn bench(workspace: &Workspace, options: &Options, replicas: u32) -> Result<Value> {
    ensure!(replicas >= 2, "--replicas needs at least 2");
    let cpus = Cpus::find()?;
    tools::ensure_command("wrk", "wrk", &["--version"])?;
    tools::ensure_command("taskset", "util-linux", &["--version"])?;
    tools::ensure_command("redis-server", "redis-server", &["--version"])?;
    let nginx = nginx::find()?;
    std::fs::create_dir_all(&options.out_dir).with_context(|| format!("creating {}", options.out_dir.display()))?;
    let portico = match &options.portico {
        Some(path) => path.clone(),
        None => {
            step("building the gateway: cargo build --release --bin portico");
            run(workspace.cargo().args(["build", "--release", "--bin", "portico"]), "cargo build --release")?;
            workspace.release_binary("portico")
        }
    };
    ensure!(portico.is_file(), "{} does not exist; build it first", portico.display());

    let scratch = tempfile::Builder::new().prefix("portico-replicas-").tempdir().context("creating a temp dir")?;
    let mut children = Children::default();
    let stub_port = free_port()?;
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let stub_data = scratch.path().join("stub-data");
    std::fs::create_dir_all(&stub_data)?;
    let stubs = nginx::Instance::write(scratch.path(), "stubs", &stub::http_body(stub_port, &stub_data, 10, 10)?)?;
    stubs.check(&nginx)?;
    step(format!("starting the NGINX stub backends on :{stub_port} (CPU {})", cpus.load));
    children.spawn("stubs", Cpus::pinned(cpus.load, &nginx).args(stubs.args()))?;
    let backend = local(stub_port);
    wait_until_answering(&mut children, "the stubs", backend, "/health/")?;

    let mut redis = Redis::start(cpus.load)?;
    step(format!("redis-server on :{} (CPU {})", redis.address.port(), cpus.load));

    let (mut ports, mut names) = (Vec::new(), Vec::new());
    for index in 0..replicas {
        let port = free_port()?;
        let config = scratch.path().join(format!("replica-{index}.toml"));
        std::fs::write(&config, replica_config(port, backend, redis.address))?;
        let name: &'static str = Box::leak(format!("portico-replica-{index}").into_boxed_str());
        step(format!("starting {name} ({}) on :{port} (CPU {})", portico.display(), cpus.target));
        children.spawn(
            name,
            Cpus::pinned(cpus.target, &portico).args(["serve", "--config"]).arg(&config).stdout(Stdio::null()),
        )?;
        wait_until_answering(&mut children, name, local(port), "/healthz")?;
        ports.push(port);
        names.push(name);
    }
    // Until the replicas have finished the requests `wrk` abandoned at the
    // end of a run (their backend calls would be counted as the cache's).
    let settle_all = |children: &Children| {
        for name in &names {
            if let Some(pid) = children.pid(name) {
                super::settle(pid);
            }
        }
    };
    let token = mint_token(&portico, &scratch.path().join("replica-0.toml"))?;
    wait_for(Duration::from_secs(20), "every replica to connect to Redis", || all_use_redis(&ports))?;

    // (a) One client on every replica at once.
    let script = scratch.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    step(format!(
        "one client on {replicas} replicas at once: {} s, {} connections each, policy {PER_SECOND}/s + burst {BURST}",
        options.seconds, options.concurrency
    ));
    let (admitted, refused, errors, seconds, _) =
        load_all(&script, &ports, &token, options.seconds, options.concurrency, cpus)?;
    let allowed = BURST + PER_SECOND * seconds;
    let off = (admitted as f64 - allowed) / allowed;
    println!(
        "    admitted {admitted} of {} requests over {seconds:.2} s ({:.1}/s after the burst); the policy allows \
         {allowed:.0}: {:+.2} %{}",
        admitted + refused,
        (admitted as f64 - BURST) / seconds,
        off * 100.0,
        if errors > 0 { format!("; {errors} errors") } else { String::new() }
    );

    settle_all(&children);

    // Only a load above the policy measures the limiter (a debug build on
    // a busy machine may not reach 500/s).
    let saturated = refused > 0;
    if !saturated {
        println!(
            "    WARNING: nothing was refused: the load stayed below the policy, so the figure measures the load, \
             not the shared limiter (use a release build, more --concurrency, or an idle machine)"
        );
    }

    // (b) The shared tier: filled through the first replica, answered by
    // the second from Redis.
    step("the shared cache tier: a fill on replica 0, the same GET on replica 1");
    let counter = Counter { address: backend, health_log: stub_data.join(stub::HEALTH_LOG) };
    let (labels, tally) = counter.calls(|| {
        let fill = get_x_cache(local(ports[0]), CACHED_PATH)?;
        wait_for(Duration::from_secs(5), "the fill to reach Redis", || Ok(redis.cache_keys()? > 0))?;
        let shared = get_x_cache(local(ports[1]), CACHED_PATH)?;
        Ok((fill, shared))
    })?;
    let shared_hit = labels.1 == "HIT" && tally.calls == 1;
    println!("    replica 0: {}, replica 1: {}; backend calls for both: {}", labels.0, labels.1, tally.calls);

    // (c) Redis down: every replica still answers, fast; then Redis comes
    // back on the same port and the replicas find it by themselves.
    step(format!("redis-server killed: {OUTAGE_SECONDS} s of load on every replica"));
    redis.kill();
    let (outage_admitted, outage_refused, outage_errors, outage_seconds, outage_p99_ms) =
        load_all(&script, &ports, &token, OUTAGE_SECONDS, options.concurrency, cpus)?;
    println!(
        "    answered {} requests in {outage_seconds:.2} s ({outage_admitted} admitted by the replicas' own limiters, \
         {outage_refused} refused), {outage_errors} errors, worst replica p99 {outage_p99_ms:.2} ms",
        outage_admitted + outage_refused
    );
    step("redis-server restarted on the same port: waiting until every replica uses it again");
    redis.restart(cpus.load)?;
    let restarted = Instant::now();
    wait_for(Duration::from_secs(30), "every replica to use Redis again", || all_use_redis(&ports))?;
    let recovery = restarted.elapsed();
    println!("    every replica used Redis again {:.0} ms after the restart", recovery.as_secs_f64() * 1000.0);
    children.stop_all();

    let report = json!({
        "mode": "replicas",
        "replicas": replicas,
        "machine": super::machine(),
        "command": format!(
            "cargo xtask bench --replicas {replicas} --seconds {} --concurrency {}",
            options.seconds, options.concurrency
        ),
        "rate_limit": {
            "policy_per_second": PER_SECOND,
            "policy_burst": BURST,
            "seconds": seconds,
            "requests": admitted + refused,
            "admitted": admitted,
            "allowed_by_policy": allowed,
            "admitted_per_second_after_burst": (admitted as f64 - BURST) / seconds,
            "off_percent": off * 100.0,
            "load_exceeded_policy": saturated,
            "within_5_percent": saturated && off.abs() <= 0.05,
            "errors": errors,
        },
        "shared_cache": {
            "fill": labels.0,
            "other_replica": labels.1,
            "backend_calls": tally.calls,
            "answered_from_the_fill": shared_hit,
        },
        "redis_outage": {
            "seconds": outage_seconds,
            "answered": outage_admitted + outage_refused,
            "admitted": outage_admitted,
            "refused": outage_refused,
            "errors": outage_errors,
            "worst_p99_ms": outage_p99_ms,
            "recovery_ms": recovery.as_secs_f64() * 1000.0,
        },
    });
    let markdown = markdown(&report);
    std::fs::write(options.out_dir.join("replicas.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(options.out_dir.join("replicas.md"), &markdown)?;
    println!("\n{markdown}");
    println!("results: {}/replicas.{{json,md}}", options.out_dir.display());
    ensure!(
        errors == 0 && outage_errors == 0,
        "replicas answered with errors ({errors}, {outage_errors} during the outage)"
    );
    Ok(report)
}

fn markdown(report: &Value) -> String {
    let rate = &report["rate_limit"];
    let cache = &report["shared_cache"];
    let outage = &report["redis_outage"];
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    format!(
        "| {} replicas, one Redis | measured |\n| --- | --- |\n\
         | one client's admitted requests vs the policy ({}/s + burst {}, {:.1} s) | {} of {:.0} allowed ({:+.2} %) |\n\
         | admitted rate after the burst | {:.1}/s{} |\n\
         | shared cache: fill on replica 0, GET on replica 1 | {} then {}, {} backend call(s) |\n\
         | Redis down ({:.1} s of load) | {} answered, {} errors, worst p99 {:.2} ms |\n\
         | recovery after Redis restarts | {:.0} ms |\n",
        report["replicas"],
        number(&rate["policy_per_second"]),
        number(&rate["policy_burst"]),
        number(&rate["seconds"]),
        rate["admitted"],
        number(&rate["allowed_by_policy"]),
        number(&rate["off_percent"]),
        number(&rate["admitted_per_second_after_burst"]),
        if rate["load_exceeded_policy"] == true { "" } else { " (load below the policy: not a limiter figure)" },
        cache["fill"].as_str().unwrap_or(""),
        cache["other_replica"].as_str().unwrap_or(""),
        cache["backend_calls"],
        number(&outage["seconds"]),
        outage["answered"],
        outage["errors"],
        number(&outage["worst_p99_ms"]),
        number(&outage["recovery_ms"]),
    )
}

/// One `wrk` per replica at once, all as the same client: (admitted,
/// refused, errors, the longest run's seconds, the worst p99 in ms).
fn load_all(
    script: &Path,
    ports: &[u16],
    token: &str,
    seconds: u32,
    concurrency: u32,
    cpus: Cpus,
) -> Result<(u64, u64, u64, f64, f64)> {
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = ports
            .iter()
            .map(|port| {
                let target = Target {
                    name: format!("replica :{port}"),
                    kind: Kind::Rest,
                    url: format!("http://{}{LIMITED_PATH}", local(*port)),
                    body: None,
                    authorization: Some(format!("Bearer {token}")),
                    process: "replica",
                    concurrency,
                    seconds,
                    response_bytes: 0,
                    first_calls: None,
                    warm_calls: None,
                    warm_connections: None,
                };
                scope.spawn(move || load(script, &target, seconds, cpus))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let mut totals = (0, 0, 0, 0.0_f64, 0.0_f64);
    for run in runs {
        // wrk counts every answer outside 2xx/3xx as non_2xx: here, the 429s.
        totals.0 += run.requests - run.non_2xx;
        totals.1 += run.non_2xx;
        totals.2 += run.errors;
        totals.3 = totals.3.max(run.seconds);
        totals.4 = totals.4.max(run.p99_us / 1000.0);
    }
    Ok(totals)
}

/// Whether every replica's rate limiter and cache tier use Redis
/// (`portico_redis_up` of both components is 1).
fn all_use_redis(ports: &[u16]) -> Result<bool> {
    for port in ports {
        let (status, metrics) = super::http_request(local(*port), "/metrics", None, None)?;
        ensure!(status == 200, "the metrics scrape answered {status}");
        for component in ["ratelimit", "cache"] {
            let series = format!("portico_redis_up{{component=\"{component}\"}} 1");
            if !metrics.lines().any(|line| line.trim() == series) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Polls `condition` every 20 ms until it holds, failing after `limit`.
fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if condition()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A GET with the replicas' Host; the answer's `X-Cache`.
fn get_x_cache(address: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).with_context(|| format!("reading {address}{path}"))?;
    let (head, _) = answer.split_once("\r\n\r\n").with_context(|| format!("{address}{path}: {answer}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{address}{path} answered:\n{head}");
    Ok(head
        .lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("x-cache")))
        .map_or("none", |(_, value)| value.trim())
        .to_owned())
}

/// Every replica's configuration: the stubs' `student_api` behind a
/// limited route and a publicly cached one, JWT auth (the client is the
/// token's subject), Redis for both; health checks off so that the stubs
/// count only the requests' calls.
fn replica_config(port: u16, backend: SocketAddr, redis: SocketAddr) -> String {
    format!(
        "# Written by `cargo xtask bench --replicas`.\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [telemetry]\nlog_level = \"warn\"\n\n\
         [services.student_api]\nendpoints = [\"http://{backend}\"]\nmax_idle_per_host = 256\n\
         health_check = {{ enabled = false }}\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"portico-bench-secret-0123456789-0123456789\"\n\n\
         [rate_limiting]\nbackend = \"redis\"\nredis_url = \"redis://{redis}\"\n\n\
         [rate_limits.client]\nper_second = {PER_SECOND}\nburst = {BURST}\n\n\
         [cache]\nredis_url = \"redis://{redis}\"\n\n\
         [[routes]]\nprefix = \"/limited/\"\nupstream_prefix = \"/\"\nservice = \"student_api\"\n\
         rate_limit = \"client\"\nauth = \"required\"\n\n\
         [[routes]]\nprefix = \"/cached/\"\nupstream_prefix = \"/users/\"\nservice = \"student_api\"\n\
         cache = {{ ttl = \"60s\", scope = \"public\" }}\n"
    )
}

/// The `redis-server` the replicas share, on a fixed port so that it can
/// come back where they expect it; killed when dropped.
struct Redis {
    address: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    fn start(cpu: usize) -> Result<Redis> {
        let mut redis = Redis { address: local(free_port()?), child: None };
        redis.restart(cpu)?;
        Ok(redis)
    }

    /// Starts it (again, empty) and waits until it answers PING.
    fn restart(&mut self, cpu: usize) -> Result<()> {
        self.kill();
        let child = Cpus::pinned(cpu, Path::new("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.address.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        wait_for(Duration::from_secs(10), "redis-server to answer PING", || {
            Ok(self.command("PING").is_ok_and(|answer| answer.starts_with("+PONG")))
        })
    }

    /// Kills it, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many cache entries it holds.
    fn cache_keys(&self) -> Result<u64> {
        let answer = self.command("KEYS portico:cache:*")?;
        match answer.strip_prefix('*').and_then(|rest| rest.lines().next()) {
            Some(count) => Ok(count.trim().parse().unwrap_or(0)),
            None => bail!("KEYS answered {answer:?}"),
        }
    }

    /// One inline command; the start of the answer.
    fn command(&self, command: &str) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.address, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut answer = vec![0_u8; 4096];
        let read = stream.read(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer[..read]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
