//! Throughput of the f32 products on MiniLM's projection shapes (4,096 tokens, weights in the
//! `[in, out]` layout the fast forward holds): `cargo run --release -p glassbox-models
//! --example f32_gemm_speed`. `GLASSBOX_SIMD=avx2` runs `gemm`'s AVX2 + FMA kernels, as an
//! AVX2-only CPU would; PyTorch's figure for the same shapes comes from `torch.nn.functional.linear`.
use glassbox_models::kernels::matmul_in_out;
use std::time::Instant;

fn main() {
    let tokens = 4096;
    println!("SIMD level: {:?}", glassbox_data::simd::level());
    for (k, n) in [(384, 1152), (384, 384), (384, 1536), (1536, 384)] {
        let x: Vec<f32> = (0..tokens * k).map(|i| ((i as f32) * 0.61).sin()).collect();
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i as f32) * 0.37).cos() * 0.1)
            .collect();
        let mut dst = vec![0f32; tokens * n];
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            matmul_in_out(&x, k, &w, n, &mut dst);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (tokens * k * n) as f64 / best / 1e9;
        println!(
            "{tokens} x {k} x {n}: {:.2} ms, {gflops:.0} GFLOP/s",
            best * 1e3
        );
    }
}
