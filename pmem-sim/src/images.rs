//! The crash-image generator: which durable images a power failure could leave.
//!
//! The pending pieces of a [`PmemState`] are grouped into *units* whose fate is independent, per
//! [`Model`]: one unit per word (`Strict`, and non-temporal words under `Line`), per cache line
//! (`Line`) or per page (`Msync`). Within a unit the pieces reach the media in program order, so
//! a unit with `k` pending pieces has `k + 1` possible outcomes: the first `j` persisted, for
//! `j` in `0..=k`. An image is one choice per unit.
//!
//! When the product of the outcome counts is at most [`GenConfig::exhaustive_limit`] every
//! image is produced. Otherwise a deterministic selection is: nothing and everything; every unit
//! alone missing (or cut short) and every unit alone present; every program-order prefix of all
//! the pending pieces; with at most [`GenConfig::pairs`] units, every pair of units missing
//! together and present together; all-or-nothing per cache line; and a seeded random sample.
//!
//! The reader area's published LSN and vouched word ([`crate::Op::Publish`]) are the exception.
//! They are stored at every publication and flushed by no append, so their pending stores grow
//! with the run: as units they would multiply every crash point's images by the appends made
//! so far. They are *side words* instead, one unit whose pieces persist in program order (two
//! words of one cache line: what a line leaves). Of their possible values (the durable one, or
//! that of any prefix of their pending stores), taken as the published LSN and then what the
//! pair vouches for (`daxlog::format::vouched`), the lowest and the highest give the extremes
//! of what recovery does (it compares them with the log's LSNs: FORMAT.md section 7, rule 4,
//! a clean end below the published LSN with published entries past it is damage, rule 1, an
//! end below the vouched LSN is damage; a writable open syncs again from the published LSN
//! when it lies at or below the cut), so every image takes one of those two. (Recovery's
//! judgements only get stricter as either value rises, and a mix of the two words' stores
//! that no line leaves vouches for no more than the smaller of their values.) Where the
//! images with both values number at most [`GenConfig::both_limit`], every image of the other
//! units comes with each; above, each takes one of the two, chosen by a hash of the other
//! units' outcomes (deterministic, so that a replay gets the same images, and both values
//! occur at such a crash point).
//!
//! (A published LSN of 0 says that no writer published: the lowest possible value is 0 where
//! the word never reached the media, in the CPU modes nearly always, and a recovery that reads
//! it syncs again from the cut, as for a writer that published everything. An older non-zero
//! value, which real media would more often hold, is not taken: recovery's other use of the
//! word, rule 4, only gets stricter as it rises.)

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{Model, Piece, PmemState, CACHE_LINE, WORD};
use crate::rng::Rng;

/// How many images to produce at one crash point.
#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    /// Enumerate every image when there are at most this many.
    pub exhaustive_limit: u64,
    /// Random images when sampling.
    pub random: usize,
    /// Cap on the random subsets of cache lines when sampling (all subsets are taken up to 6
    /// lines). Units alone missing and alone present, and program-order prefixes, are never
    /// capped.
    pub structured: usize,
    /// Up to this many units, every pair of units missing together and present together is
    /// added to a sample.
    pub pairs: usize,
    /// Where the images with both the lowest and the highest possible published LSN number at
    /// most this many, every image is taken with each; above, with one of them.
    pub both_limit: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            exhaustive_limit: 1 << 14,
            random: 64,
            structured: 64,
            pairs: 32,
            both_limit: 64,
        }
    }
}

/// A multiply-rotate hasher for unit keys (small integers): much cheaper than SipHash.
#[derive(Default)]
struct FastHash(u64);

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Unit {
    Word(usize),
    Line(usize),
    Page(usize),
}

impl Unit {
    fn describe(self) -> String {
        match self {
            Unit::Word(w) => format!("word@{}", w * WORD),
            Unit::Line(l) => format!("line@{}", l * CACHE_LINE),
            Unit::Page(p) => format!("page@{}", p * crate::model::PAGE),
        }
    }
}

