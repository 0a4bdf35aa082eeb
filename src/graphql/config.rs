//! The `[graphql]` section: where the schema comes from and the limits that
//! keep abusive documents away from the backends.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::Problems;

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
}

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
            max_url_value_length: 512,
            max_batch_size: 100,
            max_upstream_response_size: ByteSize::mib(16),
            persisted_queries: true,
            trusted_documents: None,
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
        ] {
            if value == 0 {
                problems.push(format!("graphql.{key}"), "must be at least 1");
            }
        }
        if self.max_cost == 0 {
            problems.push("graphql.max_cost", "must be at least 1");
        }
    }
}
