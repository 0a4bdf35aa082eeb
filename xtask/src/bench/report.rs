//! From runs to the report: each target's summary, the side-by-side
//! comparisons (CPU per request first), issues 11's and 12's targets as
//! pass/fail (the large answer's MiB/s and Node ratio on the three-call
//! large answer, not on the fan-out, whose 502 backend calls per answer
//! make it a measure of HTTP fan-out), the backend calls each operation
//! made,
//! and warnings whenever the numbers may describe the load side or a noisy
//! machine rather than the targets. The report is JSON (`results.json`);
//! the Markdown and the chart are drawn from it.

use std::fmt::Write as _;

use serde_json::{json, Value};

/// A load core busier than this set the pace, not the target.
pub const SATURATED: f64 = 0.9;
/// A run with fewer completed requests than this has a noisy CPU per
/// request (the requests still open at its end did part of their work in
/// it) and a p99 of few samples.
const FEW_REQUESTS: u64 = 200;
/// Throughputs closer than this count as a tie.
const TIE: f64 = 0.05;
/// A target core busier than the target itself by more than this was
/// shared with other processes.
const FOREIGN: f64 = 0.10;
/// "No slower than before" allows this much run-to-run noise.
const NOISE: f64 = 0.05;

/// Issue 11's REST targets, portico over NGINX.
const REST_CPU_MAX: f64 = 1.25;
const REST_THROUGHPUT_MIN: f64 = 0.9;
const REST_P99_MAX: f64 = 1.2;
const REST_RSS_MAX_MIB: f64 = 32.0;

/// Issue 12's targets: portico's GraphQL over the Node peer's.
const DASHBOARD_THROUGHPUT_MIN: f64 = 10.0;
const DASHBOARD_CPU_MAX: f64 = 0.1;
const DASHBOARD_P99_MAX: f64 = 0.2;
const DASHBOARD_RSS_MAX_MIB: f64 = 64.0;
const DASHBOARD_BACKEND_CALLS: f64 = 4.0;
const LARGE_MIB_PER_S_MIN: f64 = 300.0;
const LARGE_THROUGHPUT_MIN: f64 = 5.0;

const MIB: f64 = 1024.0 * 1024.0;

/// One run of the load generator against one target.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub round: u32,
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub errors: u64,
    pub non_2xx: u64,
    /// The target's user + system CPU time during the run.
    pub cpu_seconds: f64,
    /// The stub backends' CPU time during the run (the health checks of
    /// idle gateways included, a few per second).
    pub stub_cpu_seconds: f64,
    /// Each core's busy share during the run.
    pub cores: Vec<f64>,
    /// Requests the load generator kept open.
    pub concurrency: u32,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    pub fn cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.cpu_seconds / self.requests as f64 * 1e6
        }
    }

    /// The share of one core the target itself used.
    pub fn target_share(&self) -> f64 {
        self.cpu_seconds / self.seconds.max(1e-9)
    }
}

/// What a target answered, as checked before the load.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer {
    /// The answer body's size.
    pub bytes: u64,
    /// Backend calls of the target's first request, counted at the stubs.
    pub first_calls: Option<u64>,
    /// Backend calls of one request once warmed up (pools, caches).
    pub warm_calls: Option<u64>,
    /// New backend connections of one request once warmed up.
    pub warm_connections: Option<u64>,
}

/// MiB of response JSON per second per core in `run`: the answer's size
/// times req/s over the share of a core the target itself used, that is
/// the answer's size over the CPU time per request. The target's own share
/// rather than its core's: the core also ran other processes on this
/// shared machine (the report warns when), and a target held back by the
/// load side is not credited with its idle time either way.
pub fn mib_per_s_per_core(bytes: u64, run: &Run) -> f64 {
    let share = run.target_share();
    if share <= 0.0 {
        0.0
    } else {
        bytes as f64 * run.throughput() / share / MIB
    }
}

/// Two targets side by side: `subject` is portico, `peer` what it is
/// measured against.
pub struct Comparison {
    pub label: &'static str,
    pub subject: &'static str,
    pub peer: &'static str,
}

