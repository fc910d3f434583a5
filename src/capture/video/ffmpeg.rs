//! Every codec and container the built-in decoder does not read, and network streams, through
//! the `ffmpeg` program (found on PATH, or named by `EMOCAM_FFMPEG`).
//!
//! `ffprobe` gives the stream's codec, size, length and frame count. `ffmpeg` then decodes to
//! raw RGB on its stdout, one frame after another. Each frame's time comes from the `showinfo`
//! filter, which logs the presentation time and size of every frame on stderr just before the
//! frame is written: one process, no second pass over the file, and it works for live streams,
//! unlike a packet list from ffprobe (which would also miscount decoders that drop or add
//! frames). `-vsync passthrough` keeps ffmpeg from duplicating or dropping frames, so the n-th
//! log line belongs to the n-th frame; `-copyts` keeps the container's times across seeks.
//!
//! Three threads per running ffmpeg: this one asks for frames; a log thread reads stderr (so
//! ffmpeg can never block on it), passes frame times on and keeps the last few other lines for
//! error messages; a frame thread reads each frame's bytes from stdout. Channels are bounded,
//! waits for a frame time out, and the process (its whole process group) is killed and reaped
//! when the source is dropped or seeks.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use image::RgbImage;

use super::Timed;
use super::mp4::check_size;
use crate::error::{Error, Result};

/// Environment variable naming the ffmpeg program to use instead of the one on PATH (a path
/// that does not exist turns FFmpeg off). ffprobe is looked for beside it, then on PATH.
pub const FFMPEG_ENV: &str = "EMOCAM_FFMPEG";

/// How to turn the FFmpeg path on, for messages.
pub const FFMPEG_HINT: &str =
    "install FFmpeg (e.g. `apt-get install ffmpeg`), or set EMOCAM_FFMPEG to the ffmpeg program";

/// How long to wait for ffmpeg's next frame (or ffprobe's answer) before giving up on it.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Log lines kept for error messages.
const LOG_LINES: usize = 12;
/// Longest log line kept (ffmpeg's are far shorter; a longer one is cut).
const MAX_LINE: usize = 2048;
/// Most of ffprobe's answer read (it is a few hundred bytes).
const MAX_PROBE_BYTES: u64 = 1 << 20;

/// The ffmpeg and ffprobe programs.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

fn is_program(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let exe = if cfg!(windows) {
        format!("{name}.exe")
    } else {
        name.to_string()
    };
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&exe))
        .find(|p| is_program(p))
}

impl Ffmpeg {
    /// The programs from `EMOCAM_FFMPEG` or PATH, or why there are none.
    pub fn find() -> std::result::Result<Self, String> {
        let ffmpeg = match std::env::var_os(FFMPEG_ENV).filter(|v| !v.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                if !is_program(&p) {
                    return Err(format!(
                        "{FFMPEG_ENV}={} is not an executable file",
                        p.display()
                    ));
                }
                p
            }
            None => on_path("ffmpeg").ok_or("ffmpeg is not on PATH")?,
        };
        let beside = ffmpeg
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| ffmpeg.with_file_name(n.replacen("ffmpeg", "ffprobe", 1)));
        let ffprobe = beside
            .filter(|p| p != &ffmpeg && is_program(p))
            .or_else(|| on_path("ffprobe"))
            .ok_or_else(|| {
                format!(
                    "found {} but no ffprobe beside it or on PATH",
                    ffmpeg.display()
                )
            })?;
        Ok(Self { ffmpeg, ffprobe })
    }
}

/// What ffprobe says about the first video stream.
#[derive(Debug, Clone)]
struct StreamInfo {
    codec: String,
    width: u32,
    height: u32,
    frames: Option<u64>,
    duration_ms: Option<f64>,
}

/// Run a program to its end with its output collected, killing it after `timeout`.
fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> std::result::Result<(bool, String, String), String> {
    let mut child = spawn_in_group(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .map_err(|e| format!("cannot run it: {e}"))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::Builder::new()
            .name("emocam-ffprobe-out".into())
            .spawn(move || {
                let mut s = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(MAX_PROBE_BYTES).read_to_end(&mut s);
                }
                String::from_utf8_lossy(&s).into_owned()
            })
            .map_err(|e| format!("cannot start a thread: {e}"))
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    )?;
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    )?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                kill_group(&mut child);
                return Err(format!("it gave no answer in {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status.success(), out, err))
}

/// Start `cmd` in a process group of its own, so that killing the group also ends anything it
/// started.
fn spawn_in_group(cmd: &mut Command) -> std::io::Result<Child> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.stdin(Stdio::null()).spawn()
}

