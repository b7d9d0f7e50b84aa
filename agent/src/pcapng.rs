//! A small pcapng writer: one section, one interface, Enhanced Packet Blocks with nanosecond
//! timestamps. Little-endian, as Wireshark and tshark read on any machine.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.extend(std::iter::repeat_n(0u8, pad4(value.len())));
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

/// The section header and interface description that start every file.
pub fn file_header(linktype: u16, snaplen: u32, interface: &str, app: &str) -> Vec<u8> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    option(&mut shb, 4, app.as_bytes()); // shb_userappl
    option(&mut shb, 0, &[]);
    let mut idb = Vec::new();
    idb.extend_from_slice(&linktype.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    option(&mut idb, 2, interface.as_bytes()); // if_name
    option(&mut idb, 9, &[9]); // if_tsresol: 10^-9 s
    option(&mut idb, 0, &[]);
    let mut out = block(SHB, &shb);
    out.extend(block(IDB, &idb));
    out
}

/// Size on disk of the block for a frame of `caplen` bytes.
pub fn packet_block_len(caplen: usize) -> usize {
    32 + caplen + pad4(caplen)
}

/// Writes one Enhanced Packet Block.
pub fn write_packet(
    w: &mut impl Write,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
) -> io::Result<usize> {
    let total = packet_block_len(data.len());
    let mut head = [0u8; 28];
    head[0..4].copy_from_slice(&EPB.to_le_bytes());
    head[4..8].copy_from_slice(&(total as u32).to_le_bytes());
    // interface 0
    head[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    head[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
    head[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    head[24..28].copy_from_slice(&orig_len.to_le_bytes());
    w.write_all(&head)?;
    w.write_all(data)?;
    w.write_all(&[0u8; 3][..pad4(data.len())])?;
    w.write_all(&(total as u32).to_le_bytes())?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_lengths_match() {
        let h = file_header(113, 262_144, "any", "whisperer test");
        assert_eq!(h.len() % 4, 0);
        let shb_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        assert_eq!(&h[shb_len - 4..shb_len], &h[4..8]);
        let mut out = Vec::new();
        let n =
            write_packet(&mut out, 1_700_000_000_123_456_789, &[1, 2, 3, 4, 5], 60).expect("write");
        assert_eq!(n, out.len());
        assert_eq!(n, packet_block_len(5));
        assert_eq!(n % 4, 0);
        assert_eq!(&out[n - 4..], &(n as u32).to_le_bytes());
    }
}
