//! The bodies of the fuzz targets in `fuzz/`, here so that the corpus
//! replay test runs every committed input through the very same code on
//! stable: an input that once crashed a target stays in the test suite.
//!
//! Each entry point takes arbitrary bytes and must never panic; where the
//! code has a property worth more than "no panic" (a canonical path is a
//! fixed point, a verified token carries the configured issuer), it is
//! asserted here. Not part of the library's interface.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_graphql::Variables;
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value as Json;

use crate::auth::{JwtConfig, JwtVerifier};
use crate::cache::rules::{self, Allowance, Directives};
use crate::config::Config;
use crate::graphql::limits::{self, Limits};
use crate::graphql::model::SchemaModel;
use crate::graphql::schema;
use crate::graphql::sdl::{self, SchemaSource};
use crate::graphql::{cache_control, GraphqlConfig};
use crate::routing::{self, PrefixMatch, PrefixTable};

/// Every target, by the name of its folder under `fuzz/corpus/`.
pub const TARGETS: [&str; 7] = ["config", "path", "sdl", "graphql_limits", "jwt", "cache_control", "backend_json"];

/// The services of the default schema, so its `@rest` fields resolve.
const SERVICES: [&str; 3] = ["student_api", "live_reading", "payment"];

/// The HS256 secret of the JWT target's verifier and of the tokens it signs.
pub const JWT_SECRET: &str = "portico-fuzz-secret-0123456789abcdef";
/// The issuer and audience the JWT target's verifiers require.
pub const JWT_ISSUER: &str = "https://id.example";
/// See [`JWT_ISSUER`].
pub const JWT_AUDIENCE: &str = "portico";

/// The state each target needs, built once per process (reading key files
/// and building the default schema per input would drown the fuzzing).
pub struct Targets {
    graphql: GraphqlTarget,
    sdl: SdlTarget,
    jwt: JwtTarget,
}

impl Targets {
    /// Builds every target; `fixtures` is `tests/fixtures/jwt`.
    pub fn new(fixtures: &Path) -> Self {
        Self { graphql: GraphqlTarget::new(), sdl: SdlTarget::new(), jwt: JwtTarget::new(fixtures) }
    }

    /// Runs `data` through the target called `name` (one of [`TARGETS`]).
    pub fn run(&self, name: &str, data: &[u8]) {
        match name {
            "config" => config(data),
            "path" => path(data),
            "sdl" => self.sdl.run(data),
            "graphql_limits" => self.graphql.run(data),
            "jwt" => self.jwt.run(data),
            "cache_control" => cache_control_headers(data),
            "backend_json" => backend_json(data),
            other => panic!("no fuzz target {other:?}"),
        }
    }
}

/// TOML text through the parser, `${VAR}` expansion and validation, and
/// each problem through its `Display` (which slices the text at positions).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Validation reads the files a configuration names; a device such as
    // /dev/zero would only measure the machine's memory.
    if ["/dev", "/proc", "/sys"].iter().any(|device| text.contains(device)) {
        return;
    }
    match Config::parse_in(text, "fuzz.toml", Path::new("/nonexistent-fuzz-base")) {
        Ok(_) => {}
        Err(error) => drop(error.to_string()),
    }
}

/// A path (first line) through canonicalisation and, when it is canonical,
/// through longest-prefix matching against the prefixes on the other lines
/// (or the example configuration's routes).
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let raw = lines.next().unwrap_or_default();
    let mut prefixes: Vec<&str> = lines.filter(|line| line.starts_with('/')).collect();
    if prefixes.is_empty() {
        prefixes = vec!["/student-api/", "/live-reading/", "/payment/", "/graphql", "/"];
    }
    prefixes.sort_unstable();
    prefixes.dedup();

    let Ok(canonical) = routing::normalize(raw) else { return };
    assert!(canonical.starts_with('/'), "{raw:?} became {canonical:?}");
    match routing::normalize(&canonical) {
        Ok(again) => assert_eq!(again, canonical, "normalising {raw:?} twice gives another path"),
        Err(error) => panic!("{raw:?} became {canonical:?}, which is refused: {error}"),
    }

    let table = PrefixTable::new(prefixes.iter().map(|prefix| (Arc::from(*prefix), *prefix)));
    let matches = |prefix: &str| {
        canonical
            .strip_prefix(prefix)
            .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    };
    let longest = prefixes.iter().copied().filter(|prefix| matches(prefix)).max_by_key(|prefix| prefix.len());
    match table.lookup(&canonical) {
        PrefixMatch::Found(found) => {
            assert!(matches(found), "{found:?} does not cover {canonical:?}");
            assert_eq!(found.len(), longest.map_or(0, str::len), "{canonical:?}: {found:?} is not the longest");
        }
        PrefixMatch::AddSlash(prefix, _) => {
            assert_eq!(prefix.strip_suffix('/'), Some(&*canonical), "{canonical:?} redirected to {prefix:?}");
        }
        PrefixMatch::NotFound => assert_eq!(longest, None, "{canonical:?} matches {longest:?} but was not found"),
    }
}

