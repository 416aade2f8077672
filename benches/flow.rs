//! Time per training step by example (forward + backward + Adam) of the reference conditional
//! flow of alanine dipeptide (58 dims, 10 circular, 12 spline couplings of 8 bins, 256 hidden
//! units, 4 context channels) in this crate and, in the same run, in plain PyTorch
//! (`benches/flow_torch.py`, installed by `benches/install_torch.sh`).
//!
//! `cargo bench --bench flow` (add `-- --quick` for fewer steps).

use candle_core::{Device, Tensor};
use cgflow::flow::optim::{Adam, AdamConfig};
use cgflow::flow::{Flow, FlowSpec, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::f64::consts::PI;
use std::process::Command;
use std::time::Instant;

fn batch(flow: &Flow, n: usize, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
    let spec = flow.spec();
    let mut x = Vec::with_capacity(n * spec.dims);
    for _ in 0..n {
        for d in 0..spec.dims {
            x.push(if spec.circular.contains(&d) {
                rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI)
            } else {
                rng.sample::<f64, _>(StandardNormal)
            });
        }
    }
    let mut c = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let (phi, psi): (f64, f64) = (rng.gen_range(-PI..PI), rng.gen_range(-PI..PI));
        c.extend([phi.cos(), phi.sin(), psi.cos(), psi.sin()]);
    }
    let dev = flow.device();
    let dt = flow.dtype();
    (
        Tensor::from_vec(x, (n, spec.dims), dev).unwrap().to_dtype(dt).unwrap(),
        Tensor::from_vec(c, (n, 4), dev).unwrap().to_dtype(dt).unwrap(),
    )
}

fn time_steps(precision: Precision, n: usize, steps: usize) -> (f64, f64, usize) {
    let flow = Flow::new(&FlowSpec::aldp_conditional(precision, 0), &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, c) = batch(&flow, n, &mut rng);
    let mut adam = Adam::new(flow.params(), AdamConfig::default());
    let mut times = Vec::new();
    let mut phases = [0.0f64; 3];
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        let loss = flow.log_prob(&x, Some(&c)).unwrap().mean_all().unwrap().neg().unwrap();
        let t1 = Instant::now();
        let grads = loss.backward().unwrap();
        let t2 = Instant::now();
        adam.step(flow.params(), &grads, 1e-4).unwrap();
        if i >= 2 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            for (k, d) in [t1 - t0, t2 - t1, t2.elapsed()].iter().enumerate() {
                phases[k] += d.as_secs_f64() * 1e3 / steps as f64;
            }
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  [{precision:?} batch {n}: forward {:.1} ms, backward {:.1} ms, Adam {:.1} ms (means)]",
        phases[0], phases[1], phases[2]
    );
    (times[times.len() / 2], times[0], flow.params().count())
}

fn main() {
    // candle's parallel elementwise ops spin-wait on a second pool that fights gemm's and
    // rayon's threads on a small machine; one candle thread (serial elementwise ops) is faster.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let skip_torch = std::env::args().any(|a| a == "--no-torch");
    // `--only f64-64` or `--only mixed-1024` (precision-batch) runs one configuration, e.g. under a profiler.
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-torch/bin/python");
    println!("reference ALDP conditional flow, training step by example (forward + backward + Adam)");
    println!("threads: {}", rayon::current_num_threads());
    // Mixed (f32 conditioners, f64 splines and densities) is compared with PyTorch in float64,
    // the reference code's setting.
    for (precision, name) in [(Precision::F64, "float64"), (Precision::Mixed, "float64"), (Precision::F32, "float32")] {
        for n in [1024usize, 64] {
            let tag = format!("{precision:?}-{n}").to_lowercase();
            if only.as_ref().is_some_and(|o| *o != tag) {
                continue;
            }
            let steps = match (quick, n) {
                (true, 1024) => 3,
                (true, _) => 10,
                (false, 1024) => 10,
                (false, _) => 50,
            };
            let (median, min, params) = time_steps(precision, n, steps);
            print!("cgflow  {precision:?} batch {n:5}: {median:8.1} ms/step (min {min:.1}), {params} parameters");
            if skip_torch {
                println!();
                continue;
            }
            let torch = Command::new(&python)
                .arg(root.join("benches/flow_torch.py"))
                .args(["--dtype", name, "--batch", &n.to_string(), "--steps", &steps.to_string()])
                .output();
            match torch {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let value: serde_json::Value =
                        text.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
                    let torch_ms = value["ms_per_step_median"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "\n  pytorch {name} batch {n:5}: {torch_ms:8.1} ms/step -> cgflow is {:.2}x faster",
                        torch_ms / median
                    );
                }
                Ok(out) => println!(
                    "\n  pytorch failed: {}",
                    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                ),
                Err(e) => println!("\n  pytorch not run ({}: {e}); run benches/install_torch.sh", python.display()),
            }
        }
    }
}
