//! Normalisation and augmentation of single images: u8 CHW in, normalised f32 CHW out.
//!
//! The augmentations follow the usual torchvision / DARTS recipe, in this order:
//! random crop after zero padding (`RandomCrop(size, padding)`; the padding is black, raw
//! pixel 0, before normalisation), horizontal flip with probability 1/2, normalisation, then
//! cutout (a square of side `cutout` centred at a uniformly drawn pixel, clipped at the
//! borders, set to 0 after normalisation, i.e. to the mean).
//!
//! Random numbers are drawn in a fixed order per image (crop offsets, flip, cutout centre),
//! and only for the augmentations that are on, so the output depends only on the input and
//! the state of the [`Rng`] passed in.

use bayesnas_engine::Rng;

use crate::dataset::Normalization;
use crate::error::{DataError, Result};

/// Which augmentations to apply to training images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Augment {
    /// Zero padding on each side before a random crop back to the original size (0 = off).
    pub crop_padding: usize,
    /// Random horizontal flip with probability 1/2.
    pub hflip: bool,
    /// Side of the cutout square (0 = off).
    pub cutout: usize,
}

impl Augment {
    /// No augmentation (evaluation).
    pub const NONE: Augment = Augment {
        crop_padding: 0,
        hflip: false,
        cutout: 0,
    };

    /// Whether any augmentation is on.
    pub fn is_active(&self) -> bool {
        *self != Augment::NONE
    }
}

/// Turns u8 CHW images into normalised, optionally augmented f32 CHW images.
#[derive(Clone, Debug)]
pub struct Transform {
    c: usize,
    h: usize,
    w: usize,
    /// Per channel: normalised value of each pixel value.
    lut: Vec<[f32; 256]>,
    augment: Augment,
}

