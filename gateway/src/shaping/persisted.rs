//! Persisted operations: a safelist per channel loaded from `operations/<channel>/*.graphql`,
//! and automatic persisted queries (APQ: the `persistedQuery` extension with the SHA-256 of
//! the document) kept in memory, or in Redis in cluster mode so every instance knows them.
//!
//! Channels listed as persisted-only (`mobile` and `pos` by default) run safelisted
//! operations only: a document that is not on the channel's safelist is refused with
//! `PERSISTED_QUERY_NOT_ALLOWED`, whether it arrives as text or is registered through APQ.
//! Admin tokens may run anything (developers exploring a channel). Elsewhere APQ caches any
//! document, so clients can send hashes instead of texts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::redis::RedisStore;

/// `[persisted]`: safelisted operations and automatic persisted queries.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PersistedConfig {
    /// Folder holding one sub-folder per channel of `*.graphql` files (the safelist).
    pub operations_dir: PathBuf,
    /// Channels that run safelisted operations only.
    pub persisted_only_channels: Vec<String>,
    /// Automatic persisted queries kept in memory (oldest dropped first).
    pub apq_max_entries: usize,
    /// Longest accepted document registered through APQ, in bytes.
    pub apq_max_query_bytes: usize,
    /// Seconds an automatic persisted query lives in Redis (cluster mode).
    pub apq_ttl_secs: u64,
}

impl Default for PersistedConfig {
    fn default() -> Self {
        Self {
            operations_dir: PathBuf::from("operations"),
            persisted_only_channels: vec!["mobile".to_owned(), "pos".to_owned()],
            apq_max_entries: 10_000,
            apq_max_query_bytes: 64 * 1024,
            apq_ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// The `extensions.persistedQuery` of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedQuery {
    pub sha256: String,
}

/// Why a request's persisted query cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistedError {
    /// Apollo clients match this exact message and resend the document.
    #[error("PersistedQueryNotFound")]
    NotFound,
    #[error(
        "channel {channel} runs persisted operations only, and this document is not on its safelist (operations/{channel}/*.graphql)"
    )]
    NotAllowed { channel: String },
    #[error("{0}")]
    BadRequest(String),
}

/// Reads the `persistedQuery` extension: `{ version: 1, sha256Hash: "<64 hex>" }`.
pub fn parse_extension(
    extensions: &serde_json::Value,
) -> Result<Option<PersistedQuery>, PersistedError> {
    let Some(value) = extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let bad = |why: &str| PersistedError::BadRequest(format!("extensions.persistedQuery: {why}"));
    if value.get("version").and_then(serde_json::Value::as_i64) != Some(1) {
        return Err(bad("version must be 1"));
    }
    let hash = value
        .get("sha256Hash")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("sha256Hash must be a string"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("sha256Hash must be 64 hexadecimal characters"));
    }
    Ok(Some(PersistedQuery {
        sha256: hash.to_ascii_lowercase(),
    }))
}

/// The SHA-256 of a document's exact text, in lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The safelists and the APQ store.
pub struct PersistedOperations {
    config: PersistedConfig,
    /// channel → hash → document.
    safelist: HashMap<String, HashMap<String, Arc<str>>>,
    persisted_only: HashSet<String>,
    memory: Mutex<Apq>,
    redis: Option<RedisStore>,
}

#[derive(Default)]
struct Apq {
    entries: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
    /// Bytes of query text held.
    bytes: usize,
}

/// Most bytes of automatic persisted queries one instance keeps in memory.
pub const APQ_MAX_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// One safelisted operation, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafelistedOperation {
    pub channel: String,
    pub file: PathBuf,
    pub sha256: String,
}

impl PersistedOperations {
    /// Loads the safelists; a missing folder is an empty safelist, an unreadable file an error.
    pub fn load(config: &PersistedConfig, redis: Option<RedisStore>) -> Result<Self, String> {
        let mut safelist: HashMap<String, HashMap<String, Arc<str>>> = HashMap::new();
        for operation in list_operations(&config.operations_dir)? {
            let text = std::fs::read_to_string(&operation.file)
                .map_err(|err| format!("cannot read {}: {err}", operation.file.display()))?;
            async_graphql::parser::parse_query(&text).map_err(|err| {
                format!(
                    "{} is not a GraphQL document: {err}",
                    operation.file.display()
                )
            })?;
            safelist
                .entry(operation.channel)
                .or_default()
                .insert(operation.sha256, Arc::from(text));
        }
        Ok(Self {
            config: config.clone(),
            safelist,
            persisted_only: config.persisted_only_channels.iter().cloned().collect(),
            memory: Mutex::new(Apq::default()),
            redis,
        })
    }

