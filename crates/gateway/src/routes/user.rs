//! User role: the shop's business routes and nothing else. Every route is registered by its
//! exact template, so the route label, fault keys and 404/405 answers match the shop's.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{MethodFilter, on};
use http::uri::PathAndQuery;

use super::{USER_ROUTES, split_route};
use crate::proxy::{Proxy, Target};

/// Per-thread state; one `Arc` so a request clones one thread-local counter, not the pool's.
pub struct UserState {
    proxy: Proxy,
    shop: Target,
}

pub fn router(proxy: Proxy, shop: Target) -> Router {
    let state = Arc::new(UserState { proxy, shop });
    let mut router = Router::new();
    for route in USER_ROUTES {
        let Some((method, path)) = split_route(route) else { continue };
        let Ok(filter) = MethodFilter::try_from(method) else { continue };
        router = router.route(path, on(filter, proxy_to_shop));
    }
    router.with_state(state)
}

/// Forwards the request unchanged (method, path, query, body) to the shop.
async fn proxy_to_shop(State(state): State<Arc<UserState>>, req: Request) -> Response {
    let path_and_query = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    state.proxy.forward(&state.shop, req, path_and_query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_route_parses_into_a_method_filter() {
        for route in USER_ROUTES {
            let (method, path) = split_route(route).unwrap_or_else(|| panic!("{route}"));
            assert!(MethodFilter::try_from(method).is_ok(), "{route}");
            assert!(path.starts_with("/api/"), "{route}");
        }
    }
}
