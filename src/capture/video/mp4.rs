//! H.264 in MP4/QuickTime, built in: the `mp4` crate parses the movie header, openh264
//! ([`super::h264`]) decodes, and pictures come out in presentation order with their times from
//! the container.
//!
//! The sample table is flattened once at open (file offset, size, presentation time and key
//! flag of every sample, 24 bytes each: about 2.6 MB for an hour at 30 frames/s) instead of
//! asking `Mp4Reader::read_sample` per frame: that walks the time-to-sample and
//! composition-offset tables from their start on every call, which is quadratic in the length
//! of a B-frame or variable-frame-rate video (one table entry per frame), and it panics on some
//! inconsistent tables. Frame data is then read one sample at a time from the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ::mp4::{Mp4Reader, TrackType};
use image::RgbImage;

use super::h264::{H264Decoder, Picture};
use super::{MAX_VIDEO_SIDE, Timed};
use crate::error::{Error, Result};

/// Most pictures held back to put them in presentation order. H.264 allows 16 reference
/// frames; more waiting means the decoder lost one, which is then skipped.
const MAX_REORDER: usize = 32;

/// One sample (a coded picture) of the video track.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offset: u64,
    size: u32,
    /// Presentation time in track timescale units (decode time + composition offset).
    pts: i64,
    sync: bool,
}

/// A decoding position in an MP4/QuickTime H.264 track.
pub(super) struct Mp4H264 {
    path: PathBuf,
    file: File,
    file_len: u64,
    samples: Vec<Sample>,
    /// `suffix_min[i]`: the earliest presentation time among samples `i..` (the last entry,
    /// past the end, is `i64::MAX`). No sample not yet decoded can be shown before it.
    suffix_min: Vec<i64>,
    timescale: f64,
    /// Presentation time of the first picture shown, the zero of every frame time.
    origin: i64,
    /// Presentation end of the last picture, relative to `origin`, in milliseconds.
    length_ms: f64,
    width: u32,
    height: u32,
    /// Bytes of the length before each NAL unit in a sample (1, 2 or 4).
    nal_len_size: usize,
    /// SPS and PPS from `avcC`, start-code prefixed, sent before the first sample decoded.
    params: Vec<u8>,
    decoder: H264Decoder,
    /// The parameter sets have been sent to the current decoder.
    params_sent: bool,
    /// Next sample (in decode order) to send to the decoder.
    next: usize,
    /// Pictures presented before this time are dropped (after a seek, pictures before the key
    /// frame cannot be decoded properly).
    start_pts: i64,
    /// Samples sent to the decoder whose pictures have not come out yet.
    in_decoder: Vec<usize>,
    /// Decoded pictures waiting for their turn, by (presentation time, sample).
    pending: BTreeMap<(i64, usize), RgbImage>,
    /// No more samples are sent: the end, or a read or decode error.
    draining: bool,
    /// The decoder has given out everything.
    drained: bool,
    /// An error to report once the pictures decoded before it have been delivered.
    failed: Option<Error>,
    /// Buffers reused for every sample.
    sample_buf: Vec<u8>,
    au_buf: Vec<u8>,
}

