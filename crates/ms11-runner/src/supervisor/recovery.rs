//! The recovery worker: runs the pipeline for one incident on its own thread, so the
//! session loop keeps persisting and acknowledging the bot's work meanwhile. What the
//! worker cannot do itself (talk to the bot, roll the state back) it asks the loop for.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use ms11_recover::{Notification, Pipeline, PipelineResult, SessionControl};
use ms11_state::{Incident, RecoveryPolicyState};

use super::client::ClientSlot;

/// What the worker asks of the session loop.
pub enum WorkerRequest {
    /// Send `relog` to the bot and answer with its `relog_result`.
    Relog(Sender<Result<(), String>>),
    /// Roll the state back; answer with the generation restored from.
    RollBack(Option<u64>, Sender<Result<u64, String>>),
}

/// A running recovery.
pub struct RunningRecovery {
    /// The incident being handled.
    pub incident_id: String,
    /// Set to stop it (shutdown).
    pub cancel: Arc<AtomicBool>,
    /// Acknowledgements for `manual`.
    pub acks: Sender<()>,
    /// Whether `manual` is waiting for a person now.
    pub waiting_for_ack: Arc<AtomicBool>,
    /// Finished: the incident with its attempts, the updated counters, the result.
    pub done: Receiver<(Incident, RecoveryPolicyState, PipelineResult)>,
    /// Requests to the loop.
    pub requests: Receiver<WorkerRequest>,
    thread: Option<JoinHandle<()>>,
}

impl RunningRecovery {
    /// Starts the pipeline for `incident` on a worker thread.
    pub fn start(
        mut pipeline: Pipeline,
        mut incident: Incident,
        mut policy: RecoveryPolicyState,
        client: Arc<Mutex<ClientSlot>>,
        ack_file: Option<std::path::PathBuf>,
    ) -> std::io::Result<RunningRecovery> {
        let cancel = Arc::new(AtomicBool::new(false));
        let waiting_for_ack = Arc::new(AtomicBool::new(false));
        let (ack_tx, ack_rx) = bounded(4);
        let (done_tx, done_rx) = bounded(1);
        let (req_tx, req_rx) = bounded(4);
        let incident_id = incident.id.clone();
        let session_name = incident.session.clone();
        let worker_cancel = Arc::clone(&cancel);
        let worker_waiting = Arc::clone(&waiting_for_ack);
        let thread = std::thread::Builder::new()
            .name(format!("recover-{incident_id}"))
            .spawn(move || {
                let mut live = LiveSession {
                    name: session_name,
                    client,
                    requests: req_tx,
                    acks: ack_rx,
                    ack_file,
                    waiting_for_ack: worker_waiting,
                };
                let result = pipeline.run(&mut incident, &mut policy, &mut live, &worker_cancel);
                let _ = done_tx.send((incident, policy, result));
            })?;
        Ok(RunningRecovery {
            incident_id,
            cancel,
            acks: ack_tx,
            waiting_for_ack,
            done: done_rx,
            requests: req_rx,
            thread: Some(thread),
        })
    }

    /// Waits for the worker thread to end (after `done` was received or on cancel).
    pub fn join(mut self, timeout: Duration) {
        if let Some(thread) = self.thread.take() {
            let end = Instant::now() + timeout;
            while !thread.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// The session as the strategies see it.
struct LiveSession {
    name: String,
    client: Arc<Mutex<ClientSlot>>,
    requests: Sender<WorkerRequest>,
    acks: Receiver<()>,
    ack_file: Option<std::path::PathBuf>,
    waiting_for_ack: Arc<AtomicBool>,
}

impl LiveSession {
    fn with_client<T>(&self, f: impl FnOnce(&mut ClientSlot) -> T) -> Result<T, String> {
        let mut slot = self
            .client
            .lock()
            .map_err(|_| "client slot poisoned".to_owned())?;
        Ok(f(&mut slot))
    }
}

impl SessionControl for LiveSession {
    fn session_name(&self) -> &str {
        &self.name
    }

    fn client_running(&self) -> bool {
        self.with_client(|c| c.running()).unwrap_or(false)
    }

    fn stop_client(&mut self) -> Result<String, String> {
        self.with_client(ClientSlot::stop)
    }

    fn start_client(&mut self) -> Result<(), String> {
        self.with_client(ClientSlot::start)?.map(|_| ())
    }

    fn wait_client_ready(
        &mut self,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<String, String> {
        let readiness = self.with_client(|c| c.readiness())?;
        let client = Arc::clone(&self.client);
        readiness.wait(deadline, cancel, move || {
            client
                .lock()
                .ok()
                .and_then(|c| c.exit_status())
                .map(|e| e.to_string())
        })
    }

    fn request_relog(&mut self, deadline: Instant) -> Result<(), String> {
        let (tx, rx) = bounded(1);
        self.requests
            .send(WorkerRequest::Relog(tx))
            .map_err(|_| "the session loop is gone".to_owned())?;
        let wait = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(wait)
            .map_err(|_| "the bot did not answer the relog in time".to_owned())?
    }

    fn notify_human(&mut self, _notification: &Notification) {
        // The manual strategy already logged, notified the desktop and the webhook.
    }

    fn wait_for_ack(&mut self, deadline: Instant, cancel: &AtomicBool) -> bool {
        use std::sync::atomic::Ordering;
        self.waiting_for_ack.store(true, Ordering::SeqCst);
        let acked = loop {
            if cancel.load(Ordering::SeqCst) {
                break false;
            }
            if let Some(file) = &self.ack_file
                && file.exists()
            {
                let _ = std::fs::remove_file(file);
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            if self
                .acks
                .recv_timeout((deadline - now).min(Duration::from_millis(100)))
                .is_ok()
            {
                break true;
            }
        };
        self.waiting_for_ack.store(false, Ordering::SeqCst);
        acked
    }

    fn roll_back_state(&mut self, generation: Option<u64>) -> Result<u64, String> {
        let (tx, rx) = bounded(1);
        self.requests
            .send(WorkerRequest::RollBack(generation, tx))
            .map_err(|_| "the session loop is gone".to_owned())?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the session loop did not answer".to_owned())?
    }
}
