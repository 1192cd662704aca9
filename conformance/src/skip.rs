//! The one skip line of strata's tests and examples: `SKIP <test>: <reason>` on stderr.
//!
//! Cargo's test harness has no skip status, so a test that cannot run on this host (not
//! root, no `/dev/fuse`, no loop devices, no `mkfs.xfs`) prints this line and returns early:
//! it passes, but never silently. The suite's generated tests print the same line for a
//! skipped case. Whether to skip is the caller's decision; this module only says so, in one
//! format, so that `grep '^SKIP '` over a test log finds every one.

use std::fmt::Display;

/// The skip line: `SKIP <test>: <reason>`.
pub fn line(test: &str, reason: impl Display) -> String {
    format!("SKIP {test}: {reason}")
}

/// Prints the skip line for `test` to stderr. Tests call it through [`skip!`](macro@crate::skip),
/// which names the calling test; call it directly where the name is known otherwise (a
/// conformance case, a test generated per mode).
pub fn print(test: &str, reason: impl Display) {
    eprintln!("{}", line(test, reason));
}

/// Whether the process runs as root (effective uid 0), the most common reason to skip.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The running test's name as `cargo test` prints it: the current thread's name, since the
/// test harness runs each test on a thread named for it. `None` on `main` (an example, a
/// harness-less test) and on a runtime's worker threads.
pub fn current_test() -> Option<String> {
    match std::thread::current().name() {
        Some(n) if n != "main" && !n.starts_with("tokio-") => Some(n.to_string()),
        _ => None,
    }
}

/// The name [`skip!`](macro@crate::skip) prints: [`current_test`], else the calling function's path
/// from its type name, without the crate and the trailing `f` and `{{closure}}` parts
/// (`apply_parse::case37::f` is `case37`).
#[doc(hidden)]
pub fn test_name(type_name: &'static str) -> String {
    current_test().unwrap_or_else(|| function_path(type_name).to_string())
}

fn function_path(type_name: &str) -> &str {
    let mut name = type_name.strip_suffix("::f").unwrap_or(type_name);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name.split_once("::").map_or(name, |(_, rest)| rest)
}

/// Prints `SKIP <test>: <reason>` to stderr, `<test>` being the running test as `cargo test`
/// names it (the test thread's name; outside a test thread, the calling function's path); the
/// arguments are a `format!` string. The caller returns early itself:
///
/// ```
/// # fn has_fuse() -> bool { true }
/// if !has_fuse() {
///     strata_conformance::skip!("no /dev/fuse");
///     return;
/// }
/// ```
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {{
        fn f() {}
        $crate::skip::print(
            &$crate::skip::test_name(::std::any::type_name_of_val(&f)),
            ::std::format_args!($($reason)+),
        )
    }};
}

/// `true` as root; otherwise prints `SKIP <test>: needs root` (or `<part> needs root` when a
/// part is named) like [`skip!`](macro@crate::skip) and is `false`:
///
/// ```
/// if !strata_conformance::root_or_skip!() {
///     return;
/// }
/// if strata_conformance::root_or_skip!("the device node part") {
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! root_or_skip {
    () => {
        $crate::skip::is_root() || {
            $crate::skip!("needs root");
            false
        }
    };
    ($part:expr) => {
        $crate::skip::is_root() || {
            $crate::skip!("{} needs root", $part);
            false
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_test_and_the_reason() {
        assert_eq!(line("t", "needs root"), "SKIP t: needs root");
        fn f() {}
        let me = "skip::tests::the_line_names_the_test_and_the_reason";
        assert_eq!(test_name(std::any::type_name_of_val(&f)), me);
        assert_eq!(function_path(std::any::type_name_of_val(&f)), me);
        assert_eq!(
            function_path("bin::a::b::{{closure}}::{{closure}}::f"),
            "a::b"
        );
        assert_eq!(function_path("bin::f"), "bin");
    }
}