impl Mp4H264 {
    /// Open the H.264 track of an MP4/QuickTime file whose movie header ends at byte
    /// `header_end` (see [`super::probe::Mp4Probe`]).
    pub fn open(path: &Path, header_end: u64) -> Result<Self> {
        let fail = |reason: String| Error::video(path.display(), reason);
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        // Up to the end of the movie header only: the mp4 crate refuses a file whose frame
        // data box is cut short, and a truncated file still has frames to give.
        let reader = Mp4Reader::read_header(BufReader::new(&file), header_end.min(file_len))
            .map_err(|e| fail(format!("not a readable MP4/QuickTime file: {e}")))?;
        let mut video = reader
            .tracks()
            .values()
            .filter(|t| matches!(t.track_type(), Ok(TrackType::Video)))
            .collect::<Vec<_>>();
        video.sort_by_key(|t| t.track_id());
        let track = *video
            .first()
            .ok_or_else(|| fail("no video stream (it has no video track)".into()))?;
        let stbl = &track.trak.mdia.minf.stbl;
        let avc1 =
            stbl.stsd.avc1.as_ref().ok_or_else(|| {
                fail("the video track is not H.264 in an avc1 sample entry".into())
            })?;
        let (width, height) = (avc1.width as u32, avc1.height as u32);
        check_size(width, height).map_err(fail)?;
        let avcc = &avc1.avcc;
        let nal_len_size = (avcc.length_size_minus_one & 3) as usize + 1;
        if nal_len_size == 3 {
            return Err(fail(
                "avcC declares 3-byte NAL lengths, which H.264 forbids".into(),
            ));
        }
        let mut params = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            params.extend_from_slice(&[0, 0, 0, 1]);
            params.extend_from_slice(&nal.bytes);
        }
        if avcc.sequence_parameter_sets.is_empty() || avcc.picture_parameter_sets.is_empty() {
            return Err(fail("avcC has no SPS or no PPS".into()));
        }
        let timescale = track.trak.mdia.mdhd.timescale;
        if timescale == 0 {
            return Err(fail("the video track's timescale is 0".into()));
        }
        let (samples, end_pts) = flatten(track, file_len).map_err(fail)?;
        if samples.is_empty() {
            return Err(fail("the video track has no frames".into()));
        }
        let origin = samples.iter().map(|s| s.pts).min().unwrap_or(0);
        let mut suffix_min = vec![i64::MAX; samples.len() + 1];
        for i in (0..samples.len()).rev() {
            suffix_min[i] = suffix_min[i + 1].min(samples[i].pts);
        }
        let timescale = timescale as f64;
        let length_ms = (end_pts - origin) as f64 * 1e3 / timescale;
        drop(reader);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            samples,
            suffix_min,
            timescale,
            origin,
            length_ms,
            width,
            height,
            nal_len_size,
            params,
            decoder: H264Decoder::new().map_err(fail)?,
            params_sent: false,
            next: 0,
            start_pts: i64::MIN,
            in_decoder: Vec::new(),
            pending: BTreeMap::new(),
            draining: false,
            drained: false,
            failed: None,
            sample_buf: Vec::new(),
            au_buf: Vec::new(),
        })
    }

    /// Picture size from the sample entry.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Frames in the track.
    pub fn frame_count(&self) -> u64 {
        self.samples.len() as u64
    }

    /// Presentation length in milliseconds (first picture to the end of the last).
    pub fn length_ms(&self) -> f64 {
        self.length_ms
    }

    fn ms(&self, pts: i64) -> f64 {
        (pts - self.origin) as f64 * 1e3 / self.timescale
    }

    fn fail(&self, reason: String) -> Error {
        Error::video(self.path.display(), reason)
    }

    /// The next picture in presentation order with its time, `None` at the end.
    pub fn next_picture(&mut self) -> Result<Option<Timed>> {
        loop {
            if let Some((key, rgb)) = self.ready() {
                return Ok(Some(Timed {
                    rgb,
                    ms: self.ms(key.0),
                }));
            }
            if self.drained {
                return match self.failed.take() {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            if !self.draining && self.next < self.samples.len() {
                let i = self.next;
                self.next += 1;
                match self.feed(i) {
                    Ok(Some(p)) => self.accept(p)?,
                    Ok(None) => {}
                    Err(e) => {
                        self.failed = Some(e);
                        self.draining = true;
                    }
                }
            } else {
                self.draining = true;
                match self.decoder.drain() {
                    Ok(Some(p)) => self.accept(p)?,
                    Ok(None) => self.finish_drain(),
                    Err(e) => {
                        if self.failed.is_none() {
                            self.failed =
                                Some(self.fail(format!(
                                    "decoding stopped at the end of the stream: {e}"
                                )));
                        }
                        self.finish_drain();
                    }
                }
            }
        }
    }

    /// Everything that will come out has: pictures still missing were lost by the decoder.
    fn finish_drain(&mut self) {
        self.drained = true;
        self.in_decoder.clear();
    }

    /// The earliest waiting picture if nothing still to come can be shown before it.
    fn ready(&mut self) -> Option<((i64, usize), RgbImage)> {
        let (&(pts, _), _) = self.pending.first_key_value()?;
        let in_decoder = self
            .in_decoder
            .iter()
            .map(|&i| self.samples[i].pts)
            .min()
            .unwrap_or(i64::MAX);
        let not_sent = if self.draining {
            i64::MAX
        } else {
            self.suffix_min[self.next]
        };
        if pts > in_decoder.min(not_sent) {
            if self.pending.len() <= MAX_REORDER {
                return None;
            }
            // The decoder is not going to return the earlier pictures.
            let samples = &self.samples;
            self.in_decoder.retain(|&i| samples[i].pts > pts);
        }
        self.pending.pop_first()
    }

    fn accept(&mut self, p: Picture) -> Result<()> {
        let i = usize::try_from(p.tag)
            .ok()
            .filter(|&i| i < self.samples.len())
            .ok_or_else(|| {
                self.fail(format!(
                    "the H.264 decoder returned a picture for unknown frame {}",
                    p.tag
                ))
            })?;
        if p.rgb.dimensions() != (self.width, self.height) {
            return Err(self.fail(format!(
                "frame {i} decodes to {}x{}, but the container says {}x{}",
                p.rgb.width(),
                p.rgb.height(),
                self.width,
                self.height
            )));
        }
        self.in_decoder.retain(|&j| j != i);
        let pts = self.samples[i].pts;
        if pts >= self.start_pts {
            self.pending.insert((pts, i), p.rgb);
        }
        Ok(())
    }

    /// Read sample `i`, turn it into an Annex B access unit and decode it.
    fn feed(&mut self, i: usize) -> Result<Option<Picture>> {
        let s = self.samples[i];
        let n = self.samples.len();
        let end = s.offset.saturating_add(s.size as u64);
        if end > self.file_len {
            return Err(self.fail(format!(
                "decoding stopped at frame {i} of {n} (in file order): its data (bytes {}..{end}) \
                 lies past the end of the file ({} bytes); the file is truncated",
                s.offset, self.file_len
            )));
        }
        self.sample_buf.resize(s.size as usize, 0);
        let read = self
            .file
            .seek(SeekFrom::Start(s.offset))
            .and_then(|_| self.file.read_exact(&mut self.sample_buf));
        if let Err(e) = read {
            return Err(self.fail(format!(
                "decoding stopped at frame {i} of {n} (in file order): cannot read its data: {e}"
            )));
        }
        self.au_buf.clear();
        if !self.params_sent {
            self.au_buf.extend_from_slice(&self.params);
            self.params_sent = true;
        }
        to_annex_b(&self.sample_buf, self.nal_len_size, &mut self.au_buf).map_err(|e| {
            self.fail(format!(
                "decoding stopped at frame {i} of {n} (in file order): {e}"
            ))
        })?;
        self.in_decoder.push(i);
        let picture = self.decoder.decode(&self.au_buf, i as u64).map_err(|e| {
            self.fail(format!(
                "decoding stopped at frame {i} of {n} (in file order): {e}"
            ))
        })?;
        Ok(picture)
    }

    /// Go to the key frame at or before `ms` (relative to the first picture); the next picture
    /// is that key frame's.
    pub fn seek(&mut self, ms: f64) -> Result<()> {
        let target = self.origin as f64 + ms * self.timescale / 1e3;
        // The key frame presented last at or before the target; the first one if the target
        // is before them all.
        let key = self
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sync && s.pts as f64 <= target + 1e-6)
            .max_by_key(|(_, s)| s.pts)
            .map(|(i, _)| i)
            .or_else(|| self.samples.iter().position(|s| s.sync))
            .unwrap_or(0);
        let decoder = H264Decoder::new().map_err(|e| self.fail(e))?;
        self.decoder = decoder;
        self.params_sent = false;
        self.next = key;
        self.start_pts = self.samples[key].pts;
        self.in_decoder.clear();
        self.pending.clear();
        self.draining = false;
        self.drained = false;
        self.failed = None;
        Ok(())
    }

    /// Times of the key frames, where a seek lands, in milliseconds.
    pub fn key_frames_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.sync)
            .map(|s| self.ms(s.pts))
            .collect()
    }
}

