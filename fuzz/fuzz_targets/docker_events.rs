//! restart-watcher's Docker source: container events whose numbers (time, timeNano,
//! exitCode, execDuration, RestartCount, ...) are edge values or junk, with garbage lines
//! between them, sent as one stream cut into chunks anywhere (`split_objects`), then read
//! by one `Interpreter` with their inspections. Never panics; the buffer stays bounded;
//! the reconnect time is never negative.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nghenhan_fuzz::Num;
use restart_watcher::docker::{split_objects, Interpreter, MAX_EVENT_BYTES};
use serde_json::{json, Value};

const ACTIONS: [&str; 6] = [
    "die",
    "start",
    "oom",
    "health_status: unhealthy",
    "health_status: healthy",
    "kill",
];

#[derive(Arbitrary, Debug)]
struct Event {
    action: u8,
    other_service: bool,
    time: Num,
    time_nano: Num,
    exit_code: Num,
    exec_duration: Num,
}

#[derive(Arbitrary, Debug)]
struct Inspect {
    restart_count: Num,
    restarting: Num,
    oom_killed: Num,
}

#[derive(Arbitrary, Debug)]
struct Input {
    events: Vec<(Event, Option<Inspect>)>,
    /// Bytes put on a line of their own after the event of the same index.
    garbage: Vec<(u8, Vec<u8>)>,
    cuts: Vec<u16>,
}

fn event(e: &Event) -> Value {
    let service = if e.other_service {
        "sync-verifier"
    } else {
        "collector"
    };
    json!({"Type": "container", "Action": ACTIONS[usize::from(e.action) % ACTIONS.len()], "id": service,
           "time": e.time.json(), "timeNano": e.time_nano.json(),
           "Actor": {"Attributes": {"com.docker.compose.service": service, "exitCode": e.exit_code.json(), "execDuration": e.exec_duration.json()}}})
}

fn inspect(i: &Inspect) -> Value {
    json!({"RestartCount": i.restart_count.json(), "State": {"Restarting": i.restarting.json(), "OOMKilled": i.oom_killed.json()}})
}

fn stream(input: &Input) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (e, _)) in input.events.iter().enumerate() {
        out.extend_from_slice(format!("{}\n", event(e)).as_bytes());
        for (_, junk) in input.garbage.iter().filter(|(at, _)| usize::from(*at) == i) {
            out.extend_from_slice(junk);
            out.push(b'\n');
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let bytes = stream(&input);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c).min(bytes.len()))
        .collect();
    cuts.sort_unstable();
    let (mut buffer, mut values, mut from) = (Vec::new(), Vec::new(), 0);
    for to in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        buffer.extend_from_slice(&bytes[from..to]);
        values.extend(split_objects(&mut buffer));
        assert!(buffer.len() <= MAX_EVENT_BYTES);
        from = to;
    }
    let mut interpreter = Interpreter::default();
    for (i, v) in values.iter().enumerate() {
        let inspection = input
            .events
            .get(i)
            .and_then(|(_, x)| x.as_ref())
            .map(inspect);
        let _ = interpreter.event(v, inspection.as_ref());
        assert!(interpreter.last_time.is_none_or(|t| t >= 0));
    }
});
