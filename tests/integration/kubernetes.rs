//! `examples/kubernetes/` and the container images, checked offline: every
//! manifest against the Kubernetes API's schemas (kubernetes-validate, strict,
//! in services/.venv), the ConfigMap's configuration with `portico check`, and
//! what must agree between the Dockerfiles, the manifests, the configuration
//! and the README (paths, ports, users, the drain timing, names).
//!
//! No container runtime or registry is reachable here, so the images are not
//! built; what can go wrong between them and the manifests is checked instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

/// The Kubernetes versions the manifests must be valid for: the oldest one
/// the README promises, and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &str = "1.30.0,1.37.0";

/// The release build the Dockerfile runs, as the READMEs document it.
const RELEASE_BUILD: &str = "cargo build --release --locked --bin portico";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubernetes_dir() -> PathBuf {
    root().join("examples").join("kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// The virtualenv's Python (`PORTICO_PYTHON`, as `cargo xtask test` sets it,
/// else services/.venv's), which has kubernetes-validate from
/// services/requirements-test.txt.
fn python() -> PathBuf {
    let python = std::env::var_os("PORTICO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("services").join(".venv").join("bin").join("python"));
    assert!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    python
}

/// Every manifest file under examples/kubernetes/ (kustomizations are
/// kustomize's input, not API objects).
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).expect("readable folder").map(|entry| entry.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "yaml")
                && path.file_name().is_some_and(|name| name != "kustomization.yaml")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&kubernetes_dir(), &mut found);
    found
}

/// What tests/fixtures/validate_manifests.py reports for `files`.
struct Validated {
    documents: Vec<(PathBuf, Value)>,
    failures: Vec<String>,
}

fn validate(files: &[PathBuf]) -> Validated {
    let output = Command::new(python())
        .arg(root().join("tests").join("fixtures").join("validate_manifests.py"))
        .arg(KUBERNETES_VERSIONS)
        .args(files)
        .output()
        .expect("run the manifest validator");
    assert!(
        output.status.success(),
        "the validator failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the validator prints JSON");
    let documents = report["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|entry| (PathBuf::from(entry["file"].as_str().expect("file")), entry["document"].clone()))
        .collect();
    let failures =
        report["failures"].as_array().expect("failures").iter().map(|f| f.as_str().expect("text").to_owned()).collect();
    Validated { documents, failures }
}

/// All manifests, validated, by `Kind/name`.
struct Manifests {
    by_name: BTreeMap<String, Value>,
}

/// The manifests `kubectl apply -k examples/kubernetes` applies (not the
/// overlay's, which replace some of them).
fn base_files() -> Vec<PathBuf> {
    manifest_files().into_iter().filter(|path| path.parent() == Some(kubernetes_dir().as_path())).collect()
}

impl Manifests {
    fn load() -> Manifests {
        let validated = validate(&base_files());
        assert!(validated.failures.is_empty(), "manifests fail the Kubernetes API schema:\n{:#?}", validated.failures);
        let mut by_name = BTreeMap::new();
        for (file, document) in validated.documents {
            let key = format!("{}/{}", text(&document["kind"]), text(&document["metadata"]["name"]));
            assert!(by_name.insert(key.clone(), document).is_none(), "{key} is defined twice ({})", file.display());
        }
        Manifests { by_name }
    }

    fn get(&self, key: &str) -> &Value {
        self.by_name.get(key).unwrap_or_else(|| panic!("no {key} in examples/kubernetes"))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.by_name.values().filter(move |document| document["kind"] == kind)
    }

    fn portico_container(&self) -> &Value {
        container(self.get("Deployment/portico"), "portico")
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a string"))
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The kubernetes/ configuration, as TOML (not as portico's `Config`, so these
/// checks do not depend on which keys this build knows).
fn kubernetes_config() -> toml::Table {
    read(&kubernetes_dir().join("portico.toml")).parse().expect("examples/kubernetes/portico.toml is TOML")
}

fn config_duration(config: &toml::Table, section: &[&str], key: &str) -> Duration {
    let mut table = config;
    for name in section {
        table = table.get(*name).and_then(toml::Value::as_table).unwrap_or_else(|| panic!("no [{name}]"));
    }
    let value = table.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("no {key}"));
    humantime::parse_duration(value).expect("a duration")
}

fn listen_port(address: &str) -> u16 {
    address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("host:port")
}

/// `KEY=value` lines of an env file, as kustomize's secretGenerator reads it.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// A Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile(path: &Path) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let (instruction, arguments) = whole.split_once(' ').unwrap_or((&whole, ""));
        instructions.push((instruction.to_uppercase(), arguments.trim().to_owned()));
    }
    instructions
}

/// The arguments of the last `instruction` of the final stage.
fn last<'a>(instructions: &'a [(String, String)], instruction: &str) -> &'a str {
    instructions
        .iter()
        .rev()
        .find(|(name, _)| name == instruction)
        .map(|(_, arguments)| arguments.as_str())
        .unwrap_or_else(|| panic!("no {instruction}"))
}

