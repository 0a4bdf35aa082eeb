//! The `[graphql]` section: where the schema comes from and the limits that
//! keep abusive documents away from the backends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::headers::HeaderRulesConfig;
use crate::problems::Problems;

/// GraphQL endpoint settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlConfig {
    /// Whether the GraphQL endpoint is served (off unless asked for, so a
    /// REST-only configuration needs no schema).
    pub enabled: bool,
    /// Path of the endpoint (and of the GraphiQL playground).
    pub path: String,
    /// Authentication on the endpoint; field-level policies come from the
    /// `@authenticated` and `@requiresScopes` directives.
    pub auth: crate::auth::AuthMode,
    /// The `[rate_limits.<name>]` policy for the endpoint; its cost limits
    /// (if any) are charged each operation's cost.
    pub rate_limit: Option<String>,
    /// SDL files with `@rest` connectors, read in order and merged; relative
    /// paths are relative to the configuration file. Empty: the embedded
    /// default schema for the three demo services.
    pub schema: Vec<PathBuf>,
    /// Whether clients may introspect the schema.
    pub introspection: bool,
    /// Whether `GET /graphql` from a browser serves the GraphiQL playground.
    pub playground: bool,
    /// Folder with the playground's assets (`graphiql.min.js`, ...);
    /// `cargo xtask setup` installs them into `assets/graphiql`.
    pub playground_assets: PathBuf,
    /// Largest request body accepted on the endpoint.
    pub max_body_size: ByteSize,
    /// Largest query document, in bytes.
    pub max_document_size: ByteSize,
    /// Most lexical tokens in a query document.
    pub max_tokens: usize,
    /// Deepest selection nesting.
    pub max_depth: usize,
    /// Most aliased fields in one operation.
    pub max_aliases: usize,
    /// Most top-level fields in one operation.
    pub max_root_fields: usize,
    /// Highest operation cost, computed from `@cost` and `@listSize`.
    pub max_cost: u64,
    /// Most fields in a document once its fragments are expanded (a
    /// fragment spread twice counts twice), over all its operations.
    pub max_fields: usize,
    /// Total time allowed for one GraphQL operation, backend calls
    /// included; past it the client gets `OPERATION_TIMEOUT` and the
    /// operation's backend calls are dropped.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Longest value (in bytes) placed into a backend URL.
    pub max_url_value_length: usize,
    /// Largest number of keys in one batched backend call; more are split.
    pub max_batch_size: usize,
    /// Largest backend answer read for a field, in bytes.
    pub max_upstream_response_size: ByteSize,
    /// Automatic persisted queries (Apollo's `extensions.persistedQuery`).
    pub persisted_queries: bool,
    /// Trusted-documents manifest (JSON object of `sha256 hash -> document`);
    /// when set, only these documents are executed.
    pub trusted_documents: Option<PathBuf>,
    /// The manifest's documents by hash, read and checked during
    /// validation so that `portico check` catches a broken manifest.
    #[serde(skip)]
    pub(crate) trusted: Option<Arc<TrustedDocuments>>,
    /// Development only: the playground opens with an `Authorization`
    /// header for this caller, a token signed with `auth.jwt.secret` when
    /// the page is served (`portico check` warns when the listener is not
    /// on loopback: anyone who can load the page gets the token).
    pub playground_caller: Option<PlaygroundCaller>,
    /// What signs the playground's token, taken from `[auth.jwt]` when the
    /// configuration is loaded.
    #[serde(skip)]
    pub(crate) playground_signer: Option<Arc<PlaygroundSigner>>,
    /// Named header rules for `@rest` fields whose calls need their own
    /// (`@rest(..., headerRules: "locale")`), written like
    /// `[services.<name>.headers]` and applied after the called service's.
    pub header_rules: BTreeMap<String, HeaderRulesConfig>,
    /// File uploads (the GraphQL multipart request spec) and their limits.
    pub uploads: super::upload::UploadsConfig,
}

/// `graphql.playground_caller = { sub = "1", scopes = ["payments:read"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaygroundCaller {
    /// The token's subject.
    pub sub: String,
    /// The scopes it grants.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The playground caller with the JWT settings that sign its token.
