//! The stub backends: one NGINX answering every path the benchmark asks
//! for with `return 200` and a fixed body in the contract's shapes
//! (`../shared/contract/services.md`), so that the load side costs less per
//! request than any target and the benchmark measures the gateways.
//!
//! The three services share one server: no two of them use the same path.
//! Answers do not depend on the query string (`location =` ignores it),
//! except that `/sessions/` tells student 1 (the `Dashboard`'s) from the
//! others and names the asked-for student in its answer, and `/users/`
//! answers `?ids=1000` (the large answer's student batch) with that student
//! alone. Every session names lesson 3, 4 or 7, so `/lesson/` answers
//! exactly the batch any scenario asks for.
//!
//! The fan-out scenario (`students(first: 500)`) reads `/users/`, a page
//! of [`STUDENTS`] users, and one `/sessions/` page per student. The large
//! answer (`readingSessions(studentId: 1000, first: 6000)`) reads one long
//! `/sessions/` page of student [`READER`] (not on the `/users/` page, so
//! that the fan-out's pages stay as they are), whose batched `/users/?ids=`
//! call is answered with that student alone. Those bodies are longer than
//! an NGINX configuration string may be (4 KiB), so they are files, one per
//! student for the sessions, written once before NGINX starts and served
//! from its open-file cache: NGINX still only copies bytes. The long page
//! is larger than the contract's maximum page size (500): the stub serves
//! it regardless, as one backend answer of about 1 MB whose projection into
//! the response is what the scenario measures. `/nginx-status/` (NGINX's `stub_status`) counts the
//! requests served, which is how the benchmark counts backend calls; the
//! gateways' health checks, which it counts too, are logged to
//! [`HEALTH_LOG`] (they are few) so that they can be told apart.

use std::path::Path;

use anyhow::{Context as _, Result};

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

/// Students on the `/users/` page of the fan-out (the contract's
/// largest page size); the smoke mode serves fewer.
pub const STUDENTS: u32 = 500;

/// The student of the large answer's long `/sessions/` page.
pub const READER: u32 = 1000;

/// Sessions on [`READER`]'s page in the full run: with the fields the
/// large answer selects, about 1 MB of response JSON.
pub const READER_SESSIONS: u32 = 6000;

/// Sessions per student other than student 1 on `/sessions/`: with
/// [`STUDENTS`] students the large answer is about 1 MB of JSON (within the
/// default page size of 50, which the stub does not apply).
const SESSIONS_PER_STUDENT: u32 = 31;

/// The path whose answer is NGINX's request count.
pub const STATUS_PATH: &str = "/nginx-status/";

/// The file, in the stubs' directory, with one line per health check.
pub const HEALTH_LOG: &str = "health.log";

/// Student `id` of the users page (and [`READER`], who is not on it).
fn user(id: u32) -> String {
    match id {
        1 => USER.to_owned(),
        id => format!(
            r#"{{"id":{id},"username":"student{id}","email":"student{id}@example.com","full_name":"Student {id}","grade":{},"created_at":"2026-01-02T03:04:05Z"}}"#,
            id % 8 + 1
        ),
    }
}

