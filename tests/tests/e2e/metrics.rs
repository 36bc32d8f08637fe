//! `GET /metrics`: Prometheus text with per-channel series of requests, error codes, latency,
//! SQL statements per request, rate-limit refusals and cost spent.
//!
//! The recorder is process-wide and the suite's tests run at once, so every check compares a
//! scrape before with one after: a series grows by at least what this test sent.

use std::collections::BTreeMap;

use e2e::{Client, StatusCode, spawn_app_with};
use gateway::Config;
use serde_json::json;

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape; parsing fails the test on any line that is not Prometheus text.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples of `name` whose labels include every pair of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|line| line == format!("# TYPE {name} {kind}"))
    }
}

async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("a body");
    let samples = text
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not Prometheus text: {line:?}")))
        .collect();
    Scrape { text, samples }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `name value` or `name{k="v",…} value`, an optional timestamp after the value.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            if let Some((i, '}')) = chars.peek().copied() {
                chars.next();
                rest = &after[i + 1..];
                break;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if !is_name(&key) || chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.peek().copied()? {
                (_, ',') => {
                    chars.next();
                }
                (_, '}') => {}
                _ => return None,
            }
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = parse_value(fields.next()?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Asserts that `name{labels}` grew by at least `by` between the scrapes.
fn assert_grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)], by: f64) {
    let (was, now) = (before.sum(name, labels), after.sum(name, labels));
    assert!(
        now - was >= by,
        "{name}{labels:?} grew by {} (from {was} to {now}), expected at least {by}",
        now - was
    );
}

/// 40 aliased fields: over the 30 aliases allowed, refused before any SQL.
fn too_many_aliases() -> String {
    let fields: Vec<String> = (0..40)
        .map(|i| format!("a{i}: channel {{ code }}"))
        .collect();
    format!("{{ {} }}", fields.join(" "))
}

#[tokio::test]
async fn metrics_count_requests_errors_and_statements_per_channel() {
    // The database path: statements are what this test counts (the read model would answer
    // from memory what another test already read).
    let own = spawn_app_with(|config: &mut Config| {
        config.read_path.read_model = false;
        config.read_path.response_cache = false;
    })
    .await;
    let app = e2e::SharedApp {
        url: own.gateway.url(),
        database_url: own.database_url.clone(),
        auth: own.gateway.state.auth.clone(),
    };
    let before = scrape(&app.url).await;

    let web = Client::new(&app.url).channel("web");
    let pos = Client::new(&app.url).channel("pos");
    for client in [&web, &pos] {
        for _ in 0..3 {
            client.query("{ channel { code } }", json!({})).await.data();
        }
        client
            .query(
                "{ products(first: 3) { nodes { id variants { sku } } } }",
                json!({}),
            )
            .await
            .data();
        let complex = client.query(&too_many_aliases(), json!({})).await;
        assert_eq!(complex.error_codes(), ["QUERY_TOO_COMPLEX"]);
        assert_eq!(complex.status, StatusCode::OK, "legacy JSON: 200");
    }
    let garbage = Client::new(&app.url)
        .channel("web")
        .token("garbage.not-a.token")
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert_eq!(garbage.error_codes(), ["UNAUTHENTICATED"]);
    let stranger = Client::new(&app.url)
        .channel("evil-channel-7f3a")
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(stranger.error_codes(), ["UNKNOWN_CHANNEL"]);

    let after = scrape(&app.url).await;
    for (name, kind) in [
        ("gateway_requests_total", "counter"),
        ("gateway_errors_total", "counter"),
        ("gateway_cost_spent_total", "counter"),
        ("gateway_request_duration_seconds", "histogram"),
        ("gateway_sql_statements_per_request", "histogram"),
    ] {
        assert!(after.has_type(name, kind), "# TYPE {name} {kind}");
    }
    for channel in ["web", "pos"] {
        let ch = ("channel", channel);
        // 3 + 1 answered, 1 refused under application/json (200).
        assert_grew(
            &before,
            &after,
            "gateway_requests_total",
            &[ch, ("operation_type", "query"), ("status", "200")],
            5.0,
        );
        assert_grew(
            &before,
            &after,
            "gateway_errors_total",
            &[ch, ("code", "QUERY_TOO_COMPLEX")],
            1.0,
        );
        assert_grew(
            &before,
            &after,
            "gateway_request_duration_seconds_count",
            &[ch],
            5.0,
        );
        // Every request is observed; the answered ones ran SQL (channel, products, variants).
        assert_grew(
            &before,
            &after,
            "gateway_sql_statements_per_request_count",
            &[ch],
            5.0,
        );
        assert_grew(
            &before,
            &after,
            "gateway_sql_statements_per_request_sum",
            &[ch],
            4.0 + 2.0,
        );
        // 3 × `channel` (1 each) and the product page (3 products + 3 × 5 variant lists).
        assert_grew(
            &before,
            &after,
            "gateway_cost_spent_total",
            &[ch],
            3.0 + 1.0,
        );
    }
    let unknown = ("channel", "unknown");
    assert_grew(
        &before,
        &after,
        "gateway_requests_total",
        &[unknown, ("status", "401")],
        1.0,
    );
    assert_grew(
        &before,
        &after,
        "gateway_errors_total",
        &[unknown, ("code", "UNAUTHENTICATED")],
        1.0,
    );
    assert_grew(
        &before,
        &after,
        "gateway_errors_total",
        &[unknown, ("code", "UNKNOWN_CHANNEL")],
        1.0,
    );
    // Bounded labels: a header's text never becomes a label value.
    assert!(
        !after.text.contains("evil-channel"),
        "a raw X-Channel reached the labels"
    );
    let channels: Vec<&str> = after
        .samples
        .iter()
        .filter(|s| s.name.starts_with("gateway_"))
        .filter_map(|s| s.labels.get("channel").map(String::as_str))
        .collect();
    assert!(
        channels
            .iter()
            .all(|c| ["web", "mobile", "pos", "b2b", "unknown", "other"].contains(c)),
        "{channels:?}"
    );
    // The duration histogram has its buckets, 1 ms to 10 s.
    for le in ["0.001", "10", "+Inf"] {
        assert!(
            after.sum(
                "gateway_request_duration_seconds_bucket",
                &[("channel", "web"), ("le", le)]
            ) > 0.0,
            "bucket le={le}"
        );
    }
}