#[derive(Debug)]
pub struct PlaygroundSigner {
    /// The caller.
    pub caller: PlaygroundCaller,
    /// The HS* secret.
    pub secret: String,
    /// `iss`, if the gateway checks it.
    pub issuer: Option<String>,
    /// `aud`, if the gateway checks it.
    pub audience: Vec<String>,
}

impl PlaygroundSigner {
    /// A fresh token, valid for an hour.
    pub fn token(&self) -> Option<String> {
        crate::auth::mint_token(
            &self.secret,
            &self.caller.sub,
            &self.caller.scopes,
            Duration::from_secs(3600),
            self.issuer.as_deref(),
            &self.audience,
        )
        .ok()
    }
}

/// Trusted documents by lowercase hash.
pub type TrustedDocuments = HashMap<String, Arc<str>>;

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/graphql".to_owned(),
            auth: crate::auth::AuthMode::Optional,
            rate_limit: None,
            schema: Vec::new(),
            introspection: true,
            playground: true,
            playground_assets: PathBuf::from("assets/graphiql"),
            max_body_size: ByteSize::mib(1),
            max_document_size: ByteSize::kib(64),
            max_tokens: 5_000,
            max_depth: 12,
            max_aliases: 30,
            max_root_fields: 20,
            max_cost: 10_000,
            max_fields: 2_000,
            operation_timeout: Duration::from_secs(30),
            max_url_value_length: 512,
            max_batch_size: 100,
            max_upstream_response_size: ByteSize::mib(16),
            persisted_queries: true,
            trusted_documents: None,
            trusted: None,
            playground_caller: None,
            playground_signer: None,
            header_rules: BTreeMap::new(),
            uploads: super::upload::UploadsConfig::default(),
        }
    }
}

impl GraphqlConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if !self.path.starts_with('/') || self.path.len() < 2 {
            problems.push("graphql.path", format!("{:?} must be a path like \"/graphql\"", self.path));
        }
        for (key, value) in [
            ("max_tokens", self.max_tokens),
            ("max_depth", self.max_depth),
            ("max_root_fields", self.max_root_fields),
            ("max_url_value_length", self.max_url_value_length),
            ("max_batch_size", self.max_batch_size),
            ("max_fields", self.max_fields),
        ] {
            if value == 0 {
                problems.push(format!("graphql.{key}"), "must be at least 1");
            }
        }
        if self.max_cost == 0 {
            problems.push("graphql.max_cost", "must be at least 1");
        }
        if self.operation_timeout.is_zero() {
            problems.push("graphql.operation_timeout", "must be longer than 0s, such as \"30s\"");
        }
        self.uploads.validate(problems);
    }

    /// Reads and checks the trusted-documents manifest, if one is named, so
    /// that serving uses what was checked and `portico check` reports a
    /// missing or broken file.
    pub(crate) fn load_trusted_documents(&mut self, base_dir: &Path, problems: &mut Problems) {
        let Some(path) = &self.trusted_documents else { return };
        match read_trusted_documents(&base_dir.join(path)) {
            Ok(documents) => self.trusted = Some(Arc::new(documents)),
            Err(error) => problems.push("graphql.trusted_documents", error.to_string()),
        }
    }
}

/// Why a trusted-documents manifest is unusable; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TrustedDocumentsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{} is not JSON: {source}", path.display())]
    NotJson {
        /// The manifest.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A document in it is not GraphQL.
    #[error("{}: the document for {hash:?} is not valid GraphQL: {source}", path.display())]
    NotGraphql {
        /// The manifest.
        path: PathBuf,
        /// The entry's hash.
        hash: String,
        /// The parse error.
        source: async_graphql_parser::Error,
    },
    /// The JSON does not have a manifest's shape (nothing failed beneath:
    /// the message says what to write).
    #[error("{}{problem}", path.display())]
    Shape {
        /// The manifest.
        path: PathBuf,
        /// What is wrong, starting with its separator from the path.
        problem: String,
    },
}