pub const COMPARISONS: [Comparison; 8] = [
    Comparison { label: "REST passthrough: portico / NGINX", subject: "portico REST", peer: "NGINX REST" },
    Comparison { label: "Dashboard: portico / Node", subject: "portico Dashboard", peer: "Node Dashboard" },
    Comparison { label: "REST: portico / portico before", subject: "portico REST", peer: "portico (before) REST" },
    Comparison {
        label: "Dashboard: portico / portico before",
        subject: "portico Dashboard",
        peer: "portico (before) Dashboard",
    },
    Comparison { label: "Large answer: portico / Node", subject: "portico Large", peer: "Node Large" },
    Comparison {
        label: "Large answer: portico / portico before",
        subject: "portico Large",
        peer: "portico (before) Large",
    },
    Comparison { label: "Fan-out: portico / Node", subject: "portico Fan-out", peer: "Node Fan-out" },
    Comparison {
        label: "Fan-out: portico / portico before",
        subject: "portico Fan-out",
        peer: "portico (before) Fan-out",
    },
];

/// Which cores did what, for the report's wording.
#[derive(Debug, Clone, Copy)]
pub struct Cores {
    pub target: usize,
    pub load: usize,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

/// One target's summary: CPU per request over all its runs (total CPU over
/// total requests), medians of the rest, and every run.
pub fn summarize(name: &str, kind: &str, runs: &[Run], rss_bytes: u64, answer: Answer, cores: Cores) -> Value {
    let requests: u64 = runs.iter().map(|run| run.requests).sum();
    let cpu: f64 = runs.iter().map(|run| run.cpu_seconds).sum();
    let stub_cpu: f64 = runs.iter().map(|run| run.stub_cpu_seconds).sum();
    let json_rate = |run: &Run| mib_per_s_per_core(answer.bytes, run);
    json!({
        "target": name,
        "kind": kind,
        "response_bytes": answer.bytes,
        "backend_calls": answer.warm_calls,
        "first_backend_calls": answer.first_calls,
        "backend_connections": answer.warm_connections,
        "response_mib_per_s_per_core": median(runs.iter().map(json_rate).collect()),
        "cpu_us_per_request": if requests == 0 { 0.0 } else { cpu / requests as f64 * 1e6 },
        "stub_cpu_us_per_request": if requests == 0 { 0.0 } else { stub_cpu / requests as f64 * 1e6 },
        "throughput_rps": median(runs.iter().map(Run::throughput).collect()),
        "p50_ms": median(runs.iter().map(|run| run.p50_us / 1000.0).collect()),
        "p99_ms": median(runs.iter().map(|run| run.p99_us / 1000.0).collect()),
        "p999_ms": median(runs.iter().map(|run| run.p999_us / 1000.0).collect()),
        "peak_rss_mib": rss_bytes as f64 / (1024.0 * 1024.0),
        "requests": requests,
        "errors": runs.iter().map(|run| run.errors + run.non_2xx).sum::<u64>(),
        "target_core_busy": median(runs.iter().map(|run| run.cores.get(cores.target).copied().unwrap_or(0.0)).collect()),
        "load_core_busy": median(runs.iter().map(|run| run.cores.get(cores.load).copied().unwrap_or(0.0)).collect()),
        "rounds": runs.iter().map(|run| json!({
            "round": run.round,
            "cpu_us_per_request": run.cpu_us_per_request(),
            "throughput_rps": run.throughput(),
            "p50_ms": run.p50_us / 1000.0,
            "p99_ms": run.p99_us / 1000.0,
            "p999_ms": run.p999_us / 1000.0,
            "cpu_seconds": run.cpu_seconds,
            "stub_cpu_seconds": run.stub_cpu_seconds,
            "response_mib_per_s_per_core": json_rate(run),
            "requests": run.requests,
            "concurrency": run.concurrency,
            "target_share": run.target_share(),
            "core_busy": run.cores,
        })).collect::<Vec<_>>(),
    })
}

fn number(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(0.0)
}

/// `a / b`; none when either was not measured (a run without a completed
/// request has no CPU per request, not one of 0).
fn ratio(a: f64, b: f64) -> Value {
    if a > 0.0 && b > 0.0 {
        json!(a / b)
    } else {
        Value::Null
    }
}

/// The side-by-side comparisons whose two targets both ran.
pub fn comparisons(targets: &[Value]) -> Vec<Value> {
    let find = |name: &str| targets.iter().find(|target| target["target"] == name);
    COMPARISONS
        .iter()
        .filter_map(|comparison| {
            let (subject, peer) = (find(comparison.subject)?, find(comparison.peer)?);
            let ratios = ["cpu_us_per_request", "throughput_rps", "p99_ms", "peak_rss_mib"]
                .map(|key| (key, ratio(number(subject, key), number(peer, key))));
            Some(json!({
                "label": comparison.label,
                "subject": comparison.subject,
                "peer": comparison.peer,
                "cpu_us_per_request": [number(subject, "cpu_us_per_request"), number(peer, "cpu_us_per_request")],
                "ratios": ratios.into_iter().map(|(key, value)| (key.to_owned(), value)).collect::<serde_json::Map<_, _>>(),
            }))
        })
        .collect()
}

/// Issues 11's and 12's targets: each as measured, its limit, and
/// pass/fail (`null` when the run lacks what the check needs).
pub fn checks(targets: &[Value], comparisons: &[Value]) -> Vec<Value> {
    let find_ratio = |subject: &str, peer: &str, key: &str| {
        comparisons
            .iter()
            .find(|comparison| comparison["subject"] == subject && comparison["peer"] == peer)
            .and_then(|comparison| comparison["ratios"][key].as_f64())
    };
    let find = |name: &str| targets.iter().find(|target| target["target"] == name);
    let of = |name: &str, key: &str| find(name).and_then(|target| target[key].as_f64());
    let check =
        |issue: u32, name: &str, value: Option<f64>, limit: String, pass: &dyn Fn(f64) -> bool, missing: &str| {
            json!({
                "issue": issue,
                "check": name,
                "value": value,
                "limit": limit,
                "pass": value.map(pass),
                "note": if value.is_none() { missing } else { "" },
            })
        };
    let rest = |key| find_ratio("portico REST", "NGINX REST", key);
    let dashboard = |key| find_ratio("portico Dashboard", "portico (before) Dashboard", key);
    let node = |key| find_ratio("portico Dashboard", "Node Dashboard", key);
    let large_node = |key| find_ratio("portico Large", "Node Large", key);
    let no_nginx = "NGINX REST did not run";
    let no_before = "needs --before <the previous portico binary>";
    let no_node = "the Node peer did not run";
    let mut checks = vec![
        check(
            11,
            "REST CPU per request, portico / NGINX",
            rest("cpu_us_per_request"),
            format!("≤ {REST_CPU_MAX}"),
            &|v| v <= REST_CPU_MAX,
            no_nginx,
        ),
        check(
            11,
            "REST req/s, portico / NGINX",
            rest("throughput_rps"),
            format!("≥ {REST_THROUGHPUT_MIN}"),
            &|v| v >= REST_THROUGHPUT_MIN,
            no_nginx,
        ),
        check(
            11,
            "REST p99, portico / NGINX",
            rest("p99_ms"),
            format!("≤ {REST_P99_MAX}"),
            &|v| v <= REST_P99_MAX,
            no_nginx,
        ),
        check(
            11,
            "portico peak RSS (MiB)",
            of("portico REST", "peak_rss_mib"),
            format!("< {REST_RSS_MAX_MIB}"),
            &|v| v < REST_RSS_MAX_MIB,
            "portico REST did not run",
        ),
        check(
            11,
            "Dashboard req/s, portico / before",
            dashboard("throughput_rps"),
            format!("≥ {}", 1.0 - NOISE),
            &|v| v >= 1.0 - NOISE,
            no_before,
        ),
        check(
            11,
            "Dashboard p99, portico / before",
            dashboard("p99_ms"),
            format!("≤ {}", 1.0 + NOISE),
            &|v| v <= 1.0 + NOISE,
            no_before,
        ),
        check(
            12,
            "Dashboard req/s, portico / Node",
            node("throughput_rps"),
            format!("≥ {DASHBOARD_THROUGHPUT_MIN}"),
            &|v| v >= DASHBOARD_THROUGHPUT_MIN,
            no_node,
        ),
        check(
            12,
            "Dashboard CPU per request, portico / Node",
            node("cpu_us_per_request"),
            format!("≤ {DASHBOARD_CPU_MAX}"),
            &|v| v <= DASHBOARD_CPU_MAX,
            no_node,
        ),
        check(
            12,
            "Dashboard p99, portico / Node",
            node("p99_ms"),
            format!("≤ {DASHBOARD_P99_MAX}"),
            &|v| v <= DASHBOARD_P99_MAX,
            no_node,
        ),
        check(
            12,
            "portico Dashboard peak RSS (MiB)",
            of("portico Dashboard", "peak_rss_mib"),
            format!("< {DASHBOARD_RSS_MAX_MIB}"),
            &|v| v < DASHBOARD_RSS_MAX_MIB,
            "portico Dashboard did not run",
        ),
        check(
            12,
            "Large answer MiB/s of response JSON per core, portico",
            of("portico Large", "response_mib_per_s_per_core"),
            format!("≥ {LARGE_MIB_PER_S_MIN}"),
            &|v| v >= LARGE_MIB_PER_S_MIN,
            "portico Large did not run",
        ),
        check(
            12,
            "Large answer req/s, portico / Node",
            large_node("throughput_rps"),
            format!("≥ {LARGE_THROUGHPUT_MIN}"),
            &|v| v >= LARGE_THROUGHPUT_MIN,
            no_node,
        ),
        check(
            12,
            "Dashboard backend calls, portico, first operation",
            of("portico Dashboard", "first_backend_calls"),
            format!("= {DASHBOARD_BACKEND_CALLS}"),
            &|v| v == DASHBOARD_BACKEND_CALLS,
            "portico Dashboard did not run",
        ),
        check(
            12,
            "Dashboard backend calls, portico, warmed up",
            of("portico Dashboard", "backend_calls"),
            format!("≤ {DASHBOARD_BACKEND_CALLS}"),
            &|v| v <= DASHBOARD_BACKEND_CALLS,
            "portico Dashboard did not run",
        ),
    ];
    // "No scenario makes more backend calls than today": the large answer
    // and the fan-out against the previous build.
    for (scenario, title) in [("Large", "Large answer"), ("Fan-out", "Fan-out")] {
        for (key, when) in [("first_backend_calls", "first operation"), ("backend_calls", "warmed up")] {
            let before = of(&format!("portico (before) {scenario}"), key);
            let limit = before.map_or_else(|| "≤ before".to_owned(), |calls| format!("≤ {calls} (before)"));
            let value = before.and(of(&format!("portico {scenario}"), key));
            let pass = move |v: f64| before.is_some_and(|calls| v <= calls);
            checks.push(check(12, &format!("{title} backend calls, portico, {when}"), value, limit, &pass, no_before));
        }
    }
    checks
}

/// Everything that makes the numbers describe something other than the
/// targets: a saturated load core, a tie at the load side's ceiling, a
/// target that was not the limit, other processes on the target's core.
pub fn warnings(targets: &[Value], comparisons: &[Value], cores: Cores) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut saturated = Vec::new();
    let mut idle = Vec::new();
    let mut shared = Vec::new();
    let mut few = Vec::new();
    let mut runs = 0;
    for target in targets {
        let name = target["target"].as_str().unwrap_or("");
        for run in target["rounds"].as_array().into_iter().flatten() {
            runs += 1;
            let busy = |core: usize| run["core_busy"].get(core).and_then(Value::as_f64).unwrap_or(0.0);
            let (target_core, load_core, own) = (busy(cores.target), busy(cores.load), number(run, "target_share"));
            let at = format!("{name} round {}", run["round"]);
            if load_core >= SATURATED {
                saturated.push(format!("{at} ({:.0} %)", load_core * 100.0));
            } else if own < SATURATED {
                idle.push(format!("{at} (target {:.0} % of a core)", own * 100.0));
            }
            let requests = run["requests"].as_u64().unwrap_or(0);
            if requests < FEW_REQUESTS {
                let open = run["concurrency"].as_u64().unwrap_or(0);
                few.push(format!("{at} ({requests} requests, {open} open at the end)"));
            }
            if target_core - own > FOREIGN {
                shared.push(format!("{at} ({:.0} % by others)", (target_core - own) * 100.0));
            }
        }
    }
    if !saturated.is_empty() {
        warnings.push(format!(
            "WARNING: the load core (CPU {}) was saturated (≥ {:.0} % busy) in {} of {runs} runs: {}. There \
             the load side (wrk and the stubs) may have set the pace, so req/s and p99 describe it, not the \
             target; CPU per request is still the target's own.",
            cores.load,
            SATURATED * 100.0,
            saturated.len(),
            saturated.join(", ")
        ));
    }
    for comparison in comparisons {
        let find = |key: &str| targets.iter().find(|target| target["target"] == comparison[key]);
        let (Some(subject), Some(peer)) = (find("subject"), find("peer")) else { continue };
        let tie = comparison["ratios"]["throughput_rps"].as_f64().is_some_and(|ratio| (ratio - 1.0).abs() <= TIE);
        if tie && number(subject, "load_core_busy") >= SATURATED && number(peer, "load_core_busy") >= SATURATED {
            warnings.push(format!(
                "WARNING: {} and {} tie at about {:.0} req/s while the load core is saturated: this run \
                 measured the load generator, not the targets.",
                comparison["subject"].as_str().unwrap_or(""),
                comparison["peer"].as_str().unwrap_or(""),
                number(subject, "throughput_rps"),
            ));
        }
    }
    if !idle.is_empty() {
        warnings.push(format!(
            "WARNING: in {} runs neither core was saturated, so the target was not the bottleneck (raise \
             --concurrency, or --large-concurrency / --fanout-concurrency for the large answer / the fan-out): {}.",
            idle.len(),
            idle.join(", ")
        ));
    }
    let costly: Vec<String> = targets
        .iter()
        .filter(|target| number(target, "stub_cpu_us_per_request") >= number(target, "cpu_us_per_request"))
        .filter(|target| number(target, "cpu_us_per_request") > 0.0)
        .map(|target| {
            format!(
                "{} ({:.1} µs against its {:.1})",
                target["target"].as_str().unwrap_or(""),
                number(target, "stub_cpu_us_per_request"),
                number(target, "cpu_us_per_request")
            )
        })
        .collect();
    if !costly.is_empty() {
        warnings.push(format!(
            "WARNING: the stubs spent as much CPU per operation as the target for {}: the load side may have \
             set the pace.",
            costly.join(", ")
        ));
    }
    if !few.is_empty() {
        warnings.push(format!(
            "WARNING: {} runs completed fewer than {FEW_REQUESTS} requests: {}. Their CPU per request also holds \
             the part done of the requests still open when the run ended (at most that many requests' worth), \
             and their p99 is that of few samples; more --seconds make them steadier.",
            few.len(),
            few.join(", ")
        ));
    }
    if !shared.is_empty() {
        warnings.push(format!(
            "WARNING: other processes used the target's core (CPU {}) in {} runs: {}. The machine was not \
             idle; expect noise.",
            cores.target,
            shared.len(),
            shared.join(", ")
        ));
    }
    warnings
}