    /// Safelisted operations per channel.
    pub fn safelist_len(&self, channel: &str) -> usize {
        self.safelist.get(channel).map_or(0, HashMap::len)
    }

    /// Whether `channel` runs safelisted operations only.
    pub fn is_persisted_only(&self, channel: &str) -> bool {
        self.persisted_only.contains(channel)
    }

    /// The document to run for a request on `channel`, or why there is none. `query` is the
    /// text the request carried, `persisted` its extension; `unrestricted` lifts the safelist
    /// (admin tokens).
    pub async fn resolve(
        &self,
        channel: &str,
        query: Option<String>,
        persisted: Option<&PersistedQuery>,
        unrestricted: bool,
    ) -> Result<String, PersistedError> {
        let restricted = self.is_persisted_only(channel) && !unrestricted;
        let safelisted = |hash: &str| {
            self.safelist
                .get(channel)
                .and_then(|ops| ops.get(hash))
                .cloned()
        };
        match (query, persisted) {
            (None, None) => Err(PersistedError::BadRequest(
                "the request has no `query` and no persistedQuery extension".to_owned(),
            )),
            (None, Some(persisted)) => {
                if let Some(text) = safelisted(&persisted.sha256) {
                    return Ok(text.to_string());
                }
                if restricted {
                    return Err(PersistedError::NotFound);
                }
                self.apq_get(&persisted.sha256)
                    .await
                    .ok_or(PersistedError::NotFound)
            }
            (Some(query), persisted) => {
                let hash = sha256_hex(&query);
                if let Some(persisted) = persisted
                    && persisted.sha256 != hash
                {
                    return Err(PersistedError::BadRequest(
                        "extensions.persistedQuery.sha256Hash is not the SHA-256 of `query`"
                            .to_owned(),
                    ));
                }
                if restricted && safelisted(&hash).is_none() {
                    return Err(PersistedError::NotAllowed {
                        channel: channel.to_owned(),
                    });
                }
                if persisted.is_some()
                    && !restricted
                    && query.len() > self.config.apq_max_query_bytes
                {
                    return Err(PersistedError::BadRequest(format!(
                        "a persisted query may be at most {} bytes",
                        self.config.apq_max_query_bytes
                    )));
                }
                // Not stored yet: the caller registers it once it has run
                // ([`Self::register`]), so documents that never parse, or clients over their
                // rate, cannot fill the store.
                Ok(query)
            }
        }
    }

    async fn apq_get(&self, hash: &str) -> Option<String> {
        if let Some(redis) = &self.redis {
            match redis.apq_get(hash).await {
                Ok(found) => return found,
                Err(err) => {
                    tracing::warn!(error = %err, "APQ lookup in Redis failed; using memory")
                }
            }
        }
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.entries.get(hash).map(|text| text.to_string())
    }

    /// Stores an automatic persisted query that has just run (sent with its hash). Memory
    /// holds at most `apq_max_entries` and [`APQ_MAX_MEMORY_BYTES`], oldest dropped first.
    pub async fn register(&self, channel: &str, hash: &str, query: &str) {
        if self.is_persisted_only(channel) || query.len() > self.config.apq_max_query_bytes {
            return;
        }
        self.apq_set(hash, query).await;
    }

