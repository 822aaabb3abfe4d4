//! A client-side limit on the requests canaryd sends to the API server, so a
//! wave of releases does not storm it: a token bucket (`--kube-api-qps`
//! sustained, `--kube-api-burst` at once, as client-go and
//! kube-controller-manager have), as a tower layer on the kube client.
//!
//! Why not tower's `RateLimitLayer`: it counts requests per fixed window and
//! waits in `poll_ready`, and kube puts its whole stack behind one `Buffer`
//! whose worker would then stall every request behind a limited one, Lease
//! renewals included. Here each request reserves its slot when it is made
//! (first come, first served) and waits in its own future. A request costs
//! one token when it starts and holds nothing after: a watch open for
//! minutes costs what a GET costs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use kube::client::Body;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};

/// Default sustained requests per second (`--kube-api-qps`).
///
/// Above kube-controller-manager's 20: a release's first pass makes a dozen
/// or more requests (observe, commit, both arms, route, Event, clear), so at
/// 20/s a wave of 100 releases would wait a minute for the API alone. 50/s
/// (with a burst of 100) is what kube-scheduler and Flux's controllers, both
/// bursty per object, default to; the API server's priority and fairness
/// still protects itself beyond that.
pub const DEFAULT_API_QPS: u32 = 50;

/// Default requests that may go at once before the rate applies
/// (`--kube-api-burst`): the first passes of a handful of releases.
pub const DEFAULT_API_BURST: u32 = 100;

/// Requests the limiter's own queue to the client stack holds (kube's own
/// `Buffer` holds as many).
const DISPATCH_CAPACITY: usize = 1024;

/// Path prefix of Lease requests, which are never limited: a renewal that
/// queued behind reconcile traffic past the renew deadline would cost the
/// leadership (kube-controller-manager gives leader election its own client
/// for the same reason).
const LEASE_PATH: &str = "/apis/coordination.k8s.io/";

/// The client-side API rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiRateLimit {
    /// Sustained requests per second.
    pub qps: u32,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for ApiRateLimit {
    fn default() -> Self {
        ApiRateLimit {
            qps: DEFAULT_API_QPS,
            burst: DEFAULT_API_BURST,
        }
    }
}

/// A token bucket that hands out reservations: holds up to `burst` tokens,
/// refilled at `qps` per second; a request takes one, and when none is left
/// it is told how long to wait for the one it reserved.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens left; negative while requests wait for tokens not refilled yet.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A zero rate or burst is taken as one.
    pub fn new(limit: ApiRateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        TokenBucket {
            rate: f64::from(limit.qps.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token at `now`: how long the caller must wait before it may
    /// send its request (zero when a token was there).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Whether `request` bypasses the limit (see [`LEASE_PATH`]).
fn exempt<B>(request: &Request<B>) -> bool {
    request.uri().path().starts_with(LEASE_PATH)
}

/// The tower layer: wraps a client stack in [`RateLimited`].
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimitLayer {
    /// A layer whose services share one bucket for `limit`.
    pub fn new(limit: ApiRateLimit) -> Self {
        RateLimitLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(limit, Instant::now()))),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer
where
    S: Service<Request<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
{
    type Service = RateLimited<S::Future>;

    /// Must be called within a Tokio runtime (the dispatch queue is a task).
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner: Buffer::new(inner, DISPATCH_CAPACITY),
            bucket: self.bucket.clone(),
        }
    }
}

/// A client stack whose requests wait for their token first. Always ready:
/// the wait is in each request's future, so one waiting request never holds
/// up an exempt one.
pub struct RateLimited<F> {
    inner: Buffer<Request<Body>, F>,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl<F, T, E> Service<Request<Body>> for RateLimited<F>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
    T: Send + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let wait = if exempt(&request) {
            Duration::ZERO
        } else {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            bucket.reserve(Instant::now())
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            inner.oneshot(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIMIT: ApiRateLimit = ApiRateLimit { qps: 10, burst: 3 };

    #[tokio::test(start_paused = true)]
    async fn bucket_gives_the_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        // Empty: each further request waits one more tenth of a second.
        assert_eq!(bucket.reserve(start), Duration::from_millis(100));
        assert_eq!(bucket.reserve(start), Duration::from_millis(200));
        // After the reserved tokens came in, quiet refills the burst, no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(later), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_a_token_per_period() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..3 {
            bucket.reserve(start);
        }
        let tenth = start + Duration::from_millis(100);
        assert_eq!(bucket.reserve(tenth), Duration::ZERO);
        assert_eq!(bucket.reserve(tenth), Duration::from_millis(100));
    }

    fn request(path: &str) -> Request<Body> {
        Request::builder()
            .uri(format!("https://api.test{path}"))
            .body(Body::empty())
            .unwrap()
    }

    /// A limited stack over a service that counts the requests it got;
    /// `hang` makes every response wait forever, like an open watch.
    fn limited(hang: bool) -> (RateLimited<BoxFuture>, Arc<AtomicUsize>) {
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let inner = tower::service_fn(move |_: Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(())
            }) as BoxFuture
        });
        (RateLimitLayer::new(LIMIT).layer(inner), started)
    }

    type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    /// Lets spawned requests run as far as they can at the current instant.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_start_at_the_rate_and_open_ones_hold_no_token() {
        // Responses never come: a started request (a watch) must not keep
        // later ones from starting once their tokens are in.
        let (mut service, started) = limited(true);
        for _ in 0..5 {
            tokio::spawn(service.call(request("/apis/apps/v1/deployments?watch=true")));
        }
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 3, "the burst goes at once");
        tokio::time::advance(Duration::from_millis(100)).await;
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 4);
        tokio::time::advance(Duration::from_millis(100)).await;
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_requests_never_wait() {
        let (mut service, started) = limited(false);
        for _ in 0..10 {
            tokio::spawn(service.call(request("/apis/apps/v1/namespaces/a/deployments/web")));
        }
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        let renew = service.call(request(
            "/apis/coordination.k8s.io/v1/namespaces/a/leases/canaryd",
        ));
        tokio::time::timeout(Duration::from_millis(1), renew)
            .await
            .expect("a renewal does not queue behind limited requests")
            .unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 4);
    }
}
