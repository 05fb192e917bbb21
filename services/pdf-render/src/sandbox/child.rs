//! The worker process (`pdf-render-worker`): loads fonts once, locks itself in, then renders one
//! request at a time from stdin to stdout until stdin closes.
//!
//! The locks, installed after start-up and before the first untrusted template:
//! - heap: every allocation is counted ([`CountingAlloc`], the binary's global allocator); past
//!   the warm baseline plus the memory limit the process exits with [`EXIT_OVER_MEMORY`] at once,
//!   so the renderer can name the reason. `RLIMIT_DATA` backs it up for memory the counter misses.
//! - CPU: `RLIMIT_CPU` is moved before every render to the time used so far plus the time limit
//!   (the kernel's SIGXCPU is a backstop; the renderer's wall-clock limit kills first).
//! - files and network: a seccomp filter lets through only what rendering needs (memory, threads,
//!   futexes, reading stdin and writing stdout); `open`, `socket`, `execve`, `fork` and every
//!   other system call fail with EPERM. `RLIMIT_FSIZE` and `RLIMIT_NOFILE` are lowered too.
//!   `RLIMIT_NPROC` is not: it counts the threads of every process of the user (typst's thread
//!   pool would be refused for a non-root user, and root ignores it); the filter stops forks.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    io::{self, BufReader, BufWriter},
    process::ExitCode,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::{
    ByteSize,
    protocol::{self, EXIT_OVER_MEMORY, EXIT_START_FAILED, Ready, RenderRequest, Reply},
};
use crate::render;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The most in use since the current render began: reported with each PDF, so the limit can be
/// set from what real templates need.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The worker's global allocator: the system allocator, counted and capped. Sound because every
/// call goes to `System` with the caller's own pointer and layout; only the counters are added.
pub struct CountingAlloc;

fn over_memory() -> ! {
    // Inside the allocator nothing may allocate: exit at once, with a status that says why.
    unsafe { libc::_exit(EXIT_OVER_MEMORY) }
}

fn reserve(bytes: usize) {
    let now = IN_USE.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
    if now > LIMIT.load(Ordering::Relaxed) {
        over_memory();
    }
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            over_memory();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            over_memory();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            reserve(new_size - layout.size());
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            over_memory();
        }
        if new_size < layout.size() {
            IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        p
    }
}

/// The worker's command line, given by the renderer that starts it.
#[derive(Debug, clap::Parser)]
#[command(name = "pdf-render-worker", about = "One sandboxed typst worker of pdf-render (started by pdf-render)")]
pub struct WorkerArgs {
    /// Heap a template may use above the warm worker's own.
    #[arg(long)]
    pub memory_limit: ByteSize,
    /// CPU time one render may use (backstop; the renderer kills at this wall-clock time).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub time_limit: Duration,
    /// Install the sandbox, try to read a file, connect, and start a process, print what happened
    /// as JSON, and exit: how tests (and operators) check the sandbox works on this kernel.
    #[arg(long)]
    pub check_sandbox: bool,
    /// The renderer's process id. In a container the renderer is often PID 1, so "my parent is
    /// 1" cannot mean "my parent is gone"; comparing with the pid it gave can.
    #[arg(long)]
    pub parent_pid: Option<i32>,
}

/// The worker's `main`.
pub fn main(args: WorkerArgs) -> ExitCode {
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdf-render-worker: {e}");
            ExitCode::from(EXIT_START_FAILED as u8)
        }
    }
}

fn serve(args: &WorkerArgs) -> Result<(), String> {
    // Die with the renderer: an orphan must not keep running a template. (These libc calls take
    // no pointers, or pointers to locals that outlive them.)
    let parent = unsafe { libc::getppid() };
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Checked after PR_SET_PDEATHSIG, so a parent that dies from here on still kills this worker.
    let orphaned = match args.parent_pid {
        Some(expected) => parent != expected,
        None => parent == 1,
    };
    if orphaned {
        return Err("started without a parent".into());
    }
    warm_up()?;
    let sandbox = lock_in(args)?;

    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let ready = serde_json::to_vec(&Ready { sandbox }).map_err(|e| e.to_string())?;
    protocol::write_frame(&mut output, &ready).map_err(|e| format!("failed to report ready: {e}"))?;
    if args.check_sandbox {
        let report = check_sandbox();
        protocol::write_frame(&mut output, report.as_bytes()).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let request_limit = render::MAX_TEMPLATE_BYTES + 2 * render::MAX_DATA_BYTES + render::MAX_LOGO_BYTES;
    loop {
        let frame = match protocol::read_frame(&mut input, request_limit) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("failed to read a request: {e}")),
        };
        limit_cpu_time(args.time_limit);
        let baseline = IN_USE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let written = match serde_json::from_slice::<RenderRequest>(&frame) {
            Ok(request) => {
                let result = std::panic::catch_unwind(|| render::render(&request.input()));
                // Bound the memo cache of a long-lived worker.
                comemo::evict(10);
                match result {
                    Ok(Ok(pdf)) => {
                        let heap_peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline) as u64;
                        protocol::write_rendered(&mut output, &pdf, heap_peak)
                    }
                    Ok(Err(e)) => reply_failed(&mut output, &folio_runtime::error_chain(&e)),
                    Err(_) => reply_failed(&mut output, "the renderer panicked on this template"),
                }
            }
            Err(e) => reply_failed(&mut output, &format!("malformed render request: {e}")),
        };
        written.map_err(|e| format!("failed to reply: {e}"))?;
    }
}

