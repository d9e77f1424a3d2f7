//! One EfficientNet-Lite block, forward and backward, a few images at a time.
//!
//! A block widens its input six times (expansion), filters it (depthwise) and narrows it again
//! (projection). Run layer by layer over a batch of 16 at 224², each wide tensor is up to 77 MB,
//! and a plain forward holds the whole batch's while the next stage reads it. Here each stage
//! runs on a chunk of images and the next stage reads the chunk's output at once: a plain forward
//! (extraction) keeps only one chunk's wide tensors, and the backward's gradients of them are
//! chunk-sized (the taped forward still keeps the batch's activations for the ReLU6 masks). Peak
//! memory falls (EfficientNet-Lite0: extraction 370 → 259 MB, IG at batch 16 702 → 599 MB); time
//! does not change — the chunks were sized to stay in the last-level cache on the guess that the
//! depthwise loops waited on DRAM, and they did not (docs/perf/attribution.md, session 28). The
//! arithmetic per image is the same, stage for stage, and so are the results.
//!
//! Used when no hook reads or replaces the block's inner activations (a hook sees a whole
//! batch's tensor before the next stage runs, which a chunk cannot give it).

use super::backward_parts::Recorder;
use super::conv::{same_padding, Nhwc};
use super::depthwise::{
    conv_depthwise_into, depthwise_backward, depthwise_output, DepthwiseFilter, Relu6Masks,
};
use super::efficientnet::{Block, EfficientNet};
use super::efficientnet_forward::Tape;
use crate::hooks::{ConvPart, HookPoint};
use crate::kernels::{add_bias, bias_relu6, matmul_w, matmul_wt, threads, Recycler};
use crate::Result;

/// The wide tensors of one chunk should fit in this many bytes: half of a 32 MiB last-level
/// cache. (2 to 16 MiB ran equally fast; the smaller the chunk, the less a plain forward holds,
/// but the narrower the products.)
const CHUNK_BYTES: usize = 16 << 20;

/// Images per chunk: as many as keep the chunk's widest tensor (the expansion's output, or its
/// gradient; `wide_per_image` floats per image) within `budget` bytes, but at least one per
/// thread, since the depthwise transpose runs in parallel over images.
fn images_per_chunk(batch: usize, wide_per_image: usize, budget: usize, threads: usize) -> usize {
    let by_cache = budget / (wide_per_image * std::mem::size_of::<f32>()).max(1);
    by_cache.max(threads).clamp(1, batch.max(1))
}

/// The shapes of one block: its input, the expanded (or input) tensor the depthwise
/// convolution reads, and the depthwise output.
#[derive(Clone, Copy)]
struct BlockShapes {
    input: Nhwc,
    wide: Nhwc,
    filtered: Nhwc,
}

impl BlockShapes {
    fn new(b: &Block, input: Nhwc) -> Self {
        let wide = Nhwc {
            channels: b.expanded,
            ..input
        };
        let pad = block_pad(b, wide);
        Self {
            input,
            wide,
            filtered: depthwise_output(wide, pad),
        }
    }

    /// Images per chunk for this block (see [`images_per_chunk`]).
    fn chunk_images(self) -> usize {
        let batch = self.input.batch;
        let wide = self.wide.len() / batch.max(1);
        images_per_chunk(batch, wide, CHUNK_BYTES, threads())
    }

    /// The same shapes for `images` images.
    fn of(self, images: usize) -> Self {
        let with = |s: Nhwc| Nhwc { batch: images, ..s };
        Self {
            input: with(self.input),
            wide: with(self.wide),
            filtered: with(self.filtered),
        }
    }
}

fn block_pad(b: &Block, wide: Nhwc) -> (super::conv::Padded, super::conv::Padded) {
    (
        same_padding(wide.height, b.kernel, b.stride),
        same_padding(wide.width, b.kernel, b.stride),
    )
}

fn filter(b: &Block, wide: Nhwc) -> DepthwiseFilter<'_> {
    DepthwiseFilter {
        weight_taps: &b.depthwise.weight,
        bias: &b.depthwise.bias,
        kernel: b.kernel,
        stride: b.stride,
        pad: block_pad(b, wide),
    }
}

