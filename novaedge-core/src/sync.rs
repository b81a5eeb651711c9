//! Locks that outlive a panic.
//!
//! A thread that panics while holding a `std::sync::Mutex` poisons it, and `lock()` then
//! returns an error for everyone else. The data behind NovaEdge's locks (metric indexes, a
//! request's spans and upstream) stay consistent between statements, so a poisoned lock is
//! taken as it is rather than spreading one request's panic to every later request.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
