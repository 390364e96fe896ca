//! The serial link: one datagram per COBS frame, each ending in a 0x00 byte.
//!
//! Receiving: the UART interrupt moves bytes into a bounded queue and wakes the agent; the
//! agent feeds them to a [`FrameDecoder`]. When the queue is full the interrupt is switched
//! off until the agent drained it, so the UART's own buffer (and on QEMU the host socket)
//! holds the rest: nothing is dropped in between. Sending blocks on the UART's transmit
//! buffer, a few milliseconds per frame at 115 200 baud.

use core::cell::RefCell;
use cortex_m::peripheral::NVIC;
use critical_section::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;

use crate::board;

/// Received bytes not yet decoded.
const RX_QUEUE_BYTES: usize = 512;

static RX_QUEUE: Mutex<RefCell<heapless::Deque<u8, RX_QUEUE_BYTES>>> = Mutex::new(RefCell::new(heapless::Deque::new()));
/// Raised by the interrupt when bytes arrived.
pub static RX_READY: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Sets the UART up and enables its receive interrupt.
pub fn start(nvic: &mut NVIC) {
    board::uart_init();
    // SAFETY: the handler below only touches the queue through a critical section.
    unsafe { NVIC::unmask(board::UART_IRQ) };
    let _ = nvic;
}

/// The interrupt: clears it first (a byte arriving during the drain raises it again), then
/// moves what the UART holds into the queue.
fn on_uart_interrupt() {
    board::uart_clear_interrupt();
    if critical_section::with(drain_uart) {
        RX_READY.signal(());
    }
}

/// Moves received bytes from the UART into the queue until either is empty or full; switches
/// the receive interrupt off while the queue is full. Returns whether it moved any.
fn drain_uart(cs: critical_section::CriticalSection<'_>) -> bool {
    let mut queue = RX_QUEUE.borrow(cs).borrow_mut();
    let mut received = false;
    while !queue.is_full() {
        let Some(byte) = board::uart_read() else { break };
        // Cannot fail: checked for room.
        let _ = queue.push_back(byte);
        received = true;
    }
    if queue.is_full() {
        board::uart_rx_interrupt(false);
    }
    received
}

/// Takes up to `out.len()` received bytes. Once there is room again it switches the receive
/// interrupt back on and pulls in what waited in the UART meanwhile: a UART that raises its
/// interrupt per arriving byte (the CMSDK one) would not raise it again for a byte that
/// arrived while it was off.
pub fn take_received(out: &mut [u8]) -> usize {
    critical_section::with(|cs| {
        let mut count = 0;
        {
            let mut queue = RX_QUEUE.borrow(cs).borrow_mut();
            while count < out.len() {
                let Some(byte) = queue.pop_front() else { break };
                out[count] = byte;
                count += 1;
            }
        }
        if count > 0 {
            board::uart_rx_interrupt(true);
            drain_uart(cs);
        }
        count
    })
}

unsafe extern "C" {
    /// cortex-m-rt's name for the handler below.
    fn DefaultHandler();
}

/// The external interrupt vectors, all into `DefaultHandler`, which finds the line from IPSR.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); board::INTERRUPT_LINES] =
    [DefaultHandler as unsafe extern "C" fn(); board::INTERRUPT_LINES];

#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == board::UART_IRQ.0 as i16 {
        on_uart_interrupt();
    }
}

/// Writes `datagram` as one COBS frame and its 0x00 terminator. Returns the bytes written.
pub fn send_frame(datagram: &[u8], scratch: &mut [u8]) -> usize {
    let Some(out) = scratch.get_mut(..cobs::max_encoding_length(datagram.len())) else { return 0 };
    let len = cobs::encode(datagram, out);
    for &byte in &out[..len] {
        board::uart_write(byte);
    }
    board::uart_write(0);
    len + 1
}

/// What one byte did to the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing complete yet.
    Pending,
    /// A frame of this many bytes is in [`FrameDecoder::frame`].
    Frame(usize),
    /// A frame ended that was not valid COBS; counted and dropped.
    BadFrame,
    /// A frame ended that was longer than the buffer; counted and dropped.
    Oversized,
}

/// Splits the byte stream at 0x00 and decodes each frame. `N` bounds a frame's encoded length:
/// a longer one is discarded up to its terminator.
pub struct FrameDecoder<const N: usize> {
    buf: heapless::Vec<u8, N>,
    overflowed: bool,
    /// Length of the decoded frame `buf` holds, until the next byte is fed.
    decoded_len: Option<usize>,
}

impl<const N: usize> FrameDecoder<N> {
    pub const fn new() -> Self {
        FrameDecoder { buf: heapless::Vec::new(), overflowed: false, decoded_len: None }
    }

    pub fn feed(&mut self, byte: u8) -> Decoded {
        if self.decoded_len.take().is_some() {
            self.buf.clear();
        }
        if byte != 0 {
            if self.buf.push(byte).is_err() {
                self.overflowed = true;
            }
            return Decoded::Pending;
        }
        let overflowed = core::mem::replace(&mut self.overflowed, false);
        if overflowed {
            self.buf.clear();
            return Decoded::Oversized;
        }
        if self.buf.is_empty() {
            // Two terminators in a row: a resynchronisation marker, not a frame.
            return Decoded::Pending;
        }
        let result = cobs::decode_in_place(&mut self.buf);
        match result {
            Ok(len) => {
                self.decoded_len = Some(len);
                Decoded::Frame(len)
            }
            Err(_) => {
                self.buf.clear();
                Decoded::BadFrame
            }
        }
    }

    /// The frame the last [`Decoded::Frame`] announced, until the next byte is fed.
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.decoded_len.unwrap_or(0).min(self.buf.len())]
    }
}
