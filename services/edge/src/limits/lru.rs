//! A bounded least-recently-used map, shared by the per-client create rate
//! and the per-session poll pace.

use std::{collections::HashMap, hash::Hash};

const NIL: u32 = u32::MAX;

/// A fixed-capacity least-recently-used map:
/// a hash map to slot indices plus a doubly linked list threaded through
/// the slots (most recent at `head`). Every operation is O(1); nothing
/// scans the table under the lock.
pub struct Lru<K, V> {
    index: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    head: u32,
    tail: u32,
    capacity: usize,
}

struct Slot<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }

    /// The value of `key`, if present, leaving the order as it is.
    pub fn peek(&self, key: &K) -> Option<&V> {
        let &i = self.index.get(key)?;
        Some(&self.slots[i as usize].value)
    }

    /// The value of `key`, made the most recent; a new one (`fresh`) when
    /// absent, evicting the least recent key when full.
    pub fn get_or_insert(&mut self, key: K, fresh: V) -> &mut V {
        let i = match self.index.get(&key) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None if self.index.len() >= self.capacity => {
                let i = self.tail;
                self.unlink(i);
                let slot = &mut self.slots[i as usize];
                self.index.remove(&slot.key);
                slot.key = key.clone();
                slot.value = fresh;
                self.index.insert(key, i);
                i
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    key: key.clone(),
                    value: fresh,
                    prev: NIL,
                    next: NIL,
                });
                self.index.insert(key, i);
                i
            }
        };
        self.push_front(i);
        &mut self.slots[i as usize].value
    }
}