fn reply_failed(output: &mut impl io::Write, reason: &str) -> io::Result<()> {
    let reply = serde_json::to_vec(&Reply::Failed { reason: reason.into() }).map_err(io::Error::other)?;
    protocol::write_frame(output, &reply)
}

/// Fonts, the standard library and typst's thread pool are loaded by a first render, so every
/// render after it is warm, and nothing is left to open once the sandbox is in place.
fn warm_up() -> Result<(), String> {
    let data = serde_json::json!({"n": [1, 2, 3]});
    let input = render::RenderInput {
        template: "#let d = json(\"data.json\")\n#set text(font: \"DejaVu Sans\")\n= Warm *up*\n\
                   #table(columns: 2, ..d.n.map(str))\n#text(font: \"Libertinus Serif\")[serif] $x^2$\n",
        data: &data,
        logo_svg: None,
        date: time::macros::date!(2026 - 01 - 01),
        ident: "warm-up".into(),
        original_pdf: None,
    };
    render::render(&input).map_err(|e| format!("the warm-up render failed: {}", folio_runtime::error_chain(&e)))?;
    comemo::evict(0);
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> Result<(), String> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(format!("setrlimit({resource}) failed: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// The kernel counts `RLIMIT_DATA` over every private writable mapping (heap, thread stacks),
/// which the allocator's count does not see; start from what the warm worker already has.
fn data_segment_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmData:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .map_or(512 << 20, |kb: u64| kb * 1024)
}

fn lock_in(args: &WorkerArgs) -> Result<String, String> {
    let memory = args.memory_limit.bytes();
    let baseline = IN_USE.load(Ordering::Relaxed);
    LIMIT.store(baseline.saturating_add(usize::try_from(memory).unwrap_or(usize::MAX)), Ordering::Relaxed);
    let data = data_segment_bytes().saturating_add(memory).saturating_add(64 << 20);
    set_limit(libc::RLIMIT_DATA, data, data)?;
    set_limit(libc::RLIMIT_FSIZE, 0, 0)?;
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    set_limit(libc::RLIMIT_NOFILE, 3, 3)?;
    install_seccomp()?;
    Ok(format!(
        "seccomp (allow-list, all threads), heap {} above a warm {} KiB, RLIMIT_DATA {} MiB, RLIMIT_CPU per render, \
         RLIMIT_FSIZE/NOFILE/CORE lowered",
        args.memory_limit,
        baseline >> 10,
        data >> 20
    ))
}

/// Before each render: this render may use `limit` more CPU time than all before it.
fn limit_cpu_time(limit: Duration) {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let used = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) as u64 + 1;
    let soft = used + limit.as_secs() + 1;
    // The hard limit stays where it is, so the next render can move the soft one again.
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: libc::RLIM_INFINITY };
    unsafe { libc::setrlimit(libc::RLIMIT_CPU, &limit) };
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("no seccomp support for this CPU: {e:?}"))
}

/// Two filters. The allow-list: everything not in it fails with EPERM. Then `clone3` answers
/// ENOSYS, so a thread typst starts later falls back to `clone`, which is allowed only with
/// `CLONE_THREAD` (a thread, never a process). The kernel runs the newest filter first and
/// keeps its answer when both answer with an errno.
fn install_seccomp() -> Result<(), String> {
    let arch = target_arch()?;
    let thread_only = SeccompRule::new(vec![
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )
        .map_err(|e| e.to_string())?,
    ])
    .map_err(|e| e.to_string())?;
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    allowed.insert(libc::SYS_clone, vec![thread_only]);
    let allow_list = SeccompFilter::new(allowed, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| e.to_string())?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    for filter in [allow_list, no_clone3] {
        let program: seccompiler::BpfProgram =
            filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("failed to install seccomp: {e}"))?;
    }
    Ok(())
}

/// What a warm worker needs: memory, threads and their synchronisation, signals, time, and the
/// two pipes it already has. Nothing that names a path or makes a descriptor.
const ALLOWED: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_membarrier,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_prctl,
    // Only to add the second filter; a filter can only narrow what is allowed.
    libc::SYS_seccomp,
];

/// Each attempt must come back refused.
fn check_sandbox() -> String {
    fn outcome<T>(result: io::Result<T>) -> String {
        match result {
            Ok(_) => "allowed".into(),
            Err(e) => format!("refused: {e}"),
        }
    }
    let thread = std::thread::spawn(|| 2 + 2).join().map(|_| ()).map_err(|_| io::Error::other("panicked"));
    serde_json::json!({
        "read_file": outcome(std::fs::read("/etc/passwd")),
        "write_file": outcome(std::fs::write("/tmp/pdf-render-worker-check", b"x")),
        "list_dir": outcome(std::fs::read_dir("/")),
        "connect": outcome(std::net::TcpStream::connect(("127.0.0.1", 5432))),
        "spawn_process": outcome(std::process::Command::new("/bin/true").status()),
        "start_thread": outcome(thread),
    })
    .to_string()
}
