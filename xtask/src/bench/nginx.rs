//! NGINX in the benchmark, twice: as the stub backends (`return 200`, see
//! `stub.rs`) and as the reverse proxy portico is compared with. Each
//! instance gets a generated configuration in a directory of its own (pid
//! file, error log and temp paths there, nothing of the system's NGINX
//! set-up is read), one worker, no access log and long-lived keep-alive on
//! both of its sides, so that neither the stubs nor the peer pay for
//! connection set-up that portico does not.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

use super::tools;

/// Keep-alive requests per connection; NGINX closes a connection after
/// 1000 by default, which portico does not, so both sides get "never".
const KEEPALIVE_REQUESTS: u64 = 1_000_000_000;

/// Finds `nginx` (Debian puts it in /usr/sbin, which a non-root PATH may
/// lack), installing Debian's package when it is missing.
pub fn find() -> Result<PathBuf> {
    tools::ensure_command("nginx", "nginx", &["-v"])?;
    Ok(tools::resolve("nginx"))
}

/// One NGINX instance's directory and configuration, ready to start.
pub struct Instance {
    dir: PathBuf,
    config: PathBuf,
}

impl Instance {
    /// Writes `nginx.conf` into `dir/name/` with `http_body` (upstreams and
    /// servers) inside the shared `http` block.
    pub fn write(dir: &Path, name: &str, http_body: &str) -> Result<Instance> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Run as root, the workers run as `nobody` and must reach the temp
        // paths NGINX creates here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let config = dir.join("nginx.conf");
        std::fs::write(&config, config_text(&dir, http_body))
            .with_context(|| format!("writing {}", config.display()))?;
        Ok(Instance { dir, config })
    }

    /// `nginx`'s arguments: in the foreground (`daemon off`), with this
    /// instance's prefix, error log and configuration.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-p".into(), self.dir.clone().into()];
        // Also for the messages before the configuration is read, which
        // would otherwise go to /var/log/nginx.
        args.extend(["-e".into(), self.dir.join("error.log").into()]);
        args.extend(["-c".into(), self.config.clone().into(), "-g".into(), "daemon off;".into()]);
        args
    }

    /// Checks the configuration (`nginx -t`), so that a mistake shows
    /// NGINX's own message instead of a start-up timeout.
    pub fn check(&self, nginx: &Path) -> Result<()> {
        let output = Command::new(nginx).args(self.args()).arg("-t").output().context("running nginx -t")?;
        ensure!(
            output.status.success(),
            "nginx -t -c {} failed:\n{}",
            self.config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

fn config_text(dir: &Path, http_body: &str) -> String {
    let dir = dir.display();
    format!(
        "# Written by `cargo xtask bench`.\n\
         worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   keepalive_requests {KEEPALIVE_REQUESTS};\n\
         \x20   client_body_temp_path {dir}/body;\n\
         \x20   proxy_temp_path {dir}/proxy;\n\
         \x20   fastcgi_temp_path {dir}/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/uwsgi;\n\
         \x20   scgi_temp_path {dir}/scgi;\n\
         {http_body}\
         }}\n"
    )
}

/// The `http` block of the reverse proxy under test: the same REST
/// passthrough as portico's `/student-api/` route, with upstream
/// keep-alive and the forwarding and request-id headers portico sets.
pub fn proxy_body(port: u16, backend: SocketAddr) -> String {
    format!(
        "\x20   upstream student_api {{\n\
         \x20       server {backend};\n\
         \x20       keepalive 64;\n\
         \x20       keepalive_requests {KEEPALIVE_REQUESTS};\n\
         \x20       keepalive_timeout 300s;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location /student-api/ {{\n\
         \x20           proxy_pass http://student_api/;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Real-IP $remote_addr;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           proxy_set_header X-Forwarded-Host $host;\n\
         \x20           proxy_set_header X-Request-Id $request_id;\n\
         \x20           add_header X-Request-Id $request_id;\n\
         \x20       }}\n\
         \x20   }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both configurations pass `nginx -t` (skipped where NGINX is absent;
    /// the smoke test needs it anyway).
    #[test]
    fn configurations_pass_nginx_t() {
        let nginx = tools::resolve("nginx");
        if !nginx.is_file() {
            eprintln!("nginx is not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let backend: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let stub = super::super::stub::http_body(2, dir.path(), 3, 5).expect("stub files written");
        for (name, body) in [("proxy", proxy_body(1, backend)), ("stub", stub)] {
            let instance = Instance::write(dir.path(), name, &body).expect("written");
            instance.check(&nginx).expect("nginx -t passes");
        }
    }
}
