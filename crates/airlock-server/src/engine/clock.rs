//! Where the engine's time comes from.
//!
//! Every decision reads the time once, from the engine's [`Clock`]: approval expiry, rate
//! limits, breaker cool-downs, loop windows, daily budgets. `airlock serve` runs on the
//! [`SystemClock`]; tests run the engine on a [`ManualClock`] and move it, so that "thirty
//! seconds later" takes no time at all. (Telemetry span timestamps and the time a caller is
//! willing to wait for an answer are real time, not the engine's.)

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock { now: Mutex::new(start) }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = airlock_core::sync::lock(&self.now);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *airlock_core::sync::lock(&self.now) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *airlock_core::sync::lock(&self.now)
    }
}
