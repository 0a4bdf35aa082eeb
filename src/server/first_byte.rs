//! A deadline on a connection's first byte.
//!
//! hyper's `header_read_timeout` only runs once hyper reads a request head,
//! and hyper-util's automatic HTTP/1 / HTTP/2 detection first waits for the
//! client's opening bytes with no clock at all, so a connection that is
//! opened and never written to would stay open forever (a slowloris that
//! costs the attacker nothing). Wrapped in [`FirstByteDeadline`], its first
//! read fails once the deadline passes; from the first byte on, hyper's own
//! timeouts govern the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pin_project! {
    /// A connection whose peer must send something within a deadline.
    pub(super) struct FirstByteDeadline<IO> {
        #[pin]
        io: IO,
        // Dropped at the first byte, so the rest of the connection pays nothing.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> FirstByteDeadline<IO> {
    /// `io`, which must deliver a first byte within `timeout` from now.
    pub(super) fn new(io: IO, timeout: Duration) -> Self {
        Self { io, deadline: Some(Box::pin(tokio::time::sleep(timeout))) }
    }
}

impl<IO: AsyncRead> AsyncRead for FirstByteDeadline<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let filled_before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > filled_before {
                    *this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within server.header_read_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for FirstByteDeadline<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = FirstByteDeadline::new(server, Duration::from_secs(5));
        let mut buffer = [0_u8; 8];
        let error = silent.read(&mut buffer).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstByteDeadline::new(server, Duration::from_secs(5));
        client.write_all(b"G").await.expect("write");
        assert_eq!(talking.read(&mut buffer).await.expect("read"), 1);
        // Past the deadline, a later pause is hyper's business, not ours.
        let pending = tokio::time::timeout(Duration::from_secs(60), talking.read(&mut buffer)).await;
        assert!(pending.is_err(), "no deadline after the first byte");
    }
}
