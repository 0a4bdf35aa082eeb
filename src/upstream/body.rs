//! Request and response bodies on the way to and from a backend.
//!
//! A streamed request body can be sent once; to send a request again after
//! a failed attempt, the body must still be in hand. [`UpstreamRequestBody`]
//! keeps a streamed body in a shared slot and remembers whether any of its
//! bytes were pulled, which is exactly the "nothing was sent yet" condition
//! for a retry. A body that turned out to be empty (a `DELETE` without
//! `Content-Length`, say) has sent nothing, so it replays like no body.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::pool::Lent;
use super::InFlightGuard;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request to a backend.
#[derive(Debug, Default)]
pub enum UpstreamRequestBody {
    /// No body at all (no `Content-Length`, no chunked framing).
    #[default]
    Empty,
    /// A body already in memory; it can be replayed for any retry.
    Full(Bytes),
    /// A body streamed from the client, sent at most once.
    Streaming(Arc<StreamSlot>),
}

/// A streamed body plus whether any of it was pulled.
#[derive(Debug)]
pub struct StreamSlot {
    body: Mutex<axum::body::Body>,
    /// Some bytes (or trailers) went to an attempt.
    started: AtomicBool,
    /// The body has ended; later attempts must not poll it again.
    finished: AtomicBool,
    size_hint: SizeHint,
    /// The client body's own error, kept with its type so the edge can tell
    /// "too large" from "too slow" from "malformed".
    failure: Mutex<Option<BoxError>>,
}

/// Handed to the HTTP client in place of the real body error, which stays in
/// the slot.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed")]
struct ClientBodyFailed;

impl UpstreamRequestBody {
    /// Wraps a client's body for streaming.
    pub fn streaming(body: axum::body::Body) -> Self {
        let size_hint = body.size_hint();
        Self::Streaming(Arc::new(StreamSlot {
            body: Mutex::new(body),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            size_hint,
            failure: Mutex::new(None),
        }))
    }

    /// Whether the body can still be sent again in full.
    pub(super) fn is_replayable(&self) -> bool {
        match self {
            Self::Empty | Self::Full(_) => true,
            Self::Streaming(slot) => !slot.started.load(Ordering::Acquire),
        }
    }

    /// Takes the client body's error, if that is why an attempt failed.
    pub(super) fn take_failure(&self) -> Option<BoxError> {
        match self {
            Self::Streaming(slot) => slot.failure.lock().unwrap_or_else(PoisonError::into_inner).take(),
            Self::Empty | Self::Full(_) => None,
        }
    }

    /// The body for one attempt; all attempts share a streamed body's slot.
    pub(super) fn for_attempt(&self) -> AttemptBody {
        match self {
            Self::Empty => AttemptBody::Empty,
            Self::Full(bytes) => AttemptBody::Full(Some(bytes.clone())),
            Self::Streaming(slot) => AttemptBody::Streaming(Arc::clone(slot)),
        }
    }
}

/// The body handed to the HTTP client for one attempt.
#[derive(Debug)]
pub enum AttemptBody {
    /// Nothing to send.
    Empty,
    /// One in-memory chunk, taken on first poll.
    Full(Option<Bytes>),
    /// The client's stream.
    Streaming(Arc<StreamSlot>),
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Streaming(slot) => {
                if slot.finished.load(Ordering::Acquire) {
                    return Poll::Ready(None);
                }
                // Only this attempt polls the slot, so the lock is never
                // contended and is released before returning.
                let mut body = slot.body.lock().unwrap_or_else(PoisonError::into_inner);
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if frame.data_ref().is_none_or(|data| !data.is_empty()) {
                            slot.started.store(true, Ordering::Release);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(error))) => {
                        slot.started.store(true, Ordering::Release);
                        let error = error.into_inner();
                        *slot.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                        Poll::Ready(Some(Err(Box::new(ClientBodyFailed))))
                    }
                    Poll::Ready(None) => {
                        slot.finished.store(true, Ordering::Release);
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Streaming(slot) => {
                slot.finished.load(Ordering::Acquire)
                    || slot.body.lock().unwrap_or_else(PoisonError::into_inner).is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            Self::Streaming(slot) => slot.size_hint,
        }
    }
}

pin_project! {
    /// A backend's answer body. It times out when the backend pauses too
    /// long, keeps the replica's in-flight count until it is finished, and
    /// gives its connection back to the pool once it has been read whole
    /// (a body dropped before its end takes the connection with it).
    pub struct UpstreamResponseBody {
        #[pin]
        inner: Incoming,
        idle_timeout: Duration,
        // The pause being timed; armed only when the backend has nothing
        // to give yet, so data that is already there costs no timer.
        #[pin]
        pause: Option<Sleep>,
        in_flight: InFlightGuard,
        connection: Option<Lent>,
    }
}

/// The backend paused longer than the service's `request_timeout` in the
/// middle of its answer.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent no data within the designated timeout")]
pub struct BackendPaused;

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody").finish_non_exhaustive()
    }
}

impl UpstreamResponseBody {
    pub(super) fn new(body: Incoming, idle_timeout: Duration, in_flight: InFlightGuard, connection: Lent) -> Self {
        // An answer without a body (`204`, `304`, `Content-Length: 0`) may
        // never be polled: its connection is free at once.
        let connection = if body.is_end_stream() {
            connection.check_in();
            None
        } else {
            Some(connection)
        };
        Self { inner: body, idle_timeout, pause: None, in_flight, connection }
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if this.pause.is_some() {
                    this.pause.set(None);
                }
                frame.map(|frame| frame.map_err(BoxError::from))
            }
            Poll::Pending => {
                if this.pause.is_none() {
                    this.pause.set(Some(tokio::time::sleep(*this.idle_timeout)));
                }
                if let Some(pause) = this.pause.as_pin_mut() {
                    std::task::ready!(pause.poll(cx));
                }
                *this.connection = None;
                return Poll::Ready(Some(Err(Box::new(BackendPaused))));
            }
        };
        match &frame {
            // hyper stops polling a sized body once it has its length, so
            // the end is noticed with the last data, not only at `None`.
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            Some(Ok(_)) | None => {
                if let Some(connection) = this.connection.take() {
                    connection.check_in();
                }
            }
            Some(Err(_)) => *this.connection = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn streamed(chunks: Vec<&'static str>) -> UpstreamRequestBody {
        let chunks = chunks.into_iter().map(|chunk| Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))));
        UpstreamRequestBody::streaming(axum::body::Body::new(http_body_util::StreamBody::new(
            futures_util::stream::iter(chunks.collect::<Vec<_>>()),
        )))
    }

    #[tokio::test]
    async fn a_streamed_body_that_turned_out_empty_replays() {
        let body = streamed(vec![""]);
        let first = body.for_attempt().collect().await.expect("first attempt").to_bytes();
        assert!(first.is_empty());
        assert!(body.is_replayable(), "nothing was sent, so it can be sent again");
        let again = body.for_attempt();
        assert!(again.is_end_stream(), "the ended body is not polled again");
        assert!(again.collect().await.expect("second attempt").to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_streamed_body_that_sent_bytes_does_not_replay() {
        let body = streamed(vec!["part"]);
        let mut attempt = body.for_attempt();
        let frame = attempt.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from("part")));
        assert!(!body.is_replayable());
    }
}
