//! The driftlog firmware agent for Cortex-M microcontrollers.
//!
//! Samples sensors, keeps every reading in a RAM ring until the collector acknowledges it, and
//! sends it with the protocol's `Sender` over a UART, one COBS frame per datagram; a gateway
//! runs `driftlog-agent bridge` to carry the frames to the collector's UDP port and back.
//! No heap: every buffer is a static or a field with a const capacity.
//!
//! - [`args`]: boot arguments (epoch, key, how many events) from semihosting.
//! - [`board`]: UART registers, interrupt numbers and core clock per board.
//! - [`time_driver`]: the embassy-time driver on SysTick.
//! - [`ring`]: the RAM outbox, the protocol's `Backlog` (drop-oldest with tombstones).
//! - [`sensors`]: the `Sensor` trait and the simulated sensors.
//! - [`link`]: COBS framing over the UART, receive queue filled by the UART interrupt.
//! - [`agent`]: the loop that samples, sends, and handles ACKs and NAKs.
//! - [`semihosting`]: command line, reports, exit codes, the panic handler.
#![no_std]
#![no_main]

mod agent;
mod args;
mod board;
mod link;
mod mem;
mod ring;
mod semihosting;
mod sensors;
mod time_driver;

use core::sync::atomic::{AtomicBool, Ordering};
use embassy_executor::raw;

// The stock cortex-m executor sleeps with WFE, which QEMU runs as a no-op (100 % host CPU, and
// emulated time slower than wall time). This one sleeps with WFI: QEMU halts the vCPU, and with
// `-icount shift=auto,sleep=off` it skips the idle time, so device minutes pass in seconds.
static PENDING: AtomicBool = AtomicBool::new(true);

#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    PENDING.store(true, Ordering::Release);
}

#[embassy_executor::task]
async fn main_task() {
    let code = agent::run().await;
    semihosting::exit(code)
}

#[cortex_m_rt::entry]
fn main() -> ! {
    static mut EXECUTOR: Option<raw::Executor> = None;
    let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| semihosting::exit(semihosting::EXIT_INTERNAL));
    time_driver::start(&mut core.SYST);
    link::start(&mut core.NVIC);
    let executor: &'static raw::Executor = EXECUTOR.insert(raw::Executor::new(core::ptr::null_mut()));
    match main_task() {
        Ok(token) => executor.spawner().spawn(token),
        Err(_) => semihosting::exit(semihosting::EXIT_INTERNAL),
    }
    loop {
        // SAFETY: called from one context only, never re-entered.
        unsafe { executor.poll() };
        cortex_m::interrupt::free(|_| {
            if !PENDING.swap(false, Ordering::AcqRel) {
                // Interrupts are masked here, so a wake between the check and the WFI is not
                // lost: WFI still returns on the pending interrupt.
                cortex_m::asm::wfi();
            }
        });
    }
}
