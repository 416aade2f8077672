//! The flow engine: invertibility, log-determinants against finite-difference Jacobians,
//! parameter and input gradients (through the fused custom ops) against finite differences,
//! and clear errors for bad input.

use candle_core::{DType, Device, Tensor, Var};
use cgflow::flow::optim::{Adam, AdamConfig, Schedule};
use cgflow::flow::{CouplingKind, Flow, FlowSpec, Precision};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const PI: f64 = std::f64::consts::PI;

fn spec(coupling: CouplingKind, precision: Precision, context: usize) -> FlowSpec {
    let circular = match coupling {
        CouplingKind::Spline { .. } => vec![1, 4],
        CouplingKind::Affine { .. } => vec![],
    };
    FlowSpec {
        dims: 6,
        circular,
        context,
        layers: 4,
        coupling,
        hidden: 16,
        blocks: 1,
        shift_every: 2,
        seed: 3,
        precision,
    }
}

const SPLINE: CouplingKind = CouplingKind::Spline { bins: 8, tail_bound: 5.0 };
const AFFINE: CouplingKind = CouplingKind::Affine { max_log_scale: 3.0 };

/// Replaces every weight by N(0, scale^2) values, so the flow is far from the identity.
fn randomize(flow: &Flow, scale: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (_, var) in flow.params().entries() {
        let values: Vec<f64> = (0..var.elem_count()).map(|_| scale * rng.sample::<f64, _>(StandardNormal)).collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap().to_dtype(var.dtype()).unwrap();
        var.set(&t).unwrap();
    }
}

/// A batch of points: N(0, 1.5^2) on real dims, uniform on [-lim, lim) on circular ones.
fn points(flow: &Flow, n: usize, circular_limit: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spec = flow.spec();
    let mut out = Vec::with_capacity(n * spec.dims);
    for _ in 0..n {
        for d in 0..spec.dims {
            out.push(if spec.circular.contains(&d) {
                rng.gen_range(-circular_limit..circular_limit)
            } else {
                1.5 * rng.sample::<f64, _>(StandardNormal)
            });
        }
    }
    out
}

fn context(n: usize, width: usize, seed: u64) -> Option<Vec<f64>> {
    if width == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Some((0..n * width).map(|_| rng.gen_range(-1.0..1.0)).collect())
}

