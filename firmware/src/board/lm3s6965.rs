//! TI LM3S6965 (QEMU `lm3s6965evb`): UART0 is a PL011 at 0x4000_C000 on IRQ 5.

use super::{Irq, Register};

/// QEMU derives it from the reset value of RCC.SYSDIV: 200 MHz / 16. A real board running from
/// its PLL sets RCC first and changes this.
pub const CORE_HZ: u32 = 12_500_000;
pub const UART_IRQ: Irq = Irq(5);
/// Interrupt lines the vector table covers: up to UART0's.
pub const INTERRUPT_LINES: usize = 6;
pub const NAME: &str = "lm3s6965";

const UART0: usize = 0x4000_C000;
const DR: Register = Register(UART0);
const FR: Register = Register(UART0 + 0x18);
const IBRD: Register = Register(UART0 + 0x24);
const FBRD: Register = Register(UART0 + 0x28);
const LCRH: Register = Register(UART0 + 0x2C);
const CTL: Register = Register(UART0 + 0x30);
const IMSC: Register = Register(UART0 + 0x38);
const ICR: Register = Register(UART0 + 0x44);
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
/// Receive and receive-timeout interrupts.
const IMSC_RX: u32 = (1 << 4) | (1 << 6);

// System control and GPIO port A, which a real chip needs before UART0 works (QEMU accepts
// and ignores them).
const RCGC1: Register = Register(0x400F_E104);
const RCGC2: Register = Register(0x400F_E108);
const GPIOA_AFSEL: Register = Register(0x4000_4420);
const GPIOA_DEN: Register = Register(0x4000_451C);

pub const BAUD: u32 = 115_200;

pub fn uart_init() {
    RCGC1.write(RCGC1.read() | 1);
    RCGC2.write(RCGC2.read() | 1);
    GPIOA_AFSEL.write(GPIOA_AFSEL.read() | 0b11);
    GPIOA_DEN.write(GPIOA_DEN.read() | 0b11);
    CTL.write(0);
    // Baud divisor = CORE_HZ / (16 * BAUD), the fraction in 64ths.
    let divisor_64ths = (CORE_HZ * 4 + BAUD / 2) / BAUD;
    IBRD.write(divisor_64ths / 64);
    FBRD.write(divisor_64ths % 64);
    // 8 data bits, FIFOs on.
    LCRH.write(0x70);
    IMSC.write(IMSC_RX);
    // UART, transmitter and receiver enabled.
    CTL.write(0x301);
}

/// Blocks while the transmit FIFO is full.
pub fn uart_write(byte: u8) {
    while FR.read() & FR_TXFF != 0 {}
    DR.write(u32::from(byte));
}

/// The next received byte, if the receive FIFO holds one.
pub fn uart_read() -> Option<u8> {
    if FR.read() & FR_RXFE != 0 {
        return None;
    }
    // The upper bits are error flags (framing, parity, break, overrun): the frame MAC rejects
    // whatever a line error damaged, so the byte is passed on as it is.
    Some(DR.read() as u8)
}

/// Turns the receive interrupt on or off (off while the receive queue is full: the FIFO then
/// holds the bytes and the sender's flow control, or QEMU's, waits).
pub fn uart_rx_interrupt(enabled: bool) {
    IMSC.write(if enabled { IMSC_RX } else { 0 });
}

/// Clears the receive interrupt after the FIFO was drained.
pub fn uart_clear_interrupt() {
    ICR.write(IMSC_RX);
}