/// SDL text through loading and checking, and a checked schema through
/// async-graphql's dynamic schema builder.
struct SdlTarget {
    services: BTreeSet<String>,
}

impl SdlTarget {
    fn new() -> Self {
        Self { services: SERVICES.iter().map(|name| (*name).to_owned()).collect() }
    }

    fn run(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let source = SchemaSource { file: "fuzz.graphql".to_owned(), text: text.to_owned() };
        match sdl::load(&[source], &self.services) {
            Ok(model) => {
                // An error here is a gap in our checks, not a crash; only panics count.
                drop(schema::build_schema(&model, true));
            }
            Err(problems) => problems.iter().for_each(|problem| drop(problem.to_string())),
        }
    }
}

/// A GraphQL document through every check that runs before execution:
/// size and tokens, parse, depth/aliases/root fields/cost of each
/// operation, and the answer's `Cache-Control`, against the default schema.
struct GraphqlTarget {
    model: SchemaModel,
    limits: Limits,
}

impl GraphqlTarget {
    fn new() -> Self {
        let config = GraphqlConfig::default();
        let services = SERVICES.iter().map(|name| (*name).to_owned()).collect();
        let model = config.load_schema(Path::new(""), &services).expect("the default schema loads");
        Self { model, limits: config.limits() }
    }

    fn run(&self, data: &[u8]) {
        let Ok(query) = std::str::from_utf8(data) else { return };
        let variables = Variables::default();
        if limits::check_document(&self.model, query, None, &variables, &self.limits).is_err() {
            return;
        }
        // Only documents that passed the checks reach the header computation,
        // as in the endpoint.
        let Ok(document) = limits::parse(query) else { return };
        let Ok(operation) = limits::select_operation(&document, None) else { return };
        let Some(root_type) = limits::root_type(&self.model, operation.ty) else { return };
        drop(cache_control::header_value(&self.model, &document, operation, root_type));
    }
}

/// Arbitrary token text against verifiers of every key kind, and
/// fuzzer-chosen header and claims (`header JSON \n claims JSON`) signed
/// with the HS256 secret, so that claim checking is reached too.
struct JwtTarget {
    verifiers: Vec<JwtVerifier>,
    signing_key: EncodingKey,
}

impl JwtTarget {
    fn new(fixtures: &Path) -> Self {
        let with = |algorithms: &[&str], change: &dyn Fn(&mut JwtConfig)| {
            let mut config = JwtConfig {
                algorithms: algorithms.iter().map(|name| (*name).to_owned()).collect(),
                issuer: Some(JWT_ISSUER.to_owned()),
                audience: vec![JWT_AUDIENCE.to_owned()],
                scope_claim: "scp".to_owned(),
                ..JwtConfig::default()
            };
            config.forward_claims.insert("email".to_owned(), "X-User-Email".to_owned());
            change(&mut config);
            JwtVerifier::new(&config, fixtures).expect("the fixture keys load")
        };
        let verifiers = vec![
            with(&["HS256", "HS384", "HS512"], &|config| config.secret = Some(JWT_SECRET.to_owned())),
            with(&["RS256", "PS256"], &|config| config.public_key_file = Some("rsa.pub".into())),
            with(&["ES256"], &|config| config.public_key_file = Some("ec256.pub".into())),
            with(&["EdDSA"], &|config| config.public_key_file = Some("ed25519.pub".into())),
            with(&["RS256", "ES256"], &|config| config.jwks_file = Some("jwks-both.json".into())),
        ];
        Self { verifiers, signing_key: EncodingKey::from_secret(JWT_SECRET.as_bytes()) }
    }

    fn run(&self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        for verifier in &self.verifiers {
            // Keys from files never make verification wait.
            drop(verifier.verify(&text).now_or_never());
        }
        let Some((header, claims)) = text.split_once('\n') else { return };
        let Ok(claims) = serde_json::from_str::<Json>(claims) else { return };
        let mut header: Header = serde_json::from_str(header).unwrap_or_default();
        if !matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            header.alg = Algorithm::HS256;
        }
        let Ok(token) = jsonwebtoken::encode(&header, &claims, &self.signing_key) else { return };
        if let Some(Ok(verified)) = self.verifiers[0].verify(&token).now_or_never() {
            assert_eq!(verified.claims["iss"], JWT_ISSUER, "a token without the configured issuer passed: {claims}");
            let audience = &verified.claims["aud"];
            assert!(
                audience == JWT_AUDIENCE
                    || audience.as_array().is_some_and(|list| list.iter().any(|aud| aud == JWT_AUDIENCE)),
                "a token without the configured audience passed: {claims}"
            );
            assert!(verified.claims.get("exp").is_some_and(Json::is_number), "a token without exp passed: {claims}");
        }
    }
}

