//! The gateway started in-process on an ephemeral port, shared by the
//! integration and end-to-end test binaries.

use std::net::SocketAddr;

use portico::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A gateway running in this process.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Starts a gateway with the given TOML configuration.
    pub async fn start(toml: &str) -> Gateway {
        let config = match Config::parse(toml, "test.toml") {
            Ok(config) => config,
            Err(error) => panic!("test config is invalid:\n{error}\n---\n{toml}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            portico::serve(config, listener, async {
                let _ = signal.await;
            })
            .await
            .expect("gateway serves");
        });
        Gateway { addr, shutdown: Some(shutdown), task }
    }

    /// Starts a gateway serving the configuration file at `path`, reloaded
    /// when it changes. (The end-to-end tests start from text only.)
    #[allow(dead_code)]
    pub async fn start_file(path: &std::path::Path) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, signal) = oneshot::channel::<()>();
        let path = path.to_owned();
        let task = tokio::spawn(async move {
            portico::serve_reloading(path, listener, async {
                let _ = signal.await;
            })
            .await
            .expect("gateway serves");
        });
        Gateway { addr, shutdown: Some(shutdown), task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits until `serve` has returned.
    pub async fn stopped(&mut self) {
        (&mut self.task).await.expect("gateway task");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
