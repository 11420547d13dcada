//! Build script shared by every crate whose binaries link libtorch (CLI, tests,
//! examples, benches): adds an rpath to the libtorch that torch-sys linked, so
//! they run without LD_LIBRARY_PATH. torch-sys publishes that directory only to
//! crates that depend on it directly, hence the direct torch-sys dependency of
//! each crate using this script. LD_LIBRARY_PATH still wins (RUNPATH), which is
//! how a binary built here runs against another machine's libtorch.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=TASKWEAVE_LIBTORCH_LIB={dir}");
    }
}
