//! Mount options as plain data: sorting user options into mount attributes and overlayfs
//! parameters, the classic `mount(2)` option string, and the depth that string allows.

use rustix::mount::MountAttrFlags;
use strata_driver_api::{Error, ErrorKind, Result};

/// The kernel's limit on lower layers in one overlay mount (`OVL_MAX_STACK`).
pub(crate) const OVL_MAX_STACK: usize = 500;
/// The length of a layer's short link name (`l/<LID>`), as overlay2: 26 base32 characters.
pub(crate) const LID_LEN: usize = 26;
/// Mount data must fit in one page, terminating NUL included.
const PAGE: usize = 4096;
/// Room kept free in the page for options a caller adds per mount (an SELinux `context=`).
const HEADROOM: usize = 512;
/// The longest layer id (`LayerId`'s limit), which the relative `upperdir`/`workdir` name.
const MAX_ID: usize = 128;

/// Parameters the driver sets itself and a user may not.
const OWNED: &[&str] = &[
    "lowerdir",
    "lowerdir+",
    "datadir+",
    "upperdir",
    "workdir",
    "index",
];

/// User mount options, sorted into what `fsmount` takes and what `fsconfig` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// Mount attributes (`nodev`, `ro`, ...).
    pub attrs: MountAttrFlags,
    /// overlayfs parameters in order: `(key, None)` is a flag, `(key, Some(value))` a string.
    pub params: Vec<(String, Option<String>)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            attrs: MountAttrFlags::empty(),
            params: Vec::new(),
        }
    }
}

impl Options {
    /// Sorts `opts`; an option the driver sets itself, an empty one or one with a comma is
    /// `InvalidInput`.
    pub(crate) fn parse<S: AsRef<str>>(opts: &[S]) -> Result<Options> {
        let mut out = Options::default();
        for opt in opts {
            let opt = opt.as_ref();
            if opt.is_empty() || opt.contains([',', '\0']) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "overlay mount option {opt:?}: must be one non-empty option without commas"
                    ),
                ));
            }
            let attr = match opt {
                "ro" => MountAttrFlags::MOUNT_ATTR_RDONLY,
                "nodev" => MountAttrFlags::MOUNT_ATTR_NODEV,
                "nosuid" => MountAttrFlags::MOUNT_ATTR_NOSUID,
                "noexec" => MountAttrFlags::MOUNT_ATTR_NOEXEC,
                "noatime" => MountAttrFlags::MOUNT_ATTR_NOATIME,
                "nodiratime" => MountAttrFlags::MOUNT_ATTR_NODIRATIME,
                "relatime" => MountAttrFlags::MOUNT_ATTR_RELATIME,
                "strictatime" => MountAttrFlags::MOUNT_ATTR_STRICTATIME,
                "rw" | "suid" | "dev" | "exec" | "atime" => MountAttrFlags::empty(),
                _ => {
                    let (key, value) = match opt.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_string())),
                        None => (opt, None),
                    };
                    if OWNED.contains(&key) {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!("overlay mount option {opt:?}: the driver sets {key} itself"),
                        ));
                    }
                    out.params.push((key.to_string(), value));
                    continue;
                }
            };
            out.attrs |= attr;
        }
        Ok(out)
    }

    /// The value of parameter `key`, the last one given (`Some(None)` for a flag).
    pub(crate) fn get(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }

    /// Whether these options let overlayfs write what a tar of the upper cannot carry:
    /// `redirect_dir=on` (renamed directories) or `metacopy=on` (metadata-only copy-ups).
    pub(crate) fn breaks_native_diff(&self) -> bool {
        matches!(self.get("redirect_dir"), Some(Some("on")))
            || matches!(self.get("metacopy"), Some(Some("on") | None))
    }

    /// The parameters after `other`'s (later wins in overlayfs); attributes united.
    pub(crate) fn merged(&self, other: &Options) -> Options {
        let mut params = self.params.clone();
        params.extend(other.params.iter().cloned());
        Options {
            attrs: self.attrs | other.attrs,
            params,
        }
    }

    /// The parameters as the comma-separated text `mount(2)` takes (no leading comma).
    pub(crate) fn param_string(&self) -> String {
        let mut parts = Vec::with_capacity(self.params.len());
        for (k, v) in &self.params {
            parts.push(match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
        }
        parts.join(",")
    }
}

/// What one overlay mount stacks. Lowers are top first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stack<P> {
    /// The read-only layers, top first (at least one).
    pub lowers: Vec<P>,
    /// `(upperdir, workdir)` for a writable mount.
    pub upper: Option<(P, P)>,
}

/// The classic `mount(2)` data for `stack`, whose paths are relative to the driver's home:
/// `index=off,<params>,lowerdir=a:b,upperdir=u,workdir=w`. `InvalidInput` if it does not fit
/// in a page (the driver checks depth at create time, so this is a backstop).
pub(crate) fn mount_data(stack: &Stack<String>, params: &str) -> Result<String> {
    let mut s = String::from("index=off");
    if !params.is_empty() {
        s.push(',');
        s.push_str(params);
    }
    s.push_str(",lowerdir=");
    s.push_str(&stack.lowers.join(":"));
    if let Some((upper, work)) = &stack.upper {
        s.push_str(",upperdir=");
        s.push_str(upper);
        s.push_str(",workdir=");
        s.push_str(work);
    }
    if s.len() > PAGE - 1 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "overlay mount data of {} bytes does not fit in a page ({} lowers)",
                s.len(),
                stack.lowers.len()
            ),
        ));
    }
    Ok(s)
}

