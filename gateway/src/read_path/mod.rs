//! The read path (DESIGN.md §8): storefront reads served from memory, never stale.
//!
//! - [`model`]: the read model, the core's answers (channels, categories, product pages,
//!   variants, stock, price data) kept in bounded memos;
//! - [`cache`]: whole anonymous responses, tagged with what they show;
//! - [`memo`]: the bounded, change-guarded map both are built on.
//!
//! Both are kept by the events of every committed change ([`crate::bus`]), applied
//! synchronously by the bus before the change's mutation answers: on this instance when it
//! publishes, on the others when the event arrives over Redis. In cluster mode a request uses
//! them only when the bus confirms this instance has applied every event committed anywhere
//! ([`crate::bus::EventBus::is_current`]); otherwise it reads the database, as it does with
//! `[read_path]` turned off.

pub mod cache;
pub mod memo;
pub mod model;

use std::sync::Arc;

use commerce_core::CoreError;
use sea_orm::DatabaseConnection;

use crate::bus::{Event, EventBus};
use crate::config::ReadPathConfig;
pub use cache::{ResponseCache, TagCollector, Tags};
pub use model::ReadModel;

/// The read model and the response cache of one gateway (either may be off).
pub struct ReadPath {
    pub model: Option<Arc<ReadModel>>,
    pub cache: Option<Arc<ResponseCache>>,
    bus: EventBus,
}

/// What one request may read from memory: nothing when this instance may have missed an
/// event (or the parts are off).
#[derive(Clone, Default)]
pub struct ReadScope {
    pub model: Option<Arc<ReadModel>>,
    pub cache: Option<Arc<ResponseCache>>,
}

impl ReadPath {
    /// The parts `config` turns on, registered with `bus` so every event reaches them.
    pub fn new(config: &ReadPathConfig, bus: &EventBus) -> Arc<Self> {
        let path = Arc::new(Self {
            model: config.read_model.then(|| Arc::new(ReadModel::new(config))),
            cache: config
                .response_cache
                .then(|| Arc::new(ResponseCache::new(config))),
            bus: bus.clone(),
        });
        if path.model.is_some() || path.cache.is_some() {
            // A weak handle: the bus (held by the path) must not keep the path alive.
            let weak = Arc::downgrade(&path);
            bus.on_event(Arc::new(move |event: &Event| {
                if let Some(path) = weak.upgrade() {
                    path.apply(event);
                }
            }));
        }
        path
    }

    /// Loads what every request needs at start (channels, categories).
    pub async fn warm(&self, db: &DatabaseConnection) -> Result<(), CoreError> {
        match &self.model {
            Some(model) => model.warm(db).await,
            None => Ok(()),
        }
    }

    /// Applies one committed change to both parts.
    pub fn apply(&self, event: &Event) {
        if let Some(model) = &self.model {
            model.apply(event);
        }
        if let Some(cache) = &self.cache {
            cache.apply(event);
        }
    }

    /// What a request starting now may read from memory.
    pub async fn scope(&self) -> ReadScope {
        if self.model.is_none() && self.cache.is_none() {
            return ReadScope::default();
        }
        if !self.bus.is_current().await {
            crate::metrics::read_path_bypassed();
            return ReadScope::default();
        }
        ReadScope {
            model: self.model.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Sizes for `/metrics`: entries per read-model part, and the cache's entries and bytes.
    pub fn report(&self) {
        if let Some(model) = &self.model {
            for (part, entries) in model.sizes() {
                crate::metrics::read_model_entries(part, entries);
            }
        }
        if let Some(cache) = &self.cache {
            let (entries, bytes) = cache.size();
            crate::metrics::response_cache_size(entries, bytes);
        }
    }
}
