//! GraphiQL works without the internet: the page loads only what the gateway serves.

use e2e::{StatusCode, shared_app};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::Value;

/// Every value of `attribute="..."` in the page.
fn attribute_values(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&needle) {
        let before = rest[..start].chars().next_back();
        rest = &rest[start + needle.len()..];
        let end = rest.find('"').expect("a closed attribute");
        // `src=` inside e.g. `data-src=` is another attribute.
        if before.is_none_or(char::is_whitespace) {
            values.push(rest[..end].to_owned());
        }
        rest = &rest[end..];
    }
    values
}

fn expected_content_type(path: &str) -> &'static str {
    if path.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if path.ends_with(".css") {
        "text/css; charset=utf-8"
    } else if path.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        panic!("unexpected asset {path}")
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn graphiql_loads_only_assets_served_by_the_gateway() {
    let app = shared_app();
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/graphql", app.url))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        header(&page, CONTENT_TYPE).starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("GraphiQL"), "{html}");

    // Subscriptions go to this host's own socket, whatever the host is called.
    assert!(
        html.contains("new URL(\"/graphql/ws\", location.href)"),
        "{html}"
    );
    for remote in ["ws://", "wss://"] {
        assert!(!html.contains(remote), "the page names {remote}");
    }

    let scripts = attribute_values(&html, "src");
    let links = attribute_values(&html, "href");
    // Not even an inline `import("https://…")`.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for reference in scripts.iter().chain(&links) {
        assert!(
            !(reference.starts_with("http://")
                || reference.starts_with("https://")
                || reference.starts_with("//")),
            "the page loads {reference} from elsewhere"
        );
    }
    assert!(
        scripts.len() >= 3,
        "React, ReactDOM and GraphiQL: {scripts:?}"
    );
    assert!(
        links.iter().any(|l| l.ends_with(".css")),
        "a stylesheet: {links:?}"
    );
    assert!(
        links.iter().any(|l| l.ends_with(".txt")),
        "the licenses: {links:?}"
    );
    for reference in scripts.iter().chain(&links) {
        assert!(
            reference.starts_with("/graphql/assets/"),
            "{reference} is not one of the gateway's assets"
        );
        let response = http
            .get(format!("{}{reference}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{reference}");
        assert_eq!(
            header(&response, CONTENT_TYPE),
            expected_content_type(reference),
            "{reference}"
        );
        assert_eq!(
            header(&response, CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{reference}"
        );
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{reference} is empty");
    }
}

#[tokio::test]
async fn an_unknown_graphiql_asset_is_a_coded_404() {
    let app = shared_app();
    for name in ["graphiql.min.js", "nope.js", "..%2Fschema.graphql"] {
        let response = reqwest::Client::new()
            .get(format!("{}/graphql/assets/{name}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name}");
        assert!(header(&response, CONTENT_TYPE).starts_with("application/json"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{name}"
        );
    }
}