#[tokio::test]
async fn refusals_by_the_rate_and_by_the_cost_budget_are_counted_apart() {
    // Web allows one request at once; pos's cost budget holds 3 points, restored 1 a second.
    let app = spawn_app_with(|config: &mut Config| {
        config.limits.enabled = true;
        config.redis_url = None;
        let web = config.limits.channels.get_mut("web").expect("web");
        web.requests_per_second = 1;
        web.burst = 1;
        let pos = config.limits.channels.get_mut("pos").expect("pos");
        pos.cost_bucket = 3;
        pos.cost_restore_per_second = 1;
        pos.max_cost_per_operation = 3;
    })
    .await;
    let url = app.gateway.url();
    let before = scrape(&url).await;

    let web = Client::new(&url).channel("web");
    web.query("{ channel { code } }", json!({})).await.data();
    let refused = web.query("{ channel { code } }", json!({})).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error_codes(), ["RATE_LIMITED"]);

    let pos = Client::new(&url).channel("pos");
    let two = "{ a: channel { code } b: channel { code } }";
    pos.query(two, json!({})).await.data();
    let over_budget = pos.query(two, json!({})).await;
    assert_eq!(over_budget.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over_budget.error_codes(), ["RATE_LIMITED"]);

    // This gateway serves the same process-wide series as every other.
    let after = scrape(&url).await;
    for (channel, kind) in [("web", "rate"), ("pos", "cost")] {
        let ch = ("channel", channel);
        assert_grew(
            &before,
            &after,
            "gateway_rate_limited_total",
            &[ch, ("kind", kind)],
            1.0,
        );
        assert_grew(
            &before,
            &after,
            "gateway_errors_total",
            &[ch, ("code", "RATE_LIMITED")],
            1.0,
        );
        assert_grew(
            &before,
            &after,
            "gateway_requests_total",
            &[ch, ("status", "429")],
            1.0,
        );
    }
    assert_grew(
        &before,
        &after,
        "gateway_cost_spent_total",
        &[("channel", "pos")],
        2.0,
    );
    app.gateway.stop().await.unwrap();
}

#[test]
fn the_line_parser_refuses_what_is_not_prometheus_text() {
    let sample = parse_line(r#"a_total{x="1",y="q\"uote"} 3"#).unwrap();
    assert_eq!(sample.labels["y"], "q\"uote");
    assert_eq!(sample.value, 3.0);
    assert!(parse_line("plain 1.5 1700000000000").is_some());
    assert!(parse_line(r#"h_bucket{le="+Inf"} 2"#).is_some());
    for bad in [
        "no value",
        "1bad 1",
        r#"a{x=1} 1"#,
        r#"a{x="1" 1"#,
        "a 1 2 3",
        "a notanumber",
    ] {
        assert!(parse_line(bad).is_none(), "{bad}");
    }
}
