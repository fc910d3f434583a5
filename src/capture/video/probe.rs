//! What a file is, read from its first bytes and its headers: the container (MP4/QuickTime,
//! Matroska/WebM, AVI) and the codec of its first video track. Small readers of just the boxes,
//! chunks and elements that say so, so that a file we cannot decode still gets an error that
//! names its codec; they never read frame data.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// File extensions taken for videos (compared without case).
pub const VIDEO_EXTENSIONS: [&str; 6] = ["mp4", "m4v", "mov", "mkv", "webm", "avi"];

/// A container format, from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media: MP4, M4V, QuickTime MOV.
    Mp4,
    /// Matroska or WebM (EBML).
    Matroska,
    /// RIFF AVI.
    Avi,
}

/// The container a file's first bytes announce, if any.
pub fn sniff(head: &[u8]) -> Option<Container> {
    if head.len() >= 8 {
        let kind = &head[4..8];
        // QuickTime files may start with any of these top-level atoms, not only `ftyp`.
        if [
            b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot",
        ]
        .iter()
        .any(|k| kind == *k)
        {
            return Some(Container::Mp4);
        }
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"AVI " {
        return Some(Container::Avi);
    }
    None
}

/// A track's kind and codec as its container names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackCodec {
    /// `vide`, `soun`, ... (MP4 handler), `vids`/`auds` (AVI), `video`/`audio` (Matroska).
    pub kind: String,
    /// The sample entry fourcc (MP4), `strf` compression fourcc (AVI) or CodecID (Matroska).
    pub codec: String,
    /// Picture size where the header gives one.
    pub size: Option<(u32, u32)>,
}

impl TrackCodec {
    /// Whether this is a video track.
    pub fn is_video(&self) -> bool {
        matches!(self.kind.as_str(), "vide" | "vids" | "video")
    }
}

/// A codec identifier with its common name, for messages: `hvc1 (H.265/HEVC)`.
pub fn codec_label(codec: &str) -> String {
    let name = match codec.trim().to_ascii_lowercase().as_str() {
        "avc1" | "avc3" | "h264" | "x264" | "v_mpeg4/iso/avc" => "H.264",
        "hvc1" | "hev1" | "hevc" | "h265" | "v_mpegh/iso/hevc" => "H.265/HEVC",
        "vp08" | "v_vp8" => "VP8",
        "vp09" | "v_vp9" => "VP9",
        "av01" | "v_av1" => "AV1",
        "mp4v" | "fmp4" | "xvid" | "divx" | "dx50" | "mp4s" | "m4s2" | "v_mpeg4/iso/sp"
        | "v_mpeg4/iso/asp" => "MPEG-4 Part 2",
        "mjpg" | "mjpa" | "mjpb" | "jpeg" | "v_mjpeg" => "Motion JPEG",
        "mpg1" | "mpg2" | "mp2v" | "v_mpeg1" | "v_mpeg2" => "MPEG-1/2",
        "apcn" | "apch" | "apcs" | "apco" | "ap4h" | "v_prores" => "Apple ProRes",
        _ => return codec.trim().to_string(),
    };
    format!("{} ({name})", codec.trim())
}

/// Read at most `n` bytes from the start of `path`.
pub fn head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    // Opening a FIFO would wait for a writer forever, and a device may never end: only a
    // regular file is looked into.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut buf = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Most boxes, chunks or elements looked at in one file, so that a crafted file cannot keep a
/// reader busy.
const MAX_ITEMS: usize = 10_000;

fn fourcc(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

struct Reader {
    r: BufReader<File>,
    len: u64,
    items: usize,
}

impl Reader {
    fn open(path: &Path) -> std::io::Result<Self> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        Ok(Self {
            r: BufReader::new(f),
            len,
            items: 0,
        })
    }

    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn seek(&mut self, to: u64) -> std::io::Result<()> {
        self.r.seek(SeekFrom::Start(to)).map(|_| ())
    }

    fn pos(&mut self) -> std::io::Result<u64> {
        self.r.stream_position()
    }

    fn count(&mut self) -> Result<(), String> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} header items"));
        }
        Ok(())
    }
}

fn io(e: std::io::Error) -> String {
    format!("cannot read its headers: {e}")
}

// --- MP4 / QuickTime ---------------------------------------------------------------------------

