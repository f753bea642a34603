//! Each endpoint's health counters and record: the live state the health checks, passive
//! outlier detection and the admin API share. It survives pool reloads with its endpoint.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::SystemTime;

/// The result of the newest active check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub at: SystemTime,
    pub passed: bool,
    /// Why it failed, or what passed (`"200"`, `"connected"`).
    pub detail: String,
}

/// What the admin API shows about an endpoint's health history.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the endpoint's health state last changed (or the record was created).
    pub since: SystemTime,
    pub last_check: Option<CheckResult>,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub ejections: u64,
    /// Until when the current ejection lasts.
    pub ejected_until: Option<SystemTime>,
}

/// One endpoint's health counters and record. Shared by every pool generation that keeps the
/// endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    pub(crate) passes_in_a_row: AtomicU32,
    pub(crate) fails_in_a_row: AtomicU32,
    pub(crate) consecutive_5xx: AtomicU32,
    pub(crate) consecutive_gateway: AtomicU32,
    pub(crate) consecutive_connect: AtomicU32,
    /// Ejections without a quiet period in between: the next lasts this many base times.
    pub(crate) ejection_streak: AtomicU32,
    /// `balance::Nanos` at which the current ejection ends; 0 = not ejected.
    pub(crate) ejected_until: AtomicU64,
    /// When the last ejection ended, for resetting the streak.
    pub(crate) returned_at: AtomicU64,
    pub(crate) record: Mutex<Record>,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            passes_in_a_row: AtomicU32::new(0),
            fails_in_a_row: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_connect: AtomicU32::new(0),
            ejection_streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            returned_at: AtomicU64::new(0),
            record: Mutex::new(Record {
                since: SystemTime::now(),
                last_check: None,
                checks_passed: 0,
                checks_failed: 0,
                ejections: 0,
                ejected_until: None,
            }),
        }
    }
}

impl EndpointHealth {
    pub fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn with_record(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.record.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Notes that the endpoint's health state changed now.
    pub(crate) fn state_changed(&self) {
        self.with_record(|r| r.since = SystemTime::now());
    }
}
