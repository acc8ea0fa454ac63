//! Turning one line of bytes into a protocol message, or saying why it is not one.
//! Never fails and never panics: anything that is not a protocol message is bot output.

use serde_json::Value;

use crate::message::{BotMessage, ProtocolMessage};

/// What one line turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<M = BotMessage> {
    /// A message of a known type.
    Message(M),
    /// A JSON object with a string `type` this version does not know: logged and ignored
    /// (forward compatibility).
    UnknownType(String),
    /// A known `type` whose fields are missing or of the wrong type.
    Malformed {
        /// The `type`.
        type_name: String,
        /// What is wrong, naming the field.
        error: String,
    },
    /// Not JSON, or JSON without a string `type`: the bot's ordinary output. Invalid
    /// UTF-8 is replaced (lossy); the line terminator (`\n` or `\r\n`) is removed.
    NotProtocol(String),
}

/// Decodes one line (with or without its `\n`) sent by the bot.
pub fn decode_bot_line(line: &[u8]) -> Decoded<BotMessage> {
    decode_line(line)
}

/// Decodes one line of either direction.
pub fn decode_line<M: ProtocolMessage>(line: &[u8]) -> Decoded<M> {
    let line = trim_terminator(line);
    let not_protocol = || Decoded::NotProtocol(String::from_utf8_lossy(line).into_owned());
    // Cheap pre-check: a protocol line is an object; most bot output is not.
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return not_protocol();
    }
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return not_protocol();
    };
    let type_name = match value.get("type") {
        Some(Value::String(name)) => name.clone(),
        _ => return not_protocol(),
    };
    if !M::TYPES.contains(&type_name.as_str()) {
        return Decoded::UnknownType(type_name);
    }
    if let Some(error) = check_fields::<M>(&type_name, &value) {
        return Decoded::Malformed { type_name, error };
    }
    // An optional field sent as `null` means "absent".
    let mut value = value;
    if let Value::Object(map) = &mut value {
        map.retain(|key, v| {
            !v.is_null()
                || !M::FIELDS
                    .iter()
                    .any(|&(ty, field, _, required)| ty == type_name && field == key && !required)
        });
    }
    match serde_path_to_error::deserialize::<_, M>(value) {
        Ok(message) => Decoded::Message(message),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner().to_string();
            let error = if path == "." {
                inner
            } else {
                format!("field `{path}`: {inner}")
            };
            Decoded::Malformed { type_name, error }
        }
    }
}

/// Names the first field of a known type that is missing or has the wrong kind. `null`
/// counts as absent for optional fields.
fn check_fields<M: ProtocolMessage>(type_name: &str, value: &Value) -> Option<String> {
    for &(ty, field, kind, required) in M::FIELDS {
        if ty != type_name {
            continue;
        }
        match value.get(field) {
            None | Some(Value::Null) if required => {
                return Some(format!(
                    "field `{field}` is missing (expected {})",
                    kind.describe()
                ));
            }
            None | Some(Value::Null) => {}
            Some(v) if !kind.matches(v) => {
                return Some(format!(
                    "field `{field}` must be {}, found {}",
                    kind.describe(),
                    json_kind(v)
                ));
            }
            Some(_) => {}
        }
    }
    None
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "an integer",
        Value::Number(_) => "a negative or fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn trim_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RunnerMessage;

    #[test]
    fn known_messages_decode_and_unknown_fields_are_ignored() {
        assert_eq!(
            decode_bot_line(br#"{"type":"task_done","id":"t-42","seq":17,"extra":[1,2]}"#),
            Decoded::Message(BotMessage::TaskDone {
                id: "t-42".into(),
                seq: 17
            })
        );
        assert_eq!(
            decode_bot_line(b"{\"type\":\"heartbeat\"}\r\n"),
            Decoded::Message(BotMessage::Heartbeat)
        );
        assert_eq!(
            decode_bot_line(br#"{"type":"hello","protocol_version":1}"#),
            Decoded::Message(BotMessage::Hello {
                protocol: 1,
                bot: String::new(),
                version: String::new()
            })
        );
    }

    #[test]
    fn unknown_types_and_output_are_told_apart() {
        assert_eq!(
            decode_bot_line(br#"{"type":"teleport","to":"moon"}"#),
            Decoded::UnknownType("teleport".into())
        );
        for line in [
            &b"Loading navmesh... done"[..],
            b"{not json",
            b"[1,2,3]",
            br#"{"kind":"task_done"}"#,
            br#"{"type":7}"#,
            b"",
        ] {
            assert!(
                matches!(decode_bot_line(line), Decoded::NotProtocol(_)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            decode_bot_line(b"caf\xff\n"),
            Decoded::NotProtocol("caf\u{fffd}".into())
        );
    }

    #[test]
    fn a_known_type_with_a_bad_field_names_the_field() {
        let decoded = decode_bot_line(br#"{"type":"task_done","id":"t-1","seq":"x"}"#);
        let Decoded::Malformed { type_name, error } = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(type_name, "task_done");
        assert!(error.contains("seq"), "{error}");
        assert_eq!(
            error,
            "field `seq` must be a non-negative integer, found a string"
        );
        let missing = decode_bot_line(br#"{"type":"task_done","id":"t-1"}"#);
        assert_eq!(
            missing,
            Decoded::Malformed {
                type_name: "task_done".into(),
                error: "field `seq` is missing (expected a non-negative integer)".into()
            }
        );
        assert_eq!(
            decode_bot_line(br#"{"type":"task_added","id":"t-1","name":null}"#),
            Decoded::Message(BotMessage::TaskAdded {
                id: "t-1".into(),
                name: String::new()
            })
        );
        assert_eq!(
            decode_bot_line(br#"{"type":"relog_result","ok":false,"reason":null}"#),
            Decoded::Message(BotMessage::RelogResult {
                ok: false,
                reason: None
            })
        );
    }

    #[test]
    fn runner_messages_decode_too() {
        assert_eq!(
            decode_line::<RunnerMessage>(br#"{"type":"ack","seq":3}"#),
            Decoded::Message(RunnerMessage::Ack { seq: 3 })
        );
        assert_eq!(
            decode_line::<RunnerMessage>(br#"{"type":"task_done","id":"a","seq":3}"#),
            Decoded::UnknownType("task_done".into())
        );
    }
}
