//! Cart routes: create a cart, read it with priced lines, add items.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use service_kit::ApiError;
use service_kit::error::ErrorBody;
use sqlx::PgConnection;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{AppState, CURRENCY};
use crate::config::PricingAlgorithm;
use crate::db::{db_error, query_span};
use crate::params;

/// Most units of one product a single add may ask for.
pub const MAX_ADD_QUANTITY: u32 = 20;
/// Most units of one product a cart may hold (also a CHECK in the schema).
pub const MAX_LINE_QUANTITY: i32 = 99;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartCreated {
    pub cart_id: Uuid,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CartLine {
    pub product_id: i64,
    pub name: String,
    pub quantity: i32,
    /// Price per unit today, in cents.
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// A cart with every line priced by the pricing engine.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cart {
    pub cart_id: Uuid,
    pub lines: Vec<CartLine>,
    pub item_count: i64,
    pub total_cents: i64,
    pub currency: String,
}

/// Body of `POST /api/carts/{cart_id}/items`; adding a product already in the cart adds to
/// its quantity.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    #[schema(minimum = 1)]
    pub product_id: i64,
    #[schema(minimum = 1, maximum = 20)]
    pub quantity: u32,
}

/// `(product_id, name, quantity)` of each line, or `None` when the cart does not exist.
pub(crate) async fn cart_lines(
    conn: &mut PgConnection,
    cart_id: Uuid,
) -> Result<Option<Vec<(i64, String, i32)>>, ApiError> {
    let rows: Vec<(Option<i64>, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT ci.product_id, p.name, ci.quantity \
         FROM carts c \
         LEFT JOIN cart_items ci ON ci.cart_id = c.id \
         LEFT JOIN products p ON p.id = ci.product_id \
         WHERE c.id = $1 \
         ORDER BY ci.added_at, ci.product_id",
    )
    .bind(cart_id)
    .fetch_all(conn)
    .instrument(query_span("SELECT cart_items by cart"))
    .await
    .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter().filter_map(|(id, name, quantity)| Some((id?, name.unwrap_or_default(), quantity?))).collect(),
    ))
}

/// Prices `(product_id, name, quantity)` lines.
pub(crate) async fn price_lines(
    app: &AppState,
    algorithm: PricingAlgorithm,
    lines: Vec<(i64, String, i32)>,
) -> Result<Vec<CartLine>, ApiError> {
    let prices = app.pricing.price(algorithm, lines.iter().map(|(id, _, _)| *id).collect()).await?;
    Ok(lines
        .into_iter()
        .zip(prices)
        .map(|((product_id, name, quantity), unit_price_cents)| CartLine {
            product_id,
            name,
            quantity,
            unit_price_cents,
            line_total_cents: unit_price_cents.saturating_mul(i64::from(quantity)),
        })
        .collect())
}

fn cart_view(cart_id: Uuid, lines: Vec<CartLine>) -> Cart {
    Cart {
        cart_id,
        item_count: lines.iter().map(|l| i64::from(l.quantity)).sum(),
        total_cents: lines.iter().map(|l| l.line_total_cents).sum(),
        lines,
        currency: CURRENCY.to_owned(),
    }
}

fn cart_not_found(cart_id: Uuid) -> ApiError {
    ApiError::NotFound(format!("cart {cart_id} not found"))
}

/// Opens an empty cart.
#[utoipa::path(post, path = "/api/carts", tag = "shop", responses(
    (status = 201, body = CartCreated, headers(("Location" = String, description = "The cart's URL")),
        links(
            ("AddItem" = (operation_id = "add_item", parameters(("cart_id" = "$response.body#/cart_id")))),
            ("GetCart" = (operation_id = "get_cart", parameters(("cart_id" = "$response.body#/cart_id")))),
        )),
    (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
))]
pub async fn create_cart(State(app): State<AppState>) -> Result<(StatusCode, HeaderMap, Json<CartCreated>), ApiError> {
    let config = app.config();
    let cart_id = Uuid::now_v7();
    let mut conn = app.conn(&config).await?;
    sqlx::query("INSERT INTO carts (id) VALUES ($1)")
        .bind(cart_id)
        .execute(&mut *conn)
        .instrument(query_span("INSERT carts"))
        .await
        .map_err(db_error)?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/carts/{cart_id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(CartCreated { cart_id })))
}

