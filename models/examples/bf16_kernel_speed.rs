//! Throughput of the bf16 product kernels on Gemma-2-2B's projection shapes (1,024 tokens):
//! `cargo run --release -p glassbox-models --example bf16_kernel_speed`. Set `GLASSBOX_AMX=off`
//! for the `VDPBF16PS` kernel, `GLASSBOX_SIMD=avx2` for the f32 route.
use glassbox_models::kernels::bf16_dot::{matmul_wt, round_bits, Packed};
use std::time::Instant;

fn main() {
    let tokens = 1024;
    for (k, n) in [
        (2304, 9216),
        (9216, 2304),
        (9248, 2304),
        (2304, 2048),
        (2304, 1024),
    ] {
        let x: Vec<f32> = (0..tokens * k).map(|i| ((i as f32) * 0.61).sin()).collect();
        let w: Vec<u16> = (0..n * k)
            .map(|i| round_bits(((i as f32) * 0.37).cos() * 0.1))
            .collect();
        let mut dst = vec![0f32; tokens * n];
        let mut scratch = Vec::new();
        let mut packed = Packed::default();
        let mut best = f64::MAX;
        let mut best_pack = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            packed.fill(&x, k);
            best_pack = best_pack.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            matmul_wt(&packed, &x, &w, n, &mut dst, (0, n), false, &mut scratch);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let flops = 2.0 * (tokens * k * n) as f64;
        println!(
            "{tokens} x {k} -> {n}: {:.2} ms, {:.0} GFLOP/s; packing {:.2} ms",
            best * 1e3,
            flops / best / 1e9,
            best_pack * 1e3
        );
    }
}
