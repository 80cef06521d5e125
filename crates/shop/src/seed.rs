//! Seed data: a catalog of realistic products in twelve categories and a history of past orders,
//! generated set-based in PostgreSQL (deterministic, so every fresh stack looks the same).
//! Seeding runs only on empty tables, under a transaction-scoped advisory lock so two shops
//! starting together do not both seed.

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};
use tracing::Instrument as _;

use crate::db::query_span;

/// Key of the advisory lock that serialises seeding across shop instances.
const SEED_LOCK_KEY: &str = "observastack.shop.seed";

/// What was inserted (zero when the tables already had data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub products: u64,
    pub orders: u64,
    pub order_items: u64,
}

/// Seeds `products` products and `orders` past orders into empty tables; a table that already
/// holds rows is left alone.
pub async fn seed_if_empty(conn: &mut PgConnection, products: u32, orders: u32) -> anyhow::Result<SeedReport> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(SEED_LOCK_KEY)
        .execute(&mut *tx)
        .instrument(query_span("SELECT pg_advisory_xact_lock"))
        .await
        .context("cannot take the seeding lock")?;
    // Bulk statements on a fresh database: no per-statement ceiling (a slow disk may need more
    // than the request-path 10 s), and no JIT, whose compile time exceeds its gain here.
    sqlx::raw_sql("SET LOCAL statement_timeout = 0; SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    let mut report = SeedReport::default();
    let have_products: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)")
        .fetch_one(&mut *tx)
        .instrument(query_span("SELECT products exists"))
        .await?;
    if !have_products && products > 0 {
        report.products = sqlx::query(PRODUCTS_SQL)
            .bind(i64::from(products))
            .execute(&mut *tx)
            .instrument(query_span("INSERT products seed"))
            .await
            .context("cannot seed products")?
            .rows_affected();
    }
    let have_orders: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders)")
        .fetch_one(&mut *tx)
        .instrument(query_span("SELECT orders exists"))
        .await?;
    let any_products = have_products || report.products > 0;
    if !have_orders && orders > 0 && any_products {
        // Checking 250k foreign keys row by row costs more than the insert itself; the usual
        // bulk-load move is to drop them and re-add them, which validates in one join. The
        // table is locked for the transaction, and DDL is transactional: all or nothing.
        sqlx::raw_sql(DROP_ORDER_ITEM_FKS_SQL).execute(&mut *tx).instrument(query_span("ALTER order_items")).await?;
        report.order_items = sqlx::query(ORDERS_SQL)
            .bind(i64::from(orders))
            .execute(&mut *tx)
            .instrument(query_span("INSERT orders seed"))
            .await
            .context("cannot seed orders")?
            .rows_affected();
        sqlx::raw_sql(ADD_ORDER_ITEM_FKS_SQL).execute(&mut *tx).instrument(query_span("ALTER order_items")).await?;
        report.orders = u64::from(orders);
        // Seeded orders carry explicit ids; move the identity past them.
        sqlx::query("SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders))")
            .execute(&mut *tx)
            .instrument(query_span("SELECT setval orders"))
            .await?;
    }
    if report != SeedReport::default() {
        // Fresh statistics, so the planner sees the real table sizes from the first request.
        sqlx::query("ANALYZE products, orders, order_items")
            .execute(&mut *tx)
            .instrument(query_span("ANALYZE"))
            .await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The twelve categories of [`PRODUCTS_SQL`], in its order.
pub const CATEGORIES: [&str; 12] = [
    "Electronics",
    "Books",
    "Home & Kitchen",
    "Garden",
    "Toys",
    "Sports & Outdoors",
    "Clothing",
    "Beauty",
    "Grocery",
    "Office",
    "Pet Supplies",
    "Automotive",
];

/// `$1` products, spread round-robin over twelve categories. Names start with what a shopper
/// types (adjective + product), so prefix search finds them; the brand appears only in the
/// description, which only the full-scan search reads. Prices are skewed towards the cheap
/// end of each category's range and end in .99.
const PRODUCTS_SQL: &str = r#"
WITH cats (idx, category, adjectives, nouns, min_cents, max_cents) AS (VALUES
    (0, 'Electronics',
        ARRAY['Wireless', 'Compact', 'Smart', 'Portable', 'Ultra', 'Noise-Cancelling'],
        ARRAY['Headphones', 'Speaker', 'Charger', 'Keyboard', 'Mouse', 'Monitor', 'Webcam', 'Power Bank', 'Smartwatch', 'Router'],
        1500, 120000),
    (1, 'Books',
        ARRAY['Illustrated', 'Classic', 'Pocket', 'Collected', 'Annotated', 'Bestselling'],
        ARRAY['Novel', 'Cookbook', 'Atlas', 'Biography', 'Field Guide', 'Anthology', 'Workbook', 'Graphic Novel'],
        500, 6000),
    (2, 'Home & Kitchen',
        ARRAY['Stainless', 'Cast-Iron', 'Ceramic', 'Nonstick', 'Electric', 'Bamboo'],
        ARRAY['Kettle', 'Skillet', 'Knife Set', 'Cutting Board', 'Toaster', 'Blender', 'Dutch Oven', 'Mug Set'],
        800, 25000),
    (3, 'Garden',
        ARRAY['Expandable', 'Heavy-Duty', 'Terracotta', 'Solar', 'Raised', 'Self-Watering'],
        ARRAY['Hose', 'Trowel', 'Planter', 'Pruner', 'Rake', 'Watering Can', 'Seed Kit', 'Sprinkler'],
        500, 15000),
    (4, 'Toys',
        ARRAY['Wooden', 'Magnetic', 'Glow-in-the-Dark', 'Musical', 'Giant', 'Deluxe'],
        ARRAY['Puzzle', 'Building Set', 'Plush Bear', 'Kite', 'Board Game', 'Yo-Yo', 'Train Set', 'Doll House'],
        500, 12000),
    (5, 'Sports & Outdoors',
        ARRAY['Ultralight', 'Waterproof', 'Insulated', 'Adjustable', 'Foldable', 'Trail'],
        ARRAY['Yoga Mat', 'Tent', 'Backpack', 'Water Bottle', 'Dumbbell Set', 'Bike Helmet', 'Trekking Poles', 'Sleeping Bag'],
        1000, 40000),
    (6, 'Clothing',
        ARRAY['Organic Cotton', 'Merino', 'Slim-Fit', 'Oversized', 'Recycled', 'Everyday'],
        ARRAY['T-Shirt', 'Hoodie', 'Rain Jacket', 'Sneakers', 'Socks', 'Beanie', 'Jeans', 'Scarf'],
        800, 20000),
    (7, 'Beauty',
        ARRAY['Hydrating', 'Fragrance-Free', 'Vitamin C', 'Gentle', 'Travel-Size', 'Overnight'],
        ARRAY['Face Cream', 'Shampoo', 'Lip Balm', 'Serum', 'Hair Dryer', 'Perfume', 'Sunscreen', 'Nail Kit'],
        400, 15000),
    (8, 'Grocery',
        ARRAY['Organic', 'Single-Origin', 'Cold-Pressed', 'Raw', 'Roasted', 'Artisan'],
        ARRAY['Coffee Beans', 'Olive Oil', 'Green Tea', 'Dark Chocolate', 'Honey', 'Pasta', 'Granola', 'Hot Sauce'],
        200, 4000),
    (9, 'Office',
        ARRAY['Ergonomic', 'Dotted', 'Refillable', 'LED', 'Minimalist', 'Heavy-Duty'],
        ARRAY['Notebook', 'Desk Lamp', 'Stapler', 'Fountain Pen', 'Desk Organizer', 'Office Chair', 'Whiteboard', 'Label Maker'],
        300, 35000),
    (10, 'Pet Supplies',
        ARRAY['Orthopedic', 'Reflective', 'Chew-Proof', 'Automatic', 'Cozy', 'Washable'],
        ARRAY['Dog Leash', 'Cat Tree', 'Pet Bed', 'Chew Toy', 'Food Bowl', 'Litter Box', 'Aquarium', 'Bird Feeder'],
        400, 20000),
    (11, 'Automotive',
        ARRAY['Cordless', 'All-Weather', 'Magnetic', 'Digital', 'Heavy-Duty', 'Universal'],
        ARRAY['Car Vacuum', 'Jump Starter', 'Floor Mats', 'Tire Inflator', 'Dash Cam', 'Wiper Blades', 'Phone Mount', 'Seat Cover'],
        800, 25000)
),
brands (list) AS (
    SELECT ARRAY['Northwind', 'Acme', 'Contoso', 'Fabrikam', 'Lumen', 'Bluebird', 'Summit', 'Everly', 'Kestrel', 'Tailspin']
),
features (list) AS (
    SELECT ARRAY[
        'Built to last, with a two-year warranty.',
        'Ships in recycled, plastic-free packaging.',
        'A customer favourite for everyday use.',
        'Made from bamboo and recycled aluminium.',
        'Designed in Lisbon, assembled in Porto.',
        'Rated 4.6 out of 5 by verified buyers.',
        'Limited edition colourway.',
        'Compact enough for small apartments.',
        'Easy to clean and dishwasher safe where it counts.',
        'Backed by our 60-day no-questions return policy.'
    ]
),
g AS (
    SELECT n, ((n - 1) % 12)::int AS c, ((n - 1) / 12)::int AS k
    FROM generate_series(1::bigint, $1::bigint) AS n
),
named AS (
    SELECT g.n, cats.category, cats.min_cents, cats.max_cents,
           cats.adjectives[1 + g.k % cardinality(cats.adjectives)] AS adjective,
           cats.nouns[1 + (g.k / cardinality(cats.adjectives)) % cardinality(cats.nouns)] AS noun,
           brands.list[1 + ((g.n * 7) % cardinality(brands.list))::int] AS brand,
           features.list[1 + ((g.n * 13) % cardinality(features.list))::int] AS feature,
           upper(left(brands.list[1 + ((g.n * 7) % cardinality(brands.list))::int], 2))
               || '-' || (100 + (g.n * 37) % 900)::text AS model
    FROM g
    JOIN cats ON cats.idx = g.c
    CROSS JOIN brands
    CROSS JOIN features
)
INSERT INTO products (sku, name, description, category, base_price_cents, stock, created_at)
SELECT 'SKU-' || lpad(n::text, 6, '0'),
       adjective || ' ' || noun || ' ' || model,
       brand || ' ' || lower(adjective || ' ' || noun) || ', model ' || model || '. ' || feature,
       category,
       (floor((min_cents + (max_cents - min_cents) * power(((n * 2654435761) % 10007) / 10007.0, 2)) / 100) * 100 + 99)::bigint,
       (20 + (n * 7919) % 481)::int,
       now() - ((n % 720) * interval '1 hour')
FROM named
"#;

/// `$1` past orders over the last 90 days with one to four lines each (2.5 on average),
/// priced at the catalog's list prices. Order ids are explicit so the lines can refer to them
/// in the same statement.
const ORDERS_SQL: &str = r#"
WITH catalog AS (
    SELECT array_agg(id ORDER BY id) AS ids,
           array_agg(base_price_cents ORDER BY id) AS prices,
           count(*) AS n
    FROM products
),
lines AS (
    SELECT o, k,
           catalog.ids[(1 + (o * 7919 + k * 104729) % catalog.n)::int] AS product_id,
           catalog.prices[(1 + (o * 7919 + k * 104729) % catalog.n)::int] AS unit_price_cents,
           CASE WHEN (o * k) % 5 = 0 THEN 2 ELSE 1 END AS quantity
    FROM catalog,
         generate_series(1::bigint, $1::bigint) AS o,
         generate_series(1::bigint, 4::bigint) AS k
    -- A filter rather than a per-order series bound, so the planner estimates rows correctly.
    WHERE k <= 1 + (o * 7) % 4
),
placed AS (
    INSERT INTO orders (id, email, status, total_cents, item_count, created_at)
    SELECT o,
           'customer' || (1 + (o * 31) % 20000)::text || '@example.com',
           CASE WHEN o % 50 = 0 THEN 'cancelled' ELSE 'delivered' END,
           sum(unit_price_cents * quantity)::bigint,
           sum(quantity)::int,
           now() - ((o * 7919) % 129600) * interval '1 minute'
    FROM lines
    GROUP BY o
    RETURNING id
)
INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_cents)
SELECT o, k::int, product_id, quantity, unit_price_cents
FROM lines
"#;

/// The foreign keys of `order_items`, exactly as the initial migration declares them.
const DROP_ORDER_ITEM_FKS_SQL: &str =
    "ALTER TABLE order_items DROP CONSTRAINT order_items_order_id_fkey, DROP CONSTRAINT order_items_product_id_fkey";
const ADD_ORDER_ITEM_FKS_SQL: &str = "ALTER TABLE order_items \
     ADD CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE, \
     ADD CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_categories_are_the_seeds() {
        let seeded: Vec<&str> = PRODUCTS_SQL
            .split("\n    (")
            .filter(|row| row.split(',').next().is_some_and(|idx| idx.parse::<u32>().is_ok()))
            .filter_map(|row| row.split('\'').nth(1))
            .collect();
        assert_eq!(seeded, CATEGORIES);
    }
}
