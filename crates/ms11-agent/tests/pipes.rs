//! The reader thread on real pipes from real processes: floods and huge lines.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::{Command, Stdio};

use ms11_agent::{BotEvent, BotMessage, ReaderConfig, spawn_reader};

fn run_shell(script: &str) -> Vec<BotEvent> {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = spawn_reader(stdout, ReaderConfig::new("shell-bot")).unwrap();
    let events: Vec<_> = reader.events.iter().collect();
    assert!(child.wait().unwrap().success());
    assert!(reader.join());
    events
}

#[test]
fn a_flood_of_output_is_counted_and_the_message_behind_it_arrives() {
    let events =
        run_shell(r#"yes 'Loading navmesh tile' | head -n 200000; echo '{"type":"heartbeat"}'"#);
    assert_eq!(events[0], BotEvent::Message(BotMessage::Heartbeat));
    let BotEvent::Closed(summary) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(summary.output_lines, 200_000);
    assert_eq!(summary.messages, 1);
    assert_eq!(events.len(), 2);
}

#[test]
fn a_line_of_several_mebibytes_is_cut_and_the_next_line_still_decodes() {
    let events = run_shell(
        r#"head -c 5000000 /dev/zero | tr '\0' '{'; echo; echo '{"type":"task_done","id":"t-1","seq":9}'"#,
    );
    assert_eq!(
        events[0],
        BotEvent::Message(BotMessage::TaskDone {
            id: "t-1".into(),
            seq: 9
        })
    );
    let BotEvent::Closed(summary) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (summary.cut_lines, summary.output_lines, summary.lines),
        (1, 1, 2)
    );
}
