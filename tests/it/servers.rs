//! Redis and PostgreSQL servers of a test's own, on free ports, from the installed binaries
//! in a temp dir: tests that stop or restart a server use these, never the shared ones.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

fn wait_port(port: u16, up: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != up {
        assert!(
            Instant::now() < deadline,
            "{what} on port {port} never became {}",
            if up { "reachable" } else { "unreachable" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-server` without persistence: killing it loses every key, as a Redis restarted
/// without AOF/RDB would.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port().await,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs Debian's redis-server)");
        self.child = Some(child);
        wait_port(self.port, true, "redis-server");
    }

    /// SIGKILL (its data is gone), then a fresh server on the same port.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_port(self.port, false, "redis-server");
        self.up();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A PostgreSQL cluster of the test's own (`initdb` in a temp dir, trust auth), run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
pub struct OwnPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists() && d.join("pg_ctl").exists());
    dirs.sort();
    dirs.pop()
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test installs Debian's postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl OwnPostgres {
    pub async fn start() -> OwnPostgres {
        let pg = OwnPostgres {
            port: free_port().await,
            dir: tempfile::tempdir().expect("tempdir"),
            bin: pg_bin(),
        };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(pg.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster dir to postgres");
        }
        let data = pg.dir.path().join("data");
        let status = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        pg.up();
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            // From "/": the postgres user may not enter the test's working directory.
            c.args(["-u", "postgres", "--"]).arg(path).current_dir("/");
            c
        } else {
            Command::new(path)
        }
    }

    /// The admin URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) {
        let dir = self.dir.path();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on",
            self.port,
            dir.display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        wait_port(self.port, true, "postgres");
    }

    /// Stops the server at once (`immediate`: like a crash; recovery runs at the next start).
    pub fn down(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        wait_port(self.port, false, "postgres");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