fn exec_form(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments).unwrap_or_else(|error| panic!("{arguments} is not JSON exec form: {error}"))
}

/// The numeric user of a Dockerfile's final `USER uid[:gid]`.
fn dockerfile_user(path: &Path) -> u64 {
    let user = last(&dockerfile(path), "USER").to_owned();
    user.split(':').next().and_then(|uid| uid.parse().ok()).unwrap_or_else(|| panic!("USER {user} is not numeric"))
}

#[test]
fn every_manifest_passes_the_kubernetes_api_schema() {
    let every = validate(&manifest_files());
    assert!(every.failures.is_empty(), "manifests fail the Kubernetes API schema:\n{:#?}", every.failures);
    assert!(every.documents.len() >= 13, "only {} manifests found", every.documents.len());
    let manifests = Manifests::load();
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(manifests.of_kind(kind).next().is_some(), "no {kind}");
    }

    // What kustomize generates is checked too: the ConfigMap (under the 1 MiB
    // an object may have) and the Secret.
    let kustomization = read(&kubernetes_dir().join("kustomization.yaml"));
    let mut data = serde_json::Map::new();
    for file in ["portico.toml", "portico.graphql"] {
        assert!(kustomization.contains(&format!("- {file}")), "the configMapGenerator lacks {file}");
        data.insert(file.to_owned(), json!(read(&kubernetes_dir().join(file))));
    }
    let secrets = env_file(&kubernetes_dir().join("demo-secrets.env"));
    let generated = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "portico-config"}, "data": data}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "portico-secrets"}, "type": "Opaque",
               "stringData": secrets}),
    ];
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut paths = Vec::new();
    for (index, object) in generated.iter().enumerate() {
        let path = scratch.path().join(format!("generated-{index}.json"));
        std::fs::write(&path, object.to_string()).expect("write");
        paths.push(path);
    }
    let validated = validate(&paths);
    assert!(validated.failures.is_empty(), "{:#?}", validated.failures);
    let size: usize = data.values().map(|value| value.as_str().map_or(0, str::len)).sum();
    assert!(size < 1024 * 1024, "the ConfigMap would hold {size} bytes; Kubernetes stores at most 1 MiB");
}

