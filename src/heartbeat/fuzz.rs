//! Property tests: the heartbeat parsers never panic, whatever a worker (or
//! anyone on loopback) sends; and a corpus of tricky inputs in
//! `tests/corpus/heartbeat/` is replayed with its expected outcome.
//!
//! Corpus files are named `{datagram|body|ping}-{ok|err}-what.ext`. A ping
//! file's first line is the action (`-` for none), the rest its body.

use proptest::collection::vec;
use proptest::prelude::*;

use super::http::{parse_body, parse_ping};
use super::notify::parse_datagram;

const KEYS: &str = "(READY|STOPPING|RELOADING|STATUS|WATCHDOG|MAINPID|ERRNO|EXTEND_TIMEOUT_USEC|BARRIER|X_WARD_JOBS|X_WARD_ERRORS|X_WARD_TASK|X_WARD_ERROR|X_WARD_CIRCUIT_OPEN|X_WARD_META|[A-Z_]{0,6})";

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn datagram_bytes_never_panic(data in vec(any::<u8>(), 0..2048)) {
        let _ = parse_datagram(&data);
    }

    #[test]
    fn datagram_assignments_never_panic(
        lines in vec((KEYS, "[-+0-9a-z{}\\[\\]\":,. =\\\\]{0,24}"), 0..8)
    ) {
        let text: Vec<String> = lines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = parse_datagram(text.join("\n").as_bytes());
    }

    #[test]
    fn body_bytes_never_panic(data in vec(any::<u8>(), 0..2048)) {
        let _ = parse_body(&data);
    }

    #[test]
    fn json_like_bodies_never_panic(
        fields in vec((
            "(status|jobs_processed|error_count|jobs_delta|errors_delta|circuit_breaker_open|current_task|last_error|metadata|[a-z]{1,4})",
            "(-?[0-9]{1,22}(\\.[0-9])?|true|false|null|\"[^\"\\\\]{0,8}\"|\\{\\}|\\[\\]|\\{\"a\":[0-9]\\})",
        ), 0..6)
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let _ = parse_body(format!("{{{}}}", body.join(",")).as_bytes());
    }

    #[test]
    fn pings_never_panic(
        action in proptest::option::of("([0-9+-]{0,4}|start|fail|log|.{0,6})"),
        body in vec(any::<u8>(), 0..3000),
    ) {
        let _ = parse_ping(action.as_deref(), &body);
    }
}

#[test]
fn corpus_replays_with_the_expected_outcome() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/heartbeat");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let (kind, rest) = name.split_once('-').unwrap();
        let want_ok = rest.starts_with("ok-");
        assert!(
            want_ok || rest.starts_with("err-"),
            "{name}: say ok- or err-"
        );
        let ok = match kind {
            "datagram" => parse_datagram(&data).is_ok(),
            "body" => parse_body(&data).is_ok(),
            "ping" => {
                let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
                let action = String::from_utf8_lossy(&data[..split]).into_owned();
                let body = data.get(split + 1..).unwrap_or(&[]);
                parse_ping((action != "-").then_some(action.as_str()), body).is_ok()
            }
            other => panic!("{name}: unknown kind `{other}`"),
        };
        assert_eq!(ok, want_ok, "{name}");
        seen += 1;
    }
    assert!(seen >= 40, "only {seen} corpus files");
}
