//! Hostile files through the command line: outputs that are devices, FIFOs, links or inputs;
//! inputs that never end, wait forever or declare absurd sizes. Each case must be refused with
//! the file named, quickly, without losing data and without using much memory.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a bounded run of the binary did.
#[derive(Debug)]
struct Outcome {
    /// Exit status, `None` when killed by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The child's peak resident memory, in MiB.
    peak_rss_mib: f64,
    /// Wall time until it exited (or was killed).
    elapsed: Duration,
    /// Killed for running longer than the limit.
    timed_out: bool,
}

impl Outcome {
    fn failed_cleanly(&self) -> bool {
        !self.timed_out && self.code == Some(1)
    }
}

/// Address space the child may reserve: a regression must fail its test, not take the memory
/// of a machine the test shares.
const CHILD_ADDRESS_SPACE: u64 = 6 << 30;

/// Run `emocam args`, killing it after `limit`; reports its peak memory as the kernel counted
/// it (`ru_maxrss` from `wait4`).
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its peak memory"
)]
fn run_bounded<I, S>(args: I, limit: Duration) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_emocam"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let cap = libc::rlimit {
        rlim_cur: CHILD_ADDRESS_SPACE,
        rlim_max: CHILD_ADDRESS_SPACE,
    };
    // SAFETY: plain system call on our own child's pid with a valid rlimit.
    unsafe { libc::prlimit(pid, libc::RLIMIT_AS, &cap, std::ptr::null_mut()) };
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: waits for our own child only.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let elapsed = start.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        elapsed,
        timed_out,
    }
}

/// Make a FIFO at `path` (nobody ever opens its other end).
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Peak memory a refusal, or a GIF played frame by frame, may cost: what the binary needs to
/// start (its models and the face detector, about 25 MiB) and little more.
const REFUSAL_RSS_MIB: f64 = 100.0;

/// Quick enough that a refusal cannot have read a device, waited on a FIFO or done the work
/// before checking its output.
const QUICK: Duration = Duration::from_secs(5);

