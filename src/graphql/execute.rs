//! Execute a plan: make its backend calls, as early and as few as the plan
//! allows, and keep their answers as [`Node`] trees for the writer.
//!
//! One task drives every call of an operation (no task per call, no lock):
//! - a call starts as soon as its parent's answer is in hand (siblings run
//!   concurrently; the calls of a mutation's root fields one after another,
//!   as the spec asks);
//! - identical GETs share one request (per response key and URL, and across
//!   fields per URL);
//! - a `batch` field collects the keys of all its parents and makes one
//!   call per `graphql.max_batch_size` keys once no call that could still
//!   add parents (an ancestor in the plan) is running: batches go level by
//!   level, without a timer.
//!
//! Dropping the execution (the operation's deadline, a vanished client)
//! drops every call still running.

use std::sync::Arc;

use async_graphql::Variables;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hashbrown::HashMap;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tracing::Instrument as _;

use super::connector::{Expr, RestConnector, Scope};
use super::error::FetchError;
use super::form::FormBody;
use super::model::SchemaModel;
use super::plan::{CallPlan, FieldPlan, HeaderRuleTable, ParentRead, Plan, Selection, ValueSource};
use super::shape::{self, same_key, Bodies, Node, Shape};
use super::upload::UploadedFile;
use crate::cache::{Cache, FieldCall};
use crate::headers::{RequestHeaderRules, ResponseHeaderMerge};
use crate::identity::Identity;
use crate::signing::IdentitySigner;
use crate::telemetry::RequestLog;
use crate::upstream::{UpstreamRequestBody, UpstreamService, Upstreams};

/// Limits and clients shared by every operation.
#[derive(Debug)]
pub struct Runtime {
    /// Header rules of the services and `@rest(headerRules:)` tables that
    /// have any (`[services.x.headers]`, `[graphql.header_rules.x]`).
    pub headers: HeaderRuleTable,
    /// Whether any of those rules passes client request headers on, so an
    /// operation must keep its request's headers (decided once, here).
    pub passes_client_headers: bool,
    /// Signs the identity each call carries (`[identity_signing]`).
    pub signer: Option<Arc<IdentitySigner>>,
    /// The GraphQL path, for the rules' `{route}`.
    pub route: Arc<str>,
    /// The backend services.
    pub upstreams: Upstreams,
    /// The checked schema.
    pub model: Arc<SchemaModel>,
    /// Longest value placed into a URL.
    pub max_url_value_length: usize,
    /// Most keys in one batched call.
    pub max_batch_size: usize,
    /// Largest backend answer read.
    pub max_response_size: usize,
}

/// The request rules of a planned call, and whether its answers' headers
/// may reach the client.
fn header_rules(call: &CallPlan) -> (Option<Arc<RequestHeaderRules>>, bool) {
    match &call.headers {
        Some(rules) => (rules.request.clone(), !rules.response.is_empty()),
        None => (None, false),
    }
}

/// Who runs the operation, and what its calls carry.
#[derive(Debug, Default)]
pub struct OperationContext {
    /// The verified caller, if any.
    pub identity: Option<Arc<Identity>>,
    /// The caller's claims (for `$claims.x`).
    pub claims: Option<Arc<Json>>,
    /// The request id, forwarded to every backend call.
    pub request_id: Option<HeaderValue>,
    /// The request's log, trace and span: backend calls join its trace.
    pub request_log: Option<Arc<RequestLog>>,
    /// The response cache, for `@rest` GET calls with `@cacheControl`.
    pub cache: Option<Arc<Cache>>,
    /// The client's request headers, kept only when a service's rules
    /// forward some of them.
    pub client_headers: Option<HeaderMap>,
    /// The files of a multipart request, by the index `Upload` markers hold.
    pub files: Vec<Arc<UploadedFile>>,
}

/// Where a started call stands.
#[derive(Debug)]
pub enum CallState {
    /// In flight (or a batch still collecting keys).
    Running,
    /// The field's value.
    Done(Node),
    /// The call failed.
    Failed(FetchError),
    /// A batch's keys, by the index parents hold, while its calls run.
    Gathered(HashMap<Box<str>, u32>),
    /// A batch's answers, by the key index parents hold (`Null`: the
    /// backend has no object for that key).
    Batch(Vec<Node>),
}

