//! The GraphQL front door: one schema, written as SDL in `schema/`, whose
//! fields are declared to come from the backends' REST endpoints with
//! `@rest` connectors.
//!
//! - [`sdl`] reads and checks the SDL into a [`model::SchemaModel`];
//! - [`connector`] turns a field's `@rest` into a concrete request;
//! - [`limits`] refuses abusive documents before any backend is called;
//! - [`schema`] builds async-graphql's dynamic schema: the SDL clients see,
//!   validation, introspection;
//! - [`plan`] compiles each validated operation once into a plan of calls
//!   and projections, with [`shape`] saying what of each answer to keep;
//! - [`execute`] makes a plan's calls through `upstream` (deduplicated,
//!   started as early as their inputs are known, batched level by level),
//!   [`variables`] coerces each request's variables, and [`write`] writes
//!   the answer straight to bytes, with the spec's null propagation;
//! - [`cache_control`] gives each answer its `Cache-Control` from the
//!   `@cacheControl` hints of the fields the operation selects;
//! - [`http`] speaks GraphQL over HTTP, persisted queries and the playground;
//! - [`upload`] reads multipart requests with files (the GraphQL multipart
//!   request spec), spooling each file, and [`form`] streams them on to a
//!   backend as a `@rest(multipart:)` call's `multipart/form-data` body;
//! - [`error`] is the one place failures get their `extensions.code`.
//!
//! Architecture invariant: this module does not import `proxy`'s routing;
//! both doors reach backends only through `upstream`.

pub mod cache_control;
mod config;
pub mod connector;
pub mod error;
pub mod execute;
pub mod form;
pub mod http;
pub mod limits;
pub mod model;
pub mod plan;
pub mod schema;
pub mod sdl;
pub mod shape;
pub mod upload;
pub mod variables;
pub mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{GraphqlConfig, PlaygroundCaller, PlaygroundSigner, TrustedDocuments, TrustedDocumentsError};
pub use http::GraphqlEndpoint;

use crate::headers::CallHeaderRules;
use crate::signing::IdentitySigner;
use crate::upstream::{ServiceConfig, Upstreams};
use execute::Runtime;
use http::EndpointSettings;
use limits::Limits;
use model::SchemaModel;
use sdl::{SchemaProblem, SchemaSource};

/// The schema used when `graphql.schema` names no file: the three demo
/// services of `services/`.
pub const DEFAULT_SCHEMA: &str = include_str!("../../schema/portico.graphql");

