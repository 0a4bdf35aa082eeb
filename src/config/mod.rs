//! Loading and validating the gateway's configuration.
//!
//! Each concern owns the struct for its own section (`server`, `telemetry`,
//! `services`, `routes`); this module only composes them, reads the TOML,
//! expands `${VAR}` references and runs the cross-section checks once at
//! start. Everything downstream receives ready, typed values and never
//! re-checks them.

mod env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::cache::CacheConfig;
use crate::cors::CorsConfig;
use crate::graphql::model::SchemaModel;
use crate::graphql::{GraphqlConfig, GraphqlSetupError};
use crate::operations::{OpenapiConfig, OperationConfig};
use crate::problems::{line_and_column, ConfigProblem, Problems};
use crate::proxy::RouteConfig;
use crate::ratelimit::{PolicyConfig, RateLimitingConfig};
use crate::server::ServerConfig;
use crate::signing::IdentitySigningConfig;
use crate::telemetry::TelemetryConfig;
use crate::upstream::ServiceConfig;

/// The configuration the gateway runs with when `portico serve` is given no
/// file: the demo's three local Django services.
pub const DEFAULT_CONFIG: &str = include_str!("../../examples/portico.toml");

/// The whole gateway configuration, one field per concern.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, connection limits and shutdown behaviour.
    pub server: ServerConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// Backend services by name, each with its endpoints and client policy.
    pub services: BTreeMap<String, ServiceConfig>,
    /// REST passthrough routes, matched by longest path prefix.
    pub routes: Vec<RouteConfig>,
    /// The GraphQL endpoint and its schema files.
    pub graphql: GraphqlConfig,
    /// REST endpoints backed by stored GraphQL operations.
    pub operations: Vec<OperationConfig>,
    /// Where the OpenAPI document of the REST endpoints is served.
    pub openapi: OpenapiConfig,
    /// How callers authenticate.
    pub auth: AuthConfig,
    /// Response caching: memory bound, admin endpoint, Redis tier.
    pub cache: CacheConfig,
    /// Where rate-limit state lives and whom to believe about client addresses.
    pub rate_limiting: RateLimitingConfig,
    /// Named rate-limit policies; `default` applies wherever no other is attached.
    pub rate_limits: BTreeMap<String, PolicyConfig>,
    /// CORS policies for browser front ends, attached to routes by name.
    pub cors: CorsConfig,
    /// RFC 9421 signatures over the identity headers backends receive.
    pub identity_signing: IdentitySigningConfig,
    /// The folder relative paths are resolved against: the configuration
    /// file's folder (the working directory for the embedded default).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The GraphQL schema, read and checked during validation.
    #[serde(skip)]
    pub schema: Option<Arc<SchemaModel>>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the file: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems were found; each is reported.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Reads, expands and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_in(&text, &path.display().to_string(), &base_dir)
    }

    /// The embedded default configuration, validated like any other. Its
    /// relative paths are those of `examples/portico.toml` in the source
    /// tree it was built from, when that tree is still there.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let base_dir = if examples.is_dir() { examples } else { PathBuf::new() };
        Self::parse_in(DEFAULT_CONFIG, "<default>", &base_dir)
    }

    /// Parses and validates TOML text; `source` names it in error messages
    /// and relative paths are resolved against the working directory.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, source, Path::new(""))
    }

    /// Parses and validates TOML text, resolving relative paths against `base_dir`.
    pub fn parse_in(text: &str, source: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let located = |mut problem: ConfigProblem| {
            if problem.source.is_empty() {
                problem.source = source.to_owned();
            }
            problem
        };
        let expanded = env::expand(text, |name| std::env::var(name).ok())
            .map_err(|problems| ConfigError::Invalid(problems.into_iter().map(located).collect()))?;

        let deserializer = toml::Deserializer::new(&expanded);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let position = inner.span().map(|span| line_and_column(&expanded, span.start));
            let problem = ConfigProblem {
                source: String::new(),
                position,
                key: if key == "." { String::new() } else { key },
                message: inner.message().trim().to_owned(),
            };
            ConfigError::Invalid(vec![located(problem)])
        })?;

        config.base_dir = base_dir.to_path_buf();
        let mut problems = config.validate();
        config.server.load_tls_files(base_dir, &mut problems);
        for (name, service) in &mut config.services {
            service.load_tls_files(base_dir, &format!("services.{name}"), &mut problems);
        }
        config.auth.load_files(base_dir, &mut problems);
        if let Some(caller) = &config.graphql.playground_caller {
            match config.auth.jwt.as_ref().and_then(|jwt| jwt.secret.as_ref().map(|secret| (jwt, secret))) {
                Some((jwt, secret)) => {
                    config.graphql.playground_signer = Some(Arc::new(crate::graphql::PlaygroundSigner {
                        caller: caller.clone(),
                        secret: secret.clone(),
                        issuer: jwt.issuer.clone(),
                        audience: jwt.audience.clone(),
                    }));
                }
                None => problems.push(
                    "graphql.playground_caller",
                    "needs [auth.jwt] with a `secret` to sign the playground's token; remove it or set the secret",
                ),
            }
        }
        if config.graphql.enabled {
            config.graphql.load_trusted_documents(base_dir, &mut problems);
            let services = config.services.keys().cloned().collect();
            match config.graphql.load_schema(base_dir, &services) {
                Ok(model) => {
                    crate::operations::compile_all(
                        &mut config.operations,
                        base_dir,
                        &model,
                        &config.graphql,
                        &config.graphql.header_rule_table(&config.services),
                        &mut problems,
                    );
                    config.schema = Some(Arc::new(model));
                }
                Err(GraphqlSetupError::Schema(schema_problems)) => {
                    problems.extend(schema_problems.into_iter().map(|problem| ConfigProblem {
                        source: problem.file,
                        position: Some((problem.position.line, problem.position.column)),
                        key: String::new(),
                        message: problem.message,
                    }));
                }
                Err(other) => problems.push("", other.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems.into_iter().map(located).collect()))
        }
    }

    /// Settings that work but that an operator should know about; `portico
    /// check` prints them and `serve` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (Some(caller), false) = (&self.graphql.playground_caller, self.server.listen.ip().is_loopback()) {
            warnings.push(format!(
                "graphql.playground_caller: the playground gives a token for sub {:?} to anyone who can load {} on {}; \
                 a development-only option: remove it, or listen on loopback",
                caller.sub, self.graphql.path, self.server.listen
            ));
        }
        warnings
    }

    /// Cross-section checks: each concern validates its own section, then the
    /// references between sections are checked here.
    fn validate(&self) -> Problems {
        let mut problems = Problems::default();
        self.server.validate(&mut problems);
        self.telemetry.validate(&mut problems);
        self.graphql.validate(&mut problems);
        self.auth.validate(&mut problems);
        self.cache.validate(&mut problems);
        self.rate_limiting.validate(&self.rate_limits, &mut problems);
        let policy_names: Vec<&str> = self.rate_limits.keys().map(String::as_str).collect();
        let check_policy = |key: String, name: &Option<String>, problems: &mut Problems| {
            if let Some(name) = name {
                if name != "none" && !self.rate_limits.contains_key(name) {
                    let known =
                        if policy_names.is_empty() { "none defined".to_owned() } else { policy_names.join(", ") };
                    problems.push(
                        key,
                        format!("unknown rate-limit policy {name:?} (known: {known}; \"none\" turns limiting off)"),
                    );
                }
            }
        };
        check_policy("graphql.rate_limit".to_owned(), &self.graphql.rate_limit, &mut problems);
        for (index, route) in self.routes.iter().enumerate() {
            check_policy(format!("routes[{index}].rate_limit"), &route.rate_limit, &mut problems);
        }
        self.cors.validate(&mut problems);
        self.identity_signing.validate(&mut problems);
        self.openapi.validate(&mut problems);
        if !self.operations.is_empty() && !self.graphql.enabled {
            problems.push("operations", "stored operations run on the GraphQL endpoint: set [graphql] enabled = true");
        }
        for (index, operation) in self.operations.iter().enumerate() {
            let key = format!("operations[{index}]");
            check_policy(format!("{key}.rate_limit"), &operation.rate_limit, &mut problems);
            self.cors.check_reference(format!("{key}.cors"), operation.cors.as_deref(), &mut problems);
            if operation.cache.is_some() && operation.method != crate::operations::OperationMethod::Get {
                problems.push(format!("{key}.cache"), "only GET answers are cached: remove `cache` or serve with GET");
            }
        }
        for (index, route) in self.routes.iter().enumerate() {
            self.cors.check_reference(format!("routes[{index}].cors"), route.cors.as_deref(), &mut problems);
        }
        let scoped_without_auth =
            self.auth.jwt.is_none() && self.auth.api_keys.is_empty() && self.auth.api_keys_file.is_none();
        let identity_headers = self.auth.identity_header_names();
        for (name, service) in &self.services {
            service.validate(&format!("services.{name}"), &mut problems);
            service.headers.validate(&format!("services.{name}.headers"), &identity_headers, &mut problems);
        }
        for (index, route) in self.routes.iter().enumerate() {
            route.headers.validate(&format!("routes[{index}].headers"), &identity_headers, &mut problems);
        }
        for (name, rules) in &self.graphql.header_rules {
            rules.validate(&format!("graphql.header_rules.{name}"), &identity_headers, &mut problems);
        }
        let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
        let mut seen_prefixes = BTreeMap::new();
        for (index, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{index}]");
            route.validate(&key, &mut problems);
            if !self.services.contains_key(&route.service) {
                problems.push(
                    format!("{key}.service"),
                    format!(
                        "unknown service {:?} (known: {})",
                        route.service,
                        if known.is_empty() {
                            "none; add a [services.<name>] table".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if scoped_without_auth && route.auth == crate::auth::AuthMode::Required {
                problems.push(format!("{key}.auth"), "\"required\" needs [auth.jwt] or API keys to be configured");
            }
            if let Some(first) = seen_prefixes.insert(route.prefix.clone(), index) {
                problems.push(
                    format!("{key}.prefix"),
                    format!(
                        "prefix {:?} is already used by routes[{first}]; each prefix may appear once",
                        route.prefix
                    ),
                );
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, "test.toml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                if let Err(error) = Config::load(&path) {
                    panic!("{} does not load:\n{error}", path.display());
                }
                parsed += 1;
            }
        }
        assert!(parsed >= 1, "no example configs found in {}", dir.display());
    }

    #[test]
    fn a_playground_caller_needs_a_jwt_secret_and_is_warned_about_off_loopback() {
        let caller = "[graphql]\nplayground_caller = { sub = \"1\", scopes = [\"payments:read\"] }\n";
        let refused = problems(caller);
        assert!(
            refused.iter().any(|problem| problem.contains("graphql.playground_caller") && problem.contains("secret")),
            "{refused:?}"
        );

        let jwt = "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"a-test-secret-that-is-long-enough-for-hs256\"\n";
        let open =
            Config::parse(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{jwt}{caller}"), "t.toml").expect("valid");
        assert!(open.warnings().iter().any(|warning| warning.contains("development-only")), "{:?}", open.warnings());
        let local =
            Config::parse(&format!("[server]\nlisten = \"127.0.0.1:8080\"\n{jwt}{caller}"), "t.toml").expect("valid");
        assert!(local.warnings().is_empty(), "{:?}", local.warnings());
    }

    #[test]
    fn stored_operations_that_do_not_fit_the_schema_or_their_path_are_problems_naming_the_key() {
        let folder = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = folder.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let good = write("good.graphql", "query Student($id: ID!) { student(id: $id) { fullName } }");
        let invalid = write("invalid.graphql", "query Student($id: ID!) { student(id: $id) { nickname } }");
        let mutation = write("mutation.graphql", "mutation M($key: String!) { checkout(input: {studentId: \"1\", amount: \"1\", currency: \"USD\"}, idempotencyKey: $key) { id } }");
        let operation = |method: &str, path: &str, document: &str| {
            format!("[[operations]]\nmethod = \"{method}\"\npath = \"{path}\"\ndocument = \"{document}\"\n")
        };
        let text = [
            ["student_api", "live_reading", "payment"]
                .map(|name| format!("[services.{name}]\nendpoints = [\"http://127.0.0.1:9\"]\n"))
                .concat(),
            "[graphql]\nenabled = true\n".to_owned(),
            operation("GET", "/a/{id}", &good),
            operation("GET", "/b/{studentId}", &good),
            operation("GET", "/c/{id}", &invalid),
            operation("GET", "/d", &mutation),
            operation("GET", "/e/{id}", "missing.graphql"),
            operation("GET", "/a/{other}", &good),
        ]
        .concat();
        let found = problems(&text);
        let has = |key: &str, says: &str| found.iter().any(|problem| problem.contains(key) && problem.contains(says));
        assert!(has("operations[1].path", "{studentId} is no variable"), "{found:?}");
        assert!(has("operations[1].path", "declare $studentId"), "{found:?}");
        assert!(has("operations[2].document", "does not validate"), "{found:?}");
        assert!(has("operations[3].method", "POST"), "{found:?}");
        assert!(has("operations[4].document", "cannot read"), "{found:?}");
        assert!(has("operations[5].path", "already served by operations[0]"), "{found:?}");
        assert_eq!(found.len(), 5 + 1, "{found:?}");
    }

    #[test]
    fn an_empty_file_is_a_working_config() {
        let config = Config::parse("", "empty.toml").expect("defaults are valid");
        assert_eq!(config.server.listen.port(), 8080);
        assert!(config.routes.is_empty());
    }

    #[test]
    fn unknown_service_names_the_key_and_the_known_services() {
        let text = r#"
            [services.payment]
            endpoints = ["http://127.0.0.1:8003"]
            [services.student_api]
            endpoints = ["http://127.0.0.1:8001"]
            [[routes]]
            prefix = "/a/"
            service = "payment"
            [[routes]]
            prefix = "/b/"
            service = "payment"
            [[routes]]
            prefix = "/payment/"
            service = "paymnt"
        "#;
        assert_eq!(
            problems(text),
            vec![r#"test.toml: routes[2].service: unknown service "paymnt" (known: payment, student_api)"#]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_path_and_position() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("test.toml:3:1: server.listne: unknown field `listne`"), "{found:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = r#"
            [services.a]
            endpoints = []
            [[routes]]
            prefix = "nope"
            service = "b"
        "#;
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().any(|p| p.contains("services.a.endpoints")));
        assert!(found.iter().any(|p| p.contains("routes[0].prefix")));
        assert!(found.iter().any(|p| p.contains("routes[0].service")));
    }

    #[test]
    fn bad_durations_and_sizes_name_the_key() {
        let found = problems("[server]\nshutdown_timeout = \"soon\"\n");
        assert!(found[0].contains("server.shutdown_timeout"), "{found:?}");
        let found = problems("[server]\nrequest_body_limit = \"lots\"\n");
        assert!(found[0].contains("server.request_body_limit"), "{found:?}");
    }
}
