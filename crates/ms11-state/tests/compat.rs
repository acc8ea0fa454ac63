//! Compatibility with the seed's files, serialised forms (insta snapshots), validation
//! messages, and property-based round trips.

#![allow(clippy::unwrap_used)]

use ms11_state::{
    Attempt, AttemptOutcome, DetectorSource, Incident, IncidentKind, Resolution, ResolutionStatus,
    SessionState, StateError, TaskState,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SEED: &str = include_str!("fixtures/seed_state.json");
const SEED_MINIMAL: &str = include_str!("fixtures/seed_state_minimal.json");

const SEED_FIELDS: [&str; 18] = [
    "timestamp",
    "planet",
    "zone",
    "coordinates",
    "current_quest",
    "quest_step",
    "xp_level",
    "xp_current",
    "xp_next_level",
    "equipped_weapon",
    "active_modes",
    "task_queue",
    "session_duration",
    "crash_count",
    "last_save_time",
    "recovery_enabled",
    "auto_restart",
    "auto_relog",
];

#[test]
fn the_seed_sample_state_loads_and_migrates_v0_to_v1() {
    let loaded = SessionState::from_json_slice(SEED.as_bytes()).unwrap();
    let migration = loaded.migration.unwrap();
    assert_eq!((migration.from, migration.to), (0, 1));
    let s = loaded.state;
    assert_eq!(s.planet, "naboo");
    assert_eq!(s.coordinates, vec![-4856.0, 4162.0]);
    assert_eq!(s.current_quest.as_ref().unwrap()["giver"], "Captain Panaka");
    let ids: Vec<&str> = s.tasks().iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "travel_to_theed_spaceport",
            "deliver_datadisk",
            "hunt_kaadu",
            "hunt_kaadu#2"
        ]
    );
    assert!(s.tasks().iter().all(|t| t.state == TaskState::Pending));
    assert_eq!(s.task_queue(), ids);
    assert_eq!(s.session_id, "seed-1705329000");
    let minimal = SessionState::from_json_slice(SEED_MINIMAL.as_bytes()).unwrap();
    assert!(minimal.state.current_quest.is_none() && minimal.state.equipped_weapon.is_none());
    assert_eq!(minimal.state.coordinates.len(), 3);
}

#[test]
fn our_output_keeps_all_18_seed_fields_with_the_seed_types() {
    let s = SessionState::from_json_slice(SEED.as_bytes())
        .unwrap()
        .state;
    let ours: Value = serde_json::from_slice(&s.to_json_pretty().unwrap()).unwrap();
    let seed: Value = serde_json::from_str(SEED).unwrap();
    for field in SEED_FIELDS {
        let (a, b) = (&ours[field], &seed[field]);
        assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "type of {field}"
        );
        if field != "task_queue" {
            assert_eq!(a, b, "value of {field}");
        }
    }
    // Coordinates stay integers, as the seed's List[int].
    assert!(ours["coordinates"][0].is_i64());
}

#[test]
fn unknown_fields_survive_a_load_save_round_trip() {
    let mut v: Value = serde_json::from_str(SEED).unwrap();
    v["ocr_confidence"] = json!({"planet": 0.98});
    v["future_top_level"] = json!([1, 2, 3]);
    let s = SessionState::from_json_value(v).unwrap().state;
    let out: Value = serde_json::from_slice(&s.to_json_pretty().unwrap()).unwrap();
    assert_eq!(out["ocr_confidence"], json!({"planet": 0.98}));
    assert_eq!(out["future_top_level"], json!([1, 2, 3]));
    let again = SessionState::from_json_value(out).unwrap().state;
    assert_eq!(again, s);
}

#[test]
fn validation_errors_name_every_broken_field() {
    let mut v: Value = serde_json::from_str(SEED_MINIMAL).unwrap();
    v["planet"] = json!("");
    v["timestamp"] = json!(0);
    v["xp_current"] = json!(2000);
    v["coordinates"] = json!([1]);
    v["session_duration"] = json!(-5.0);
    let err = SessionState::from_json_value(v).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"invalid state: field `planet` must not be empty; field `timestamp` must be greater than 0, found 0; field `session_duration` must not be negative, found -5; field `xp_current` (2000) must not exceed `xp_next_level` (1000); field `coordinates` must hold 2 or 3 numbers, found 1");
}

#[test]
fn type_errors_name_the_field_path() {
    let mut v: Value = serde_json::from_str(SEED_MINIMAL).unwrap();
    v["xp_level"] = json!("fourteen");
    let err = SessionState::from_json_value(v).unwrap_err();
    assert!(
        matches!(&err, StateError::Field { field, .. } if field == "xp_level"),
        "{err}"
    );
    let mut v: Value = serde_json::from_str(SEED_MINIMAL).unwrap();
    v.as_object_mut().unwrap().remove("zone");
    let err = SessionState::from_json_value(v).unwrap_err().to_string();
    assert!(err.contains("zone"), "{err}");
    let err = SessionState::from_json_slice(b"[]")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "expected a JSON object with the session state fields, found an array"
    );
    let err = SessionState::from_json_slice(br#"{"schema_version": 7}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema_version 7 is newer"), "{err}");
}

