//! Incident ids (`<session>-<n>`) and wall-clock timestamps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ms11_state::{DetectorSource, Incident, IncidentKind};

/// Hands out `<session>-<n>` ids from one counter shared by all detectors of a session.
///
/// Clones share the counter. The runner starts it past the highest id already in the
/// session's crash history ([`IncidentIds::starting_at`]) so ids stay unique across
/// runner restarts.
#[derive(Debug, Clone)]
pub struct IncidentIds {
    session: Arc<str>,
    next: Arc<AtomicU64>,
}

impl IncidentIds {
    /// Ids `<session>-1`, `<session>-2`, ...
    pub fn new(session: &str) -> Self {
        Self::starting_at(session, 1)
    }

    /// Ids starting at `<session>-<first>`.
    pub fn starting_at(session: &str, first: u64) -> Self {
        IncidentIds {
            session: Arc::from(session),
            next: Arc::new(AtomicU64::new(first)),
        }
    }

    /// The session name.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The next id.
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.session)
    }

    /// A new incident with the next id and the session set.
    pub fn incident(
        &self,
        kind: IncidentKind,
        source: DetectorSource,
        message: impl Into<String>,
        at: f64,
    ) -> Incident {
        let mut incident = Incident::new(self.next_id(), kind, source, message, at);
        incident.session = self.session.to_string();
        incident
    }
}

/// Now, as unix seconds (the timestamp format of [`Incident`]).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_counter() {
        let a = IncidentIds::starting_at("main", 7);
        let b = a.clone();
        assert_eq!(a.next_id(), "main-7");
        assert_eq!(b.next_id(), "main-8");
        let inc = a.incident(IncidentKind::Stall, DetectorSource::Stall, "quiet", 1.0);
        assert_eq!(inc.id, "main-9");
        assert_eq!(inc.session, "main");
    }
}
