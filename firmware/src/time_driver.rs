//! The embassy-time driver: SysTick interrupts every millisecond, and `now` adds the
//! microseconds elapsed in the current millisecond from the SysTick counter, so timestamps
//! (event times, frame send times) have microsecond resolution with a 1 kHz interrupt.
//!
//! No embassy HAL ships a driver for these boards (embassy-rs/embassy#786). A tickless driver
//! (SysTick programmed for the next deadline) would let QEMU skip idle time even faster, but
//! then a device second could pass in a fraction of a host millisecond and the protocol's
//! timers would fire long before any host could answer; the 1 kHz tick keeps QEMU's
//! speed-up within tens.

use core::cell::{Cell, RefCell};
use core::task::Waker;
use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

const MICROS_PER_TICK: u64 = 1_000;
const CYCLES_PER_TICK: u32 = crate::board::CORE_HZ / 1_000;
// `now_in` scales cycles into µs in 32 bits: exact for a whole number of kHz, and the
// product must fit.
const _: () = assert!(crate::board::CORE_HZ.is_multiple_of(1_000) && CYCLES_PER_TICK as u64 * 1_000 <= u32::MAX as u64);

struct SysTickDriver {
    /// Milliseconds since boot, counted by the SysTick handler.
    ticks: Mutex<Cell<u64>>,
    /// The earliest deadline in the queue, µs.
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts the 1 kHz SysTick interrupt.
pub fn start(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_TICK - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

impl SysTickDriver {
    fn now_in(&self, cs: CriticalSection<'_>) -> u64 {
        let mut ticks = self.ticks.borrow(cs).get();
        let mut current = SYST::get_current();
        // The counter may have wrapped while interrupts were masked: then its interrupt is
        // pending and the tick it stands for is not counted yet. Read the counter again after
        // seeing the pending bit, so both belong to the same millisecond.
        if cortex_m::peripheral::SCB::is_pendst_pending() {
            ticks += 1;
            current = SYST::get_current();
        }
        let elapsed_cycles = CYCLES_PER_TICK - 1 - current.min(CYCLES_PER_TICK - 1);
        // µs into this tick, in 32 bits (a tick is at most some 10^5 cycles, so the product
        // fits): a 64-bit division would be a library call on every clock read.
        ticks * MICROS_PER_TICK + u64::from(elapsed_cycles * 1_000 / CYCLES_PER_TICK)
    }

    fn on_tick(&self) {
        critical_section::with(|cs| {
            let ticks = self.ticks.borrow(cs);
            ticks.set(ticks.get() + 1);
            let now = ticks.get() * MICROS_PER_TICK;
            if now >= self.alarm.borrow(cs).get() {
                let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_in(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let next = queue.next_expiration(self.now_in(cs));
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

#[exception]
fn SysTick() {
    DRIVER.on_tick();
}