/// The cart with today's prices.
#[utoipa::path(get, path = "/api/carts/{cart_id}", tag = "shop",
    params(("cart_id" = Uuid, Path, description = "Cart id")),
    responses(
        (status = 200, body = Cart),
        (status = 400, body = ErrorBody, description = "`cart_id` is not a UUID"),
        (status = 404, body = ErrorBody, description = "No such cart"),
        (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
    ))]
pub async fn get_cart(
    State(app): State<AppState>,
    cart_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Cart>, ApiError> {
    let cart_id = params::path_uuid(cart_id, "cart_id")?;
    let config = app.config();
    let lines = {
        let mut conn = app.conn(&config).await?;
        cart_lines(&mut conn, cart_id).await?
    };
    let lines = lines.ok_or_else(|| cart_not_found(cart_id))?;
    let lines = price_lines(&app, config.pricing.algorithm, lines).await?;
    Ok(Json(cart_view(cart_id, lines)))
}

/// Adds units of a product to the cart and returns the updated cart.
#[utoipa::path(post, path = "/api/carts/{cart_id}/items", tag = "shop",
    params(("cart_id" = Uuid, Path, description = "Cart id")),
    request_body = AddItem,
    responses(
        (status = 200, body = Cart, links(
            ("Checkout" = (operation_id = "checkout", request_body = json!({"cart_id": "$response.body#/cart_id"}))),
        )),
        (status = 400, body = ErrorBody, description = "Invalid `cart_id`, `product_id` or `quantity`; `details` names the field and rule"),
        (status = 404, body = ErrorBody, description = "No such cart or product"),
        (status = 409, body = ErrorBody, description = "The line would exceed 99 units"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
    ))]
pub async fn add_item(
    State(app): State<AppState>,
    cart_id: Result<Path<String>, PathRejection>,
    params::Body(item): params::Body<AddItem>,
) -> Result<Json<Cart>, ApiError> {
    let cart_id = params::path_uuid(cart_id, "cart_id")?;
    if item.product_id < 1 {
        return Err(ApiError::field("product_id", "minimum", "must be at least 1"));
    }
    if item.quantity < 1 {
        return Err(ApiError::field("quantity", "minimum", "must be at least 1"));
    }
    if item.quantity > MAX_ADD_QUANTITY {
        return Err(ApiError::field("quantity", "maximum", format!("must be at most {MAX_ADD_QUANTITY}")));
    }
    let quantity = i32::try_from(item.quantity).unwrap_or(i32::MAX);
    let config = app.config();
    let lines = {
        let mut conn = app.conn(&config).await?;
        let cart_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM carts WHERE id = $1)")
            .bind(cart_id)
            .fetch_one(&mut *conn)
            .instrument(query_span("SELECT carts exists"))
            .await
            .map_err(db_error)?;
        if !cart_exists {
            return Err(cart_not_found(cart_id));
        }
        let product_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)")
            .bind(item.product_id)
            .fetch_one(&mut *conn)
            .instrument(query_span("SELECT products exists"))
            .await
            .map_err(db_error)?;
        if !product_exists {
            return Err(ApiError::NotFound(format!("product {} not found", item.product_id)));
        }
        let added: Option<i32> = sqlx::query_scalar(
            "INSERT INTO cart_items (cart_id, product_id, quantity) VALUES ($1, $2, $3) \
             ON CONFLICT (cart_id, product_id) DO UPDATE \
                SET quantity = cart_items.quantity + excluded.quantity \
                WHERE cart_items.quantity + excluded.quantity <= $4 \
             RETURNING quantity",
        )
        .bind(cart_id)
        .bind(item.product_id)
        .bind(quantity)
        .bind(MAX_LINE_QUANTITY)
        .fetch_optional(&mut *conn)
        .instrument(query_span("INSERT cart_items"))
        .await
        .map_err(db_error)?;
        if added.is_none() {
            return Err(ApiError::Conflict(format!(
                "a cart holds at most {MAX_LINE_QUANTITY} units of product {}",
                item.product_id
            )));
        }
        cart_lines(&mut conn, cart_id).await?.ok_or_else(|| cart_not_found(cart_id))?
    };
    let lines = price_lines(&app, config.pricing.algorithm, lines).await?;
    Ok(Json(cart_view(cart_id, lines)))
}