/// A call's status, body, and (when its service lets any through) its
/// answer headers.
type Exchange = Result<(StatusCode, Bytes, Option<HeaderMap>), FetchError>;
type SharedExchange = Shared<BoxFuture<'static, Exchange>>;

/// What a finished call hands back.
enum Finished {
    One(Exchange),
    Batch(Result<Vec<(StatusCode, Bytes, Option<HeaderMap>)>, FetchError>),
}

/// A batch collecting keys.
struct Gathering {
    call: u32,
    /// Distinct keys, each with the index parents hold.
    keys: HashMap<Box<str>, u32>,
    /// The last few distinct keys looked up, with their index: parents in
    /// a list often share a handful of keys (the same student, one of a
    /// few lessons), and comparing a short key with these costs less than
    /// hashing it.
    recent: Vec<(Box<str>, u32)>,
}

/// How many keys [`Gathering::recent`] keeps.
const RECENT_KEYS: usize = 4;

impl Gathering {
    fn new(call: u32) -> Gathering {
        Gathering { call, keys: HashMap::new(), recent: Vec::new() }
    }

    /// The index of the recent key spelled `text`, if one is.
    fn recent_index(&self, text: &[u8]) -> Option<u32> {
        self.recent.iter().find(|(recent, _)| same_key(recent.as_bytes(), text)).map(|(_, index)| *index)
    }

    /// The index of `key`, a new one (the next) if it is new.
    fn index(&mut self, key: &str) -> u32 {
        if let Some(index) = self.recent_index(key.as_bytes()) {
            return index;
        }
        let next = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
        let index = match self.keys.get(key) {
            Some(index) => *index,
            None => *self.keys.entry(key.into()).or_insert(next),
        };
        // Full: the oldest (first) entry makes room.
        if self.recent.len() == RECENT_KEYS {
            self.recent.remove(0);
        }
        self.recent.push((key.into(), index));
        index
    }
}

/// One operation's execution.
pub struct Execution<'p> {
    plan: &'p Plan,
    runtime: &'p Runtime,
    context: Arc<OperationContext>,
    /// The coerced variables.
    pub variables: Variables,
    /// Boolean variables, by index, for guards.
    pub flags: Vec<bool>,
    args: Vec<Option<Arc<Json>>>,
    /// Started calls, by the id their slots hold.
    pub calls: Vec<CallState>,
    field_of: Vec<&'p FieldPlan>,
    answer_headers: Vec<Vec<HeaderMap>>,
    spans: Vec<Option<tracing::Span>>,
    outstanding: Vec<u32>,
    gathering: Vec<Option<Gathering>>,
    same_call: HashMap<(usize, String), u32>,
    same_url: HashMap<String, SharedExchange>,
    in_flight: FuturesUnordered<BoxFuture<'p, (u32, Finished)>>,
    /// The root object: one slot per root call.
    pub root: Node,
    /// The answers whose text the nodes point into.
    pub bodies: Bodies,
}

impl<'p> Execution<'p> {
    /// An execution of `plan` with coerced `variables`.
    pub fn new(plan: &'p Plan, runtime: &'p Runtime, context: Arc<OperationContext>, variables: Variables) -> Self {
        let flags = super::variables::flags(&plan.variables, &variables);
        let calls = plan.ancestors.len();
        Self {
            plan,
            runtime,
            context,
            variables,
            flags,
            args: vec![None; calls],
            calls: Vec::new(),
            field_of: Vec::new(),
            answer_headers: Vec::new(),
            spans: Vec::new(),
            outstanding: vec![0; calls],
            gathering: (0..calls).map(|_| None).collect(),
            same_call: HashMap::new(),
            same_url: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            root: Node::Object(shape::empty_slots(plan.root_calls)),
            bodies: Bodies::default(),
        }
    }

