//! Output files that never destroy what they should not: every file emocam writes (weights,
//! ensembles, recordings, reports, snapshots, evaluation tables) goes through this module.
//!
//! The rules, checked by [`check_output`] before anything is written:
//! - an output is a regular file or a path that does not exist yet; a directory, device node,
//!   FIFO or socket is refused, whether named directly or through a symbolic link (writing to
//!   `/dev/full` would otherwise replace the device node by a regular file);
//! - an output is never one of the command's inputs, however it is spelt (`a`, `./a`, a
//!   symbolic link, a hard link: paths are compared canonically and files by device and
//!   inode), nor anywhere inside a folder the command reads (a recording written into the
//!   folder of frames being played would be read back as a frame);
//! - an existing file is replaced only when the caller asks ([`OutputPolicy::overwrite`],
//!   e.g. an `--overwrite` flag); otherwise the command stops before doing any work;
//! - new files are owner-only (mode 0600): recordings, reports and snapshots describe people's
//!   faces and emotions.
//!
//! Two ways to write, both applying those rules:
//! - [`create_private`] opens a file to stream into (a recording that grows for an hour);
//! - [`write_atomically`] / [`write_bytes_atomically`] write a whole file (weights, a report)
//!   to a temporary file beside the target, flush it to disk and rename it over the target, so
//!   that a run cut off midway leaves the old file or none, never half of one.
//!
//! ```no_run
//! use emocam::outfile::{OutputPolicy, write_bytes_atomically};
//! # fn main() -> emocam::Result<()> {
//! let policy = OutputPolicy::new().with_input("faces.csv").with_overwrite(false);
//! write_bytes_atomically("per-image.csv".as_ref(), b"image,true,predicted\n", &policy)?;
//! # Ok(()) }
//! ```

use std::fs::{File, FileType, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of every file created here unless a policy asks otherwise: read and write for the
/// owner only.
pub const PRIVATE_MODE: u32 = 0o600;

/// What a command allows its outputs to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPolicy {
    /// Replace an existing regular file (never anything else). Off by default: a command
    /// refuses to start rather than destroy a file the user did not mean to lose.
    pub overwrite: bool,
    /// The files and folders the command reads. An output may not be one of them, nor lie
    /// inside a folder among them. Paths that do not exist are ignored.
    pub inputs: Vec<PathBuf>,
    /// Permission bits of files created here (before the umask): [`PRIVATE_MODE`] unless
    /// asked. A file replaced by [`create_private`] is set to this mode too.
    pub mode: u32,
}

impl Default for OutputPolicy {
    fn default() -> Self {
        Self {
            overwrite: false,
            inputs: Vec::new(),
            mode: PRIVATE_MODE,
        }
    }
}

impl OutputPolicy {
    /// No overwriting, no inputs, owner-only files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow (or not) replacing an existing regular file.
    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Add a file or folder the command reads.
    pub fn with_input(mut self, input: impl Into<PathBuf>) -> Self {
        self.inputs.push(input.into());
        self
    }

    /// Add several files or folders the command reads.
    pub fn with_inputs<P: Into<PathBuf>>(mut self, inputs: impl IntoIterator<Item = P>) -> Self {
        self.inputs.extend(inputs.into_iter().map(Into::into));
        self
    }

    /// Create files with these permission bits instead of [`PRIVATE_MODE`].
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
}

/// What kind of file `t` is, as a phrase for messages ("a FIFO", "a character device").
pub fn describe_file_type(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Check that `path` may be written under `policy` (see the [module rules](self)); nothing is
/// created. A command calls this for each of its outputs before it starts its work, so that a
/// refused output costs nothing; [`create_private`] and [`write_atomically`] check again when
/// they write.
pub fn check_output(path: &Path, policy: &OutputPolicy) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(refuse(
            path,
            "the output path is empty; expected a file name",
        ));
    }
    let existing = match std::fs::symlink_metadata(path) {
        Ok(link) => {
            let meta = std::fs::metadata(path).map_err(|e| {
                refuse(
                    path,
                    if link.file_type().is_symlink() {
                        format!("is a symbolic link to a file that cannot be opened ({e}); expected a regular file or a new path")
                    } else {
                        format!("cannot be examined: {e}")
                    },
                )
            })?;
            if !meta.is_file() {
                let via = if link.file_type().is_symlink() {
                    " (through a symbolic link)"
                } else {
                    ""
                };
                return Err(refuse(
                    path,
                    format!(
                        "is {}{via}; an output must be a regular file or a path that does not exist yet",
                        describe_file_type(meta.file_type())
                    ),
                ));
            }
            Some(meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(refuse(path, format!("cannot be examined: {e}"))),
    };
    let canonical = canonical_output(path)?;
    for input in &policy.inputs {
        let Ok(in_meta) = std::fs::metadata(input) else {
            continue;
        };
        let in_canonical = std::fs::canonicalize(input).ok();
        let same_inode = existing
            .as_ref()
            .is_some_and(|m| m.dev() == in_meta.dev() && m.ino() == in_meta.ino());
        let same_path = in_canonical.as_ref() == Some(&canonical);
        if same_inode || same_path {
            return Err(refuse(
                path,
                format!(
                    "is the input {} (the same file); writing it would destroy what is being read",
                    input.display()
                ),
            ));
        }
        if in_meta.is_dir() && in_canonical.is_some_and(|dir| canonical.starts_with(dir)) {
            return Err(refuse(
                path,
                format!(
                    "is inside the folder {} that is being read; write it elsewhere",
                    input.display()
                ),
            ));
        }
    }
    if existing.is_some() && !policy.overwrite {
        return Err(refuse(
            path,
            "already exists; it is replaced only when asked to overwrite it (--overwrite), so choose another name or remove it",
        ));
    }
    Ok(())
}

/// The folder an output is written into: its parent, or `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The canonical form of an output path that may not exist yet: its folder canonicalised
/// (which must exist), then its file name; an existing path is canonicalised whole.
fn canonical_output(path: &Path) -> Result<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(path) {
        return Ok(c);
    }
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| refuse(path, "names a folder, expected a file name"))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        refuse(
            path,
            format!("its folder {} cannot be used: {e}", dir.display()),
        )
    })?;
    if !dir.is_dir() {
        return Err(refuse(path, format!("{} is not a folder", dir.display())));
    }
    Ok(dir.join(name))
}