fn tensor(values: &[f64], cols: usize, dtype: DType) -> Tensor {
    Tensor::from_vec(values.to_vec(), (values.len() / cols, cols), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn wrapped(a: f64) -> f64 {
    (a + PI).rem_euclid(2.0 * PI) - PI
}

fn roundtrip_error(coupling: CouplingKind, precision: Precision, context_width: usize) -> (f64, f64) {
    let flow = Flow::new(&spec(coupling, precision, context_width), &Device::Cpu).unwrap();
    randomize(&flow, 0.1, 7);
    let n = 200;
    let dtype = precision.dtype();
    let x = tensor(&points(&flow, n, PI, 11), 6, dtype);
    let c = context(n, context_width, 5).map(|c| tensor(&c, context_width, dtype));
    let (z, ld_inverse) = flow.inverse(&x, c.as_ref()).unwrap();
    let (x_back, ld_forward) = flow.forward(&z, c.as_ref()).unwrap();
    let circular = &flow.spec().circular;
    let x_err = to_vec(&x)
        .iter()
        .zip(to_vec(&x_back))
        .enumerate()
        .map(|(i, (a, b))| if circular.contains(&(i % 6)) { wrapped(a - b).abs() } else { (a - b).abs() })
        .fold(0.0, f64::max);
    let ld_err = to_vec(&ld_inverse).iter().zip(to_vec(&ld_forward)).map(|(a, b)| (a + b).abs()).fold(0.0, f64::max);
    // The map must be far from the identity for the check to mean anything.
    let moved = to_vec(&x).iter().zip(to_vec(&z)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved > 0.1, "random weights should move points, moved {moved}");
    (x_err, ld_err)
}

#[test]
fn flows_invert_to_1e10_in_f64() {
    for coupling in [SPLINE, AFFINE] {
        for context_width in [0, 3] {
            let (x_err, ld_err) = roundtrip_error(coupling, Precision::F64, context_width);
            assert!(x_err < 1e-10, "{coupling:?} context {context_width}: x -> z -> x error {x_err:e}");
            assert!(ld_err < 1e-10, "{coupling:?} context {context_width}: log-det mismatch {ld_err:e}");
        }
    }
}

#[test]
fn mixed_precision_flows_invert_to_1e10() {
    // f32 conditioners, f64 transforms: both directions see the same f32 parameters, so the
    // inverse is exact to f64 rounding.
    for coupling in [SPLINE, AFFINE] {
        let (x_err, ld_err) = roundtrip_error(coupling, Precision::Mixed, 3);
        assert!(x_err < 1e-10, "{coupling:?}: x -> z -> x error {x_err:e}");
        assert!(ld_err < 1e-10, "{coupling:?}: log-det mismatch {ld_err:e}");
    }
    let flow = Flow::new(&spec(SPLINE, Precision::Mixed, 3), &Device::Cpu).unwrap();
    assert!(flow.params().entries().iter().all(|(_, v)| v.dtype() == DType::F32));
    assert_eq!(flow.dtype(), DType::F64);
}

#[test]
fn flows_invert_to_1e5_in_f32() {
    for coupling in [SPLINE, AFFINE] {
        let (x_err, ld_err) = roundtrip_error(coupling, Precision::F32, 3);
        assert!(x_err < 1e-5, "{coupling:?}: x -> z -> x error {x_err:e}");
        assert!(ld_err < 1e-4, "{coupling:?}: log-det mismatch {ld_err:e}");
    }
}

#[test]
fn log_determinant_equals_finite_difference_jacobian() {
    for coupling in [SPLINE, AFFINE] {
        let flow = Flow::new(&spec(coupling, Precision::F64, 3), &Device::Cpu).unwrap();
        randomize(&flow, 0.1, 8);
        let dims = 6;
        let h = 1e-5;
        let zs = points(&flow, 5, 2.5, 12);
        let ctx = context(5, 3, 13).unwrap();
        for s in 0..5 {
            let z0 = &zs[s * dims..(s + 1) * dims];
            // Rows: +h and -h along each dimension, then the point itself.
            let mut rows = Vec::new();
            for j in 0..dims {
                for sign in [1.0, -1.0] {
                    let mut z = z0.to_vec();
                    z[j] += sign * h;
                    rows.extend(z);
                }
            }
            rows.extend_from_slice(z0);
            let n = 2 * dims + 1;
            let c: Vec<f64> = (0..n).flat_map(|_| ctx[s * 3..s * 3 + 3].to_vec()).collect();
            let (x, logdet) = flow.forward(&tensor(&rows, dims, DType::F64), Some(&tensor(&c, 3, DType::F64))).unwrap();
            let x = to_vec(&x);
            let circular = &flow.spec().circular;
            let jac = DMatrix::from_fn(dims, dims, |i, j| {
                let d = x[(2 * j) * dims + i] - x[(2 * j + 1) * dims + i];
                let d = if circular.contains(&i) { wrapped(d) } else { d };
                d / (2.0 * h)
            });
            let fd = jac.determinant().abs().ln();
            let analytic = to_vec(&logdet)[n - 1];
            assert!(
                (fd - analytic).abs() < 1e-6,
                "{coupling:?} sample {s}: log|det J| {analytic} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn gradients_through_fused_ops_equal_finite_differences() {
    for coupling in [SPLINE, AFFINE] {
        let flow = Flow::new(&spec(coupling, Precision::F64, 3), &Device::Cpu).unwrap();
        randomize(&flow, 0.1, 9);
        let n = 16;
        let xs = points(&flow, n, 2.5, 14);
        let c = tensor(&context(n, 3, 15).unwrap(), 3, DType::F64);
        let x_var = Var::from_tensor(&tensor(&xs, 6, DType::F64)).unwrap();
        let loss_of =
            |x: &Tensor| -> f64 { flow.log_prob(x, Some(&c)).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() };
        let loss = flow.log_prob(x_var.as_tensor(), Some(&c)).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let h = 1e-6;
        let mut checked = 0;
        // Every parameter tensor: three of its elements.
        for (name, var) in flow.params().entries() {
            let g = to_vec(grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}")));
            let base = to_vec(var.as_tensor());
            for k in [0, base.len() / 2, base.len() - 1] {
                let mut plus = base.clone();
                plus[k] += h;
                var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap()).unwrap();
                let lp = loss_of(x_var.as_tensor());
                let mut minus = base.clone();
                minus[k] -= h;
                var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap()).unwrap();
                let lm = loss_of(x_var.as_tensor());
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{coupling:?} {name}[{k}]: grad {} vs fd {fd}",
                    g[k]
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * 4 * 8, "checked {checked} parameter gradients");
        // And the gradient with respect to the input points.
        let gx = to_vec(grads.get(x_var.as_tensor()).unwrap());
        for k in [0, 1, 7, 20, 45, 95] {
            let mut plus = xs.clone();
            plus[k] += h;
            let mut minus = xs.clone();
            minus[k] -= h;
            let fd = (loss_of(&tensor(&plus, 6, DType::F64)) - loss_of(&tensor(&minus, 6, DType::F64))) / (2.0 * h);
            assert!((fd - gx[k]).abs() < 1e-5 * (1.0 + fd.abs()), "{coupling:?} dx[{k}]: {} vs fd {fd}", gx[k]);
        }
    }
}

#[test]
fn a_fresh_flow_is_the_identity() {
    let mut s = spec(SPLINE, Precision::F64, 0);
    s.shift_every = 0;
    let flow = Flow::new(&s, &Device::Cpu).unwrap();
    let z = tensor(&points(&flow, 50, PI, 3), 6, DType::F64);
    let (x, logdet) = flow.forward(&z, None).unwrap();
    let err = to_vec(&x).iter().zip(to_vec(&z)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-12, "identity error {err}");
    assert!(to_vec(&logdet).iter().all(|l| l.abs() < 1e-12));
    // Log-density of the base: 4 real dims N(0,1), 2 circular U[-pi, pi).
    let lp = to_vec(&flow.log_prob(&z, None).unwrap());
    let zv = to_vec(&z);
    let expected =
        -0.5 * [0, 2, 3, 5].iter().map(|&d| zv[d] * zv[d]).sum::<f64>() - 2.0 * (2.0 * PI).ln() - 2.0 * (2.0 * PI).ln();
    assert!((lp[0] - expected).abs() < 1e-12, "log q {} vs {expected}", lp[0]);
}

#[test]
fn reference_aldp_flow_has_the_published_size() {
    let flow = Flow::new(&FlowSpec::aldp_conditional(Precision::F32, 0), &Device::Cpu).unwrap();
    // About 3.8 M parameters (BRIEF section 3).
    let count = flow.params().count();
    assert!((3_700_000..3_900_000).contains(&count), "{count} parameters");
    // The bound a reader checks the weights file against holds, and is not loose.
    let bound = FlowSpec::aldp_conditional(Precision::F32, 0).min_parameters();
    assert!(bound <= count as u128 && bound * 3 > count as u128, "bound {bound} for {count}");
}

#[test]
fn min_parameters_bounds_the_parameter_count_from_below() {
    for (hidden, blocks, context) in [(8, 0, 0), (16, 1, 3), (32, 2, 3), (5, 3, 1)] {
        let spec = FlowSpec { hidden, blocks, context, ..spec(SPLINE, Precision::F64, 3) };
        let count = Flow::new(&spec, &Device::Cpu).unwrap().params().count() as u128;
        assert!(spec.min_parameters() <= count && spec.min_parameters() > 0, "{spec:?}: {count}");
    }
    let huge = FlowSpec { dims: usize::MAX, hidden: usize::MAX, ..spec(SPLINE, Precision::F64, 3) };
    assert_eq!(huge.min_parameters(), u128::MAX);
}

#[test]
fn bad_input_gives_clear_errors() {
    let flow = Flow::new(&spec(SPLINE, Precision::F64, 3), &Device::Cpu).unwrap();
    let x = tensor(&points(&flow, 4, PI, 1), 6, DType::F64);
    let wrong_context = tensor(&[0.0; 8], 2, DType::F64);
    let err = flow.log_prob(&x, Some(&wrong_context)).unwrap_err().to_string();
    assert!(err.contains("context of shape [4, 2], expected [4, 3]"), "{err}");
    let err = flow.log_prob(&x, None).unwrap_err().to_string();
    assert!(err.contains("needs a context of width 3"), "{err}");
    let mut bad = points(&flow, 4, PI, 1);
    bad[9] = f64::NAN;
    let c = tensor(&[0.1; 12], 3, DType::F64);
    let err = flow.log_prob(&tensor(&bad, 6, DType::F64), Some(&c)).unwrap_err().to_string();
    assert!(err.contains("non-finite value at row 1, column 3"), "{err}");
    let err = flow.log_prob(&tensor(&[0.0; 10], 5, DType::F64), Some(&tensor(&[0.1; 6], 3, DType::F64))).unwrap_err();
    assert!(err.to_string().contains("5 columns, the flow has 6 dims"), "{err}");
    let mut s = spec(AFFINE, Precision::F64, 0);
    s.circular = vec![2];
    assert!(Flow::new(&s, &Device::Cpu).unwrap_err().to_string().contains("circular"));
}

#[test]
fn adam_matches_hand_computed_steps_and_clips() {
    let flow = Flow::new(&spec(AFFINE, Precision::F64, 0), &Device::Cpu).unwrap();
    let (name, var) = flow.params().entries()[0].clone();
    let before = to_vec(var.as_tensor());
    // loss = 3 * sum(w): gradient 3 everywhere; Adam's first steps move each weight by -lr.
    let mut adam = Adam::new(flow.params(), AdamConfig { max_grad_norm: None, ..AdamConfig::default() });
    for step in 1..=2 {
        let loss = (var.as_tensor().sum_all().unwrap() * 3.0).unwrap();
        let grads = loss.backward().unwrap();
        let report = adam.step(flow.params(), &grads, 0.01).unwrap();
        assert!((report.grad_norm - 3.0 * (before.len() as f64).sqrt()).abs() < 1e-9);
        let after = to_vec(var.as_tensor());
        for (a, b) in after.iter().zip(&before) {
            assert!((a - (b - 0.01 * step as f64)).abs() < 1e-8, "{name}: {a} vs {}", b - 0.01 * step as f64);
        }
    }
    // Clipping scales the gradient to the maximum norm.
    let mut clipped = Adam::new(flow.params(), AdamConfig { max_grad_norm: Some(1.0), ..AdamConfig::default() });
    let loss = (var.as_tensor().sum_all().unwrap() * 3.0).unwrap();
    let report = clipped.step(flow.params(), &loss.backward().unwrap(), 0.0).unwrap();
    assert!((report.clip_scale * report.grad_norm - 1.0).abs() < 1e-12);
    // A NaN gradient is refused and the weights stay as they were.
    let snapshot = to_vec(var.as_tensor());
    let loss = (var.as_tensor().sum_all().unwrap() * f64::NAN).unwrap();
    let err = adam.step(flow.params(), &loss.backward().unwrap(), 0.01).unwrap_err();
    assert!(err.to_string().contains("non-finite gradient"), "{err}");
    assert_eq!(snapshot, to_vec(var.as_tensor()));
    // Warm-up then cosine decay.
    let s = Schedule { lr: 1.0, warmup_steps: 10, cosine_steps: Some(100), final_lr: 0.1 };
    assert!((s.lr_at(0) - 0.1).abs() < 1e-12 && (s.lr_at(9) - 1.0).abs() < 1e-12);
    assert!((s.lr_at(60) - 0.55).abs() < 1e-12 && (s.lr_at(500) - 0.1).abs() < 1e-12);
}

#[test]
fn energy_loss_gradient_equals_finite_differences_with_dropping_and_regularisation() {
    use cgflow::energy::toy::DoubleWell;
    use cgflow::flow::train::{kl_loss, regularize_energy, EnergyLossConfig, PotentialTarget, TargetEnergy};
    use std::sync::Arc;
    let spec = FlowSpec {
        dims: 2,
        circular: vec![],
        context: 0,
        layers: 4,
        coupling: SPLINE,
        hidden: 16,
        blocks: 1,
        shift_every: 0,
        seed: 5,
        precision: Precision::F64,
    };
    let flow = Flow::new(&spec, &Device::Cpu).unwrap();
    randomize(&flow, 0.2, 21);
    let target = Arc::new(PotentialTarget::new(DoubleWell::default()));
    let dyn_target: Arc<dyn TargetEnergy> = target.clone();
    // Regularise above -5 kT so that part of the batch is on the logarithmic branch.
    let config = EnergyLossConfig { drop_top_k: 3, regularize_above: Some(-5.0) };
    let loss_at = || {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let (loss, report, _) = kl_loss(&flow, dyn_target.clone(), 32, None, None, &config, &mut rng).unwrap();
        (loss, report)
    };
    let (loss, report) = loss_at();
    assert_eq!(report.dropped, 3);
    assert_eq!(target.evaluations(), 32);
    let grads = loss.backward().unwrap();
    let h = 1e-6;
    for (name, var) in flow.params().entries().iter().step_by(3) {
        let g = to_vec(grads.get(var.as_tensor()).unwrap());
        let base = to_vec(var.as_tensor());
        let k = base.len() / 3;
        let value_at = |delta: f64| {
            let mut v = base.clone();
            v[k] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let value = loss_at().1.loss;
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            value
        };
        let fd = (value_at(h) - value_at(-h)) / (2.0 * h);
        assert!((fd - g[k]).abs() < 1e-5 * (1.0 + fd.abs()), "{name}[{k}]: grad {} vs fd {fd}", g[k]);
    }
    // The regulariser: identity below the cut, cut + ln(1 + u - cut) above, continuous slope 1.
    assert_eq!(regularize_energy(3.0, Some(10.0)), (3.0, 1.0));
    let (v, s) = regularize_energy(10.0 + (std::f64::consts::E - 1.0), Some(10.0));
    assert!((v - 11.0).abs() < 1e-12 && (s - 1.0 / std::f64::consts::E).abs() < 1e-12);
}
