//! Property tests of the Docker source's input handling (random input on every
//! `cargo test`; `make fuzz` goes further): the event stream splitter and the interpreter
//! never panic, keep their buffer bounded, and read events the same however the stream is
//! chunked.

use proptest::prelude::*;
use restart_watcher::docker::{event_ms, split_objects, Interpreter, MAX_EVENT_BYTES};
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Numbers as an engine (or something pretending to be one) might send them.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(|n| Value::from(n.to_string())),
        Just(Value::Null),
    ]
}

/// A container event with hostile values in every numeric field.
fn event() -> impl Strategy<Value = Value> {
    let action = prop::sample::select(vec![
        "die",
        "start",
        "oom",
        "health_status: unhealthy",
        "health_status: healthy",
        "kill",
    ]);
    let service = prop::sample::select(vec!["collector", "sync-verifier"]);
    (action, service, number(), number(), number(), number()).prop_map(|(action, service, time, nano, exit, duration)| {
        json!({"Type": "container", "Action": action, "id": service, "time": time, "timeNano": nano,
               "Actor": {"Attributes": {"com.docker.compose.service": service, "exitCode": exit, "execDuration": duration}}})
    })
}

fn inspection() -> impl Strategy<Value = Option<Value>> {
    prop::option::of((number(), number(), number()).prop_map(|(count, restarting, oom)| {
        json!({"RestartCount": count, "State": {"Restarting": restarting, "OOMKilled": oom}})
    }))
}

/// The events as a stream carries them (serde_json reads some floats back 1 ulp off).
fn as_sent(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.to_string()).expect("json"))
        .collect()
}

/// `chunks` fed one after the other, as the HTTP body delivers them.
fn split_all(chunks: &[Vec<u8>]) -> (Vec<Value>, usize) {
    let mut buffer = Vec::new();
    let mut out = Vec::new();
    let mut most = 0;
    for c in chunks {
        buffer.extend_from_slice(c);
        out.extend(split_objects(&mut buffer));
        most = most.max(buffer.len());
    }
    (out, most)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_never_panic_and_the_buffer_stays_bounded(chunks in prop::collection::vec(any::<Vec<u8>>(), 0..8)) {
        let (_, most) = split_all(&chunks);
        prop_assert!(most <= MAX_EVENT_BYTES);
    }

    #[test]
    fn events_read_the_same_however_the_stream_is_chunked(events in prop::collection::vec(event(), 0..6), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let stream: Vec<u8> = events.iter().flat_map(|e| format!("{e}\n").into_bytes()).collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for &cut in at.iter().chain(std::iter::once(&stream.len())) {
            chunks.push(stream[prev..cut].to_vec());
            prev = cut;
        }
        prop_assert_eq!(split_all(&chunks).0, as_sent(&events));
    }

    #[test]
    /// A line that cannot start a JSON value (not `{`, `[`, `"`, a digit, `-`, `t`, `f`, `n`).
    fn garbage_lines_do_not_hide_the_events_after_them(events in prop::collection::vec(event(), 1..6), garbage in "[a-eg-mo-su-zA-Z!#$%&'()*+,./:;<=>?@^_|~][^\n]{0,40}") {
        let mut stream = Vec::new();
        for e in &events {
            stream.extend_from_slice(format!("{garbage}\n{e}\n").as_bytes());
        }
        prop_assert_eq!(split_all(&[stream]).0, as_sent(&events));
    }

    #[test]
    fn hostile_events_never_panic_and_the_reconnect_point_only_moves_forward(events in prop::collection::vec((event(), inspection()), 1..12)) {
        let mut it = Interpreter::default();
        let mut last = None;
        for (e, inspect) in &events {
            prop_assert!(event_ms(e) >= 0);
            let _ = it.event(e, inspect.as_ref());
            prop_assert!(it.last_time >= last && it.last_time.is_none_or(|t| t >= 0), "{:?} after {:?}", it.last_time, last);
            last = it.last_time;
        }
    }
}