#[test]
fn the_validator_refuses_a_misspelled_field_a_wrong_type_and_an_unknown_kind() {
    let manifests = Manifests::load();
    let deployment = manifests.get("Deployment/portico");

    let mut misspelled = deployment.clone();
    misspelled["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let mut wrong_type = deployment.clone();
    wrong_type["spec"]["replicas"] = json!("two");
    let mut wrong_nested_type = deployment.clone();
    wrong_nested_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("http");
    let mut unknown_kind = deployment.clone();
    unknown_kind["apiVersion"] = json!("app/v1");

    let scratch = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("misspelled", misspelled, "'imagePullPolicyy' was unexpected"),
        ("wrong-type", wrong_type, "spec.replicas: 'two' is not of type 'integer'"),
        ("wrong-nested-type", wrong_nested_type, "containerPort: 'http' is not of type 'integer'"),
        ("unknown-kind", unknown_kind, "Couldn't find schema for kind Deployment with api version app/v1"),
    ];
    for (name, document, expected) in cases {
        let path = scratch.path().join(format!("{name}.json"));
        std::fs::write(&path, document.to_string()).expect("write");
        let failures = validate(&[path]).failures;
        assert_eq!(failures.len(), 2, "{name}: one failure per Kubernetes version expected: {failures:#?}");
        assert!(failures.iter().all(|failure| failure.contains(expected)), "{name}: {failures:#?}");
    }
}

/// The configuration the ConfigMap carries is one this build accepts.
#[test]
fn the_configmaps_configuration_passes_portico_check() {
    let mut check = Command::new(env!("CARGO_BIN_EXE_portico"));
    check.args(["check", "--config"]).arg(kubernetes_dir().join("portico.toml"));
    // The Secret's values, as the Deployment puts them into the environment.
    check.envs(env_file(&kubernetes_dir().join("demo-secrets.env"))).env_remove("RUST_LOG");
    let output = check.output().expect("run portico check");
    assert!(
        output.status.success(),
        "portico check refuses examples/kubernetes/portico.toml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_configmap_carries_the_schema_portico_serves() {
    assert_eq!(
        read(&kubernetes_dir().join("portico.graphql")),
        read(&root().join("schema").join("portico.graphql")),
        "examples/kubernetes/portico.graphql differs from schema/portico.graphql: \
         cp schema/portico.graphql examples/kubernetes/"
    );
    let config = kubernetes_config();
    let schema = config["graphql"]["schema"].as_array().expect("[graphql] schema");
    assert_eq!(schema, &vec![toml::Value::from("portico.graphql")], "the schema is read beside portico.toml");
}

#[test]
fn kustomize_is_given_every_manifest_and_the_secrets_the_deployment_reads() {
    let kustomization = read(&kubernetes_dir().join("kustomization.yaml"));
    for file in &base_files() {
        let name = file.file_name().and_then(|name| name.to_str()).expect("name");
        assert!(kustomization.contains(&format!("- {name}")), "kustomization.yaml does not list {name}");
    }
    let overlay = read(&kubernetes_dir().join("payment-in-cluster").join("kustomization.yaml"));
    for name in ["payment.yaml", "payment-service.yaml"] {
        assert!(overlay.contains(&format!("- {name}")), "payment-in-cluster/kustomization.yaml does not list {name}");
    }

    let manifests = Manifests::load();
    let secrets = env_file(&kubernetes_dir().join("demo-secrets.env"));
    let env = manifests.portico_container()["env"].as_array().expect("env");
    let mut from_secret = BTreeSet::new();
    for variable in env {
        if let Some(reference) = variable["valueFrom"].get("secretKeyRef") {
            assert_eq!(reference["name"], "portico-secrets", "{variable}");
            assert!(secrets.contains_key(text(&reference["key"])), "demo-secrets.env lacks {}", reference["key"]);
            from_secret.insert(text(&variable["name"]).to_owned());
        }
    }
    let wanted: BTreeSet<String> = ["PORTICO_JWT_SECRET", "PORTICO_SIGNING_KEY"].map(String::from).into();
    assert_eq!(from_secret, wanted);
    assert!(read(&kubernetes_dir().join("portico.toml")).contains("${PORTICO_JWT_SECRET}"));
}

#[test]
fn the_image_and_the_manifests_agree_on_build_user_paths_and_ports() {
    let manifests = Manifests::load();
    let instructions = dockerfile(&root().join("Dockerfile"));

    // The release build: the one the READMEs document.
    let build = instructions.iter().find(|(name, arguments)| name == "RUN" && arguments.contains("cargo build"));
    assert!(build.expect("a RUN cargo build").1.contains(RELEASE_BUILD), "the Dockerfile does not run {RELEASE_BUILD}");
    for readme in [root().join("README.md"), kubernetes_dir().join("README.md")] {
        assert!(read(&readme).contains(RELEASE_BUILD), "{} does not document {RELEASE_BUILD}", readme.display());
    }

    // The configuration's path: the image's command, the container's args,
    // the ConfigMap's mount.
    let entrypoint = exec_form(last(&instructions, "ENTRYPOINT"));
    let command = exec_form(last(&instructions, "CMD"));
    assert_eq!(entrypoint, ["/usr/local/bin/portico"]);
    assert_eq!(command, ["serve", "--config", "/etc/portico/portico.toml"]);
    let container = manifests.portico_container();
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("args");
    assert_eq!(args, command, "the container's args differ from the image's CMD");
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|mount| mount["name"] == "config")
        .expect("the config mount");
    assert_eq!(format!("{}/portico.toml", text(&mount["mountPath"])), command[2]);
    let volumes = manifests.get("Deployment/portico")["spec"]["template"]["spec"]["volumes"].clone();
    let config_volume = volumes.as_array().expect("volumes").iter().find(|volume| volume["name"] == "config").cloned();
    assert_eq!(config_volume.expect("config volume")["configMap"]["name"], "portico-config");

    // Ports: the configuration's listeners, EXPOSE, the containerPorts.
    let config = kubernetes_config();
    let listen = listen_port(config["server"]["listen"].as_str().expect("server.listen"));
    let metrics = listen_port(config["telemetry"]["metrics"]["listen"].as_str().expect("telemetry.metrics.listen"));
    let exposed: BTreeSet<u16> =
        last(&instructions, "EXPOSE").split_whitespace().map(|port| port.parse().expect("a port")).collect();
    assert_eq!(exposed, BTreeSet::from([listen, metrics]), "EXPOSE differs from the configuration's listeners");
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| (text(&port["name"]), port["containerPort"].as_u64().expect("a number")))
        .collect();
    assert_eq!(ports, BTreeMap::from([("http", u64::from(listen)), ("metrics", u64::from(metrics))]));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }

    // The user: non-root in the image, the same id in the securityContext.
    let pod = &manifests.get("Deployment/portico")["spec"]["template"]["spec"];
    let user = dockerfile_user(&root().join("Dockerfile"));
    assert_ne!(user, 0, "the image runs as root");
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(user));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let services_user = dockerfile_user(&root().join("services").join("Dockerfile"));
    assert_ne!(services_user, 0, "the services' image runs as root");
    for deployment in manifests.of_kind("Deployment").filter(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("portico-services:"))
    }) {
        let context = &deployment["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(context["runAsUser"].as_u64(), Some(services_user), "{}", deployment["metadata"]["name"]);
    }
}

