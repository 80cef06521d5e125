//! User journeys through the user gateway, step by step: what a shopper's browser would ask
//! for, with think time between the steps. A journey fails at its first step that answers
//! outside 2xx, errors or times out; its latency is the sum of its steps' latencies, each
//! measured from the step's planned send time (the journey's planned start for the first step,
//! the end of the previous step plus think time for the others).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use scenario::sli::Journey;
use serde::Deserialize;
use serde_json::json;

use crate::client::{self, Body, Endpoint, Pool};
use crate::record::{Failure, Outcome, Record};

/// Page size of the browse and product journeys (the shop's default).
const PAGE: u32 = 20;

/// What shoppers type into the search box: prefixes of the seeded product names.
const SEARCH_TERMS: &[&str] = &[
    "wireless",
    "smart",
    "portable",
    "classic",
    "pocket",
    "ceramic",
    "electric",
    "solar",
    "wooden",
    "deluxe",
    "ultralight",
    "waterproof",
    "merino",
    "organic cotton",
    "hydrating",
    "organic",
    "artisan",
    "ergonomic",
    "cozy",
    "digital",
];

/// Product ids that journeys put into carts. Starts with the seed's first ids (the shop seeds
/// ids from 1) and is replaced by in-stock ids read from the catalog when a plan starts.
#[derive(Debug)]
pub struct Catalog {
    ids: RwLock<Arc<Vec<i64>>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self { ids: RwLock::new(Arc::new((1..=100).collect())) }
    }
}

impl Catalog {
    fn ids(&self) -> Arc<Vec<i64>> {
        self.ids.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn replace(&self, ids: Vec<i64>) {
        if !ids.is_empty() {
            *self.ids.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ids);
        }
    }

    pub fn len(&self) -> usize {
        self.ids().len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    /// Up to `n` distinct ids: a random one and those after it.
    fn pick(&self, n: usize) -> Vec<i64> {
        let ids = self.ids();
        if ids.is_empty() {
            return Vec::new();
        }
        let start = fastrand::usize(..ids.len());
        (0..n.min(ids.len())).map(|i| ids[(start + i) % ids.len()]).collect()
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    items: Vec<Item>,
    #[serde(default)]
    next_offset: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Item {
    id: i64,
    #[serde(default = "in_stock")]
    stock: i64,
}

fn in_stock() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
struct CartCreated {
    cart_id: String,
}

/// Reads up to `pages` catalog pages of 100 and returns the ids of products in stock.
pub async fn load_catalog(pool: &Pool, pages: u32, timeout: Duration) -> Option<Vec<i64>> {
    let mut ids = Vec::new();
    let mut offset = 0;
    for _ in 0..pages {
        let req = client::get(pool.endpoint(), &format!("/api/products?limit=100&offset={offset}"));
        let answer = tokio::time::timeout(timeout, pool.send(req)).await.ok()?.ok()?;
        if !answer.status.is_success() {
            return None;
        }
        let page: Page = serde_json::from_slice(&answer.body).ok()?;
        ids.extend(page.items.iter().filter(|p| p.stock > 0).map(|p| p.id));
        match page.next_offset {
            Some(next) => offset = next,
            None => break,
        }
    }
    Some(ids)
}

/// What a worker's journeys share.
pub struct Context {
    pub pool: std::rc::Rc<Pool>,
    pub catalog: Arc<Catalog>,
    pub think: Duration,
    /// Per-request timeout in milliseconds, shared with the engine so changes apply at once.
    pub timeout_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Single-request mode: every journey is one GET of this path and query.
    pub single: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("pool", &self.pool).field("single", &self.single).finish_non_exhaustive()
    }
}

/// One journey under way.
struct Run<'a> {
    ctx: &'a Context,
    next_planned: Instant,
    latency: Duration,
    requests: u32,
}

impl Run<'_> {
    fn endpoint(&self) -> &Endpoint {
        self.ctx.pool.endpoint()
    }

