//! A private PostgreSQL instance (its own data directory and port, logical replication on), so
//! a test can restart it or starve a slot without touching the machine's shared server.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, bail};

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// Debian installs each major version's server programs under /usr/lib/postgresql/<major>/bin.
fn server_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("FOLIO_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server programs (set FOLIO_PG_BIN to their directory)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop().context("no pg_ctl under /usr/lib/postgresql/*/bin (set FOLIO_PG_BIN)")
}

/// PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user.
fn program(bin: &std::path::Path, name: &str) -> Command {
    let path = bin.join(name);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl PrivatePostgres {
    /// initdb (trust auth on loopback) and start; `settings` are extra `-c name=value`.
    pub async fn start(settings: &[&str]) -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("folio-faults-pg-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            )?;
        }
        let mut initdb = program(&bin, "initdb");
        initdb.args(["--auth=trust", "--username=postgres", "--no-sync", "-D"]).arg(dir.join("data"));
        run(initdb, "initdb")?;
        let mut options = vec![
            format!("-p {port}"),
            "-c listen_addresses=127.0.0.1".into(),
            format!("-c unix_socket_directories={}", dir.display()),
            "-c wal_level=logical".into(),
            "-c max_wal_senders=10".into(),
            "-c max_replication_slots=10".into(),
            "-c fsync=off".into(),
        ];
        options.extend(settings.iter().map(|s| format!("-c {s}")));
        std::fs::write(dir.join("options"), options.join(" "))?;
        let pg = Self { port, dir, bin };
        pg.pg_ctl("start")?;
        pg.wait_ready().await?;
        Ok(pg)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let options = std::fs::read_to_string(self.dir.join("options"))?;
        let mut c = program(&self.bin, "pg_ctl");
        c.args([action, "-w", "-t", "30", "-m", "fast", "-D"])
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &options]);
        run(c, &format!("pg_ctl {action}"))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("PostgreSQL did not listen on {addr}")
    }

    /// `pg_ctl restart -m fast`: every session, the walsender included, is ended.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl("restart")?;
        self.wait_ready().await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
