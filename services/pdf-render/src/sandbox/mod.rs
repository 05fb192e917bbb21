//! Templates are untrusted code: each render runs in a pre-started worker process
//! (`pdf-render-worker`, [`child`]) with a memory cap, a time limit and no file or network
//! access. Workers are reused across renders (fonts are loaded once per worker); one that dies,
//! is killed or goes over a limit is replaced, so the pool never runs dry.

// The worker's allocator and system calls (rlimits, prctl) are unsafe; nothing else is.
#[allow(unsafe_code)]
pub mod child;
pub mod protocol;

use std::{
    fmt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::Semaphore,
};

use crate::render::RenderedPdf;
use protocol::{EXIT_OVER_MEMORY, Ready, RenderRequest, Reply};

/// The worker binary's file name, looked for next to the running executable.
pub const WORKER_BIN: &str = "pdf-render-worker";

/// How long a new worker may take to load its fonts and report ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A size in bytes, written `256MiB`, `1GiB`, `512KiB` or plain bytes (`K`, `M`, `G` are binary too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number.parse().map_err(|_| format!("{s:?} is not a size like 256MiB"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
        };
        number.checked_mul(1 << shift).map(Self).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{} GiB", n >> 30),
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// How the pool runs its workers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub program: PathBuf,
    pub memory: ByteSize,
    pub time: Duration,
    pub workers: usize,
}

/// Why a sandboxed render produced no PDF.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the template used more than {0}")]
    MemoryLimit(ByteSize),
    #[error("the template ran longer than {}", humantime::format_duration(*.0))]
    TimeLimit(Duration),
    /// The template did not render (`template error: line:column: message`, too large, …).
    #[error("{0}")]
    Render(String),
    #[error("the render worker exited unexpectedly ({0})")]
    Crashed(ExitStatus),
    #[error("lost the render worker")]
    Lost(#[source] std::io::Error),
    #[error("failed to start the render worker {}", .program.display())]
    Start { program: PathBuf, source: StartError },
}

impl SandboxError {
    /// The same template fails the same way: retrying cannot help. A crash or a worker that
    /// could not start may be the machine's fault (e.g. its own OOM killer), so those retry.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SandboxError::MemoryLimit(_) | SandboxError::TimeLimit(_) | SandboxError::Render(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to execute it")]
    Spawn(#[source] std::io::Error),
    #[error("it did not report ready within {0:?}")]
    Slow(Duration),
    #[error("it exited with {0} before it was ready (its reason is in the log above)")]
    Exited(ExitStatus),
    #[error("it said something other than ready")]
    Protocol(#[source] std::io::Error),
}

/// The worker binary was not found.
#[derive(Debug, thiserror::Error)]
#[error(
    "the render worker binary {WORKER_BIN} was not found (looked at {}); build it with `cargo build -p pdf-render --bins` \
     or point FOLIO_PDF_WORKER_BIN (--worker-bin) at it",
    .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct WorkerNotFound {
    pub tried: Vec<PathBuf>,
}

/// The worker binary: `explicit` if given, else `pdf-render-worker` next to the running
/// executable, or in its parent directory (test binaries run from `target/<profile>/deps/`).
pub fn locate_worker(explicit: Option<&Path>) -> Result<PathBuf, WorkerNotFound> {
    let tried = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => {
            let exe = std::env::current_exe().ok();
            let dir = exe.as_deref().and_then(Path::parent);
            dir.into_iter().chain(dir.and_then(Path::parent)).map(|d| d.join(WORKER_BIN)).collect()
        }
    };
    tried.iter().find(|p| p.is_file()).cloned().ok_or(WorkerNotFound { tried })
}

/// Pre-started workers, one render at a time each.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    idle: Mutex<Vec<Worker>>,
    slots: Semaphore,
    heap_peak: std::sync::atomic::AtomicU64,
}

