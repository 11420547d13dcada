//! Every .cu module compiles with NVRTC; the disk cache is keyed and atomic.
use std::path::PathBuf;

use taskweave_kernels::compile::{self, cache_key, DiskCache, Module, MODULES};
use taskweave_kernels::Error;

/// NVRTC's version, or None after saying why the test is skipped.
fn nvrtc() -> Option<(i32, i32)> {
    match compile::nvrtc_version() {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "taskweave-kernels-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_module_compiles_to_ptx_defining_its_kernels() {
    let Some(version) = nvrtc() else { return };
    eprintln!("nvrtc {}.{}", version.0, version.1);
    // The H200's architecture and the oldest one CUDA 13 supports.
    for arch in ["compute_90", "compute_75"] {
        for m in &MODULES {
            let ptx = compile::compile(m, arch, None).unwrap_or_else(|e| panic!("{e}"));
            for k in m.kernels {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "{} for {arch}: no kernel {k}",
                    m.name
                );
            }
        }
    }
}

#[test]
fn a_syntax_error_is_a_compile_error_with_the_log() {
    if nvrtc().is_none() {
        return;
    }
    let bad = Module::new(
        "broken",
        "extern \"C\" __global__ void broken_f32(float* x) { x[0] = ; }",
        &["broken_f32"],
    );
    match compile::compile(&bad, "compute_90", None) {
        Err(Error::Compile { module, log, .. }) => {
            assert_eq!(module, "broken");
            assert!(log.contains("error"), "{log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn cache_key_changes_with_source_arch_version_and_options() {
    let k = cache_key("src", "compute_90", (13, 0), &["-a"]);
    assert_eq!(k.len(), 64);
    assert_eq!(k, cache_key("src", "compute_90", (13, 0), &["-a"]));
    for other in [
        cache_key("src2", "compute_90", (13, 0), &["-a"]),
        cache_key("src", "compute_80", (13, 0), &["-a"]),
        cache_key("src", "compute_90", (13, 1), &["-a"]),
        cache_key("src", "compute_90", (13, 0), &["-b"]),
        // Field boundaries count: no ambiguity from concatenation.
        cache_key("srccompute_90", "", (13, 0), &["-a"]),
    ] {
        assert_ne!(k, other);
    }
}

#[test]
fn disk_cache_writes_atomically_and_is_read_back_by_key() {
    let dir = temp_dir("cache");
    let cache = DiskCache::new(&dir);
    assert!(cache.load("sam", "abc").is_none());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let text = format!("{i}").repeat(100_000);
                cache.store("sam", "abc", &text).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One complete file from one writer, and no temporary left behind.
    let text = cache.load("sam", "abc").unwrap();
    assert_eq!(text.len(), 100_000);
    assert!(text.chars().all(|c| c == text.chars().next().unwrap()));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![cache
            .path("sam", "abc")
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()]
    );
    assert!(cache.load("sam", "abd").is_none(), "another key must miss");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_goes_through_the_disk_cache() {
    if nvrtc().is_none() {
        return;
    }
    let dir = temp_dir("compile");
    let cache = DiskCache::new(&dir);
    let m = Module::new(
        "tiny",
        "extern \"C\" __global__ void tiny_f32(float* x) { x[threadIdx.x] *= 2.f; }",
        &["tiny_f32"],
    );
    let first = compile::compile(&m, "compute_90", Some(&cache)).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);
    // A second compile reads the file (proved by a marker), keyed by arch.
    std::fs::write(&files[0], "// marker").unwrap();
    assert_eq!(
        compile::compile(&m, "compute_90", Some(&cache)).unwrap(),
        "// marker"
    );
    assert_ne!(
        compile::compile(&m, "compute_80", Some(&cache)).unwrap(),
        "// marker"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