#[test]
fn a_bot_patch_changes_game_fields_and_is_refused_whole_when_invalid() {
    let mut s = SessionState::from_json_slice(SEED.as_bytes())
        .unwrap()
        .state;
    let patch = json!({"planet": "tatooine", "zone": "mos_eisley", "xp_current": 6000});
    let changed = s.apply_patch(patch.as_object().unwrap()).unwrap();
    assert_eq!(changed, ["planet", "xp_current", "zone"]);
    assert_eq!(s.planet, "tatooine");
    let before = s.clone();
    let bad = json!({"planet": "corellia", "xp_current": 999_999});
    let err = s
        .apply_patch(bad.as_object().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("xp_current"), "{err}");
    assert_eq!(s, before);
    let forbidden = json!({"task_queue": []});
    assert!(s.apply_patch(forbidden.as_object().unwrap()).is_err());
}

fn sample_state() -> SessionState {
    let mut s = SessionState::from_json_slice(SEED.as_bytes())
        .unwrap()
        .state;
    s.start_task("travel_to_theed_spaceport", 1_705_329_010.0)
        .unwrap();
    s.complete_task("travel_to_theed_spaceport", Some(1), 1_705_329_050.0)
        .unwrap();
    s.start_task("deliver_datadisk", 1_705_329_051.0).unwrap();
    let mut incident = Incident::new(
        "seed-1705329000-1",
        IncidentKind::Disconnect,
        DetectorSource::LogPattern,
        "Connection to server lost. Please reconnect.",
        1_705_329_060.0,
    );
    incident.session = "main".into();
    incident.pattern = Some("connection_lost".into());
    incident.record_attempt(Attempt {
        strategy: "restart".into(),
        started_at: 1_705_329_060.0,
        duration_ms: 0,
        outcome: AttemptOutcome::Skipped,
        reason: Some("client is running; a relog is enough".into()),
    });
    incident.record_attempt(Attempt {
        strategy: "relog".into(),
        started_at: 1_705_329_060.1,
        duration_ms: 2300,
        outcome: AttemptOutcome::Recovered,
        reason: None,
    });
    incident.resolve(Resolution {
        status: ResolutionStatus::Recovered,
        strategy: Some("relog".into()),
        at: 1_705_329_062.4,
        time_to_recover_ms: Some(2400),
        note: None,
    });
    s.record_incident(incident);
    s
}

#[test]
fn snapshot_of_a_saved_state() {
    let s = sample_state();
    insta::assert_snapshot!(String::from_utf8(s.to_json_pretty().unwrap()).unwrap());
}

#[test]
fn snapshot_of_an_incident_is_a_superset_of_crash_info() {
    let s = sample_state();
    let incident = serde_json::to_value(&s.crash_history[0]).unwrap();
    for field in [
        "error_type",
        "error_message",
        "timestamp",
        "recovery_attempted",
        "recovery_successful",
    ] {
        assert!(incident.get(field).is_some(), "CrashInfo field {field}");
    }
    insta::assert_json_snapshot!(incident);
}

fn arb_state() -> impl Strategy<Value = SessionState> {
    (
        "[a-z]{1,12}",
        "[a-z_]{1,12}",
        prop::collection::vec(-1.0e6f64..1.0e6, 2..=3),
        0i64..1000,
        0i64..100_000,
        prop::collection::vec("[a-z0-9-]{1,10}", 0..20),
        1.0f64..2.0e9,
    )
        .prop_map(|(planet, zone, coordinates, step, xp, ids, ts)| {
            let mut s = SessionState::new("prop", &planet, &zone, ts);
            s.coordinates = coordinates;
            s.quest_step = step;
            s.xp_current = xp;
            s.xp_next_level = xp + 1;
            for (i, id) in ids.iter().enumerate() {
                let _ = s.add_task(id, "");
                if i % 3 == 1 {
                    let _ = s.start_task(id, ts);
                }
                if i % 3 == 2 {
                    let _ = s.complete_task(id, Some(i as u64), ts);
                }
            }
            s
        })
}

proptest! {
    #[test]
    fn serialise_then_parse_is_identity(s in arb_state()) {
        let bytes = s.to_json_pretty().unwrap();
        let back = SessionState::from_json_slice(&bytes).unwrap();
        prop_assert!(back.migration.is_none());
        prop_assert_eq!(back.state, s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SessionState::from_json_slice(&bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(v in arb_json()) {
        let _ = SessionState::from_json_value(v);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("planet".to_owned()),
                    Just("tasks".to_owned()),
                    Just("coordinates".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Start from the seed so that many cases get deep into deserialisation.
    (value, prop::sample::select(SEED_FIELDS.to_vec())).prop_map(|(v, field)| {
        let mut seed: Value = serde_json::from_str(SEED_MINIMAL).unwrap();
        seed[field] = v;
        seed
    })
}
