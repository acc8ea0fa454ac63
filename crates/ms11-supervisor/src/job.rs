//! Recovery jobs: the pipeline runs on a thread of its own and acts on the session only
//! by message. Every [`SessionControl`] call becomes a [`JobRequest`] to the session
//! loop, which answers when it can (at once, or when the awaited exit, `hello` or
//! acknowledgement arrives) and never blocks on the job. When the loop cancels a job
//! it drops the job's pending answers, which wakes the job at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use ms11_recover::{Notification, Pipeline, PipelineResult, Round, SessionControl};
use ms11_state::{Incident, RecoveryPolicyState};

use crate::command::Reply;

/// What a job asks of the loop.
#[derive(Debug)]
pub(crate) enum JobRequest {
    ClientRunning(Reply<bool>),
    StopClient(Reply<Result<String, String>>),
    StartClient(Reply<Result<(), String>>),
    WaitClientReady {
        deadline: Instant,
        reply: Reply<Result<String, String>>,
    },
    Relog {
        deadline: Instant,
        reply: Reply<Result<(), String>>,
    },
    RunCommand {
        argv: Vec<String>,
        deadline: Instant,
        reply: Reply<Result<(), String>>,
    },
    RestartBot {
        deadline: Instant,
        reply: Reply<Result<String, String>>,
    },
    Notify(Notification),
    WaitAck {
        deadline: Instant,
        reply: Reply<bool>,
    },
    RollBack {
        generation: Option<u64>,
        reply: Reply<Result<u64, String>>,
    },
}

/// What jobs send to the loop.
#[derive(Debug)]
pub(crate) enum JobReport {
    /// A recovery job asks for something.
    Request { job: u64, request: JobRequest },
    /// A recovery job finished.
    Done {
        job: u64,
        incident: Box<Incident>,
        policy: Box<RecoveryPolicyState>,
        result: PipelineResult,
    },
    /// A recovery job panicked (a strategy's bug); its incident is in the loop's copy.
    Panicked { job: u64, message: String },
    /// A screenshot of an incident was taken, or not.
    Screenshot {
        incident: String,
        result: Result<ms11_screenshot::Saved, String>,
    },
    /// A notification was delivered, or not.
    Delivered {
        channel: &'static str,
        incident: String,
        result: Result<(), String>,
    },
}

/// Everything a recovery job needs.
pub(crate) struct RecoveryJob {
    pub(crate) job: u64,
    pub(crate) session: String,
    pub(crate) pipeline: Pipeline,
    pub(crate) incident: Incident,
    pub(crate) policy: RecoveryPolicyState,
    pub(crate) round: Round,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) reports: Sender<JobReport>,
}

impl RecoveryJob {
    /// Runs the pipeline on its own thread; the result comes back as a report.
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("recover-{}", self.incident.id))
            .spawn(move || self.run())
    }

    fn run(self) {
        let RecoveryJob {
            job,
            session,
            mut pipeline,
            mut incident,
            mut policy,
            round,
            cancel,
            reports,
        } = self;
        let mut remote = RemoteSession {
            job,
            session,
            reports: reports.clone(),
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pipeline.run_round(&mut incident, &mut policy, &mut remote, &cancel, round)
        }));
        let report = match run {
            Ok(result) => JobReport::Done {
                job,
                incident: Box::new(incident),
                policy: Box::new(policy),
                result,
            },
            Err(panic) => JobReport::Panicked {
                job,
                message: crate::panic_message(panic.as_ref()),
            },
        };
        let _ = reports.send(report);
    }
}

/// The session as a job sees it: every call is a message to the loop.
struct RemoteSession {
    job: u64,
    session: String,
    reports: Sender<JobReport>,
}

impl RemoteSession {
    /// Sends a request and waits for its answer. The loop answers or drops the reply
    /// (cancellation, shutdown), so this never waits for nothing.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> JobRequest) -> Result<T, String> {
        let (tx, rx) = bounded(1);
        self.reports
            .send(JobReport::Request {
                job: self.job,
                request: make(tx),
            })
            .map_err(|_| "the session loop is gone".to_owned())?;
        rx.recv()
            .map_err(|_| "cancelled: the session loop dropped the request".to_owned())
    }
}

impl SessionControl for RemoteSession {
    fn session_name(&self) -> &str {
        &self.session
    }

    fn client_running(&self) -> bool {
        self.ask(JobRequest::ClientRunning).unwrap_or(false)
    }

    fn stop_client(&mut self) -> Result<String, String> {
        self.ask(JobRequest::StopClient)?
    }

    fn start_client(&mut self) -> Result<(), String> {
        self.ask(JobRequest::StartClient)?
    }

    fn wait_client_ready(
        &mut self,
        deadline: Instant,
        _cancel: &AtomicBool,
    ) -> Result<String, String> {
        self.ask(|reply| JobRequest::WaitClientReady { deadline, reply })?
    }

    fn request_relog(&mut self, deadline: Instant) -> Result<(), String> {
        self.ask(|reply| JobRequest::Relog { deadline, reply })?
    }

    fn run_command(&mut self, argv: &[String], deadline: Instant) -> Result<(), String> {
        let argv = argv.to_vec();
        self.ask(|reply| JobRequest::RunCommand {
            argv,
            deadline,
            reply,
        })?
    }

    fn restart_bot(&mut self, deadline: Instant) -> Result<String, String> {
        self.ask(|reply| JobRequest::RestartBot { deadline, reply })?
    }

    fn notify_human(&mut self, notification: &Notification) {
        let _ = self.reports.send(JobReport::Request {
            job: self.job,
            request: JobRequest::Notify(notification.clone()),
        });
    }

    fn wait_for_ack(&mut self, deadline: Instant, _cancel: &AtomicBool) -> bool {
        self.ask(|reply| JobRequest::WaitAck { deadline, reply })
            .unwrap_or(false)
    }

    fn roll_back_state(&mut self, generation: Option<u64>) -> Result<u64, String> {
        self.ask(|reply| JobRequest::RollBack { generation, reply })?
    }
}
