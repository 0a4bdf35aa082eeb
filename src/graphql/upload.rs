//! File uploads on the GraphQL endpoint: the GraphQL multipart request spec
//! (<https://github.com/jaydenseric/graphql-multipart-request-spec>).
//!
//! A `multipart/form-data` request carries the field `operations` (the
//! GraphQL request as JSON, with `null` where files go), then `map` (which
//! file part lands at which variable path), then the files. The parts are
//! read in that order as they stream in (multer); the limits of
//! `[graphql.uploads]` are counted while reading, so a request over one is
//! answered 413 at the chunk that crosses it. Each file is kept in memory
//! up to [`IN_MEMORY`] bytes and otherwise spooled to an unlinked temporary
//! file (gone when the last call that sends it is done), and the body is
//! read at most about [`IN_MEMORY`] ahead of the spool ([`Paced`]): a file
//! is never held whole in memory.
//!
//! A variable that received a file holds the marker `{"$upload": index}`;
//! only [`super::variables`] accepts it for the `Upload` scalar, and only
//! with an index of this request's files, and the connector's multipart body
//! ([`super::form`]) reads the file it names. A document cannot write the
//! marker (`$upload` is no GraphQL name), and a client that writes it into
//! its JSON variables can only name its own request's files.
//!
//! CSRF: `multipart/form-data` is a type a cross-site form may send without
//! a preflight, so (as Apollo's CSRF prevention does) a multipart request
//! must carry a header no simple request has: a non-empty
//! `Apollo-Require-Preflight` or `X-Apollo-Operation-Name`.

use std::io;
use std::sync::Arc;

use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use bytesize::ByteSize;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::problems::Problems;

/// Bytes of a file kept in memory before it is spooled to a temporary file;
/// also the size of each read and write of a spooled file.
pub const IN_MEMORY: usize = 64 * 1024;

/// The key of the marker a variable holds in place of a file.
pub const MARKER: &str = "$upload";

/// Headers of which one, non-empty, lets a multipart request in: a browser
/// cannot send them cross-site without a CORS preflight.
const PREFLIGHT_HEADERS: [&str; 2] = ["apollo-require-preflight", "x-apollo-operation-name"];

/// `[graphql.uploads]`: file uploads with the GraphQL multipart request spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Whether `/graphql` accepts multipart requests with files (off unless
    /// asked for: a gateway whose schema takes no files should not spool
    /// any).
    pub enabled: bool,
    /// Most files in one request.
    pub max_files: usize,
    /// Largest single file.
    pub max_file_size: ByteSize,
    /// Largest whole multipart request (`operations`, `map` and every file).
    pub max_request_size: ByteSize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self { enabled: false, max_files: 4, max_file_size: ByteSize::mib(10), max_request_size: ByteSize::mib(25) }
    }
}

impl UploadsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.max_files == 0 {
            problems.push("graphql.uploads.max_files", "must be at least 1 (set enabled = false to refuse uploads)");
        }
        if self.max_file_size.as_u64() == 0 {
            problems.push("graphql.uploads.max_file_size", "must be larger than 0, such as \"10MiB\"");
        }
        if self.max_request_size < self.max_file_size {
            problems.push(
                "graphql.uploads.max_request_size",
                format!(
                    "{} is smaller than max_file_size ({}): a file of the largest size could never be sent",
                    self.max_request_size, self.max_file_size
                ),
            );
        }
    }

    /// The limits the endpoint enforces, when uploads are on.
    pub fn limits(&self, max_body_size: usize) -> Option<UploadLimits> {
        self.enabled.then(|| UploadLimits {
            max_files: self.max_files,
            max_file_size: self.max_file_size.as_u64(),
            max_request_size: self.max_request_size.as_u64(),
            max_operations_size: max_body_size as u64,
        })
    }
}

/// The limits of one multipart request, from the validated config.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Most files.
    pub max_files: usize,
    /// Largest file, in bytes.
    pub max_file_size: u64,
    /// Largest request body, in bytes.
    pub max_request_size: u64,
    /// Largest `operations` (and `map`) field: `graphql.max_body_size`.
    pub max_operations_size: u64,
}