    async fn apq_set(&self, hash: &str, query: &str) {
        if let Some(redis) = &self.redis {
            match redis.apq_set(hash, query, self.config.apq_ttl_secs).await {
                Ok(()) => return,
                Err(err) => tracing::warn!(error = %err, "APQ store in Redis failed; using memory"),
            }
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if memory.entries.contains_key(hash) {
            return;
        }
        while memory.entries.len() >= self.config.apq_max_entries.max(1)
            || memory.bytes + query.len() > APQ_MAX_MEMORY_BYTES
        {
            match memory.order.pop_front() {
                Some(oldest) => {
                    if let Some(text) = memory.entries.remove(&oldest) {
                        memory.bytes -= text.len();
                    }
                }
                None => break,
            }
        }
        memory.bytes += query.len();
        memory.entries.insert(hash.to_owned(), Arc::from(query));
        memory.order.push_back(hash.to_owned());
    }
}

/// Every `<dir>/<channel>/*.graphql` with the SHA-256 of its exact content, sorted.
pub fn list_operations(dir: &Path) -> Result<Vec<SafelistedOperation>, String> {
    let mut out = Vec::new();
    let channels = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(err) => return Err(format!("cannot read {}: {err}", dir.display())),
    };
    for channel in channels.flatten() {
        if !channel.path().is_dir() {
            continue;
        }
        let name = channel.file_name().to_string_lossy().to_ascii_lowercase();
        let files = std::fs::read_dir(channel.path())
            .map_err(|err| format!("cannot read {}: {err}", channel.path().display()))?;
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "graphql") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                out.push(SafelistedOperation {
                    channel: name.clone(),
                    sha256: sha256_hex(&text),
                    file: path,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.channel, &a.file).cmp(&(&b.channel, &b.file)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(dir: &Path) -> PersistedOperations {
        let config = PersistedConfig {
            operations_dir: dir.to_owned(),
            apq_max_entries: 2,
            ..PersistedConfig::default()
        };
        PersistedOperations::load(&config, None).unwrap()
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ops-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("mobile")).unwrap();
        std::fs::write(dir.join("mobile/page.graphql"), "{ channel { code } }\n").unwrap();
        dir
    }

    #[tokio::test]
    async fn persisted_only_channels_run_their_safelist_only() {
        let dir = scratch();
        let ops = operations(&dir);
        let safe = "{ channel { code } }\n".to_owned();
        let hash = PersistedQuery {
            sha256: sha256_hex(&safe),
        };
        assert_eq!(ops.safelist_len("mobile"), 1);
        // By text or by hash.
        assert_eq!(
            ops.resolve("mobile", Some(safe.clone()), None, false).await,
            Ok(safe.clone())
        );
        assert_eq!(
            ops.resolve("mobile", None, Some(&hash), false).await,
            Ok(safe.clone())
        );
        // Anything else is refused, also through APQ registration.
        let other = "{ products { totalCount } }".to_owned();
        let other_hash = PersistedQuery {
            sha256: sha256_hex(&other),
        };
        assert!(matches!(
            ops.resolve("mobile", Some(other.clone()), None, false)
                .await,
            Err(PersistedError::NotAllowed { .. })
        ));
        assert!(matches!(
            ops.resolve("mobile", Some(other.clone()), Some(&other_hash), false)
                .await,
            Err(PersistedError::NotAllowed { .. })
        ));
        assert_eq!(
            ops.resolve("mobile", None, Some(&other_hash), false).await,
            Err(PersistedError::NotFound)
        );
        // Admins are not restricted.
        assert_eq!(
            ops.resolve("mobile", Some(other.clone()), None, true).await,
            Ok(other)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn apq_registers_then_serves_by_hash_with_a_bounded_memory() {
        let dir = scratch();
        let ops = operations(&dir);
        let texts = ["{ a }", "{ b }", "{ c }"];
        let hashes: Vec<PersistedQuery> = texts
            .iter()
            .map(|t| PersistedQuery {
                sha256: sha256_hex(t),
            })
            .collect();
        assert_eq!(
            ops.resolve("web", None, Some(&hashes[0]), false).await,
            Err(PersistedError::NotFound)
        );
        for (text, hash) in texts.iter().zip(&hashes) {
            let query = ops
                .resolve("web", Some((*text).to_owned()), Some(hash), false)
                .await
                .unwrap();
            // Not stored until it has run.
            assert_eq!(
                ops.resolve("web", None, Some(hash), false).await,
                Err(PersistedError::NotFound)
            );
            ops.register("web", &hash.sha256, &query).await;
        }
        // At most 2 kept: the oldest went.
        assert_eq!(
            ops.resolve("web", None, Some(&hashes[0]), false).await,
            Err(PersistedError::NotFound)
        );
        assert_eq!(
            ops.resolve("web", None, Some(&hashes[2]), false).await,
            Ok("{ c }".to_owned())
        );
        // A hash that does not match its text is refused.
        assert!(matches!(
            ops.resolve("web", Some("{ d }".into()), Some(&hashes[1]), false)
                .await,
            Err(PersistedError::BadRequest(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_extension_is_checked() {
        let ok =
            serde_json::json!({ "persistedQuery": { "version": 1, "sha256Hash": "A".repeat(64) } });
        assert_eq!(
            parse_extension(&ok).unwrap().unwrap().sha256,
            "a".repeat(64)
        );
        assert_eq!(parse_extension(&serde_json::json!({})), Ok(None));
        for bad in [
            serde_json::json!({ "persistedQuery": { "version": 2, "sha256Hash": "a".repeat(64) } }),
            serde_json::json!({ "persistedQuery": { "version": 1, "sha256Hash": "xyz" } }),
            serde_json::json!({ "persistedQuery": { "version": 1 } }),
        ] {
            assert!(parse_extension(&bad).is_err(), "{bad}");
        }
    }
}