pub fn markdown(report: &Value) -> String {
    let mut text = String::new();
    let comparisons: Vec<&Value> = report["comparisons"].as_array().into_iter().flatten().collect();
    if !comparisons.is_empty() {
        let _ = writeln!(text, "| CPU µs per request | portico | peer | portico / peer |");
        let _ = writeln!(text, "| --- | ---: | ---: | ---: |");
        for comparison in &comparisons {
            let cpu = |index: usize| comparison["cpu_us_per_request"][index].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                text,
                "| {} | {:.1} | {:.1} | **{}** |",
                comparison["label"].as_str().unwrap_or(""),
                cpu(0),
                cpu(1),
                format_ratio(&comparison["ratios"]["cpu_us_per_request"]),
            );
        }
        text.push('\n');
    }

    let _ = writeln!(
        text,
        "| target | CPU µs / req | req/s | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | CPU {} busy | CPU {} busy | errors |",
        report["load"]["cpus"]["target"], report["load"]["cpus"]["load"]
    );
    let _ = writeln!(text, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for target in report["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "| {} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} % | {:.0} % | {} |",
            target["target"].as_str().unwrap_or(""),
            number(target, "cpu_us_per_request"),
            // A large answer's few per second need their decimal.
            match number(target, "throughput_rps") {
                rps if rps < 100.0 => format!("{rps:.1}"),
                rps => format!("{rps:.0}"),
            },
            number(target, "p50_ms"),
            number(target, "p99_ms"),
            number(target, "p999_ms"),
            number(target, "peak_rss_mib"),
            number(target, "target_core_busy") * 100.0,
            number(target, "load_core_busy") * 100.0,
            target["errors"].as_u64().unwrap_or(0),
        );
    }

    let mut lines = Vec::new();
    for comparison in &comparisons {
        let ratios = &comparison["ratios"];
        lines.push(format!(
            "{}: CPU/req **{}**, req/s **{}**, p99 **{}**, peak RSS **{}**",
            comparison["label"].as_str().unwrap_or(""),
            format_ratio(&ratios["cpu_us_per_request"]),
            format_ratio(&ratios["throughput_rps"]),
            format_ratio(&ratios["p99_ms"]),
            format_ratio(&ratios["peak_rss_mib"]),
        ));
    }
    if !lines.is_empty() {
        let _ = writeln!(text, "\n{}", lines.join("  \n"));
    }

    let _ = writeln!(
        text,
        "\n| target | backend calls per operation | in the first operation | new backend connections per operation | \
         stubs' CPU µs per operation | answer bytes | MiB/s of response JSON per core |"
    );
    let _ = writeln!(text, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for target in report["targets"].as_array().into_iter().flatten() {
        let count = |key: &str| target[key].as_u64().map_or_else(|| "–".to_owned(), |calls| calls.to_string());
        let (calls, first, connections) =
            (count("backend_calls"), count("first_backend_calls"), count("backend_connections"));
        let rate = if target["kind"] == "large" || target["kind"] == "fanout" {
            format!("{:.1}", number(target, "response_mib_per_s_per_core"))
        } else {
            "–".to_owned()
        };
        let _ = writeln!(
            text,
            "| {} | {calls} | {first} | {connections} | {:.1} | {} | {rate} |",
            target["target"].as_str().unwrap_or(""),
            number(target, "stub_cpu_us_per_request"),
            target["response_bytes"].as_u64().unwrap_or(0),
        );
    }

    let checks: Vec<&Value> = report["checks"].as_array().into_iter().flatten().collect();
    for issue in [11, 12] {
        let checks: Vec<&&Value> = checks.iter().filter(|check| check["issue"] == issue).collect();
        if checks.is_empty() {
            continue;
        }
        let _ = writeln!(text, "\n| issue {issue} target | measured | limit | result |");
        let _ = writeln!(text, "| --- | ---: | ---: | --- |");
        for check in checks {
            let result = match check["pass"].as_bool() {
                Some(true) => "pass".to_owned(),
                Some(false) => "**FAIL**".to_owned(),
                None => format!("not checked: {}", check["note"].as_str().unwrap_or("")),
            };
            let _ = writeln!(
                text,
                "| {} | {} | {} | {result} |",
                check["check"].as_str().unwrap_or(""),
                // Call counts are counts.
                if check["check"].as_str().is_some_and(|name| name.contains("backend calls")) {
                    check["value"].as_f64().map_or_else(|| "–".to_owned(), |value| format!("{value:.0}"))
                } else {
                    format_ratio(&check["value"])
                },
                check["limit"].as_str().unwrap_or(""),
            );
        }
    }

    for warning in report["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(text, "\n{}", warning.as_str().unwrap_or(""));
    }

    let load = &report["load"];
    let _ = writeln!(
        text,
        "\n{} · {} at {} connections ({} for the large answer, {} for the fan-out), {} s per target per round, {} \
         rounds, interleaved (req/s, latencies and MiB/s are medians of the rounds, CPU per request is total CPU \
         over total requests); each target alone on CPU {}, the NGINX stubs and the load generator on CPU {}; \
         access logs off, portico's metrics, request ids and trace context on. The large answer is `{}`: \
         three backend calls (one long sessions page, the lessons and the student batched), so it measures \
         what the gateway does with backend JSON, and issue 12's 300 MiB/s and 5 × Node targets apply to it. \
         The fan-out is `{}`: about as much JSON but 502 backend calls per answer (one sessions call per \
         student, by the contract), so it measures HTTP fan-out, and is reported without those targets. Each \
         is equal JSON from every target; MiB/s per core is answer bytes × req/s ÷ the share of a core the \
         target used (answer bytes ÷ CPU time per request).",
        report["machine"].as_str().unwrap_or(""),
        load["generator"].as_str().unwrap_or(""),
        load["concurrency"],
        load["large_concurrency"],
        load["fanout_concurrency"],
        load["seconds_per_run"],
        load["rounds"],
        load["cpus"]["target"],
        load["cpus"]["load"],
        load["large_query"].as_str().unwrap_or("readingSessions(studentId: 1000, first: 6000)"),
        load["fanout_query"].as_str().unwrap_or("students(first: 500)"),
    );
    text
}