/// Why the GraphQL endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GraphqlSetupError {
    /// A schema file could not be read.
    #[error("graphql.schema: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema has problems.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Schema(Vec<SchemaProblem>),
    /// The trusted-documents manifest is unusable.
    #[error("graphql.trusted_documents: {0}")]
    TrustedDocuments(#[source] TrustedDocumentsError),
    /// async-graphql refused the schema (a gap in our own checks).
    #[error("the schema could not be built: {0}")]
    Build(#[source] async_graphql::dynamic::SchemaError),
}

impl GraphqlConfig {
    /// Reads and checks the schema files; `base` is the folder relative
    /// paths are resolved against, `services` the configured service names.
    pub fn load_schema(&self, base: &Path, services: &BTreeSet<String>) -> Result<SchemaModel, GraphqlSetupError> {
        let sources = if self.schema.is_empty() {
            vec![SchemaSource { file: "<default schema>".to_owned(), text: DEFAULT_SCHEMA.to_owned() }]
        } else {
            self.schema
                .iter()
                .map(|path| {
                    let path = base.join(path);
                    std::fs::read_to_string(&path)
                        .map(|text| SchemaSource { file: path.display().to_string(), text })
                        .map_err(|source| GraphqlSetupError::Read { path, source })
                })
                .collect::<Result<_, _>>()?
        };
        let header_rules = self.header_rules.keys().cloned().collect();
        sdl::load_with_header_rules(&sources, services, &header_rules).map_err(GraphqlSetupError::Schema)
    }

    /// The document limits this section sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_document_size: usize::try_from(self.max_document_size.as_u64()).unwrap_or(usize::MAX),
            max_tokens: self.max_tokens,
            max_depth: self.max_depth,
            max_aliases: self.max_aliases,
            max_root_fields: self.max_root_fields,
            max_cost: self.max_cost,
            max_fields: self.max_fields,
        }
    }

    /// The header rules of every call a plan can make: each service's own,
    /// and each service's combined with each `[graphql.header_rules.x]`.
    /// Plans hold them, so every plan of one endpoint compiles against this.
    pub fn header_rule_table(&self, services: &BTreeMap<String, ServiceConfig>) -> plan::HeaderRuleTable {
        let mut headers = plan::HeaderRuleTable::new();
        for (name, service) in services {
            if let Some(rules) = CallHeaderRules::new(&[&service.headers]) {
                headers.insert((name.clone(), None), rules);
            }
            for (rule_set, field_rules) in &self.header_rules {
                if let Some(rules) = CallHeaderRules::new(&[&service.headers, field_rules]) {
                    headers.insert((name.clone(), Some(rule_set.clone())), rules);
                }
            }
        }
        headers
    }

    /// Builds the endpoint for a checked schema.
    pub fn endpoint(
        &self,
        base: &Path,
        model: Arc<SchemaModel>,
        upstreams: &Upstreams,
        services: &BTreeMap<String, ServiceConfig>,
        signer: Option<Arc<IdentitySigner>>,
    ) -> Result<GraphqlEndpoint, GraphqlSetupError> {
        let headers = self.header_rule_table(services);
        let runtime = Arc::new(Runtime {
            passes_client_headers: headers.values().any(|rules| rules.request.is_some()),
            headers,
            signer,
            route: Arc::from(self.path.as_str()),
            upstreams: upstreams.clone(),
            model,
            max_url_value_length: self.max_url_value_length,
            max_batch_size: self.max_batch_size,
            max_response_size: usize::try_from(self.max_upstream_response_size.as_u64()).unwrap_or(usize::MAX),
        });
        let schema = schema::build_schema(&runtime.model, self.introspection).map_err(GraphqlSetupError::Build)?;
        // Validation read the manifest; a config built by hand is read here.
        let trusted = match (&self.trusted, &self.trusted_documents) {
            (Some(trusted), _) => Some(Arc::clone(trusted)),
            (None, None) => None,
            (None, Some(path)) => Some(Arc::new(
                config::read_trusted_documents(&base.join(path)).map_err(GraphqlSetupError::TrustedDocuments)?,
            )),
        };
        let assets = base.join(&self.playground_assets);
        Ok(GraphqlEndpoint::new(
            schema,
            runtime,
            EndpointSettings {
                path: &self.path,
                limits: self.limits(),
                max_body_size: usize::try_from(self.max_body_size.as_u64()).unwrap_or(usize::MAX),
                uploads: self.uploads.limits(usize::try_from(self.max_body_size.as_u64()).unwrap_or(usize::MAX)),
                persisted_queries: self.persisted_queries,
                operation_timeout: self.operation_timeout,
                trusted,
                playground_assets: self.playground.then_some(assets.as_path()),
                playground_signer: self.playground_signer.clone(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema/api.graphql` is what front-end code generation reads; it must
    /// be exactly what the gateway serves for the default schema.
    #[test]
    fn the_checked_in_client_schema_matches_what_is_served() {
        let config = crate::Config::embedded_default().expect("the default configuration loads");
        let model = config.schema.clone().expect("GraphQL is enabled in the default configuration");
        let upstreams = Upstreams::new(&config.services).expect("upstreams");
        let served = config
            .graphql
            .endpoint(&config.base_dir, model, &upstreams, &config.services, None)
            .expect("endpoint")
            .sdl();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join("api.graphql");
        let checked_in = std::fs::read_to_string(&path).expect("schema/api.graphql exists");
        assert!(
            served == checked_in,
            "schema/api.graphql is out of date; regenerate it with `cargo run -- schema print > schema/api.graphql`"
        );
    }
}
