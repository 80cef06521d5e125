//! Catalog routes: ping, category browsing, search and the product page.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Serialize;
use service_kit::ApiError;
use service_kit::error::ErrorBody;
use tracing::Instrument as _;

use super::{AppState, CURRENCY, Pong};
use crate::config::SearchStrategy;
use crate::db::{db_error, query_span};
use crate::params;

/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 64;

/// One product in a listing, at its list price (the computed price is on the product page).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProductSummary {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub category: String,
    /// List price in cents.
    pub list_price_cents: i64,
    pub stock: i32,
}

/// A page of the catalog.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductSummary>,
    pub limit: u32,
    pub offset: u32,
    /// Offset of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
    pub currency: String,
}

/// Search hits, best match first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub query: String,
    pub items: Vec<ProductSummary>,
    pub limit: u32,
    pub currency: String,
}

/// The product page, with the price computed by the pricing engine.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    /// List price in cents.
    pub list_price_cents: i64,
    /// Price charged today, in cents.
    pub price_cents: i64,
    pub currency: String,
    pub stock: i32,
    pub in_stock: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct ProductRow {
    id: i64,
    sku: String,
    name: String,
    description: String,
    category: String,
    list_price_cents: i64,
    stock: i32,
}

/// Query parameters of `GET /api/products` (documentation; parsed by hand).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Only products of this category (exact name); empty means every category.
    #[param(schema_with = category_schema)]
    category: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// Products to skip.
    #[param(minimum = 0, maximum = 100000, default = 0)]
    offset: Option<u32>,
}

/// Query parameters of `GET /api/products/search` (documentation; parsed by hand).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SearchQuery {
    /// What to look for, case-insensitive: at most 64 characters, not only whitespace (what
    /// `str::trim` removes), no NUL.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    q: String,
    /// Most hits returned.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
}

/// The categories a seeded catalog has (the seed is what creates products); the server checks
/// against the live catalog.
fn category_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("Only products of this category (exact name); empty means every category."))
        .enum_values(Some(std::iter::once("").chain(crate::seed::CATEGORIES)))
        .build()
}

/// Case-insensitive name prefix match; `$1` is a lower-case LIKE prefix pattern. Served by the
/// `lower(name) text_pattern_ops` index.
pub const SEARCH_INDEXED_SQL: &str = "SELECT id, sku, name, category, base_price_cents AS list_price_cents, stock \
     FROM products WHERE lower(name) LIKE $1 ORDER BY lower(name), id LIMIT $2";

/// Full-text match of word prefixes anywhere in name and description; `$1` is a `tsquery`
/// such as `wire:* & speak:*`. The text-search vector is computed per row at query time (there
/// is no stored vector and no GIN index), the classic mistake this strategy teaches: every
/// search reads and tokenises the whole table, around a hundred milliseconds for 10k products.
pub const SEARCH_FULL_SCAN_SQL: &str = "SELECT id, sku, name, category, base_price_cents AS list_price_cents, stock \
     FROM products WHERE to_tsvector('english', name || ' ' || description) @@ to_tsquery('english', $1) \
     ORDER BY lower(name), id LIMIT $2";

/// The statement and its `$1` pattern for searching `q` with `strategy`. The full-text
/// pattern is empty when `q` has no word characters: nothing can match then.
pub fn search_statement(strategy: SearchStrategy, q: &str) -> (&'static str, String) {
    match strategy {
        SearchStrategy::Indexed => (SEARCH_INDEXED_SQL, format!("{}%", escape_like(q).to_lowercase())),
        SearchStrategy::FullScan => (SEARCH_FULL_SCAN_SQL, prefix_tsquery(q)),
    }
}