/// The first word of the reader area's published LSN and vouched word (`daxlog::format`'s
/// `PUBLISHED_OFFSET`, `VOUCHED_OFFSET`: two words of one cache line).
const SIDE_WORD: usize = daxlog::format::PUBLISHED_OFFSET / WORD;
const _: () = assert!(daxlog::format::VOUCHED_OFFSET == daxlog::format::PUBLISHED_OFFSET + WORD);

/// The unit index of the side words' pieces in [`CrashImages::place`].
const SIDE: u32 = u32::MAX;

/// The side words' outcomes: how many of their pending pieces persisted, for the lowest
/// possible value and the highest. A value is the published LSN and what the pair vouches for
/// (`daxlog::format::vouched`), compared in that order.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    /// Pending pieces of the words.
    pieces: u32,
    lo: u32,
    hi: u32,
    /// The values themselves.
    values: ((u64, u64), (u64, u64)),
    /// Every image comes with both (else each with one).
    both: bool,
}

/// The value of the side words `w` (published LSN, vouched LSN).
fn side_value(w: &[u8; 2 * WORD]) -> (u64, u64) {
    let a = u64::from_le_bytes(w[..WORD].try_into().expect("a word"));
    let b = u64::from_le_bytes(w[WORD..].try_into().expect("a word"));
    (a, daxlog::format::vouched(a, b))
}

impl Side {
    /// True if the two extremes differ (else the word's outcome is fixed at `hi`).
    fn varies(&self) -> bool {
        self.values.0 != self.values.1
    }

    /// The outcome for an image whose other units' outcomes are `rest` when each image takes
    /// one value: by a hash of `rest` without its trailing zeros. Deterministic (a replay
    /// gets the same image; the image's bytes would not do, as they hold the log's random
    /// salt and epochs), and the same from one crash point to the next while only stores come
    /// between them (their pieces come last, so an image recurs with the same outcomes and
    /// zeros after them), so that the duplicates of an image are recognised.
    fn by_choice(&self, rest: &[u32]) -> u32 {
        let n = rest.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        let mut h: u64 = 0x5eed;
        for &c in &rest[..n] {
            h = (h ^ c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        }
        if self.varies() && (h ^ (h >> 32)) & 1 == 1 {
            self.lo
        } else {
            self.hi
        }
    }
}

/// The possible durable images at one crash point (see the module documentation).
pub struct CrashImages<'a> {
    state: &'a PmemState,
    /// For each pending piece, in program order: its unit and its rank in the unit ([`SIDE`]
    /// and its rank among the published word's pieces for those).
    place: Vec<(u32, u32)>,
    side: Side,
    /// Pieces per unit.
    sizes: Vec<u32>,
    units: Vec<Unit>,
    /// The number of images when enumerating them all.
    exhaustive: Option<u64>,
    sampled: Vec<Vec<u32>>,
}

