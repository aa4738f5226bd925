static XDP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sipauth-xdp"));
fn main() { println!("{}", XDP.len()); }