    /// Makes every call the operation needs.
    pub async fn run(&mut self) {
        let mut root = std::mem::take(&mut self.root);
        if self.plan.kind == async_graphql_parser::types::OperationType::Mutation {
            // Root fields of a mutation run one after another.
            for field in &self.plan.root.fields {
                if let Node::Object(slots) = &mut root {
                    self.visit(field, slots);
                }
                self.drain().await;
            }
        } else {
            self.scan(&self.plan.root, &mut root);
            self.drain().await;
        }
        self.root = root;
    }

    /// The backend answer headers the services let through to the client,
    /// merged in the order the calls started (see [`ResponseHeaderMerge`]).
    pub fn response_headers(&self) -> Option<HeaderMap> {
        if self.answer_headers.iter().all(Vec::is_empty) {
            return None;
        }
        let mut merge = ResponseHeaderMerge::new();
        for (field, answers) in self.field_of.iter().zip(&self.answer_headers) {
            let ValueSource::Call(call) = &field.source else { continue };
            let Some(rules) = &call.headers else { continue };
            for answer in answers {
                merge.add(&rules.response, answer);
            }
        }
        Some(merge.finish())
    }

    /// Whether a field is included under this request's variables.
    pub fn included(&self, field: &FieldPlan) -> bool {
        field.guard.first_included(&self.flags).is_some()
    }

    /// Whether the caller may read `field`.
    pub fn allowed(&self, field: &FieldPlan) -> bool {
        field.access.as_ref().is_none_or(|access| access.refusal(self.context.identity.as_deref()).is_none())
    }

    /// The caller, for the writer's access errors.
    pub fn identity(&self) -> Option<&Identity> {
        self.context.identity.as_deref()
    }

    async fn drain(&mut self) {
        loop {
            self.flush_ready_batches();
            let Some((id, finished)) = self.in_flight.next().await else { break };
            self.finish(id, finished);
        }
    }

    /// Starts the calls of `selection`'s fields in `node` (an object, or
    /// lists of objects).
    fn scan(&mut self, selection: &'p Selection, node: &mut Node) {
        match node {
            Node::List(items) => items.iter_mut().for_each(|item| self.scan(selection, item)),
            Node::Object(slots) => {
                for &index in &selection.with_calls {
                    self.visit(&selection.fields[index], slots);
                }
            }
            _ => {}
        }
    }

    fn visit(&mut self, field: &'p FieldPlan, slots: &mut [Node]) {
        if !self.included(field) || !self.allowed(field) {
            return;
        }
        match &field.source {
            ValueSource::Key { slot, .. } => {
                if let (Some(selection), Some(child)) = (&field.selection, slots.get_mut(*slot)) {
                    self.scan(selection, child);
                }
            }
            ValueSource::Call(call) => {
                let node = self.start(field, call, slots);
                if let Some(slot) = slots.len().checked_sub(1 + call.call_slot) {
                    slots[slot] = node;
                }
            }
            ValueSource::Typename(_) | ValueSource::Introspection => {}
        }
    }

    fn args_of(&mut self, call: &CallPlan) -> Arc<Json> {
        if let Some(args) = &self.args[call.id] {
            return Arc::clone(args);
        }
        let args = call.args.resolve(&self.variables);
        self.args[call.id] = Some(Arc::clone(&args));
        args
    }

    fn new_call(&mut self, field: &'p FieldPlan, state: CallState) -> u32 {
        self.calls.push(state);
        self.field_of.push(field);
        self.answer_headers.push(Vec::new());
        self.spans.push(None);
        u32::try_from(self.calls.len() - 1).unwrap_or(u32::MAX)
    }

