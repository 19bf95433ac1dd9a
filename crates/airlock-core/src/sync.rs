//! The one way airlock takes a standard-library lock.
//!
//! A lock is poisoned only when a thread panicked while holding it. What airlock keeps behind
//! these locks stays usable after such a panic (each update is a single insert, remove or
//! replace), so every lock recovers the guard rather than failing or, worse, silently skipping
//! its work: a kill switch's cancellation or a relay's removal must not do less because some
//! unrelated task panicked once.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, recovering from poisoning.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes a read lock, recovering from poisoning.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes a write lock, recovering from poisoning.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_gives_its_value() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let r = std::sync::Arc::new(RwLock::new(1));
        let (m2, r2) = (m.clone(), r.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            let _w = r2.write();
            std::panic::panic_any("poison both");
        })
        .join();
        assert!(m.is_poisoned() && r.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), vec![1, 2]);
        *write(&r) = 5;
        assert_eq!(*read(&r), 5);
    }
}
