//! CRC-32C by carry-less multiplication: the fold constants, and the arithmetic behind them.

// The crate's CRC-32C of a message `M` of `n` bits, continuing `crc`, is `!R` with
//
//     R = ((!crc) * x^n + M(x)) * x^32  mod P,      P = x^32 + 0x1EDC6F41 (Castagnoli),
//
// in *reflected* bit order: the first bit of the message (bit 0 of byte 0) is its highest power
// of x, and bit `i` of a 32-bit remainder is the coefficient of x^(31-i). The SSE4.2 `CRC32`
// instruction computes `R` directly from the register `!crc`, eight bytes at a time, but each
// step waits for the previous one.
//
// Folding (Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ
// Instruction", Intel, 2009) cuts that chain. A 16-byte block loaded into a vector register is
// the polynomial B = H * x^64 + L, with H its first eight bytes (the low quadword) and L the
// last eight (the high quadword). Only B's remainder matters, so a block followed by D more bits
// of message may be replaced by any block with the same value of B * x^D mod P, for instance
//
//     H * (x^(64+D) mod P)  +  L * (x^D mod P)
//
// whose degree is below 96: two carry-less multiplications and an XOR move a block D bits
// forward, where it is XORed into the block found there. Several accumulators a fixed distance
// apart fold independently; at the end they are folded onto the last one, and the remaining
// 16 bytes go through the `CRC32` instruction from a zero register (the CRC of those bytes
// followed by the rest equals the CRC of the whole message). The starting register `!crc` is
// XORed into the first four bytes of the first block, which turns "continue `crc`" into "start
// from zero".
//
// `PCLMULQDQ` multiplies bit `i` by bit `j` into bit `i + j`. With a 64-bit reflected operand
// (bit `i` = x^(63-i)) and a 32-bit reflected constant `c` in the low half (bit `j` = x^(31-j)),
// bit `k` of the product holds the coefficient of x^(94-k) of `H * c`; read as a reflected
// 128-bit block (bit `k` = x^(127-k)) that is `H * c * x^33`. So the constants are x^(D+31) mod P
// for H and x^(D-33) mod P for L ([`fold_pair`]).

/// The reflected CRC-32C polynomial: P without its x^32 term, bit `i` holding x^(31-i).
const CRC32C_POLY: u32 = 0x82F6_3B78;

/// `x^n mod P` in reflected form (bit `i` is the coefficient of x^(31-i)), bit by bit.
const fn xpow_mod_p(n: u32) -> u32 {
    let mut v: u32 = 1 << 31; // x^0
    let mut i = 0;
    while i < n {
        // Times x: every coefficient moves one bit down; the one of x^31 (bit 0) becomes x^32,
        // which is congruent to P - x^32.
        v = (v >> 1) ^ if v & 1 != 0 { CRC32C_POLY } else { 0 };
        i += 1;
    }
    v
}

/// The constants that fold a 16-byte block `bits` bits forward, in the order of the halves
/// they multiply: x^(bits+31) mod P for the first eight bytes, x^(bits-33) mod P for the last.
const fn fold_pair(bits: u32) -> [u64; 2] {
    [xpow_mod_p(bits + 31) as u64, xpow_mod_p(bits - 33) as u64]
}

/// Onto the next block.
pub(super) const FOLD_128: [u64; 2] = fold_pair(128);
/// Two and three blocks on: merging the four lanes of a 512-bit register.
pub(super) const FOLD_256: [u64; 2] = fold_pair(256);
pub(super) const FOLD_384: [u64; 2] = fold_pair(384);
/// One 64-byte group on: four 128-bit accumulators, or one lane of a 512-bit one.
pub(super) const FOLD_512: [u64; 2] = fold_pair(512);
/// 128 bytes on: four 256-bit accumulators.
pub(super) const FOLD_1024: [u64; 2] = fold_pair(1024);
/// 256 bytes on: four 512-bit accumulators.
pub(super) const FOLD_2048: [u64; 2] = fold_pair(2048);

#[cfg(test)]
mod tests {
    use super::*;

    /// x^n mod P the slow way, in plain bit order (bit `i` is x^i), then reflected.
    fn xpow_mod_p_plain(n: u32) -> u32 {
        const P: u64 = 0x1_1EDC_6F41;
        let mut v: u64 = 1;
        for _ in 0..n {
            v <<= 1;
            if v & (1 << 32) != 0 {
                v ^= P;
            }
        }
        (v as u32).reverse_bits()
    }

    #[test]
    fn fold_constants_match_a_bitwise_computation() {
        assert_eq!(CRC32C_POLY, 0x1EDC_6F41u32.reverse_bits());
        for (k, bits) in [
            (FOLD_128, 128),
            (FOLD_256, 256),
            (FOLD_384, 384),
            (FOLD_512, 512),
            (FOLD_1024, 1024),
            (FOLD_2048, 2048),
        ] {
            assert_eq!(k[0], xpow_mod_p_plain(bits + 31) as u64, "x^({bits}+31)");
            assert_eq!(k[1], xpow_mod_p_plain(bits - 33) as u64, "x^({bits}-33)");
        }
        // The CRC of a one bit followed by zeros is a power of x: a cross-check of the
        // reflected form against the crate (the register is zero for a seed of !0).
        for n in [0u32, 1, 7, 31, 32, 95, 159, 479, 543] {
            let mut msg = vec![0u8; n as usize / 8 + 1];
            msg[0] = 1; // x^(8 * len - 1)
            let raw = !crc32c::crc32c_append(!0, &msg);
            assert_eq!(raw, xpow_mod_p(8 * msg.len() as u32 - 1 + 32), "n {n}");
        }
    }
}