/// `GET /users/?page_size=500`: students 1 (Ada, as [`USER`]) to `students`.
fn users_page(students: u32) -> String {
    let users: Vec<String> = (1..=students).map(user).collect();
    format!(r#"{{"count":{students},"next":null,"previous":null,"results":[{}]}}"#, users.join(","))
}

/// `GET /sessions/?student_id=N` for every student but 1: words per minute
/// vary (and are never whole, which JavaScript and Rust print alike).
fn sessions_page(student: u32) -> String {
    let sessions: Vec<String> = (0..SESSIONS_PER_STUDENT)
        .map(|index| {
            format!(
                r#"{{"id":{},"student_id":{student},"lesson_id":{},"started_at":"2026-02-01T10:00:00Z","words_per_minute":{}.5,"accuracy":0.9{}}}"#,
                student * 100 + index,
                [3, 4, 7][index as usize % 3],
                80 + index * 3,
                index % 10,
            )
        })
        .collect();
    format!(r#"{{"count":{SESSIONS_PER_STUDENT},"next":null,"previous":null,"results":[{}]}}"#, sessions.join(","))
}

/// `GET /sessions/?student_id=1000`: [`READER`]'s `count` sessions, over
/// lessons 3, 4 and 7, each started at its own minute.
fn reader_page(count: u32) -> String {
    let sessions: Vec<String> = (0..count)
        .map(|index| {
            format!(
                r#"{{"id":{},"student_id":{READER},"lesson_id":{},"started_at":"2026-02-{:02}T{:02}:{:02}:00Z","words_per_minute":{}.5,"accuracy":0.9{}}}"#,
                100_000 + index,
                [3, 4, 7][index as usize % 3],
                index / 1440 % 28 + 1,
                index / 60 % 24,
                index % 60,
                80 + index % 40,
                index % 10,
            )
        })
        .collect();
    format!(r#"{{"count":{count},"next":null,"previous":null,"results":[{}]}}"#, sessions.join(","))
}

/// Writes the fan-out's bodies for `students` students and the large
/// answer's page of `reader_sessions` sessions into `dir`
/// (which NGINX's workers must be able to read) and returns the stub's
/// `http` block content: one server on `port`.
pub fn http_body(port: u16, dir: &Path, students: u32, reader_sessions: u32) -> Result<String> {
    let write = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
    };
    write("users.json", users_page(students))?;
    std::fs::create_dir_all(dir.join("sessions"))?;
    for student in 2..=students {
        write(&format!("sessions/{student}.json"), sessions_page(student))?;
    }
    write(&format!("sessions/{READER}.json"), reader_page(reader_sessions))?;
    let reader = format!(r#"{{"count":1,"next":null,"previous":null,"results":[{}]}}"#, user(READER));
    let dir = dir.display();
    let mut text = format!(
        "\x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       default_type application/json;\n\
         \x20       root {dir};\n\
         \x20       sendfile on;\n\
         \x20       open_file_cache max=1024 inactive=600s;\n\
         \x20       open_file_cache_valid 600s;\n"
    );
    text.push_str(&format!(
        "\x20       location = /health/ {{ access_log {dir}/{HEALTH_LOG}; return 200 '{{\"status\":\"ok\"}}'; }}\n"
    ));
    for (path, body) in [("/users/1/", USER), ("/lesson/", LESSONS), ("/payments/", PAYMENTS)] {
        // Single-quoted NGINX strings: the bodies hold no `'`, `\` or `$`.
        debug_assert!(!body.contains(['\'', '\\', '$']));
        text.push_str(&format!("\x20       location = {path} {{ return 200 '{body}'; }}\n"));
    }
    // The rewrites serve a file under `root` from this location (`break`:
    // no second location match); an unknown student is a 404.
    text.push_str(&format!(
        "\x20       location = /users/ {{\n\
         \x20           if ($arg_ids = \"{READER}\") {{ return 200 '{reader}'; }}\n\
         \x20           rewrite ^ /users.json break;\n\
         \x20       }}\n\
         \x20       location = /sessions/ {{\n\
         \x20           if ($arg_student_id = \"1\") {{ return 200 '{SESSIONS}'; }}\n\
         \x20           rewrite ^ /sessions/$arg_student_id.json break;\n\
         \x20       }}\n"
    ));
    text.push_str(&format!("\x20       location = {STATUS_PATH} {{ stub_status; }}\n"));
    text.push_str("\x20       location / { return 404 '{\"detail\":\"Not found.\"}'; }\n    }\n");
    Ok(text)
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

    /// The large answer's pages: every student, Ada first, and each
    /// student's sessions (within the default page size) name their student
    /// and only lessons the lesson batch serves.
    #[test]
    fn large_answer_pages_are_the_contracts_shapes() {
        let users: serde_json::Value = serde_json::from_str(&users_page(STUDENTS)).expect("users JSON");
        let results = users["results"].as_array().expect("results");
        assert_eq!((users["count"].as_u64(), results.len()), (Some(u64::from(STUDENTS)), STUDENTS as usize));
        assert_eq!(results[0]["full_name"], "Ada Lovelace");
        assert_eq!(results[499]["id"], 500);
        let sessions: serde_json::Value = serde_json::from_str(&sessions_page(42)).expect("sessions JSON");
        let sessions = sessions["results"].as_array().expect("results");
        assert!(sessions.len() <= 50);
        for session in sessions {
            assert_eq!(session["student_id"], 42);
            assert!([3, 4, 7].contains(&session["lesson_id"].as_u64().expect("lesson_id")), "{session}");
            let wpm = session["words_per_minute"].as_f64().expect("words_per_minute");
            assert!(wpm.fract() != 0.0, "{session}");
        }
    }

    /// The large answer's long page: every session the reader's, over
    /// lessons the lesson batch serves, with timestamps in RFC 3339; and the
    /// reader's user answer is a page of that student alone.
    #[test]
    fn the_readers_page_is_the_contracts_shape() {
        let page: serde_json::Value = serde_json::from_str(&reader_page(READER_SESSIONS)).expect("sessions JSON");
        let sessions = page["results"].as_array().expect("results");
        assert_eq!(sessions.len(), READER_SESSIONS as usize);
        for session in sessions {
            assert_eq!(session["student_id"], READER);
            assert!([3, 4, 7].contains(&session["lesson_id"].as_u64().expect("lesson_id")), "{session}");
            let started = session["started_at"].as_str().expect("started_at");
            assert!(started.len() == 20 && started.starts_with("2026-02-") && started.ends_with(":00Z"), "{session}");
        }
        let reader: serde_json::Value = serde_json::from_str(&user(READER)).expect("user JSON");
        assert_eq!((reader["id"].as_u64(), reader["full_name"].as_str()), (Some(1000), Some("Student 1000")));
        assert!(!user(READER).contains(['\'', '\\', '$']));
    }
}
