//! Where a hook's positions sit in the model's input image: the receptive-field arithmetic of
//! a stack of convolutions (Araujo et al. 2019, "Computing receptive fields of convolutional
//! neural networks"), one axis at a time.
//!
//! Coordinates are pixels of the model input (after resize and crop), pixel `i` centred at `i`.
//! Along one axis a stack of convolutions maps output cell `o` to a window of input pixels whose
//! centre is `start + o · stride` and whose size is `field`; pooling layers compose the same way.
//! The window can reach beyond the image (padding): [`Axis::span`] clips it.

use serde::{Deserialize, Serialize};

/// One axis of a feature map: how many cells, and where each cell looks in the input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// Cells along this axis at the hook.
    pub cells: usize,
    /// Input pixels between the centres of neighbouring cells (the product of the strides).
    pub stride: f64,
    /// Centre of cell 0's window, in input pixels (negative when padding comes first).
    pub start: f64,
    /// Size of a cell's window (receptive field) in input pixels, padding included.
    pub field: f64,
    /// Input pixels along this axis.
    pub pixels: usize,
}

impl Axis {
    /// The input itself: one cell per pixel.
    pub fn input(pixels: usize) -> Self {
        Self {
            cells: pixels,
            stride: 1.0,
            start: 0.0,
            field: 1.0,
            pixels,
        }
    }

    /// After a convolution or pooling with this kernel and stride, `pad_before` cells of padding
    /// first, and `output` cells out. Output cell `o` reads cells `o·s − pad .. o·s − pad + k`,
    /// centred at `o·s − pad + (k − 1)/2` of this axis.
    pub fn then(self, kernel: usize, stride: usize, pad_before: usize, output: usize) -> Self {
        Self {
            cells: output,
            stride: self.stride * stride as f64,
            start: self.start + ((kernel as f64 - 1.0) / 2.0 - pad_before as f64) * self.stride,
            field: self.field + (kernel as f64 - 1.0) * self.stride,
            pixels: self.pixels,
        }
    }

    /// After a convolution with PyTorch's symmetric `pad`.
    pub fn conv(self, kernel: usize, stride: usize, pad: usize) -> Self {
        let output = (self.cells + 2 * pad - kernel) / stride + 1;
        self.then(kernel, stride, pad, output)
    }

    /// After a convolution with TensorFlow's "SAME" padding: `ceil(cells / stride)` out, the
    /// total padding split with the odd pixel after.
    pub fn conv_same(self, kernel: usize, stride: usize) -> Self {
        let output = self.cells.div_ceil(stride);
        let total = ((output - 1) * stride + kernel).saturating_sub(self.cells);
        self.then(kernel, stride, total / 2, output)
    }

    /// The centre of cell `i`'s window, in input pixels.
    pub fn centre(&self, i: usize) -> f64 {
        self.start + i as f64 * self.stride
    }

    /// The input pixels cell `i` reads, clipped to the image: `first..=last`.
    pub fn span(&self, i: usize) -> (usize, usize) {
        let half = (self.field - 1.0) / 2.0;
        let c = self.centre(i);
        let last = self.pixels.saturating_sub(1) as f64;
        let lo = (c - half).ceil().clamp(0.0, last);
        let hi = (c + half).floor().clamp(0.0, last);
        (lo as usize, hi as usize)
    }
}

/// A pixel rectangle of the model input, inclusive on both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Rect {
    /// This rectangle of model-input pixels mapped back onto the source image of size
    /// `(width, height)` through `pre`: the centre crop's offset added, the resize's scale undone, rounded
    /// outwards and clipped to the source. Inclusive on both ends, like the input.
    pub fn to_source(self, pre: &crate::images::Preprocessor, (width, height): (u32, u32)) -> Rect {
        let (w, h) = (width as f64, height as f64);
        let (rw, rh) = pre.resized_size((width, height));
        let (ox, oy) = pre.crop_offset((rw, rh));
        let (ox, oy, rw, rh) = (ox as f64, oy as f64, rw as f64, rh as f64);
        let (sx, sy) = (w / rw, h / rh);
        let lo = |v: usize, o: f64, s: f64, n: f64| {
            ((v as f64 + o) * s).floor().clamp(0.0, n - 1.0) as usize
        };
        let hi = |v: usize, o: f64, s: f64, n: f64| {
            (((v + 1) as f64 + o) * s).ceil().clamp(1.0, n) as usize - 1
        };
        Rect {
            x0: lo(self.x0, ox, sx, w),
            y0: lo(self.y0, oy, sy, h),
            x1: hi(self.x1, ox, sx, w),
            y1: hi(self.y1, oy, sy, h),
        }
    }
}

/// Where a hook's positions sit: a row-major grid of cells (CNN maps, ViT patch tokens), and for
/// ViT/CLIP a class token at position 0 that reads the whole image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellGrid {
    pub rows: Axis,
    pub cols: Axis,
    /// Position 0 is a class token; cells start at position 1.
    pub class_token: bool,
}

