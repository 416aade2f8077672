//! The conditional molecular target: flow-space geometry of alanine dipeptide given (phi, psi),
//! energies against direct OpenMM evaluations, gradients against finite differences, chirality.

use cgflow::coords::aldp;
use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::flow::molecular::{ConditionalMolecularTarget, ConditionalMolecule};
use cgflow::flow::train::TargetEnergy;
use cgflow::openmm::{Platform, System};
use rand::{Rng, SeedableRng};

use crate::util::{aldp as aldp_file, min_energy_positions, perturbed};

fn reference_energy() -> OpenMmEnergy {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let config = OpenMmEnergyConfig { workers: Some(1), ..Default::default() };
    OpenMmEnergy::new(&system, &Platform::new("Reference").expect("platform"), &config).expect("model")
}

#[test]
fn minimum_maps_to_zero_and_structures_carry_the_requested_phi_psi() {
    let x_min = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x_min).expect("molecule");
    assert_eq!((molecule.fine_dims(), molecule.cg_dims(), molecule.context_width()), (58, 2, 4));
    assert_eq!(molecule.fine_circular_indices(), vec![5, 8, 19, 22, 25, 28, 31, 45, 48, 51]);
    let (fine, cg, _) = molecule.from_cartesian(&x_min).expect("forward");
    assert!(fine.iter().all(|v| v.abs() < 1e-10), "fine coordinates of the minimum: {fine:?}");
    let expected = aldp::phi_psi(&x_min).expect("phi psi")[0];
    assert!((cg[0] - expected[0]).abs() < 1e-12 && (cg[1] - expected[1]).abs() < 1e-12);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let n = 50;
    let fine: Vec<f64> = (0..n * 58).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let cg: Vec<f64> = (0..n * 2).map(|_| rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI)).collect();
    let structures = molecule.to_cartesian(&fine, &cg).expect("inverse");
    for (i, pp) in aldp::phi_psi(&structures.positions_nm).expect("phi psi").iter().enumerate() {
        for k in 0..2 {
            let diff = cgflow::coords::geometry::wrap_angle(pp[k] - cg[2 * i + k]);
            assert!(diff.abs() < 1e-10, "structure {i}, angle {k}: {} vs {}", pp[k], cg[2 * i + k]);
        }
    }
    // Round trip back to flow space.
    let (fine_back, cg_back, _) = molecule.from_cartesian(&structures.positions_nm).expect("forward");
    let worst = fine.iter().zip(&fine_back).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-8, "round trip of fine coordinates: {worst:e}");
    assert!(cg.iter().zip(&cg_back).all(|(a, b)| cgflow::coords::geometry::wrap_angle(a - b).abs() < 1e-10));
}

fn max_fd_error(target: &ConditionalMolecularTarget, fine: &[f64], cg: &[f64], grad: &[f64]) -> (f64, f64) {
    let scale = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let h = 1e-5;
    let mut worst = 0.0f64;
    for j in 0..fine.len() {
        let (mut p, mut m) = (fine.to_vec(), fine.to_vec());
        p[j] += h;
        m[j] -= h;
        let ep = target.energies_and_gradients(&p, Some(cg)).expect("plus").0[0];
        let em = target.energies_and_gradients(&m, Some(cg)).expect("minus").0[0];
        worst = worst.max(((ep - em) / (2.0 * h) - grad[j]).abs());
    }
    (worst, scale)
}

#[test]
fn target_energies_match_openmm_and_gradients_match_finite_differences() {
    let x_min = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x_min).expect("molecule");
    let (fine, cg_min, _) = molecule.from_cartesian(&perturbed(&x_min, 3, 0.003, 17)).expect("forward");
    // Near the structures' own (phi, psi) (L chirality kept), and the third far away, where the
    // unchanged CB and HA dihedrals (placed from the ACE carbon) make a D structure.
    let cg = vec![cg_min[0] + 0.2, cg_min[1] - 0.3, cg_min[2] - 0.1, cg_min[3] + 0.4, 1.0, 0.8];
    let target = ConditionalMolecularTarget::new(molecule.clone(), Box::new(reference_energy())).expect("target");
    let evaluation = target.evaluate(&fine, &cg).expect("evaluate");
    assert_eq!(evaluation.valid, vec![true, true, false]);
    assert_eq!((target.evaluations(), target.rejected()), (2, 1));
    let (e, grad) = target.energies_and_gradients(&fine, Some(&cg)).expect("target");
    assert_eq!(target.evaluations(), 4);

    // Energies: u of the built structure from an independent OpenMM call, minus ln|det dx/dz|.
    let structures = molecule.to_cartesian(&fine, &cg).expect("structures");
    let mut direct = reference_energy();
    let u = direct.evaluate(&Batch::new(&structures.positions_nm[..132], 22).expect("batch")).expect("energy");
    for (i, (u, ld)) in u.reduced_energies.iter().zip(&structures.log_det_dx_dz).enumerate() {
        let expected = u - ld;
        assert!((e[i] - expected).abs() < 1e-9 * expected.abs().max(1.0), "row {i}: {} vs {expected}", e[i]);
    }
    // The D structure carries the finite training penalty (base 100 kT, slope 50 kT per |t_L|).
    assert!(e[2].is_finite() && e[2] + structures.log_det_dx_dz[2] > 100.0, "penalty {}", e[2]);

    // Gradients of an L row and of the D row (the penalty) against central differences.
    for row in [1, 2] {
        let (worst, scale) = max_fd_error(
            &target,
            &fine[row * 58..(row + 1) * 58],
            &cg[row * 2..(row + 1) * 2],
            &grad[row * 58..(row + 1) * 58],
        );
        assert!(worst / scale < 1e-5, "row {row}: max |grad - FD| = {worst:e}, scale {scale:e}");
    }
}