/// Open `path` to stream an output into, after [`check_output`]: a new file is created with
/// `O_CREAT | O_EXCL` (so that nothing that appeared since the check is replaced) and mode
/// [`OutputPolicy::mode`]; with [`OutputPolicy::overwrite`] an existing regular file is
/// truncated and set to that mode. Anything that is not a regular file when it is opened is
/// refused before it is written to or truncated.
///
/// For outputs that grow while the command runs (CSV recordings); whole files should use
/// [`write_atomically`] instead.
pub fn create_private(path: &Path, policy: &OutputPolicy) -> Result<File> {
    check_output(path, policy)?;
    let mut opts = OpenOptions::new();
    opts.write(true).mode(policy.mode);
    if policy.overwrite {
        // No O_TRUNC: the file is truncated only once it is known to be a regular file.
        // O_NONBLOCK: a FIFO swapped in since the check fails to open instead of waiting for
        // a reader; it changes nothing for a regular file.
        opts.create(true).custom_flags(libc::O_NONBLOCK);
    } else {
        opts.create_new(true);
    }
    let file = opts.open(path).map_err(|e| refuse(path, open_reason(&e)))?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(path, format!("cannot be examined: {e}")))?;
    if !meta.is_file() {
        return Err(refuse(
            path,
            format!(
                "is {}; an output must be a regular file",
                describe_file_type(meta.file_type())
            ),
        ));
    }
    if policy.overwrite {
        file.set_len(0)
            .and_then(|_| file.set_permissions(std::fs::Permissions::from_mode(policy.mode)))
            .map_err(|e| refuse(path, format!("cannot be replaced: {e}")))?;
    }
    Ok(file)
}

fn open_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            "appeared while the command was starting; it is not replaced without overwrite".into()
        }
        _ => format!("cannot be created: {e}"),
    }
}

/// Write the whole file `path` with `bytes`, as [`write_atomically`] does.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8], policy: &OutputPolicy) -> Result<()> {
    write_atomically(path, |w| w.write_all(bytes), policy)
}

