//! Optional stateful session cache (TLS 1.2 session IDs, clients without
//! tickets), shared by a listener's workers so a session resumes on any of
//! them. Sharded by key hash so workers rarely wait on the same lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Debug)]
pub struct ShardedCache {
    shards: Vec<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl ShardedCache {
    pub fn new(capacity: usize) -> ShardedCache {
        ShardedCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Vec<u8>>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS] // ok: modulo the length
    }
}

impl rustls::server::StoresServerSessions for ShardedCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let Ok(mut m) = self.shard(&key).lock() else {
            return false;
        };
        if m.len() >= self.per_shard && !m.contains_key(&key) {
            // Full: drop an arbitrary entry (HashMap order is random) instead of growing.
            if let Some(k) = m.keys().next().cloned() {
                m.remove(&k);
            }
        }
        m.insert(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shard(key).lock().ok()?.get(key).cloned()
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shard(key).lock().ok()?.remove(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}
