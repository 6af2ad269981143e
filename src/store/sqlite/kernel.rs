//! The arithmetic of vector search: int8 quantization of stored vectors, int16 quantization
//! of the query, the integer dot product the scan runs, the error bound that makes pruning
//! exact, and the exact cosine used to rescore.
//!
//! Why int8: a scan of 100k × 1536 f32 reads 614 MB per query, which this class of machine
//! cannot stream in 20 ms; int8 reads a quarter of that (1 byte per dimension resident). Why
//! the bound: every stored vector `u` (normalized) is kept as `scale · codes + r` with
//! `‖r‖ = error` recorded, and the query `q̂` (normalized) as `qscale · qcodes + δ`. Then
//! `|q̂·u − approx| ≤ ‖δ‖·(1 + error) + error` (Cauchy–Schwarz, `‖scale · codes‖ ≤ 1 + error`),
//! so any vector whose `approx + bound` is below the k-th *exact* score cannot be in the top
//! k. The search rescores exactly every vector that can, so its answer is the exact top k.
//!
//! The loops are written over fixed-width chunks so the compiler vectorizes them on the
//! baseline target (SSE2's `pmaddwd` multiplies and pair-adds eight i16 lanes); no `unsafe`,
//! no `std::simd`.

/// Vectors wider than this are refused: the query's integer scale must leave the i32 dot
/// product free of overflow (`dims · 127 · QUERY_MAX ≤ i32::MAX`), and 16k dimensions is four
/// times the widest embedding model in use.
pub const MAX_DIMS: usize = 16_384;

/// Lanes of the dot product: a multiple of SSE2's 8 i16 and AVX2's 16.
const LANES: usize = 16;

/// Slack added to every bound to absorb f32 rounding in `approx` and in the exact scores.
pub const ROUNDING_SLACK: f32 = 1e-5;

/// A stored vector in int8: `codes` are appended to a segment's contiguous array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantized {
    /// Multiplies the codes back to the normalized vector (0 for a zero vector).
    pub scale: f32,
    /// `‖u − scale · codes‖` of the normalized vector `u`.
    pub error: f32,
}

/// Normalizes `v` and appends its int8 codes to `codes`. A zero or non-finite vector gets
/// all-zero codes and scale 0: it scores 0 against everything, never NaN.
///
/// f32 arithmetic with a reciprocal and a truncating conversion (baseline x86-64 has no
/// rounding instruction; `f32::round` is a libm call): this runs for every vector loaded.
/// Which integer a value rounds to does not matter for exactness, since `error` is measured
/// from the codes actually chosen.
pub fn quantize_into(v: &[f32], codes: &mut Vec<i8>) -> Quantized {
    let norm = norm(v);
    let max = v.iter().fold(0f32, |m, &x| m.max(x.abs()));
    if !(norm > 0.0 && norm.is_finite() && max > 0.0 && max.is_finite()) {
        codes.extend(std::iter::repeat_n(0, v.len()));
        return Quantized {
            scale: 0.0,
            error: 0.0,
        };
    }
    // u = x / norm; codes ≈ u / scale = x · (127 / max).
    let scale = (f64::from(max) / norm / 127.0) as f32;
    let to_code = 127.0 / max;
    let mut err2 = 0f32;
    codes.extend(v.iter().map(|&x| {
        let t = x * to_code;
        let c = ((t + 0.5f32.copysign(t)) as i32).clamp(-127, 127);
        let r = t - c as f32;
        err2 += r * r;
        c as i8
    }));
    // The residual of u is `r · scale` per dimension.
    Quantized {
        scale,
        error: err2.sqrt() * scale,
    }
}

/// A query prepared for a scan of vectors of its dimension.
#[derive(Debug, Clone)]
pub struct Query {
    /// The query as given (exact rescoring uses it).
    pub raw: Vec<f32>,
    /// `‖raw‖`, for exact cosines.
    pub norm: f64,
    /// The normalized query in i16.
    pub codes: Vec<i16>,
    /// Multiplies `codes` back to the normalized query.
    pub scale: f32,
    /// `‖q̂ − scale · codes‖`.
    pub error: f32,
}

impl Query {
    /// `None` for a zero, non-finite or over-wide query (nothing is similar to it).
    pub fn new(raw: &[f32]) -> Option<Query> {
        let norm = norm(raw);
        if !(norm > 0.0 && norm.is_finite()) || raw.len() > MAX_DIMS {
            return None;
        }
        let max = raw.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs())) / norm;
        // The widest scale with no i32 overflow over `dims` products of 127 · code.
        let limit = (i32::MAX as usize / (127 * raw.len().max(1))).min(i16::MAX as usize);
        let scale = max / limit as f64;
        let mut err2 = 0f64;
        let codes = raw
            .iter()
            .map(|&x| {
                let u = f64::from(x) / norm;
                let c = (u / scale).round().clamp(-(limit as f64), limit as f64);
                err2 += (u - c * scale).powi(2);
                c as i16
            })
            .collect();
        Some(Query {
            raw: raw.to_vec(),
            norm,
            codes,
            scale: scale as f32,
            error: err2.sqrt() as f32,
        })
    }

    /// The estimated cosine of a stored vector and an upper bound of its exact cosine.
    #[inline]
    pub fn estimate(&self, dot: i32, v: Quantized) -> (f32, f32) {
        let approx = self.scale * v.scale * dot as f32;
        let bound = self.error * (1.0 + v.error) + v.error + ROUNDING_SLACK;
        (approx, approx + bound)
    }

    /// The exact cosine of the query and a stored vector given as little-endian f32 bytes
    /// (0 for a zero or non-finite vector, or one of another dimension).
    pub fn exact_le_bytes(&self, bytes: &[u8]) -> f32 {
        if bytes.len() != self.raw.len() * 4 {
            return 0.0;
        }
        let (mut dot, mut n2) = (0f64, 0f64);
        for (q, b) in self.raw.iter().zip(bytes.chunks_exact(4)) {
            let x = f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            dot += f64::from(*q) * x;
            n2 += x * x;
        }
        finish_cosine(dot, self.norm, n2.sqrt())
    }
}