#[test]
fn a_terminating_replica_drains_inside_its_grace_period() {
    let manifests = Manifests::load();
    let deployment = manifests.get("Deployment/portico");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace =
        Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds"));
    let pre_stop: Vec<String> =
        serde_json::from_value(manifests.portico_container()["lifecycle"]["preStop"]["exec"]["command"].clone())
            .expect("a preStop command");
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop = Duration::from_secs(pre_stop[1].parse().expect("seconds"));

    let config = kubernetes_config();
    let shutdown_timeout = config_duration(&config, &["server"], "shutdown_timeout");
    let drain_delay = config_duration(&config, &["server", "readiness"], "drain_delay");
    let needed = pre_stop + drain_delay + shutdown_timeout;
    assert!(
        needed < grace,
        "preStop {pre_stop:?} + drain_delay {drain_delay:?} + shutdown_timeout {shutdown_timeout:?} = {needed:?} \
         must stay below terminationGracePeriodSeconds ({grace:?})"
    );
    // The readiness probe is the one that sees the drain: on /readyz, and
    // failing within the drain delay.
    let readiness = &manifests.portico_container()["readinessProbe"];
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    let seconds = |key: &str| readiness[key].as_u64().unwrap_or_else(|| panic!("readinessProbe.{key}"));
    let noticed = Duration::from_secs(seconds("periodSeconds") * seconds("failureThreshold"));
    assert!(
        noticed <= drain_delay,
        "the readiness probe fails only after {noticed:?}, later than drain_delay ({drain_delay:?}) closes the listener"
    );

    assert!(deployment["spec"]["replicas"].as_u64().expect("replicas") >= 2);
    let autoscaler = manifests.get("HorizontalPodAutoscaler/portico");
    assert_eq!(autoscaler["spec"]["scaleTargetRef"]["name"], "portico");
    assert!(autoscaler["spec"]["minReplicas"].as_u64().expect("minReplicas") >= 2);
    let labels = &pod_labels(deployment);
    assert!(selects(&manifests.get("PodDisruptionBudget/portico")["spec"]["selector"]["matchLabels"], labels));
    assert!(selects(&manifests.get("Service/portico")["spec"]["selector"], labels));
}

