//! What `dlopen` would trip over, found by reading the file first: a file in a
//! plugin directory that is not a regular file, cannot be read, is not an ELF
//! shared library for this machine, or is shorter than its own headers say (a
//! copy still in progress: `dlopen` maps it and dies of SIGBUS on the missing
//! pages, taking the process with it).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use taskweave_plugin_api::io_reason;

const HEADER: usize = 64;
const PROGRAM_HEADER: u64 = 56;
const SECTION_HEADER: u64 = 64;
const ET_DYN: u16 = 3;
const SHT_NOBITS: u32 = 8;

/// The ELF machine number of the machine this runtime was built for.
const HOST_MACHINE: u16 = if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "riscv64") {
    243
} else if cfg!(target_arch = "powerpc64") {
    21
} else {
    62
};

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".into(),
        8 => "MIPS".into(),
        20 | 21 => "PowerPC".into(),
        22 => "s390".into(),
        40 => "ARM (32-bit)".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        243 => "RISC-V".into(),
        other => format!("machine type {other}"),
    }
}

/// Why `path` cannot be loaded as a plugin, or `Ok` when `dlopen` may try.
pub fn check(path: &Path) -> Result<(), String> {
    let link = fs::symlink_metadata(path).map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if link.file_type().is_symlink() => {
            let target = fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return Err(if e.kind() == io::ErrorKind::NotFound {
                format!("a broken symbolic link (its target {target} does not exist)")
            } else {
                format!("a symbolic link that cannot be followed: {}", io_reason(&e))
            });
        }
        Err(e) => return Err(format!("cannot read: {}", io_reason(&e))),
    };
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_block_device() || kind.is_char_device() {
        Some("a device")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(format!("{what}, not a shared library"));
    }
    let file = File::open(path).map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    check_elf(&file, meta.len())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn truncated(size: u64, needed: u64) -> String {
    format!(
        "truncated: the file has {size} bytes but its ELF headers describe {needed} \
         (a copy still in progress? copy it again)"
    )
}

/// Reads `len` bytes at `offset`, or says the file is truncated.
fn read_at(file: &File, size: u64, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let end = offset.saturating_add(len);
    if end > size {
        return Err(truncated(size, end));
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    Ok(buf)
}

/// A 64-bit little-endian ELF shared object for this machine, whose program
/// headers, segments, section headers and sections all lie inside the file.
fn check_elf(file: &File, size: u64) -> Result<(), String> {
    if size < HEADER as u64 {
        return Err(format!(
            "not a shared library (only {size} bytes, too short for an ELF header)"
        ));
    }
    let h = read_at(file, size, 0, HEADER as u64)?;
    if &h[..4] != b"\x7fELF" {
        return Err("not a shared library (no ELF header)".into());
    }
    if h[4] != 2 || h[5] != 1 {
        let bits = if h[4] == 1 { "32-bit" } else { "64-bit" };
        let (order, machine) = if h[5] == 2 {
            ("big-endian", u16::from_be_bytes([h[18], h[19]]))
        } else {
            ("little-endian", u16_at(&h, 18))
        };
        return Err(format!(
            "built for a {bits} {order} machine ({}), but this machine is {}",
            machine_name(machine),
            machine_name(HOST_MACHINE)
        ));
    }
    let machine = u16_at(&h, 18);
    if machine != HOST_MACHINE {
        return Err(format!(
            "built for {}, but this machine is {}",
            machine_name(machine),
            machine_name(HOST_MACHINE)
        ));
    }
    if u16_at(&h, 16) != ET_DYN {
        return Err("an ELF file but not a shared library (an executable or object file)".into());
    }
    let (phoff, phnum) = (u64_at(&h, 32), u64::from(u16_at(&h, 56)));
    let (shoff, shnum) = (u64_at(&h, 40), u64::from(u16_at(&h, 60)));
    let programs = read_at(file, size, phoff, phnum * PROGRAM_HEADER)?;
    for p in programs.chunks_exact(PROGRAM_HEADER as usize) {
        let end = u64_at(p, 8).saturating_add(u64_at(p, 32));
        if end > size {
            return Err(truncated(size, end));
        }
    }
    let sections = read_at(file, size, shoff, shnum * SECTION_HEADER)?;
    for s in sections.chunks_exact(SECTION_HEADER as usize) {
        let end = u64_at(s, 24).saturating_add(u64_at(s, 32));
        if u32_at(s, 4) != SHT_NOBITS && end > size {
            return Err(truncated(size, end));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own dependencies include shared libraries; the C
    /// library is on every Linux machine.
    fn a_shared_library() -> std::path::PathBuf {
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("libc.so") || p.contains("libc-"))
            .map(Into::into)
            .expect("libc is mapped")
    }

    #[test]
    fn a_whole_shared_library_passes_and_every_truncation_is_caught() {
        let lib = a_shared_library();
        check(&lib).unwrap();
        let bytes = fs::read(&lib).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.so");
        for len in [0, 10, 64, 500, bytes.len() / 3, bytes.len() - 1] {
            fs::write(&cut, &bytes[..len]).unwrap();
            let e = check(&cut).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("too short"),
                "{len} bytes: {e}"
            );
        }
    }

    #[test]
    fn other_machines_files_and_file_kinds_get_their_own_reason() {
        let lib = a_shared_library();
        let mut bytes = fs::read(&lib).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("arm.so");
        let machine = if HOST_MACHINE == 183 { 62u16 } else { 183 };
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        fs::write(&other, &bytes).unwrap();
        let e = check(&other).unwrap_err();
        assert!(
            e.starts_with("built for ") && e.contains("but this machine is"),
            "{e}"
        );

        let exe = dir.path().join("exe.so");
        bytes[18..20].copy_from_slice(&HOST_MACHINE.to_le_bytes());
        bytes[16..18].copy_from_slice(&2u16.to_le_bytes());
        fs::write(&exe, &bytes).unwrap();
        assert!(check(&exe).unwrap_err().contains("not a shared library"));

        fs::create_dir(dir.path().join("dir.so")).unwrap();
        assert_eq!(
            check(&dir.path().join("dir.so")).unwrap_err(),
            "a directory, not a shared library"
        );
        std::os::unix::fs::symlink("nowhere.so", dir.path().join("broken.so")).unwrap();
        let e = check(&dir.path().join("broken.so")).unwrap_err();
        assert!(e.starts_with("a broken symbolic link"), "{e}");
        std::os::unix::fs::symlink("loop.so", dir.path().join("loop.so")).unwrap();
        let e = check(&dir.path().join("loop.so")).unwrap_err();
        assert!(e.contains("symbolic link that cannot be followed"), "{e}");
        let fifo = dir.path().join("fifo.so");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(
            check(&fifo).unwrap_err(),
            "a FIFO (named pipe), not a shared library"
        );
    }
}