fn assert_quick_refusal(o: &Outcome, names: &str, needles: &[&str]) {
    println!("{o:?}");
    assert!(!o.timed_out, "still running after its limit: {o:?}");
    assert!(o.failed_cleanly(), "expected exit status 1: {o:?}");
    assert!(o.elapsed < QUICK, "took {:?}", o.elapsed);
    assert!(
        o.stderr.contains(names),
        "error does not name {names}: {}",
        o.stderr
    );
    for n in needles {
        assert!(o.stderr.contains(n), "error lacks {n:?}: {}", o.stderr);
    }
    assert!(
        o.peak_rss_mib < REFUSAL_RSS_MIB,
        "peak RSS {:.0} MiB",
        o.peak_rss_mib
    );
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// Two members for `emocam ensemble`: the shipped mini-Xception copied twice.
fn two_members(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    std::fs::copy(common::mini_xception_weights(), &a).unwrap();
    std::fs::copy(common::mini_xception_weights(), &b).unwrap();
    (a, b)
}

fn ensemble(out: &Path, a: &Path, b: &Path) -> Outcome {
    let args: Vec<&OsStr> = vec![
        "ensemble".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        a.as_os_str(),
        b.as_os_str(),
    ];
    run_bounded(args, Duration::from_secs(120))
}

#[test]
fn ensemble_refuses_a_character_device_as_out_and_leaves_it_a_device() {
    let dev = Path::new("/dev/full");
    if !std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_char_device()) {
        println!("SKIPPED: /dev/full is not a character device here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    let o = ensemble(dev, &a, &b);
    assert_quick_refusal(&o, "/dev/full", &["character device"]);
    assert!(!o.stdout.contains("wrote"), "{}", o.stdout);
    let m = std::fs::metadata(dev).unwrap();
    assert!(m.file_type().is_char_device(), "/dev/full was replaced");
}

#[test]
fn ensemble_refuses_a_fifo_or_a_link_to_a_device_as_out() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    let o = ensemble(&fifo, &a, &b);
    assert_quick_refusal(&o, "out.fifo", &["FIFO"]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    let link = dir.path().join("null.safetensors");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let o = ensemble(&link, &a, &b);
    assert_quick_refusal(&o, "null.safetensors", &["character device"]);
    let m = std::fs::symlink_metadata(&link).unwrap();
    assert!(m.file_type().is_symlink(), "the link was replaced");
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn ensemble_never_writes_over_one_of_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    let before = std::fs::read(&a).unwrap();
    // The same file as given, as `./name` from its folder, and through a hard link.
    let linked = dir.path().join("linked.safetensors");
    std::fs::hard_link(&a, &linked).unwrap();
    let dotted = dir.path().join(".").join("a.safetensors");
    for out in [&a, &dotted, &linked] {
        let o = ensemble(out, &a, &b);
        assert_quick_refusal(&o, "a.safetensors", &["is the input"]);
        assert_eq!(std::fs::read(&a).unwrap(), before, "member A changed");
    }
}

#[test]
fn ensemble_keeps_an_existing_file_and_writes_new_ones_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    let existing = dir.path().join("notes.txt");
    std::fs::write(&existing, b"keep me").unwrap();
    let o = ensemble(&existing, &a, &b);
    assert_quick_refusal(&o, "notes.txt", &["already exists"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let new = dir.path().join("pair.safetensors");
    let o = ensemble(&new, &a, &b);
    assert!(o.code == Some(0), "{o:?}");
    let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert!(emocam::Classifier::load(&new).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Inputs that never end or wait forever

#[test]
fn predict_and_run_refuse_dev_zero_behind_an_image_name_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let o = run_bounded(
        [OsStr::new("predict"), link.as_os_str()],
        Duration::from_secs(20),
    );
    assert_quick_refusal(&o, "zero.jpg", &["character device", "regular file"]);
    let o = run_bounded(
        [
            OsStr::new("run"),
            OsStr::new("--source"),
            link.as_os_str(),
            OsStr::new("--max-frames"),
            OsStr::new("1"),
        ],
        Duration::from_secs(20),
    );
    assert_quick_refusal(&o, "zero.jpg", &["character device"]);
}

#[test]
fn predict_run_and_eval_refuse_a_fifo_quickly() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["wait.jpg", "wait.gif"] {
        let fifo = dir.path().join(name);
        mkfifo(&fifo);
        let o = run_bounded(
            [OsStr::new("predict"), fifo.as_os_str()],
            Duration::from_secs(20),
        );
        assert_quick_refusal(&o, name, &["FIFO"]);
        let o = run_bounded(
            [
                OsStr::new("run"),
                OsStr::new("--source"),
                fifo.as_os_str(),
                OsStr::new("--max-frames"),
                OsStr::new("1"),
            ],
            Duration::from_secs(20),
        );
        assert_quick_refusal(&o, name, &["FIFO"]);
    }
    let fifo = dir.path().join("faces.csv");
    mkfifo(&fifo);
    let o = run_bounded(
        [OsStr::new("eval"), OsStr::new("--data"), fifo.as_os_str()],
        Duration::from_secs(20),
    );
    assert_quick_refusal(&o, "faces.csv", &["FIFO"]);
}

#[test]
fn eval_refuses_an_endless_csv_line_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("endless.csv");
    {
        let mut f = std::fs::File::create(&csv).unwrap();
        std::io::Write::write_all(&mut f, b"emotion,pixels\n3,1 2 3").unwrap();
        // A sparse 256 MiB line of NUL bytes: costs no disk, never ends before the file does.
        f.set_len(256 << 20).unwrap();
    }
    let o = run_bounded(
        [OsStr::new("eval"), OsStr::new("--data"), csv.as_os_str()],
        Duration::from_secs(60),
    );
    assert_quick_refusal(&o, "endless.csv", &["line 2", "longer than"]);
}

// ---------------------------------------------------------------------------------------------
// Images that declare more than they are

/// A 35-byte GIF whose screen declares `w` x `h` pixels, holding one 1x1 frame: a decoder that
/// composes frames on the screen before checking its size fills `w * h * 4` bytes.
fn gif_declaring(w: u16, h: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(w.to_le_bytes());
    g.extend(h.to_le_bytes());
    // A global colour table of 2 entries, black and white.
    g.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    // The frame: at (0, 0), 1x1, not interlaced, no local colour table.
    g.push(0x2c);
    g.extend([0, 0, 0, 0, 1, 0, 1, 0, 0]);
    // LZW minimum code size 2, one tiny block (clear, 0, end), then the trailer.
    g.extend([2, 2, 0x44, 0x01, 0, 0x3b]);
    g
}

#[test]
fn a_gif_declaring_a_huge_canvas_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("huge.gif");
    std::fs::write(&gif, gif_declaring(16_384, 16_384)).unwrap();
    let o = run_bounded(
        [OsStr::new("predict"), gif.as_os_str()],
        Duration::from_secs(60),
    );
    assert_quick_refusal(&o, "huge.gif", &["16384x16384"]);
    let o = run_bounded(
        [
            OsStr::new("run"),
            OsStr::new("--source"),
            gif.as_os_str(),
            OsStr::new("--max-frames"),
            OsStr::new("1"),
        ],
        Duration::from_secs(60),
    );
    assert_quick_refusal(&o, "huge.gif", &["16384x16384"]);
}

/// A `frames`-frame animation on a 640x480 screen: one full first frame, then small patches
/// that move, 40 ms each (a small file that decodes to a full screen per frame).
fn long_gif(path: &Path, frames: usize) {
    let file = std::fs::File::create(path).unwrap();
    let palette: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let mut enc = gif::Encoder::new(file, 640, 480, &palette).unwrap();
    for i in 0..frames {
        let mut f = if i == 0 {
            let px: Vec<u8> = (0..640 * 480).map(|p| (p % 251) as u8).collect();
            gif::Frame::from_indexed_pixels(640, 480, px, None)
        } else {
            let mut f = gif::Frame::from_indexed_pixels(16, 16, vec![(i % 256) as u8; 256], None);
            f.left = ((i * 16) % 624) as u16;
            f.top = ((i * 7) % 464) as u16;
            f
        };
        f.delay = 4;
        enc.write_frame(&f).unwrap();
    }
}

#[test]
fn a_long_gif_streams_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("long.gif");
    long_gif(&gif, 2_000);
    let o = run_bounded(
        [
            OsStr::new("run"),
            OsStr::new("--source"),
            gif.as_os_str(),
            OsStr::new("--fps"),
            OsStr::new("0"),
            OsStr::new("--max-frames"),
            OsStr::new("300"),
            OsStr::new("--json"),
        ],
        Duration::from_secs(120),
    );
    println!("{o:?}");
    assert_eq!(o.code, Some(0), "{o:?}");
    let summary: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["frames"], 300, "{summary}");
    assert!(
        summary["source"].as_str().unwrap().contains("2000 frames"),
        "{summary}"
    );
    // Decoded whole, the frames would be 2000 x 640 x 480 x 4 bytes (2.3 GiB); kept one by one
    // (a leak), 300 of them would be 350 MiB.
    assert!(
        o.peak_rss_mib < REFUSAL_RSS_MIB,
        "peak RSS {:.0} MiB",
        o.peak_rss_mib
    );
}

