//! Code the benches share; each bench uses part of it.
#![allow(dead_code)]

pub(crate) mod collector;
pub(crate) mod cpu;
pub(crate) mod frames;
