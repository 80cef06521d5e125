//! The gateway as a whole: [`Gateway::build`] binds both listeners and assembles the routers;
//! [`Gateway::run_until`] starts one single-threaded runtime per worker thread for the public
//! listener, serves the admin listener and follows `/config` on the caller's runtime, and
//! drains everything on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::Method;
use http_body_util::BodyExt;
use service_kit::config::Snapshot;
use service_kit::faults::{HasRouteFaults, RouteFaults};
use service_kit::server::ReadinessCheck;
use service_kit::{ConfigStore, JwtKeys, Metrics, RuntimeConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::config::{Control, GatewayConfig, Observability, RoleRoutes, User};
use crate::http1::client::{ConnPool, Extra};
use crate::pool::{self, UpstreamPool};
use crate::routes::{FaultLayer, FaultLookup, Faults, Front, RouteDeps};
use crate::server;
use crate::settings::{GatewayRole, Settings, UpstreamUrl};

/// How long the user role's readiness probe waits for the shop's `/healthz`.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound, not yet running gateway.
pub struct Gateway {
    role: GatewayRole,
    public: Vec<std::net::TcpListener>,
    admin: std::net::TcpListener,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    deps: Arc<RouteDeps>,
    admin_router: Router,
    follow_config: BoxFuture<'static, ()>,
    stop: watch::Sender<bool>,
    drain: Duration,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("role", &self.role)
            .field("public_addr", &self.public_addr)
            .field("admin_addr", &self.admin_addr)
            .field("threads", &self.public.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates `settings`, binds the public listeners (one per thread) and the admin
    /// listener, and builds everything the workers need. Nothing is served yet.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(settings.threads >= 1, "threads must be at least 1");
        let keys = Arc::new(settings.jwt_keys.require_some()?.clone());
        let public = server::bind_shared(settings.listen, settings.threads)?;
        let admin = server::bind_shared(settings.admin_listen, 1)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no admin listener was bound"))?;
        let public_addr = public.first().map(std::net::TcpListener::local_addr).transpose()?.unwrap_or(settings.listen);
        let admin_addr = admin.local_addr()?;

        let role = settings.role;
        let metrics = Metrics::new(role.service_name());
        let pool = UpstreamPool::new(&settings.upstream, &metrics)?;
        let requests = pool::requests_counter(&metrics)?;
        let (stop, stop_rx) = watch::channel(false);
        let ready = match role {
            GatewayRole::User => shop_readiness(&settings.shop_url),
            GatewayRole::Control | GatewayRole::Observability => service_kit::server::always_ready(),
        };
        let live = Live { settings: &settings, metrics: &metrics, keys: &keys, pool: &pool, ready, stop: stop_rx };
        let live = match role {
            GatewayRole::User => live.build::<User>(),
            GatewayRole::Control => live.build::<Control>(),
            GatewayRole::Observability => live.build::<Observability>(),
        }?;
        let deps = Arc::new(RouteDeps {
            role,
            metrics: metrics.clone(),
            keys,
            pool,
            requests,
            shop_url: settings.shop_url.clone(),
            services: settings.services.clone(),
            body_limit: settings.body_limit,
            faults: live.faults,
        });
        Ok(Self {
            role,
            public,
            admin,
            public_addr,
            admin_addr,
            deps,
            admin_router: live.admin,
            follow_config: live.follow,
            stop,
            drain: settings.drain,
            header_read_timeout: settings.header_read_timeout,
            metrics,
        })
    }

    /// Where the public listener is bound (the real port when 0 was asked for).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Where the admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`) is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn role(&self) -> GatewayRole {
        self.role
    }

    /// The gateway's metrics registry, as served on the admin listener's `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes idle connections and
    /// lets in-flight requests finish until the drain deadline. Dropping the returned future
    /// before that also stops the workers (they drain the same way).
    pub async fn run_until<F: Future<Output = ()>>(self, shutdown: F) -> anyhow::Result<()> {
        let Self {
            role,
            public,
            admin,
            public_addr,
            admin_addr,
            deps,
            admin_router,
            follow_config,
            stop,
            drain,
            header_read_timeout,
            ..
        } = self;
        let threads = public.len();
        let mut workers = Vec::with_capacity(threads);
        for (index, listener) in public.into_iter().enumerate() {
            let deps = deps.clone();
            let stop = stop.subscribe();
            let (done_tx, done_rx) = oneshot::channel();
            std::thread::Builder::new().name(format!("{}-{index}", role.service_name())).spawn(move || {
                let _ = done_tx.send(run_worker(listener, &deps, stop, drain, header_read_timeout));
            })?;
            workers.push(done_rx);
        }
        let admin = TcpListener::from_std(admin)?;
        let admin_task = tokio::spawn(server::serve(
            admin,
            Front::Router(admin_router),
            stop.subscribe(),
            drain,
            header_read_timeout,
        ));
        let follow_task = tokio::spawn(follow_config);
        tracing::info!(role = %role, public = %public_addr, admin = %admin_addr, threads, "gateway listening");

        shutdown.await;
        tracing::info!(drain_secs = drain.as_secs_f64(), "shutting down: draining in-flight requests");
        stop.send_replace(true);
        let mut failure = None;
        for worker in workers {
            match worker.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => failure = Some(err),
                Err(_) => failure = Some(anyhow::anyhow!("a worker thread panicked")),
            }
        }
        let _ = admin_task.await;
        let _ = follow_task.await;
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// One worker thread: its own runtime, listener and upstream client (keep-alive pool).
fn run_worker(
    listener: std::net::TcpListener,
    deps: &RouteDeps,
    stop: watch::Receiver<bool>,
    drain: Duration,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let front = deps.public_front()?;
        server::serve(listener, front, stop, drain, header_read_timeout).await;
        anyhow::Ok(())
    });
    if let Err(err) = &result {
        tracing::error!(error = %err, "worker thread stopped");
    }
    result
}

