//! `memcpy`, `memmove`, `memset` and `memcmp` (and the ARM EABI entry points the compiler
//! calls for them), one byte at a time, in place of compiler-builtins' word-at-a-time ones:
//! those are built for speed and took 3 KiB of flash, more than a tenth of the image. The
//! firmware copies frames of a few hundred bytes at most, so speed does not matter here.
//!
//! The loops go through volatile accesses so that the compiler cannot recognise them as a
//! copy and turn them back into a call to the function being defined (infinite recursion);
//! for the same reason nothing here calls `memcpy`, `memmove`, `memset` or `memcmp` by name
//! (the compiler treats such a call as the operation itself and may lower it to the
//! `__aeabi_*` entry point that made it): all of them call the private helpers.

use core::ptr::{read_volatile, write_volatile};

/// Copies `n` bytes forwards.
///
/// # Safety
/// `dest` and `src` are valid for `n` bytes; forwards copying may overlap only with
/// `dest <= src` (as `memmove` uses it).
unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: both ranges are valid for `n` bytes (the caller's contract).
        unsafe { write_volatile(dest.add(i), read_volatile(src.add(i))) };
        i += 1;
    }
}

/// Copies `n` bytes backwards (for an overlapping move to a higher address).
///
/// # Safety
/// As [`copy_forward`], with `dest >= src`.
unsafe fn copy_backward(dest: *mut u8, src: *const u8, n: usize) {
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: both ranges are valid for `n` bytes (the caller's contract).
        unsafe { write_volatile(dest.add(i), read_volatile(src.add(i))) };
    }
}

/// Moves `n` bytes; the ranges may overlap.
///
/// # Safety
/// Both ranges are valid for `n` bytes.
unsafe fn move_bytes(dest: *mut u8, src: *const u8, n: usize) {
    if (dest as usize) <= (src as usize) {
        // SAFETY: the caller's contract; forwards is safe when the destination is lower.
        unsafe { copy_forward(dest, src, n) };
    } else {
        // SAFETY: the caller's contract; backwards is safe when the destination is higher.
        unsafe { copy_backward(dest, src, n) };
    }
}

/// Sets `n` bytes to `value`.
///
/// # Safety
/// `dest` is valid for `n` bytes.
unsafe fn fill(dest: *mut u8, value: u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: `dest` is valid for `n` bytes (the caller's contract).
        unsafe { write_volatile(dest.add(i), value) };
        i += 1;
    }
}

/// # Safety
/// The C contract: both ranges valid for `n` bytes and not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { copy_forward(dest, src, n) };
    dest
}

/// # Safety
/// The C contract: both ranges valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { move_bytes(dest, src, n) };
    dest
}

/// # Safety
/// The C contract: `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, value as u8, n) };
    dest
}

/// # Safety
/// The C contract: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { compare(a, b, n) }
}

/// Compares `n` bytes: negative, zero or positive as the first difference says.
///
/// # Safety
/// Both ranges are valid for `n` bytes.
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: both ranges are valid for `n` bytes (the caller's contract).
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// The C contract: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { compare(a, b, n) }
}

// The ARM run-time ABI's entry points (RTABI §4.3.4): the compiler calls these for copies,
// moves and fills; `4`/`8` promise alignment, which a byte loop does not need. Note the
// argument order of `memset` (value last) and that `memclr` fills with zero.

/// # Safety
/// As [`memcpy`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memcpy(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { copy_forward(dest, src, n) };
}

/// # Safety
/// As [`memcpy`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memcpy4(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { copy_forward(dest, src, n) };
}

/// # Safety
/// As [`memcpy`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memcpy8(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { copy_forward(dest, src, n) };
}

/// # Safety
/// As [`memmove`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memmove(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { move_bytes(dest, src, n) };
}

/// # Safety
/// As [`memmove`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memmove4(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { move_bytes(dest, src, n) };
}

/// # Safety
/// As [`memmove`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memmove8(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { move_bytes(dest, src, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memset(dest: *mut u8, n: usize, value: i32) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, value as u8, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memset4(dest: *mut u8, n: usize, value: i32) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, value as u8, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memset8(dest: *mut u8, n: usize, value: i32) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, value as u8, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memclr(dest: *mut u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, 0, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memclr4(dest: *mut u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, 0, n) };
}

/// # Safety
/// As [`memset`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __aeabi_memclr8(dest: *mut u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe { fill(dest, 0, n) };
}
