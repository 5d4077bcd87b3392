//! The accept loop: HTTP/1.1 connections with the hygiene production servers have, which `axum::serve`
//! lacks. A client must send each request head within `gateway.header_timeout_secs` (this also closes a
//! kept-alive connection that sits idle that long), at most `gateway.max_connections` connections are
//! served at once (past that, new ones wait in the listen backlog until a slot frees), and on shutdown
//! every connection finishes the request it is answering and then closes. Memory freed by closed
//! connections is given back to the system.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the gateway treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown`, then waits for the connections to finish.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnectionLimits, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let closed = Arc::new(AtomicUsize::new(0));
    tokio::spawn(give_back_memory(Arc::clone(&closed), shutdown.clone()));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: wait for connections to close rather than spin.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Answers go out as written: a request/reply API gains nothing from Nagle's delay.
        let _ = stream.set_nodelay(true);
        // The router was made ready once, so a connection costs an `Arc` clone here. `axum::serve` made each
        // connection's service with `Router::with_state(())`, which rebuilds every route: 1.6 MB a
        // connection with this router, which the allocator then kept after the connection closed.
        // Each request carries its peer's address (`ConnectInfo`), for what is shared out per sender.
        let service = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&service, request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let (shutdown, closed) = (shutdown.clone(), Arc::clone(&closed));
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Timeouts, resets and malformed heads: the client's doing, worth no more than a debug line.
            if let Err(err) = ended {
                tracing::debug!(%err, "connection ended");
            }
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Connections closed since the last trim that make the next one worth its few milliseconds.
const TRIM_AFTER_CLOSED: usize = 100;

/// glibc keeps freed heap memory for reuse, so a burst of connections (10,000 half-sent heads hold
/// about 130 MB) would otherwise leave the gateway at its peak for good: after connections close, what
/// they freed goes back to the system.
async fn give_back_memory(closed: Arc<AtomicUsize>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if closed.swap(0, Ordering::Relaxed) >= TRIM_AFTER_CLOSED {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries' allocators give memory back by themselves.
#[cfg(not(target_env = "gnu"))]
fn trim() {}
