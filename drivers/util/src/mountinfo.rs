//! The mount table (`/proc/self/mountinfo`): the truth about what is mounted.
//!
//! Refcounts are adopted from it after a restart, sweeps read it to find a crash's leftover
//! mounts, and tests check with it that nothing is left. Parsing is a pure function
//! ([`parse`]); only [`read`] touches the system. Nothing here mounts or unmounts.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use strata_driver_api::{Error, Result};

/// The mount table of this process's mount namespace.
pub const PATH: &str = "/proc/self/mountinfo";

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (the mount point), escapes undone.
    pub target: PathBuf,
    /// The filesystem type (`ext4`, `overlay`, `fuse.strata-dir`, ...).
    pub fs_type: String,
    /// The source (`/dev/loop3`, `overlay`, ...), escapes undone.
    pub source: String,
    /// The per-mount options contain `ro`.
    pub read_only: bool,
}

impl MountEntry {
    /// The loop device number when the source is `/dev/loopN`.
    pub fn loop_number(&self) -> Option<u32> {
        self.source.strip_prefix("/dev/loop")?.parse().ok()
    }
}

/// Undoes the kernel's octal escapes in a mountinfo field (`\040` for a space, `\011` a tab,
/// `\012` a newline, `\134` a backslash). A backslash not followed by three octal digits is
/// kept as it is.
pub fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            // Three octal digits fit a byte only up to \377; the kernel writes no more.
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

/// Parses the text of a mount table; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Optional fields end at a lone "-"; the type and the source follow it.
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    Some(MountEntry {
        target: PathBuf::from(unescape(fields[4])),
        read_only: fields[5].split(',').any(|o| o == "ro"),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]).to_string_lossy().into_owned(),
    })
}

/// The current mount table of this process's namespace.
pub fn read() -> Result<Vec<MountEntry>> {
    let path = Path::new(PATH);
    let text = std::fs::read_to_string(path).map_err(|e| Error::os("read", path, e))?;
    Ok(parse(&text))
}

/// The topmost mount at `target`, if any.
pub fn find(table: &[MountEntry], target: &Path) -> Option<MountEntry> {
    table.iter().rev().find(|m| m.target == target).cloned()
}

/// The mounts at or below `dir`, in mount-table order (a mount before the ones on top of it).
pub fn under<'a>(table: &'a [MountEntry], dir: &Path) -> Vec<&'a MountEntry> {
    table.iter().filter(|m| m.target.starts_with(dir)).collect()
}

/// The mount points at or below `dir`, deepest first, each once: the order to detach them in
/// so that nothing below is left covered.
pub fn points_under(table: &[MountEntry], dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = under(table, dir)
        .into_iter()
        .map(|m| m.target.clone())
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Lazily detaches (`MNT_DETACH`) every mount at or below `dir`, deepest first, so that
/// removing `dir` never deletes through a mount; a point that is gone already is fine.
pub fn detach_under(dir: &Path) -> Result<()> {
    use rustix::io::Errno;
    for point in points_under(&read()?, dir) {
        match rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(Errno::INVAL | Errno::NOENT) => {}
            Err(e) => return Err(Error::os("umount2", &point, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
95 22 7:3 / /var/lib/strata/block/a/mnt ro,relatime shared:50 - ext4 /dev/loop3 ro
96 22 7:4 / /tmp/with\\040space/mnt rw,relatime - xfs /dev/loop12 rw,nouuid
97 96 0:50 / /tmp/with\\040space/mnt/sub rw - fuse.strata-dir strata-dir:a\\011b rw
98 22 0:51 / /tmp/with\\040space/mnt rw - tmpfs tmpfs rw
bad line
99 22 0:52 / /no/separator rw shared:1 tmpfs tmpfs rw
";

    #[test]
    fn parses_targets_sources_and_ro() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[1].target, Path::new("/var/lib/strata/block/a/mnt"));
        assert!(t[1].read_only);
        assert_eq!(t[1].loop_number(), Some(3));
        assert_eq!(t[2].target, Path::new("/tmp/with space/mnt"));
        assert_eq!(t[2].fs_type, "xfs");
        assert!(!t[2].read_only);
        assert_eq!(t[2].loop_number(), Some(12));
        assert_eq!(t[0].loop_number(), None);
        assert_eq!(t[3].fs_type, "fuse.strata-dir");
        assert_eq!(t[3].source, "strata-dir:a\tb");
        assert_eq!(
            find(&t, Path::new("/tmp/with space/mnt")).map(|m| m.fs_type),
            Some("tmpfs".to_string()),
            "the topmost mount at a point"
        );
        assert!(find(&t, Path::new("/nowhere")).is_none());
    }

    #[test]
    fn mounts_under_a_directory() {
        let t = parse(SAMPLE);
        let dir = Path::new("/tmp/with space");
        assert_eq!(under(&t, dir).len(), 3);
        assert_eq!(
            points_under(&t, dir),
            [
                PathBuf::from("/tmp/with space/mnt/sub"),
                PathBuf::from("/tmp/with space/mnt")
            ]
        );
        assert!(points_under(&t, Path::new("/tmp/with")).is_empty());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c"), OsString::from("a b\\c"));
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/x\\134y\\011"), "/x\\y\t");
        assert_eq!(unescape("/nl\\012"), "/nl\n");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("trail\\04"), OsString::from("trail\\04"));
        assert_eq!(unescape("/short\\04"), "/short\\04");
        assert_eq!(unescape("\\"), "\\");
        assert_eq!(unescape("not\\999octal"), "not\\999octal");
        assert_eq!(unescape("\\303\\251"), "é");
    }

    #[test]
    fn reads_this_process_table() {
        let t = read().unwrap();
        assert!(t.iter().any(|m| m.target == Path::new("/")));
    }
}
