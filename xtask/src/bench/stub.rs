//! The stub backends: one NGINX answering every path the benchmark asks
//! for with `return 200` and a fixed body in the contract's shapes
//! (`../shared/contract/services.md`), so that the load side costs less per
//! request than any target and the benchmark measures the gateways.
//!
//! The three services share one server: no two of them use the same path.
//! Answers do not depend on the query string (`location =` ignores it);
//! the benchmark only asks for student 1, whose sessions name lessons 3, 4
//! and 7, so `/lesson/` answers exactly the batch the `Dashboard` asks for.

/// Student 1, `GET /users/1/` (the REST passthrough's answer, too).
pub const USER: &str = r#"{"id":1,"username":"ada","email":"ada@example.com","full_name":"Ada Lovelace","grade":5,"created_at":"2026-01-02T03:04:05Z"}"#;

/// `GET /sessions/?student_id=1`: four sessions over lessons 3, 4, 7 and 3.
const SESSIONS: &str = concat!(
    r#"{"count":4,"next":null,"previous":null,"results":["#,
    r#"{"id":10,"student_id":1,"lesson_id":3,"started_at":"2026-02-01T10:00:00Z","words_per_minute":112.5,"accuracy":0.97},"#,
    r#"{"id":11,"student_id":1,"lesson_id":4,"started_at":"2026-02-01T10:00:00Z","words_per_minute":112.5,"accuracy":0.97},"#,
    r#"{"id":12,"student_id":1,"lesson_id":7,"started_at":"2026-02-01T10:00:00Z","words_per_minute":112.5,"accuracy":0.97},"#,
    r#"{"id":13,"student_id":1,"lesson_id":3,"started_at":"2026-02-01T10:00:00Z","words_per_minute":112.5,"accuracy":0.97}"#,
    r#"]}"#
);

/// `GET /lesson/?ids=3,4,7`: the batch of the sessions' lessons.
const LESSONS: &str = concat!(
    r#"{"count":3,"next":null,"previous":null,"results":["#,
    r#"{"id":3,"title":"Lesson 3","level":"A2","word_count":350,"duration_seconds":600},"#,
    r#"{"id":4,"title":"Lesson 4","level":"A2","word_count":350,"duration_seconds":600},"#,
    r#"{"id":7,"title":"Lesson 7","level":"A2","word_count":350,"duration_seconds":600}"#,
    r#"]}"#
);

/// `GET /payments/?student_id=1`.
const PAYMENTS: &str = concat!(
    r#"{"count":1,"next":null,"previous":null,"results":["#,
    r#"{"id":5,"student_id":1,"amount":"49.00","currency":"USD","status":"succeeded","created_at":"2026-02-03T12:00:00Z"}"#,
    r#"]}"#
);

/// The stub's `http` block content: one server on `port`.
pub fn http_body(port: u16) -> String {
    let mut text = format!(
        "\x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       default_type application/json;\n"
    );
    for (path, body) in [
        ("/health/", r#"{"status":"ok"}"#),
        ("/users/1/", USER),
        ("/sessions/", SESSIONS),
        ("/lesson/", LESSONS),
        ("/payments/", PAYMENTS),
    ] {
        // Single-quoted NGINX strings: the bodies hold no `'`, `\` or `$`.
        debug_assert!(!body.contains(['\'', '\\', '$']));
        text.push_str(&format!("\x20       location = {path} {{ return 200 '{body}'; }}\n"));
    }
    text.push_str("\x20       location / { return 404 '{\"detail\":\"Not found.\"}'; }\n    }\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body is JSON in the contract's shape, and the lesson batch
    /// covers exactly the sessions' lessons.
    #[test]
    fn bodies_are_the_contracts_shapes() {
        let user: serde_json::Value = serde_json::from_str(USER).expect("user JSON");
        assert_eq!(user["full_name"], "Ada Lovelace");
        let sessions: serde_json::Value = serde_json::from_str(SESSIONS).expect("sessions JSON");
        let lessons: serde_json::Value = serde_json::from_str(LESSONS).expect("lessons JSON");
        let payments: serde_json::Value = serde_json::from_str(PAYMENTS).expect("payments JSON");
        assert_eq!(payments["results"][0]["amount"], "49.00");
        let mut wanted: Vec<u64> = sessions["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|session| session["lesson_id"].as_u64().expect("lesson_id"))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let served: Vec<u64> =
            lessons["results"].as_array().expect("results").iter().map(|l| l["id"].as_u64().expect("id")).collect();
        assert_eq!(served, wanted);
        for body in [USER, SESSIONS, LESSONS, PAYMENTS] {
            assert!(!body.contains(['\'', '\\', '$']), "{body}");
        }
    }
}