/// Kill a child started by [`spawn_in_group`] with its group, and reap it.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain syscall; a negative pid names the child's own process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn probe(
    tools: &Ffmpeg,
    input: &str,
    timeout: Duration,
) -> std::result::Result<StreamInfo, String> {
    let mut cmd = Command::new(&tools.ffprobe);
    cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=codec_name,width,height,nb_frames,duration:stream_tags=rotate:stream_side_data=rotation:format=duration")
        .args(["-of", "json", input]);
    let (ok, out, err) = run_bounded(cmd, timeout)
        .map_err(|e| format!("ffprobe ({}): {e}", tools.ffprobe.display()))?;
    if !ok {
        return Err(format!("ffprobe cannot read it: {}", last_line(&err)));
    }
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ffprobe's answer is not JSON: {e}"))?;
    let Some(s) = v["streams"].as_array().and_then(|a| a.first()) else {
        return Err("no video stream (ffprobe found none in it)".into());
    };
    let num = |v: &serde_json::Value| -> Option<f64> {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|x: &f64| x.is_finite())
    };
    let width = s["width"].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32;
    let height = s["height"].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32;
    check_size(width, height)?;
    // ffmpeg turns frames upright by default: a quarter turn swaps the sides.
    let rotation = num(&s["tags"]["rotate"]).or_else(|| {
        s["side_data_list"]
            .as_array()
            .and_then(|l| l.iter().find_map(|d| num(&d["rotation"])))
    });
    let (width, height) = match rotation.map(|r| (r.round() as i64).rem_euclid(180)) {
        Some(90) => (height, width),
        _ => (width, height),
    };
    let duration_s = num(&s["duration"]).or_else(|| num(&v["format"]["duration"]));
    Ok(StreamInfo {
        codec: s["codec_name"].as_str().unwrap_or("unknown").to_string(),
        width,
        height,
        frames: num(&s["nb_frames"]).filter(|&n| n > 0.0).map(|n| n as u64),
        duration_ms: duration_s.filter(|&d| d > 0.0).map(|d| d * 1e3),
    })
}

/// A message from the frame thread.
enum Msg {
    /// A frame and its presentation time in milliseconds (container time, not yet relative).
    Frame(RgbImage, f64),
    /// stdout ended after the last frame.
    End,
    /// The frame thread gave up (a frame's bytes could not be read, or an absurd size).
    Failed(String),
}

/// A frame's time and size, from a showinfo line.
struct FrameMeta {
    pts_ms: f64,
    width: u32,
    height: u32,
}

