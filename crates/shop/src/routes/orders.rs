//! Checkout and order routes. Checkout is one transaction: lock the cart, price it, insert the
//! order and its lines, take the stock, empty the cart. An `Idempotency-Key` makes a retried
//! checkout return the order it already placed instead of placing a second one.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::ApiError;
use service_kit::error::ErrorBody;
use sqlx::{Connection as _, PgConnection};
use tracing::Instrument as _;
use uuid::Uuid;

use super::carts::{CartLine, price_lines};
use super::{AppState, CURRENCY};
use crate::config::{ReleaseVersion, ShopConfig};
use crate::db::{db_error, query_span};
use crate::params;

/// Request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Response header set when a checkout was answered from an earlier, identical one.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Body of `POST /api/checkout`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub cart_id: Uuid,
    /// Where the confirmation goes.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: i64,
    pub email: String,
    /// `placed` for new orders; history also has `delivered` and `cancelled`.
    pub status: String,
    /// The cart the order came from (absent for seeded history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<Uuid>,
    pub items: Vec<CartLine>,
    pub item_count: i32,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// A checkout that did not place an order: the answer, and the reason it is counted under in
/// `shop_checkout_failures_total`.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    error: ApiError,
}

impl Failure {
    fn new(reason: &'static str, error: ApiError) -> Self {
        Self { reason, error }
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        let reason = match &error {
            ApiError::Validation(_)
            | ApiError::BadRequest { .. }
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge { .. } => "invalid_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable { .. } | ApiError::Timeout(_) => "unavailable",
            _ => "internal",
        };
        Self { reason, error }
    }
}

enum Outcome {
    Placed(Order),
    Replayed(Order),
}

/// Places an order from a cart.
#[utoipa::path(post, path = "/api/checkout", tag = "shop",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a checkout repeated with the same key returns the same order (1 to 255 visible ASCII characters)", pattern = "^[!-~]+$", min_length = 1, max_length = 255)),
    request_body = CheckoutRequest,
    responses(
        (status = 201, body = Order, description = "Order placed, or the order an earlier request with the same Idempotency-Key placed (then `Idempotent-Replayed: true`)",
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = ErrorBody, description = "Invalid body, email or Idempotency-Key; `details` names the field and rule"),
        (status = 404, body = ErrorBody, description = "No such cart"),
        (status = 409, body = ErrorBody, description = "Empty cart, insufficient stock, or Idempotency-Key reused for a different checkout"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
    ))]
pub async fn checkout(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<params::Body<CheckoutRequest>, ApiError>,
) -> Result<(StatusCode, HeaderMap, Json<Order>), ApiError> {
    let config = app.config();
    let outcome = async {
        let params::Body(request) = body?;
        let key = idempotency_key(&headers)?;
        let email = validate_email(&request.email)?;
        place_order(&app, &config, request.cart_id, &email, key.as_deref()).await
    }
    .await;
    match outcome {
        Ok(Outcome::Placed(order)) => {
            app.metrics.orders_created.inc();
            tracing::info!(
                order_id = order.id,
                total_cents = order.total_cents,
                items = order.item_count,
                "order placed"
            );
            Ok((StatusCode::CREATED, HeaderMap::new(), Json(order)))
        }
        Ok(Outcome::Replayed(order)) => {
            tracing::info!(order_id = order.id, "checkout replayed for its idempotency key");
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok((StatusCode::CREATED, headers, Json(order)))
        }
        Err(failure) => {
            app.metrics.checkout_failures.with_label_values(&[failure.reason]).inc();
            Err(failure.error)
        }
    }
}

/// One order with its lines.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "shop",
    params(("id" = i64, Path, description = "Order id", minimum = 1)),
    responses(
        (status = 200, body = Order),
        (status = 400, body = ErrorBody, description = "`id` is not a positive integer"),
        (status = 404, body = ErrorBody, description = "No such order"),
        (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
    ))]