/// The parts of the gateway that depend on the role's config type, before type erasure.
struct Live<'a> {
    settings: &'a Settings,
    metrics: &'a Arc<Metrics>,
    keys: &'a Arc<JwtKeys>,
    pool: &'a Arc<UpstreamPool>,
    ready: ReadinessCheck,
    stop: watch::Receiver<bool>,
}

struct LiveParts {
    admin: Router,
    faults: Faults,
    follow: BoxFuture<'static, ()>,
}

impl Live<'_> {
    fn build<R: RoleRoutes>(self) -> anyhow::Result<LiveParts> {
        let service = self.settings.role.service_name();
        let initial = GatewayConfig::<R>::new(self.settings.upstream.clone(), RouteFaults::new());
        let store = ConfigStore::new(service, initial, self.metrics.clone())
            .map_err(|err| anyhow::anyhow!("initial configuration of {service} is invalid: {err:?}"))?;
        let admin = service_kit::app::observed(
            service_kit::app::with_json_fallbacks(service_kit::app::internal_routes(
                self.metrics.clone(),
                store.clone(),
                self.keys.clone(),
                self.ready,
            )),
            self.metrics.clone(),
        );
        let active = Arc::new(AtomicBool::new(false));
        let layer: FaultLayer = {
            let (store, active) = (store.clone(), active.clone());
            Arc::new(move |router: Router| {
                // One `Arc` per worker thread: the per-request state clone stays thread-local.
                let state = Arc::new(FaultState { store: store.clone(), active: active.clone() });
                router.route_layer(middleware::from_fn_with_state(state, inject_faults::<GatewayConfig<R>>))
            })
        };
        let lookup: FaultLookup = {
            let (store, active) = (store.clone(), active.clone());
            Arc::new(move |method: &Method, route: &str| {
                if !active.load(Ordering::Relaxed) {
                    return None;
                }
                service_kit::faults::fault_for(store.current().route_faults(), method, route)
            })
        };
        let follow = Box::pin(follow_config(store.subscribe(), self.pool.clone(), active, self.stop));
        Ok(LiveParts { admin, faults: Faults { layer, lookup }, follow })
    }
}

struct FaultState<T: RuntimeConfig> {
    store: Arc<ConfigStore<T>>,
    /// Mirrors "any fault configured", so a fault-free request skips the config read.
    active: Arc<AtomicBool>,
}

async fn inject_faults<T: RuntimeConfig + HasRouteFaults>(
    State(state): State<Arc<FaultState<T>>>,
    req: Request,
    next: Next,
) -> Response {
    if !state.active.load(Ordering::Relaxed) {
        return next.run(req).await;
    }
    service_kit::faults::inject(State(state.store.clone()), req, next).await
}

/// Applies every accepted `/config` change to the pool and the fault switch, in order.
async fn follow_config<R: RoleRoutes>(
    mut changes: watch::Receiver<Arc<Snapshot<GatewayConfig<R>>>>,
    pool: Arc<UpstreamPool>,
    faults_active: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let snapshot = changes.borrow_and_update().clone();
        pool.apply(&snapshot.upstream);
        faults_active.store(!snapshot.faults.is_empty(), Ordering::Relaxed);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = server::stopped(&mut stop) => break,
        }
    }
}

/// Ready when the shop answers its `/healthz` with a success status.
fn shop_readiness(shop: &UpstreamUrl) -> ReadinessCheck {
    let shop = shop.clone();
    Arc::new(move || {
        let shop = shop.clone();
        Box::pin(async move {
            // A fresh connection per probe: probes are rare and may run on any runtime.
            let conns = Arc::new(ConnPool::new(shop.authority()));
            let path = format!("{}/healthz", shop.base_path());
            let req = http::Request::get(path).body(axum::body::Body::empty()).map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(READINESS_TIMEOUT, conns.send(req, Extra::default()))
                .await
                .map_err(|_| format!("shop did not answer {shop}/healthz within {} s", READINESS_TIMEOUT.as_secs()))?
                .map_err(|e| format!("shop unreachable at {shop}: {e}"))?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() { Ok(()) } else { Err(format!("shop answered {shop}/healthz with {status}")) }
        })
    })
}