fn pod_labels(deployment: &Value) -> Value {
    deployment["spec"]["template"]["metadata"]["labels"].clone()
}

/// Whether a label selector (a map) matches these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

#[test]
fn every_configured_service_and_redis_is_a_kubernetes_service_on_its_port() {
    let manifests = Manifests::load();
    let config = kubernetes_config();
    let services = config["services"].as_table().expect("[services]");
    assert_eq!(services.len(), 3);
    let mut external = 0;
    for (name, service) in services {
        assert_eq!(service["discovery"].as_str(), Some("dns"), "services.{name} uses DNS discovery");
        let endpoints = service["endpoints"].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 1, "services.{name}: one DNS name");
        let url = endpoints[0].as_str().expect("a URL");
        let authority = url.strip_prefix("http://").expect("http://").trim_end_matches('/');
        let (host, port) = authority.split_once(':').expect("host:port");
        let kubernetes_service = manifests.get(&format!("Service/{host}"));
        let spec = &kubernetes_service["spec"];
        let ports: Vec<u64> =
            spec["ports"].as_array().expect("ports").iter().map(|p| p["port"].as_u64().expect("port")).collect();
        assert_eq!(ports, [port.parse::<u64>().expect("port")], "Service/{host}'s port");
        if spec["type"] == "ExternalName" {
            external += 1;
            continue;
        }
        // Headless, so the name resolves to every pod.
        assert_eq!(spec["clusterIP"], "None", "Service/{host} is headless");
        let deployment = manifests.get(&format!("Deployment/{host}"));
        assert!(selects(&spec["selector"], &pod_labels(deployment)), "Service/{host} selects its pods");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!([name]), "Deployment/{host} runs {name}");
        assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(ports[0]));
    }
    assert_eq!(external, 1, "payment is the EC2 host's name");
    let in_cluster = validate(&[kubernetes_dir().join("payment-in-cluster").join("payment.yaml")]);
    assert_eq!(in_cluster.documents[0].1["spec"]["template"]["spec"]["containers"][0]["args"], json!(["payment"]));

    let redis = manifests.get("Service/redis");
    assert!(selects(&redis["spec"]["selector"], &pod_labels(manifests.get("Deployment/redis"))));
    for url in [&config["rate_limiting"]["redis_url"], &config["cache"]["redis_url"]] {
        let port = redis["spec"]["ports"][0]["port"].as_u64().expect("port");
        assert_eq!(url.as_str(), Some(format!("redis://redis:{port}").as_str()));
    }
    assert_eq!(config["rate_limiting"]["backend"].as_str(), Some("redis"));
}
