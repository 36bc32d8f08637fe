//! A gateway process a driver starts for itself: `gateway serve --demo` on a database and a
//! random port (optionally pinned with `taskset`), its output kept in a log file with its
//! warnings and errors counted, stopped with SIGTERM. Running it as its own process lets a
//! driver read the server's own CPU time and RSS from `/proc`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::auth::Secret;

/// How to start the gateway.
pub struct Options<'a> {
    /// The `gateway` binary.
    pub binary: &'a Path,
    /// `taskset -c <cpus>` for the server, if given.
    pub server_cpu: Option<&'a str>,
    /// The server's `RUST_LOG`.
    pub log_filter: &'a str,
    /// Names the temp config and log files (`<name>-<uuid>.toml`, `.log`).
    pub name: &'a str,
    /// The config file's contents.
    pub config: String,
    /// `DATABASE_URL`.
    pub database_url: &'a str,
    /// `GATEWAY_JWT_SECRET`, which the driver mints its tokens with.
    pub secret: &'a Secret,
    /// Most warning and error lines quoted in the report.
    pub quoted: usize,
}

/// A running gateway this driver started.
pub struct Spawned {
    child: Child,
    config: PathBuf,
    log: Arc<Mutex<ServerLog>>,
    log_path: PathBuf,
}

/// The spawned gateway's output: all of it in a file, its warnings and errors counted.
struct ServerLog {
    file: Option<std::fs::File>,
    problems: usize,
    quoted: Vec<String>,
    most: usize,
}

impl ServerLog {
    fn record(&mut self, line: &str, from_stderr: bool) {
        if let Some(file) = &mut self.file {
            let _ = writeln!(file, "{line}");
        }
        if from_stderr || line.contains(" WARN ") || line.contains(" ERROR ") {
            self.problems += 1;
            if self.quoted.len() < self.most {
                self.quoted.push(line.chars().take(300).collect());
            }
        }
    }
}

/// What a stopped gateway logged.
pub struct LogReport {
    pub path: PathBuf,
    pub problems: usize,
    pub quoted: Vec<String>,
}

impl LogReport {
    pub fn print(&self) {
        println!(
            "gateway log: {} warning/error line(s) ({})",
            self.problems,
            self.path.display()
        );
        for line in &self.quoted {
            println!("  {line}");
        }
    }
}

/// `gateway` beside the running driver (both are built into `target/release`).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("gateway")))
        .unwrap_or_else(|| PathBuf::from("target/release/gateway"))
}

impl Spawned {
    /// Starts the gateway and waits (up to 120 s: the demo data loads first) for the URL it
    /// prints.
    pub fn start(options: Options<'_>) -> Result<(Spawned, String), String> {
        let binary = options.binary;
        if !binary.exists() {
            return Err(format!(
                "no gateway binary at {} (cargo build --release -p gateway, or pass \
                 --gateway-bin)",
                binary.display()
            ));
        }
        let name = format!("{}-{}", options.name, uuid::Uuid::new_v4().simple());
        let temp = std::env::temp_dir();
        let config = temp.join(format!("{name}.toml"));
        let log_path = temp.join(format!("{name}.log"));
        std::fs::write(&config, &options.config)
            .map_err(|err| format!("writing {}: {err}", config.display()))?;
        let mut command = match options.server_cpu {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .arg("--demo")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", options.database_url)
            .env("GATEWAY_JWT_SECRET", options.secret.expose())
            .env("GATEWAY_LIMITS", "off")
            .env("RUST_LOG", options.log_filter)
            // One instance on its own: no shared limits or events from a Redis.
            .env_remove("REDIS_URL")
            .env_remove("GATEWAY_CONFIG")
            .env_remove("GATEWAY_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|err| format!("starting {}: {err}", binary.display()))?;
        let log = Arc::new(Mutex::new(ServerLog {
            file: std::fs::File::create(&log_path).ok(),
            problems: 0,
            quoted: Vec::new(),
            most: options.quoted,
        }));
        let (found, url) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(url) = line
                        .strip_prefix("GraphiQL: ")
                        .and_then(|u| u.strip_suffix("/graphql"))
                    {
                        let _ = found.send(url.to_owned());
                    }
                    log.lock().expect("the log lock").record(&line, false);
                }
            });
        }
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().expect("the log lock").record(&line, true);
                }
            });
        }
        let spawned = Spawned {
            child,
            config,
            log,
            log_path,
        };
        match url.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Ok((spawned, url)),
            Err(_) => {
                let report = spawned.stop();
                Err(format!(
                    "the gateway did not start (log {}):\n  {}",
                    report.path.display(),
                    report.quoted.join("\n  ")
                ))
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the gateway (SIGTERM, killed after 10 s), removes its config file, and reports
    /// what it logged.
    pub fn stop(self) -> LogReport {
        let Spawned {
            mut child,
            config,
            log,
            log_path,
        } = self;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: sends a signal to the child this driver started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("the gateway did not stop within 10 s of SIGTERM: killed");
            let _ = child.kill();
        }
        let _ = child.wait();
        let _ = std::fs::remove_file(&config);
        let log = log.lock().expect("the log lock");
        LogReport {
            path: log_path,
            problems: log.problems,
            quoted: log.quoted.clone(),
        }
    }
}
