//! A small deterministic random number generator (SplitMix64), so that every sampled crash
//! image can be reproduced from a seed.

/// SplitMix64: fast, seedable, good enough for choosing crash images.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator whose seed mixes `seed` with `parts` (for deriving independent streams).
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        Rng(mix(seed, parts))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Mixes `seed` with `parts` into a new seed.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut r = Rng(seed ^ 0x6A09_E667_F3BC_C908);
    let mut h = r.next_u64();
    for &p in parts {
        r.0 ^= p.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ h;
        h = r.next_u64();
    }
    h
}

/// A 64-bit hash of a string (FNV-1a), for deriving seeds from names.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