/// Refuse sizes that are empty or too large to hold, before anything is allocated for them.
pub(super) fn check_size(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 || width > MAX_VIDEO_SIDE || height > MAX_VIDEO_SIDE {
        return Err(format!(
            "picture size {width}x{height} is outside 1x1..={MAX_VIDEO_SIDE}x{MAX_VIDEO_SIDE}"
        ));
    }
    Ok(())
}

/// Sample table flattening: every sample's offset, size, presentation time and key flag, and
/// the presentation end of the track (latest pts + that sample's duration).
fn flatten(track: &::mp4::Mp4Track, file_len: u64) -> Result<(Vec<Sample>, i64), String> {
    let stbl = &track.trak.mdia.minf.stbl;
    let sizes = &stbl.stsz;
    let count = sizes.sample_count as usize;
    if sizes.sample_size == 0 && sizes.sample_sizes.len() != count {
        return Err(format!(
            "the sample size table lists {} sizes for {count} samples",
            sizes.sample_sizes.len()
        ));
    }
    // Every sample takes at least one byte of the file: a larger count is a lie, and would
    // make us allocate for it.
    if count as u64 > file_len {
        return Err(format!(
            "the track claims {count} samples in a file of {file_len} bytes"
        ));
    }
    let size_of = |i: usize| {
        if sizes.sample_size > 0 {
            sizes.sample_size
        } else {
            sizes.sample_sizes[i]
        }
    };
    let chunk_offsets: Vec<u64> = if let Some(co64) = &stbl.co64 {
        co64.entries.clone()
    } else if let Some(stco) = &stbl.stco {
        stco.entries.iter().map(|&o| o as u64).collect()
    } else {
        return Err("the track has no chunk offset table (stco/co64)".into());
    };

    let mut samples = Vec::with_capacity(count);
    // Offsets: chunk by chunk, as the sample-to-chunk table says how many samples each holds.
    let stsc = &stbl.stsc.entries;
    for (e, entry) in stsc.iter().enumerate() {
        let first = entry.first_chunk as usize;
        let last = stsc
            .get(e + 1)
            .map(|n| n.first_chunk as usize)
            .unwrap_or(chunk_offsets.len() + 1);
        if first == 0 || last < first {
            return Err(format!(
                "sample-to-chunk entry {e} starts at chunk {first}, after the next one"
            ));
        }
        for chunk in first..last {
            let Some(&base) = chunk_offsets.get(chunk - 1) else {
                return Err(format!(
                    "sample-to-chunk table names chunk {chunk}, but there are {}",
                    chunk_offsets.len()
                ));
            };
            let mut offset = base;
            for _ in 0..entry.samples_per_chunk {
                if samples.len() == count {
                    break;
                }
                let size = size_of(samples.len());
                samples.push(Sample {
                    offset,
                    size,
                    pts: 0,
                    sync: false,
                });
                offset = offset.saturating_add(size as u64);
            }
        }
    }
    if samples.len() != count {
        return Err(format!(
            "the chunk tables place {} of {count} samples",
            samples.len()
        ));
    }

    // Decode times from the time-to-sample table, plus composition offsets.
    let mut dts: i64 = 0;
    let mut i = 0;
    let mut end_pts = i64::MIN;
    for entry in &stbl.stts.entries {
        for _ in 0..entry.sample_count {
            if i == count {
                break;
            }
            samples[i].pts = dts;
            end_pts = end_pts.max(dts + entry.sample_delta as i64);
            dts += entry.sample_delta as i64;
            i += 1;
        }
    }
    if i != count {
        return Err(format!(
            "the time-to-sample table times {i} of {count} samples"
        ));
    }
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        'ctts: for entry in &ctts.entries {
            for _ in 0..entry.sample_count {
                if i == count {
                    break 'ctts;
                }
                samples[i].pts += entry.sample_offset as i64;
                i += 1;
            }
        }
        // The end is the latest presentation time plus that sample's duration.
        end_pts = i64::MIN;
        let mut i = 0;
        for entry in &stbl.stts.entries {
            for _ in 0..entry.sample_count {
                if i == count {
                    break;
                }
                end_pts = end_pts.max(samples[i].pts + entry.sample_delta as i64);
                i += 1;
            }
        }
    }
    match &stbl.stss {
        Some(stss) => {
            for &n in &stss.entries {
                if let Some(s) = (n as usize).checked_sub(1).and_then(|i| samples.get_mut(i)) {
                    s.sync = true;
                }
            }
        }
        // No sync sample table: every sample is a key frame.
        None => samples.iter_mut().for_each(|s| s.sync = true),
    }
    Ok((samples, end_pts))
}

/// Append `sample` (NAL units each preceded by its length in `len_size` bytes) to `out` as
/// start-code prefixed NAL units.
fn to_annex_b(sample: &[u8], len_size: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < len_size {
            return Err(format!(
                "{} stray bytes after the last NAL unit",
                rest.len()
            ));
        }
        let len = rest[..len_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[len_size..];
        if len > rest.len() {
            return Err(format!(
                "a NAL unit of {len} bytes runs past the end of its sample ({} bytes left)",
                rest.len()
            ));
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::to_annex_b;

    #[test]
    fn length_prefixed_nal_units_become_start_code_prefixed() {
        let mut out = Vec::new();
        to_annex_b(&[0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x41], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x41]);
        let mut out = Vec::new();
        to_annex_b(&[0, 3, 1, 2, 3], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 1, 2, 3]);
    }

    #[test]
    fn a_nal_length_past_the_sample_is_an_error() {
        let err = to_annex_b(&[0, 0, 0, 9, 0x65], 4, &mut Vec::new()).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        let err = to_annex_b(&[0, 0, 0, 1, 0x65, 0, 0], 4, &mut Vec::new()).unwrap_err();
        assert!(err.contains("stray"), "{err}");
    }
}
