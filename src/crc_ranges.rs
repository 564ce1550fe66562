//! Checksums of long ranges of one log image, each whole block of it read at most once.
//!
//! The search past a refused entry (`damage`) checks candidate entries at every 8-byte
//! position, and each candidate's checksum covers all the payload it claims. A payload made of
//! headers that each claim the rest of the file would cost a checksum of the rest at every
//! position: the square of its size. [`RangeCrcs`] makes every candidate cost its two partial
//! blocks (4 KiB each at most) and a combination or two per level of a tree of block
//! checksums, and reads each whole block of the image at most once, whatever the candidates
//! claim.
//!
//! CRC-32C is linear over GF(2): for byte strings A and B,
//! `crc(A ‖ B) = crc(A) · x^(8·|B|) ⊕ crc(B)` (mod the CRC polynomial), whatever the initial
//! and final inversions, which cancel. So the checksum of a long range is the checksums of its
//! blocks, combined in order, each combination one multiplication by a constant.

use std::collections::HashMap;

use crate::persist;

/// The CRC-32C polynomial in the register's reflected bit order (bit 31 is the coefficient of
/// x^0).
const POLY: u32 = 0x82F6_3B78;

/// `a · b mod P`, both in the reflected bit order.
fn mul(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        // b · x: a shift towards the low bits, reduced by P when x^31's coefficient falls out.
        b = (b >> 1) ^ (POLY & (b & 1).wrapping_neg());
        bit >>= 1;
    }
    product
}

/// `x^(8·n) mod P`: what multiplies a checksum to continue it over `n` bytes.
fn shift_of(n: usize) -> u32 {
    let mut power = 1u32 << 31; // x^0
    let mut square = 1u32 << 30; // x^1, then x^2, x^4, x^8 ...
    for _ in 0..3 {
        square = mul(square, square);
    }
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            power = mul(power, square);
        }
        square = mul(square, square);
        n >>= 1;
    }
    power
}

/// The checksum `crc32c_append(crc, b)` from `crc32c(b)` and `b`'s length.
#[cfg(test)]
fn continue_over(crc: u32, crc_of_b: u32, len_b: usize) -> u32 {
    mul(crc, shift_of(len_b)) ^ crc_of_b
}

/// Checksums of ranges of one image: `crc32c_append(crc, &image[a..b])` at a cost that does
/// not grow with `b - a` once the blocks under it have been read (see the module's text).
pub(crate) struct RangeCrcs<'a> {
    image: &'a [u8],
    /// The checksums of the tree's nodes computed so far: node `i` of level `j` covers blocks
    /// `i·2^j .. (i+1)·2^j`. Allocated at the first long range asked for (most images never
    /// need it).
    nodes: Nodes,
    /// Levels of the tree: level `j` has `blocks >> j` whole nodes.
    levels: usize,
    /// `shifts[j]`: `x^(8·2^j·BLOCK) mod P`, to continue a checksum over a node of level `j`.
    shifts: Vec<u32>,
    /// Bytes of the image checksummed so far.
    read: usize,
}

/// Where the nodes' checksums are kept.
enum Nodes {
    /// None asked for yet.
    None,
    /// Every node, for images of up to [`DENSE_BLOCKS`] blocks (at most 4 MiB).
    Dense(Vec<Vec<Option<u32>>>),
    /// The nodes computed, by level and index, for larger images: their memory follows what
    /// was read (up to about 1/60 of it: two nodes of 30-odd bytes per block), not the size
    /// of the image.
    Sparse(HashMap<(u8, usize), u32>),
}

/// Bytes per block: ranges shorter than two blocks are checksummed directly, and a range costs
/// at most two partial blocks.
const BLOCK: usize = 4096;
/// The most blocks an image has for its tree to be allocated whole (1 GiB).
const DENSE_BLOCKS: usize = 1 << 18;

impl<'a> RangeCrcs<'a> {
    pub(crate) fn new(image: &'a [u8]) -> Self {
        RangeCrcs {
            image,
            nodes: Nodes::None,
            levels: 0,
            shifts: Vec::new(),
            read: 0,
        }
    }

    /// `crc32c_append(crc, &image[a..b])`.
    pub(crate) fn append(&mut self, crc: u32, a: usize, b: usize) -> u32 {
        if b - a < 2 * BLOCK {
            self.read += b - a;
            return persist::crc32c_append(crc, &self.image[a..b]);
        }
        if matches!(self.nodes, Nodes::None) {
            self.build();
        }
        let (mut i, end) = (a.div_ceil(BLOCK), b / BLOCK);
        self.read += (i * BLOCK - a) + (b - end * BLOCK);
        let mut c = persist::crc32c_append(crc, &self.image[a..i * BLOCK]);
        while i < end {
            // The largest node that starts at block `i` and ends by `end`.
            let mut j = (i.trailing_zeros() as usize).min(self.levels - 1);
            while i + (1 << j) > end {
                j -= 1;
            }
            c = mul(c, self.shifts[j]) ^ self.node(j, i >> j);
            i += 1 << j;
        }
        persist::crc32c_append(c, &self.image[end * BLOCK..b])
    }

    /// The tree's levels, without any checksum yet.
    fn build(&mut self) {
        let blocks = self.image.len() / BLOCK;
        let mut shift = shift_of(BLOCK);
        let mut n = blocks;
        while n > 0 {
            self.shifts.push(shift);
            shift = mul(shift, shift);
            n /= 2;
        }
        self.levels = self.shifts.len();
        self.nodes = if blocks <= DENSE_BLOCKS {
            Nodes::Dense((0..self.levels).map(|j| vec![None; blocks >> j]).collect())
        } else {
            Nodes::Sparse(HashMap::new())
        };
    }