/// Every run of letters and digits in `q` as a prefix term, all required. Only alphanumeric
/// characters reach the `tsquery`, so no input can form query syntax.
fn prefix_tsquery(q: &str) -> String {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| format!("{}:*", word.to_lowercase()))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// Escapes LIKE wildcards (backslash is PostgreSQL's default LIKE escape) so `q` matches literally.
fn escape_like(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Cheap liveness of the business path: no database, no worker pool.
#[utoipa::path(get, path = "/api/ping", tag = "shop", responses((status = 200, body = Pong)))]
pub async fn ping() -> Json<Pong> {
    Json(Pong { ok: true })
}

/// Browses the catalog, optionally within one category, in id order.
#[utoipa::path(get, path = "/api/products", tag = "shop", params(ListQuery), responses(
    (status = 200, body = ProductPage),
    (status = 400, body = ErrorBody, description = "Unknown category, parameter out of range or unknown parameter"),
    (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
))]
pub async fn list_products(
    State(app): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<ProductPage>, ApiError> {
    let query = params::query(query, &["category", "limit", "offset"])?;
    let limit = params::bounded_u32(&query, "limit", 1, 100, 20)?;
    let offset = params::bounded_u32(&query, "offset", 0, 100_000, 0)?;
    let category = query.get("category").map(|c| c.trim()).filter(|c| !c.is_empty());
    if let Some(category) = category
        && !app.pricing.book().has_category(category)
    {
        return Err(ApiError::field(
            "category",
            "enum",
            format!(
                "unknown category; expected one of: {}",
                app.pricing.book().categories().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let config = app.config();
    let mut conn = app.conn(&config).await?;
    let items: Vec<ProductSummary> = match category {
        Some(category) => {
            sqlx::query_as(
                "SELECT id, sku, name, category, base_price_cents AS list_price_cents, stock \
                 FROM products WHERE category = $1 ORDER BY id LIMIT $2 OFFSET $3",
            )
            .bind(category)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(&mut *conn)
            .instrument(query_span("SELECT products by category"))
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT id, sku, name, category, base_price_cents AS list_price_cents, stock \
                 FROM products ORDER BY id LIMIT $1 OFFSET $2",
            )
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(&mut *conn)
            .instrument(query_span("SELECT products page"))
            .await
        }
    }
    .map_err(db_error)?;
    let full_page = items.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Json(ProductPage {
        next_offset: full_page.then(|| offset.saturating_add(limit)),
        items,
        limit,
        offset,
        currency: CURRENCY.to_owned(),
    }))
}

/// Finds products by name (and, under the `full_scan` strategy, by description).
#[utoipa::path(get, path = "/api/products/search", tag = "shop", params(SearchQuery), responses(
    (status = 200, body = SearchResults),
    (status = 400, body = ErrorBody, description = "Missing, empty or too long `q`, or `limit` out of range"),
    (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
))]
pub async fn search_products(
    State(app): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<SearchResults>, ApiError> {
    let query = params::query(query, &["q", "limit"])?;
    let limit = params::bounded_u32(&query, "limit", 1, 100, 20)?;
    let raw = query.get("q").ok_or_else(|| ApiError::field("q", "required", "`q` is required"))?;
    // The length as sent, as the OpenAPI document's `maxLength` counts it; blanks around it are
    // then ignored.
    if raw.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::field("q", "maxLength", format!("must have at most {MAX_QUERY_CHARS} characters")));
    }
    let q = raw.trim();
    if q.is_empty() {
        return Err(ApiError::field("q", "minLength", "must have at least 1 character besides whitespace"));
    }
    // PostgreSQL text cannot hold NUL: the query would fail in the database, a 500.
    if q.contains('\0') {
        return Err(ApiError::field("q", "pattern", "must not contain a NUL character"));
    }
    let config = app.config();
    let strategy = config.search.strategy;
    let (sql, pattern) = search_statement(strategy, q);
    if pattern.is_empty() {
        return Ok(Json(SearchResults {
            query: q.to_owned(),
            items: Vec::new(),
            limit,
            currency: CURRENCY.to_owned(),
        }));
    }
    let mut conn = app.conn(&config).await?;
    app.metrics.search_queries.with_label_values(&[strategy.as_str()]).inc();
    // Not prepared: each search is planned with its pattern, so a prefix becomes an index range.
    let items: Vec<ProductSummary> = sqlx::query_as(sql)
        .bind(pattern)
        .bind(i64::from(limit))
        .persistent(false)
        .fetch_all(&mut *conn)
        .instrument(match strategy {
            SearchStrategy::Indexed => query_span("SELECT products name prefix"),
            SearchStrategy::FullScan => query_span("SELECT products full-text scan"),
        })
        .await
        .map_err(db_error)?;
    Ok(Json(SearchResults { query: q.to_owned(), items, limit, currency: CURRENCY.to_owned() }))
}

/// The product page.
#[utoipa::path(get, path = "/api/products/{id}", tag = "shop",
    params(("id" = i64, Path, description = "Product id", minimum = 1)),
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody, description = "`id` is not a positive integer"),
        (status = 404, body = ErrorBody, description = "No such product"),
        (status = 503, body = ErrorBody, description = "Database or workers saturated; see Retry-After"),
    ))]
pub async fn get_product(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Product>, ApiError> {
    let id = params::path_id(id, "id")?;
    let config = app.config();
    let row: Option<ProductRow> = {
        let mut conn = app.conn(&config).await?;
        sqlx::query_as(
            "SELECT id, sku, name, description, category, base_price_cents AS list_price_cents, stock \
             FROM products WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .instrument(query_span("SELECT products by id"))
        .await
        .map_err(db_error)?
        // The connection goes back before pricing, which may take a while.
    };
    let row = row.ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    let price = app.pricing.price(config.pricing.algorithm, vec![row.id]).await?;
    let price_cents = price.first().copied().unwrap_or(row.list_price_cents);
    Ok(Json(Product {
        id: row.id,
        sku: row.sku,
        name: row.name,
        description: row.description,
        category: row.category,
        list_price_cents: row.list_price_cents,
        price_cents,
        currency: CURRENCY.to_owned(),
        stock: row.stock,
        in_stock: row.stock > 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(search_statement(SearchStrategy::Indexed, "Wire_less%").1, "wire\\_less\\%%");
        assert_eq!(search_statement(SearchStrategy::FullScan, "Wire_less%").1, "wire:* & less:*");
        assert_eq!(search_statement(SearchStrategy::FullScan, "a'b:*|!(c)").1, "a:* & b:* & c:*");
        assert_eq!(search_statement(SearchStrategy::FullScan, "%&*").1, "");
    }
}
