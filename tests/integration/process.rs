//! The `portico` binary run as a child process, for what only a real
//! process shows: its log output, and how it answers signals.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{client, closed_port};

/// The `portico` binary, started with a configuration file, its standard
/// output (JSON logs) collected; killed when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts portico with `toml_body` after a `[server]` table with a 1 s
    /// shutdown timeout, and waits until it answers.
    pub async fn start(toml_body: &str) -> Process {
        Process::start_with_server("shutdown_timeout = \"1s\"", toml_body).await
    }

    /// Starts portico with extra `[server]` lines.
    pub async fn start_with_server(server: &str, toml_body: &str) -> Process {
        let addr = closed_port().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("portico.toml");
        let toml =
            format!("[server]\nlisten = \"{addr}\"\n{server}\n\n[telemetry]\nlog_format = \"json\"\n{toml_body}");
        std::fs::write(&path, toml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start portico");
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        let process = Process { child, addr, logs, _dir: dir };
        for _ in 0..200 {
            if client().get(process.url("/healthz")).send().await.is_ok() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("portico did not start listening on {addr}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("lock").clone()
    }

    /// Sends a signal (`"TERM"`, `"INT"`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.expect("run kill").success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