impl Transform {
    /// A transform for images of shape `[c, h, w]`.
    pub fn new(shape: [usize; 3], norm: &Normalization, augment: Augment) -> Result<Self> {
        let [c, h, w] = shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(DataError::Invalid(format!(
                "image shape {shape:?} has a zero dimension"
            )));
        }
        if norm.mean.len() != c || norm.std.len() != c {
            return Err(DataError::Invalid(format!(
                "normalisation has {} means and {} stds for {c} channels",
                norm.mean.len(),
                norm.std.len()
            )));
        }
        if let Some(s) = norm.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "normalisation std {s} must be positive and finite"
            )));
        }
        if norm.mean.iter().any(|m| !m.is_finite()) {
            return Err(DataError::Invalid(
                "normalisation mean must be finite".into(),
            ));
        }
        let lut = norm
            .mean
            .iter()
            .zip(&norm.std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (v, out) in t.iter_mut().enumerate() {
                    *out = (v as f32 / 255.0 - m) / s;
                }
                t
            })
            .collect();
        Ok(Transform {
            c,
            h,
            w,
            lut,
            augment,
        })
    }

    /// The augmentation this transform applies in [`Transform::augment`].
    pub fn augmentation(&self) -> Augment {
        self.augment
    }

    /// Elements per image.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn check(&self, src: &[u8], dst: &[f32]) {
        let n = self.image_len();
        assert!(
            src.len() == n && dst.len() == n,
            "Transform: image of {} bytes into {} floats, expected {n}",
            src.len(),
            dst.len()
        );
    }

    /// Normalises without augmentation. `src` and `dst` must hold one image each.
    pub fn normalize(&self, src: &[u8], dst: &mut [f32]) {
        self.check(src, dst);
        let plane = self.h * self.w;
        for ch in 0..self.c {
            let lut = &self.lut[ch];
            let s = &src[ch * plane..(ch + 1) * plane];
            let d = &mut dst[ch * plane..(ch + 1) * plane];
            for (o, &v) in d.iter_mut().zip(s) {
                *o = lut[usize::from(v)];
            }
        }
    }

    /// Augments and normalises one image, drawing from `rng`.
    pub fn augment(&self, src: &[u8], dst: &mut [f32], rng: &mut Rng) {
        self.check(src, dst);
        let a = self.augment;
        let (h, w) = (self.h, self.w);
        let p = a.crop_padding;
        let (dy, dx) = if p > 0 {
            (rng.below(2 * p + 1), rng.below(2 * p + 1))
        } else {
            (p, p)
        };
        let flip = a.hflip && rng.bernoulli(0.5);
        let cut = if a.cutout > 0 {
            Some((rng.below(h), rng.below(w)))
        } else {
            None
        };

        if dy == p && dx == p && !flip {
            self.normalize(src, dst);
        } else {
            let plane = h * w;
            // Output (y, x) reads input (y + dy - p, x' + dx - p) where x' is x or its mirror;
            // positions outside the input are the zero padding.
            for ch in 0..self.c {
                let lut = &self.lut[ch];
                let pad = lut[0];
                let s = &src[ch * plane..(ch + 1) * plane];
                let d = &mut dst[ch * plane..(ch + 1) * plane];
                for (y, drow) in d.chunks_exact_mut(w).enumerate() {
                    let sy = (y + dy).wrapping_sub(p);
                    if sy >= h {
                        drow.fill(pad);
                        continue;
                    }
                    let srow = &s[sy * w..(sy + 1) * w];
                    for (x, o) in drow.iter_mut().enumerate() {
                        let xm = if flip { w - 1 - x } else { x };
                        let sx = (xm + dx).wrapping_sub(p);
                        *o = if sx < w {
                            lut[usize::from(srow[sx])]
                        } else {
                            pad
                        };
                    }
                }
            }
        }

        if let Some((cy, cx)) = cut {
            let half = a.cutout / 2;
            let (y1, y2) = (cy.saturating_sub(half), (cy + half).min(h));
            let (x1, x2) = (cx.saturating_sub(half), (cx + half).min(w));
            let plane = h * w;
            for ch in 0..self.c {
                for y in y1..y2 {
                    let row = ch * plane + y * w;
                    dst[row + x1..row + x2].fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm1() -> Normalization {
        Normalization {
            mean: vec![0.0],
            std: vec![1.0 / 255.0],
        }
    }

    #[test]
    fn identity_when_off() {
        let t = Transform::new([1, 3, 3], &norm1(), Augment::NONE).unwrap();
        let src: Vec<u8> = (1..=9).collect();
        let mut dst = vec![0.0; 9];
        t.augment(&src, &mut dst, &mut Rng::new(0));
        let want: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        for (a, b) in dst.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{dst:?}");
        }
    }

    #[test]
    fn flip_only_mirrors_rows() {
        let a = Augment {
            hflip: true,
            ..Augment::NONE
        };
        let t = Transform::new([1, 2, 3], &norm1(), a).unwrap();
        let src: Vec<u8> = vec![1, 2, 3, 4, 5, 6];
        let mut seen = std::collections::HashSet::new();
        let mut rng = Rng::new(5);
        for _ in 0..64 {
            let mut dst = vec![0.0; 6];
            t.augment(&src, &mut dst, &mut rng);
            let v: Vec<i32> = dst.iter().map(|x| x.round() as i32).collect();
            assert!(v == [1, 2, 3, 4, 5, 6] || v == [3, 2, 1, 6, 5, 4], "{v:?}");
            seen.insert(v);
        }
        assert_eq!(seen.len(), 2, "both outcomes must occur");
    }

    #[test]
    fn crop_shifts_content_and_pads_with_black() {
        let a = Augment {
            crop_padding: 1,
            ..Augment::NONE
        };
        let t = Transform::new([1, 3, 3], &norm1(), a).unwrap();
        let src: Vec<u8> = (1..=9).collect();
        let mut rng = Rng::new(1);
        let mut shifts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut dst = vec![-1.0; 9];
            t.augment(&src, &mut dst, &mut rng);
            let v: Vec<i32> = dst.iter().map(|x| x.round() as i32).collect();
            // Find the shift (dy, dx) in [-1, 1]^2 that explains the output exactly.
            let mut found = None;
            for dy in -1i32..=1 {
                for dx in -1i32..=1 {
                    let ok = (0..3).all(|y| {
                        (0..3).all(|x| {
                            let (sy, sx) = (y + dy, x + dx);
                            let want = if (0..3).contains(&sy) && (0..3).contains(&sx) {
                                i32::from(src[(sy * 3 + sx) as usize])
                            } else {
                                0
                            };
                            v[(y * 3 + x) as usize] == want
                        })
                    });
                    if ok {
                        found = Some((dy, dx));
                    }
                }
            }
            shifts.insert(found.expect("output is a padded shift of the input"));
        }
        assert_eq!(shifts.len(), 9, "all nine offsets occur: {shifts:?}");
    }

    #[test]
    fn cutout_zeroes_a_clipped_square() {
        let a = Augment {
            cutout: 4,
            ..Augment::NONE
        };
        let norm2 = Normalization {
            mean: vec![0.0, 0.0],
            std: vec![1.0 / 255.0, 1.0 / 255.0],
        };
        let t = Transform::new([2, 8, 8], &norm2, a).unwrap();
        let src = vec![200u8; 128];
        let mut rng = Rng::new(2);
        for _ in 0..50 {
            let mut dst = vec![0.0; 128];
            t.augment(&src, &mut dst, &mut rng);
            let zeros = dst.iter().filter(|&&v| v == 0.0).count();
            // 2 channels x a square of side <= 4 clipped at the border (at least 2x2).
            assert!(zeros % 2 == 0 && (8..=32).contains(&zeros), "{zeros}");
            assert_eq!(
                &dst[..64].iter().map(|v| *v == 0.0).collect::<Vec<_>>(),
                &dst[64..].iter().map(|v| *v == 0.0).collect::<Vec<_>>(),
                "same square in every channel"
            );
        }
    }

    #[test]
    fn rejects_bad_normalization() {
        let bad = Normalization {
            mean: vec![0.0],
            std: vec![0.0],
        };
        assert!(Transform::new([1, 2, 2], &bad, Augment::NONE).is_err());
        assert!(Transform::new([3, 2, 2], &norm1(), Augment::NONE).is_err());
    }
}