/// Reads a manifest: a JSON object of `sha256 -> document`, or Apollo's
/// persisted-query manifest (`{"operations": [{"id", "body"}]}`). Every
/// entry must be a document that parses; an empty manifest is refused, as
/// it would refuse every request.
pub(crate) fn read_trusted_documents(path: &Path) -> Result<TrustedDocuments, TrustedDocumentsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TrustedDocumentsError::Read { path: path.to_owned(), source })?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| TrustedDocumentsError::NotJson { path: path.to_owned(), source })?;
    let shape = |problem: String| TrustedDocumentsError::Shape { path: path.to_owned(), problem };
    let mut entries: Vec<(String, &serde_json::Value)> = Vec::new();
    if let Some(operations) = manifest.get("operations") {
        let operations = operations
            .as_array()
            .ok_or_else(|| shape(": \"operations\" must be a list of {\"id\", \"body\"} objects".to_owned()))?;
        for (index, operation) in operations.iter().enumerate() {
            let id = operation.get("id").and_then(|id| id.as_str()).ok_or_else(|| {
                shape(format!(": operations[{index}] has no string \"id\"; write {{\"id\": \"<sha256>\", \"body\": \"query ...\"}}"))
            })?;
            entries.push((id.to_ascii_lowercase(), operation.get("body").unwrap_or(&serde_json::Value::Null)));
        }
    } else if let Some(object) = manifest.as_object() {
        for (hash, body) in object {
            entries.push((hash.trim_start_matches("sha256:").to_ascii_lowercase(), body));
        }
    } else {
        return Err(shape(" must be a JSON object; write {\"<sha256>\": \"query ...\"}".to_owned()));
    }
    let mut documents = HashMap::with_capacity(entries.len());
    for (hash, body) in entries {
        let Some(body) = body.as_str() else {
            return Err(shape(format!(": the document for {hash:?} is not a string")));
        };
        if let Err(source) = async_graphql_parser::parse_query(body) {
            return Err(TrustedDocumentsError::NotGraphql { path: path.to_owned(), hash, source });
        }
        documents.insert(hash, Arc::from(body));
    }
    if documents.is_empty() {
        return Err(shape(" lists no documents; write {\"<sha256>\": \"query ...\"}".to_owned()));
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const TOML: &str = "[services.student_api]\nendpoints = [\"http://127.0.0.1:8001\"]\n\
        [services.live_reading]\nendpoints = [\"http://127.0.0.1:8002\"]\n\
        [services.payment]\nendpoints = [\"http://127.0.0.1:8003\"]\n\
        [graphql]\nenabled = true\ntrusted_documents = \"trusted.json\"\n";

    fn problems_with_manifest(content: Option<&str>) -> String {
        let folder = tempfile::tempdir().expect("temp dir");
        if let Some(content) = content {
            std::fs::write(folder.path().join("trusted.json"), content).expect("write manifest");
        }
        let toml = TOML;
        match Config::parse_in(toml, "portico.toml", folder.path()) {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_trusted_documents_manifest_is_read_and_checked_with_the_config() {
        let missing = problems_with_manifest(None);
        assert!(missing.contains("graphql.trusted_documents: cannot read"), "{missing}");
        for (content, expected) in [
            ("not json", "is not JSON"),
            ("[1, 2]", "must be a JSON object"),
            ("{}", "lists no documents"),
            (r#"{"abc": 3}"#, "is not a string"),
            (r#"{"abc": "query {"}"#, "is not valid GraphQL"),
            (r#"{"operations": [{"body": "{ a }"}]}"#, "has no string \"id\""),
        ] {
            let problems = problems_with_manifest(Some(content));
            assert!(problems.contains("graphql.trusted_documents: "), "{content}: {problems}");
            assert!(problems.contains(expected), "{content}: {problems}");
        }
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            folder.path().join("trusted.json"),
            r#"{"operations": [{"id": "ABC", "body": "{ lessons { id } }"}]}"#,
        )
        .expect("write manifest");
        let toml = TOML;
        let config = Config::parse_in(toml, "portico.toml", folder.path()).expect("a good manifest passes");
        let trusted = config.graphql.trusted.expect("loaded during validation, for serve to use");
        assert_eq!(trusted.get("abc").map(|body| &**body), Some("{ lessons { id } }"));
    }

    #[test]
    fn an_unusable_manifest_keeps_its_cause() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("trusted.json");
        std::fs::write(&path, "{ not json").expect("write");
        let error = super::read_trusted_documents(&path).expect_err("not JSON");
        let cause = std::error::Error::source(&error).expect("the JSON error");
        assert!(cause.downcast_ref::<serde_json::Error>().is_some(), "{cause:?}");
        assert!(error.to_string().ends_with(&format!("trusted.json is not JSON: {cause}")), "{error}");
    }
}