    /// Starts (or joins) the call of `field` for the parent in `slots`;
    /// the node its slot then holds.
    fn start(&mut self, field: &'p FieldPlan, call: &'p CallPlan, slots: &[Node]) -> Node {
        if let Some(batch) = &call.connector.batch {
            return self.gather(field, call, &batch.key, slots);
        }
        let args = self.args_of(call);
        let parent = (!call.parent_reads.is_empty()).then(|| ParentRead::json(&call.parent_reads, slots, &self.bodies));
        let context = Arc::clone(&self.context);
        let scope = Scope { args: Some(&args), parent: parent.as_ref(), claims: context.claims.as_deref() };
        let connector = &call.connector;

        let url = match connector.render_url(&scope, self.runtime.max_url_value_length) {
            Ok(url) => url,
            Err(error) => return Node::Call(self.new_call(field, CallState::Failed(error.into()))),
        };
        let is_get = connector.method == Method::GET;
        if is_get {
            if let Some(id) = self.same_call.get(&(call.id, url.clone())) {
                return Node::Call(*id);
            }
        }
        let service = match upstream_service(self.runtime, connector) {
            Ok(service) => service,
            Err(error) => return Node::Call(self.new_call(field, CallState::Failed(error))),
        };
        let id = self.new_call(field, CallState::Running);
        self.outstanding[call.id] += 1;
        if let Some(log) = &self.context.request_log {
            self.spans[id as usize] = Some(log.field_span(&field.name, &connector.service));
        }
        let body = match &connector.multipart {
            Some(fields) => match FormBody::render(fields, &scope, &context.files) {
                Ok(form) => CallBody::Form(form),
                Err(error) => return Node::Call(self.new_call(field, CallState::Failed(error.into()))),
            },
            None => connector.render_body(&scope).map_or(CallBody::Empty, CallBody::Json),
        };
        let (request_headers, keep_answer_headers) = header_rules(call);
        let backend_call = BackendCall {
            request_headers,
            keep_answer_headers,
            route: Arc::clone(&self.runtime.route),
            signer: self.runtime.signer.clone(),
            service,
            method: connector.method.clone(),
            url: url.clone(),
            headers: connector.render_headers(&scope),
            body,
            context: Arc::clone(&self.context),
            max_response_size: self.runtime.max_response_size,
            connector: Arc::clone(connector),
        };
        let exchange: BoxFuture<'p, Exchange> = if is_get {
            self.same_call.insert((call.id, url.clone()), id);
            // Calls under different header rules carry different headers.
            let key = match &connector.header_rules {
                Some(rules) => format!("{} {rules} {url}", connector.service),
                None => format!("{} {url}", connector.service),
            };
            let shared = self.same_url.entry(key).or_insert_with(|| backend_call.run().boxed().shared()).clone();
            shared.boxed()
        } else {
            backend_call.run().boxed()
        };
        self.in_flight.push(async move { (id, Finished::One(exchange.await)) }.boxed());
        Node::Call(id)
    }

    /// Adds the parent's key to the field's batch; the node its slot then
    /// holds. A key read straight from a parent's slot (`$parent.id`, the
    /// usual case) is looked up without building anything.
    fn gather(&mut self, field: &'p FieldPlan, call: &'p CallPlan, key: &Expr, slots: &[Node]) -> Node {
        let direct = call.batch_key_slot.and_then(|slot| slots.get(slot));
        if let Some((batch_call, key)) = direct.and_then(|node| self.recent_key(call, node)) {
            return Node::Keyed { call: batch_call, key };
        }
        let index = match direct {
            Some(node) => {
                // The key may borrow the answers; `key_index` changes the
                // execution's other parts.
                let bodies = std::mem::take(&mut self.bodies);
                let index = key_text(node, &bodies).map(|key| self.key_index(field, call, &key));
                self.bodies = bodies;
                index
            }
            None => {
                let args = self.args_of(call);
                let parent = ParentRead::json(&call.parent_reads, slots, &self.bodies);
                let context = Arc::clone(&self.context);
                let scope = Scope { args: Some(&args), parent: Some(&parent), claims: context.claims.as_deref() };
                key.evaluate(&scope).as_ref().and_then(scalar_key).map(|key| self.key_index(field, call, &key))
            }
        };
        match index {
            Some((batch_call, key)) => Node::Keyed { call: batch_call, key },
            // No key, no call: the field is null.
            None => Node::Null,
        }
    }

    /// [`Execution::key_index`] for a parent's key that is one of the
    /// batch's recent keys, compared as the text of the answer: an
    /// integer's digits or a string without escapes are the key
    /// [`key_text`] makes of them, so no key is made.
    fn recent_key(&self, call: &CallPlan, node: &Node) -> Option<(u32, u32)> {
        let text = match node {
            Node::Number(raw) if raw.flag => self.bodies.text(*raw),
            Node::Str(raw) if !raw.flag => self.bodies.text(*raw),
            _ => return None,
        };
        let gathering = self.gathering.get(call.id)?.as_ref()?;
        Some((gathering.call, gathering.recent_index(text)?))
    }

    /// The batch call gathering `call`'s keys, and `key`'s index in it.
    fn key_index(&mut self, field: &'p FieldPlan, call: &'p CallPlan, key: &str) -> (u32, u32) {
        if self.gathering[call.id].is_none() {
            let id = self.new_call(field, CallState::Running);
            self.outstanding[call.id] += 1;
            self.gathering[call.id] = Some(Gathering::new(id));
        }
        let Some(gathering) = &mut self.gathering[call.id] else { unreachable!("made above") };
        (gathering.call, gathering.index(key))
    }

    /// Sends the batches whose parents are all known.
    fn flush_ready_batches(&mut self) {
        for call_id in 0..self.gathering.len() {
            if self.gathering[call_id].is_none()
                || self.plan.ancestors[call_id].iter().any(|ancestor| self.outstanding[*ancestor] > 0)
            {
                continue;
            }
            let Some(Gathering { call, keys: index, .. }) = self.gathering[call_id].take() else { continue };
            let field = self.field_of[call as usize];
            let ValueSource::Call(plan) = &field.source else { continue };
            // Sorted, distinct keys give stable, cacheable URLs.
            let mut keys: Vec<Box<str>> = index.keys().cloned().collect();
            keys.sort_by(|a, b| match (a.parse::<i64>(), b.parse::<i64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.cmp(b),
            });
            self.calls[call as usize] = CallState::Gathered(index);
            let args = self.args_of(plan);
            let service = match upstream_service(self.runtime, &plan.connector) {
                Ok(service) => service,
                Err(error) => {
                    self.finish(call, Finished::Batch(Err(error)));
                    continue;
                }
            };
            if let Some(log) = &self.context.request_log {
                self.spans[call as usize] = Some(log.field_span(&field.name, &plan.connector.service));
            }
            let context = Arc::clone(&self.context);
            let runtime = self.runtime;
            let chunks: Vec<Vec<Box<str>>> = keys.chunks(runtime.max_batch_size.max(1)).map(<[_]>::to_vec).collect();
            let (request_headers, keep_answer_headers) = header_rules(plan);
            let exchanges = chunks.into_iter().map(move |chunk| {
                let scope = Scope { args: Some(&args), parent: None, claims: context.claims.as_deref() };
                let keys: Vec<String> = chunk.iter().map(|key| key.to_string()).collect();
                let url =
                    plan.connector.render_batch_url(&scope, &keys, runtime.max_url_value_length.max(keys.len() * 24));
                let call = url.map(|url| BackendCall {
                    request_headers: request_headers.clone(),
                    keep_answer_headers,
                    route: Arc::clone(&runtime.route),
                    signer: runtime.signer.clone(),
                    service: Arc::clone(&service),
                    method: Method::GET,
                    url,
                    headers: plan.connector.render_headers(&scope),
                    body: CallBody::Empty,
                    context: Arc::clone(&context),
                    max_response_size: runtime.max_response_size,
                    connector: Arc::clone(&plan.connector),
                });
                async move { call?.run().await }
            });
            let all = futures_util::future::try_join_all(exchanges);
            self.in_flight.push(async move { (call, Finished::Batch(all.await)) }.boxed());
        }
    }

    /// Takes a finished call's answer in, and starts the calls below it.
    fn finish(&mut self, id: u32, finished: Finished) {
        let index = id as usize;
        self.spans[index] = None;
        let field = self.field_of[index];
        let ValueSource::Call(call) = &field.source else { return };
        let service = || Arc::<str>::from(call.connector.service.as_str());
        let mut state = match finished {
            Finished::One(Err(error)) | Finished::Batch(Err(error)) => CallState::Failed(error),
            Finished::One(Ok((status, bytes, headers))) => {
                self.answer_headers[index].extend(headers);
                match value(service(), call, status, bytes, &mut self.bodies) {
                    Ok(node) => CallState::Done(node),
                    Err(error) => CallState::Failed(error),
                }
            }
            Finished::Batch(Ok(answers)) => {
                let keys = match std::mem::replace(&mut self.calls[index], CallState::Running) {
                    CallState::Gathered(keys) => keys,
                    _ => HashMap::new(),
                };
                let mut found: Vec<Node> = shape::empty_slots(keys.len()).into_vec();
                let mut failure = None;
                for (status, bytes, headers) in answers {
                    self.answer_headers[index].extend(headers);
                    match value(service(), call, status, bytes, &mut self.bodies) {
                        Ok(Node::List(items)) => {
                            for item in items.into_vec() {
                                let position = match (&item, call.match_slot) {
                                    (Node::Object(slots), Some(slot)) => slots
                                        .get(slot)
                                        .and_then(|key| key_text(key, &self.bodies))
                                        .and_then(|key| keys.get(&*key).copied()),
                                    _ => None,
                                };
                                if let Some(slot) = position.and_then(|position| found.get_mut(position as usize)) {
                                    *slot = item;
                                }
                            }
                        }
                        Ok(_) => {
                            failure = Some(FetchError::Shape {
                                service: service(),
                                detail: format!("no list at selection {:?}", call.connector.selection.join(".")),
                            });
                        }
                        Err(error) => failure = Some(error),
                    }
                }
                match failure {
                    Some(error) => CallState::Failed(error),
                    None => CallState::Batch(found),
                }
            }
        };
        if let Some(selection) = &field.selection {
            match &mut state {
                CallState::Done(node) => self.scan(selection, node),
                CallState::Batch(found) => found.iter_mut().for_each(|node| self.scan(selection, node)),
                _ => {}
            }
        }
        self.calls[index] = state;
        self.outstanding[call.id] = self.outstanding[call.id].saturating_sub(1);
    }
}

