//! ARM MPS2 AN386 (QEMU `mps2-an386`): UART0 is a CMSDK APB UART at 0x4000_4000; its receive
//! interrupt is IRQ 0 (transmit is IRQ 1).

use super::{Irq, Register};

pub const CORE_HZ: u32 = 25_000_000;
pub const UART_IRQ: Irq = Irq(0);
/// Interrupt lines the vector table covers: UART0's receive and transmit.
pub const INTERRUPT_LINES: usize = 2;
pub const NAME: &str = "mps2-an386";

const UART0: usize = 0x4000_4000;
const DATA: Register = Register(UART0);
const STATE: Register = Register(UART0 + 0x04);
const CTRL: Register = Register(UART0 + 0x08);
const INTCLEAR: Register = Register(UART0 + 0x0C);
const BAUDDIV: Register = Register(UART0 + 0x10);
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_ENABLE: u32 = 1 << 0;
const CTRL_RX_ENABLE: u32 = 1 << 1;
const CTRL_RX_INTERRUPT: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;

pub const BAUD: u32 = 115_200;

pub fn uart_init() {
    // QEMU drops transmitted bytes while BAUDDIV is below 16.
    BAUDDIV.write(CORE_HZ / BAUD);
    CTRL.write(CTRL_TX_ENABLE | CTRL_RX_ENABLE | CTRL_RX_INTERRUPT);
}

/// Blocks while the transmit buffer is full.
pub fn uart_write(byte: u8) {
    while STATE.read() & STATE_TX_FULL != 0 {}
    DATA.write(u32::from(byte));
}

/// The received byte, if the receive buffer holds one.
pub fn uart_read() -> Option<u8> {
    if STATE.read() & STATE_RX_FULL == 0 {
        return None;
    }
    Some(DATA.read() as u8)
}

/// Turns the receive interrupt on or off (off while the receive queue is full).
pub fn uart_rx_interrupt(enabled: bool) {
    let ctrl = CTRL_TX_ENABLE | CTRL_RX_ENABLE;
    CTRL.write(if enabled { ctrl | CTRL_RX_INTERRUPT } else { ctrl });
}

/// Clears the receive interrupt after the buffer was drained.
pub fn uart_clear_interrupt() {
    INTCLEAR.write(INT_RX);
}
