//! The `fuse` mount mode: the layer's view is a union file system in userspace, served by a
//! helper process (`strata-dir-fuse`) that outlives the caller of `get`.
//!
//! Branches are the layer's own diff directory (branch 0, the only one written) over its
//! ancestors' diff directories, top first, merged by the rules of the `union`
//! module (the same rules the `copy` mode and `changes` use):
//!
//! - lookup and getattr fall through to the first branch that has the name, stopping at a
//!   `.wh.<name>` whiteout or at a directory holding `.wh..wh..opq`; readdir merges the
//!   branches and shows each name once, never a whiteout or `.wh..wh.*` name;
//! - every change to a lower node copies it up first (contents by reflink or sparse copy,
//!   owner, mode, xattrs, times; the other names of a multiply-linked lower file become links
//!   of the copy), built in a work directory and renamed into place;
//! - unlink and rmdir of a lower name write `.wh.<name>`; a directory made over a whiteout is
//!   opaque; renaming a file copies it up and whites out the old name; renaming a directory
//!   that is not wholly the layer's own is EXDEV (as overlayfs without `redirect_dir`: `mv`
//!   then copies);
//! - inode numbers are the server's own, stable for the life of the mount, across copy-ups;
//! - as root, opens use FUSE passthrough where the kernel has it (6.9+): reads and writes of
//!   an open file go straight to the backing file. Otherwise reads and writes of up to the
//!   kernel's maximum (1 MiB) a request go through the server.
//!
//! Nothing but the mount changes a mounted layer's branches (the driver refuses to apply a
//! diff to a mounted layer), so the server caches listings and the kernel caches names and
//! attributes for an hour.

pub(crate) mod fs;
mod kernel;
pub(crate) mod launch;
mod links;
mod modify;
mod read;
pub(crate) mod serve;
mod tree;
mod write;

pub use launch::{HELPER, find_helper, usable};
pub use serve::helper_main;
