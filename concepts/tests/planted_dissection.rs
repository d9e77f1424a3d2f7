//! Network Dissection on planted units, where the right labels are known by construction: a
//! stride-4 feature map over masked texture composites whose channels are
//! - 0: the fraction of each cell's receptive field covered by stripes (fires exactly on them);
//! - 1: the same for the red regions;
//! - 2: seeded noise;
//! - 3: a fixed place in every image (top-left), whatever it shows;
//! - 4: stripes again, but 20 % of the images' maps swapped with another image's (weaker).
//!
//! Channel 0 must be labelled "stripes" with IoU near 1 when the quantile matches the stripes'
//! area, channel 1 "red", channels 2 and 3 unlabelled — and the permutation baseline must be
//! what keeps channel 3 (which overlaps every concept somewhat) unlabelled at a low IoU bar.

use glassbox_concepts::dissect::{dissect_hook, DissectOptions, HookDissection};
use glassbox_data::grid::CellGrid;
use glassbox_data::images::{read_image_dataset, Preprocessor};
use glassbox_data::masked_textures::write_masked_set;
use glassbox_data::masks::{read_masks, MaskSet};
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::textures::Texture;
use glassbox_data::{HookPoint, NoProgress};
use std::path::Path;

const SIZE: usize = 64;
const UNITS: usize = 5;

fn coverage(masks: &MaskSet, i: usize, concept: usize, grid: &CellGrid, cell: usize) -> f32 {
    let Some(m) = &masks.masks[i][concept] else {
        return 0.0;
    };
    let r = grid.rect(cell).unwrap();
    let mut on = 0;
    for y in r.y0..=r.y1 {
        for x in r.x0..=r.x1 {
            on += m.get(y, x) as u32;
        }
    }
    on as f32 / ((r.y1 - r.y0 + 1) * (r.x1 - r.x0 + 1)) as f32
}

/// Writes the planted channels of every image to `dir` as a store folder.
fn plant(dir: &Path, masks: &MaskSet, grid: &CellGrid) {
    let at = |name: &str| masks.concepts.iter().position(|c| c == name).unwrap();
    let (stripes, red) = (at("stripes"), at("red"));
    let n = masks.masks.len();
    let meta = ShardMeta {
        model_id: "planted".into(),
        revision: "none".into(),
        hook: HookPoint::Stem,
        kind: StoreKind::Activation,
        pool: None,
        width: UNITS,
        dtype: ActDtype::F32,
        compression: Codec::None,
    };
    let mut w = ActivationWriter::create(&dir.join("part-00000.parquet"), meta).unwrap();
    let mut state = 12345u64;
    let mut noise = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    for i in 0..n {
        let (mut ids, mut pos, mut values) = (Vec::new(), Vec::new(), Vec::new());
        // Channel 4 reads another image's stripes for every fifth image.
        let swapped = if i % 5 == 0 { (i + 7) % n } else { i };
        for cell in 0..grid.cells() {
            let (r, c) = grid.cell(cell).unwrap();
            ids.push(i as u64);
            pos.push(cell as u32);
            values.extend([
                coverage(masks, i, stripes, grid, cell),
                coverage(masks, i, red, grid, cell),
                noise(),
                if r < grid.rows.cells / 3 && c < grid.cols.cells / 3 {
                    1.0
                } else {
                    0.0
                } + 0.01 * noise(),
                coverage(masks, swapped, stripes, grid, cell),
            ]);
        }
        w.write(&ids, Some(&pos), &values).unwrap();
    }
    w.finish().unwrap();
}

fn setup() -> (tempfile::TempDir, MaskSet, CellGrid) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_masked_set(&data, &Texture::CONCEPTS, 12, SIZE as u32, 4).unwrap();
    let ds = read_image_dataset(&data.join("dataset.jsonl")).unwrap();
    let masks = read_masks(&ds, &Preprocessor::identity()).unwrap();
    // Two stride-2 "SAME" convolutions: 16 × 16 cells, stride 4, field 7.
    let grid = CellGrid::input(SIZE, SIZE).conv_same(3, 2).conv_same(3, 2);
    plant(&dir.path().join("hook"), &masks, &grid);
    (dir, masks, grid)
}

fn dissect(dir: &Path, masks: &MaskSet, grid: &CellGrid, opts: &DissectOptions) -> HookDissection {
    dissect_hook(
        &dir.join("hook"),
        HookPoint::Stem,
        grid,
        masks,
        opts,
        &NoProgress,
    )
    .unwrap()
}

