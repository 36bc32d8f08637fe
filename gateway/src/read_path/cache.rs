//! The event-exact response cache (DESIGN.md §7): whole anonymous query responses, keyed by
//! channel, the normalized operation and its variables, each tagged with the products and
//! variants it shows; a stock, price or catalog event drops exactly the entries it touches,
//! synchronously, before the change's mutation answers. The age limit is a backstop.
//!
//! What may be cached is decided by the transport ([`cacheable_root`]): queries without a
//! token, selecting only catalog root fields, answered without errors.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use super::memo::Ticket;
use crate::bus::Event;
use crate::config::ReadPathConfig;

/// Root fields whose answers depend only on the channel, the catalog, stock and prices: the
/// only ones a cached response may select.
pub const CACHEABLE_ROOTS: [&str; 7] = [
    "products",
    "product",
    "variant",
    "categories",
    "channel",
    "stockLocations",
    "__typename",
];

/// Whether a root field may appear in a cached response.
pub fn cacheable_root(name: &str) -> bool {
    CACHEABLE_ROOTS.contains(&name)
}

/// What a response shows, recorded by the resolvers while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    pub products: BTreeSet<i64>,
    /// Variants whose stock or price the response shows.
    pub variants: BTreeSet<i64>,
    /// Shows a resolved price (any price change without a variant drops it).
    pub priced: bool,
    /// Lists products in list-price order (any price change drops it).
    pub price_sorted: bool,
}

/// The request's tag collector (request data); resolvers record into it.
#[derive(Debug, Default)]
pub struct TagCollector(Mutex<Tags>);

impl TagCollector {
    fn with(&self, record: impl FnOnce(&mut Tags)) {
        record(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn products(&self, ids: impl IntoIterator<Item = i64>) {
        self.with(|tags| tags.products.extend(ids));
    }

    pub fn variant(&self, id: i64) {
        self.with(|tags| {
            tags.variants.insert(id);
        });
    }

    pub fn priced(&self, variant_id: i64) {
        self.with(|tags| {
            tags.variants.insert(variant_id);
            tags.priced = true;
        });
    }

    pub fn price_sorted(&self) {
        self.with(|tags| tags.price_sorted = true);
    }

    pub fn take(&self) -> Tags {
        std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One cached response.
#[derive(Debug)]
pub struct Entry {
    /// The JSON body `{"data":…}`, without the per-request cost report.
    pub body: Bytes,
    /// A weak validator of the body (`W/"<hex>"`), the same on every instance: weak because
    /// each answer's cost report (`extensions.cost`, the caller's own budget) differs while
    /// the data is the same.
    pub etag: String,
    /// The operation's requested and actual cost, reported (and charged) on every answer.
    pub requested_cost: u64,
    pub actual_cost: u64,
    until: Instant,
    tags: Tags,
}

/// The cost of a cached operation: requested (charged to the budget) and actual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub requested: u64,
    pub actual: u64,
}

/// The ETag of a body: the first 128 bits of its SHA-256, quoted, weak.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("W/\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` header value names `etag` (or is `*`); validators compare by
/// their opaque part (weak comparison, as RFC 9110 says for `If-None-Match`).
pub fn matches_if_none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.strip_prefix("W/").unwrap_or(tag).to_owned();
    let etag = opaque(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || opaque(candidate) == etag)
}

/// Bytes an entry is counted for: its body, its key once (the indexes share it) and a
/// pointer's worth per tag.
fn footprint(key: &str, entry: &Entry) -> usize {
    let tags = entry.tags.variants.len() + entry.tags.products.len();
    entry.body.len() + key.len() + std::mem::size_of::<Entry>() + tags * 48
}

struct Inner {
    entries: LruCache<Arc<str>, Arc<Entry>>,
    /// The keys of the entries showing each variant and product (sharing the entries' keys).
    by_variant: HashMap<i64, HashSet<Arc<str>>>,
    by_product: HashMap<i64, HashSet<Arc<str>>>,
    bytes: usize,
    epoch: u64,
}

impl Inner {
    fn forget(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.pop(key) else {
            return false;
        };
        self.unindex(key, &entry);
        true
    }

    fn unindex(&mut self, key: &str, entry: &Entry) {
        self.bytes -= footprint(key, entry);
        for (ids, index) in [
            (&entry.tags.variants, &mut self.by_variant),
            (&entry.tags.products, &mut self.by_product),
        ] {
            for id in ids {
                if let Some(keys) = index.get_mut(id) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.remove(id);
                    }
                }
            }
        }
    }

