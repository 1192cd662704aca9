//! The dir driver's FUSE helper: mounts one layer's union view and serves it until it is
//! unmounted. Started by the driver; see `strata_driver_dir::fuse`.

fn main() -> std::process::ExitCode {
    strata_driver_dir::fuse::helper_main()
}
