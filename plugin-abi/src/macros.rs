//! `export_driver!`: one line that turns a `Driver` into a loadable plugin.

/// Exports a driver type as a strata plugin (a `cdylib`).
///
/// ```ignore
/// strata_plugin_abi::export_driver!("vfs", VfsDriver, VfsDriver::open);
/// ```
///
/// - the name is the driver's config name and home directory (`<root>/<name>/`);
/// - the type implements [`Driver`](strata_driver_api::Driver) and is `Send + Sync + 'static`;
/// - the constructor is `fn(PathBuf, BTreeMap<String, String>) -> Result<Type>`: the home
///   directory and the `[plugins.options]` table.
///
/// It defines the entry symbol `strata_driver_v1`, returning a static descriptor whose version
/// is the crate's `CARGO_PKG_VERSION` and whose vtable is [`guest`](crate::guest)'s
/// shims for the type. The library's tracing events go to the host's subscriber. Build the
/// crate with `crate-type = ["cdylib"]` and `panic = "unwind"` (the default): with
/// `panic = "abort"` a panic in the driver takes the host down.
#[macro_export]
macro_rules! export_driver {
    ($name:expr, $driver:ty, $constructor:expr $(,)?) => {
        const _: () = {
            struct StrataPlugin;

            impl $crate::guest::Plugin for StrataPlugin {
                type Driver = $driver;
                const NAME: &'static str = $name;
                const VERSION: &'static str = env!("CARGO_PKG_VERSION");
                const FORWARD_LOGS: bool = true;
                fn construct(
                    home: ::std::path::PathBuf,
                    options: ::std::collections::BTreeMap<
                        ::std::string::String,
                        ::std::string::String,
                    >,
                ) -> $crate::driver_api::Result<$driver> {
                    let constructor: fn(
                        ::std::path::PathBuf,
                        ::std::collections::BTreeMap<::std::string::String, ::std::string::String>,
                    ) -> $crate::driver_api::Result<$driver> = $constructor;
                    constructor(home, options)
                }
            }

            static VTABLE: $crate::VTable = $crate::guest::vtable::<StrataPlugin>();
            static DESCRIPTOR: $crate::Descriptor =
                $crate::guest::descriptor::<StrataPlugin>(&VTABLE);

            /// The plugin's entry point: its descriptor (strata driver ABI 1).
            #[allow(unsafe_code)] // exporting an unmangled symbol is what a plugin is for
            #[unsafe(no_mangle)]
            pub extern "C" fn strata_driver_v1() -> *const $crate::Descriptor {
                &DESCRIPTOR
            }
        };
    };
}