impl CellGrid {
    /// The model input as a grid of one cell per pixel.
    pub fn input(height: usize, width: usize) -> Self {
        Self {
            rows: Axis::input(height),
            cols: Axis::input(width),
            class_token: false,
        }
    }

    /// A ViT patch grid: non-overlapping `patch × patch` windows, position 0 the class token.
    pub fn patches(height: usize, width: usize, patch: usize) -> Self {
        let input = Self::input(height, width);
        Self {
            rows: input.rows.conv(patch, patch, 0),
            cols: input.cols.conv(patch, patch, 0),
            class_token: true,
        }
    }

    /// Both axes through the same layer (symmetric padding).
    pub fn conv(self, kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            rows: self.rows.conv(kernel, stride, pad),
            cols: self.cols.conv(kernel, stride, pad),
            ..self
        }
    }

    /// Both axes through a TensorFlow "SAME" layer.
    pub fn conv_same(self, kernel: usize, stride: usize) -> Self {
        Self {
            rows: self.rows.conv_same(kernel, stride),
            cols: self.cols.conv_same(kernel, stride),
            ..self
        }
    }

    /// Cells in the grid (without the class token).
    pub fn cells(&self) -> usize {
        self.rows.cells * self.cols.cells
    }

    /// Positions a hook has: the cells, plus the class token where there is one.
    pub fn positions(&self) -> usize {
        self.cells() + usize::from(self.class_token)
    }

    /// The input size `(height, width)`.
    pub fn image(&self) -> (usize, usize) {
        (self.rows.pixels, self.cols.pixels)
    }

    /// The cell `(row, col)` of a store position; `None` for the class token or past the grid.
    pub fn cell(&self, position: usize) -> Option<(usize, usize)> {
        let i = position.checked_sub(usize::from(self.class_token))?;
        (i < self.cells()).then(|| (i / self.cols.cells, i % self.cols.cells))
    }

    /// The pixels nearer a cell's centre than any neighbour's (a stride-sized box around the
    /// centre, clipped): where the cell "is", as opposed to everything it reads. `None` for a
    /// class token.
    pub fn cell_box(&self, position: usize) -> Option<Rect> {
        let (r, c) = self.cell(position)?;
        // `[centre − stride/2, centre + stride/2)`: `stride` pixels, clipped to the image.
        let span = |a: &Axis, i: usize| {
            let lo = (a.centre(i) - a.stride / 2.0).ceil();
            let last = a.pixels.saturating_sub(1) as f64;
            (
                lo.clamp(0.0, last) as usize,
                (lo + a.stride - 1.0).clamp(0.0, last) as usize,
            )
        };
        let (y0, y1) = span(&self.rows, r);
        let (x0, x1) = span(&self.cols, c);
        Some(Rect { x0, y0, x1, y1 })
    }

    /// The input rectangle a position reads (the whole image for a class token).
    pub fn rect(&self, position: usize) -> Option<Rect> {
        if self.class_token && position == 0 {
            let (h, w) = self.image();
            return Some(Rect {
                x0: 0,
                y0: 0,
                x1: w.saturating_sub(1),
                y1: h.saturating_sub(1),
            });
        }
        let (r, c) = self.cell(position)?;
        let (y0, y1) = self.rows.span(r);
        let (x0, x1) = self.cols.span(c);
        Some(Rect { x0, y0, x1, y1 })
    }
}

/// The cells of image runs in place of tokens, so the unit explanations written for text read
/// image runs too: each example's positions named `r{row}c{col}` (`[CLS]` for a class token, a
/// special token like text's, left out of SAE training by default), one grid per hook.
#[derive(Debug, Clone, Default)]
pub struct ImageCells {
    pub example_ids: Vec<u64>,
    /// Each example's image path (its `text` in `examples.parquet`).
    pub image_paths: std::collections::HashMap<u64, String>,
    /// Each example's image size `(width, height)` as stored, and the preprocessing that made
    /// the model input of it: together they map cells back onto the files' own pixels.
    pub source_sizes: std::collections::HashMap<u64, (u32, u32)>,
    pub preprocessor: Option<crate::images::Preprocessor>,
    pub grids: std::collections::BTreeMap<crate::HookPoint, CellGrid>,
}

impl ImageCells {
    fn table(
        &self,
        positions: usize,
        name: impl Fn(usize) -> Option<String>,
    ) -> crate::tokens::Tokens {
        let mut t = crate::tokens::Tokens::default();
        for &e in &self.example_ids {
            for p in 0..positions {
                let token = name(p);
                t.example_ids.push(e);
                t.positions.push(p as u32);
                t.spans.push(token.as_ref().map(|_| (0, 0)));
                t.tokens.push(token.unwrap_or_else(|| "[CLS]".to_owned()));
            }
        }
        t
    }

    /// Positions `0..max` over every hook (the labels and special positions are keyed by
    /// example and position, whatever the hook).
    pub fn run_tokens(&self) -> crate::tokens::Tokens {
        let max = self
            .grids
            .values()
            .map(CellGrid::positions)
            .max()
            .unwrap_or(0);
        let class_token = self.grids.values().any(|g| g.class_token);
        self.table(max, |p| (!(class_token && p == 0)).then(|| format!("#{p}")))
    }