    /// Sends one step at its planned time and returns its body if it answered 2xx.
    async fn step(&mut self, req: http::Request<Body>) -> Result<Bytes, Failure> {
        if self.requests > 0 {
            tokio::time::sleep_until(self.next_planned.into()).await;
        }
        let planned = self.next_planned;
        let timeout = Duration::from_millis(self.ctx.timeout_ms.load(std::sync::atomic::Ordering::Relaxed));
        let sent = tokio::time::timeout(timeout, self.ctx.pool.send(req)).await;
        let end = Instant::now();
        self.latency += end.saturating_duration_since(planned);
        self.requests += 1;
        self.next_planned = end + self.ctx.think;
        match sent {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "journey step failed");
                Err(Failure::Transport)
            }
            Ok(Ok(answer)) if answer.status.is_success() => Ok(answer.body),
            Ok(Ok(answer)) => Err(Failure::Status(answer.status.as_u16())),
        }
    }

    async fn get(&mut self, path: &str) -> Result<Bytes, Failure> {
        let req = client::get(self.endpoint(), path);
        self.step(req).await
    }

    async fn post(&mut self, path: &str, body: &serde_json::Value) -> Result<Bytes, Failure> {
        let req = client::post_json(self.endpoint(), path, body);
        self.step(req).await
    }

    fn random_offset(&self) -> usize {
        let known = self.ctx.catalog.len();
        let last = known.saturating_sub(PAGE as usize);
        fastrand::usize(0..=last)
    }

    async fn browse(&mut self) -> Result<u32, Failure> {
        let offset = self.random_offset();
        self.get(&format!("/api/products?limit={PAGE}&offset={offset}")).await?;
        Ok(0)
    }

    async fn search(&mut self) -> Result<u32, Failure> {
        let term = SEARCH_TERMS[fastrand::usize(..SEARCH_TERMS.len())].replace(' ', "%20");
        self.get(&format!("/api/products/search?q={term}")).await?;
        Ok(0)
    }

    async fn product(&mut self) -> Result<u32, Failure> {
        let offset = self.random_offset();
        let body = self.get(&format!("/api/products?limit={PAGE}&offset={offset}")).await?;
        let page: Page = serde_json::from_slice(&body).map_err(|_| Failure::Body)?;
        let Some(item) = (!page.items.is_empty()).then(|| &page.items[fastrand::usize(..page.items.len())]) else {
            return Err(Failure::Body);
        };
        self.get(&format!("/api/products/{}", item.id)).await?;
        Ok(0)
    }

    /// Opens a cart and adds one to three products to it; returns the cart id.
    async fn fill_cart(&mut self) -> Result<String, Failure> {
        let body = self.post("/api/carts", &json!({})).await?;
        let cart: CartCreated = serde_json::from_slice(&body).map_err(|_| Failure::Body)?;
        let products = self.ctx.catalog.pick(fastrand::usize(1..=3));
        if products.is_empty() {
            return Err(Failure::Body);
        }
        for product_id in products {
            self.post(&format!("/api/carts/{}/items", cart.cart_id), &json!({"product_id": product_id, "quantity": 1}))
                .await?;
        }
        Ok(cart.cart_id)
    }

    async fn cart(&mut self) -> Result<u32, Failure> {
        let cart_id = self.fill_cart().await?;
        self.get(&format!("/api/carts/{cart_id}")).await?;
        Ok(0)
    }

    async fn checkout(&mut self) -> Result<u32, Failure> {
        let cart_id = self.fill_cart().await?;
        let mut req = client::post_json(
            self.endpoint(),
            "/api/checkout",
            &json!({"cart_id": cart_id, "email": "shopper@example.com"}),
        );
        // A fresh key per checkout: safe to retry, never replays another shopper's order.
        if let Ok(key) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            req.headers_mut().insert("idempotency-key", key);
        }
        self.step(req).await?;
        Ok(1)
    }

    async fn ping(&mut self) -> Result<u32, Failure> {
        match &self.ctx.single {
            Some(path) => {
                let req = client::get(self.endpoint(), "");
                let req = with_uri(req, path);
                self.step(req).await?;
            }
            None => {
                self.get("/api/ping").await?;
            }
        }
        Ok(0)
    }
}

fn with_uri(mut req: http::Request<Body>, path_and_query: &str) -> http::Request<Body> {
    let target = if path_and_query.is_empty() { "/" } else { path_and_query };
    if let Ok(uri) = target.parse() {
        *req.uri_mut() = uri;
    }
    req
}

/// Runs `journey` planned for `planned` and reports how it went.
pub async fn run(ctx: &Context, journey: Journey, planned: Instant) -> Record {
    let mut run = Run { ctx, next_planned: planned, latency: Duration::ZERO, requests: 0 };
    let result = match journey {
        Journey::Browse => run.browse().await,
        Journey::Search => run.search().await,
        Journey::Product => run.product().await,
        Journey::Cart => run.cart().await,
        Journey::Checkout => run.checkout().await,
        Journey::Ping => run.ping().await,
    };
    let (outcome, orders) = match result {
        Ok(orders) => (Outcome::Ok, orders),
        Err(failure) => (Outcome::Failed(failure), 0),
    };
    Record {
        journey,
        outcome,
        finished: Instant::now(),
        latency_us: u64::try_from(run.latency.as_micros()).unwrap_or(u64::MAX),
        requests: run.requests,
        orders,
    }
}

/// A weighted pick of journeys from a mix.
#[derive(Debug, Clone)]
pub struct Picker {
    cumulative: Vec<(u32, Journey)>,
    total: u32,
}

impl Picker {
    pub fn new(mix: &scenario::load::Mix) -> Self {
        let mut total = 0;
        let cumulative = mix
            .weights()
            .into_iter()
            .map(|(journey, weight)| {
                total += weight;
                (total, journey)
            })
            .collect();
        Self { cumulative, total }
    }

    pub fn pick(&self) -> Journey {
        if self.total == 0 {
            return Journey::Ping;
        }
        let x = fastrand::u32(..self.total);
        self.cumulative.iter().find(|(upto, _)| x < *upto).map_or(Journey::Ping, |(_, j)| *j)
    }
}

#[cfg(test)]
mod tests {
    use scenario::load::Mix;

    use super::*;

    #[test]
    fn the_picker_follows_the_weights() {
        let picker = Picker::new(&Mix { browse: 3, search: 0, product: 0, cart: 0, checkout: 1, ping: 0 });
        let picks: Vec<Journey> = (0..4000).map(|_| picker.pick()).collect();
        let checkouts = picks.iter().filter(|j| **j == Journey::Checkout).count();
        assert!(picks.iter().all(|j| matches!(j, Journey::Browse | Journey::Checkout)));
        assert!((700..1300).contains(&checkouts), "{checkouts}");
        assert_eq!(Picker::new(&Mix::ping_only()).pick(), Journey::Ping);
    }

    #[test]
    fn catalog_picks_are_distinct_known_ids() {
        let catalog = Catalog::default();
        catalog.replace(vec![7, 8, 9]);
        let picked = catalog.pick(3);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(|id| [7, 8, 9].contains(id)));
        catalog.replace(Vec::new());
        assert_eq!(catalog.len(), 3, "an empty read keeps what was known");
    }
}
