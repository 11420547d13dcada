//! The root module every plugin exports, and the version symbol checked before it.
//!
//! Both are defined here, in this crate, so a plugin crate contains no FFI code at
//! all: linking this crate into a `cdylib` exports them, and the root module lists
//! whatever the plugin registered with [`register_method!`](crate::register_method).

use std::ffi::{c_char, CStr};
use std::sync::OnceLock;

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RErr, RResult, RStr, RVec};
use abi_stable::{
    declare_root_module_statics, export_root_module, package_version_strings, StableAbi,
};

use crate::{guard, method, Error, FfiHostBox, FfiMethod, Host, MethodContext, MethodManifest};

/// The root module: three functions the runtime calls.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Called once after loading, with the library's file name (used in error
    /// messages) and the host (log records are forwarded to it).
    pub init: extern "C" fn(library: RStr<'_>, host: FfiHostBox),
    /// The manifests of every method the library registered.
    pub manifests: extern "C" fn() -> RResult<RVec<MethodManifest>, Error>,
    /// Creates the method `name` from its validated config (a JSON object).
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: &MethodContext,
        host: FfiHostBox,
    ) -> RResult<FfiMethod, Error>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "taskweave_plugin";
    const NAME: &'static str = "taskweave_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The name of the plain C function every plugin exports, returning
/// [`COMPAT`] without the trailing NUL. The runtime reads it before touching the
/// root module, so that a version mismatch gets a message saying which versions.
pub const COMPAT_SYMBOL: &str = "taskweave_plugin_compat";

/// `abi=<plugin ABI>;tch=<tch>;libtorch=<libtorch>`, NUL-terminated.
pub const COMPAT: &str = concat!(
    "abi=",
    env!("CARGO_PKG_VERSION"),
    ";tch=",
    crate::tch_version!(),
    ";libtorch=",
    crate::libtorch_version!(),
    "\0"
);

/// Returns [`COMPAT`] as a C string. Exported by every plugin (see [`COMPAT_SYMBOL`]).
#[no_mangle]
pub extern "C" fn taskweave_plugin_compat() -> *const c_char {
    COMPAT.as_ptr().cast()
}

/// The versions a library was built with, as its [`COMPAT_SYMBOL`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compat {
    /// The plugin ABI version (`taskweave-plugin-api`'s version).
    pub abi: String,
    /// The tch version.
    pub tch: String,
    /// The libtorch version.
    pub libtorch: String,
}

impl Compat {
    /// The versions this build of the crate has.
    pub fn current() -> Compat {
        Compat::parse(COMPAT.trim_end_matches('\0')).expect("COMPAT is well-formed")
    }

    /// Parses `abi=..;tch=..;libtorch=..`.
    pub fn parse(text: &str) -> Option<Compat> {
        let mut abi = None;
        let mut tch = None;
        let mut libtorch = None;
        for part in text.split(';') {
            let (key, value) = part.split_once('=')?;
            match key {
                "abi" => abi = Some(value.to_string()),
                "tch" => tch = Some(value.to_string()),
                "libtorch" => libtorch = Some(value.to_string()),
                _ => {}
            }
        }
        Some(Compat {
            abi: abi?,
            tch: tch?,
            libtorch: libtorch?,
        })
    }

    /// Reads the versions from a C string returned by [`COMPAT_SYMBOL`].
    ///
    /// # Safety
    ///
    /// `ptr` must point to a NUL-terminated string that lives as long as the call.
    pub unsafe fn from_c(ptr: *const c_char) -> Option<Compat> {
        // SAFETY: guaranteed by the caller.
        let text = unsafe { CStr::from_ptr(ptr) };
        Compat::parse(text.to_str().ok()?)
    }