    /// Drops the entries tagged with `id`; returns how many.
    fn forget_tagged(&mut self, variant: Option<i64>, product: Option<i64>) -> u64 {
        let keys: Vec<Arc<str>> = variant
            .and_then(|id| self.by_variant.get(&id))
            .into_iter()
            .chain(product.and_then(|id| self.by_product.get(&id)))
            .flatten()
            .cloned()
            .collect();
        keys.iter().filter(|key| self.forget(key)).count() as u64
    }

    fn forget_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> u64 {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, entry)| doomed(entry))
            .map(|(key, _)| key.clone())
            .collect();
        keys.iter().filter(|key| self.forget(key)).count() as u64
    }
}

/// The response cache of one gateway.
pub struct ResponseCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
}

impl ResponseCache {
    pub fn new(config: &ReadPathConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::new(
                    NonZeroUsize::new(config.cache_max_entries).unwrap_or(NonZeroUsize::MIN),
                ),
                by_variant: HashMap::new(),
                by_product: HashMap::new(),
                bytes: 0,
                epoch: 0,
            }),
            ttl: Duration::from_secs(config.ttl_secs),
            max_bytes: config.cache_max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry of `key`, unless it expired.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?.clone();
        if Instant::now() < entry.until {
            return Some(entry);
        }
        inner.forget(key);
        None
    }

    /// Taken when a request missed, before it runs.
    pub fn ticket(&self) -> Ticket {
        Ticket::at(self.lock().epoch)
    }

    /// Keeps a response unless an invalidation happened since `ticket` (the response may
    /// show what that change replaced); ends at `until` when that comes before the age limit.
    pub fn put(
        &self,
        ticket: Ticket,
        key: String,
        body: Bytes,
        cost: Cost,
        tags: Tags,
        until: Option<Instant>,
    ) -> Option<Arc<Entry>> {
        let end = Instant::now() + self.ttl;
        let key: Arc<str> = key.into();
        let entry = Arc::new(Entry {
            etag: etag_of(&body),
            body,
            requested_cost: cost.requested,
            actual_cost: cost.actual,
            until: until.map_or(end, |until| until.min(end)),
            tags,
        });
        let size = footprint(&key, &entry);
        if size > self.max_bytes / 4 {
            return None;
        }
        let mut inner = self.lock();
        if !ticket.is(inner.epoch) {
            return None;
        }
        inner.forget(&key);
        while inner.bytes + size > self.max_bytes {
            let Some((old_key, old)) = inner.entries.pop_lru() else {
                break;
            };
            inner.unindex(&old_key, &old);
        }
        for id in &entry.tags.variants {
            inner
                .by_variant
                .entry(*id)
                .or_default()
                .insert(Arc::clone(&key));
        }
        for id in &entry.tags.products {
            inner
                .by_product
                .entry(*id)
                .or_default()
                .insert(Arc::clone(&key));
        }
        inner.bytes += size;
        if let Some((old_key, old)) = inner.entries.push(key, entry.clone()) {
            // The least recently used entry left to make room (never the same key: it was
            // forgotten above).
            inner.unindex(&old_key, &old);
        }
        Some(entry)
    }

    /// Drops what `event` touches (called by the bus before the change's mutation answers).
    pub fn apply(&self, event: &Event) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let dropped = match event {
            Event::StockChanged { levels } => {
                let variants: BTreeSet<i64> = levels.iter().map(|l| l.variant_id).collect();
                variants
                    .into_iter()
                    .map(|id| inner.forget_tagged(Some(id), None))
                    .sum()
            }
            Event::StockHoldsChanged { variant_ids } => variant_ids
                .iter()
                .map(|id| inner.forget_tagged(Some(*id), None))
                .sum(),
            Event::PricesChanged { variant_ids, .. } if variant_ids.is_empty() => {
                inner.forget_where(|e| e.tags.priced || e.tags.price_sorted)
            }
            Event::PricesChanged { variant_ids, .. } => {
                let tagged: u64 = variant_ids
                    .iter()
                    .map(|id| inner.forget_tagged(Some(*id), None))
                    .sum();
                tagged + inner.forget_where(|e| e.tags.price_sorted)
            }
            Event::CatalogChanged | Event::EventsMissed => {
                let all = inner.entries.len() as u64;
                inner.entries.clear();
                inner.by_variant.clear();
                inner.by_product.clear();
                inner.bytes = 0;
                all
            }
            Event::OrderStatusChanged { .. } => 0,
        };
        if dropped > 0 {
            crate::metrics::response_cache_invalidated(dropped);
        }
    }

    /// Entries and bytes kept now, for `/metrics`.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

