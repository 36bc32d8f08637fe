//! A bounded memo of answers the database gave, that a change can never leave stale.
//!
//! Each memo is a least-recently-used map with a fixed number of entries, so memory stays
//! bounded whatever the catalog's size, and an age limit (a backstop, never the mechanism).
//! Changes reach it as events ([`crate::bus`]), applied synchronously before the change's
//! mutation answers; every change also moves the memo's epoch. A reader that missed takes a
//! [`Ticket`] before it goes to the database and may keep the answer only if no change was
//! applied in between: an answer read before a commit can never be kept after that commit's
//! event, which is the race that makes ordinary caches serve stale data.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

/// The memo's epoch when a reader missed: proof that nothing changed since, checked by
/// [`Memo::put`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket(pub(super) u64);

struct Inner<K: Hash + Eq, V> {
    map: LruCache<K, (V, Instant)>,
    epoch: u64,
}

/// A bounded, expiring, change-guarded map.
pub struct Memo<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> Memo<K, V> {
    /// At most `capacity` entries (at least one), each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
                epoch: 0,
            }),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock leaves a consistent map (every step is one call).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value kept for `key`, unless it expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        match inner.map.get(key) {
            Some((value, until)) if Instant::now() < *until => Some(value.clone()),
            Some(_) => {
                inner.map.pop(key);
                None
            }
            None => None,
        }
    }

    /// Taken before reading the database for a missing key.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().epoch)
    }

    /// Keeps `value` for `key` (for the memo's age limit) unless a change was applied since
    /// `ticket` was taken; returns whether it was kept.
    pub fn put(&self, ticket: Ticket, key: K, value: V) -> bool {
        self.put_until(ticket, key, value, None)
    }

    /// [`Memo::put`], with the entry also ending at `until` when that comes first (an answer
    /// that a clock edge, such as a price list's window, will change).
    pub fn put_until(&self, ticket: Ticket, key: K, value: V, until: Option<Instant>) -> bool {
        let mut inner = self.lock();
        if inner.epoch != ticket.0 {
            return false;
        }
        let end = Instant::now() + self.ttl;
        let end = until.map_or(end, |until| until.min(end));
        inner.map.put(key, (value, end));
        true
    }

    /// Forgets `key` (and refuses answers read before this call).
    pub fn remove(&self, key: &K) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.map.pop(key);
    }

    /// Forgets every entry whose key matches.
    pub fn remove_where(&self, mut matches: impl FnMut(&K) -> bool) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let doomed: Vec<K> = inner
            .map
            .iter()
            .filter(|(key, _)| matches(key))
            .map(|(key, _)| key)
            .cloned()
            .collect();
        for key in doomed {
            inner.map.pop(&key);
        }
    }

    /// Changes the entry of `key` in place: `patch` returns `false` when the entry cannot be
    /// brought up to date (it is then forgotten, to be read again).
    pub fn patch(&self, key: &K, patch: impl FnOnce(&mut V) -> bool) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let keep = match inner.map.peek_mut(key) {
            Some((value, _)) => patch(value),
            None => return,
        };
        if !keep {
            inner.map.pop(key);
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.map.clear();
    }

    /// Entries kept now (expired ones included until they are next looked up or pushed out).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries kept at once.
    pub fn capacity(&self) -> usize {
        self.lock().map.cap().get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo(capacity: usize) -> Memo<u32, &'static str> {
        Memo::new(capacity, Duration::from_secs(60))
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept() {
        let memo = memo(4);
        let before = memo.ticket();
        memo.remove(&7);
        assert!(
            !memo.put(before, 1, "old"),
            "a change happened since the ticket"
        );
        assert_eq!(memo.get(&1), None);
        let after = memo.ticket();
        assert!(memo.put(after, 1, "new"));
        assert_eq!(memo.get(&1), Some("new"));
    }

    #[test]
    fn patches_apply_in_place_or_forget() {
        let memo = memo(4);
        memo.put(memo.ticket(), 1, "a");
        memo.patch(&1, |value| {
            *value = "b";
            true
        });
        assert_eq!(memo.get(&1), Some("b"));
        memo.patch(&1, |_| false);
        assert_eq!(memo.get(&1), None);
        // Patching a missing key keeps nothing, but still refuses older answers.
        let before = memo.ticket();
        memo.patch(&2, |_| true);
        assert!(!memo.put(before, 2, "stale"));
    }

    #[test]
    fn memory_is_bounded_by_capacity_least_recently_used_out() {
        let memo = memo(2);
        for key in 0..3 {
            memo.put(memo.ticket(), key, "x");
        }
        assert_eq!(memo.len(), 2);
        assert_eq!(memo.get(&0), None, "the oldest entry left");
        assert_eq!(memo.capacity(), 2);
    }

    #[test]
    fn entries_end_at_their_age_limit_or_their_own_end() {
        let memo: Memo<u32, u32> = Memo::new(4, Duration::ZERO);
        memo.put(memo.ticket(), 1, 1);
        assert_eq!(memo.get(&1), None, "expired at once");
        let memo: Memo<u32, u32> = Memo::new(4, Duration::from_secs(60));
        memo.put_until(memo.ticket(), 1, 1, Some(Instant::now()));
        assert_eq!(memo.get(&1), None, "its own end came first");
        memo.remove_where(|_| true);
        memo.put(memo.ticket(), 2, 2);
        memo.remove_where(|key| *key == 2);
        assert_eq!(memo.get(&2), None);
    }
}
