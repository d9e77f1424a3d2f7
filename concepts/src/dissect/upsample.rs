//! A unit's cell map laid over the input image: bilinear interpolation between the cells'
//! receptive-field centres ([`CellGrid`]), constant beyond the outermost centres — the
//! receptive-field-aware upsampling of the original Network Dissection — thresholded into the
//! pixels where the unit is "on" (at or above its threshold).
//!
//! Only pixels near a cell above the threshold can be above it (a bilinear value is a convex
//! combination of its four surrounding cells), so only those are evaluated: a unit that fires
//! on 0.5 % of cells costs about that fraction of the image.

use glassbox_data::grid::{Axis, CellGrid};
use glassbox_data::masks::Bitmap;

/// Where pixel coordinates fall between cell centres along one axis: the lower cell and the
/// weight of the upper one, clamped at the ends.
fn locate(axis: &Axis, pixel: usize) -> (usize, f32) {
    let t = ((pixel as f64 - axis.start) / axis.stride).clamp(0.0, (axis.cells - 1) as f64);
    let i = (t.floor() as usize).min(axis.cells.saturating_sub(2));
    if axis.cells == 1 {
        return (0, 0.0);
    }
    (i, (t - i as f64) as f32)
}

/// The pixels (inclusive) whose interpolation involves cell `i` along `axis`: strictly between
/// the neighbouring centres, extended to the image edge for the outermost cells.
fn reach(axis: &Axis, i: usize) -> (usize, usize) {
    let last = axis.pixels - 1;
    let lo = if i == 0 {
        0
    } else {
        (axis.centre(i - 1).floor() + 1.0).clamp(0.0, last as f64) as usize
    };
    let hi = if i + 1 >= axis.cells {
        last
    } else {
        (axis.centre(i + 1).ceil() - 1.0).clamp(0.0, last as f64) as usize
    };
    (lo, hi)
}

/// The unit's value at pixel `(y, x)` from its cell map (row-major, `grid.cells()` values).
pub fn value_at(grid: &CellGrid, map: &[f32], y: usize, x: usize) -> f32 {
    let (r, fy) = locate(&grid.rows, y);
    let (c, fx) = locate(&grid.cols, x);
    let w = grid.cols.cells;
    let at = |r: usize, c: usize| map[r * w + c];
    let (r1, c1) = ((r + 1).min(grid.rows.cells - 1), (c + 1).min(w - 1));
    let top = at(r, c) * (1.0 - fx) + at(r, c1) * fx;
    let bottom = at(r1, c) * (1.0 - fx) + at(r1, c1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Sets in `out` (which the caller clears between maps) the pixels where the upsampled map
/// reaches `threshold`; returns the rows it set, or `None` when no cell reaches it.
pub fn active_pixels(
    grid: &CellGrid,
    map: &[f32],
    threshold: f32,
    out: &mut Bitmap,
) -> Option<std::ops::Range<usize>> {
    let w = grid.cols.cells;
    let (mut y_lo, mut y_hi) = (usize::MAX, 0);
    for (i, _) in map.iter().enumerate().filter(|(_, &v)| v >= threshold) {
        let (r, c) = (i / w, i % w);
        let (ya, yb) = reach(&grid.rows, r);
        let (xa, xb) = reach(&grid.cols, c);
        for y in ya..=yb {
            for x in xa..=xb {
                if !out.get(y, x) && value_at(grid, map, y, x) >= threshold {
                    out.set(y, x);
                    y_lo = y_lo.min(y);
                    y_hi = y_hi.max(y);
                }
            }
        }
    }
    (y_lo <= y_hi).then_some(y_lo..y_hi + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_evaluating_near_hot_cells_misses_nothing() {
        // A 5×4 grid of stride 8 over a 40×32 image, TF-like offsets; every pixel evaluated
        // against the sparse version.
        let grid = CellGrid::input(40, 32)
            .conv_same(3, 2)
            .conv_same(3, 2)
            .conv_same(3, 2);
        assert_eq!((grid.rows.cells, grid.cols.cells), (5, 4));
        let map: Vec<f32> = (0..20).map(|i| ((i * 37) % 11) as f32).collect();
        for threshold in [9.5f32, 7.0, 3.0, -1.0] {
            let mut sparse = Bitmap::new(40, 32);
            active_pixels(&grid, &map, threshold, &mut sparse);
            let mut dense = Bitmap::new(40, 32);
            for y in 0..40 {
                for x in 0..32 {
                    if value_at(&grid, &map, y, x) >= threshold {
                        dense.set(y, x);
                    }
                }
            }
            assert_eq!(sparse, dense, "threshold {threshold}");
        }
    }

    #[test]
    fn interpolates_between_cell_centres() {
        let grid = CellGrid::input(16, 16).conv(2, 2, 0); // 8×8 cells centred at 0.5, 2.5, …
        let mut map = vec![0.0; 64];
        map[8 + 1] = 1.0; // cell (1, 1), centre (2.5, 2.5)
        assert_eq!(value_at(&grid, &map, 2, 2), 0.75 * 0.75);
        assert_eq!(value_at(&grid, &map, 0, 0), 0.0);
        assert!((value_at(&grid, &map, 3, 2) - 0.75 * 0.75).abs() < 1e-6);
    }
}