#[test]
fn mirror_images_are_rejected_without_an_energy_evaluation() {
    let x_min = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x_min).expect("molecule");
    let mirrored: Vec<f64> = x_min.iter().enumerate().map(|(i, &v)| if i % 3 == 0 { -v } else { v }).collect();
    let (fine, cg, _) = molecule.from_cartesian(&mirrored).expect("forward");
    let target = ConditionalMolecularTarget::new(molecule.clone(), Box::new(reference_energy())).expect("target");
    let e = target.evaluate(&fine, &cg).expect("evaluate");
    assert_eq!(e.valid, vec![false]);
    assert!(e.reduced_energies[0] == f64::INFINITY);
    assert_eq!((target.evaluations(), target.rejected()), (0, 1));
    let log_p = target.log_density(&fine, &cg).expect("log density");
    assert!(log_p[0] == f64::NEG_INFINITY);
    // The minimum itself is L and finite.
    let (fine, cg, _) = molecule.from_cartesian(&x_min).expect("forward");
    let e = target.evaluate(&fine, &cg).expect("evaluate");
    assert!(e.valid[0] && e.reduced_energies[0].is_finite());
}

#[test]
fn log_density_from_training_energies_equals_a_fresh_evaluation() {
    // Rows: the minimum, its mirror image, and the minimum with its fine coordinates perturbed;
    // the training energies (u - ln|det|, a penalty for the mirror) turned into ln p must equal
    // ln p evaluated afresh: -inf for the mirror, -u + ln|det| for the others.
    let x_min = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x_min).expect("molecule");
    let mirrored: Vec<f64> = x_min.iter().enumerate().map(|(i, &v)| if i % 3 == 0 { -v } else { v }).collect();
    let (mut fine, mut cg, _) = molecule.from_cartesian(&x_min).expect("forward");
    let (fine_d, cg_d, _) = molecule.from_cartesian(&mirrored).expect("forward");
    let perturbed: Vec<f64> = fine.iter().enumerate().map(|(i, v)| v + 0.02 * ((i as f64) * 0.7).sin()).collect();
    fine.extend(fine_d);
    cg.extend(cg_d);
    fine.extend(perturbed);
    cg.extend(cg[..2].to_vec());
    let target = ConditionalMolecularTarget::new(molecule, Box::new(reference_energy())).expect("target");
    let (energies, _) = target.energies_and_gradients(&fine, Some(&cg)).expect("energies");
    assert!(energies[1].is_finite(), "the mirror image gets a finite training penalty");
    let from_training = target.log_density_of_energies(&fine, &cg, &energies).expect("from energies");
    let fresh = target.log_density(&fine, &cg).expect("log density");
    assert!(from_training[1] == f64::NEG_INFINITY && fresh[1] == f64::NEG_INFINITY);
    for row in [0, 2] {
        assert!(fresh[row].is_finite());
        assert!((from_training[row] - fresh[row]).abs() < 1e-9 * fresh[row].abs().max(1.0), "row {row}");
    }
    assert!(target.log_density_of_energies(&fine, &cg, &energies[..2]).is_err());
}

#[test]
fn wrong_shapes_and_non_finite_angles_are_errors() {
    let x_min = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x_min).expect("molecule");
    let target = ConditionalMolecularTarget::new(molecule, Box::new(reference_energy())).expect("target");
    let err = target.energies_and_gradients(&[0.0; 58], Some(&[0.1])).unwrap_err().to_string();
    assert!(err.contains("do not make whole configurations"), "{err}");
    let err = target.energies_and_gradients(&[0.0; 58], Some(&[f64::NAN, 0.0])).unwrap_err().to_string();
    assert!(err.contains("non-finite angle"), "{err}");
    assert!(target.energies_and_gradients(&[0.0; 58], None).is_err());
    let vacuum = System::from_xml_file(&aldp_file("aldp_vacuum.xml")).expect("system");
    assert_eq!(vacuum.num_particles(), 22);
}