/// One running ffmpeg process and its two reader threads.
struct Running {
    child: Child,
    frames: Option<Receiver<Msg>>,
    log: Arc<Mutex<VecDeque<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// The last lines ffmpeg logged other than frame times.
    fn log_tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let lines: Vec<&str> = log
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Wait up to `timeout` for the process to exit; whether it succeeded.
    fn exit_ok(&mut self, timeout: Duration) -> std::result::Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("ffmpeg exited with {s}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => return Err("ffmpeg closed its output but did not exit".into()),
                Err(e) => return Err(format!("cannot wait for ffmpeg: {e}")),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Stop taking frames first, so a frame thread waiting to hand one over returns.
        self.frames.take();
        kill_group(&mut self.child);
        // With the process group dead its pipes are closed, so both threads are at their end.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Parse a showinfo line: the time base (`config in time_base: 1/12288, ...`) or a frame
/// (`n: 3 pts: 1536 pts_time:0.125 ... s:640x360 ...`).
fn parse_showinfo(line: &str, time_base: &mut Option<(i64, i64)>) -> Option<FrameMeta> {
    if !line.contains("Parsed_showinfo") {
        return None;
    }
    let field = |name: &str| -> Option<&str> {
        let at = line.find(name)? + name.len();
        line[at..].split_whitespace().next()
    };
    if let Some(tb) = field("time_base:") {
        let tb = tb.trim_end_matches(',');
        if let Some((n, d)) = tb.split_once('/')
            && let (Ok(n), Ok(d)) = (n.parse::<i64>(), d.parse::<i64>())
            && n > 0
            && d > 0
        {
            *time_base = Some((n, d));
        }
        return None;
    }
    let (n, d) = (*time_base)?;
    let pts: i64 = field(" pts:")?.parse().ok()?;
    let (w, h) = field(" s:")?.split_once('x')?;
    Some(FrameMeta {
        pts_ms: pts as f64 * 1e3 * n as f64 / d as f64,
        width: w.parse().ok()?,
        height: h.parse().ok()?,
    })
}

/// Read stderr to its end: frame times go to `meta`, other lines to the `log` ring.
fn log_thread(mut stderr: impl Read, meta: Sender<FrameMeta>, log: Arc<Mutex<VecDeque<String>>>) {
    let mut time_base = None;
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut handle = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        if let Some(m) = parse_showinfo(&text, &mut time_base) {
            // Blocks only while the frame thread is this many frames behind; it is never more
            // than a frame or two, as ffmpeg logs a frame just before writing it.
            let _ = meta.send(m);
        } else if !text.contains("Parsed_showinfo")
            && let Ok(mut log) = log.lock()
        {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(text.into_owned());
        }
    };
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                handle(&line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        handle(&line);
    }
}

/// Read each frame's bytes from stdout as its time arrives from the log thread.
fn frame_thread(mut stdout: impl Read, meta: Receiver<FrameMeta>, out: Sender<Msg>) {
    // The log thread ends (and closes `meta`) when ffmpeg's stderr closes, at its exit.
    while let Ok(m) = meta.recv() {
        if let Err(e) = check_size(m.width, m.height) {
            let _ = out.send(Msg::Failed(format!("ffmpeg decodes a frame of {e}")));
            return;
        }
        let mut rgb = RgbImage::new(m.width, m.height);
        if let Err(e) = stdout.read_exact(&mut rgb) {
            let _ = out.send(Msg::Failed(format!(
                "ffmpeg's output ended inside a {}x{} frame: {e}",
                m.width, m.height
            )));
            return;
        }
        if out.send(Msg::Frame(rgb, m.pts_ms)).is_err() {
            return;
        }
    }
    let _ = out.send(Msg::End);
}

/// A video decoded by ffmpeg.
pub(super) struct FfmpegVideo {
    what: String,
    input: String,
    tools: Ffmpeg,
    info: StreamInfo,
    stall: Duration,
    run: Option<Running>,
    /// Container time of the first frame of the unseeked run, the zero of frame times.
    origin_ms: Option<f64>,
    /// Frame read at open (to check it decodes), delivered first.
    peeked: Option<Timed>,
    /// Frames delivered since the process started, for messages.
    delivered: u64,
}

impl FfmpegVideo {
    /// Open `input` (`file:` path or URL) named `what` in messages.
    pub fn open(what: String, input: String, tools: Ffmpeg, stall: Duration) -> Result<Self> {
        let info = probe(&tools, &input, stall).map_err(|e| Error::video(&what, e))?;
        let mut v = Self {
            what,
            input,
            tools,
            info,
            stall,
            run: None,
            origin_ms: None,
            peeked: None,
            delivered: 0,
        };
        v.start(None)?;
        match v.next_picture()? {
            Some(first) => v.peeked = Some(first),
            None => {
                return Err(v.fail(format!(
                    "no frames: ffmpeg decoded none from its {} stream",
                    v.info.codec
                )));
            }
        }
        Ok(v)
    }

    fn fail(&self, reason: String) -> Error {
        Error::video(&self.what, reason)
    }

    /// Codec name as ffprobe gives it.
    pub fn codec(&self) -> &str {
        &self.info.codec
    }

    /// Picture size from ffprobe (turned as ffmpeg turns the frames).
    pub fn size(&self) -> (u32, u32) {
        (self.info.width, self.info.height)
    }

    /// Frame count, where the container states it.
    pub fn frame_count(&self) -> Option<u64> {
        self.info.frames
    }

    /// Length in milliseconds, where the container states it.
    pub fn duration_ms(&self) -> Option<f64> {
        self.info.duration_ms
    }

