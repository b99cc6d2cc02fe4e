use std::env;
use std::process::Command;

fn main() {
    // Rebuild when a migration is added or changed: `sqlx::migrate!` embeds them.
    println!("cargo:rerun-if-changed=migrations");
    pack_relative_relocs();
}

/// Link `ward` with packed relative relocations (DT_RELR) where the C library
/// can load them. ward is a position-independent executable, and its ordinary
/// relocation table is about 180 KiB that the loader reads at every start and
/// that stays resident; packed it is about 2 KiB, which takes about 0.15 MiB
/// off the daemon's RSS (docs/BENCHMARKS.md).
///
/// glibc loads DT_RELR from 2.36 on, and the linker then records that need
/// (`GLIBC_ABI_DT_RELR`), so a binary built here refuses to start, with a
/// clear loader error, on an older glibc, like any binary that uses a newer
/// glibc symbol. On an older glibc, on another C library, or when
/// cross-compiling, ward is linked as before. Linkers that do not know the
/// option (binutils before 2.38) warn and ignore it.
fn pack_relative_relocs() {
    println!("cargo:rerun-if-env-changed=WARD_NO_RELR");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !native || !gnu_linux || env::var_os("WARD_NO_RELR").is_some() {
        return;
    }
    // `getconf GNU_LIBC_VERSION` prints e.g. "glibc 2.36".
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if out.status.success() && (major, minor) >= (2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
