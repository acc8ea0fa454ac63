//! The exactly-once rules: what the runner must do for each bot message.
#![allow(clippy::unwrap_used)]

use ms11_agent::{Action, BotLogLevel, BotMessage, ExactlyOnce, ProtocolError, RunnerMessage};
use ms11_state::{SessionState, TaskState};
use serde_json::json;

fn state_with(tasks: &[&str]) -> SessionState {
    let mut state = SessionState::new("s-1", "naboo", "theed", 1_700_000_000.0);
    for id in tasks {
        state.add_task(id, &format!("task {id}")).unwrap();
    }
    state
}

fn hello(protocol: u32) -> BotMessage {
    BotMessage::Hello {
        protocol,
        bot: "ms11".into(),
        version: "2.4.0".into(),
    }
}

fn started(id: &str, seq: Option<u64>) -> BotMessage {
    BotMessage::TaskStarted { id: id.into(), seq }
}

fn done(id: &str, seq: u64) -> BotMessage {
    BotMessage::TaskDone { id: id.into(), seq }
}

#[test]
fn hello_asks_for_resume_and_resume_lists_in_flight_tasks_as_rerun() {
    let mut state = state_with(&["a", "b", "c"]);
    state.start_task("b", 1.0).unwrap();
    let mut rules = ExactlyOnce::new();
    assert_eq!(rules.handle(&mut state, &hello(1), 2.0), Action::SendResume);
    assert_eq!(rules.hello().unwrap().bot, "ms11");
    let RunnerMessage::Resume { state: sent, rerun } = rules.resume(&state) else {
        panic!("not a resume")
    };
    assert_eq!(rerun, ["b"]);
    assert_eq!(sent.task_queue(), ["b", "a", "c"]);
}

