//! A unit's cell map laid over the input image, as the pixels where the unit is "on": each
//! cell is on or off (its value at or above the unit's threshold, or not), and a pixel is on
//! where the on/off indicator, interpolated bilinearly between the cells' receptive-field
//! centres (constant beyond the outermost centres), reaches one half — the receptive-field-aware
//! upsampling of the original Network Dissection, applied to the thresholded cells.
//!
//! Interpolating the indicator rather than the values keeps an on cell's region the size of
//! its cell whatever its neighbours hold: with values, a run of cells tied at a saturated
//! maximum (ReLU6 at 6.0) would be on only where all four surrounding cells tie, and a lone
//! top cell only at its centre, so the on area would no longer track the quantile.
//!
//! Only pixels next to an on cell can be on, so only those are evaluated: a unit that fires on
//! 0.5 % of cells costs about that fraction of the image.

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

/// Sets in `out` (which the caller clears between maps) the pixels where the unit is on: the
/// cells at or above `threshold`, upsampled as the module says. Returns the rows it set, or
/// `None` when no cell is on.
pub fn active_pixels(
    grid: &CellGrid,
    map: &[f32],
    threshold: f32,
    out: &mut Bitmap,
) -> Option<std::ops::Range<usize>> {
    if !map.iter().any(|&v| v >= threshold) {
        return None;
    }
    let on: Vec<f32> = map
        .iter()
        .map(|&v| f32::from(u8::from(v >= threshold)))
        .collect();
    let w = grid.cols.cells;
    let (mut y_lo, mut y_hi) = (usize::MAX, 0);
    for (i, _) in on.iter().enumerate().filter(|(_, &v)| v > 0.0) {
        let (r, c) = (i / w, i % w);
        let (ya, yb) = reach(&grid.rows, r);
        let (xa, xb) = reach(&grid.cols, c);
        for y in ya..=yb {
            for x in xa..=xb {
                if !out.get(y, x) && value_at(grid, &on, y, x) >= 0.5 {
                    out.set(y, x);
                    y_lo = y_lo.min(y);
                    y_hi = y_hi.max(y);
                }
            }
        }
    }
    (y_lo <= y_hi).then_some(y_lo..y_hi + 1)
}

/// Whether pixel `(y, x)` is on (every pixel evaluated: for drawing, not for the data set).
pub fn is_on(grid: &CellGrid, map: &[f32], threshold: f32, y: usize, x: usize) -> bool {
    let (r, fy) = locate(&grid.rows, y);
    let (c, fx) = locate(&grid.cols, x);
    let w = grid.cols.cells;
    let (r1, c1) = ((r + 1).min(grid.rows.cells - 1), (c + 1).min(w - 1));
    let at = |r: usize, c: usize| f32::from(u8::from(map[r * w + c] >= threshold));
    let top = at(r, c) * (1.0 - fx) + at(r, c1) * fx;
    let bottom = at(r1, c) * (1.0 - fx) + at(r1, c1) * fx;
    top * (1.0 - fy) + bottom * fy >= 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_evaluating_near_on_cells_misses_nothing() {
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
                    if is_on(&grid, &map, threshold, y, x) {
                        dense.set(y, x);
                    }
                }
            }
            assert_eq!(sparse, dense, "threshold {threshold}");
        }
    }

    #[test]
    fn tied_saturated_cells_are_on_over_their_whole_cells() {
        // Stride 4, centres at 1.5, 5.5, …: three cells tied at the top are on over the pixels
        // nearer to them than to the off cells — 12 of the 16 columns, every row.
        let grid = CellGrid::input(4, 16).conv(4, 4, 0);
        let map = [6.0, 6.0, 6.0, 5.9];
        let mut on = Bitmap::new(4, 16);
        active_pixels(&grid, &map, 6.0, &mut on);
        assert_eq!(on.count(), 4 * 12, "{on:?}");
        let lone = [1.0, 6.0, 1.0, 1.0];
        on.clear();
        active_pixels(&grid, &lone, 6.0, &mut on);
        // Midway to each neighbour's centre: columns 4..=7 (3.5 to 7.5).
        assert!((4..8).all(|x| on.get(0, x)) && !on.get(0, 3) && !on.get(0, 8));
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