/// The field's value in a backend answer, or the failure it reports; the
/// answer joins `bodies` when its text is kept.
fn value(
    service: Arc<str>,
    call: &CallPlan,
    status: StatusCode,
    bytes: Bytes,
    bodies: &mut Bodies,
) -> Result<Node, FetchError> {
    if !status.is_success() {
        let json: Option<Json> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        return Err(FetchError::from_status(service, status, json));
    }
    if bytes.is_empty() {
        return Ok(Node::Null);
    }
    let not_json = || FetchError::Shape { service: Arc::clone(&service), detail: "the answer is not JSON".to_owned() };
    if call.answer == Shape::Any {
        let json: Json = serde_json::from_slice(&bytes).map_err(|_| not_json())?;
        let selected = select(&json, &call.connector.selection).cloned().ok_or_else(|| FetchError::Shape {
            service: Arc::clone(&service),
            detail: format!("no value at selection {:?}", call.connector.selection.join(".")),
        })?;
        return Ok(Node::from_json(selected, &call.value));
    }
    let index = bodies.add(bytes);
    let body = bodies.body(index);
    let mut node = shape::parse(body, index, &call.answer).map_err(|_| not_json())?;
    for _ in &call.connector.selection {
        node = match node {
            Node::Object(slots) => slots.into_vec().into_iter().next().unwrap_or_default(),
            _ => {
                return Err(FetchError::Shape {
                    service,
                    detail: format!("no value at selection {:?}", call.connector.selection.join(".")),
                })
            }
        };
    }
    Ok(node)
}

