//! The aufs-like directory driver (in progress).