#[test]
fn train_refuses_a_device_or_its_own_data_as_out_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("faces.csv");
    std::fs::write(&data, "emotion,pixels\n3,0 0 0 0\n").unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["train".into(), "--data".into(), data.clone().into()];
        args.extend([
            "--val".into(),
            data.clone().into(),
            "--out".into(),
            out.into(),
        ]);
        args.extend(extra.iter().map(OsString::from));
        run_bounded(args, Duration::from_secs(20))
    };
    let dev = Path::new("/dev/full");
    if std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_char_device()) {
        let o = train(dev, &[]);
        assert_quick_refusal(&o, "/dev/full", &["character device"]);
        assert!(std::fs::metadata(dev).unwrap().file_type().is_char_device());
    }
    let o = train(&data, &[]);
    assert_quick_refusal(&o, "faces.csv", &["input"]);
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "emotion,pixels\n3,0 0 0 0\n",
        "the dataset is intact"
    );
    // A negative number is read as a value (not a flag) and refused by name.
    let o = train(&dir.path().join("out.safetensors"), &["--lr", "-1"]);
    assert_quick_refusal(&o, "--lr", &["-1"]);
}

/// Resident memory (MiB) and thread count of a running process, from `/proc`.
fn rss_and_threads(pid: u32) -> Option<(f64, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")? / 1024.0, field("Threads:")? as u32))
}

/// A long live run keeps its memory flat and its threads fixed. Ignored by default (it takes
/// `EMOCAM_SOAK_SECS`, default 120 s); the one-hour soak is
/// `EMOCAM_SOAK_SECS=3600 cargo test --release --test hostile -- --ignored soak`.
#[test]
#[ignore = "a soak of minutes; run it with --ignored"]
fn soak_a_live_run_keeps_memory_flat() {
    let secs: u64 = std::env::var("EMOCAM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let mut child = Command::new(env!("CARGO_BIN_EXE_emocam"))
        .args(["run", "--source", "demo", "--fps", "30"])
        .args(["--max-frames", &(secs * 30).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut samples = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let Some(s) = rss_and_threads(child.id()) {
            samples.push(s);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(child.wait().unwrap().success());
    assert!(
        samples.len() as u64 >= secs / 2,
        "{} samples",
        samples.len()
    );
    // After a warm-up of a fifth of the run, the plateau: no growth beyond noise.
    let warm = &samples[samples.len() / 5..];
    let (first, last) = warm.split_at(warm.len() / 2);
    let peak = |s: &[(f64, u32)]| s.iter().map(|x| x.0).fold(0.0, f64::max);
    println!(
        "RSS peak {:.1} MiB in the first half, {:.1} MiB in the second",
        peak(first),
        peak(last)
    );
    assert!(
        peak(last) <= peak(first) * 1.05 + 8.0,
        "memory grew from {:.1} to {:.1} MiB",
        peak(first),
        peak(last)
    );
    let threads: std::collections::BTreeSet<u32> = warm.iter().map(|x| x.1).collect();
    assert_eq!(threads.len(), 1, "thread count changed: {threads:?}");
}
