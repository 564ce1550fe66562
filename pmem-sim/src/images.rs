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
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            exhaustive_limit: 1 << 14,
            random: 64,
            structured: 64,
            pairs: 32,
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

/// The possible durable images at one crash point (see the module documentation).
pub struct CrashImages<'a> {
    state: &'a PmemState,
    /// For each pending piece, in program order: its unit and its rank in the unit.
    place: Vec<(u32, u32)>,
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
        let mut ci = self.units(model, cfg.exhaustive_limit);
        if ci.exhaustive.is_none() {
            ci.sampled = ci.sample(cfg, seed);
        }
        ci
    }

    /// All the outcomes under `model`, without enumerating or sampling them: for drawing single
    /// random images cheaply with [`CrashImages::random_choice`].
    pub fn crash_units(&self, model: Model) -> CrashImages<'_> {
        self.units(model, 0)
    }

    fn units(&self, model: Model, exhaustive_limit: u64) -> CrashImages<'_> {
        let mut index: HashMap<Unit, u32, BuildHasherDefault<FastHash>> = HashMap::default();
        let mut units = Vec::new();
        let mut sizes: Vec<u32> = Vec::new();
        let mut place = Vec::with_capacity(self.pending().len());
        for p in self.pending() {
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
        CrashImages {
            state: self,
            place,
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
        match rng.below(6) {
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
        }
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

    /// Number of independent units (words, lines or pages with pending stores).
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// The outcome of every unit in image `i`: how many of its pieces persisted.
    pub fn choice(&self, i: usize) -> Vec<u32> {
        match self.exhaustive {
            Some(n) => {
                assert!((i as u64) < n, "image index out of range");
                let mut rest = i as u64;
                self.sizes
                    .iter()
                    .map(|&s| {
                        let r = s as u64 + 1;
                        let c = rest % r;
                        rest /= r;
                        c as u32
                    })
                    .collect()
            }
            None => self.sampled[i].clone(),
        }
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

    fn build(&self, choice: &[u32], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.state.durable());
        for (p, &(u, rank)) in self.state.pending().iter().zip(&self.place) {
            if rank < choice[u as usize] {
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
        if partial.is_empty() {
            return format!("({kind}): every pending store persisted");
        }
        let shown = partial.len().min(16);
        let more = if partial.len() > shown {
            format!(" and {} more", partial.len() - shown)
        } else {
            String::new()
        };
        format!(
            "({kind}), {} units pending, not (wholly) persisted: {}{more}",
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
        for &(u, _) in &self.place {
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
            if rank == 0 {
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