/// One box header: type, start of its payload, end of the box. A box that runs past `end` is
/// an error, except at the top level (`clamp`), where it is the last box of a truncated file.
fn mp4_box_in(
    r: &mut Reader,
    end: u64,
    clamp: bool,
) -> Result<Option<([u8; 4], u64, u64)>, String> {
    let start = r.pos().map_err(io)?;
    if start + 8 > end {
        return Ok(None);
    }
    r.count()?;
    let size = u32::from_be_bytes(r.bytes::<4>().map_err(io)?) as u64;
    let kind = r.bytes::<4>().map_err(io)?;
    let (payload, box_end) = match size {
        0 => (start + 8, end),
        1 => {
            let large = u64::from_be_bytes(r.bytes::<8>().map_err(io)?);
            (start + 16, start.saturating_add(large))
        }
        s => (start + 8, start + s),
    };
    if clamp && box_end > end && payload <= end {
        return Ok(Some((kind, payload, end)));
    }
    if box_end < payload || box_end > end {
        return Err(format!(
            "box {} at byte {start} claims {} bytes, past the end of its parent at byte {end}",
            fourcc(&kind),
            box_end.saturating_sub(start)
        ));
    }
    Ok(Some((kind, payload, box_end)))
}

fn mp4_box(r: &mut Reader, end: u64) -> Result<Option<([u8; 4], u64, u64)>, String> {
    mp4_box_in(r, end, false)
}

/// What the movie header of an MP4/QuickTime file says.
#[derive(Debug, Clone)]
pub struct Mp4Probe {
    /// Every track with its handler and first sample entry.
    pub tracks: Vec<TrackCodec>,
    /// Samples are listed in movie fragments, not in the movie header.
    pub fragmented: bool,
    /// Where the movie header (moov box) ends: the boxes up to there are all a demuxer needs
    /// to read, however the frame data after it was cut.
    pub header_end: u64,
}

/// Read the movie header of an MP4/QuickTime file.
pub fn mp4_tracks(path: &Path) -> Result<Mp4Probe, String> {
    let mut r = Reader::open(path).map_err(io)?;
    let len = r.len;
    let mut tracks = Vec::new();
    let mut found_moov = false;
    let mut fragmented = false;
    let mut header_end = len;
    while let Some((kind, _, end)) = mp4_box_in(&mut r, len, true)? {
        if &kind == b"moov" {
            found_moov = true;
            header_end = end;
            while let Some((k, p, e)) = mp4_box(&mut r, end)? {
                fragmented |= &k == b"mvex";
                if &k == b"trak" {
                    let mut t = TrackCodec {
                        kind: String::new(),
                        codec: String::new(),
                        size: None,
                    };
                    r.seek(p).map_err(io)?;
                    mp4_trak(&mut r, e, 0, &mut t)?;
                    if t.kind != "vide" {
                        t.size = None;
                    }
                    tracks.push(t);
                }
                r.seek(e).map_err(io)?;
            }
        }
        r.seek(end).map_err(io)?;
    }
    if !found_moov {
        return Err("it has no movie header (moov box): not a complete MP4/QuickTime file".into());
    }
    Ok(Mp4Probe {
        tracks,
        fragmented,
        header_end,
    })
}

/// The handler (`hdlr`) and first sample entry (`stsd`) under trak > mdia > minf > stbl.
fn mp4_trak(r: &mut Reader, end: u64, depth: u32, out: &mut TrackCodec) -> Result<(), String> {
    while let Some((k, p, e)) = mp4_box(r, end)? {
        match &k {
            b"mdia" | b"minf" | b"stbl" if depth < 3 => mp4_trak(r, e, depth + 1, out)?,
            // The media handler (QuickTime also has a data handler, `url `, under minf).
            b"hdlr" if depth == 1 => {
                // version/flags (4), pre_defined (4), handler_type (4)
                r.seek(p + 8).map_err(io)?;
                out.kind = fourcc(&r.bytes::<4>().map_err(io)?);
            }
            b"stsd" => {
                // version/flags (4), entry_count (4), then the first entry's box header.
                r.seek(p + 8).map_err(io)?;
                if let Some((entry, ep, ee)) = mp4_box(r, e)? {
                    out.codec = fourcc(&entry);
                    // Visual sample entries: 6 reserved + 2 data_reference_index + 16
                    // pre_defined/reserved, then width and height.
                    if ee >= ep + 28 {
                        r.seek(ep + 24).map_err(io)?;
                        let w = u16::from_be_bytes(r.bytes::<2>().map_err(io)?);
                        let h = u16::from_be_bytes(r.bytes::<2>().map_err(io)?);
                        out.size = Some((w as u32, h as u32));
                    }
                }
            }
            _ => {}
        }
        r.seek(e).map_err(io)?;
    }
    Ok(())
}

