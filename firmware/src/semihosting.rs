//! The host side of a test run: the command line QEMU passes with `-append`, text reports on
//! the host's stdout, exit codes, and the panic handler. On a real board under a debug probe
//! the same calls go to the debugger; without one, a semihosting call would fault, so
//! production builds for boards without a probe attached should take `args` from flash
//! instead (see README).

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
pub fn cmdline(buf: &mut [u8]) -> &[u8] {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the host writes at most `buf.len()` bytes into `buf` and the length into
    // `block[1]`; the raw pointer (not a shared reference) tells the compiler it changes.
    let result = unsafe { cortex_m_semihosting::syscall1(0x15, block.as_mut_ptr() as usize) };
    // SAFETY: `block` is a live local.
    let len = unsafe { core::ptr::read_volatile(&block[1]) }.min(buf.len());
    if result != 0 {
        return &[];
    }
    // Bytes, not `str`: UTF-8 validation and `str` splitting cost flash the words never need.
    let mut line = &buf[..len];
    while let [rest @ .., 0] = line {
        line = rest;
    }
    line
}

/// One report line on the host's stdout: `driftlog-firmware: WORD name=value ...`.
///
/// Built by hand rather than with `core::fmt`: the formatting machinery is a few KiB of flash
/// on a Cortex-M, for lines that hold only words and unsigned numbers. A line longer than the
/// buffer is cut, never a failure.
pub struct Line {
    buf: heapless::Vec<u8, 320>,
}

impl Line {
    pub fn new(word: &str) -> Line {
        let mut line = Line { buf: heapless::Vec::new() };
        line.push(b"driftlog-firmware: ");
        line.push(word.as_bytes());
        line
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.capacity() - self.buf.len();
        let _ = self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// ` text` (a word or a message).
    pub fn text(mut self, text: &str) -> Line {
        self.push(b" ");
        self.push(text.as_bytes());
        self
    }

    /// ` name=value`.
    pub fn field(mut self, name: &str, value: u64) -> Line {
        self.push(b" ");
        self.push(name.as_bytes());
        self.push(b"=");
        let mut digits = [0u8; 20];
        let mut len = 0;
        let mut rest = value;
        // Digit by digit from the highest power of ten, by subtraction: dividing a u64 is a
        // library routine on a 32-bit core (almost 1 KiB of flash), and a report line is rare.
        for exponent in (0..20).rev() {
            let power = 10u64.pow(exponent);
            let mut digit = b'0';
            while rest >= power {
                rest -= power;
                digit += 1;
            }
            if len > 0 || digit != b'0' || exponent == 0 {
                digits[len] = digit;
                len += 1;
            }
        }
        self.push(&digits[..len]);
        self
    }

    pub fn send(mut self) {
        self.push(b"\n");
        // No host attached (a board without a debugger) is no reason to stop.
        if let Ok(mut out) = cortex_m_semihosting::hio::hstdout() {
            let _ = out.write_all(&self.buf);
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    let mut line = Line::new("PANIC");
    if let Some(location) = info.location() {
        line = line.text(location.file()).field("line", u64::from(location.line()));
    }
    // A message with arguments would need `core::fmt`; the location finds it.
    line.text(info.message().as_str().unwrap_or("(message with arguments)")).send();
    exit(EXIT_PANIC)
}