/// A buffer of `n` floats for a whole batch (kept on the tape afterwards) or for one chunk
/// (reused from chunk to chunk, given back at the end).
enum Wide {
    Batch(Vec<f32>),
    Chunk(Vec<f32>),
}

impl Wide {
    fn new(spare: &Recycler, keep: bool, batch_len: usize, chunk_len: usize) -> Self {
        if keep {
            Wide::Batch(spare.take(batch_len))
        } else {
            Wide::Chunk(spare.take(chunk_len))
        }
    }

    /// The floats of the chunk that starts `offset` floats into the batch.
    fn chunk(&mut self, offset: usize, len: usize) -> &mut [f32] {
        match self {
            Wide::Batch(v) => &mut v[offset..offset + len],
            Wide::Chunk(v) => &mut v[..len],
        }
    }
}

impl EfficientNet {
    /// The hook points inside block `b` (the expansion's output, if it has one, and the
    /// depthwise convolution's): the block runs chunk by chunk only when no hook wants them.
    pub(super) fn inner_points(b: &Block) -> [Option<HookPoint>; 2] {
        [
            b.expand
                .as_ref()
                .map(|_| Self::block_point(b, ConvPart::Expand)),
            Some(Self::block_point(b, ConvPart::Depthwise)),
        ]
    }

    /// Block `b`'s output for `input` (`shape`), chunk by chunk. With a `tape`, the expansion's
    /// and depthwise convolution's outputs (after their ReLU6) are kept on it for the
    /// backward; without, each chunk's wide tensors are scratch.
    pub(super) fn block_forward_chunked(
        &self,
        spare: &Recycler,
        b: &Block,
        input: &[f32],
        shape: Nhwc,
        mut tape: Option<&mut Tape>,
    ) -> (Vec<f32>, Nhwc) {
        let whole = BlockShapes::new(b, shape);
        let n = whole.chunk_images();
        let keep = tape.is_some();
        let mut expanded = b
            .expand
            .as_ref()
            .map(|_| Wide::new(spare, keep, whole.wide.len(), whole.of(n).wide.len()));
        let mut filtered = Wide::new(
            spare,
            keep,
            whole.filtered.len(),
            whole.of(n).filtered.len(),
        );
        let out_shape = Nhwc {
            channels: b.output,
            ..whole.filtered
        };
        let mut out = spare.take(out_shape.len());
        let mut first = 0;
        while first < shape.batch {
            let images = n.min(shape.batch - first);
            let part = whole.of(images);
            let per = |s: Nhwc, c: usize| (first * s.pixels() * c, images * s.pixels() * c);
            let (at, len) = per(part.input, b.input);
            let x = &input[at..at + len];
            let wide: &[f32] = match (&b.expand, expanded.as_mut()) {
                (Some(e), Some(buf)) => {
                    let (at, len) = per(part.wide, b.expanded);
                    let h = buf.chunk(at, len);
                    matmul_wt(x, b.input, &e.weight, b.expanded, h);
                    bias_relu6(h, &e.bias);
                    h
                }
                _ => x,
            };
            let (at, len) = per(part.filtered, b.expanded);
            let d = filtered.chunk(at, len);
            conv_depthwise_into(d, wide, part.wide, filter(b, part.wide));
            bias_relu6(d, &[]);
            let (at, len) = per(part.filtered, b.output);
            let o = &mut out[at..at + len];
            matmul_wt(d, b.expanded, &b.project.weight, b.output, o);
            add_bias(o, &b.project.bias);
            if b.skip() {
                o.iter_mut().zip(x).for_each(|(o, i)| *o += i);
            }
            first += images;
        }
        let [expand_point, dw_point] = Self::inner_points(b);
        for (buf, point, shape) in [
            (expanded, expand_point, whole.wide),
            (Some(filtered), dw_point, whole.filtered),
        ] {
            match (buf, point, tape.as_deref_mut()) {
                (Some(Wide::Batch(v)), Some(p), Some(t)) => t.keep(p, v, shape),
                (Some(Wide::Batch(v) | Wide::Chunk(v)), _, _) => spare.give(v),
                (None, _, _) => {}
            }
        }
        (out, out_shape)
    }

    /// Whether [`Self::block_backward_chunked`] may run `b`: no gradient is wanted or seeded at
    /// its inner points.
    pub(super) fn chunks_backward(b: &Block, record: &Recorder<'_>) -> bool {
        Self::inner_points(b)
            .into_iter()
            .flatten()
            .all(|p| !record.points().contains(&p) && record.pending() != Some(p))
    }

