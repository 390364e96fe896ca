//! What differs between boards: UART0's registers and interrupt, and the core clock. Each
//! board module offers the same functions; the feature picks one.

#[cfg(all(feature = "board-lm3s6965", feature = "board-mps2-an386"))]
compile_error!("pick one board: build the MPS2-AN386 image with --no-default-features --features board-mps2-an386");
#[cfg(not(any(feature = "board-lm3s6965", feature = "board-mps2-an386")))]
compile_error!("pick a board feature: board-lm3s6965 (default) or board-mps2-an386");

#[cfg(feature = "board-lm3s6965")]
mod lm3s6965;
#[cfg(feature = "board-lm3s6965")]
pub use lm3s6965::*;

#[cfg(feature = "board-mps2-an386")]
mod mps2_an386;
#[cfg(feature = "board-mps2-an386")]
pub use mps2_an386::*;

/// An external interrupt line, for the NVIC (no PAC: this firmware names its two lines).
#[derive(Clone, Copy, Debug)]
pub struct Irq(pub u16);

// SAFETY: the numbers come from the board's datasheet (and QEMU's model of it).
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// A memory-mapped 32-bit register.
#[derive(Clone, Copy, Debug)]
struct Register(usize);

impl Register {
    fn read(self) -> u32 {
        // SAFETY: every `Register` is a UART or system-control address of this board.
        unsafe { core::ptr::read_volatile(self.0 as *const u32) }
    }

    fn write(self, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(self.0 as *mut u32, value) }
    }
}
