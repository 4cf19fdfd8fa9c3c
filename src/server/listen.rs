//! Connections for the webhook: the accept loop, TLS handshakes, HTTP/1.1 and HTTP/2 (ALPN
//! over TLS; prior knowledge, h2c, on plain TCP), slow-client guards, the [`Peer`] every
//! request carries, and graceful shutdown.
//!
//! Owns everything between the listening socket and the axum `Router`. Calls `server::tls`
//! for the rustls configuration (certificate reload included), tokio-rustls for handshakes,
//! and hyper-util's auto connection builder and `GracefulShutdown` for HTTP.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::tls::{self, ServerTls, TlsError};

/// The first bytes of every HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often an idle HTTP/2 connection is pinged.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// First and longest pause after a failed `accept` (file descriptors exhausted, say).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Who is on the other end of a connection; every request carries it as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The verified client certificate's subject, RFC 4514 style ("CN=kube-apiserver,O=system:masters"), when one was presented.
    pub client_subject: Option<String>,
    /// Its common name alone.
    pub client_cn: Option<String>,
}

/// How connections are taken.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// TLS; `None` serves plain HTTP/1.1 and h2c.
    pub tls: Option<super::tls::TlsSettings>,
    /// Slow-loris guard: a client that has not sent a request's headers by then is disconnected (HTTP/1; for HTTP/2 use keep-alive/ping timeouts sensibly).
    pub header_read_timeout: std::time::Duration,
    /// After shutdown starts, how long in-flight requests may still take before connections are dropped.
    pub shutdown_timeout: std::time::Duration,
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Serves `app` on `listener` (plain HTTP/1.1+h2c, or TLS with ALPN h2/http1.1) until `shutdown` completes; then stops accepting, lets in-flight requests finish (bounded by shutdown_timeout), and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Acceptor::new(settings)?
        .serve(listener, app, shutdown)
        .await;
    Ok(())
}

/// Connection settings with the TLS configuration loaded: [`serve`] in two steps, so that a
/// caller can report TLS problems before binding and watch certificate reloads.
#[derive(Debug)]
pub struct Acceptor {
    settings: ConnectionSettings,
    tls: Option<ServerTls>,
}

impl Acceptor {
    /// Loads the TLS configuration, if any, and starts following its certificate files.
    pub fn new(settings: ConnectionSettings) -> Result<Self, ServeError> {
        let tls = settings.tls.as_ref().map(ServerTls::load).transpose()?;
        Ok(Self { settings, tls })
    }

    /// The loaded TLS configuration (its reload status, current certificate), if any.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// Serves `app` on `listener` until `shutdown` completes, then drains as [`serve`] does.
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let settings = &self.settings;
        let shared = Arc::new(Shared {
            app,
            tls: self.tls.as_ref().map(|tls| TlsAcceptor::from(tls.config())),
            handshake_timeout: settings
                .tls
                .as_ref()
                .map_or(Duration::ZERO, |t| t.handshake_timeout),
            header_read_timeout: settings.header_read_timeout,
            builders: Builders::new(settings.header_read_timeout),
        });
        let graceful = GracefulShutdown::new();
        let (stopping_tx, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut backoff = ACCEPT_BACKOFF.0;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(err) = done
                        && err.is_panic()
                    {
                        tracing::error!(error = %err, "a connection task panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        backoff = ACCEPT_BACKOFF.0;
                        connections.spawn(connection(
                            shared.clone(),
                            tcp,
                            addr,
                            graceful.watcher(),
                            stopping.clone(),
                        ));
                    }
                    Err(err) if is_connection_error(&err) => {
                        tracing::debug!(error = %err, "connection failed before it was accepted");
                    }
                    Err(err) => {
                        tracing::error!(
                            error = %err,
                            retry_in_ms = backoff.as_millis(),
                            "cannot accept connections"
                        );
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    }
                },
            }
        }
        // Stop accepting: new connections are refused from here on.
        drop(listener);
        let _ = stopping_tx.send(true);
        let open = connections.len();
        tracing::info!(
            connections = open,
            timeout_ms = settings.shutdown_timeout.as_millis(),
            "stopped accepting; finishing in-flight requests"
        );
        if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.len(),
                "shutdown timeout reached; dropping the remaining connections"
            );
        }
        connections.shutdown().await;
    }
}

