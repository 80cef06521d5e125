//! Test scaffolding every test binary of the workspace shares: a fresh PostgreSQL database per
//! test ([`TestDb`]) on the server `DATABASE_URL` names, and the stack's keys generated once per
//! test binary ([`signer`], [`public_keys`]). A dev-dependency only.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use service_kit::{JwtKeys, JwtSigner};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The server tests create their databases in when `DATABASE_URL` is unset: the local trust one
/// `scripts/ensure-postgres.sh` starts.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The stack's private key in tests (the orchestrator's side): one per test binary, so tokens
/// minted anywhere in it verify against [`public_keys`]. Services get only the public half.
pub fn signer() -> &'static Arc<JwtSigner> {
    static SIGNER: OnceLock<Arc<JwtSigner>> = OnceLock::new();
    SIGNER.get_or_init(|| Arc::new(JwtSigner::generate().expect("generate the test stack's Ed25519 key")))
}

/// What every service under test verifies tokens with.
pub fn public_keys() -> JwtKeys {
    signer().verifier()
}

/// The admin connection tests create and drop their databases on: `DATABASE_URL`, else
/// [`DEFAULT_ADMIN_URL`]. Read here, never set.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database name replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = base[scheme_end..].find('/').map_or(base, |slash| &base[..scheme_end + slash]);
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// [`admin_url`] pointed at database `name`.
pub fn database_url(name: &str) -> String {
    with_database(&admin_url(), name)
}

/// Creates the empty database `name` on the admin connection. `name` is the caller's own
/// identifier: CREATE DATABASE takes no binds.
pub async fn create_database(name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(&admin_url()).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await?;
    Ok(())
}

/// Drops `name` if it exists, closing whatever connections a service under test still holds.
pub async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(&admin_url()).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

/// A database that exists for one test, named `<prefix>_<uuid>`, dropped (WITH FORCE) when this
/// guard goes. Hold it after the services that use it, so they stop before it is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        create_database(&name).await.expect("create a test database (is PostgreSQL up? DATABASE_URL?)");
        let url = database_url(&name);
        Self { name, url }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connect to the test database")
    }

    /// The single `bigint` an SQL query such as `SELECT count(*) ...` returns.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&mut self.connect().await).await.expect("scalar query")
    }
}

impl Drop for TestDb {
    // A database left behind should show in the test output, and a panic in drop would abort.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        let name = self.name.clone();
        // `drop` cannot await, and the test's runtime may be busy or shutting down: a thread with
        // a small runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(drop_database(&name)).map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Polls `check` every 25 ms until it returns `Some`, failing the test after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `(field, rule)` of each detail of a JSON error body (`{"error": {"details": [...]}}`).
pub fn details(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| (e["field"].as_str().unwrap_or("").to_owned(), e["rule"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses the Prometheus text format: the sum of the samples of `name` carrying every label pair.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if all { value.parse::<f64>().ok() } else { None }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }

    #[test]
    fn one_key_pair_per_test_binary() {
        assert!(Arc::ptr_eq(signer(), signer()));
        assert_eq!(public_keys().to_pem(), signer().verifier().to_pem());
    }
}