#[test]
fn a_newer_protocol_major_is_a_clear_error() {
    let mut state = state_with(&[]);
    let action = ExactlyOnce::new().handle(&mut state, &hello(2), 1.0);
    let Action::Incompatible(err) = action else {
        panic!("{action:?}")
    };
    assert!(matches!(
        err,
        ProtocolError::UnsupportedProtocol {
            found: 2,
            supported: 1,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "bot `ms11` 2.4.0 speaks agent protocol 2, this runner speaks protocol 1; \
         upgrade ms11-recovery or run a bot release that speaks this protocol"
    );
}

#[test]
fn task_done_needs_a_save_before_the_ack_and_a_repeat_only_an_ack() {
    let mut state = state_with(&["a", "b"]);
    let mut rules = ExactlyOnce::new();
    rules.handle(&mut state, &hello(1), 1.0);
    assert_eq!(
        rules.handle(&mut state, &started("a", None), 2.0),
        Action::Save
    );
    assert_eq!(
        rules.handle(&mut state, &done("a", 1), 3.0),
        Action::SaveThenAck { seq: 1 }
    );
    assert_eq!(state.task("a").unwrap().state, TaskState::Done);
    assert_eq!(state.task("a").unwrap().done_seq, Some(1));

    // The bot resends before the save finished (or after it failed): still save first.
    assert_eq!(
        rules.handle(&mut state, &done("a", 1), 4.0),
        Action::SaveThenAck { seq: 1 }
    );
    // A save that covered the change makes the repeat a plain ack.
    let mark = rules.change_mark();
    rules.saved(mark);
    assert!(!rules.has_unsaved_changes());
    assert_eq!(
        rules.handle(&mut state, &done("a", 1), 5.0),
        Action::Ack { seq: 1 }
    );
}

#[test]
fn a_save_taken_before_a_change_does_not_cover_it() {
    let mut state = state_with(&["a", "b"]);
    let mut rules = ExactlyOnce::new();
    rules.handle(&mut state, &done("a", 1), 1.0);
    let mark = rules.change_mark(); // snapshot taken here
    rules.handle(&mut state, &done("b", 2), 2.0); // arrives while saving
    rules.saved(mark);
    assert!(rules.has_unsaved_changes());
    assert_eq!(
        rules.handle(&mut state, &done("b", 2), 3.0),
        Action::SaveThenAck { seq: 2 }
    );
    assert_eq!(
        rules.handle(&mut state, &done("a", 1), 3.0),
        Action::SaveThenAck { seq: 1 }
    );
}

#[test]
fn a_done_task_is_never_started_again_the_bot_gets_a_fresh_resume() {
    let mut state = state_with(&["a", "b"]);
    let mut rules = ExactlyOnce::new();
    rules.handle(&mut state, &started("a", Some(1)), 1.0);
    rules.handle(&mut state, &done("a", 2), 2.0);
    let before = state.clone();
    let action = rules.handle(&mut state, &started("a", Some(3)), 3.0);
    let Action::Resync { reason } = action else {
        panic!("{action:?}")
    };
    assert!(
        reason.contains("`a`") && reason.contains("seq 2"),
        "{reason}"
    );
    assert_eq!(state, before, "a refused start changes nothing");
    let RunnerMessage::Resume { state: sent, rerun } = rules.resume(&state) else {
        panic!()
    };
    assert!(rerun.is_empty());
    assert_eq!(sent.task_queue(), ["b"]);
}

#[test]
fn task_done_for_an_id_never_handed_out_is_refused_not_invented_as_done() {
    let mut state = state_with(&["a"]);
    let mut rules = ExactlyOnce::new();
    rules.handle(&mut state, &hello(1), 1.0);
    let before = state.clone();
    let action = rules.handle(&mut state, &done("ghost", 9), 2.0);
    let Action::Resync { reason } = action else {
        panic!("no ack, no save for an unknown task: {action:?}")
    };
    assert!(
        reason.contains("`ghost`") && reason.contains("seq 9"),
        "{reason}"
    );
    assert_eq!(state, before, "nothing recorded");
    assert!(state.task("ghost").is_none());
    assert!(!rules.has_unsaved_changes());
}

#[test]
fn a_claim_with_seq_is_acked_after_a_save_and_a_resent_claim_is_not_a_new_attempt() {
    let mut state = state_with(&["a"]);
    let mut rules = ExactlyOnce::new();
    assert_eq!(
        rules.handle(&mut state, &started("a", Some(1)), 1.0),
        Action::SaveThenAck { seq: 1 }
    );
    rules.saved(rules.change_mark());
    assert_eq!(
        rules.handle(&mut state, &started("a", Some(1)), 6.0),
        Action::Ack { seq: 1 }
    );
    assert_eq!(state.task("a").unwrap().attempts, 1);
    // A new claim (new seq) of the in-flight task is a re-run: a second attempt.
    assert_eq!(
        rules.handle(&mut state, &started("a", Some(2)), 7.0),
        Action::SaveThenAck { seq: 2 }
    );
    assert_eq!(state.task("a").unwrap().attempts, 2);
}

#[test]
fn patches_change_fields_or_are_refused_with_the_field_named() {
    let mut state = state_with(&[]);
    let mut rules = ExactlyOnce::new();
    let patch = |v: serde_json::Value| BotMessage::State {
        patch: v.as_object().unwrap().clone(),
    };
    assert_eq!(
        rules.handle(
            &mut state,
            &patch(json!({"zone": "moenia", "xp_current": 10})),
            1.0
        ),
        Action::StateChanged {
            fields: vec!["xp_current".into(), "zone".into()]
        }
    );
    assert_eq!(state.zone, "moenia");
    assert_eq!(
        rules.handle(&mut state, &patch(json!({"zone": "moenia"})), 1.0),
        Action::None
    );

    let before = state.clone();
    for (bad, field) in [
        (json!({"xp_current": "lots"}), "xp_current"),
        (json!({"zone": ""}), "zone"),
        (json!({"tasks": []}), "tasks"),
    ] {
        let action = rules.handle(&mut state, &patch(bad), 2.0);
        let Action::Rejected { reason } = action else {
            panic!("{action:?}")
        };
        assert!(reason.contains(field), "{reason}");
        assert_eq!(state, before);
    }
}

#[test]
fn added_tasks_are_a_checkpoint_and_duplicates_are_refused() {
    let mut state = state_with(&["a"]);
    let mut rules = ExactlyOnce::new();
    let added = |id: &str| BotMessage::TaskAdded {
        id: id.into(),
        name: "travel".into(),
    };
    assert_eq!(rules.handle(&mut state, &added("b"), 1.0), Action::Save);
    assert_eq!(state.task_queue(), ["a", "b"]);
    assert!(matches!(
        rules.handle(&mut state, &added("a"), 1.0),
        Action::Rejected { reason } if reason.contains("`a`")
    ));
    assert!(matches!(
        rules.handle(&mut state, &added(""), 1.0),
        Action::Rejected { .. }
    ));
}

#[test]
fn heartbeat_log_and_relog_result_are_passed_on() {
    let mut state = state_with(&[]);
    let mut rules = ExactlyOnce::new();
    assert_eq!(
        rules.handle(&mut state, &BotMessage::Heartbeat, 1.0),
        Action::Beat
    );
    assert_eq!(
        rules.handle(
            &mut state,
            &BotMessage::Log {
                level: "WARNING".into(),
                msg: "low health".into()
            },
            1.0
        ),
        Action::Log {
            level: BotLogLevel::Warn,
            msg: "low health".into()
        }
    );
    assert_eq!(
        rules.handle(
            &mut state,
            &BotMessage::RelogResult {
                ok: false,
                reason: Some("wrong password".into())
            },
            1.0
        ),
        Action::RelogResult {
            ok: false,
            reason: Some("wrong password".into())
        }
    );
    assert!(!rules.has_unsaved_changes());
}

#[test]
fn patches_and_tasks_over_the_size_limits_are_refused_and_change_nothing() {
    let limits = ms11_state::StateLimits {
        max_patch_bytes: 1024,
        max_state_bytes: 8 * 1024,
    };
    let mut state = state_with(&["a"]);
    let mut rules = ExactlyOnce::with_limits(limits);
    rules.handle(&mut state, &hello(1), 1.0);
    let patch = |v: serde_json::Value| BotMessage::State {
        patch: v.as_object().unwrap().clone(),
    };
    // One patch over the patch limit, even if the state had room.
    let before = state.clone();
    let action = rules.handle(
        &mut state,
        &patch(json!({"zone": "moenia", "notes": "n".repeat(2000)})),
        2.0,
    );
    let Action::Rejected { reason } = action else {
        panic!("{action:?}")
    };
    assert!(
        reason.contains("the patch would be") && reason.contains("limit of 1024 bytes"),
        "{reason}"
    );
    assert_eq!(state, before, "refused whole: not even `zone` changed");
    // Patches within the limit until the state would outgrow its own.
    let mut last = Action::None;
    for i in 0..20 {
        last = rules.handle(
            &mut state,
            &patch(json!({ format!("k{i}"): "v".repeat(800) })),
            3.0,
        );
        if matches!(last, Action::Rejected { .. }) {
            break;
        }
    }
    let Action::Rejected { reason } = last else {
        panic!("the state limit was never reached: {last:?}")
    };
    assert!(reason.contains("the session state would be"), "{reason}");
    assert!(ms11_state::pretty_json_len(&state) <= limits.max_state_bytes);
    // A task that would not fit is refused too, and not added.
    let big_id = "t".repeat(4000);
    let added = BotMessage::TaskAdded {
        id: big_id.clone(),
        name: String::new(),
    };
    assert!(matches!(
        rules.handle(&mut state, &added, 4.0),
        Action::Rejected { reason } if reason.contains("task_added")
    ));
    assert!(matches!(
        rules.handle(&mut state, &started(&big_id, Some(5)), 4.0),
        Action::Rejected { reason } if reason.contains("task_started")
    ));
    assert!(state.task(&big_id).is_none());
    // Small tasks still fit.
    assert_eq!(
        rules.handle(&mut state, &started("a", Some(6)), 5.0),
        Action::SaveThenAck { seq: 6 }
    );
}
