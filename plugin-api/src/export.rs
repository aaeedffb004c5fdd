//! `export_app!`: the one macro a plugin calls, and the hidden helpers it expands to.
//!
//! abi_stable's own `#[export_root_module]` expands to paths under `::abi_stable`,
//! which would force every plugin to depend on abi_stable directly. This macro
//! emits the same exported static (`LibHeader` under abi_stable's mangled symbol
//! name, checked by a test below) through `$crate` paths instead, so a plugin
//! depends on this crate only.

use abi_stable::{
    library::{CheckTypeLayout, LibHeader, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    std_types::{ROption, RResult, RSlice, RStr, RString},
};

use crate::abi::{AppBox, HostBox, Manifest, PluginModule, PluginModuleRef};

/// Exports an [`App`](crate::App) type as this plugin's app.
///
/// The manifest takes the plugin crate's name, version and description from its
/// `Cargo.toml`. The crate must be built with `crate-type = ["cdylib"]`, and
/// with panics that unwind (the default): with `panic = "abort"` one panic in
/// a callback would end the server process, so the macro refuses to compile.
///
/// ```ignore
/// switchboard_plugin_api::export_app!(Echo);
/// ```
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "a Switchboard plugin must be built with panic = \"unwind\" (the default): with panic = \"abort\" one panic in a callback ends the server and every connection of every app. Remove `panic = \"abort\"` from this crate's Cargo profile."
        );

        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn new_app(
                host: $crate::abi::HostBox,
                config_json: $crate::__private::RStr<'_>,
            ) -> $crate::__private::RResult<$crate::abi::AppBox, $crate::__private::RString> {
                $crate::sdk::new_app::<$app>(host, config_json, $crate::__private::ROption::RNone)
            }
            extern "C" fn new_app_with_state(
                host: $crate::abi::HostBox,
                config_json: $crate::__private::RStr<'_>,
                saved_state: $crate::__private::ROption<$crate::__private::RSlice<'_, u8>>,
            ) -> $crate::__private::RResult<$crate::abi::AppBox, $crate::__private::RString> {
                $crate::sdk::new_app::<$app>(host, config_json, saved_state)
            }
            fn module() -> $crate::abi::PluginModuleRef {
                $crate::__private::root_module(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    env!("CARGO_PKG_DESCRIPTION"),
                    new_app,
                    new_app_with_state,
                )
            }
            extern "C" fn load_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(module)
            }
            $crate::__private::lib_header(load_root_module)
        };
    };
}

/// Builds the root module from the manifest strings and the constructor.
/// Called once, when the server loads the library.
pub fn root_module(
    name: &'static str,
    version: &'static str,
    description: &'static str,
    new_app: extern "C" fn(HostBox, RStr<'_>) -> RResult<AppBox, RString>,
    new_app_with_state: extern "C" fn(
        HostBox,
        RStr<'_>,
        ROption<RSlice<'_, u8>>,
    ) -> RResult<AppBox, RString>,
) -> PluginModuleRef {
    PluginModule {
        manifest: Manifest {
            name: RStr::from_str(name),
            version: RStr::from_str(version),
            api_version: RStr::from_str(crate::API_VERSION),
            description: RStr::from_str(description),
        },
        new_app,
        new_app_with_state,
    }
    .leak_into_prefix()
}

/// The exported header of a plugin library.
pub const fn lib_header(root_module: extern "C" fn() -> RootModuleResult) -> LibHeader {
    // SAFETY: `root_module` is only ever the `load_root_module` function generated
    // by `export_app!`, which passes a `fn() -> PluginModuleRef` to abi_stable's own
    // `__call_root_module_loader`; that erases a `PluginModuleRef`, as
    // `from_constructor::<PluginModuleRef>` requires.
    unsafe { LibHeader::from_constructor::<PluginModuleRef>(root_module, CheckTypeLayout::Yes) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