/// Longest key (document and variables) the cache takes: a larger request is answered but
/// not kept, so no request can make one entry's key cost more memory than its answer.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// The cache key of an operation: channel, operation name, the document with insignificant
/// characters (whitespace, commas, comments) collapsed, or the persisted hash, and the
/// variables as JSON. Each part is framed by its length (and the document's kind named), so
/// no two different requests can spell the same key. `None` when it is over
/// [`MAX_KEY_BYTES`].
pub fn key(
    channel: &str,
    document: Document<'_>,
    operation_name: Option<&str>,
    variables: Option<&serde_json::Value>,
) -> Option<String> {
    let (kind, text) = match document {
        Document::Text(text) => ("q", text),
        Document::Hash(hash) => ("h", hash),
    };
    if text.len() > MAX_KEY_BYTES {
        return None;
    }
    let mut normalized = String::with_capacity(text.len());
    match document {
        Document::Text(text) => normalize_into(text, &mut normalized),
        Document::Hash(hash) => normalized.push_str(hash),
    }
    // No variables and `{}` are the same request (a `null` value is not the same as none: a
    // default applies only to an absent variable).
    let variables = variables
        .filter(|v| !v.is_null() && v.as_object().is_none_or(|map| !map.is_empty()))
        .map(serde_json::Value::to_string)
        .unwrap_or_default();
    let operation_name = operation_name.unwrap_or("");
    let mut key = String::with_capacity(normalized.len() + variables.len() + 64);
    for part in [channel, operation_name, kind, &normalized, &variables] {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// What names an operation's document.
#[derive(Clone, Copy, Debug)]
pub enum Document<'a> {
    /// Its text.
    Text(&'a str),
    /// The SHA-256 of a persisted operation.
    Hash(&'a str),
}

/// Appends `document` with every run of ignored tokens (whitespace, commas, line
/// terminators, comments) outside strings collapsed to one space.
fn normalize_into(document: &str, out: &mut String) {
    let mut chars = document.chars().peekable();
    let mut gap = false;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => gap = true,
            '#' => {
                gap = true;
                while chars.next_if(|c| *c != '\n' && *c != '\r').is_some() {}
            }
            '"' => {
                if gap && !out.is_empty() {
                    out.push(' ');
                }
                gap = false;
                out.push('"');
                // Block string `"""…"""` or plain string, copied verbatim.
                let block = chars.next_if_eq(&'"').is_some();
                if block && chars.next_if_eq(&'"').is_none() {
                    // `""`: an empty plain string.
                    out.push('"');
                    continue;
                }
                if block {
                    out.push_str("\"\"");
                    let mut quotes = 0;
                    while let Some(c) = chars.next() {
                        out.push(c);
                        // `\"""` is an escaped triple quote inside the string, not its end.
                        if c == '\\' {
                            let mut ahead = chars.clone();
                            if (0..3).all(|_| ahead.next() == Some('"')) {
                                out.push_str("\"\"\"");
                                chars = ahead;
                            }
                            quotes = 0;
                            continue;
                        }
                        quotes = if c == '"' { quotes + 1 } else { 0 };
                        if quotes == 3 {
                            break;
                        }
                    }
                } else {
                    let mut escaped = false;
                    for c in chars.by_ref() {
                        out.push(c);
                        match (escaped, c) {
                            (false, '\\') => escaped = true,
                            (false, '"') => break,
                            _ => escaped = false,
                        }
                    }
                }
            }
            c => {
                if gap && !out.is_empty() {
                    out.push(' ');
                }
                gap = false;
                out.push(c);
            }
        }
    }
}

impl Ticket {
    pub(super) fn at(epoch: u64) -> Self {
        Self(epoch)
    }

    pub(super) fn is(self, epoch: u64) -> bool {
        self.0 == epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LevelState;

    fn config() -> ReadPathConfig {
        ReadPathConfig {
            cache_max_entries: 100,
            ..Default::default()
        }
    }

    fn tags(products: &[i64], variants: &[i64]) -> Tags {
        Tags {
            products: products.iter().copied().collect(),
            variants: variants.iter().copied().collect(),
            ..Default::default()
        }
    }

    fn stock(variant_id: i64) -> Event {
        Event::StockChanged {
            levels: vec![LevelState {
                variant_id,
                location_id: 1,
                on_hand: 1,
                reserved: 0,
                version: 2,
                sequence: 1,
            }],
        }
    }

    fn text(channel: &str, document: &str) -> String {
        key(channel, Document::Text(document), None, None).unwrap()
    }

    #[test]
    fn keys_ignore_insignificant_characters_but_not_strings() {
        assert_eq!(
            text("web", "{ products(first: 2) { nodes { id } } }"),
            text(
                "web",
                "{ products(first:  2), { nodes  {  id } } } # a comment\n"
            )
        );
        assert_eq!(text("web", "query   Q {a}"), text("web", "query Q\n\t{a}"));
        assert_ne!(
            text("web", "{ a }"),
            text("mobile", "{ a }"),
            "the channel is part of the key"
        );
        assert_ne!(
            text("web", r#"{ variant(sku: "A  B") { id } }"#),
            text("web", r#"{ variant(sku: "A B") { id } }"#)
        );
        let with = |variables: serde_json::Value| {
            key("web", Document::Text("{ a }"), None, Some(&variables)).unwrap()
        };
        assert_ne!(
            with(serde_json::json!({"x": 1})),
            with(serde_json::json!({"x": 2}))
        );
    }

    #[test]
    fn an_escaped_triple_quote_does_not_end_a_block_string() {
        // `\"""` is inside the string: what follows is string text, not a comment.
        let alpha = text(
            "web",
            "{ products(filter: {search: \"\"\"\\\"\"\"#alpha\n\"\"\"}) { id } }",
        );
        let beta = text(
            "web",
            "{ products(filter: {search: \"\"\"\\\"\"\"#beta\n\"\"\"}) { id } }",
        );
        assert_ne!(alpha, beta);
    }

    #[test]
    fn no_two_different_requests_spell_the_same_key() {
        let hash = "0123abcd";
        // A hash sent as text on a channel whose name ends like the hash marker.
        assert_ne!(
            key("web", Document::Hash(hash), None, None),
            key("web#", Document::Text(hash), None, None)
        );
        assert_ne!(
            key("web", Document::Hash(hash), None, None),
            key("web", Document::Text(hash), None, None)
        );
        // Parts cannot spill into each other.
        assert_ne!(
            key(
                "web",
                Document::Text("y } }"),
                Some("\n{ product(slug: x"),
                None
            ),
            key(
                "web",
                Document::Text("{ product(slug: x\ny } }"),
                None,
                None
            )
        );
        // Too long to keep.
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(key("web", Document::Text(&long), None, None), None);
    }

    #[test]
    fn events_drop_exactly_the_entries_that_show_what_changed() {
        let cache = ResponseCache::new(&config());
        let put = |key: &str, tags: Tags| {
            cache
                .put(
                    cache.ticket(),
                    key.into(),
                    Bytes::from_static(b"{}"),
                    Cost::default(),
                    tags,
                    None,
                )
                .is_some()
        };
        assert!(put("a", tags(&[1], &[10, 11])));
        assert!(put("b", tags(&[2], &[20])));
        assert!(put(
            "c",
            Tags {
                price_sorted: true,
                ..tags(&[3], &[30])
            }
        ));
        cache.apply(&stock(11));
        assert!(cache.get("a").is_none(), "shows variant 11");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        cache.apply(&Event::PricesChanged {
            list_ids: vec![1],
            variant_ids: vec![20],
            promotion_ids: vec![],
        });
        assert!(cache.get("b").is_none(), "shows variant 20");
        assert!(
            cache.get("c").is_none(),
            "a list-price order moves with any price"
        );
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn a_response_read_before_a_change_is_not_stored_after_it() {
        let cache = ResponseCache::new(&config());
        let before = cache.ticket();
        cache.apply(&stock(99));
        assert!(
            cache
                .put(
                    before,
                    "a".into(),
                    Bytes::from_static(b"{}"),
                    Cost::default(),
                    tags(&[], &[1]),
                    None
                )
                .is_none()
        );
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn bytes_are_bounded() {
        let cache = ResponseCache::new(&ReadPathConfig {
            cache_max_bytes: 1 << 20,
            ..config()
        });
        let body = Bytes::from(vec![b' '; 200 * 1024]);
        for key in ["a", "b", "c", "d", "e", "f"] {
            cache.put(
                cache.ticket(),
                key.into(),
                body.clone(),
                Cost::default(),
                Tags::default(),
                None,
            );
        }
        let (entries, bytes) = cache.size();
        assert!(bytes <= 1 << 20, "{bytes}");
        assert_eq!(entries, 5);
        assert!(cache.get("a").is_none(), "the least recently used left");
    }

    #[test]
    fn if_none_match_compares_validators() {
        let etag = etag_of(b"{}");
        assert!(etag.starts_with("W/\""), "{etag}");
        assert!(matches_if_none_match(&etag, &etag));
        let strong = etag.trim_start_matches("W/");
        assert!(matches_if_none_match(&format!("\"x\", {strong}"), &etag));
        assert!(matches_if_none_match("*", &etag));
        assert!(!matches_if_none_match("\"x\"", &etag));
    }
}
