//! The host side of a test run: the command line QEMU passes with `-append`, text reports on
//! the host's stdout, exit codes, and the panic handler. On a real board under a debug probe
//! the same calls go to the debugger; without one, a semihosting call would fault, so
//! production builds for boards without a probe attached should take `args` from flash
//! instead (see README).

use core::fmt::Write;

/// Everything produced was acknowledged (or tombstoned and acknowledged).
pub const EXIT_DONE: u32 = 0;
/// Missing or malformed boot arguments (no epoch, no key).
pub const EXIT_BAD_ARGUMENTS: u32 = 2;
/// The drain deadline passed with events still unacknowledged.
pub const EXIT_NOT_DRAINED: u32 = 3;
/// Start-up failed in a way that is a bug (peripherals taken twice, task pool full).
pub const EXIT_INTERNAL: u32 = 100;
/// A panic: the handler reports it first.
pub const EXIT_PANIC: u32 = 101;

/// Exits QEMU with `code` (semihosting `SYS_EXIT_EXTENDED`; QEMU 7.2 and 10 honour it).
pub fn exit(code: u32) -> ! {
    let block = [0x20026usize /* ADP_Stopped_ApplicationExit */, code as usize];
    // SAFETY: the parameter block outlives the call, which only reads it.
    unsafe { cortex_m_semihosting::syscall(0x20, &block) };
    loop {
        cortex_m::asm::bkpt();
    }
}

/// The arguments QEMU got with `-append`, written into `buf` (argv[0], the kernel path,
/// comes first, so the buffer must hold that too). Empty when the host gives none.
pub fn cmdline(buf: &mut [u8]) -> &str {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the host writes at most `buf.len()` bytes into `buf` and the length into
    // `block[1]`; the raw pointer (not a shared reference) tells the compiler it changes.
    let result = unsafe { cortex_m_semihosting::syscall1(0x15, block.as_mut_ptr() as usize) };
    // SAFETY: `block` is a live local.
    let len = unsafe { core::ptr::read_volatile(&block[1]) }.min(buf.len());
    if result != 0 {
        return "";
    }
    core::str::from_utf8(&buf[..len]).unwrap_or("").trim_end_matches('\0')
}

/// Writes one line to the host's stdout.
pub fn report(args: core::fmt::Arguments<'_>) {
    let mut line: heapless::String<320> = heapless::String::new();
    // A line longer than the buffer is cut, never a failure.
    let _ = line.write_fmt(args);
    let _ = line.push('\n');
    cortex_m_semihosting::hio::hstdout().map(|mut out| out.write_all(line.as_bytes())).ok();
}

#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => { $crate::semihosting::report(format_args!($($arg)*)) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    report(format_args!("driftlog-firmware: PANIC {info}"));
    exit(EXIT_PANIC)
}
