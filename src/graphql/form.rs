//! The `multipart/form-data` body of a `@rest(multipart: {...})` call:
//! uploaded files streamed from where [`super::upload`] spooled them, and
//! text fields from arguments.
//!
//! The body's length is known before the first byte is sent (part headers
//! are written up front, files have their size), so the call carries an
//! exact `Content-Length`: the Django services run under gunicorn, which
//! refuses chunked request bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http_body::{Frame, SizeHint};
use serde_json::Value as Json;

use super::connector::{Expr, RenderError, Scope};
use super::upload::{marker_index, UploadedFile};

/// A rendered multipart body, ready to stream.
pub struct FormBody {
    boundary: String,
    pieces: Vec<Piece>,
    length: u64,
}

impl std::fmt::Debug for FormBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormBody").field("length", &self.length).finish_non_exhaustive()
    }
}

enum Piece {
    Bytes(Bytes),
    File(Arc<UploadedFile>),
}

impl FormBody {
    /// The body of `fields` for `scope`: a field whose value is an uploaded
    /// file (or a list of them) becomes file parts, any other value a text
    /// part (strings as they are, other values as JSON); absent values are
    /// left out.
    pub fn render(
        fields: &[(String, Expr)],
        scope: &Scope<'_>,
        files: &[Arc<UploadedFile>],
    ) -> Result<Self, RenderError> {
        let boundary = format!("portico-{}", uuid::Uuid::new_v4().simple());
        let mut body = Self { boundary, pieces: Vec::new(), length: 0 };
        for (name, expr) in fields {
            let Some(value) = expr.evaluate(scope) else { continue };
            let file = |value: &Json| match marker_index(value) {
                Some(index) => files.get(index).cloned().ok_or_else(|| RenderError::NoFile(name.clone())).map(Some),
                None => Ok(None),
            };
            match (&value, file(&value)?) {
                (_, Some(upload)) => body.file(name, upload),
                (Json::Array(items), None) if items.iter().any(|item| marker_index(item).is_some()) => {
                    for item in items {
                        let upload = file(item)?.ok_or_else(|| RenderError::NoFile(name.clone()))?;
                        body.file(name, upload);
                    }
                }
                (Json::String(text), None) => body.text(name, text),
                (other, None) => body.text(name, &other.to_string()),
            }
        }
        let closing = format!("--{}--\r\n", body.boundary);
        body.push(Bytes::from(closing));
        Ok(body)
    }

    /// The `Content-Type` of the body, with its boundary.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's exact length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The body, streaming, with its exact size as its size hint.
    pub fn into_body(self) -> axum::body::Body {
        let length = self.length;
        let chunks = stream::iter(self.pieces)
            .flat_map(|piece| match piece {
                Piece::Bytes(bytes) => stream::once(std::future::ready(Ok(bytes))).boxed(),
                Piece::File(file) => file.chunks(),
            })
            .boxed();
        axum::body::Body::new(SizedBody { chunks, length })
    }

    fn push(&mut self, bytes: Bytes) {
        self.length += bytes.len() as u64;
        self.pieces.push(Piece::Bytes(bytes));
    }

    fn text(&mut self, name: &str, text: &str) {
        let part = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{text}\r\n",
            self.boundary,
            quoted(name)
        );
        self.push(Bytes::from(part));
    }

    fn file(&mut self, name: &str, upload: Arc<UploadedFile>) {
        let filename = upload.filename.as_deref().filter(|filename| !filename.is_empty()).unwrap_or("upload");
        let content_type = upload.content_type.as_deref().unwrap_or("application/octet-stream");
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
            self.boundary,
            quoted(name),
            quoted(filename)
        );
        self.push(Bytes::from(head));
        self.length += upload.size;
        self.pieces.push(Piece::File(upload));
        self.push(Bytes::from_static(b"\r\n"));
    }
}

/// A name or file name inside a quoted header parameter, escaped as HTML
/// forms do (`"` and line breaks percent-encoded), so a client's file name
/// cannot end the header or add one.
fn quoted(text: &str) -> String {
    text.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// The body's chunks, with the exact length hyper writes as `Content-Length`.
struct SizedBody {
    chunks: BoxStream<'static, std::io::Result<Bytes>>,
    length: u64,
}

impl http_body::Body for SizedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.chunks.poll_next_unpin(cx).map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn files_and_fields_become_parts_of_the_announced_length() {
        let args = json!({"file": {"$upload": 0}, "caption": "a \"cat\"", "count": 3});
        let scope = Scope { args: Some(&args), ..Scope::default() };
        let upload = Arc::new(UploadedFile::in_memory(
            Some("ca\"t\r\n.png".to_owned()),
            Some("image/png".to_owned()),
            Bytes::from_static(b"\x89PNG bytes"),
        ));
        let fields = [
            ("avatar".to_owned(), Expr::parse("$args.file").expect("expr")),
            ("caption".to_owned(), Expr::parse("$args.caption").expect("expr")),
            ("count".to_owned(), Expr::parse("$args.count").expect("expr")),
            ("absent".to_owned(), Expr::parse("$args.nothing").expect("expr")),
        ];
        let body = FormBody::render(&fields, &scope, &[upload]).expect("renders");
        let boundary = body.boundary.clone();
        let length = body.length();
        let bytes = body.into_body().collect().await.expect("streams").to_bytes();
        assert_eq!(bytes.len() as u64, length);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("name=\"avatar\"; filename=\"ca%22t%0D%0A.png\"\r\nContent-Type: image/png\r\n\r\n\u{fffd}PNG bytes\r\n"), "{text}");
        assert!(text.contains("name=\"caption\"\r\n\r\na \"cat\"\r\n"), "{text}");
        assert!(text.contains("name=\"count\"\r\n\r\n3\r\n"), "{text}");
        assert!(!text.contains("absent"));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));

        let forged = json!({"file": {"$upload": 1}});
        let scope = Scope { args: Some(&forged), ..Scope::default() };
        assert!(matches!(FormBody::render(&fields[..1], &scope, &[]), Err(RenderError::NoFile(_))));
    }
}
