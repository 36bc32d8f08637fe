//! GraphiQL without the internet: the page at `GET /graphql` (for browsers) and the assets it
//! loads, compiled into the binary and served at `GET /graphql/assets/{file}`. Nothing is
//! fetched from a CDN, so the IDE works in store networks and air-gapped deployments.
//!
//! The vendored files, their pinned versions, their licenses and how to update them are in
//! `gateway/assets/graphiql/README.md`. Asset names carry the version, so they are served as
//! immutable and a version bump changes every URL.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::errors::code;
use crate::transport::{ResponseMedia, request_error};

// Versions as macros so that asset names and the page can be assembled with `concat!`.
macro_rules! graphiql_version {
    () => {
        "3.9.0"
    };
}
macro_rules! react_version {
    () => {
        "18.3.1"
    };
}
macro_rules! assets_path {
    () => {
        "/graphql/assets/"
    };
}
macro_rules! graphiql_js {
    () => {
        concat!("graphiql-", graphiql_version!(), ".min.js")
    };
}
macro_rules! graphiql_css {
    () => {
        concat!("graphiql-", graphiql_version!(), ".min.css")
    };
}
macro_rules! react_js {
    () => {
        concat!("react-", react_version!(), ".production.min.js")
    };
}
macro_rules! react_dom_js {
    () => {
        concat!("react-dom-", react_version!(), ".production.min.js")
    };
}
macro_rules! graphiql_license {
    () => {
        concat!("LICENSE.graphiql-", graphiql_version!(), ".txt")
    };
}
macro_rules! react_license {
    () => {
        concat!("LICENSE.react-", react_version!(), ".txt")
    };
}
macro_rules! react_dom_license {
    () => {
        concat!("LICENSE.react-dom-", react_version!(), ".txt")
    };
}

/// The pinned GraphiQL version.
pub const GRAPHIQL_VERSION: &str = graphiql_version!();
/// The pinned React and ReactDOM version.
pub const REACT_VERSION: &str = react_version!();
/// Where the assets are served; the route is `{ASSETS_PATH}{file}`.
pub const ASSETS_PATH: &str = assets_path!();

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: graphiql_js!(),
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/graphiql/graphiql.min.js"),
    },
    Asset {
        name: graphiql_css!(),
        content_type: CSS,
        body: include_bytes!("../assets/graphiql/graphiql.min.css"),
    },
    Asset {
        name: react_js!(),
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/graphiql/react.production.min.js"),
    },
    Asset {
        name: react_dom_js!(),
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    },
    Asset {
        name: graphiql_license!(),
        content_type: TEXT,
        body: include_bytes!("../assets/graphiql/LICENSE.graphiql"),
    },
    Asset {
        name: react_license!(),
        content_type: TEXT,
        body: include_bytes!("../assets/graphiql/LICENSE.react"),
    },
    Asset {
        name: react_dom_license!(),
        content_type: TEXT,
        body: include_bytes!("../assets/graphiql/LICENSE.react-dom"),
    },
];

/// The GraphiQL page: local assets only, a fetcher to `/graphql` and, for subscriptions, to this
/// host's `/graphql/ws` (graphql-transport-ws; GraphiQL's bundle carries the graphql-ws client),
/// and the headers editor open, preset with `X-Channel`.
pub const PAGE: &str = concat!(
    r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Commerce gateway · GraphiQL</title>
<!--
  GraphiQL "#,
    graphiql_version!(),
    " and React ",
    react_version!(),
    r#", served by this gateway (no CDN). MIT licensed:
  "#,
    assets_path!(),
    graphiql_license!(),
    "\n  ",
    assets_path!(),
    react_license!(),
    "\n  ",
    assets_path!(),
    react_dom_license!(),
    r#"
-->
<link rel="license" href=""#,
    assets_path!(),
    graphiql_license!(),
    r#"">
<link rel="license" href=""#,
    assets_path!(),
    react_license!(),
    r#"">
<link rel="license" href=""#,
    assets_path!(),
    react_dom_license!(),
    r#"">
<link rel="stylesheet" href=""#,
    assets_path!(),
    graphiql_css!(),
    r#"">
<style>
  html, body { height: 100%; margin: 0; }
  #graphiql { height: 100vh; }
</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript. Without it, POST GraphQL requests to /graphql.</noscript>
<script src=""#,
    assets_path!(),
    react_js!(),
    r#""></script>
<script src=""#,
    assets_path!(),
    react_dom_js!(),
    r#""></script>
<script src=""#,
    assets_path!(),
    graphiql_js!(),
    r#""></script>
<script>
  (function () {
    // Subscriptions go over this gateway's own socket (same host, ws or wss as the page); the
    // headers editor's Authorization and X-Channel travel in connection_init.
    var socket = new URL("/graphql/ws", location.href);
    socket.protocol = socket.protocol === "https:" ? "wss:" : "ws:";
    var fetcher = GraphiQL.createFetcher({
      url: "/graphql",
      subscriptionUrl: socket.href,
      enableIncrementalDelivery: false,
      headers: { accept: "application/graphql-response+json, application/json" },
    });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        isHeadersEditorEnabled: true,
        defaultHeaders: JSON.stringify({ "X-Channel": "web" }, null, 2),
        defaultEditorToolsVisibility: "headers",
      })
    );
  })();
</script>
</body>
</html>
"#
);

/// `GET /graphql/assets/{file}`: one embedded asset, or a coded 404.
pub async fn asset(file: Result<Path<String>, PathRejection>) -> Response {
    let found = file
        .ok()
        .and_then(|Path(name)| ASSETS.iter().find(|a| a.name == name));
    let Some(asset) = found else {
        return request_error(
            StatusCode::NOT_FOUND,
            ResponseMedia::Json,
            code::NOT_FOUND,
            "no such GraphiQL asset; the page at GET /graphql names the ones served",
        );
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str) -> &'static [u8] {
        ASSETS.iter().find(|a| a.name == name).unwrap().body
    }

    #[test]
    fn the_page_names_every_asset_and_nothing_remote() {
        for asset in ASSETS {
            let path = format!("{ASSETS_PATH}{}", asset.name);
            assert!(PAGE.contains(&format!("\"{path}\"")), "{path}");
        }
        for remote in ["http://", "https://", "//", "ws://", "wss://"] {
            assert!(!PAGE.contains(&format!("\"{remote}")), "{remote}");
        }
        // Subscriptions: this host's socket, never another's.
        assert!(PAGE.contains("subscriptionUrl: socket.href"));
        assert!(PAGE.contains("new URL(\"/graphql/ws\", location.href)"));
    }

    #[test]
    fn the_vendored_files_are_the_pinned_versions() {
        let react = String::from_utf8_lossy(body(react_js!()));
        assert!(react.contains(&format!("version=\"{REACT_VERSION}\"")));
        let react_dom = String::from_utf8_lossy(body(react_dom_js!()));
        assert!(react_dom.contains(&format!("\"{REACT_VERSION}\"")));
        let graphiql = String::from_utf8_lossy(body(graphiql_js!()));
        assert!(
            graphiql.contains("GraphiQL=t(e.React,e.ReactDOM)"),
            "a UMD build"
        );
        for license in [graphiql_license!(), react_license!(), react_dom_license!()] {
            assert!(String::from_utf8_lossy(body(license)).starts_with("MIT License"));
        }
        let readme = include_str!("../assets/graphiql/README.md");
        assert!(readme.contains(&format!("| `graphiql` | {GRAPHIQL_VERSION} |")));
        assert!(readme.contains(&format!("| `react` | {REACT_VERSION} |")));
    }
}