#[test]
fn ace_ala2_nme_as_data_keeps_both_alanines_l_and_its_penalty_gradient_matches_finite_differences() {
    use cgflow::coords::cg_definition::resolve;
    use cgflow::coords::geometry::{dihedral, wrap_angle};
    use cgflow::coords::molecule::Molecule;
    let data = crate::util::root().join("data/ace_ala2_nme");
    let system = System::from_xml_file(&data.join("system_obc1.xml")).expect("system");
    let model = cgflow::io::pdb::read_pdb(&data.join("min_energy.pdb")).expect("pdb").remove(0);
    let x0 = model.positions_nm();
    let cg = resolve("backbone", &model.atom_labels()).expect("cg");
    let (masses, bonds) = (system.masses().expect("masses"), system.bonds().expect("bonds"));
    let molecule = ConditionalMolecule::from_molecule(&Molecule::new(&masses, &bonds, &x0, &cg).expect("molecule"))
        .expect("conditional molecule");
    assert_eq!((molecule.fine_dims(), molecule.cg_dims(), molecule.context_width()), (86, 4, 8));
    // The reference architecture for it; for ALDP's hand-written molecule, exactly ALDP's spec.
    let spec = molecule.reference_flow_spec(cgflow::flow::Precision::Mixed, 3);
    assert_eq!((spec.dims, spec.context, spec.circular), (86, 8, molecule.fine_circular_indices()));
    let aldp_molecule = ConditionalMolecule::aldp(&min_energy_positions()).expect("aldp");
    assert_eq!(
        aldp_molecule.reference_flow_spec(cgflow::flow::Precision::Mixed, 3),
        cgflow::flow::FlowSpec::aldp_conditional(cgflow::flow::Precision::Mixed, 3)
    );
    let centres: Vec<usize> = molecule.chiral_centres().iter().map(|c| c.atom).collect();
    assert_eq!(centres, vec![8, 18]);

    // Structures built at random CG points carry exactly those angles (measured here).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = 20;
    let fine: Vec<f64> = (0..n * 86).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let requested: Vec<f64> = (0..n * 4).map(|_| rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI)).collect();
    let structures = molecule.to_cartesian(&fine, &requested).expect("inverse");
    for (i, x) in structures.positions_nm.chunks_exact(96).enumerate() {
        let atom = |a: usize| nalgebra::Point3::new(x[3 * a], x[3 * a + 1], x[3 * a + 2]);
        for (k, d) in cg.iter().enumerate() {
            let measured = dihedral(&atom(d[0]), &atom(d[1]), &atom(d[2]), &atom(d[3]));
            let diff = wrap_angle(measured - requested[4 * i + k]);
            assert!(diff.abs() < 1e-8, "structure {i}, CG angle {k}: {diff:e}");
        }
    }

    // Valid: the reference; invalid: either alanine turned D (its HA and CB swapped), or both.
    let swap = |x: &[f64], a: usize, b: usize| {
        let mut y = x.to_vec();
        for k in 0..3 {
            y.swap(3 * a + k, 3 * b + k);
        }
        y
    };
    let first_d = swap(&x0, 9, 10);
    let second_d = swap(&x0, 19, 20);
    let mirror: Vec<f64> = x0.iter().enumerate().map(|(i, &v)| if i % 3 == 0 { -v } else { v }).collect();
    let batch = [x0.clone(), first_d.clone(), second_d.clone(), mirror].concat();
    assert_eq!(molecule.valid(&batch).expect("valid"), vec![true, false, false, false]);

    // In training by energy: an L row (OpenMM energy) and a row with one D alanine (the penalty),
    // gradients against central differences; the D row costs no energy evaluation.
    let config = OpenMmEnergyConfig { workers: Some(1), ..Default::default() };
    let energy = OpenMmEnergy::new(&system, &Platform::new("Reference").expect("platform"), &config).expect("energy");
    let target = ConditionalMolecularTarget::new(molecule.clone(), Box::new(energy)).expect("target");
    let (fine, cg_rad, _) = molecule
        .from_cartesian(&[perturbed(&x0, 1, 0.002, 4), perturbed(&second_d, 1, 0.002, 5)].concat())
        .expect("forward");
    let (e, grad) = target.energies_and_gradients(&fine, Some(&cg_rad)).expect("target");
    assert_eq!((target.evaluations(), target.rejected()), (1, 1));
    // e = u - ln|det dx/dz|: u from an independent OpenMM call for the L row, the penalty (base
    // 100 kT) for the D row.
    let built = molecule.to_cartesian(&fine, &cg_rad).expect("structures");
    let mut direct =
        OpenMmEnergy::new(&system, &Platform::new("Reference").expect("platform"), &config).expect("energy");
    let u = direct.evaluate(&Batch::new(&built.positions_nm[..96], 32).expect("batch")).expect("u").reduced_energies[0];
    let expected = u - built.log_det_dx_dz[0];
    assert!((e[0] - expected).abs() < 1e-9 * expected.abs().max(1.0), "L row: {} vs {expected}", e[0]);
    assert!(e[1] + built.log_det_dx_dz[1] > 100.0, "D row penalty {}", e[1] + built.log_det_dx_dz[1]);
    for row in [0, 1] {
        let (worst, scale) = max_fd_error(
            &target,
            &fine[row * 86..(row + 1) * 86],
            &cg_rad[row * 4..(row + 1) * 4],
            &grad[row * 86..(row + 1) * 86],
        );
        assert!(worst / scale < 1e-5, "row {row}: max |grad - FD| = {worst:e}, scale {scale:e}");
    }
}