fn select<'a>(answer: &'a Json, selection: &[String]) -> Option<&'a Json> {
    selection.iter().try_fold(answer, |current, key| match current {
        Json::Array(items) => key.parse::<usize>().ok().and_then(|index| items.get(index)),
        other => other.get(key),
    })
}

fn scalar_key(value: &Json) -> Option<Box<str>> {
    match value {
        Json::String(text) => Some(text.as_str().into()),
        Json::Number(number) => Some(number.to_string().into()),
        _ => None,
    }
}

/// A scalar node's text as a batch key: a string's value, an integer's
/// digits (what formatting the number would give, as JSON integers are
/// canonical).
fn key_text<'b>(node: &Node, bodies: &'b Bodies) -> Option<std::borrow::Cow<'b, str>> {
    match node {
        Node::Str(raw) => Some(bodies.string(*raw)),
        Node::Number(raw) if raw.flag => std::str::from_utf8(bodies.text(*raw)).ok().map(std::borrow::Cow::Borrowed),
        Node::Text(text) => Some(std::borrow::Cow::Owned(text.to_string())),
        Node::Int(number) => Some(std::borrow::Cow::Owned(itoa::Buffer::new().format(*number).to_owned())),
        Node::UInt(number) => Some(std::borrow::Cow::Owned(itoa::Buffer::new().format(*number).to_owned())),
        _ => None,
    }
}

