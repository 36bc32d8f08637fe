//! CORS: which browser origins may call `/graphql` from their pages.
//!
//! Origins are listed per channel (`[cors.channels.web] origins = ["https://shop.example.com"]`),
//! exactly (`scheme://host[:port]`, no `*`). A preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) cannot carry the request's channel (`X-Channel` and the
//! token come with the actual request), so an origin is allowed when any channel lists it;
//! the channel is then decided by the request as for any client. Demo mode also allows
//! `http://localhost:*` and `http://127.0.0.1:*`; production allows no origin unless listed.
//!
//! An allowed origin's preflight is answered `204` with `Access-Control-Allow-Origin` (the
//! origin itself), methods `GET, POST` and headers `content-type, authorization, x-channel`;
//! its actual requests get `Access-Control-Allow-Origin` and the exposed headers. A
//! disallowed origin gets no CORS header at all (its preflight is `403 FORBIDDEN`), so the
//! browser keeps the answer from the page. Tokens travel in `Authorization`, never in
//! cookies, so credentials are never allowed. Every response carries `Vary: Origin`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::errors::code;
use crate::transport::{self, ResponseMedia};

/// `[cors]`: the origins allowed per channel.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// `[cors.channels.<code>] origins = [...]`.
    pub channels: BTreeMap<String, ChannelCors>,
    /// Seconds a browser may reuse a preflight answer (`Access-Control-Max-Age`).
    pub max_age_secs: u64,
}

/// `[cors.channels.<code>]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelCors {
    /// Exact origins, `scheme://host[:port]` (`https://shop.example.com`).
    pub origins: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            channels: BTreeMap::new(),
            max_age_secs: 600,
        }
    }
}

impl CorsConfig {
    /// Every origin is `http(s)://host[:port]`: no wildcard, path, query or trailing slash.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (channel, entry) in &self.channels {
            for origin in &entry.origins {
                if !is_origin(origin) {
                    return Err(ConfigError::Invalid {
                        key: "cors.channels",
                        reason: format!(
                            "[cors.channels.{channel}] origins: {origin:?} is not an origin like \
                             \"https://shop.example.com\" or \"http://localhost:3000\" (scheme \
                             http or https, a host, an optional port; no \"*\", path or \
                             trailing slash)"
                        ),
                    });
                }
            }
        }
        if self.max_age_secs > 86_400 {
            return Err(ConfigError::Invalid {
                key: "cors.max_age_secs",
                reason: "must be 0..=86400".into(),
            });
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with scheme `http` or `https`.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(v6) => match v6.split_once(']') {
            Some((address, after)) => {
                if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
                {
                    return false;
                }
                match after {
                    "" => ("v6", None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => ("v6", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('.')
        && !host.ends_with('.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

/// The allowed origins, resolved once at start.
#[derive(Debug)]
pub struct CorsPolicy {
    /// Listed origins, lowercased (browsers send origins in lowercase).
    origins: HashSet<String>,
    /// Demo mode: `http://localhost:*` and `http://127.0.0.1:*` too.
    local_dev: bool,
    max_age: HeaderValue,
}

/// Methods a cross-origin page may use.
const ALLOW_METHODS: &str = "GET, POST";
/// Request headers a cross-origin page may send besides the CORS-safelisted ones.
const ALLOW_HEADERS: &str =
    "content-type, authorization, x-channel, idempotency-key, if-none-match, cache-control";
/// Response headers a cross-origin page may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str =
    "x-request-id, retry-after, www-authenticate, idempotency-replayed, etag, cache-status";
/// The headers a preflight answer depends on.
const PREFLIGHT_VARY: &str =
    "origin, access-control-request-method, access-control-request-headers";
/// The one path cross-origin pages call.
const GRAPHQL_PATH: &str = "/graphql";

impl CorsPolicy {
    /// The policy of a configuration; `demo` adds the local development origins.
    pub fn new(config: &CorsConfig, demo: bool) -> Self {
        Self {
            origins: config
                .channels
                .values()
                .flat_map(|entry| entry.origins.iter())
                .map(|origin| origin.to_ascii_lowercase())
                .collect(),
            local_dev: demo,
            max_age: HeaderValue::from(config.max_age_secs),
        }
    }

    /// Whether pages of `origin` may call the API (an origin any channel lists).
    pub fn allows(&self, origin: &str) -> bool {
        if self.origins.contains(&origin.to_ascii_lowercase()) {
            return true;
        }
        self.local_dev && is_local_dev_origin(origin)
    }
}

/// `http://localhost` or `http://127.0.0.1`, with any port.
fn is_local_dev_origin(origin: &str) -> bool {
    ["http://localhost", "http://127.0.0.1"].iter().any(|base| {
        origin.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest.strip_prefix(':').is_some_and(|port| {
                    !port.is_empty()
                        && port.chars().all(|c| c.is_ascii_digit())
                        && port.parse::<u16>().is_ok()
                })
        })
    })
}

/// The CORS middleware around every route (see the module documentation).
pub async fn layer(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| policy.allows(o));
    let preflight = request.method() == Method::OPTIONS
        && origin.is_some()
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && request.uri().path() == GRAPHQL_PATH {
        let mut response = if allowed {
            StatusCode::NO_CONTENT.into_response()
        } else {
            transport::request_error(
                StatusCode::FORBIDDEN,
                ResponseMedia::Json,
                code::FORBIDDEN,
                "cross-origin requests from this origin are not allowed; list it under \
                 [cors.channels.<channel>] origins",
            )
        };
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
        if let (true, Some(origin)) = (allowed, origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
        }
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> CorsConfig {
        let mut config = CorsConfig::default();
        config.channels.insert(
            "web".into(),
            ChannelCors {
                origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            },
        );
        config
    }

    #[test]
    fn origins_are_exact_and_wildcard_free() {
        for good in [
            "https://shop.example.com",
            "http://localhost:3000",
            "https://Shop.Example.com:8443",
            "http://[::1]:8080",
        ] {
            assert!(config(&[good]).validate().is_ok(), "{good}");
        }
        for bad in [
            "*",
            "https://*.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/path",
            "shop.example.com",
            "ftp://shop.example.com",
            "https://",
            "https://shop.example.com:0",
            "https://shop.example.com:99999",
            "null",
        ] {
            let err = config(&[bad]).validate().expect_err(bad);
            assert!(err.to_string().contains("cors.channels"), "{err}");
        }
    }

    #[test]
    fn an_origin_any_channel_lists_is_allowed() {
        let mut config = config(&["https://shop.example.com"]);
        config.channels.insert(
            "b2b".into(),
            ChannelCors {
                origins: vec!["https://buyers.example.com".into()],
            },
        );
        let production = CorsPolicy::new(&config, false);
        assert!(production.allows("https://shop.example.com"));
        assert!(production.allows("https://buyers.example.com"));
        assert!(!production.allows("https://evil.example.com"));
        assert!(
            !production.allows("http://localhost:3000"),
            "no dev origins outside demo"
        );
        assert!(!CorsPolicy::new(&CorsConfig::default(), false).allows("https://shop.example.com"));
    }

    #[test]
    fn demo_mode_allows_local_development_origins_only() {
        let demo = CorsPolicy::new(&CorsConfig::default(), true);
        for good in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://localhost",
        ] {
            assert!(demo.allows(good), "{good}");
        }
        for bad in [
            "https://localhost:3000",
            "http://localhost.evil.com",
            "http://localhost:3000.evil.com",
            "http://127.0.0.1.evil.com:80",
            "http://localhost:",
            "http://evil.com",
        ] {
            assert!(!demo.allows(bad), "{bad}");
        }
    }
}
