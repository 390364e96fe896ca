//! Picks the board's memory map and provisions the device key.
//!
//! The key comes from the file `driftlog-collector keygen` prints (`key_id = N` and
//! `key = "64 hex digits"`), named by the environment variable `DRIFTLOG_KEY_FILE` at build
//! time. It is compiled into the image as a constant: treat the ELF and the flash as secrets.
//! Without the variable no key is compiled in, and the firmware needs `key=ID:HEX` at boot.

use std::env;
use std::fs;
use std::path::PathBuf;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: u32,
    key: String,
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let board = if env::var_os("CARGO_FEATURE_BOARD_MPS2_AN386").is_some() { "mps2-an386" } else { "lm3s6965" };
    let memory = format!("memory/{board}.x");
    fs::copy(&memory, out.join("memory.x")).expect("copy the board's memory map");
    println!("cargo:rerun-if-changed={memory}");
    println!("cargo:rustc-link-search={}", out.display());
    // cortex-m-rt's linker script (it includes memory.x); here rather than in
    // .cargo/config.toml so a RUSTFLAGS in the environment cannot drop it.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    // cortex-m-rt's `device` feature includes device.x for named interrupt handlers; this
    // firmware names none (its `__INTERRUPTS` points every line at `DefaultHandler`).
    fs::write(out.join("device.x"), "/* no named interrupt handlers: see src/link.rs */\n").expect("write device.x");

    println!("cargo:rerun-if-env-changed=DRIFTLOG_KEY_FILE");
    let key = match env::var_os("DRIFTLOG_KEY_FILE") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("DRIFTLOG_KEY_FILE {}: {error}", path.display()));
            let file: KeyFile =
                toml::from_str(&text).unwrap_or_else(|error| panic!("DRIFTLOG_KEY_FILE {}: {error}", path.display()));
            let secret = parse_hex_key(&file.key)
                .unwrap_or_else(|error| panic!("DRIFTLOG_KEY_FILE {}: key: {error}", path.display()));
            format!("Some(({}, {:?}))", file.key_id, secret)
        }
        _ => "None".to_string(),
    };
    let code = format!(
        "/// The device key compiled in from `DRIFTLOG_KEY_FILE`: key id and secret.\n\
         pub(crate) const PROVISIONED_KEY: Option<(u32, [u8; 32])> = {key};\n"
    );
    fs::write(out.join("provisioned_key.rs"), code).expect("write the provisioned key");
}

fn parse_hex_key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("must be 64 hex digits, got {} characters", hex.len()));
    }
    let mut secret = [0u8; 32];
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16)
            .map_err(|_| format!("not a hex digit near position {}", 2 * index))?;
    }
    Ok(secret)
}
