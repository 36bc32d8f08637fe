//! What the load drivers share: the storefront's catalog page, a closed-loop HTTP driver
//! (`concurrency` connections, each sending its next request when the last one answered) and
//! the figures it prints.

pub mod gateway;
pub mod scratch;

use std::time::{Duration, Instant};

/// The storefront's catalog page: 20 products with their variants and availability.
pub const CATALOG_PAGE: &str = "query CatalogPage($first: Int!) {
  products(first: $first) {
    edges { cursor node { id slug name category { name } variants { sku options { name value } availability { status quantity } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// The catalog page with the viewer's price of one unit of each variant.
pub const PRICED_CATALOG_PAGE: &str = "query PricedCatalogPage($first: Int!) {
  products(first: $first) {
    edges { cursor node { id slug name category { name } variants { sku options { name value } availability { status quantity } price { unitPrice lineTotal } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// The `POST /graphql` body of `query` with `first: 20`.
pub fn page_body(query: &str) -> String {
    serde_json::json!({ "query": query, "variables": { "first": 20 } }).to_string()
}

/// One request, sent over and over.
#[derive(Clone, Debug)]
pub struct Request {
    /// The endpoint, e.g. `http://127.0.0.1:8080/graphql`.
    pub url: String,
    /// A `POST` body (`application/json`, a GraphQL request); `None` sends a `GET`.
    pub body: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
}

impl Request {
    /// A GraphQL `POST` to `{base}/graphql`.
    pub fn graphql(base: &str, body: String, bearer: Option<String>) -> Self {
        Self {
            url: format!("{base}/graphql"),
            body: Some(body),
            bearer,
        }
    }

    /// The request, ready to send.
    pub fn build(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let request = match &self.body {
            Some(body) => client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body.clone()),
            None => client.get(&self.url),
        };
        match &self.bearer {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// Sends it once and returns the answer as JSON (for preflight checks).
    pub async fn json(&self, client: &reqwest::Client) -> Result<serde_json::Value, String> {
        let response = self.build(client).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }
}

/// Whether a response body reports GraphQL errors (a 200 with `errors` is a failure here).
pub fn has_errors(body: &[u8]) -> bool {
    std::str::from_utf8(body).map_or(true, |text| text.contains("\"errors\":"))
}

/// What one scenario measured (possibly over several segments, see [`Figures::merge`]).
pub struct Figures {
    pub name: String,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Failed requests: transport errors, non-2xx statuses, GraphQL `errors`.
    pub errors: usize,
    /// Of the errors, `429 Too Many Requests`.
    pub rate_limited: usize,
    /// Time spent driving.
    pub elapsed: Duration,
}

impl Figures {
    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get(((self.latencies.len() as f64 * q) as usize).min(last))
            .copied()
            .unwrap_or_default()
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Adds another segment of the same scenario.
    pub fn merge(&mut self, other: Figures) {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.errors += other.errors;
        self.rate_limited += other.rate_limited;
        self.elapsed += other.elapsed;
    }

    /// `name  req/s  p50  p99  (requests, errors)`.
    pub fn print(&self) {
        println!(
            "{:<40} {:>10.0} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} requests, {} errors{})",
            self.name,
            self.per_second(),
            millis(self.p50()),
            millis(self.p99()),
            self.requests(),
            self.errors,
            if self.rate_limited > 0 {
                format!(", {} of them 429", self.rate_limited)
            } else {
                String::new()
            }
        );
    }
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `request` for `duration` over `concurrency` connections, each waiting for its answer
/// before sending the next.
pub async fn drive(
    name: impl Into<String>,
    request: &Request,
    duration: Duration,
    concurrency: usize,
) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let start = Instant::now();
    let deadline = start + duration;
    let graphql = request.body.is_some();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut rate_limited) = (0, 0);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = match request.build(&client).send().await {
                        Ok(response) if response.status().is_success() => {
                            match response.bytes().await {
                                Ok(bytes) => !graphql || !has_errors(&bytes),
                                Err(_) => false,
                            }
                        }
                        Ok(response) => {
                            if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                                rate_limited += 1;
                            }
                            false
                        }
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors, rate_limited)
            })
        })
        .collect();
    let mut figures = Figures {
        name: name.into(),
        latencies: Vec::new(),
        errors: 0,
        rate_limited: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (mut latencies, errors, rate_limited) = worker.await.expect("worker");
        figures.latencies.append(&mut latencies);
        figures.errors += errors;
        figures.rate_limited += rate_limited;
    }
    figures.elapsed = start.elapsed();
    figures.latencies.sort_unstable();
    figures
}

/// `what`'s throughput as a fraction of `base`'s, and its p50 and p99 as multiples of `base`'s.
pub fn print_ratio(label: &str, what: &Figures, base: &Figures) {
    let over = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
    println!(
        "ratio {label:<30} throughput {:.4}, p50 latency x{:.1}, p99 latency x{:.1}",
        what.per_second() / base.per_second().max(f64::EPSILON),
        over(what.p50(), base.p50()),
        over(what.p99(), base.p99())
    );
}

/// A fresh SQLite file in the temp directory, and its removal (with `-wal` and `-shm`).
pub fn fresh_sqlite_file(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{}.db", uuid::Uuid::new_v4().simple()))
}

pub fn remove_sqlite_file(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// `sqlite://<path>?mode=rwc`.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}