    /// Why a library with versions `self` cannot be used by a runtime with
    /// versions `runtime`, or `None` when it can. ABI versions follow semver:
    /// for 0.x the minor version must match, otherwise the major version.
    pub fn incompatibility(&self, runtime: &Compat) -> Option<String> {
        if self.libtorch != runtime.libtorch || self.tch != runtime.tch {
            return Some(format!(
                "built against libtorch {} (tch {}), but this runtime uses libtorch {} (tch {}); \
                 rebuild the plugin with taskweave-plugin-api {}",
                self.libtorch, self.tch, runtime.libtorch, runtime.tch, runtime.abi
            ));
        }
        let key = |v: &str| {
            let mut parts = v.split('.');
            let major = parts.next().unwrap_or("").to_string();
            let minor = parts.next().unwrap_or("").to_string();
            if major == "0" {
                (major, minor)
            } else {
                (major, String::new())
            }
        };
        if key(&self.abi) != key(&runtime.abi) {
            return Some(abi_mismatch(&self.abi, &runtime.abi));
        }
        None
    }
}

/// The line for a plugin built for plugin ABI `plugin` in a runtime of plugin ABI `runtime`.
pub fn abi_mismatch(plugin: &str, runtime: &str) -> String {
    format!(
        "built for plugin ABI {plugin}, this runtime is plugin ABI {runtime}; \
         rebuild it against taskweave-plugin-api {runtime} (`taskweave plugin build`)"
    )
}

static LIBRARY: OnceLock<String> = OnceLock::new();

extern "C" fn init(library: RStr<'_>, host: FfiHostBox) {
    let _ = LIBRARY.set(library.to_string());
    crate::error::install_panic_hook();
    crate::log::forward_to(Host::from_ffi(host));
}

extern "C" fn manifests() -> RResult<RVec<MethodManifest>, Error> {
    let library = LIBRARY.get().map(String::as_str).unwrap_or("plugin");
    guard(library, "manifests", || {
        Ok(method::registered().map(|m| m.manifest()).collect())
    })
}

extern "C" fn create(
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: &MethodContext,
    host: FfiHostBox,
) -> RResult<FfiMethod, Error> {
    let library = LIBRARY.get().map(String::as_str).unwrap_or("plugin");
    let label = format!("method `{name}` ({library})");
    let Some(method) = method::registered().find(|m| m.name == name.as_str()) else {
        return RErr(Error::msg(format!("{library} has no method `{name}`")));
    };
    guard(&label, "create", || {
        let config: serde_json::Value = serde_json::from_str(config.as_str())?;
        let created = method.create(&config, ctx, &Host::from_ffi(host))?;
        Ok(FfiMethod::new(created, &label))
    })
}

/// The exported root module. A module of its own because `export_root_module`
/// generates an undocumented public static.
#[doc(hidden)]
pub mod export {
    #![allow(
        missing_docs,
        reason = "items generated by abi_stable's export_root_module"
    )]
    use super::*;

    /// The root module abi_stable's loader finds in every plugin.
    #[export_root_module]
    pub fn root_module() -> PluginModuleRef {
        PluginModule {
            init,
            manifests,
            create,
        }
        .leak_into_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_of_this_build_parses() {
        let c = Compat::current();
        assert_eq!(c.abi, crate::ABI_VERSION);
        assert_eq!(c.libtorch, crate::LIBTORCH_VERSION);
        assert!(c.incompatibility(&c).is_none());
    }

    #[test]
    fn other_libtorch_or_abi_is_refused_with_versions_in_the_message() {
        let runtime = Compat::current();
        let other_torch = Compat {
            libtorch: "2.10.0".into(),
            tch: "0.23.0".into(),
            ..runtime.clone()
        };
        let why = other_torch.incompatibility(&runtime).unwrap();
        assert!(
            why.contains("libtorch 2.10.0") && why.contains("libtorch 2.11.0"),
            "{why}"
        );
        let old_abi = Compat {
            abi: "0.0.9".into(),
            ..runtime.clone()
        };
        let why = old_abi.incompatibility(&runtime).unwrap();
        assert!(why.contains("plugin ABI 0.0.9"), "{why}");
        let patch = Compat {
            abi: format!("{}.99", &runtime.abi[..runtime.abi.rfind('.').unwrap()]),
            ..runtime.clone()
        };
        assert!(patch.incompatibility(&runtime).is_none());
    }
}