fn upstream_service(runtime: &Runtime, connector: &RestConnector) -> Result<Arc<UpstreamService>, FetchError> {
    runtime
        .upstreams
        .get(&connector.service)
        .cloned()
        .ok_or_else(|| FetchError::Unavailable { service: Arc::from(connector.service.as_str()) })
}

/// What a backend request carries.
enum CallBody {
    Empty,
    Json(Json),
    /// A form with files: built once, sent once (a streamed body is not
    /// sent again once any of it went out).
    Form(FormBody),
}

/// One backend request, ready to send.
struct BackendCall {
    service: Arc<UpstreamService>,
    method: Method,
    url: String,
    headers: Vec<(http::HeaderName, String)>,
    body: CallBody,
    context: Arc<OperationContext>,
    max_response_size: usize,
    /// The field's connector: how the answer is cached, what it invalidates.
    connector: Arc<RestConnector>,
    /// The service's rules for which client headers the call carries.
    request_headers: Option<Arc<RequestHeaderRules>>,
    /// Whether the service lets answer headers through to the client.
    keep_answer_headers: bool,
    /// The GraphQL path, for the rules' `{route}`.
    route: Arc<str>,
    /// Signs the caller's identity headers.
    signer: Option<Arc<IdentitySigner>>,
}

impl BackendCall {
    /// Runs the call inside its `backend.call` span, whose id the backend
    /// receives as its parent in `traceparent`.
    async fn run(self) -> Exchange {
        let span = match &self.context.request_log {
            Some(log) => log.backend_span(self.service.name(), &self.method, self.url.split('?').next().unwrap_or("")),
            None => tracing::Span::none(),
        };
        self.send(span.clone()).instrument(span).await
    }

    /// Sends the call, through the response cache for GETs whose field has
    /// a `@cacheControl` maxAge; a successful mutation then drops the cached
    /// answers it declares stale.
    async fn send(mut self, span: tracing::Span) -> Exchange {
        let body = std::mem::replace(&mut self.body, CallBody::Empty);
        let service_name = Arc::clone(self.service.name());
        let cache = self.context.cache.as_ref();
        let caching = self.connector.cache.filter(|_| self.method == Method::GET);
        let (status, bytes, headers) = match (cache, caching) {
            // A cached answer's headers (cookies above all) are not replayed.
            (Some(cache), Some(caching)) => {
                // What the header rules send (the caller's language, say)
                // picks the answer as much as the connector's own headers.
                let mut key_headers = self.headers.clone();
                key_headers
                    .extend(self.rule_headers().iter().map(|(name, value)| (name.clone(), format!("{value:?}"))));
                let call = FieldCall {
                    service: &service_name,
                    target: &self.url,
                    headers: &key_headers,
                    max_age: caching.max_age,
                    public: caching.public,
                    identity: self.context.identity.as_deref(),
                };
                let (status, bytes) = cache.field_call(call, || self.exchange(&span, body)).await?;
                (status, bytes, None)
            }
            _ => {
                let (status, headers, bytes) = self.exchange(&span, body).await?;
                (status, bytes, self.keep_answer_headers.then_some(headers))
            }
        };
        if let (Some(cache), true) = (cache, status.is_success() && !self.connector.invalidates.is_empty()) {
            cache.invalidate_service_paths(&service_name, &self.connector.invalidates);
        }
        Ok((status, bytes, headers))
    }

