//! Per-layer locks and mount refcounts of one driver instance: one concurrency model for every
//! built-in driver.
//!
//! Each layer in use has a slot: a reader-writer lock over its count of references. An
//! operation on a layer (get, put, remove, apply, create) holds that layer's slot exclusively
//! for its whole length ([`Slots::exclusive`]), so operations on one layer never interleave
//! within a process while operations on different layers run in parallel. An operation that
//! only reads another layer's files (a child reading its ancestors, a layer made from its
//! parent) holds those layers' slots shared ([`Slots::shared`]), so nothing swaps or removes
//! them mid-read. Take locks child first, then ancestors in chain order, and they cannot
//! deadlock. Across processes the engine serialises writers.
//!
//! The map holds only the slots in use: a slot that counts nothing and that nobody else holds
//! is dropped when its operation ends.
//!
//! Counts are this instance's only: the mount table (or the driver's own mount state) is the
//! truth about what is mounted. A layer mounted by someone else (an earlier process, another
//! instance) that this instance counts nothing for is adopted with a count of one
//! ([`Slot::adopt`]) by its first get or put, so `strata mount` in one process and
//! `strata umount` in another work.
//!
//! Slots are not reentrant: taking a slot this thread holds already (a layer named as its own
//! parent) deadlocks, so callers leave it out.
//!
//! A panic while a lock is held leaves on-disk state that every step re-reads: the poison is
//! ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use strata_driver_api::LayerId;

/// This instance's references to one layer's mount.
#[derive(Debug, Default)]
pub struct Slot {
    count: u32,
}

impl Slot {
    /// How many references this instance holds.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Adopts a mount this instance counts nothing for (made by an earlier process or another
    /// instance) as one reference; a slot that counts already is left as it is.
    pub fn adopt(&mut self) {
        self.count = self.count.max(1);
    }

    /// Forgets every reference (the layer is not mounted, or no longer).
    pub fn reset(&mut self) {
        self.count = 0;
    }

    /// Takes one reference; `first` (the mount) runs when this is the first. When `first`
    /// fails, no reference is taken.
    pub fn acquire<E>(&mut self, first: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        if self.count == 0 {
            first()?;
        }
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    /// Drops one reference; `last` (the unmount) runs when this is the last one. A slot that
    /// counts nothing is taken for an adopted mount's one reference: adopt before releasing
    /// only what is really mounted. When `last` fails, the reference stays (the next release
    /// tries again).
    pub fn release<E>(&mut self, last: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        if self.count <= 1 {
            last()?;
            self.count = 0;
        } else {
            self.count -= 1;
        }
        Ok(())
    }
}

type SlotRef = Arc<RwLock<Slot>>;

/// The per-layer slots of one driver instance.
#[derive(Debug, Default)]
pub struct Slots {
    map: Mutex<HashMap<LayerId, SlotRef>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    /// No slots.
    pub fn new() -> Slots {
        Slots::default()
    }

    fn slot(&self, id: &LayerId) -> SlotRef {
        lock(&self.map).entry(id.clone()).or_default().clone()
    }

    /// Drops the slot of `id` from the map when it counts nothing and nobody else has it (the
    /// map's `Arc` and the caller's are the only ones): the map holds only what is in use.
    fn forget_if_idle(&self, id: &LayerId, slot: &SlotRef) {
        let mut map = lock(&self.map);
        // With no other Arc, no other thread can hold or wait for the lock (getting an Arc
        // takes the map's lock, held here), so this never waits.
        if Arc::strong_count(slot) == 2 && slot.try_read().is_ok_and(|s| s.count == 0) {
            map.remove(id);
        }
    }

    /// Runs `f` with the layer's slot held exclusively (waiting for any other operation on the
    /// layer to end first).
    pub fn exclusive<T>(&self, id: &LayerId, f: impl FnOnce(&mut Slot) -> T) -> T {
        let slot = self.slot(id);
        let result = {
            let mut s = write(&slot);
            f(&mut s)
        };
        self.forget_if_idle(id, &slot);
        result
    }

