//! The wire form: snapshots of every message, encode → decode round trips, and a decoder
//! that never panics on arbitrary input.
#![allow(clippy::unwrap_used)]

use ms11_agent::{
    BotMessage, Decoded, LineReader, ProtocolMessage, RunnerMessage, decode_bot_line, decode_line,
};
use ms11_state::SessionState;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn sample_state() -> SessionState {
    let mut state = SessionState::new("s-1", "naboo", "theed", 1_700_000_000.0);
    state.add_task("t-41", "travel to Theed").unwrap();
    state.add_task("t-42", "kill 10 kaadu").unwrap();
    state.start_task("t-41", 1_700_000_010.0).unwrap();
    state
}

fn all_bot_messages() -> Vec<BotMessage> {
    vec![
        BotMessage::Hello {
            protocol: 1,
            bot: "ms11".into(),
            version: "2.4.0".into(),
        },
        BotMessage::State {
            patch: json!({"planet": "naboo", "zone": "theed", "xp_current": 5100})
                .as_object()
                .unwrap()
                .clone(),
        },
        BotMessage::TaskAdded {
            id: "t-7".into(),
            name: "travel to Theed".into(),
        },
        BotMessage::TaskStarted {
            id: "t-42".into(),
            seq: None,
        },
        BotMessage::TaskStarted {
            id: "t-42".into(),
            seq: Some(16),
        },
        BotMessage::TaskDone {
            id: "t-42".into(),
            seq: 17,
        },
        BotMessage::Heartbeat,
        BotMessage::Log {
            level: "info".into(),
            msg: "arrived".into(),
        },
        BotMessage::RelogResult {
            ok: true,
            reason: None,
        },
        BotMessage::RelogResult {
            ok: false,
            reason: Some("server full".into()),
        },
    ]
}

fn all_runner_messages() -> Vec<RunnerMessage> {
    vec![
        RunnerMessage::resume(&sample_state()),
        RunnerMessage::Ack { seq: 17 },
        RunnerMessage::Relog,
        RunnerMessage::Shutdown,
    ]
}

fn lines<M: ProtocolMessage>(messages: &[M]) -> String {
    messages
        .iter()
        .map(|m| String::from_utf8(m.to_line().unwrap()).unwrap())
        .collect()
}

#[test]
fn bot_messages_wire_form() {
    insta::assert_snapshot!(lines(&all_bot_messages()));
}

#[test]
fn runner_messages_wire_form() {
    insta::assert_snapshot!(lines(&all_runner_messages()));
}

#[test]
fn every_message_round_trips() {
    for message in all_bot_messages() {
        let line = message.to_line().unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode_bot_line(&line), Decoded::Message(message));
    }
    for message in all_runner_messages() {
        let line = message.to_line().unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            decode_line::<RunnerMessage>(&line),
            Decoded::Message(message)
        );
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z\u{e9}\"\\\\\n ]{0,12}".prop_map(Value::String),
    ]
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,10}", json_leaf(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn text() -> impl Strategy<Value = String> {
    // Any characters, including newlines, quotes, control and non-BMP characters.
    any::<String>()
}

fn bot_message() -> impl Strategy<Value = BotMessage> {
    prop_oneof![
        (any::<u32>(), text(), text()).prop_map(|(protocol, bot, version)| BotMessage::Hello {
            protocol,
            bot,
            version
        }),
        json_object().prop_map(|patch| BotMessage::State { patch }),
        (text(), text()).prop_map(|(id, name)| BotMessage::TaskAdded { id, name }),
        (text(), any::<Option<u64>>()).prop_map(|(id, seq)| BotMessage::TaskStarted { id, seq }),
        (text(), any::<u64>()).prop_map(|(id, seq)| BotMessage::TaskDone { id, seq }),
        Just(BotMessage::Heartbeat),
        (text(), text()).prop_map(|(level, msg)| BotMessage::Log { level, msg }),
        (any::<bool>(), any::<Option<String>>())
            .prop_map(|(ok, reason)| BotMessage::RelogResult { ok, reason }),
    ]
}

fn runner_message() -> impl Strategy<Value = RunnerMessage> {
    prop_oneof![
        (
            prop::collection::vec("[a-z0-9-]{1,8}", 0..6),
            prop::collection::vec(-1.0e6f64..1.0e6, 2..=3),
            any::<i64>()
        )
            .prop_map(|(ids, coordinates, quest_step)| {
                let mut state = SessionState::new("s", "tatooine", "mos eisley", 1.0e9);
                state.coordinates = coordinates;
                state.quest_step = quest_step;
                for id in &ids {
                    let _ = state.add_task(id, "");
                }
                if let Some(first) = ids.first() {
                    state.start_task(first, 2.0e9).unwrap();
                }
                RunnerMessage::resume(&state)
            }),
        any::<u64>().prop_map(|seq| RunnerMessage::Ack { seq }),
        Just(RunnerMessage::Relog),
        Just(RunnerMessage::Shutdown),
    ]
}

proptest! {
    #[test]
    fn bot_messages_round_trip(message in bot_message()) {
        let line = message.to_line().unwrap();
        // One line: strings with newlines are escaped.
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(decode_bot_line(&line), Decoded::Message(message));
    }

    #[test]
    fn runner_messages_round_trip(message in runner_message()) {
        let line = message.to_line().unwrap();
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(decode_line::<RunnerMessage>(&line), Decoded::Message(message));
    }

    #[test]
    fn the_decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_bot_line(&bytes);
        let _ = decode_line::<RunnerMessage>(&bytes);
    }

    #[test]
    fn the_decoder_never_panics_on_json_like_lines(
        ty in prop_oneof![
            Just("hello".to_owned()), Just("state".to_owned()), Just("task_done".to_owned()),
            Just("task_started".to_owned()), Just("task_added".to_owned()), Just("log".to_owned()),
            Just("relog_result".to_owned()), Just("heartbeat".to_owned()), "[a-z_]{0,8}"
        ],
        fields in json_object(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut object = fields;
        object.insert("type".into(), Value::String(ty));
        let line = serde_json::to_vec(&Value::Object(object)).unwrap();
        let decoded = decode_bot_line(&line);
        prop_assert!(!matches!(decoded, Decoded::NotProtocol(_)));
        // Any prefix of it (a line cut short) is handled too.
        let prefix = &line[..cut.index(line.len() + 1)];
        let _ = decode_bot_line(prefix);
    }

    #[test]
    fn non_protocol_text_comes_back_as_the_same_text(line in "[^\n{]{0,80}") {
        prop_assert_eq!(decode_bot_line(line.as_bytes()), Decoded::NotProtocol(line.strip_suffix('\r').unwrap_or(&line).to_owned()));
    }

    #[test]
    fn the_line_reader_never_holds_more_than_the_limit(
        bytes in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..2000),
        max in 1usize..64,
    ) {
        let mut reader = LineReader::new(bytes.as_slice(), max);
        let mut total = 0u64;
        let mut count = 0u64;
        while let Some(line) = reader.next_line().unwrap() {
            prop_assert!(line.bytes.len() <= max);
            prop_assert!(!line.bytes.contains(&b'\n'));
            total += line.full_len;
            count += 1;
        }
        // Every byte is accounted for: line contents plus the newlines.
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        prop_assert_eq!(total + newlines, bytes.len() as u64);
        let expected_lines = newlines + u64::from(bytes.last().is_some_and(|&b| b != b'\n'));
        prop_assert_eq!(count, expected_lines);
    }
}