/// What every connection task needs.
struct Shared {
    app: Router,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    builders: Builders,
}

/// Connection builders for either protocol, configured once.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_read_timeout: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(header_read_timeout);
        Self {
            http1: builder.clone().http1_only(),
            http2: builder.http2_only(),
        }
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection, from handshake to close.
async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    watcher: Watcher,
    mut stopping: watch::Receiver<bool>,
) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(peer = %addr, error = %err, "cannot set TCP_NODELAY");
    }
    // Until HTTP takes over, shutdown abandons the connection instead of waiting for it.
    let prepared = tokio::select! {
        prepared = prepare(&shared, tcp, addr) => prepared,
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    let Some((io, protocol, peer)) = prepared else {
        return;
    };
    let service = PeerService {
        app: shared.app.clone(),
        peer,
    };
    let builder = match protocol {
        Protocol::Http1 => &shared.builders.http1,
        Protocol::Http2 => &shared.builders.http2,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(peer = %addr, error = %err, "connection closed with an error");
    }
}

/// The TLS handshake (if any) and the choice of protocol; `None` closes the connection.
async fn prepare(
    shared: &Shared,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(Io, Protocol, Peer)> {
    let mut peer = Peer {
        addr,
        client_subject: None,
        client_cn: None,
    };
    let (mut stream, alpn) = match &shared.tls {
        None => (Stream::Plain(tcp), None),
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(peer = %addr, error = %err, "TLS handshake failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::debug!(
                            peer = %addr,
                            timeout_ms = shared.handshake_timeout.as_millis(),
                            "TLS handshake timed out"
                        );
                        return None;
                    }
                };
            let (_, session) = tls.get_ref();
            if let Some(subject) = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| tls::certificate_subject(leaf))
            {
                peer.client_subject = Some(subject.rfc4514);
                peer.client_cn = subject.common_name;
            }
            let alpn = match session.alpn_protocol() {
                Some(b"h2") => Some(Protocol::Http2),
                Some(b"http/1.1") => Some(Protocol::Http1),
                _ => None,
            };
            (Stream::Tls(Box::new(tls)), alpn)
        }
    };
    let (protocol, prefix) = match alpn {
        Some(protocol) => (protocol, Bytes::new()),
        None => sniff(&mut stream, addr, shared.header_read_timeout).await?,
    };
    Some((Io { prefix, stream }, protocol, peer))
}

/// Reads until the HTTP/2 preface is either complete or ruled out, within `limit` (a
/// client that sends nothing is a slow loris too); returns the bytes read for replay.
async fn sniff(
    stream: &mut Stream,
    addr: SocketAddr,
    limit: Duration,
) -> Option<(Protocol, Bytes)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        loop {
            let mut chunk = [0u8; H2_PREFACE.len()];
            let wanted = H2_PREFACE.len() - seen.len();
            let n = stream.read(&mut chunk[..wanted]).await?;
            if n == 0 {
                return Ok::<_, io::Error>(None);
            }
            seen.extend_from_slice(&chunk[..n]);
            if seen[..] != H2_PREFACE[..seen.len()] {
                return Ok(Some(Protocol::Http1));
            }
            if seen.len() == H2_PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(Some(protocol))) => Some((protocol, Bytes::from(seen))),
        Ok(Ok(None)) => None,
        Ok(Err(err)) => {
            tracing::debug!(peer = %addr, error = %err, "connection failed before a request");
            None
        }
        Err(_) => {
            tracing::debug!(
                peer = %addr,
                timeout_ms = limit.as_millis(),
                "no request within the header read timeout; closing"
            );
            None
        }
    }
}

/// Plain TCP or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection's byte stream, with the bytes read while choosing the protocol put back.
struct Io {
    prefix: Bytes,
    stream: Stream,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The router, with the connection's [`Peer`] and `ConnectInfo` put on every request.
struct PeerService {
    app: Router,
    peer: Peer,
}

impl hyper::service::Service<Request<Incoming>> for PeerService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer.addr));
        req.extensions_mut().insert(self.peer.clone());
        tower::Service::call(&mut self.app.clone(), req)
    }
}