impl PmemState {
    /// The durable images a crash right now could leave, under `model`. `seed` drives the
    /// random sample (used only when there are too many images to enumerate).
    pub fn crash_images(&self, model: Model, cfg: &GenConfig, seed: u64) -> CrashImages<'_> {
        let mut ci = self.units(model, cfg.exhaustive_limit, cfg.both_limit);
        if ci.exhaustive.is_none() {
            ci.sampled = ci.sample(cfg, seed);
        }
        ci
    }

    /// All the outcomes under `model`, without enumerating or sampling them: for drawing single
    /// random images cheaply with [`CrashImages::random_choice`].
    pub fn crash_units(&self, model: Model) -> CrashImages<'_> {
        self.units(model, 0, 0)
    }

    fn units(&self, model: Model, exhaustive_limit: u64, both_limit: u64) -> CrashImages<'_> {
        let mut index: HashMap<Unit, u32, BuildHasherDefault<FastHash>> = HashMap::default();
        let mut units = Vec::new();
        let mut sizes: Vec<u32> = Vec::new();
        let mut place = Vec::with_capacity(self.pending().len());
        let at = SIDE_WORD * WORD;
        // (An image too small to hold the words has no pieces of them either.)
        let mut words: [u8; 2 * WORD] = self
            .durable()
            .get(at..at + 2 * WORD)
            .map_or([0; 2 * WORD], |w| w.try_into().expect("two words"));
        let first = side_value(&words);
        let mut side = Side {
            values: (first, first),
            ..Side::default()
        };
        for p in self.pending() {
            if p.word == SIDE_WORD || p.word == SIDE_WORD + 1 {
                place.push((SIDE, side.pieces));
                side.pieces += 1;
                let base = (p.word - SIDE_WORD) * WORD;
                for (i, b) in words[base..base + WORD].iter_mut().enumerate() {
                    if p.mask & (1 << i) != 0 {
                        *b = p.bytes[i];
                    }
                }
                let v = side_value(&words);
                if v < side.values.0 {
                    (side.lo, side.values.0) = (side.pieces, v);
                }
                if v > side.values.1 {
                    (side.hi, side.values.1) = (side.pieces, v);
                }
                continue;
            }
            let key = unit_of(model, p);
            let u = *index.entry(key).or_insert_with(|| {
                units.push(key);
                sizes.push(0);
                (units.len() - 1) as u32
            });
            place.push((u, sizes[u as usize]));
            sizes[u as usize] += 1;
        }
        let mut total: u64 = 1;
        for &s in &sizes {
            total = total.saturating_mul(s as u64 + 1);
            if total > exhaustive_limit {
                break;
            }
        }
        side.both = side.varies() && total.saturating_mul(2) <= both_limit.min(exhaustive_limit);
        if side.both {
            total *= 2;
        }
        CrashImages {
            state: self,
            place,
            side,
            sizes,
            units,
            exhaustive: (total <= exhaustive_limit).then_some(total),
            sampled: Vec::new(),
        }
    }
}

/// A random outcome for a unit of `s` pieces: uniform (kind 0), mostly all (1), mostly none
/// (2), all or none (3).
fn random_outcome(rng: &mut Rng, kind: u64, s: u32) -> u32 {
    let s64 = s as u64;
    match kind {
        1 if rng.chance(7, 8) => s,
        2 if rng.chance(7, 8) => 0,
        3 => {
            if rng.chance(1, 2) {
                s
            } else {
                0
            }
        }
        _ => rng.below(s64 + 1) as u32,
    }
}

fn unit_of(model: Model, p: &Piece) -> Unit {
    match model {
        Model::Strict => Unit::Word(p.word),
        // Write-combining buffers drain in any order, word by word.
        Model::Line | Model::Msync if p.nt => Unit::Word(p.word),
        Model::Line => Unit::Line(p.line()),
        Model::Msync => Unit::Page(p.page()),
    }
}