/// Why a multipart request is refused. The message is what the client reads.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// `[graphql.uploads]` is off.
    #[error("this GraphQL endpoint does not accept file uploads (multipart requests); send the operation as application/json")]
    Disabled,
    /// No header a cross-site form could not send.
    #[error(
        "this request has been blocked as a potential Cross-Site Request Forgery (CSRF): a multipart request must \
         carry a non-empty Apollo-Require-Preflight or X-Apollo-Operation-Name header"
    )]
    PreflightHeaderMissing,
    /// The body is not multipart as declared.
    #[error("the multipart body is not valid: {0}")]
    Malformed(String),
    /// Fields out of the spec's order.
    #[error("the multipart fields must be `operations`, then `map`, then the files: {0}")]
    OutOfOrder(String),
    /// `operations` is not one GraphQL request.
    #[error("`operations` is not a GraphQL request: {0}")]
    Operations(String),
    /// `operations` is a list.
    #[error("batched operations are not supported")]
    Batch,
    /// `map` is not what the spec describes, or names paths that are not there.
    #[error("`map` is not valid: {0}")]
    Map(String),
    /// More files than `max_files`.
    #[error("the request has more than {limit} files")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// A file over `max_file_size`.
    #[error("file `{field}` is larger than {limit} bytes")]
    FileTooLarge {
        /// The file's field name.
        field: String,
        /// The limit.
        limit: u64,
    },
    /// `operations` or `map` over `graphql.max_body_size`.
    #[error("`{field}` is larger than {limit} bytes")]
    FieldTooLarge {
        /// `operations` or `map`.
        field: String,
        /// The limit.
        limit: u64,
    },
    /// The whole body over `max_request_size`.
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A file part `map` does not name (or names twice).
    #[error("file field `{0}` is not in `map` (or is sent twice)")]
    UnexpectedFile(String),
    /// A file `map` names that never came.
    #[error("`map` names file `{0}`, which the request did not send")]
    MissingFile(String),
    /// The body stream failed (the client went away or paused too long).
    #[error("the request body could not be read")]
    Unreadable,
    /// The gateway could not store a file.
    #[error("the upload could not be stored")]
    Spool(#[source] io::Error),
}

impl UploadError {
    /// Whether a size limit refused the request (413).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::TooManyFiles { .. }
                | Self::FileTooLarge { .. }
                | Self::FieldTooLarge { .. }
                | Self::RequestTooLarge { .. }
        )
    }
}

/// Whether the request declares a `multipart/form-data` body.
pub fn declares_multipart(headers: &HeaderMap) -> bool {
    super::http::declares_media_type(headers, "multipart/form-data")
}

/// Whether the request carries a header only a preflighted (or non-browser)
/// request can have.
pub fn preflighted(headers: &HeaderMap) -> bool {
    PREFLIGHT_HEADERS.iter().any(|name| headers.get(*name).is_some_and(|value| !value.as_bytes().is_empty()))
}

/// The file index a marker value names.
pub fn marker_index(value: &Json) -> Option<usize> {
    match value {
        Json::Object(map) if map.len() == 1 => map.get(MARKER)?.as_u64().and_then(|index| usize::try_from(index).ok()),
        _ => None,
    }
}

/// One file of a multipart request.
#[derive(Debug)]
pub struct UploadedFile {
    /// The part's file name, as the client sent it.
    pub filename: Option<String>,
    /// The part's media type, as the client sent it (parsed, so safe to
    /// write into another request's part headers).
    pub content_type: Option<String>,
    /// Bytes.
    pub size: u64,
    storage: Storage,
}

#[derive(Debug)]
enum Storage {
    Memory(Bytes),
    /// An unlinked temporary file: closed with the last `Arc`, and gone.
    File(Arc<std::fs::File>),
}

impl UploadedFile {
    /// A file held in memory (tests of the bodies that send files).
    #[cfg(test)]
    pub(crate) fn in_memory(filename: Option<String>, content_type: Option<String>, bytes: Bytes) -> Self {
        Self { filename, content_type, size: bytes.len() as u64, storage: Storage::Memory(bytes) }
    }

    /// The file's bytes, in chunks of at most [`IN_MEMORY`]; each read of a
    /// spooled file runs on the blocking pool, at its own offset, so the
    /// same file can be sent by two calls at once.
    pub fn chunks(&self) -> BoxStream<'static, io::Result<Bytes>> {
        match &self.storage {
            Storage::Memory(bytes) => stream::once(std::future::ready(Ok(bytes.clone()))).boxed(),
            Storage::File(file) => {
                let file = Arc::clone(file);
                let size = self.size;
                stream::try_unfold(0_u64, move |offset| {
                    let file = Arc::clone(&file);
                    async move {
                        if offset >= size {
                            return Ok(None);
                        }
                        let length = usize::try_from((size - offset).min(IN_MEMORY as u64)).unwrap_or(IN_MEMORY);
                        let chunk = tokio::task::spawn_blocking(move || read_chunk(&file, offset, length))
                            .await
                            .map_err(io::Error::other)??;
                        Ok(Some((chunk, offset + length as u64)))
                    }
                })
                .boxed()
            }
        }
    }
}

fn read_chunk(file: &std::fs::File, offset: u64, length: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = vec![0; length];
    file.read_exact_at(&mut buffer, offset)?;
    Ok(Bytes::from(buffer))
}