pub async fn get_order(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Order>, ApiError> {
    let id = params::path_id(id, "id")?;
    let config = app.config();
    let mut conn = app.conn(&config).await?;
    let order = load_order(&mut conn, id).await?;
    order.map(Json).ok_or_else(|| ApiError::NotFound(format!("order {id} not found")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::field(
            "Idempotency-Key",
            "format",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// A deliberately simple shape check: one `@`, a non-empty local part and a dotted domain.
fn validate_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim();
    if email.len() > 254 {
        return Err(ApiError::field("email", "maxLength", "must have at most 254 characters"));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if valid {
        Ok(email.to_owned())
    } else {
        Err(ApiError::field("email", "format", "must be an email address like ada@example.com"))
    }
}

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    id: i64,
    email: String,
    status: String,
    cart_id: Option<Uuid>,
    total_cents: i64,
    item_count: i32,
    created_at: DateTime<Utc>,
}

async fn load_order(conn: &mut PgConnection, id: i64) -> Result<Option<Order>, ApiError> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, email, status, cart_id, total_cents, item_count, created_at FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .instrument(query_span("SELECT orders by id"))
    .await
    .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<(i64, String, i32, i64)> = sqlx::query_as(
        "SELECT oi.product_id, p.name, oi.quantity, oi.unit_price_cents \
         FROM order_items oi JOIN products p ON p.id = oi.product_id \
         WHERE oi.order_id = $1 ORDER BY oi.line_no",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .instrument(query_span("SELECT order_items by order"))
    .await
    .map_err(db_error)?;
    Ok(Some(Order {
        id: row.id,
        email: row.email,
        status: row.status,
        cart_id: row.cart_id,
        items: items
            .into_iter()
            .map(|(product_id, name, quantity, unit_price_cents)| CartLine {
                product_id,
                name,
                quantity,
                unit_price_cents,
                line_total_cents: unit_price_cents.saturating_mul(i64::from(quantity)),
            })
            .collect(),
        item_count: row.item_count,
        total_cents: row.total_cents,
        currency: CURRENCY.to_owned(),
        created_at: row.created_at,
    }))
}

/// The order placed earlier under `key`, if it matches this request.
async fn replay(conn: &mut PgConnection, key: &str, cart_id: Uuid, email: &str) -> Result<Option<Order>, Failure> {
    let existing: Option<(i64, Option<Uuid>, String)> =
        sqlx::query_as("SELECT id, cart_id, email FROM orders WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .instrument(query_span("SELECT orders by idempotency_key"))
            .await
            .map_err(db_error)?;
    let Some((order_id, order_cart, order_email)) = existing else { return Ok(None) };
    if order_cart != Some(cart_id) || order_email != email {
        return Err(Failure::new(
            "idempotency_conflict",
            ApiError::Conflict("this Idempotency-Key was already used for a different checkout".to_owned()),
        ));
    }
    Ok(load_order(conn, order_id).await?)
}

/// The order insert of each release. 2.4.1 writes loyalty points into a column whose
/// migration was never shipped, so PostgreSQL rejects every checkout under it.
fn insert_order_sql(release: ReleaseVersion) -> &'static str {
    match release {
        ReleaseVersion::V2_3_0 | ReleaseVersion::V2_4_0 => {
            "INSERT INTO orders (email, total_cents, item_count, release, cart_id, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at"
        }
        ReleaseVersion::V2_4_1 => {
            "INSERT INTO orders (email, total_cents, item_count, release, cart_id, idempotency_key, loyalty_points) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at"
        }
    }
}

fn is_idempotency_key_clash(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some("orders_idempotency_key_key"))
}

async fn place_order(
    app: &AppState,
    config: &ShopConfig,
    cart_id: Uuid,
    email: &str,
    key: Option<&str>,
) -> Result<Outcome, Failure> {
    let release = config.release.version;
    let mut conn = app.conn(config).await?;
    let mut tx = conn.begin().instrument(query_span("BEGIN")).await.map_err(db_error)?;

    // The cart lock serialises checkouts of one cart, so a retry waits for the first attempt
    // and then finds its order by key instead of an empty cart.
    let locked: Option<Uuid> = sqlx::query_scalar("SELECT id FROM carts WHERE id = $1 FOR UPDATE")
        .bind(cart_id)
        .fetch_optional(&mut *tx)
        .instrument(query_span("SELECT carts FOR UPDATE"))
        .await
        .map_err(db_error)?;
    if locked.is_none() {
        return Err(Failure::new("cart_not_found", ApiError::NotFound(format!("cart {cart_id} not found"))));
    }
    if let Some(key) = key
        && let Some(order) = replay(&mut tx, key, cart_id, email).await?
    {
        return Ok(Outcome::Replayed(order));
    }

    // Product rows are locked in id order, the same order every checkout uses: no deadlocks.
    let lines: Vec<(i64, String, i32, i32)> = sqlx::query_as(
        "SELECT ci.product_id, p.name, ci.quantity, p.stock \
         FROM cart_items ci JOIN products p ON p.id = ci.product_id \
         WHERE ci.cart_id = $1 ORDER BY p.id FOR UPDATE OF p",
    )
    .bind(cart_id)
    .fetch_all(&mut *tx)
    .instrument(query_span("SELECT cart_items FOR UPDATE"))
    .await
    .map_err(db_error)?;
    if lines.is_empty() {
        return Err(Failure::new("empty_cart", ApiError::Conflict(format!("cart {cart_id} is empty"))));
    }
    let short: Vec<String> = lines
        .iter()
        .filter(|(_, _, quantity, stock)| stock < quantity)
        .map(|(id, _, quantity, stock)| format!("product {id} ({quantity} requested, {stock} left)"))
        .collect();
    if !short.is_empty() {
        return Err(Failure::new(
            "insufficient_stock",
            ApiError::Conflict(format!("insufficient stock for {}", short.join(", "))),
        ));
    }
    let priced =
        price_lines(app, config.pricing.algorithm, lines.into_iter().map(|(id, name, q, _)| (id, name, q)).collect())
            .await?;
    let total_cents: i64 = priced.iter().map(|l| l.line_total_cents).sum();
    let item_count: i32 = priced.iter().map(|l| l.quantity).sum();

    let mut insert = sqlx::query_as(insert_order_sql(release))
        .bind(email)
        .bind(total_cents)
        .bind(item_count)
        .bind(release.as_str())
        .bind(cart_id)
        .bind(key);
    if release == ReleaseVersion::V2_4_1 {
        // One loyalty point per whole euro.
        insert = insert.bind(total_cents / 100);
    }
    let inserted: Result<(i64, DateTime<Utc>), sqlx::Error> =
        insert.fetch_one(&mut *tx).instrument(query_span("INSERT orders")).await;
    let (order_id, created_at) = match inserted {
        Ok(row) => row,
        Err(err) if is_idempotency_key_clash(&err) => {
            return Err(Failure::new(
                "idempotency_conflict",
                ApiError::Conflict("this Idempotency-Key was already used for a different checkout".to_owned()),
            ));
        }
        Err(err) => {
            // The one log line of a 500 carries the release, so the deploy is one query away.
            let error = match db_error(err) {
                ApiError::Internal(e) => ApiError::Internal(e.context(format!("checkout under release {release}"))),
                other => other,
            };
            return Err(error.into());
        }
    };

    let product_ids: Vec<i64> = priced.iter().map(|l| l.product_id).collect();
    let quantities: Vec<i32> = priced.iter().map(|l| l.quantity).collect();
    let unit_prices: Vec<i64> = priced.iter().map(|l| l.unit_price_cents).collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_cents) \
         SELECT $1, l.line_no, l.product_id, l.quantity, l.unit_price_cents \
         FROM unnest($2::bigint[], $3::int[], $4::bigint[]) WITH ORDINALITY \
              AS l(product_id, quantity, unit_price_cents, line_no)",
    )
    .bind(order_id)
    .bind(&product_ids)
    .bind(&quantities)
    .bind(&unit_prices)
    .execute(&mut *tx)
    .instrument(query_span("INSERT order_items"))
    .await
    .map_err(db_error)?;
    sqlx::query(
        "UPDATE products p SET stock = p.stock - l.quantity \
         FROM unnest($1::bigint[], $2::int[]) AS l(product_id, quantity) WHERE p.id = l.product_id",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .execute(&mut *tx)
    .instrument(query_span("UPDATE products stock"))
    .await
    .map_err(db_error)?;
    sqlx::query("DELETE FROM cart_items WHERE cart_id = $1")
        .bind(cart_id)
        .execute(&mut *tx)
        .instrument(query_span("DELETE cart_items"))
        .await
        .map_err(db_error)?;
    sqlx::query("UPDATE carts SET updated_at = now() WHERE id = $1")
        .bind(cart_id)
        .execute(&mut *tx)
        .instrument(query_span("UPDATE carts"))
        .await
        .map_err(db_error)?;
    tx.commit().instrument(query_span("COMMIT")).await.map_err(db_error)?;

    Ok(Outcome::Placed(Order {
        id: order_id,
        email: email.to_owned(),
        status: "placed".to_owned(),
        cart_id: Some(cart_id),
        items: priced,
        item_count,
        total_cents,
        currency: CURRENCY.to_owned(),
        created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shape_is_checked() {
        assert!(validate_email(" ada@example.com ").is_ok());
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "a@b@c.d", "ada@.com"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_key_must_be_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("retry-1"));
        assert_eq!(idempotency_key(&headers).unwrap().as_deref(), Some("retry-1"));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("has space"));
        assert!(idempotency_key(&headers).is_err());
    }
}
