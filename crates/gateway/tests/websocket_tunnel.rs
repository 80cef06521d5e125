//! The control gateway tunnels the orchestrator's WebSocket: the handshake needs the stack's
//! token, the orchestrator's own answer to the handshake is passed on, and once upgraded the
//! frames flow both ways.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{TestGateway, Upstream, settings, token, with_services};
use futures_util::{SinkExt, StreamExt};
use gateway::GatewayRole;
use service_kit::Role;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A stand-in orchestrator whose `/api/ws` echoes text frames upper-cased, and refuses the
/// handshake when the token did not travel on.
async fn echo_orchestrator() -> String {
    async fn ws(headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
        if !headers.contains_key("authorization") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        upgrade.on_upgrade(|mut socket: WebSocket| async move {
            while let Some(Ok(Message::Text(text))) = socket.recv().await {
                if socket.send(Message::Text(text.to_uppercase().into())).await.is_err() {
                    break;
                }
            }
        })
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/api/ws", get(ws))).await });
    format!("http://{addr}")
}

async fn control_gateway(orchestrator: &str) -> TestGateway {
    let shop = Upstream::start().await;
    TestGateway::start(with_services(
        settings(GatewayRole::Control, &shop.url()),
        &[("shop", shop.url().as_str()), ("orchestrator", orchestrator)],
    ))
}

fn ws_url(gw: &TestGateway) -> String {
    gw.url("/api/ws").replacen("http://", "ws://", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_tunnels_the_orchestrator_websocket_both_ways() {
    let orchestrator = echo_orchestrator().await;
    let gw = control_gateway(&orchestrator).await;
    let mut request = ws_url(&gw).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", token(Role::Learner)).parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for word in ["hint", "slis", "completed"] {
        socket.send(tungstenite::Message::text(word)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), word.to_uppercase());
    }
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_without_a_token_is_refused_at_the_gateway() {
    let orchestrator = echo_orchestrator().await;
    let gw = control_gateway(&orchestrator).await;
    match tokio_tungstenite::connect_async(ws_url(&gw)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), StatusCode::UNAUTHORIZED),
        other => panic!("expected a 401 handshake refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_get_on_the_websocket_route_names_what_is_missing() {
    let orchestrator = echo_orchestrator().await;
    let gw = control_gateway(&orchestrator).await;
    let resp = common::http().get(gw.url("/api/ws")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_routes_say_when_no_orchestrator_is_configured() {
    let shop = Upstream::start().await;
    let gw = TestGateway::start(with_services(
        settings(GatewayRole::Control, &shop.url()),
        &[("shop", shop.url().as_str())],
    ));
    let resp = common::http().get(gw.url("/api/scenarios")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("orchestrator"), "{body}");
}