    /// Adds what the service's (and the field's) header rules send.
    fn apply_rules(&self, headers: &mut http::HeaderMap) {
        if let (Some(rules), Some(client)) = (&self.request_headers, &self.context.client_headers) {
            rules.apply(client, self.context.identity.as_deref(), &self.route, headers);
        }
    }

    /// The headers the rules add to this call, on their own.
    fn rule_headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        self.apply_rules(&mut headers);
        headers
    }

    /// One request to the backend; the answer's status, headers and body.
    async fn exchange(
        &self,
        span: &tracing::Span,
        body: CallBody,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), FetchError> {
        let service_name = Arc::clone(self.service.name());
        let mut content_type = None;
        let mut content_length = None;
        let body = match body {
            CallBody::Json(body) => {
                content_type = Some(HeaderValue::from_static("application/json"));
                UpstreamRequestBody::Full(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
            }
            CallBody::Form(form) => {
                content_type = HeaderValue::try_from(form.content_type()).ok();
                content_length = Some(HeaderValue::from(form.length()));
                UpstreamRequestBody::streaming(form.into_body())
            }
            CallBody::Empty => UpstreamRequestBody::Empty,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self
            .url
            .parse()
            .map_err(|_| FetchError::Status { service: Arc::clone(&service_name), status: StatusCode::BAD_REQUEST })?;
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        if let Some(content_length) = content_length {
            headers.insert(header::CONTENT_LENGTH, content_length);
        }
        if let Some(request_id) = &self.context.request_id {
            headers.insert(crate::request::REQUEST_ID, request_id.clone());
        }
        if let Some(log) = &self.context.request_log {
            log.inject_trace(headers, span);
        }
        if let Some(identity) = &self.context.identity {
            for (name, value) in &identity.forwarded_headers {
                headers.insert(name.clone(), value.clone());
            }
        }
        // The service's rules, then the connector's own headers, which win.
        self.apply_rules(headers);
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), value);
            }
        }
        if let (Some(signer), Some(identity)) = (&self.signer, &self.context.identity) {
            let covered: Vec<&http::HeaderName> = identity.forwarded_headers.iter().map(|(name, _)| name).collect();
            if !covered.is_empty() {
                signer.sign(&self.method, &self.url, &covered, headers);
            }
        }

        let answer = self.service.send(request).await.map_err(|error| {
            tracing::warn!(service = %service_name, error = %crate::telemetry::ErrorChain(&error), "backend call failed");
            FetchError::from_upstream(&error)
        })?;
        let (parts, body) = answer.response.into_parts();
        let limited = http_body_util::Limited::new(body, self.max_response_size);
        let bytes = limited
            .collect()
            .await
            .map_err(|_| FetchError::Status { service: Arc::clone(&service_name), status: StatusCode::BAD_GATEWAY })?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_key_keeps_its_first_index_whether_or_not_it_is_still_recent() {
        let mut gathering = Gathering::new(0);
        let keys = ["3", "4", "7", "3", "10", "11", "12", "3", "4", "12", "3"];
        let indices: Vec<u32> = keys.iter().map(|key| gathering.index(key)).collect();
        assert_eq!(indices, vec![0, 1, 2, 0, 3, 4, 5, 0, 1, 5, 0]);
        assert_eq!(gathering.keys.len(), 6, "each key once");
        assert!(gathering.recent.len() <= RECENT_KEYS);
        for (key, index) in &gathering.keys {
            assert_eq!(gathering.recent_index(key.as_bytes()).unwrap_or(*index), *index, "{key}");
        }
        assert_eq!(gathering.recent_index(b"12"), Some(5));
        assert_eq!(gathering.recent_index(b"1"), None, "a prefix is another key");
        assert_eq!(gathering.recent_index(b"33"), None);
    }
}