fn finish_cosine(dot: f64, na: f64, nb: f64) -> f32 {
    let c = dot / (na * nb);
    if c.is_finite() {
        c.clamp(-1.0, 1.0) as f32
    } else {
        0.0
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// `Σ x[i] · q[i]` over the common length, in i32 (the callers keep it from overflowing: see
/// [`Query::new`]).
///
/// Never inlined: inlined into the scan loop, LLVM kept the 16 accumulators on the stack and
/// emitted scalar code, 3× slower (measured); on its own it becomes the `pmaddwd` loop. The
/// call costs a few nanoseconds per vector of hundreds of dimensions.
#[inline(never)]
pub fn dot_i8_i16(x: &[i8], q: &[i16]) -> i32 {
    let n = x.len().min(q.len());
    let body = n / LANES * LANES;
    let mut acc = [0i32; LANES];
    for (xc, qc) in x[..body]
        .chunks_exact(LANES)
        .zip(q[..body].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += i32::from(xc[l]) * i32::from(qc[l]);
        }
    }
    let tail: i32 = x[body..n]
        .iter()
        .zip(&q[body..n])
        .map(|(a, b)| i32::from(*a) * i32::from(*b))
        .sum();
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift, so the tests need no RNG crate and are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        }
        fn vector(&mut self, dims: usize) -> Vec<f32> {
            // Unnormalized on purpose, with an occasional large component.
            (0..dims)
                .map(|i| self.next() * if i % 97 == 3 { 9.0 } else { 1.0 })
                .collect()
        }
    }

    fn naive_cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na * nb)
        }
    }

    #[test]
    fn integer_dot_matches_naive_for_any_length() {
        let mut rng = Rng(7);
        for dims in [0, 1, 7, 8, 15, 16, 17, 33, 100, 1536, 1537] {
            let x: Vec<i8> = (0..dims).map(|_| (rng.next() * 127.0) as i8).collect();
            let q: Vec<i16> = (0..dims).map(|_| (rng.next() * 11_000.0) as i16).collect();
            let naive: i64 = x
                .iter()
                .zip(&q)
                .map(|(a, b)| i64::from(*a) * i64::from(*b))
                .sum();
            assert_eq!(i64::from(dot_i8_i16(&x, &q)), naive, "dims {dims}");
        }
    }

    #[test]
    fn the_widest_query_cannot_overflow() {
        for dims in [1, 8, 1536, 3072, MAX_DIMS] {
            let q = Query::new(&vec![1.0; dims]).unwrap();
            let mut codes = Vec::new();
            quantize_into(&vec![1.0; dims], &mut codes);
            let naive: i64 = codes
                .iter()
                .zip(&q.codes)
                .map(|(a, b)| i64::from(*a) * i64::from(*b))
                .sum();
            assert!(naive <= i64::from(i32::MAX), "dims {dims}");
            assert_eq!(i64::from(dot_i8_i16(&codes, &q.codes)), naive);
        }
    }

    #[test]
    fn estimates_bound_the_exact_cosine() {
        let mut rng = Rng(42);
        for dims in [3, 8, 13, 64, 257, 1536] {
            let q = rng.vector(dims);
            let query = Query::new(&q).unwrap();
            for _ in 0..200 {
                let v = rng.vector(dims);
                let mut codes = Vec::new();
                let qz = quantize_into(&v, &mut codes);
                let (approx, upper) = query.estimate(dot_i8_i16(&codes, &query.codes), qz);
                let exact = naive_cosine(&q, &v);
                let bound = upper - approx;
                assert!(
                    (exact - approx).abs() <= bound,
                    "dims {dims}: exact {exact} approx {approx} bound {bound}"
                );
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                assert!((query.exact_le_bytes(&le) - exact).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn zero_and_non_finite_vectors_score_zero() {
        let query = Query::new(&[0.5, -0.25, 1.0]).unwrap();
        for v in [[0.0f32; 3], [f32::NAN, 1.0, 0.0], [f32::INFINITY, 1.0, 0.0]] {
            let mut codes = Vec::new();
            let qz = quantize_into(&v, &mut codes);
            assert_eq!(codes, vec![0; 3]);
            let (approx, upper) = query.estimate(dot_i8_i16(&codes, &query.codes), qz);
            assert_eq!(approx, 0.0);
            assert!(upper.is_finite());
            let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(query.exact_le_bytes(&le), 0.0);
        }
        assert!(Query::new(&[0.0; 4]).is_none());
        assert!(Query::new(&[f32::NAN; 4]).is_none());
        // A vector of another dimension is not comparable.
        assert_eq!(query.exact_le_bytes(&[0; 8]), 0.0);
    }
}
