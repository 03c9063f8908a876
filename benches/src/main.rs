#![allow(dead_code)]
mod payload;
fn main() {}
