//! The pricing engine. A product's price follows its list price's rank within its category:
//! the cheapest items get up to 10% off, the priciest carry a 5% premium, and prices end in .99.
//!
//! The price book (id → list price, category) is loaded into memory at start. The `efficient`
//! algorithm looks the rank up in a sorted array built once; the `quadratic` one is release
//! 2.4's regression: the rank table is rebuilt on every call, sorting the category's prices once
//! per member (O(n² log n)), and that CPU is burned on the blocking pool, not on async threads.

use std::collections::HashMap;
use std::sync::Arc;

use nix::time::{ClockId, clock_gettime};
use service_kit::ApiError;
use sqlx::PgConnection;
use tracing::Instrument as _;

use crate::config::PricingAlgorithm;
use crate::db::query_span;
use crate::metrics::ShopMetrics;

/// Multiplier range in basis points: rank 0 (cheapest) pays 90%, the top rank 105%.
const CHEAPEST_BP: i64 = 9_000;
const SPREAD_BP: i64 = 1_500;

#[derive(Debug, Clone, Copy)]
struct Member {
    id: i64,
    list_cents: i64,
}

#[derive(Debug)]
struct Category {
    name: String,
    /// In id order, as loaded; what the quadratic path walks.
    members: Vec<Member>,
    /// List prices in ascending order; what the efficient path searches.
    sorted_list_cents: Vec<i64>,
}

/// Every product's list price and category, grouped for ranking.
#[derive(Debug, Default)]
pub struct PriceBook {
    index: HashMap<i64, (usize, i64)>,
    categories: Vec<Category>,
}

impl PriceBook {
    /// Builds the book from `(id, category, list price in cents)` rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (i64, String, i64)>) -> Self {
        let mut book = Self::default();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (id, category, list_cents) in rows {
            let slot = *by_name.entry(category.clone()).or_insert_with(|| {
                book.categories.push(Category { name: category, members: Vec::new(), sorted_list_cents: Vec::new() });
                book.categories.len() - 1
            });
            book.categories[slot].members.push(Member { id, list_cents });
        }
        for category in &mut book.categories {
            category.members.sort_by_key(|m| m.id);
            category.sorted_list_cents = category.members.iter().map(|m| m.list_cents).collect();
            category.sorted_list_cents.sort_unstable();
        }
        // Slots are final only after sorting categories by name, so the index is built last.
        book.categories.sort_by(|a, b| a.name.cmp(&b.name));
        book.index = book
            .categories
            .iter()
            .enumerate()
            .flat_map(|(slot, c)| c.members.iter().map(move |m| (m.id, (slot, m.list_cents))))
            .collect();
        book
    }

    /// Loads every product from the database.
    pub async fn load(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT id, category, base_price_cents FROM products ORDER BY id")
                .fetch_all(conn)
                .instrument(query_span("SELECT products price book"))
                .await?;
        Ok(Self::from_rows(rows))
    }

    /// Category names, sorted.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(|c| c.name.as_str())
    }

    pub fn has_category(&self, name: &str) -> bool {
        self.categories.iter().any(|c| c.name == name)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Price by binary search in the category's sorted list prices.
    fn price_efficient(&self, id: i64) -> Option<i64> {
        let &(slot, list_cents) = self.index.get(&id)?;
        let category = &self.categories[slot];
        let cheaper = category.sorted_list_cents.partition_point(|p| *p < list_cents);
        Some(price_from_rank(list_cents, cheaper, category.members.len()))
    }

    /// Same price, but the category's rank table is rebuilt first, as release 2.4 does after
    /// the cache was dropped: for every member the category's prices are collected and sorted
    /// again to find where the member lands.
    fn price_quadratic(&self, id: i64) -> Option<i64> {
        let &(slot, _) = self.index.get(&id)?;
        let category = &self.categories[slot];
        let mut rank_table: Vec<(i64, usize)> = Vec::with_capacity(category.members.len());
        for member in &category.members {
            let mut prices: Vec<i64> = category.members.iter().map(|m| m.list_cents).collect();
            prices.sort_unstable();
            let cheaper = prices.partition_point(|p| *p < member.list_cents);
            rank_table.push((member.id, cheaper));
        }
        let (_, cheaper) = rank_table.iter().find(|(member_id, _)| *member_id == id)?;
        let list_cents = category.members.iter().find(|m| m.id == id)?.list_cents;
        Some(price_from_rank(list_cents, *cheaper, category.members.len()))
    }
}