/// Write the whole file `path` by calling `contents` with a buffered writer, after
/// [`check_output`]: the writer goes to a temporary file in the same folder (mode
/// [`OutputPolicy::mode`]), which is flushed to disk and then renamed over `path`, so that a
/// crash or an error leaves the old file (or none), never a part of a file. The rename happens
/// only if `path` is still absent, or a regular file and [`OutputPolicy::overwrite`] is set; a
/// device or anything else is never renamed over. On any error (one `contents` returns
/// included) the temporary file is removed.
///
/// A `path` that is a symbolic link to a regular file has that file replaced, the link kept.
pub fn write_atomically(
    path: &Path,
    contents: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    policy: &OutputPolicy,
) -> Result<()> {
    check_output(path, policy)?;
    // Replace what a link points to, not the link, as writing through it would.
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = parent_dir(&target);
    let name = target
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(policy.mode))
        .tempfile_in(dir)
        .map_err(|e| {
            refuse(
                path,
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            )
        })?;
    let written = {
        let mut w = BufWriter::new(tmp.as_file_mut());
        contents(&mut w).and_then(|_| w.flush())
    };
    written
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| refuse(path, format!("cannot be written: {e}")))?;
    // Checked again just before the rename: something may have appeared since the first check.
    match std::fs::symlink_metadata(&target) {
        Ok(m) if !m.is_file() => {
            return Err(refuse(
                path,
                format!(
                    "became {} while it was being written; it is left as it is",
                    describe_file_type(m.file_type())
                ),
            ));
        }
        Ok(_) if !policy.overwrite => {
            return Err(refuse(
                path,
                "appeared while it was being written; it is not replaced without overwrite",
            ));
        }
        _ => {}
    }
    let persisted = if policy.overwrite {
        tmp.persist(&target).map(|_| ())
    } else {
        // Fails instead of replacing a file created since the check above.
        tmp.persist_noclobber(&target).map(|_| ())
    };
    // On failure the temporary file is dropped with the error, which removes it.
    persisted.map_err(|e| refuse(path, format!("cannot be put in place: {}", e.error)))?;
    // Makes the rename itself survive a crash; some file systems cannot sync a folder, and
    // the data is already on disk, so a failure here is not worth failing the command.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn new_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let streamed = dir.path().join("rec.csv");
        let mut f = create_private(&streamed, &OutputPolicy::new()).unwrap();
        f.write_all(b"a,b\n").unwrap();
        assert_eq!(mode_of(&streamed), 0o600);
        let whole = dir.path().join("report.html");
        write_bytes_atomically(&whole, b"<html>", &OutputPolicy::new()).unwrap();
        assert_eq!(mode_of(&whole), 0o600);
        assert_eq!(std::fs::read(&whole).unwrap(), b"<html>");
        let asked = dir.path().join("model.safetensors");
        write_bytes_atomically(&asked, b"x", &OutputPolicy::new().with_mode(0o640)).unwrap();
        assert_eq!(mode_of(&asked), 0o640);
    }

    #[test]
    fn existing_files_are_kept_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.csv");
        std::fs::write(&p, b"precious").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let keep = OutputPolicy::new();
        for e in [
            check_output(&p, &keep),
            create_private(&p, &keep).map(|_| ()),
            write_bytes_atomically(&p, b"new", &keep),
        ] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains("old.csv") && e.contains("already exists"), "{e}");
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");

        let replace = OutputPolicy::new().with_overwrite(true);
        write_bytes_atomically(&p, b"whole", &replace).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert_eq!(mode_of(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = create_private(&p, &replace).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn devices_fifos_folders_and_empty_paths_are_refused_even_with_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let link = dir.path().join("null.csv");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let dangling = dir.path().join("dangling.csv");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let any = OutputPolicy::new().with_overwrite(true);
        for (p, needle) in [
            (Path::new("/dev/null"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (
                link.as_path(),
                "a character device (through a symbolic link)",
            ),
            (
                dangling.as_path(),
                "symbolic link to a file that cannot be opened",
            ),
            (dir.path(), "a directory"),
            (Path::new(""), "empty"),
        ] {
            for e in [
                check_output(p, &any),
                create_private(p, &any).map(|_| ()),
                write_bytes_atomically(p, b"x", &any),
            ] {
                let e = e.unwrap_err().to_string();
                assert!(e.contains(needle), "{}: {e}", p.display());
                assert!(e.starts_with(&format!("{}:", p.display())), "{e}");
            }
        }
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Nothing but what the test made is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn an_input_is_never_an_output_however_it_is_spelt() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("faces.csv");
        std::fs::write(&data, b"emotion,pixels\n").unwrap();
        let hard = dir.path().join("hard.csv");
        std::fs::hard_link(&data, &hard).unwrap();
        let soft = dir.path().join("soft.csv");
        std::os::unix::fs::symlink(&data, &soft).unwrap();
        let dotted = dir.path().join(".").join("faces.csv");
        let policy = OutputPolicy::new().with_overwrite(true).with_input(&data);
        for p in [&data, &hard, &soft, &dotted] {
            let e = write_bytes_atomically(p, b"x", &policy)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is the input") && e.contains("faces.csv"), "{e}");
        }
        assert_eq!(std::fs::read(&data).unwrap(), b"emotion,pixels\n");
        // An input given through a link or `./` is the same file too.
        let policy = OutputPolicy::new().with_overwrite(true).with_input(&soft);
        assert!(check_output(&data, &policy).is_err());
    }

    #[test]
    fn outputs_inside_a_folder_being_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames");
        std::fs::create_dir(&frames).unwrap();
        let policy = OutputPolicy::new().with_input(&frames);
        let e = check_output(&frames.join("rec.csv"), &policy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the folder"), "{e}");
        assert!(check_output(&dir.path().join("rec.csv"), &policy).is_ok());
        // Inputs that do not exist constrain nothing.
        let policy = OutputPolicy::new().with_input(dir.path().join("absent"));
        assert!(check_output(&dir.path().join("rec.csv"), &policy).is_ok());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weights.safetensors");
        std::fs::write(&p, b"old").unwrap();
        let policy = OutputPolicy::new().with_overwrite(true);
        let e = write_atomically(
            &p,
            |w| {
                w.write_all(b"half")?;
                Err(std::io::Error::other("disk on fire"))
            },
            &policy,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("weights.safetensors") && e.contains("disk on fire"),
            "{e}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn writing_through_a_link_replaces_the_file_it_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.csv");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let policy = OutputPolicy::new().with_overwrite(true);
        write_bytes_atomically(&link, b"new", &policy).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/folder/out.csv");
        let e = check_output(&p, &OutputPolicy::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("out.csv") && e.contains("folder"), "{e}");
    }
}