impl Pool {
    /// Starts `settings.workers` workers (at least one) and waits until they are ready.
    pub async fn start(settings: Settings) -> Result<Pool, SandboxError> {
        let workers = settings.workers.max(1);
        let started = futures::future::join_all((0..workers).map(|_| Worker::start(&settings))).await;
        let mut idle = Vec::with_capacity(workers);
        for worker in started {
            idle.push(worker?);
        }
        tracing::info!(
            workers,
            memory = %settings.memory,
            time = ?settings.time,
            program = %settings.program.display(),
            sandbox = %idle.first().map(|w: &Worker| w.sandbox.as_str()).unwrap_or_default(),
            "render workers ready"
        );
        Ok(Pool {
            inner: Arc::new(Inner {
                slots: Semaphore::new(workers),
                idle: Mutex::new(idle),
                settings,
                heap_peak: Default::default(),
            }),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The most heap one render has used so far (above its warm worker's own), in bytes.
    pub fn heap_peak(&self) -> u64 {
        self.inner.heap_peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Renders in a worker; waits for a free one. A worker that fails is replaced.
    pub async fn render(&self, request: &RenderRequest) -> Result<RenderedPdf, SandboxError> {
        let body = serde_json::to_vec(request).map_err(|e| SandboxError::Render(format!("bad render request: {e}")))?;
        let _slot = self.inner.slots.acquire().await.expect("never closed");
        let settings = &self.inner.settings;
        let mut worker = match self.take_idle() {
            Some(worker) => worker,
            None => Worker::start(settings).await?,
        };
        let max_pdf = usize::try_from(settings.memory.bytes()).unwrap_or(usize::MAX);
        match tokio::time::timeout(settings.time, worker.call(&body, max_pdf)).await {
            Ok(Ok(reply)) => {
                self.give_back(worker);
                let (pdf, heap_peak) = reply.map_err(SandboxError::Render)?;
                metrics::histogram!("folio_pdf_render_heap_bytes").record(heap_peak as f64);
                self.inner.heap_peak.fetch_max(heap_peak, std::sync::atomic::Ordering::Relaxed);
                Ok(pdf)
            }
            Ok(Err(lost)) => {
                let status = worker.reap().await;
                self.replace();
                Err(match status {
                    Some(status) if status.code() == Some(EXIT_OVER_MEMORY) => {
                        SandboxError::MemoryLimit(settings.memory)
                    }
                    Some(status) if std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGXCPU) => {
                        SandboxError::TimeLimit(settings.time)
                    }
                    Some(status) => SandboxError::Crashed(status),
                    None => SandboxError::Lost(lost),
                })
            }
            Err(_) => {
                worker.kill().await;
                self.replace();
                metrics::counter!("folio_pdf_render_timeouts_total").increment(1);
                Err(SandboxError::TimeLimit(settings.time))
            }
        }
    }

    /// An idle worker that is still alive (one may have been killed from outside while idle).
    fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.inner.idle.lock().expect("not poisoned");
        while let Some(mut worker) = idle.pop() {
            if matches!(worker.child.try_wait(), Ok(None)) {
                return Some(worker);
            }
        }
        None
    }

    fn give_back(&self, worker: Worker) {
        let mut idle = self.inner.idle.lock().expect("not poisoned");
        // A render that found none idle started its own; keep no more than the pool's size.
        if idle.len() < self.inner.settings.workers.max(1) {
            idle.push(worker);
        }
    }

    /// Starts a worker in the background for the one just lost. If it cannot start, the next
    /// render that finds no idle worker starts one itself (and reports why it cannot).
    fn replace(&self) {
        metrics::counter!("folio_pdf_workers_replaced_total").increment(1);
        let pool = self.clone();
        tokio::spawn(async move {
            match Worker::start(&pool.inner.settings).await {
                Ok(worker) => pool.give_back(worker),
                Err(e) => tracing::warn!("failed to replace a render worker: {}", folio_runtime::error_chain(&e)),
            }
        });
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    sandbox: String,
}

impl Worker {
    async fn start(settings: &Settings) -> Result<Worker, SandboxError> {
        let failed = |source| SandboxError::Start { program: settings.program.clone(), source };
        let mut child = Command::new(&settings.program)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--memory-limit")
            .arg(settings.memory.bytes().to_string())
            .arg("--time-limit")
            .arg(humantime::format_duration(settings.time).to_string())
            // The renderer's environment holds database and NATS credentials; a template has no
            // business seeing them, even through a bug.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Through the renderer's log: the worker cannot write files (RLIMIT_FSIZE is 0), and
            // an inherited stderr may be one.
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(StartError::Spawn(e)))?;
        if let (Some(stderr), Some(pid)) = (child.stderr.take(), child.id()) {
            tokio::spawn(log_stderr(stderr, pid));
        }
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let ready = match tokio::time::timeout(START_TIMEOUT, read_frame(&mut stdout, 64 * 1024)).await {
            Ok(Ok(frame)) => serde_json::from_slice::<Ready>(&frame).map_err(|e| StartError::Protocol(e.into())),
            Ok(Err(e)) => Err(match child.wait().await {
                Ok(status) => StartError::Exited(status),
                Err(_) => StartError::Protocol(e),
            }),
            Err(_) => Err(StartError::Slow(START_TIMEOUT)),
        };
        let ready = ready.map_err(failed)?;
        Ok(Worker { child, stdin, stdout, sandbox: ready.sandbox })
    }

    /// One render: the request out, the reply (and the PDF) back. An I/O error means the worker
    /// is gone or broken.
    async fn call(&mut self, body: &[u8], max_pdf: usize) -> std::io::Result<Result<(RenderedPdf, u64), String>> {
        let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("request larger than 4 GiB"))?;
        self.stdin.write_all(&len.to_le_bytes()).await?;
        self.stdin.write_all(body).await?;
        self.stdin.flush().await?;
        let reply = read_frame(&mut self.stdout, 64 * 1024).await?;
        match serde_json::from_slice::<Reply>(&reply).map_err(std::io::Error::other)? {
            Reply::Rendered { pages, sha256, heap_peak } => {
                let bytes = read_frame(&mut self.stdout, max_pdf).await?;
                Ok(Ok((RenderedPdf { bytes, pages, sha256 }, heap_peak)))
            }
            Reply::Failed { reason } => Ok(Err(reason)),
        }
    }

    /// The exit status of a worker whose pipe broke (it exits on its own; give it a moment).
    async fn reap(&mut self) -> Option<ExitStatus> {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.kill().await;
                None
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The worker's stderr as log lines, in bounded pieces: a template can put its own text in a
/// panic message.
async fn log_stderr(mut stderr: tokio::process::ChildStderr, pid: u32) {
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buffer[..n]);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(worker = pid, "{line}");
        }
    }
}

async fn read_frame(input: &mut BufReader<ChildStdout>, limit: usize) -> std::io::Result<Vec<u8>> {
    let len = input.read_u32_le().await? as usize;
    if len > limit {
        return Err(std::io::Error::other(format!("reply of {len} bytes, more than the {limit} allowed")));
    }
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!("256MiB".parse(), Ok(ByteSize::mib(256)));
        assert_eq!("256 MiB".parse(), Ok(ByteSize::mib(256)));
        assert_eq!("1g".parse(), Ok(ByteSize::mib(1024)));
        assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(256).to_string(), "256 MiB");
        assert_eq!(ByteSize::mib(2048).to_string(), "2 GiB");
    }
}