/// The deepest chain (layers, the mounted one included) classic `mount(2)` data can hold with
/// `params`, keeping [`HEADROOM`] free: a writable mount of a chain of N has N - 1 lowers
/// named `l/<LID>` plus `upperdir`/`workdir` named by the (longest) id.
pub(crate) fn mount2_max_depth(params: &str) -> u32 {
    let fixed = "index=off,".len()
        + params.len()
        + 1
        + "lowerdir=".len()
        + ",upperdir=".len()
        + MAX_ID
        + "/diff".len()
        + ",workdir=".len()
        + MAX_ID
        + "/work".len();
    let room = (PAGE - 1 - HEADROOM).saturating_sub(fixed);
    // n lowers take n * (2 + LID_LEN) + (n - 1) bytes.
    let lowers = (room + 1) / (2 + LID_LEN + 1);
    (lowers.min(OVL_MAX_STACK) + 1).min(OVL_MAX_STACK) as u32
}

/// Whether `s` is a short link name this driver makes: 26 characters of base32.
pub(crate) fn valid_lid(s: &str) -> bool {
    s.len() == LID_LEN && s.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7'))
}

/// A short link name from 16 random bytes (26 base32 characters, the last 2 bits unused).
pub(crate) fn lid_from(bytes: [u8; 17]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(LID_LEN);
    let mut it = bytes.iter();
    while out.len() < LID_LEN {
        if nbits < 5 {
            bits = (bits << 8) | u32::from(*it.next().unwrap_or(&0));
            nbits += 8;
        }
        nbits -= 5;
        out.push(ALPHABET[((bits >> nbits) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_sort_into_attrs_and_params() {
        let o = Options::parse(&["nodev", "ro", "volatile", "metacopy=on", "context=x_t"]).unwrap();
        assert_eq!(
            o.attrs,
            MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_RDONLY
        );
        assert_eq!(
            o.params,
            [
                ("volatile".to_string(), None),
                ("metacopy".to_string(), Some("on".to_string())),
                ("context".to_string(), Some("x_t".to_string())),
            ]
        );
        assert!(o.breaks_native_diff());
        assert_eq!(o.param_string(), "volatile,metacopy=on,context=x_t");
    }

    #[test]
    fn options_the_driver_owns_are_rejected() {
        for bad in [
            "lowerdir=/etc",
            "upperdir=/x",
            "workdir=/y",
            "index=on",
            "",
            "a,b",
            "lowerdir+=/",
        ] {
            let err = Options::parse(&[bad]).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn native_diff_breakers() {
        let p = |o: &[&str]| Options::parse(o).unwrap().breaks_native_diff();
        assert!(!p(&[]));
        assert!(!p(&["redirect_dir=off", "metacopy=off", "nodev"]));
        assert!(!p(&["redirect_dir=follow"]));
        assert!(p(&["redirect_dir=on"]));
        assert!(p(&["metacopy=on"]));
        assert!(!p(&["metacopy=on", "metacopy=off"]), "the last one wins");
    }

    #[test]
    fn mount_data_is_relative_and_bounded() {
        let stack = Stack {
            lowers: vec!["l/A".to_string(), "l/B".to_string()],
            upper: Some(("x/diff".to_string(), "x/work".to_string())),
        };
        assert_eq!(
            mount_data(&stack, "nodev").unwrap(),
            "index=off,nodev,lowerdir=l/A:l/B,upperdir=x/diff,workdir=x/work"
        );
        let ro = Stack {
            lowers: vec!["l/A".to_string()],
            upper: None,
        };
        assert_eq!(mount_data(&ro, "").unwrap(), "index=off,lowerdir=l/A");
        let huge = Stack {
            lowers: vec![format!("l/{}", "A".repeat(LID_LEN)); 200],
            upper: None,
        };
        assert_eq!(
            mount_data(&huge, "").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn mount2_depth_fits_a_page_with_headroom() {
        let params = "redirect_dir=off,metacopy=off";
        let depth = mount2_max_depth(params) as usize;
        assert!((100..=128).contains(&depth), "{depth}");
        let id = "a".repeat(MAX_ID);
        let lid = format!("l/{}", "A".repeat(LID_LEN));
        let stack = Stack {
            lowers: vec![lid.clone(); depth - 1],
            upper: Some((format!("{id}/diff"), format!("{id}/work"))),
        };
        let data = mount_data(&stack, params).unwrap();
        assert!(data.len() + HEADROOM < PAGE, "{}", data.len());
        let one_more = Stack {
            lowers: vec![lid; depth],
            upper: stack.upper.clone(),
        };
        let longer = mount_data(&one_more, params).unwrap();
        assert!(
            longer.len() + HEADROOM > PAGE - 1,
            "one more layer would still fit"
        );
        // More options, less depth.
        assert!(mount2_max_depth(&"x".repeat(1000)) < depth as u32);
    }

    #[test]
    fn lids() {
        let a = lid_from([0; 17]);
        assert_eq!(a, "A".repeat(LID_LEN));
        let b = lid_from([0xff; 17]);
        assert_eq!(b, "7".repeat(LID_LEN));
        assert!(valid_lid(&a) && valid_lid(&b));
        assert!(!valid_lid("ABC"));
        assert!(!valid_lid(&"a".repeat(LID_LEN)));
        assert!(!valid_lid(&format!("{}/", "A".repeat(LID_LEN - 1))));
    }
}