#[test]
fn a_unit_that_fires_exactly_on_stripes_is_labelled_stripes_with_iou_near_one() {
    let (dir, masks, grid) = setup();
    let stripes = masks.concepts.iter().position(|c| c == "stripes").unwrap();
    let total = (masks.masks.len() * SIZE * SIZE) as f64;
    let area = masks.areas[stripes] as f64 / total;
    let opts = DissectOptions {
        quantile: area,
        ..Default::default()
    };
    let d = dissect(dir.path(), &masks, &grid, &opts);
    let u = &d.units[0];
    println!("unit 0: {u:?}");
    assert_eq!(u.concept, "stripes");
    assert!(
        u.iou > 0.85,
        "IoU {} for a unit that is the stripes mask",
        u.iou
    );
    assert!(u.labelled && u.q_value < 1e-6, "{u:?}");
    assert!(u.iou > u.baseline_mean + 10.0 * u.baseline_sd);
    for (unit, what) in [(2, "noise"), (3, "a fixed place")] {
        assert!(
            !d.units[unit].labelled,
            "unit {unit} ({what}) labelled: {:?}",
            d.units[unit]
        );
    }
    // The weakened copy is still stripes, at a lower IoU.
    assert_eq!(d.units[4].concept, "stripes");
    assert!(
        d.units[4].iou < u.iou - 0.05,
        "{} vs {}",
        d.units[4].iou,
        u.iou
    );
}

#[test]
fn at_the_papers_settings_labels_follow_the_masks_and_the_baseline_keeps_a_positional_unit_out() {
    let (dir, masks, grid) = setup();
    let show = |d: &HookDissection| {
        for u in &d.units {
            println!(
                "unit {}: {} IoU {:.3} (baseline {:.3} ± {:.3}) q {:.2e} labelled {}",
                u.unit, u.concept, u.iou, u.baseline_mean, u.baseline_sd, u.q_value, u.labelled
            );
        }
    };
    let opts = DissectOptions::default();
    let d = dissect(dir.path(), &masks, &grid, &opts);
    show(&d);
    assert_eq!(
        (d.units[0].concept.as_str(), d.units[0].labelled),
        ("stripes", true)
    );
    assert_eq!(
        (d.units[1].concept.as_str(), d.units[1].labelled),
        ("red", true)
    );
    assert!(!d.units[2].labelled && !d.units[3].labelled);
    // Same seed, same numbers.
    let again = dissect(dir.path(), &masks, &grid, &opts);
    assert_eq!(again.units, d.units);
    // Every unit × concept pair scored; unit 0's top images all contain stripes.
    assert_eq!(d.scores.len(), UNITS * masks.concepts.len());
    let top: Vec<_> = d.examples.iter().filter(|e| e.unit == 0).collect();
    assert_eq!(top.len(), 3);
    let stripes = masks.concepts.iter().position(|c| c == "stripes").unwrap();
    assert!(top
        .iter()
        .all(|e| masks.masks[e.example_id as usize][stripes].is_some()));

    // A wider quantile and a low IoU bar: the positional unit now overlaps some concept above
    // the bar by where concepts happen to lie — as much under shuffled pairings, so no label.
    let loose = DissectOptions {
        quantile: 0.05,
        iou_threshold: 0.01,
        ..Default::default()
    };
    let d = dissect(dir.path(), &masks, &grid, &loose);
    show(&d);
    let positional = &d.units[3];
    assert!(
        positional.iou >= 0.01 && !positional.labelled,
        "{positional:?}"
    );
    assert!(d.units[0].labelled && d.units[1].labelled);
}

#[test]
fn a_store_that_disagrees_with_the_grid_or_the_masks_is_named() {
    let (dir, masks, grid) = setup();
    // The model's grid says 16 × 16 cells; a 15 × 16 grid does not match the stored rows.
    let wrong = CellGrid::input(SIZE - 4, SIZE)
        .conv_same(3, 2)
        .conv_same(3, 2);
    let opts = DissectOptions::default();
    let hook = dir.path().join("hook");
    let e = dissect_hook(&hook, HookPoint::Stem, &wrong, &masks, &opts, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("model input"), "{e}");
    let narrow = CellGrid::input(SIZE, SIZE)
        .conv_same(3, 2)
        .conv_same(3, 2)
        .conv_same(3, 2);
    let narrow = CellGrid {
        rows: narrow.rows,
        cols: grid.cols,
        ..grid
    };
    let e = dissect_hook(&hook, HookPoint::Stem, &narrow, &masks, &opts, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("example 0 has 256 positions"), "{e}");
    // Fewer mask rows than stored images: the data file changed.
    let mut fewer = masks.clone();
    fewer.masks.truncate(10);
    let e = dissect_hook(&hook, HookPoint::Stem, &grid, &fewer, &opts, &NoProgress).unwrap_err();
    assert!(
        e.to_string().contains("no row in the data set's masks"),
        "{e}"
    );
}

#[test]
fn shuffles_are_seeded_permutations() {
    use glassbox_concepts::dissect::score::permutations;
    let a = permutations(50, 3, 7);
    assert_eq!(a, permutations(50, 3, 7));
    assert_ne!(a, permutations(50, 3, 8));
    for p in &a {
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u32>>());
    }
}