    /// Runs `f` with the slots of `ids` held shared, taken in the order given: no exclusive
    /// operation on any of them runs meanwhile (their files are read, not changed).
    pub fn shared<T>(&self, ids: &[LayerId], f: impl FnOnce() -> T) -> T {
        let slots: Vec<SlotRef> = ids.iter().map(|id| self.slot(id)).collect();
        let result = {
            let _reading: Vec<_> = slots.iter().map(|s| read(s)).collect();
            f()
        };
        for (id, s) in ids.iter().zip(&slots) {
            self.forget_if_idle(id, s);
        }
        result
    }

    /// The layers that have a slot now (a reference counted, or an operation under way), for
    /// a cleanup to visit each with [`exclusive`](Slots::exclusive).
    pub fn ids(&self) -> Vec<LayerId> {
        let mut ids: Vec<LayerId> = lock(&self.map).keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn id(s: &str) -> LayerId {
        LayerId::new(s).unwrap()
    }

    #[test]
    fn first_acquire_mounts_last_release_unmounts() {
        let slots = Slots::new();
        let (mounts, unmounts) = (AtomicU32::new(0), AtomicU32::new(0));
        let get = || {
            slots.exclusive(&id("a"), |s| {
                s.acquire(|| {
                    mounts.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
            })
        };
        get().unwrap();
        get().unwrap();
        assert_eq!(mounts.load(Ordering::SeqCst), 1);
        assert_eq!(slots.ids(), [id("a")]);
        let put = || {
            slots.exclusive(&id("a"), |s| {
                s.release(|| {
                    unmounts.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
            })
        };
        put().unwrap();
        assert_eq!(unmounts.load(Ordering::SeqCst), 0);
        put().unwrap();
        assert_eq!(unmounts.load(Ordering::SeqCst), 1);
        assert!(slots.ids().is_empty(), "an idle slot is forgotten");
    }

    #[test]
    fn failures_take_and_drop_nothing() {
        let slots = Slots::new();
        let r = slots.exclusive(&id("a"), |s| s.acquire(|| Err("mount failed")));
        assert_eq!(r, Err("mount failed"));
        assert!(slots.ids().is_empty());
        slots
            .exclusive(&id("a"), |s| s.acquire(|| Ok::<(), ()>(())))
            .unwrap();
        let r = slots.exclusive(&id("a"), |s| s.release(|| Err("busy")));
        assert_eq!(r, Err("busy"));
        assert_eq!(slots.exclusive(&id("a"), |s| s.count()), 1);
    }

    #[test]
    fn adopt_counts_one_and_release_of_nothing_is_the_last() {
        let mut s = Slot::default();
        s.adopt();
        assert_eq!(s.count(), 1);
        s.adopt();
        assert_eq!(s.count(), 1, "adopting a counted mount changes nothing");
        s.acquire(|| Err(())).unwrap();
        assert_eq!(s.count(), 2);
        s.reset();
        let mut last = false;
        s.release(|| {
            last = true;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(last);
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn exclusive_excludes_and_shared_blocks_exclusive() {
        let slots = Arc::new(Slots::new());
        let inside = Arc::new(AtomicU32::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (slots, inside, start) = (slots.clone(), inside.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..50 {
                        slots.exclusive(&id("a"), |_| {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            std::thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A reader of `p` holds off an exclusive operation on `p` until it is done.
        let (tx, rx) = std::sync::mpsc::channel();
        let held = Arc::new(Barrier::new(2));
        let reader = {
            let (slots, held) = (slots.clone(), held.clone());
            std::thread::spawn(move || {
                slots.shared(&[id("p")], || {
                    held.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    tx.send("read done").unwrap();
                })
            })
        };
        held.wait();
        let order = slots.exclusive(&id("p"), |_| rx.try_recv());
        assert_eq!(order, Ok("read done"));
        reader.join().unwrap();
        assert!(slots.ids().is_empty());
    }

    #[test]
    fn shared_readers_run_together() {
        let slots = Arc::new(Slots::new());
        let both = Arc::new(Barrier::new(2));
        let t = {
            let (slots, both) = (slots.clone(), both.clone());
            std::thread::spawn(move || slots.shared(&[id("p"), id("q")], || both.wait()))
        };
        // Would deadlock if shared excluded shared.
        slots.shared(&[id("p")], || both.wait());
        t.join().unwrap();
    }
}
