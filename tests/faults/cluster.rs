//! A throwaway PostgreSQL cluster of the fault suite's own, so that restarting it mid-load touches nothing else
//! on the machine. It uses the server binaries of the installed PostgreSQL package (`initdb`, `pg_ctl`); run as
//! root, they run as the `postgres` user, as PostgreSQL requires.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn server_binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the PostgreSQL server package is installed (scripts/ensure-postgres installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().expect("initdb from the PostgreSQL server package")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("tidings-faults-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let cluster = Cluster { dir, bin: server_binaries(), port: crate::harness::free_port() };
        cluster.run("initdb", &["-D", &cluster.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        cluster.pg_ctl("start");
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command.args(args).current_dir(Path::new("/")).stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        let log = self.dir.join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w", "-t", "60", "-o", options.as_str()];
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        self.run("pg_ctl", &args);
    }

    /// Stops the server (fast: every connection is cut) and starts it again.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let path = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command.args(["-D", &data, "-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
