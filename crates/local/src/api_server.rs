//! The API's HTTP/1.1 server for `hookbridge serve`, bounded as a server on a network must
//! be.
//!
//! `axum::serve` gives hyper no timer, so none of hyper's timeouts apply: a client that
//! opens a connection and sends nothing, or half a head, holds it for ever, and a thousand
//! of them take every file descriptor the process may open. Then the API stops accepting
//! and every outbound connection fails too, so healthy receivers are recorded as down and
//! their hooks disabled. Here a head must arrive within [`ServerLimits::head`] (which also
//! closes a kept-alive connection idle that long), a whole body within
//! [`ServerLimits::body`] of its head, an answer must not wait longer than
//! [`ServerLimits::write`] for the client to take it (one that sends requests and reads
//! nothing would hold its connection for ever), and at most [`ServerLimits::connections`]
//! are served at once; past that, connections wait in the kernel's backlog until one ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// What one client may hold of the server, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    /// The longest a request's head may take to arrive, counted from when the server
    /// begins reading it (on a kept-alive connection, from the end of the last answer).
    pub(crate) head: Duration,
    /// The longest a request's whole body may take to arrive, once its head has (not the
    /// longest between two of its parts: a client sending a byte a minute would pass that).
    pub(crate) body: Duration,
    /// The longest a write of an answer may wait for the client to take it.
    pub(crate) write: Duration,
    /// The most connections served at once.
    pub(crate) connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        // The head's is hyper's own default once it has a timer (and how long most servers
        // keep an idle connection). A body is at most 3 MiB (drained to 16), so 30 s allows
        // about 100 KiB a second. 256 connections leave room under a soft limit of 1,024
        // open files for the outbound pool (512 kept open), deliveries in flight, the
        // database and the logs.
        Self {
            head: Duration::from_secs(30),
            body: Duration::from_secs(30),
            write: Duration::from_secs(30),
            connections: 256,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then waits up to `drain` for the
/// requests in progress; what is still open after that is closed unanswered.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let body_limit = limits.body;
    let app = app.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        // A request with no body (most `GET`s) has nothing to wait for: no timer for it.
        if req.body().is_end_stream() {
            return next.run(req);
        }
        let (parts, body) = req.into_parts();
        let body = Body::new(Deadline { body, at: Box::pin(tokio::time::sleep(body_limit)) });
        next.run(axum::extract::Request::from_parts(parts, body))
    }));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.head);
    let places = Arc::new(Semaphore::new(limits.connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        // A place first, so connections past the limit wait in the backlog, unread.
        let place = tokio::select! {
            place = Arc::clone(&places).acquire_owned() => place,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(place) = place else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // A client gone before it was taken: nothing wrong here.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most often: accepting again at once would spin.
                tracing::error!(error = %e, "the API could not accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(WriteStall { io: stream, limit: limits.write, stalled: None });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // A client gone, or too slow: nothing to tell anyone.
            let _ = connection.await;
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(after = ?drain, "API requests still open at shutdown were closed unanswered");
    }
}

/// As `axum::serve` reads them: errors of one connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// A request body that ends in an error once its deadline passes, however it trickles in.
struct Deadline {
    body: Body,
    at: Pin<Box<Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.at.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("the body did not arrive in time".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose writes fail once one has waited `limit` for the client to take it.
struct WriteStall<T> {
    io: T,
    limit: Duration,
    /// When the write waiting now gives up.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStall<T> {
    /// What a write polled: done, pending still, or an error once it has waited too long.
    fn waited<R>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took none of the answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.waited(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.waited(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.waited(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A server answering `POST /` with the length of the body it read, with `limits`.
    async fn started(limits: ServerLimits) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .route("/big", axum::routing::get(|| async { vec![b'x'; 64 * 1024 * 1024] }));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, stopped, Duration::from_secs(1)));
        (addr, stop)
    }

    /// Everything the server sends until it closes the connection, or `None` if it has not
    /// closed it after 30 s (far past every limit below).
    async fn until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut got = Vec::new();
        match tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got)).await {
            Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
            Err(_) => None,
        }
    }

    fn quick() -> ServerLimits {
        let short = Duration::from_millis(300);
        ServerLimits { head: short, body: short, write: short, connections: 16 }
    }

    /// Half a head, or nothing at all, does not hold a connection open.
    #[tokio::test]
    async fn a_client_that_never_finishes_its_head_is_let_go() {
        let (addr, _stop) = started(quick()).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(until_closed(&mut silent).await.is_some(), "a connection that sent nothing was held");
        assert!(until_closed(&mut half).await.is_some(), "a connection that sent half a head was held");
    }

    /// A body that stops arriving, or trickles in a byte at a time, is not waited for: the
    /// connection is closed, after a `4xx` when the answer can still be written (what the
    /// test holds to is the close, which a held connection never came to).
    #[tokio::test]
    async fn a_body_that_stops_coming_is_not_waited_for() {
        let (addr, _stop) = started(quick()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..").await.unwrap();
        let answer = until_closed(&mut stream).await.expect("held for the rest of the body");
        assert!(answer.starts_with("HTTP/1.1 4") || answer.is_empty(), "{answer}");
        // A byte every 100 ms: within any wait between two, never the whole in time.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        trickle.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").await.unwrap();
        let (mut reading, mut writing) = trickle.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writing.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), reading.read_to_end(&mut answer)).await;
        writer.abort();
        assert!(read.is_ok(), "a trickling body was waited for");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4") || answer.is_empty(), "{answer}");
        // A whole request is answered as before.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .await
            .unwrap();
        let answer = until_closed(&mut stream).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n3"), "{answer}");
    }

    /// A client that asks and never reads the answer does not keep its place: the write
    /// gives up, and the next connection is served.
    #[tokio::test]
    async fn a_client_that_never_reads_its_answer_is_let_go() {
        let limits = ServerLimits { head: Duration::from_secs(60), connections: 1, ..quick() };
        let (addr, _stop) = started(limits).await;
        let mut deaf = TcpStream::connect(addr).await.unwrap();
        deaf.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\na").await.unwrap();
        let answer = until_closed(&mut next).await.expect("the deaf client kept the only place");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(deaf);
    }

    /// Past the limit, a connection waits until one being served ends.
    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_place() {
        let limits = ServerLimits { head: Duration::from_secs(60), connections: 2, ..quick() };
        let (addr, _stop) = started(limits).await;
        let held = [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\na")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
        assert!(early.is_err(), "served past the limit");
        drop(held);
        let answer = until_closed(&mut third).await.expect("served once a place was free");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
