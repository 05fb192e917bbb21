//! The shapes this edge holds in memory, by handle and by definition, and the locks that make
//! concurrent requests for one definition (or one handle) share a single snapshot (or resume).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use parking_lot::Mutex;

use super::shape::Shape;

#[derive(Default)]
pub struct Registry {
    active: Mutex<Active>,
    /// One lock per definition hash or handle being created or resumed.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct Active {
    by_handle: HashMap<String, Arc<Shape>>,
    /// The shape new clients of a definition get (one with its snapshot in memory).
    by_def: HashMap<String, Arc<Shape>>,
}

impl Active {
    fn remove(&mut self, handle: &str) -> Option<Arc<Shape>> {
        let shape = self.by_handle.remove(handle)?;
        if self.by_def.get(&shape.def.hash).is_some_and(|d| d.handle == handle) {
            self.by_def.remove(&shape.def.hash);
        }
        Some(shape)
    }

    fn report(&self) {
        metrics::gauge!("folio_edge_shapes_active").set(self.by_handle.len() as f64);
    }
}

impl Registry {
    /// The lock held while `key` (a definition hash or a handle) is created or resumed.
    pub fn creation_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut creating = self.creating.lock();
        creating.retain(|_, m| Arc::strong_count(m) > 1);
        Arc::clone(creating.entry(key.to_owned()).or_default())
    }

    /// The shape new clients of definition `hash` start from: valid, with its snapshot held.
    pub fn serving(&self, hash: &str) -> Option<Arc<Shape>> {
        let active = self.active.lock();
        active.by_def.get(hash).filter(|s| s.invalid_reason().is_none() && s.snapshot().is_some()).cloned()
    }

    pub fn get(&self, handle: &str) -> Option<Arc<Shape>> {
        self.active.lock().by_handle.get(handle).cloned()
    }

    /// Adds `shape`; with `serves_new_clients` it becomes the one its definition's new clients
    /// start from.
    pub fn insert(&self, shape: &Arc<Shape>, serves_new_clients: bool) {
        let mut active = self.active.lock();
        active.by_handle.insert(shape.handle.clone(), Arc::clone(shape));
        if serves_new_clients {
            active.by_def.insert(shape.def.hash.clone(), Arc::clone(shape));
        }
        active.report();
    }

    pub fn remove(&self, handle: &str) -> Option<Arc<Shape>> {
        let mut active = self.active.lock();
        let shape = active.remove(handle);
        active.report();
        shape
    }

    /// Removes the shapes unused since `cutoff` (seconds) or invalid, and returns them.
    pub fn remove_idle(&self, cutoff: u64) -> Vec<Arc<Shape>> {
        let mut active = self.active.lock();
        let old: Vec<String> = active
            .by_handle
            .iter()
            .filter(|(_, s)| s.last_used.load(Ordering::Relaxed) < cutoff || s.invalid_reason().is_some())
            .map(|(h, _)| h.clone())
            .collect();
        let removed = old.iter().filter_map(|h| active.remove(h)).collect();
        active.report();
        removed
    }

    /// The shapes other than `except` that hold their snapshot in memory.
    pub fn holding_snapshots(&self, except: &Arc<Shape>) -> Vec<Arc<Shape>> {
        let active = self.active.lock();
        active.by_handle.values().filter(|s| !Arc::ptr_eq(s, except) && s.snapshot().is_some()).cloned().collect()
    }
}
