//! Layer tars in the AUFS form, described as a list of entries, to fill lower layers with
//! `apply_diff`. Parent directories are added (0755) when a path needs them.

use std::collections::HashSet;

/// Full metadata of one entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds (a PAX `mtime` record; apply sets atime to it too).
    pub mtime: (i64, u32),
    pub xattrs: &'a [(&'a str, &'a [u8])],
}

/// The default mtime of entries.
pub const MTIME: i64 = 1_700_000_000;

impl Default for Meta<'_> {
    fn default() -> Self {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (MTIME, 0),
            xattrs: &[],
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum T<'a> {
    /// A directory, 0755.
    Dir(&'a str),
    /// A file, 0644.
    F(&'a str, &'a str),
    /// A file with a mode.
    Fm(&'a str, &'a str, u32),
    /// A file or (`dir: true`) directory with full metadata.
    Full {
        path: &'a str,
        text: &'a str,
        dir: bool,
        meta: Meta<'a>,
    },
    /// A whiteout of `dir/name`: the file `dir/.wh.name`.
    Wh(&'a str),
    /// The opaque marker of a directory: `dir/.wh..wh..opq`.
    Opq(&'a str),
    /// A symlink and its target.
    Sym(&'a str, &'a str),
    /// A hard link and the path it links to.
    Link(&'a str, &'a str),
    /// A fifo, 0644.
    Fifo(&'a str),
}

/// `dir/.wh.name` for `dir/name`.
pub fn wh_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.wh.{name}"),
        None => format!(".wh.{path}"),
    }
}

/// The tar of `entries`, in order.
pub fn tar(entries: &[T<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: HashSet<String> = HashSet::new();
    for e in entries {
        let (path, kind, text, meta, link): (String, tar::EntryType, &str, Meta<'_>, Option<&str>) =
            match *e {
                T::Dir(p) => (p.into(), DIR, "", dir_meta(), None),
                T::F(p, t) => (p.into(), REG, t, Meta::default(), None),
                T::Fm(p, t, mode) => (
                    p.into(),
                    REG,
                    t,
                    Meta {
                        mode,
                        ..Meta::default()
                    },
                    None,
                ),
                T::Full {
                    path,
                    text,
                    dir,
                    meta,
                } => (path.into(), if dir { DIR } else { REG }, text, meta, None),
                T::Wh(p) => (wh_path(p), REG, "", Meta::default(), None),
                T::Opq(d) => (format!("{d}/.wh..wh..opq"), REG, "", Meta::default(), None),
                T::Sym(p, to) => (
                    p.into(),
                    SYM,
                    "",
                    Meta {
                        mode: 0o777,
                        ..Meta::default()
                    },
                    Some(to),
                ),
                T::Link(p, to) => (
                    p.into(),
                    tar::EntryType::Link,
                    "",
                    Meta::default(),
                    Some(to),
                ),
                T::Fifo(p) => (p.into(), tar::EntryType::Fifo, "", Meta::default(), None),
            };
        // Parents first.
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if dirs.insert(parent.clone()) {
                append(&mut b, &parent, DIR, "", &dir_meta(), None);
            }
        }
        if kind == DIR {
            dirs.insert(path.clone());
        }
        append(&mut b, &path, kind, text, &meta, link);
    }
    b.into_inner().unwrap()
}

const DIR: tar::EntryType = tar::EntryType::Directory;
const REG: tar::EntryType = tar::EntryType::Regular;
const SYM: tar::EntryType = tar::EntryType::Symlink;

fn dir_meta() -> Meta<'static> {
    Meta {
        mode: 0o755,
        ..Meta::default()
    }
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    text: &str,
    meta: &Meta<'_>,
    link: Option<&str>,
) {
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if meta.mtime.1 != 0 {
        let t = format!("{}.{:09}", meta.mtime.0, meta.mtime.1);
        pax.push(("mtime".into(), t.into_bytes()));
    }
    for (k, v) in meta.xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.to_vec()));
    }
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime.0 as u64);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_path(path).unwrap();
    h.set_size(text.len() as u64);
    h.set_cksum();
    b.append(&h, text.as_bytes()).unwrap();
}