fn format_ratio(value: &Value) -> String {
    value.as_f64().map_or_else(|| "–".to_owned(), |value| format!("{value:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, requests: u64, cpu_seconds: f64, cores: Vec<f64>) -> Run {
        Run { round, requests, seconds: 1.0, p99_us: 1000.0, cpu_seconds, cores, ..Run::default() }
    }

    const CORES: Cores = Cores { target: 0, load: 1 };

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    /// CPU per request leads, ratios are portico over the peer, the checks
    /// follow the issue's limits, and the report says which it could not
    /// check.
    #[test]
    fn cpu_per_request_comparison_and_checks() {
        let portico = summarize(
            "portico REST",
            "rest",
            &[run(1, 30_000, 0.9, vec![1.0, 0.5])],
            20 << 20,
            Answer::default(),
            CORES,
        );
        let nginx =
            summarize("NGINX REST", "rest", &[run(1, 60_000, 0.9, vec![1.0, 0.8])], 10 << 20, Answer::default(), CORES);
        assert_eq!(number(&portico, "cpu_us_per_request"), 30.0);
        let targets = vec![portico, nginx];
        let comparisons = comparisons(&targets);
        assert_eq!(comparisons.len(), 1);
        assert_eq!(comparisons[0]["ratios"]["cpu_us_per_request"], 2.0);
        let checks = checks(&targets, &comparisons);
        let pass = |name: &str| checks.iter().find(|check| check["check"] == name).expect(name)["pass"].clone();
        assert_eq!(pass("REST CPU per request, portico / NGINX"), false);
        assert_eq!(pass("REST req/s, portico / NGINX"), false);
        assert_eq!(pass("REST p99, portico / NGINX"), true);
        assert_eq!(pass("portico peak RSS (MiB)"), true);
        assert_eq!(pass("Dashboard req/s, portico / before"), Value::Null);
        assert!(warnings(&targets, &comparisons, CORES).is_empty());

        let report = json!({"targets": targets, "comparisons": comparisons, "checks": checks, "warnings": [],
            "machine": "m", "load": {"cpus": {"target": 0, "load": 1}}});
        let text = markdown(&report);
        assert!(text.starts_with("| CPU µs per request |"), "{text}");
        assert!(text.contains("| REST passthrough: portico / NGINX | 30.0 | 15.0 | **2.00** |"), "{text}");
        assert!(text.contains("| REST CPU per request, portico / NGINX | 2.00 | ≤ 1.25 | **FAIL** |"), "{text}");
    }

    /// Issue 12's targets: portico's Dashboard and large answer over the
    /// Node peer's, the large answer's MiB/s of JSON per core from its
    /// size and the target's own CPU, and the backend calls per operation.
    #[test]
    fn issue_12_checks_and_backend_calls() {
        let calls = |first, warm| Answer {
            bytes: 0,
            first_calls: Some(first),
            warm_calls: Some(warm),
            warm_connections: Some(0),
        };
        let large = |calls: Answer| Answer { bytes: 1 << 20, ..calls };
        // 100 requests in a second on half a core: 200 MiB/s per core.
        let targets = vec![
            summarize(
                "portico Dashboard",
                "dashboard",
                &[run(1, 20_000, 1.0, vec![1.0, 0.5])],
                30 << 20,
                calls(4, 3),
                CORES,
            ),
            summarize(
                "Node Dashboard",
                "dashboard",
                &[run(1, 1_000, 1.0, vec![1.0, 0.5])],
                90 << 20,
                calls(4, 4),
                CORES,
            ),
            summarize(
                "portico Large",
                "large",
                &[run(1, 100, 0.5, vec![0.5, 0.5])],
                60 << 20,
                large(calls(3, 2)),
                CORES,
            ),
            summarize("Node Large", "large", &[run(1, 10, 1.0, vec![1.0, 0.5])], 90 << 20, large(calls(3, 3)), CORES),
            summarize(
                "portico (before) Large",
                "large",
                &[run(1, 20, 1.0, vec![1.0, 0.5])],
                0,
                large(calls(3, 2)),
                CORES,
            ),
            summarize(
                "portico Fan-out",
                "fanout",
                &[run(1, 10, 1.0, vec![1.0, 0.5])],
                60 << 20,
                large(calls(502, 501)),
                CORES,
            ),
            summarize(
                "portico (before) Fan-out",
                "fanout",
                &[run(1, 10, 1.0, vec![1.0, 0.5])],
                60 << 20,
                large(calls(502, 500)),
                CORES,
            ),
        ];
        assert_eq!(number(&targets[2], "response_mib_per_s_per_core"), 200.0);
        let comparisons = comparisons(&targets);
        let checks = checks(&targets, &comparisons);
        let found = |name: &str| checks.iter().find(|check| check["check"] == name).expect(name).clone();
        assert_eq!(found("Dashboard req/s, portico / Node")["pass"], true);
        assert_eq!(found("Dashboard CPU per request, portico / Node")["pass"], true);
        assert_eq!(found("Dashboard p99, portico / Node")["pass"], false);
        assert_eq!(found("portico Dashboard peak RSS (MiB)")["pass"], true);
        assert_eq!(found("Dashboard backend calls, portico, first operation")["pass"], true);
        assert_eq!(found("Dashboard backend calls, portico, warmed up")["pass"], true);
        assert_eq!(found("Large answer MiB/s of response JSON per core, portico")["pass"], false);
        assert_eq!(found("Large answer req/s, portico / Node")["pass"], true);
        assert_eq!(found("Large answer backend calls, portico, first operation")["pass"], true);
        assert_eq!(found("Large answer backend calls, portico, warmed up")["pass"], true);
        assert_eq!(found("Fan-out backend calls, portico, first operation")["pass"], true);
        let warm = found("Fan-out backend calls, portico, warmed up");
        assert_eq!((warm["pass"].clone(), warm["limit"].clone()), (json!(false), json!("≤ 500 (before)")));
        // The MiB/s and Node targets are the three-call large answer's only.
        assert!(!checks.iter().any(|check| check["check"]
            .as_str()
            .is_some_and(|name| name.contains("Fan-out") && !name.contains("backend calls"))));

        let report = json!({"targets": targets, "comparisons": comparisons, "checks": checks, "warnings": [],
            "machine": "m", "load": {"cpus": {"target": 0, "load": 1}}});
        let text = markdown(&report);
        assert!(text.contains("| portico Large | 2 | 3 | 0 | 0.0 | 1048576 | 200.0 |"), "{text}");
        assert!(text.contains("| portico Fan-out | 501 | 502 | 0 | 0.0 | 1048576 | 10.0 |"), "{text}");
        assert!(text.contains("Fan-out: portico / portico before"), "{text}");
        assert!(text.contains("| Dashboard backend calls, portico, first operation | 4 | = 4 | pass |"), "{text}");
        assert!(text.contains("| issue 12 target |"), "{text}");
    }

    /// A run that completed no request has no CPU per request: no ratio,
    /// so no check passes on it.
    #[test]
    fn no_completed_request_is_not_a_ratio_of_zero() {
        let targets = vec![
            summarize("portico Large", "large", &[run(1, 0, 1.0, vec![1.0, 0.5])], 0, Answer::default(), CORES),
            summarize("Node Large", "large", &[run(1, 10, 1.0, vec![1.0, 0.5])], 0, Answer::default(), CORES),
        ];
        let comparisons = comparisons(&targets);
        assert_eq!(comparisons[0]["ratios"]["cpu_us_per_request"], Value::Null);
    }

    /// A tie at a saturated load core is called what it is.
    #[test]
    fn a_tie_at_the_load_sides_ceiling_is_a_warning() {
        let saturated = vec![0.7, 0.97];
        let targets = vec![
            summarize("portico REST", "rest", &[run(1, 19_000, 0.6, saturated.clone())], 0, Answer::default(), CORES),
            summarize("NGINX REST", "rest", &[run(1, 18_500, 0.4, saturated)], 0, Answer::default(), CORES),
        ];
        let comparisons = comparisons(&targets);
        let warnings = warnings(&targets, &comparisons, CORES);
        assert!(warnings.iter().any(|w| w.contains("load core (CPU 1) was saturated")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("measured the load generator")), "{warnings:?}");
    }

    /// Other processes on the target's core and an unsaturated target are
    /// reported.
    #[test]
    fn noise_and_an_idle_target_are_warnings() {
        let targets =
            vec![summarize("portico REST", "rest", &[run(1, 1000, 0.5, vec![0.9, 0.3])], 0, Answer::default(), CORES)];
        let warnings = warnings(&targets, &[], CORES);
        assert!(warnings.iter().any(|w| w.contains("not the bottleneck")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("other processes used the target's core")), "{warnings:?}");
    }
}
