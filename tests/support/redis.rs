//! A real `redis-server` (Debian's package) on a free loopback port,
//! started for a test and killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Redis.
pub struct RedisServer {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    address: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let address = TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port");
        let mut server = RedisServer { url: format!("redis://{address}"), address, child: None };
        server.restart();
        server
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty, like after a crash
    /// without persistence).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.address.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.address);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0_u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `portico_redis_up{component="<component>"}` in a scrape.
pub fn redis_up(metrics: &str, component: &str) -> Option<i64> {
    let series = format!("portico_redis_up{{component=\"{component}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
}

/// The value of `portico_redis_short_circuited_total{component="<component>"}`.
pub fn redis_short_circuited(metrics: &str, component: &str) -> Option<u64> {
    let series = format!("portico_redis_short_circuited_total{{component=\"{component}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
}