    /// The checksum of node `i` of level `j`, read or combined once.
    fn node(&mut self, j: usize, i: usize) -> u32 {
        let known = match &self.nodes {
            Nodes::Dense(levels) => levels[j][i],
            Nodes::Sparse(map) => map.get(&(j as u8, i)).copied(),
            Nodes::None => None,
        };
        if let Some(c) = known {
            return c;
        }
        let c = if j == 0 {
            let at = i * BLOCK;
            self.read += BLOCK;
            persist::crc32c_append(0, &self.image[at..at + BLOCK])
        } else {
            let left = self.node(j - 1, 2 * i);
            let right = self.node(j - 1, 2 * i + 1);
            mul(left, self.shifts[j - 1]) ^ right
        };
        match &mut self.nodes {
            Nodes::Dense(levels) => levels[j][i] = Some(c),
            Nodes::Sparse(map) => {
                map.insert((j as u8, i), c);
            }
            Nodes::None => unreachable!("built before the first node"),
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` bytes that look random enough for checksums (the top byte of a multiplicative hash).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        (0..n as u64)
            .map(|i| ((i ^ seed << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }

    #[test]
    fn combining_matches_the_crate() {
        let data = bytes(10_000, 7);
        for (a, b) in [(0, 0), (0, 1), (3, 4000), (100, 10_000), (0, 10_000)] {
            let (x, y) = data[..b].split_at(a);
            let seed = 0x1234_5678;
            assert_eq!(
                continue_over(crc32c::crc32c_append(seed, x), crc32c::crc32c(y), y.len()),
                crc32c::crc32c_append(seed, &data[..b]),
                "{a}..{b}"
            );
            assert_eq!(
                continue_over(crc32c::crc32c(x), crc32c::crc32c(y), y.len()),
                crc32c::crc32c_combine(crc32c::crc32c(x), crc32c::crc32c(y), y.len()),
            );
        }
    }

    #[test]
    fn ranges_match_a_direct_checksum() {
        let data = bytes(3 * 65536 + 1234, 11);
        let mut crcs = RangeCrcs::new(&data);
        let mut x = 99u64;
        let mut next = |m: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % m
        };
        // Short and long ranges, in any order, block edges included; asked again after the
        // tree has been filled.
        let mut cases = vec![
            (0, data.len()),
            (4096, 8192),
            (4095, 12289),
            (8192, data.len()),
        ];
        for _ in 0..300 {
            let a = next(data.len());
            let b = a + next(data.len() - a + 1);
            cases.push((a, b));
        }
        for round in 0..2 {
            for &(a, b) in &cases {
                let seed = (a * 31 + b) as u32;
                assert_eq!(
                    crcs.append(seed, a, b),
                    crc32c::crc32c_append(seed, &data[a..b]),
                    "{a}..{b}, round {round}"
                );
            }
        }
    }

    /// Ranges that all run to the end, from every 24th byte (a payload of headers that each
    /// claim the rest): each block is read once, plus at most two partial blocks per range.
    #[test]
    fn each_block_is_read_once() {
        let data = bytes(4 << 20, 3);
        let mut crcs = RangeCrcs::new(&data);
        let mut ranges = 0;
        for a in (0..data.len()).step_by(24) {
            let got = crcs.append(5, a, data.len());
            if a % (1 << 20) == 0 {
                assert_eq!(got, crc32c::crc32c_append(5, &data[a..]), "{a}");
            }
            ranges += 1;
        }
        assert!(
            crcs.read <= data.len() + ranges * 2 * BLOCK,
            "{} bytes read for {ranges} ranges",
            crcs.read
        );
        // About 90 times the image here (the partial blocks); directly, the sum of the
        // ranges, about 87,000 times.
        assert!(crcs.read < 200 * data.len(), "{}", crcs.read);
    }

    /// Past 1 GiB the nodes are kept sparse: the same checksums, with memory for what was
    /// read only. (A 3 GiB image, of which only the pages ranges touch are ever read: the
    /// rest of the mapping stays unpopulated.)
    #[test]
    fn a_large_image_keeps_only_the_nodes_it_read() {
        let len = 3usize << 30;
        // SAFETY: an anonymous private mapping of `len` bytes, read only by this test, which
        // unmaps it at the end; untouched pages read as zeros.
        let image = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::slice::from_raw_parts_mut(p.cast::<u8>(), len)
        };
        let data = bytes(1 << 20, 5);
        let at = (2usize << 30) + 12_345;
        image[at..at + data.len()].copy_from_slice(&data);
        let image = &*image;
        let mut crcs = RangeCrcs::new(image);
        for (a, b) in [
            (at, at + data.len()),
            (at - 5000, at + 700_000),
            (at + 24, at + 999_000),
        ] {
            assert_eq!(
                crcs.append(9, a, b),
                crc32c::crc32c_append(9, &image[a..b]),
                "{a}..{b}"
            );
        }
        let Nodes::Sparse(map) = &crcs.nodes else {
            panic!("a dense tree for a 3 GiB image");
        };
        assert!(
            map.len() < 2 * (1 << 20) / BLOCK + 64,
            "{} nodes",
            map.len()
        );
        assert!(crcs.read < 2 << 20, "{} bytes read", crcs.read);
        // SAFETY: the mapping made above; no slice into it is used after this.
        unsafe { libc::munmap(image.as_ptr() as *mut libc::c_void, len) };
    }
}
