//! A bounded cache map that lets go of the entry added first, one for each added past its
//! cap: the caches of the broker (the policy's users, the resolved groups) stay bounded
//! without a stall. Clearing a full cache at once, under its lock, stalled every decision,
//! and so every API call, for 200–400 ms (the `load` bench at its 10,000th requester).

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map that holds at most `cap` entries: adding one past that removes the entry added
/// first. What it removes it hands back, so the caller drops it after releasing its lock
/// (a user's policy entities hold the catalog's: dropping them is not free).
pub(crate) struct Fifo<K, V> {
    map: HashMap<K, V>,
    /// The keys of `map`, oldest first.
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Fifo<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Keeps `value` under `key` (in the place of the key's earlier value, if any); returns
    /// the values it no longer holds.
    #[must_use = "drop what the cache let go after releasing its lock"]
    pub(crate) fn insert(&mut self, key: K, value: V) -> Vec<V> {
        let mut gone = Vec::new();
        match self.map.insert(key.clone(), value) {
            Some(old) => gone.push(old),
            None => self.order.push_back(key),
        }
        while self.map.len() > self.cap {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            gone.extend(self.map.remove(&oldest));
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_lets_go_of_the_oldest_entry_one_for_each_added() {
        let mut cache = Fifo::new(3);
        for k in 1..=3 {
            assert!(cache.insert(k, k * 10).is_empty(), "room for {k}");
        }
        // Past the cap, only the oldest goes, and the caller gets it to drop.
        assert_eq!(cache.insert(4, 40), vec![10]);
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), Some(&20));
        assert_eq!(cache.get(&4), Some(&40));
        // A key again: its old value is handed back, nothing else goes, and it keeps its
        // place in the order.
        assert_eq!(cache.insert(2, 21), vec![20]);
        assert_eq!(cache.get(&3), Some(&30));
        assert_eq!(cache.insert(5, 50), vec![21]);
        assert_eq!(cache.insert(6, 60), vec![30]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.order.len(), 3);
    }
}