    /// From the gradient at block `b`'s output to the gradient at its input, chunk by chunk:
    /// the projection's transpose, the depthwise transpose with both ReLU6 derivatives, the
    /// expansion's transpose, the skip. The block's tape entries go back to the recycler.
    pub(super) fn block_backward_chunked(
        &self,
        b: &Block,
        input: Nhwc,
        g_out: Vec<f32>,
        tape: &mut Tape,
    ) -> Result<Vec<f32>> {
        let spare = &self.spare;
        let whole = BlockShapes::new(b, input);
        let n = whole.chunk_images();
        let [expand_point, dw_point] = Self::inner_points(b);
        let dw_point = dw_point.expect("every block has a depthwise convolution");
        let mut g_d = spare.take(whole.of(n).filtered.len());
        let mut g_in = spare.take(whole.input.len());
        let mut g_h = b
            .expand
            .as_ref()
            .map(|_| spare.take(whole.of(n).wide.len()));
        {
            let filtered = tape.get(dw_point)?.0;
            let expanded = match expand_point {
                Some(p) => Some(tape.get(p)?.0),
                None => None,
            };
            let mut first = 0;
            while first < input.batch {
                let images = n.min(input.batch - first);
                let part = whole.of(images);
                let per = |s: Nhwc, c: usize| {
                    let at = first * s.pixels() * c;
                    at..at + images * s.pixels() * c
                };
                let out_rows = per(part.filtered, b.output);
                let g_o = &g_out[out_rows];
                let g_d = &mut g_d[..part.filtered.len()];
                matmul_w(g_o, b.output, &b.project.weight, b.expanded, g_d);
                let wide_rows = per(part.wide, b.expanded);
                let masks = Relu6Masks {
                    output: Some(&filtered[per(part.filtered, b.expanded)]),
                    input: expanded.map(|e| &e[wide_rows.clone()]),
                };
                let in_rows = per(part.input, b.input);
                // Without an expansion the transpose writes the block's input gradient.
                let dst = match g_h.as_mut() {
                    Some(g_h) => &mut g_h[..part.wide.len()],
                    None => &mut g_in[in_rows.clone()],
                };
                let (taps, k, stride) = (&b.depthwise.weight, b.kernel, b.stride);
                depthwise_backward(dst, g_d, masks, part.filtered, taps, k, stride, part.wide);
                if let (Some(e), Some(g_h)) = (&b.expand, g_h.as_ref()) {
                    let g_i = &mut g_in[in_rows.clone()];
                    matmul_w(&g_h[..part.wide.len()], b.expanded, &e.weight, b.input, g_i);
                }
                if b.skip() {
                    let g_o = &g_out[per(part.filtered, b.output)];
                    g_in[in_rows].iter_mut().zip(g_o).for_each(|(a, g)| *a += g);
                }
                first += images;
            }
        }
        spare.give(g_d);
        if let Some(v) = g_h {
            spare.give(v);
        }
        spare.give(g_out);
        for p in expand_point.into_iter().chain([dw_point]) {
            if let Ok(v) = tape.remove(p) {
                spare.give(v);
            }
        }
        Ok(g_in)
    }
}

#[cfg(test)]
mod tests {
    use super::images_per_chunk;

    #[test]
    fn chunks_fit_the_budget_but_keep_every_thread_busy() {
        const MB: usize = 1 << 20;
        // 112² × 96 floats (EfficientNet-Lite0's widest tensor per 224² image): 4.6 MiB.
        let wide = 112 * 112 * 96;
        assert_eq!(images_per_chunk(16, wide, 16 * MB, 2), 3);
        assert_eq!(images_per_chunk(16, wide, 16 * MB, 8), 8);
        assert_eq!(images_per_chunk(2, wide, 16 * MB, 1), 2);
        assert_eq!(images_per_chunk(16, wide, MB, 1), 1);
        // Late blocks (7² × 1152 floats) take the whole batch in one chunk.
        assert_eq!(images_per_chunk(16, 7 * 7 * 1152, 16 * MB, 2), 16);
        assert_eq!(images_per_chunk(0, wide, 16 * MB, 2), 1);
    }
}
