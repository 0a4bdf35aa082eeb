//! The real Django services, started for the test run on free loopback
//! ports with their own freshly seeded databases, and stopped after.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One Django service as the contract names it.
pub struct ServiceSpec {
    pub name: &'static str,
    pub project: &'static str,
    pub db_variable: &'static str,
}

pub const SERVICES: [ServiceSpec; 3] = [
    ServiceSpec { name: "student_api", project: "student_api", db_variable: "STUDENT_API_DB" },
    ServiceSpec { name: "live_reading", project: "live_reading", db_variable: "LIVE_READING_DB" },
    ServiceSpec { name: "payment", project: "payment", db_variable: "PAYMENT_DB" },
];

/// Running gunicorn processes; dropping this stops them all.
pub struct DjangoServices {
    children: Vec<(String, Child)>,
    /// Replica addresses per service name (student_api has two).
    pub addresses: Vec<(&'static str, Vec<SocketAddr>)>,
    _databases: tempfile::TempDir,
}

fn required_path(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(value) => PathBuf::from(value),
        None => panic!(
            "{variable} is not set: the end-to-end tests need the Django services' virtualenv. \
             Run them with `cargo xtask test`, which sets it up."
        ),
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

fn run_manage(python: &Path, project_dir: &Path, spec: &ServiceSpec, db: &Path, arguments: &[&str]) {
    let output = Command::new(python)
        .arg("manage.py")
        .args(arguments)
        .current_dir(project_dir)
        .env(spec.db_variable, db)
        .output()
        .expect("run manage.py");
    assert!(
        output.status.success(),
        "manage.py {arguments:?} failed for {}:\n{}",
        spec.name,
        String::from_utf8_lossy(&output.stderr)
    );
}

impl DjangoServices {
    /// Migrates, seeds and starts every service (two replicas of
    /// student_api sharing one database), waiting until each is healthy.
    pub fn start() -> Self {
        let python = required_path("PORTICO_PYTHON");
        let services_dir = required_path("PORTICO_SERVICES_DIR");
        let databases = tempfile::tempdir().expect("temp dir");
        let mut started = DjangoServices { children: Vec::new(), addresses: Vec::new(), _databases: databases };

        for spec in &SERVICES {
            let project_dir = services_dir.join(spec.project);
            let db = started._databases.path().join(format!("{}.sqlite3", spec.name));
            run_manage(&python, &project_dir, spec, &db, &["migrate", "--noinput"]);
            run_manage(&python, &project_dir, spec, &db, &["seed"]);
            let replicas = if spec.name == "student_api" { 2 } else { 1 };
            let mut addresses = Vec::new();
            for replica in 0..replicas {
                let address = free_port();
                let child = Command::new(&python)
                    .args(["-m", "gunicorn", "--workers", "1", "--threads", "4", "--bind"])
                    .arg(address.to_string())
                    .arg(format!("{}.wsgi:application", spec.project))
                    .current_dir(&project_dir)
                    .env(spec.db_variable, &db)
                    // Uploaded avatars, shared by the replicas, gone with the run.
                    .env("STUDENT_API_MEDIA", started._databases.path().join("media"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start gunicorn");
                started.children.push((format!("{}#{replica}", spec.name), child));
                addresses.push(address);
            }
            started.addresses.push((spec.name, addresses));
        }
        for (name, addresses) in &started.addresses {
            for address in addresses {
                wait_until_healthy(name, *address);
            }
        }
        started
    }

    pub fn addresses_of(&self, service: &str) -> &[SocketAddr] {
        self.addresses.iter().find(|(name, _)| *name == service).map(|(_, list)| list.as_slice()).unwrap_or(&[])
    }

    /// Stops one replica (by `name#index`), as an operator or a crash would.
    pub fn stop_replica(&mut self, replica: &str) {
        if let Some(position) = self.children.iter().position(|(name, _)| name == replica) {
            let (_, child) = self.children.remove(position);
            terminate(child);
        }
    }
}

fn wait_until_healthy(name: &str, address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if health_answers(address) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} at {address} did not become healthy within 30s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn health_answers(address: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// SIGTERM lets gunicorn stop its workers too; SIGKILL is the fallback.
fn terminate(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for DjangoServices {
    fn drop(&mut self) {
        for (_, child) in self.children.drain(..) {
            terminate(child);
        }
    }
}