    /// Start ffmpeg, from the key frame at or before `seek_ms` if given.
    fn start(&mut self, seek_ms: Option<f64>) -> Result<()> {
        // The old process goes first: it may be holding a network stream's only connection.
        self.run = None;
        let mut cmd = Command::new(&self.tools.ffmpeg);
        cmd.args(["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"]);
        if let Some(ms) = seek_ms {
            cmd.args(["-noaccurate_seek", "-ss", &format!("{:.6}", ms / 1e3)]);
        }
        cmd.args(["-copyts", "-i", &self.input])
            .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
            .args(["-vf", "showinfo=checksum=0", "-vsync", "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_in_group(&mut cmd)
            .map_err(|e| self.fail(format!("cannot run {}: {e}", self.tools.ffmpeg.display())))?;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o, e),
            _ => {
                kill_group(&mut child);
                return Err(self.fail("ffmpeg's output pipes are missing".into()));
            }
        };
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let (meta_tx, meta_rx) = bounded::<FrameMeta>(64);
        let (frame_tx, frame_rx) = bounded::<Msg>(1);
        let mut run = Running {
            child,
            frames: Some(frame_rx),
            log: log.clone(),
            threads: Vec::new(),
        };
        let spawned = std::thread::Builder::new()
            .name("emocam-ffmpeg-log".into())
            .spawn(move || log_thread(stderr, meta_tx, log))
            .and_then(|t| {
                run.threads.push(t);
                std::thread::Builder::new()
                    .name("emocam-ffmpeg-frames".into())
                    .spawn(move || frame_thread(stdout, meta_rx, frame_tx))
            });
        match spawned {
            Ok(t) => run.threads.push(t),
            Err(e) => return Err(self.fail(format!("cannot start a reader thread: {e}"))),
        }
        self.run = Some(run);
        self.delivered = 0;
        Ok(())
    }

    /// The next frame with its time relative to the first frame, `None` at the end.
    pub fn next_picture(&mut self) -> Result<Option<Timed>> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        let Some(run) = self.run.as_mut() else {
            return Ok(None);
        };
        let got = match &run.frames {
            Some(rx) => rx.recv_timeout(self.stall),
            None => Err(RecvTimeoutError::Disconnected),
        };
        let n = self.delivered;
        match got {
            Ok(Msg::Frame(rgb, pts_ms)) => {
                self.delivered += 1;
                let origin = *self.origin_ms.get_or_insert(pts_ms);
                Ok(Some(Timed {
                    rgb,
                    ms: pts_ms - origin,
                }))
            }
            Ok(Msg::End) | Err(RecvTimeoutError::Disconnected) => {
                let exit = run.exit_ok(Duration::from_secs(5));
                let tail = run.log_tail();
                self.run = None;
                match exit {
                    Ok(()) => Ok(None),
                    Err(e) => Err(self.fail(format!(
                        "decoding stopped after frame {n} (counting from 0: {n} frames delivered): {e}: {tail}"
                    ))),
                }
            }
            Ok(Msg::Failed(e)) => {
                let tail = run.log_tail();
                self.run = None;
                Err(self.fail(format!("decoding stopped after {n} frames: {e}: {tail}")))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.run = None;
                Err(self.fail(format!(
                    "ffmpeg delivered no frame in {} s (after {n} frames); stopped it",
                    self.stall.as_secs_f64()
                )))
            }
        }
    }

    /// Restart at the key frame at or before `ms`.
    pub fn seek(&mut self, ms: f64) -> Result<()> {
        self.peeked = None;
        // Times stay relative to the first frame of the whole video, read at open.
        self.start(Some(ms.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_showinfo;

    #[test]
    fn showinfo_lines_give_frame_times_and_sizes() {
        let mut tb = None;
        assert!(
            parse_showinfo(
                "[Parsed_showinfo_0 @ 0x55d] config in time_base: 1/12288, frame_rate: 24/1",
                &mut tb
            )
            .is_none()
        );
        assert_eq!(tb, Some((1, 12288)));
        let m = parse_showinfo(
            "[Parsed_showinfo_0 @ 0x55d] n:   2 pts:   1024 pts_time:0.0833333 duration:    512 fmt:yuv420p cl:left sar:1/1 s:640x360 i:P iskey:0 type:B",
            &mut tb,
        )
        .unwrap();
        assert!((m.pts_ms - 1024.0 * 1e3 / 12288.0).abs() < 1e-9);
        assert_eq!((m.width, m.height), (640, 360));
        assert!(parse_showinfo("[mp4 @ 0x1] some other line", &mut tb).is_none());
    }
}