/// A file being received: in memory until it outgrows [`IN_MEMORY`], then
/// in a temporary file written in chunks of that size.
struct Spool {
    pending: BytesMut,
    file: Option<std::fs::File>,
    size: u64,
}

impl Spool {
    fn new() -> Self {
        Self { pending: BytesMut::new(), file: None, size: 0 }
    }

    async fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.size += chunk.len() as u64;
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= IN_MEMORY {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        let file = self.file.take();
        let pending = self.pending.split().freeze();
        let file = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut file = match file {
                Some(file) => file,
                None => tempfile::tempfile()?,
            };
            file.write_all(&pending)?;
            Ok::<_, io::Error>(file)
        })
        .await
        .map_err(io::Error::other)??;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self) -> io::Result<(u64, Storage)> {
        if self.file.is_none() {
            return Ok((self.size, Storage::Memory(self.pending.freeze())));
        }
        if !self.pending.is_empty() {
            self.flush().await?;
        }
        let file = self.file.take().ok_or_else(|| io::Error::other("spool file missing"))?;
        Ok((self.size, Storage::File(Arc::new(file))))
    }
}

/// A multipart request, read: the GraphQL request with markers where the
/// files go, and the files by index.
#[derive(Debug)]
pub struct MultipartRequest {
    /// The operation.
    pub request: async_graphql::Request,
    /// The files, by the index the markers hold.
    pub files: Vec<Arc<UploadedFile>>,
}

/// Reads a multipart request within `limits`, spooling its files.
pub async fn read(request: Request, limits: UploadLimits) -> Result<MultipartRequest, UploadError> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let boundary = multer::parse_boundary(content_type.unwrap_or_default())
        .map_err(|_| UploadError::Malformed("the Content-Type has no boundary".to_owned()))?;
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limits.max_request_size) {
        return Err(UploadError::RequestTooLarge { limit: limits.max_request_size });
    }
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.max_request_size)
            .per_field(limits.max_file_size)
            .for_field("operations", limits.max_operations_size)
            .for_field("map", limits.max_operations_size),
    );
    let body = Paced { inner: request.into_body().into_data_stream(), since_pause: 0 };
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let limit_error = |error: multer::Error| match error {
        multer::Error::FieldSizeExceeded { field_name, limit } => match field_name.as_deref() {
            Some(field @ ("operations" | "map")) => UploadError::FieldTooLarge { field: field.to_owned(), limit },
            _ => UploadError::FileTooLarge { field: field_name.unwrap_or_default(), limit },
        },
        multer::Error::StreamSizeExceeded { limit } => UploadError::RequestTooLarge { limit },
        multer::Error::StreamReadFailed(_) => UploadError::Unreadable,
        other => UploadError::Malformed(other.to_string()),
    };

    // The spec's order: `operations`, then `map`, then the files.
    let mut next_named = async |expected: &str, place: &str| match multipart.next_field().await.map_err(limit_error)? {
        Some(field) if field.name() == Some(expected) => field.bytes().await.map_err(limit_error),
        Some(field) => Err(UploadError::OutOfOrder(format!(
            "the {place} is `{}`, not `{expected}`",
            field.name().unwrap_or_default()
        ))),
        None => Err(UploadError::OutOfOrder(format!("`{expected}` is missing"))),
    };
    let operations = next_named("operations", "first field").await?;
    let mut operations: Json =
        serde_json::from_slice(&operations).map_err(|error| UploadError::Operations(error.to_string()))?;
    if operations.is_array() {
        return Err(UploadError::Batch);
    }
    let map = next_named("map", "field after `operations`").await?;
    let map: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_slice(&map).map_err(|_| {
        UploadError::Map(
            "it must be a JSON object of file field names to lists of paths, such as {\"0\": [\"variables.file\"]}"
                .to_owned(),
        )
    })?;
    let map: Vec<(String, Vec<String>)> = map.into_iter().collect();
    if map.len() > limits.max_files {
        return Err(UploadError::TooManyFiles { limit: limits.max_files });
    }
    for (index, (name, paths)) in map.iter().enumerate() {
        if paths.is_empty() {
            return Err(UploadError::Map(format!("file `{name}` has no paths")));
        }
        for path in paths {
            place_marker(&mut operations, path, index)?;
        }
    }
    let request: async_graphql::Request =
        serde_json::from_value(operations).map_err(|error| UploadError::Operations(error.to_string()))?;

    let mut files: Vec<Option<Arc<UploadedFile>>> = vec![None; map.len()];
    while let Some(mut field) = multipart.next_field().await.map_err(limit_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let index = match map.iter().position(|(mapped, _)| *mapped == name) {
            Some(index) if files[index].is_none() => index,
            _ => return Err(UploadError::UnexpectedFile(name)),
        };
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let mut spool = Spool::new();
        while let Some(chunk) = field.chunk().await.map_err(limit_error)? {
            spool.push(&chunk).await.map_err(UploadError::Spool)?;
        }
        let (size, storage) = spool.finish().await.map_err(UploadError::Spool)?;
        files[index] = Some(Arc::new(UploadedFile { filename, content_type, size, storage }));
    }
    let files = files
        .into_iter()
        .zip(&map)
        .map(|(file, (name, _))| file.ok_or_else(|| UploadError::MissingFile(name.clone())))
        .collect::<Result<_, _>>()?;
    Ok(MultipartRequest { request, files })
}