impl CrashImages<'_> {
    /// A random image's outcomes: drawn like the random part of a sample (uniform, mostly
    /// persisted, mostly lost, or all-or-nothing per unit), or one unit alone persisted or
    /// alone lost.
    pub fn random_choice(&self, rng: &mut Rng) -> Vec<u32> {
        let n = self.sizes.len();
        let mut c: Vec<u32> = match rng.below(6) {
            4 if n > 0 => {
                let u = rng.below(n as u64) as usize;
                (0..n)
                    .map(|v| if v == u { self.sizes[v] } else { 0 })
                    .collect()
            }
            5 if n > 0 => {
                let u = rng.below(n as u64) as usize;
                (0..n)
                    .map(|v| if v == u { 0 } else { self.sizes[v] })
                    .collect()
            }
            kind => self
                .sizes
                .iter()
                .map(|&s| random_outcome(rng, kind, s))
                .collect(),
        };
        c.push(if rng.chance(1, 2) {
            self.side.lo
        } else {
            self.side.hi
        });
        c
    }

    /// The image of the outcomes `choice` (one per unit).
    pub fn image_of(&self, choice: &[u32]) -> Vec<u8> {
        let mut v = Vec::new();
        self.build(choice, &mut v);
        v
    }

    /// What the outcomes `choice` leave out.
    pub fn describe_of(&self, choice: &[u32]) -> String {
        self.describe_choice(choice, "random")
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self.exhaustive {
            Some(n) => n as usize,
            None => self.sampled.len(),
        }
    }

    /// True if there is no image (never: there is always at least the durable one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the images are all the possible ones, false if they are a sample.
    pub fn is_exhaustive(&self) -> bool {
        self.exhaustive.is_some()
    }

    /// True if every image comes with both the lowest and the highest possible published LSN
    /// (else each with one of them).
    pub fn takes_both_published(&self) -> bool {
        self.side.both
    }

    /// Number of independent units (words, lines or pages with pending stores).
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// The outcome of every unit in image `i`: how many of its pieces persisted (and last,
    /// how many of the published word's).
    pub fn choice(&self, i: usize) -> Vec<u32> {
        let (mut c, side) = match self.exhaustive {
            Some(n) => {
                assert!((i as u64) < n, "image index out of range");
                let mut rest = i as u64;
                let side = if self.side.both {
                    rest /= 2;
                    Some(if i % 2 == 1 {
                        self.side.lo
                    } else {
                        self.side.hi
                    })
                } else {
                    None
                };
                let c: Vec<u32> = self
                    .sizes
                    .iter()
                    .map(|&s| {
                        let r = s as u64 + 1;
                        let c = rest % r;
                        rest /= r;
                        c as u32
                    })
                    .collect();
                (c, side)
            }
            None => (self.sampled[i].clone(), None),
        };
        c.push(side.unwrap_or_else(|| self.side.by_choice(&c)));
        c
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> Vec<u8> {
        let mut v = Vec::new();
        self.image_into(i, &mut v);
        v
    }

    /// Image `i`, written into `buf` (replacing its contents).
    pub fn image_into(&self, i: usize, buf: &mut Vec<u8>) {
        let choice = self.choice(i);
        self.build(&choice, buf);
    }

    /// Builds the image of `choice` into `buf`.
    fn build(&self, choice: &[u32], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.state.durable());
        let side = choice[self.sizes.len()];
        for (p, &(u, rank)) in self.state.pending().iter().zip(&self.place) {
            let persisted = if u == SIDE { side } else { choice[u as usize] };
            if rank < persisted {
                p.apply(buf);
            }
        }
    }

    /// What image `i` leaves out: the units not wholly persisted, with how many of their
    /// pending stores did persist.
    pub fn describe(&self, i: usize) -> String {
        let kind = if self.is_exhaustive() {
            "exhaustive"
        } else {
            "sampled"
        };
        let d = self.describe_choice(&self.choice(i), kind);
        format!("image {i}/{} {d}", self.len())
    }

    fn describe_choice(&self, choice: &[u32], kind: &str) -> String {
        let partial: Vec<String> = self
            .units
            .iter()
            .zip(&self.sizes)
            .zip(choice)
            .filter(|((_, &s), &c)| c < s)
            .map(|((u, s), c)| format!("{} {c}/{s}", u.describe()))
            .collect();
        let side = &self.side;
        let published = if side.varies() {
            let (which, (p, v)) = if choice[self.sizes.len()] == side.lo {
                ("lowest", side.values.0)
            } else {
                ("highest", side.values.1)
            };
            let ((p0, v0), (p1, v1)) = side.values;
            format!("; published LSN {p}, vouched {v} ({which} of {p0}/{v0}..={p1}/{v1})")
        } else {
            String::new()
        };
        if partial.is_empty() {
            return format!("({kind}): every pending store persisted{published}");
        }
        let shown = partial.len().min(16);
        let more = if partial.len() > shown {
            format!(" and {} more", partial.len() - shown)
        } else {
            String::new()
        };
        format!(
            "({kind}), {} units pending, not (wholly) persisted: {}{more}{published}",
            self.units.len(),
            partial[..shown].join(", ")
        )
    }

    fn sample(&self, cfg: &GenConfig, seed: u64) -> Vec<Vec<u32>> {
        let mut rng = Rng::new(seed);
        let n = self.units.len();
        let full = self.sizes.clone();
        let zero = vec![0u32; n];
        let mut seen: HashSet<Vec<u32>> = HashSet::new();
        let mut out = Vec::new();
        let mut push = |c: Vec<u32>| {
            if seen.insert(c.clone()) {
                out.push(c);
            }
        };
        push(full.clone());
        push(zero.clone());
        // Each unit alone missing (or cut short), and each unit alone present: every unit.
        for u in 0..n {
            let mut c = full.clone();
            c[u] = 0;
            push(c.clone());
            if full[u] > 1 {
                c[u] = 1 + rng.below(full[u] as u64 - 1) as u32;
                push(c);
            }
            let mut c = zero.clone();
            c[u] = full[u];
            push(c);
        }
        // Every program-order prefix of all pending pieces.
        let mut c = zero.clone();
        push(c.clone());
        for &(u, _) in self.place.iter().filter(|&&(u, _)| u != SIDE) {
            c[u as usize] += 1;
            push(c.clone());
        }
        // Every two units missing together, and present together (a few lines' worth).
        if n <= cfg.pairs {
            for a in 0..n {
                for b in a + 1..n {
                    let mut c = full.clone();
                    c[a] = 0;
                    c[b] = 0;
                    push(c);
                    let mut c = zero.clone();
                    c[a] = full[a];
                    c[b] = full[b];
                    push(c);
                }
            }
        }
        // All or nothing per cache line.
        let mut line_of: Vec<usize> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, &(u, rank)) in self.place.iter().enumerate() {
            if rank == 0 && u != SIDE {
                let l = self.state.pending()[i].line();
                let li = match lines.iter().position(|&x| x == l) {
                    Some(li) => li,
                    None => {
                        lines.push(l);
                        lines.len() - 1
                    }
                };
                debug_assert_eq!(line_of.len(), u as usize);
                line_of.push(li);
            }
        }
        if lines.len() > 1 {
            let subsets: Vec<u64> = if lines.len() <= 6 {
                (0..1u64 << lines.len()).collect()
            } else {
                (0..cfg.structured).map(|_| rng.next_u64()).collect()
            };
            for bits in subsets {
                let pick = |li: usize| (bits >> (li % 64)) & 1 == 1;
                let c: Vec<u32> = (0..n)
                    .map(|u| if pick(line_of[u]) { full[u] } else { 0 })
                    .collect();
                push(c);
            }
        }
        // Random images: uniform, mostly persisted, mostly lost, all or nothing per unit.
        for r in 0..cfg.random {
            let c: Vec<u32> = (0..n)
                .map(|u| random_outcome(&mut rng, r as u64 % 4, full[u]))
                .collect();
            push(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use daxlog::Persistence;

    fn state_with(stores: &[(usize, usize)], nt: bool) -> PmemState {
        let mut s = PmemState::new(vec![0; 8192], Persistence::Clwb);
        for &(off, len) in stores {
            let data = vec![0xaa; len];
            s.apply(&if nt {
                Op::StoreNt { off, data }
            } else {
                Op::Store { off, data }
            });
        }
        s
    }

    #[test]
    fn strict_enumerates_every_subset_of_words() {
        let s = state_with(&[(0, 24)], false);
        let imgs = s.crash_images(Model::Strict, &GenConfig::default(), 1);
        assert!(imgs.is_exhaustive());
        assert_eq!(imgs.len(), 8);
        let distinct: HashSet<Vec<u8>> = (0..imgs.len()).map(|i| imgs.image(i)).collect();
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn repeated_stores_to_a_word_persist_in_order() {
        // Two pieces of one word: nothing, the first, or both.
        let mut s = PmemState::new(vec![0; 64], Persistence::Clwb);
        s.apply(&Op::Store {
            off: 0,
            data: vec![1; 8],
        });
        s.apply(&Op::Store {
            off: 0,
            data: vec![2; 4],
        });
        let imgs = s.crash_images(Model::Strict, &GenConfig::default(), 1);
        let got: HashSet<Vec<u8>> = (0..imgs.len())
            .map(|i| imgs.image(i)[..8].to_vec())
            .collect();
        let want: HashSet<Vec<u8>> = [vec![0; 8], vec![1; 8], vec![2, 2, 2, 2, 1, 1, 1, 1]]
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn line_model_takes_prefixes_per_line() {
        // 16 words over two lines: 9 * 9 prefixes.
        let s = state_with(&[(0, 128)], false);
        let imgs = s.crash_images(Model::Line, &GenConfig::default(), 1);
        assert_eq!(imgs.len(), 81);
        // Non-temporal words stay independent under the line model.
        let s = state_with(&[(0, 32)], true);
        assert_eq!(
            s.crash_images(Model::Line, &GenConfig::default(), 1).len(),
            16
        );
    }

    fn published(img: &[u8]) -> u64 {
        let at = daxlog::format::PUBLISHED_OFFSET;
        u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_published_word_takes_its_lowest_and_highest_values() {
        let mut s = PmemState::new(vec![0; 8192], Persistence::Clwb);
        for lsn in [5, 9, 3] {
            s.apply(&Op::Publish { lsn, vouch: false });
        }
        // One other word pending: two images, each with both values (0 durable, 9 pending;
        // 5 and 3 lie between).
        s.apply(&Op::Store {
            off: 4096,
            data: vec![1; 8],
        });
        let imgs = s.crash_images(Model::Strict, &GenConfig::default(), 1);
        assert!(imgs.takes_both_published());
        let got: HashSet<(u64, u8)> = (0..imgs.len())
            .map(|i| {
                let img = imgs.image(i);
                (published(&img), img[4096])
            })
            .collect();
        let want: HashSet<(u64, u8)> = [(0, 0), (9, 0), (0, 1), (9, 1)].into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(imgs.len(), 4);

        // Many other words: each image takes one value, chosen by the other units' outcomes:
        // both occur, the same in a second enumeration (a replay), and the same after another
        // store, for the images where that store did not persist.
        s.apply(&Op::Store {
            off: 4104,
            data: vec![2; 64],
        });
        let imgs = s.crash_images(Model::Strict, &GenConfig::default(), 1);
        assert!(imgs.is_exhaustive() && !imgs.takes_both_published());
        assert_eq!(imgs.len(), 1 << 9);
        let again = s.crash_images(Model::Strict, &GenConfig::default(), 2);
        let mut by_rest: HashMap<Vec<u8>, u64> = HashMap::new();
        let rest_of = |img: &[u8]| {
            let mut rest = img.to_vec();
            rest[daxlog::format::PUBLISHED_OFFSET..][..8].fill(0);
            rest
        };
        for i in 0..imgs.len() {
            let img = imgs.image(i);
            assert_eq!(img, again.image(i));
            let p = published(&img);
            assert!(p == 0 || p == 9, "published {p}");
            assert!(by_rest.insert(rest_of(&img), p).is_none());
        }
        let values: HashSet<u64> = by_rest.values().copied().collect();
        assert_eq!(values.len(), 2);
        assert!(imgs.describe(0).contains("published LSN"));
        let mut next = s.clone();
        next.apply(&Op::Store {
            off: 6000,
            data: vec![3; 8],
        });
        let imgs = next.crash_images(Model::Strict, &GenConfig::default(), 1);
        let mut recurred = 0;
        for i in 0..imgs.len() {
            let img = imgs.image(i);
            if img[6000] == 0 {
                assert_eq!(by_rest[&rest_of(&img)], published(&img));
                recurred += 1;
            }
        }
        assert_eq!(recurred, 1 << 9);

        // Made durable (a suffix truncation's flush and drain): one value, the last.
        s.apply(&Op::Flush {
            off: daxlog::format::PUBLISHED_OFFSET,
            len: 8,
        });
        s.apply(&Op::Drain);
        let imgs = s.crash_images(Model::Line, &GenConfig::default(), 1);
        assert!(!imgs.takes_both_published());
        assert!((0..imgs.len()).all(|i| published(&imgs.image(i)) == 3));
    }

    #[test]
    fn large_sets_are_sampled_deterministically() {
        let s = state_with(&[(0, 800)], false);
        let cfg = GenConfig::default();
        let a = s.crash_images(Model::Strict, &cfg, 7);
        let b = s.crash_images(Model::Strict, &cfg, 7);
        assert!(!a.is_exhaustive());
        assert_eq!(a.len(), b.len());
        for i in 0..a.len() {
            assert_eq!(a.choice(i), b.choice(i));
        }
        // Nothing and everything are always there.
        let all: Vec<Vec<u8>> = (0..a.len()).map(|i| a.image(i)).collect();
        assert!(all.contains(&s.durable().to_vec()));
        assert!(all.contains(&s.volatile()));
    }
}