// --- AVI -------------------------------------------------------------------------------------

/// The streams an AVI file's header list declares (`strh` type and `strf` compression).
pub fn avi_tracks(path: &Path) -> Result<Vec<TrackCodec>, String> {
    let mut r = Reader::open(path).map_err(io)?;
    let riff = r.bytes::<12>().map_err(io)?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"AVI " {
        return Err("not a RIFF AVI file".into());
    }
    let mut tracks = Vec::new();
    let end = r.len;
    avi_list(&mut r, end, 0, &mut tracks)?;
    Ok(tracks)
}

/// The chunks up to `end`, descending into LIST hdrl and LIST strl; stops at the frame data
/// (LIST movi).
fn avi_list(
    r: &mut Reader,
    end: u64,
    depth: u32,
    tracks: &mut Vec<TrackCodec>,
) -> Result<bool, String> {
    loop {
        let pos = r.pos().map_err(io)?;
        if pos + 8 > end {
            return Ok(true);
        }
        r.count()?;
        let id = r.bytes::<4>().map_err(io)?;
        let size = u32::from_le_bytes(r.bytes::<4>().map_err(io)?) as u64;
        let chunk_end = (pos + 8 + size).min(end);
        match &id {
            b"LIST" if size >= 4 => match &r.bytes::<4>().map_err(io)? {
                b"hdrl" | b"strl" if depth < 2 => {
                    let go_on = avi_list(r, chunk_end, depth + 1, tracks)?;
                    if !go_on {
                        return Ok(false);
                    }
                }
                b"movi" => return Ok(false),
                _ => {}
            },
            b"strh" if size >= 8 => {
                let t = r.bytes::<8>().map_err(io)?;
                tracks.push(TrackCodec {
                    kind: fourcc(&t[0..4]),
                    codec: fourcc(&t[4..8]),
                    size: None,
                });
            }
            b"strf" if size >= 20 => {
                let b = r.bytes::<20>().map_err(io)?;
                if let Some(t) = tracks.last_mut()
                    && t.kind == "vids"
                {
                    // BITMAPINFOHEADER: biSize, biWidth, biHeight, biPlanes, biBitCount,
                    // biCompression.
                    let w = i32::from_le_bytes([b[4], b[5], b[6], b[7]]).unsigned_abs();
                    let h = i32::from_le_bytes([b[8], b[9], b[10], b[11]]).unsigned_abs();
                    t.size = Some((w, h));
                    let compression = &b[16..20];
                    if compression.iter().any(|&c| c != 0) {
                        t.codec = fourcc(compression);
                    }
                }
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        r.seek(chunk_end + (chunk_end & 1)).map_err(io)?;
    }
}

// --- Matroska / WebM ---------------------------------------------------------------------------

const EBML_UNKNOWN: u64 = u64::MAX;

/// An EBML variable-length integer; `keep_marker` for element IDs.
fn vint(r: &mut Reader, keep_marker: bool) -> Result<u64, String> {
    let first = r.bytes::<1>().map_err(io)?[0];
    if first == 0 {
        return Err("invalid EBML length".into());
    }
    let len = first.leading_zeros() as usize + 1;
    let mut value = if keep_marker {
        first as u64
    } else {
        (first as u64) & ((1u64 << (8 - len)) - 1)
    };
    let mut all_ones = value == (1u64 << (8 - len)) - 1;
    for _ in 1..len {
        let b = r.bytes::<1>().map_err(io)?[0];
        all_ones &= b == 0xFF;
        value = (value << 8) | b as u64;
    }
    if !keep_marker && all_ones {
        return Ok(EBML_UNKNOWN);
    }
    Ok(value)
}

const SEGMENT: u64 = 0x1853_8067;
const TRACKS: u64 = 0x1654_AE6B;
const TRACK_ENTRY: u64 = 0xAE;
const TRACK_TYPE: u64 = 0x83;
const CODEC_ID: u64 = 0x86;
const VIDEO: u64 = 0xE0;
const PIXEL_WIDTH: u64 = 0xB0;
const PIXEL_HEIGHT: u64 = 0xBA;
const CLUSTER: u64 = 0x1F43_B675;

/// Every track of a Matroska/WebM file with its type and CodecID.
pub fn matroska_tracks(path: &Path) -> Result<Vec<TrackCodec>, String> {
    let mut r = Reader::open(path).map_err(io)?;
    let end = r.len;
    let mut tracks = Vec::new();
    ebml_walk(&mut r, end, 0, &mut tracks)?;
    Ok(tracks)
}

fn ebml_uint(r: &mut Reader, size: u64) -> Result<u64, String> {
    if size > 8 {
        return Err("an integer element longer than 8 bytes".into());
    }
    let mut v = 0u64;
    for _ in 0..size {
        v = (v << 8) | r.bytes::<1>().map_err(io)?[0] as u64;
    }
    Ok(v)
}

/// The elements up to `end`, descending into Segment > Tracks > TrackEntry > Video; returns
/// false at the first Cluster (frame data), where the track list has been seen.
fn ebml_walk(
    r: &mut Reader,
    end: u64,
    depth: u32,
    tracks: &mut Vec<TrackCodec>,
) -> Result<bool, String> {
    loop {
        let pos = r.pos().map_err(io)?;
        if pos + 2 > end {
            return Ok(true);
        }
        r.count()?;
        let id = vint(r, true)?;
        let size = vint(r, false)?;
        let data = r.pos().map_err(io)?;
        let elem_end = if size == EBML_UNKNOWN {
            end
        } else {
            data.saturating_add(size).min(end)
        };
        match id {
            CLUSTER => return Ok(false),
            SEGMENT | TRACKS | VIDEO if depth < 4 => {
                let go_on = ebml_walk(r, elem_end, depth + 1, tracks)?;
                if !go_on {
                    return Ok(false);
                }
            }
            TRACK_ENTRY if depth < 4 => {
                tracks.push(TrackCodec {
                    kind: String::new(),
                    codec: String::new(),
                    size: None,
                });
                if !ebml_walk(r, elem_end, depth + 1, tracks)? {
                    return Ok(false);
                }
            }
            _ if size == EBML_UNKNOWN => {
                return Err(format!("element {id:X} at byte {pos} has an unknown size"));
            }
            TRACK_TYPE => {
                let v = ebml_uint(r, size)?;
                if let Some(t) = tracks.last_mut() {
                    t.kind = match v {
                        1 => "video".into(),
                        2 => "audio".into(),
                        17 => "subtitle".into(),
                        other => format!("type {other}"),
                    };
                }
            }
            CODEC_ID if size <= 64 => {
                let mut b = vec![0u8; size as usize];
                r.r.read_exact(&mut b).map_err(io)?;
                if let Some(t) = tracks.last_mut() {
                    let id = String::from_utf8_lossy(&b);
                    t.codec = id.trim_end_matches('\0').to_string();
                }
            }
            PIXEL_WIDTH | PIXEL_HEIGHT => {
                let v = ebml_uint(r, size)?.min(u32::MAX as u64) as u32;
                if let Some(t) = tracks.last_mut() {
                    let (w, h) = t.size.unwrap_or((0, 0));
                    t.size = Some(if id == PIXEL_WIDTH { (v, h) } else { (w, v) });
                }
            }
            _ => {}
        }
        r.seek(elem_end).map_err(io)?;
    }
}

/// The tracks of a file in `container`.
pub fn tracks(path: &Path, container: Container) -> Result<Vec<TrackCodec>, String> {
    match container {
        Container::Mp4 => mp4_tracks(path).map(|p| p.tracks),
        Container::Matroska => matroska_tracks(path),
        Container::Avi => avi_tracks(path),
    }
}

/// A short list of tracks for messages: `soun mp4a, vide hvc1`.
pub fn describe_tracks(tracks: &[TrackCodec]) -> String {
    if tracks.is_empty() {
        return "no tracks".into();
    }
    tracks
        .iter()
        .map(|t| format!("{} {}", t.kind, t.codec))
        .collect::<Vec<_>>()
        .join(", ")
}