/// The request body as multer reads it: multer takes every chunk that is
/// ready before it hands out a field's data, so without a pause a fast
/// client's bytes would pile up in its buffer faster than they are
/// spooled. After [`IN_MEMORY`] bytes this answers `Pending` once (and
/// wakes itself), which bounds what one request holds in memory to about
/// that, and leaves the rest to TCP flow control.
struct Paced<S> {
    inner: S,
    since_pause: usize,
}

impl<S, E> futures_util::Stream for Paced<S>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.since_pause >= IN_MEMORY {
            self.since_pause = 0;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        if let Some(Ok(bytes)) = &item {
            self.since_pause += bytes.len();
        }
        std::task::Poll::Ready(item)
    }
}

/// Puts the marker of file `index` at `path` (`variables.file`,
/// `variables.files.0`, `variables.input.avatar`) of `operations`; the
/// path must lead to a value the client sent (its `null` placeholder).
fn place_marker(operations: &mut Json, path: &str, index: usize) -> Result<(), UploadError> {
    let not_found = || UploadError::Map(format!("path `{path}` is not in `operations`"));
    let mut segments = path.split('.');
    if segments.next() != Some("variables") {
        return Err(UploadError::Map(format!("path `{path}` must start with `variables.`")));
    }
    let mut current = operations.get_mut("variables").ok_or_else(not_found)?;
    let mut any = false;
    for segment in segments {
        any = true;
        current = match current {
            Json::Object(map) => map.get_mut(segment),
            Json::Array(items) => segment.parse::<usize>().ok().and_then(|position| items.get_mut(position)),
            _ => None,
        }
        .ok_or_else(not_found)?;
    }
    if !any {
        return Err(not_found());
    }
    *current = serde_json::json!({ MARKER: index });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markers_go_where_the_map_points_and_nowhere_else() {
        let mut operations =
            json!({"query": "q", "variables": {"file": null, "list": [null, null], "input": {"a": null}}});
        place_marker(&mut operations, "variables.file", 0).expect("placed");
        place_marker(&mut operations, "variables.list.1", 1).expect("placed");
        place_marker(&mut operations, "variables.input.a", 2).expect("placed");
        assert_eq!(
            operations["variables"],
            json!({"file": {"$upload": 0}, "list": [null, {"$upload": 1}], "input": {"a": {"$upload": 2}}})
        );
        assert_eq!(marker_index(&operations["variables"]["file"]), Some(0));
        for path in ["variables.nope", "variables", "query", "variables.list.7", "0.variables.file"] {
            assert!(matches!(place_marker(&mut operations, path, 0), Err(UploadError::Map(_))), "{path}");
        }
    }

    #[test]
    fn only_non_empty_preflight_headers_count() {
        let mut headers = HeaderMap::new();
        assert!(!preflighted(&headers));
        headers.insert("apollo-require-preflight", http::HeaderValue::from_static(""));
        assert!(!preflighted(&headers));
        headers.insert("x-apollo-operation-name", http::HeaderValue::from_static("Upload"));
        assert!(preflighted(&headers));
    }

    #[tokio::test]
    async fn a_spooled_file_reads_back_whole_in_chunks() {
        let mut spool = Spool::new();
        let data: Vec<u8> = (0..(IN_MEMORY * 2 + 123)).map(|index| (index % 251) as u8).collect();
        for piece in data.chunks(10_000) {
            spool.push(piece).await.expect("spooled");
        }
        let (size, storage) = spool.finish().await.expect("finished");
        assert!(matches!(storage, Storage::File(_)), "larger than IN_MEMORY: on disk");
        let file = UploadedFile { filename: None, content_type: None, size, storage };
        let chunks: Vec<Bytes> = file.chunks().map(|chunk| chunk.expect("read")).collect::<Vec<_>>().await;
        assert_eq!(chunks.concat(), data);
        assert!(chunks.iter().all(|chunk| chunk.len() <= IN_MEMORY));
    }
}