/// Response headers (`Name: value` lines; a line without a colon is a
/// `Cache-Control` value) through the request and storage rules, checking
/// that a stored answer's lifetime stays within the route's ceiling.
pub fn cache_control_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|byte| *byte == b'\n') {
        let (name, value) = match line.iter().position(|byte| *byte == b':') {
            Some(colon) => match HeaderName::from_bytes(&line[..colon]) {
                Ok(name) => (name, line[colon + 1..].trim_ascii()),
                Err(_) => (header::CACHE_CONTROL, line),
            },
            None => (header::CACHE_CONTROL, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let directives = Directives::of(&headers);
    let mode = rules::request_mode(&headers, true);
    assert!(!directives.no_store || mode == rules::RequestMode::Bypass, "no-store did not bypass the cache");
    drop(rules::vary_names(&headers));
    let allowance = Allowance {
        ttl: Duration::from_secs(300),
        negative_ttl: Some(Duration::from_secs(10)),
        stale_while_revalidate: Duration::from_secs(30),
        stale_if_error: Duration::from_secs(60),
        own_key: false,
    };
    let now = SystemTime::now();
    for status in [StatusCode::OK, StatusCode::NOT_FOUND] {
        let ceiling = if status == StatusCode::OK { allowance.ttl } else { Duration::from_secs(10) };
        for own_key in [false, true] {
            let allowance = Allowance { own_key, ..allowance };
            if let Ok(lifetimes) = rules::storable(status, &headers, &allowance, now) {
                assert!(!directives.no_store, "a no-store answer was stored");
                assert!(own_key || !directives.private, "a private answer was stored on a shared key");
                assert!(lifetimes.fresh_for <= ceiling, "{lifetimes:?} outlives the route's ttl");
                assert!(lifetimes.initial_age < lifetimes.fresh_for, "{lifetimes:?} was stale on arrival");
                assert!(lifetimes.stale_while_revalidate <= allowance.stale_while_revalidate);
                assert!(lifetimes.stale_if_error <= allowance.stale_if_error);
            }
        }
    }
}

/// A backend's answer through the GraphQL executor's shape reader, with
/// serde_json as the reference: under every shape the reader accepts all
/// that serde_json reads as a value, and nothing that serde_json refuses
/// even to skip (what a shape skips is checked as serde_json's
/// `IgnoredAny` checks it: a lone surrogate escape passes there); a string
/// it keeps reads back as serde_json reads it.
pub fn backend_json(data: &[u8]) {
    use crate::graphql::shape::{self, Bodies, Node, ObjectShape, Shape};
    let reference = serde_json::from_slice::<Json>(data);
    let skippable = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    let student = Shape::Object(Arc::new(ObjectShape {
        keys: vec![("id".into(), Shape::Scalar), ("full_name".into(), Shape::Scalar)],
        call_slots: 1,
    }));
    let page = Shape::Object(Arc::new(ObjectShape {
        keys: vec![("count".into(), Shape::Scalar), ("results".into(), Shape::List(Box::new(student.clone())))],
        call_slots: 0,
    }));
    for shape in [Shape::Scalar, Shape::Any, Shape::List(Box::new(Shape::Scalar)), student, page] {
        let read = shape::parse(data, 0, &shape);
        if reference.is_ok() {
            assert!(read.is_ok(), "the shape reader refused JSON that serde_json reads, under {shape:?}");
        }
        if read.is_ok() {
            assert!(skippable, "the shape reader took what serde_json refuses, under {shape:?}");
        }
    }
    if let (Ok(Json::String(expected)), Ok(Node::Str(raw))) = (&reference, shape::parse(data, 0, &Shape::Scalar)) {
        let mut bodies = Bodies::default();
        bodies.add(bytes::Bytes::copy_from_slice(data));
        assert_eq!(bodies.string(raw), expected.as_str(), "a kept string reads back as serde_json reads it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every committed input of every target (`fuzz/corpus/<target>/`),
    /// so a crash found once by fuzzing stays fixed.
    #[test]
    fn the_fuzz_corpus_replays_without_a_crash() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let targets = Targets::new(&root.join("tests/fixtures/jwt"));
        for target in TARGETS {
            let dir = root.join("fuzz/corpus").join(target);
            let mut inputs = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
                let path = entry.expect("readable entry").path();
                let data = std::fs::read(&path).expect("readable input");
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| targets.run(target, &data)));
                assert!(outcome.is_ok(), "{target}: {} crashes the target", path.display());
                inputs += 1;
            }
            assert!(inputs >= 3, "{target}: only {inputs} seed inputs in {}", dir.display());
        }
    }

    /// The seed tokens are valid, so mutations of them start from inputs
    /// that reach claim checking rather than dying at the signature.
    #[test]
    fn the_seed_tokens_verify() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = JwtTarget::new(&root.join("tests/fixtures/jwt"));
        for (seed, verifier) in [("hs256-valid", 0), ("rs256-valid-kid", 1), ("eddsa-valid", 3), ("rs256-valid-kid", 4)]
        {
            let token = std::fs::read_to_string(root.join("fuzz/corpus/jwt").join(seed)).expect("seed");
            let verified = target.verifiers[verifier].verify(&token).now_or_never().expect("no wait");
            assert_eq!(verified.map(|token| token.subject), Ok(Some("42".to_owned())), "{seed}");
        }
    }
}