    /// One hook's positions named by their cell.
    pub fn hook_tokens(&self, hook: crate::HookPoint) -> Option<crate::tokens::Tokens> {
        let g = self.grids.get(&hook)?;
        Some(self.table(g.positions(), |p| {
            g.cell(p).map(|(r, c)| format!("r{r}c{c}"))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stride_two_same_convolution_on_an_even_input_pads_after() {
        // TF SAME, k 3, s 2 on 224: output 112, total padding 1, all of it after. Cell 0 reads
        // pixels 0..=2 (centre 1), the last cell reads 222, 223 and the padding.
        let a = Axis::input(224).conv_same(3, 2);
        assert_eq!(a.cells, 112);
        assert_eq!(a.centre(0), 1.0);
        assert_eq!(a.span(0), (0, 2));
        assert_eq!(a.span(111), (222, 223));
        // On an odd input (225) the total padding is 2: one before, one after.
        let b = Axis::input(225).conv_same(3, 2);
        assert_eq!((b.cells, b.centre(0), b.span(0)), (113, 0.0, (0, 1)));
    }

    #[test]
    fn stacked_layers_compose_stride_field_and_offset() {
        // ResNet's stem: 7×7/2 pad 3, then max-pool 3×3/2 pad 1 (224 → 112 → 56).
        let a = Axis::input(224).conv(7, 2, 3).conv(3, 2, 1);
        assert_eq!(a.cells, 56);
        assert_eq!(a.stride, 4.0);
        assert_eq!(a.field, 7.0 + 2.0 * 2.0);
        // Cell 0 of the pool reads stem cells −1..=1, i.e. pixels −3−2 ..= 2+3 → centre 0.
        assert_eq!(a.centre(0), 0.0);
        assert_eq!(a.span(0), (0, 5));
        assert_eq!(a.span(10), (40 - 5, 40 + 5));
    }

    #[test]
    fn model_input_rectangles_map_back_to_the_source_image() {
        use crate::images::Preprocessor;
        let rect = |x0, y0, x1, y1| Rect { x0, y0, x1, y1 };
        // 400×200 (w×h): shortest edge 100 → 200×100, centre crop 100×100 at x offset 50.
        let pre = Preprocessor {
            shortest_edge: Some(100),
            crop: Some((100, 100)),
            ..Preprocessor::identity()
        };
        assert_eq!(
            rect(0, 0, 9, 9).to_source(&pre, (400, 200)),
            rect(100, 0, 119, 19)
        );
        assert_eq!(
            rect(0, 0, 99, 99).to_source(&pre, (400, 200)),
            rect(100, 0, 299, 199)
        );
        // No preprocessing: the same pixels.
        let same = rect(3, 4, 5, 6).to_source(&Preprocessor::identity(), (10, 10));
        assert_eq!(same, rect(3, 4, 5, 6));
    }

    #[test]
    fn image_cells_name_positions_by_row_and_column() {
        let mut cells = ImageCells {
            example_ids: vec![4, 9],
            ..Default::default()
        };
        cells
            .grids
            .insert(crate::HookPoint::Stem, CellGrid::patches(32, 48, 16));
        let t = cells.hook_tokens(crate::HookPoint::Stem).unwrap();
        assert_eq!(t.len(), 2 * 7);
        assert_eq!((t.tokens[0].as_str(), t.spans[0]), ("[CLS]", None));
        assert_eq!(
            (t.tokens[6].as_str(), t.example_ids[6], t.positions[6]),
            ("r1c2", 4, 6)
        );
        assert_eq!(cells.run_tokens().len(), 14);
        assert!(cells.hook_tokens(crate::HookPoint::Head).is_none());
    }

    #[test]
    fn patch_grids_map_tokens_to_their_patch_and_the_class_token_to_the_image() {
        let g = CellGrid::patches(32, 48, 16);
        assert_eq!((g.rows.cells, g.cols.cells, g.positions()), (2, 3, 7));
        assert_eq!(
            g.rect(0),
            Some(Rect {
                x0: 0,
                y0: 0,
                x1: 47,
                y1: 31
            })
        );
        // Position 1 + 1·3 + 2 = 6: second row, third column.
        assert_eq!(
            g.rect(6),
            Some(Rect {
                x0: 32,
                y0: 16,
                x1: 47,
                y1: 31
            })
        );
        assert_eq!(g.rect(7), None);
        assert_eq!(g.cell_box(6), g.rect(6), "a patch is its own cell");
        assert_eq!(g.cell_box(0), None);
        // Stride 4 from a 7×7/2 + pool stem: cell 10 is centred at 40, its box 38..=41.
        let r = CellGrid::input(224, 224).conv(7, 2, 3).conv(3, 2, 1);
        assert_eq!(
            r.cell_box(10),
            Some(Rect {
                x0: 38,
                y0: 0,
                x1: 41,
                y1: 1
            })
        );
    }
}