/// `cheaper` of the category's `members` have a lower list price than this one.
fn price_from_rank(list_cents: i64, cheaper: usize, members: usize) -> i64 {
    let top = i64::try_from(members.saturating_sub(1).max(1)).unwrap_or(i64::MAX);
    let rank = i64::try_from(cheaper).unwrap_or(i64::MAX).min(top);
    let multiplier_bp = CHEAPEST_BP + SPREAD_BP * rank / top;
    let raw = list_cents.saturating_mul(multiplier_bp) / 10_000;
    // Charm pricing: whole euros end in .99; prices under a euro stay as computed.
    if raw >= 100 { raw / 100 * 100 + 99 } else { raw.max(1) }
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_seconds() -> f64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

/// Prices product lines with the configured algorithm and accounts for the CPU it took.
#[derive(Debug)]
pub struct PricingEngine {
    book: Arc<PriceBook>,
    metrics: ShopMetrics,
}

impl PricingEngine {
    pub fn new(book: PriceBook, metrics: ShopMetrics) -> Self {
        Self { book: Arc::new(book), metrics }
    }

    pub fn book(&self) -> &PriceBook {
        &self.book
    }

    /// The price of each product in `ids`, in order.
    pub async fn price(&self, algorithm: PricingAlgorithm, ids: Vec<i64>) -> Result<Vec<i64>, ApiError> {
        match algorithm {
            // Microseconds of work: cheaper inline than a hop to the blocking pool.
            PricingAlgorithm::Efficient => price_measured(&self.book, &self.metrics, algorithm, &ids),
            PricingAlgorithm::Quadratic => {
                let book = self.book.clone();
                let metrics = self.metrics.clone();
                let span =
                    tracing::info_span!("pricing.rank_table", pricing.algorithm = "quadratic", lines = ids.len());
                tokio::task::spawn_blocking(move || span.in_scope(|| price_measured(&book, &metrics, algorithm, &ids)))
                    .await
                    .map_err(|err| ApiError::Internal(anyhow::Error::new(err).context("pricing task failed")))?
            }
        }
    }
}

fn price_measured(
    book: &PriceBook,
    metrics: &ShopMetrics,
    algorithm: PricingAlgorithm,
    ids: &[i64],
) -> Result<Vec<i64>, ApiError> {
    let start = thread_cpu_seconds();
    let prices: Option<Vec<i64>> = ids
        .iter()
        .map(|&id| match algorithm {
            PricingAlgorithm::Efficient => book.price_efficient(id),
            PricingAlgorithm::Quadratic => book.price_quadratic(id),
        })
        .collect();
    let spent = (thread_cpu_seconds() - start).max(0.0);
    metrics.pricing_cpu_seconds.with_label_values(&[algorithm.as_str()]).inc_by(spent);
    metrics.pricing_lines.with_label_values(&[algorithm.as_str()]).inc_by(ids.len() as u64);
    prices.ok_or_else(|| {
        // Products are only created by seeding, before the book is loaded.
        ApiError::Internal(anyhow::anyhow!("a product of {ids:?} is missing from the price book"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(n: i64) -> PriceBook {
        PriceBook::from_rows((1..=n).map(|id| {
            let category = if id % 2 == 0 { "Books" } else { "Garden" };
            (id, category.to_owned(), 500 + (id * 7919) % 20_000)
        }))
    }

    #[test]
    fn both_algorithms_agree_on_every_price() {
        let book = book(301);
        for id in 1..=301 {
            assert_eq!(book.price_efficient(id), book.price_quadratic(id), "product {id}");
        }
        assert_eq!(book.price_efficient(999), None);
        assert_eq!(book.price_quadratic(999), None);
    }

    #[test]
    fn cheapest_gets_the_discount_and_priciest_the_premium() {
        let book = PriceBook::from_rows([(1, "A".into(), 10_000), (2, "A".into(), 20_000), (3, "A".into(), 30_000)]);
        assert_eq!(book.price_efficient(1), Some(9_099)); // 90% of 100.00 → 90.00 → 90.99
        assert_eq!(book.price_efficient(2), Some(19_599)); // 97.5% of 200.00 → 195.00 → 195.99
        assert_eq!(book.price_efficient(3), Some(31_599)); // 105% of 300.00 → 315.00 → 315.99
    }

    #[test]
    fn equal_list_prices_get_equal_prices() {
        let book = PriceBook::from_rows([(1, "A".into(), 5_000), (2, "A".into(), 5_000), (3, "A".into(), 900)]);
        assert_eq!(book.price_efficient(1), book.price_efficient(2));
        assert_eq!(book.price_quadratic(1), book.price_efficient(2));
    }

    #[test]
    fn single_product_category_is_priced() {
        let book = PriceBook::from_rows([(1, "Solo".into(), 50)]);
        assert_eq!(book.price_efficient(1), Some(45));
        assert!(book.has_category("Solo"));
        assert_eq!(book.categories().collect::<Vec<_>>(), vec!["Solo"]);
    }
}
