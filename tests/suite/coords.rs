//! Internal coordinates: round trips, exact log-determinants, the pull-back of OpenMM gradients,
//! ALDP's phi/psi and chirality, and clear errors.

use cgflow::coords::{aldp, align, builder, cg::CgSplit, InternalCoordinates, ZMatrix, ZRow};
use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::openmm::{Platform, System};
use nalgebra::{DMatrix, Rotation3, Vector3};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::util::{aldp as aldp_file, min_energy_positions};

/// `count` MD-like structures: the minimum plus 0.01 nm noise, randomly rotated and translated.
fn md_like(count: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.01).expect("sigma");
    let base = min_energy_positions();
    let mut out = Vec::with_capacity(count * 66);
    for _ in 0..count {
        let axis = Vector3::new(rng.gen::<f64>() - 0.5, rng.gen::<f64>() - 0.5, rng.gen::<f64>() - 0.5);
        let rotation = Rotation3::new(axis.normalize() * rng.gen_range(0.0..std::f64::consts::PI));
        let shift = Vector3::new(rng.gen_range(-2.0..2.0), rng.gen_range(-2.0..2.0), rng.gen_range(-2.0..2.0));
        for atom in base.chunks_exact(3) {
            let p = Vector3::new(atom[0], atom[1], atom[2]).map(|v| v + noise.sample(&mut rng));
            out.extend((rotation * p + shift).iter());
        }
    }
    out
}

fn transform() -> InternalCoordinates {
    aldp::internal_coordinates(&min_energy_positions()).expect("transform")
}

#[test]
fn minimum_energy_structure_maps_to_zero() {
    let t = transform();
    assert_eq!(t.dim(), 60);
    let (z, _) = t.forward(&min_energy_positions()).expect("forward");
    let worst = z.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(worst < 1e-12, "max |z| = {worst}");
}

#[test]
fn round_trip_reproduces_structures_up_to_rigid_motion() {
    let t = transform();
    let mut x = min_energy_positions();
    x.extend(md_like(1000, 5));
    let (z, forward_log_det) = t.forward(&x).expect("forward");
    let (back, inverse_log_det) = t.inverse(&z).expect("inverse");
    let mut worst = 0.0f64;
    for c in 0..1001 {
        let r = align::rmsd_after_alignment(&back[c * 66..(c + 1) * 66], &x[c * 66..(c + 1) * 66]).expect("rmsd");
        worst = worst.max(r);
        assert!((forward_log_det[c] + inverse_log_det[c]).abs() < 1e-10, "log-dets cancel");
    }
    assert!(worst < 1e-10, "worst RMSD after alignment {worst:e} nm");
    // The inverse places CA at the origin, N on +x, C in the xy plane.
    assert_eq!(&back[24..27], &[0.0, 0.0, 0.0]);
    assert!(back[19] == 0.0 && back[20] == 0.0 && back[18] > 0.0);
    assert_eq!(back[44], 0.0);
}

/// The coordinates the inverse map really moves: with the first anchor at the origin, the second
/// on the x axis and the third in the xy plane, the second's x, the third's x and y, and every
/// other atom's position.
fn free_coordinates(x: &[f64], anchors: [usize; 3]) -> Vec<f64> {
    let mut v = vec![x[3 * anchors[1]], x[3 * anchors[2]], x[3 * anchors[2] + 1]];
    for atom in (0..x.len() / 3).filter(|a| !anchors.contains(a)) {
        v.extend(&x[3 * atom..3 * atom + 3]);
    }
    v
}

/// The inverse map's log-determinant at `z0` against the log of the determinant of its
/// finite-difference Jacobian onto the free coordinates.
fn assert_log_det_matches_finite_differences(t: &InternalCoordinates, z0: &[f64], case: &str) {
    let anchors = t.zmatrix().anchors();
    let (_, log_det) = t.inverse(z0).expect("inverse");
    let (n, h) = (z0.len(), 1e-6);
    let mut jacobian = DMatrix::<f64>::zeros(n, n);
    for j in 0..n {
        let (mut zp, mut zm) = (z0.to_vec(), z0.to_vec());
        zp[j] += h;
        zm[j] -= h;
        let fp = free_coordinates(&t.inverse(&zp).expect("plus").0, anchors);
        let fm = free_coordinates(&t.inverse(&zm).expect("minus").0, anchors);
        for i in 0..n {
            jacobian[(i, j)] = (fp[i] - fm[i]) / (2.0 * h);
        }
    }
    let fd = jacobian.lu().determinant().abs().ln();
    assert!(((fd - log_det[0]) / log_det[0]).abs() < 1e-6, "{case}: FD {fd} vs analytic {}", log_det[0]);
}

#[test]
fn log_det_equals_finite_difference_jacobian() {
    let t = transform();
    assert_eq!(t.zmatrix().anchors(), [8, 6, 14], "CA at the origin, N on x, C in the xy plane");
    for (c, z0) in [vec![0.0; 60], t.forward(&md_like(1, 9)).expect("forward").0].into_iter().enumerate() {
        assert_log_det_matches_finite_differences(&t, &z0, &format!("case {c}"));
    }
}

#[test]
fn log_det_gradient_equals_finite_differences() {
    let t = transform();
    let (z, x) = {
        let (z, _) = t.forward(&md_like(1, 10)).expect("forward");
        let (x, _) = t.inverse(&z).expect("inverse");
        (z, x)
    };
    let pullback = t.pullback(&z, &x, &vec![0.0; 66]).expect("pullback");
    assert!(pullback.grad_z.iter().all(|g| *g == 0.0));
    let h = 1e-6;
    for j in 0..60 {
        let (mut zp, mut zm) = (z.clone(), z.clone());
        zp[j] += h;
        zm[j] -= h;
        let fd = (t.inverse(&zp).expect("p").1[0] - t.inverse(&zm).expect("m").1[0]) / (2.0 * h);
        assert!(
            (fd - pullback.grad_log_det[j]).abs() < 1e-7 * (1.0 + fd.abs()),
            "coordinate {j}: {fd} vs {}",
            pullback.grad_log_det[j]
        );
    }
}

#[test]
fn pullback_equals_finite_differences_of_openmm_energy() {
    let t = transform();
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let (z, _) = t.forward(&md_like(1, 11)).expect("forward");
    assert_pullback_matches_finite_differences(&t, &system, &z);
}

/// The pull-back of OpenMM's gradient (Reference platform) at `z` against central finite
/// differences of the reduced energy, coordinate by coordinate.
fn assert_pullback_matches_finite_differences(t: &InternalCoordinates, system: &System, z: &[f64]) {
    let config = OpenMmEnergyConfig { workers: Some(1), ..Default::default() };
    let mut model = OpenMmEnergy::new(system, &Platform::new("Reference").expect("p"), &config).expect("model");
    let n_atoms = t.n_atoms();
    let (x, _) = t.inverse(z).expect("inverse");
    let evaluation = model.evaluate(&Batch::new(&x, n_atoms).expect("batch")).expect("energy");
    let pullback = t.pullback(z, &x, &evaluation.gradients).expect("pullback");
    let mut u = |z: &[f64]| -> f64 {
        let (x, _) = t.inverse(z).expect("inverse");
        model.evaluate(&Batch::new(&x, n_atoms).expect("batch")).expect("energy").reduced_energies[0]
    };
    let scale = pullback.grad_z.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let h = 1e-5;
    let mut worst = 0.0f64;
    for j in 0..z.len() {
        let (mut zp, mut zm) = (z.to_vec(), z.to_vec());
        zp[j] += h;
        zm[j] -= h;
        worst = worst.max(((u(&zp) - u(&zm)) / (2.0 * h) - pullback.grad_z[j]).abs());
    }
    assert!(worst / scale < 1e-5, "max |du/dz - FD| = {worst:e}, scale {scale:e}");
}

#[test]
fn phi_psi_sit_where_the_layout_says_and_match_published_values() {
    let x = min_energy_positions();
    let angles = aldp::phi_psi(&x).expect("phi psi")[0];
    assert!((angles[0].to_degrees() + 145.8).abs() < 0.05, "phi {}", angles[0].to_degrees());
    assert!((angles[1].to_degrees() - 150.3).abs() < 0.05, "psi {}", angles[1].to_degrees());
    let z = aldp::zmatrix();
    let mut q = vec![0.0; 60];
    z.to_internal(&x, &mut q).expect("internal");
    // The layout's psi is dihedral(16, 14, 8, 6), the same torsion read backwards.
    assert!((q[aldp::PHI_INDEX] - angles[0]).abs() < 1e-12 && (q[aldp::PSI_INDEX] - angles[1]).abs() < 1e-12);
    assert_eq!(aldp::circular_indices(), vec![5, 8, 17, 20, 23, 26, 29, 32, 44, 47, 50, 53]);
    let split = CgSplit::new(60, &[aldp::PHI_INDEX, aldp::PSI_INDEX]).expect("split");
    let circular: Vec<bool> = (0..60).map(|i| aldp::circular_indices().contains(&i)).collect();
    let fine_circular = split.fine_mask(&circular);
    assert_eq!((fine_circular.len(), fine_circular.iter().filter(|c| **c).count()), (58, 10));
}

#[test]
fn chirality_flags_the_mirror_image() {
    let x = min_energy_positions();
    let mirrored: Vec<f64> = x.iter().enumerate().map(|(i, v)| if i % 3 == 0 { -v } else { *v }).collect();
    let mut both = x.clone();
    both.extend(&mirrored);
    assert_eq!(aldp::chirality(&both).expect("chirality"), vec![aldp::Chirality::L, aldp::Chirality::D]);
    // Mirroring flips phi and psi too.
    let angles = aldp::phi_psi(&both).expect("angles");
    assert!((angles[0][0] + angles[1][0]).abs() < 1e-12 && (angles[0][1] + angles[1][1]).abs() < 1e-12);
}

#[test]
fn chiral_centres_are_found_from_the_bond_graph_and_agree_with_the_aldp_check() {
    use cgflow::coords::chirality::{chiral_centres, keeps_chirality};
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let (masses, bonds) = (system.masses().expect("masses"), system.bonds().expect("bonds"));
    let x = min_energy_positions();
    let centres = chiral_centres(&masses, &bonds, &x).expect("centres");
    // Alanine dipeptide has one: CA (8), among N (6), C (14), CB (10) and HA (9).
    assert_eq!(centres.len(), 1, "{centres:?}");
    let mut around = centres[0].substituents;
    around.sort_unstable();
    assert_eq!((centres[0].atom, around), (8, [6, 9, 10, 14]));
    // Against the hand-written L/D check on MD-like structures and their mirror images.
    let mut batch = md_like(20, 5);
    let mirrored: Vec<f64> = batch.iter().enumerate().map(|(i, v)| if i % 3 == 0 { -v } else { *v }).collect();
    batch.extend(mirrored);
    let general = keeps_chirality(&centres, 22, &batch).expect("check");
    let by_hand: Vec<bool> =
        aldp::chirality(&batch).expect("aldp").into_iter().map(|c| c == aldp::Chirality::L).collect();
    assert_eq!(general, by_hand);
    assert_eq!(general.iter().filter(|k| **k).count(), 20);

    // Bromochlorofluoromethane is chiral, methane and a flat centre are not / an error.
    let chfclbr = [12.011, 1.008, 18.998, 35.45, 79.904];
    let star = [(0, 1), (0, 2), (0, 3), (0, 4)];
    let tetra = [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, -0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1, -0.1, -0.1];
    let found = chiral_centres(&chfclbr, &star, &tetra).expect("chfclbr");
    assert_eq!(found.len(), 1);
    let inverted: Vec<f64> = tetra.iter().map(|v| -v).collect();
    assert_eq!(keeps_chirality(&found, 5, &[tetra.to_vec(), inverted].concat()).unwrap(), vec![true, false]);
    assert!(chiral_centres(&[12.011, 1.008, 1.008, 1.008, 1.008], &star, &tetra).unwrap().is_empty());
    let flat = [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, -0.1, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, -0.1, 0.0];
    assert!(chiral_centres(&chfclbr, &star, &flat).unwrap_err().to_string().contains("flat"));
    assert!(chiral_centres(&chfclbr, &[(0, 5)], &tetra).unwrap_err().to_string().contains("bond (0, 5)"));
    assert!(keeps_chirality(&found, 5, &tetra[..14]).is_err());
}

#[test]
fn cg_dihedrals_become_placing_dihedrals_of_the_built_zmatrix() {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let bonds = system.bonds().expect("bonds");
    let z = builder::zmatrix_with_dihedrals(22, &bonds, &[aldp::PHI_ATOMS, aldp::PSI_ATOMS]).expect("builder");
    let x = min_energy_positions();
    let mut q = vec![0.0; z.n_internal()];
    z.to_internal(&x, &mut q).expect("internal");
    let expected = aldp::phi_psi(&x).expect("phi psi")[0];
    for (d, want) in [aldp::PHI_ATOMS, aldp::PSI_ATOMS].iter().zip(expected) {
        let row = z
            .rows()
            .iter()
            .find(|r| [r.dihedral, r.angle, r.bond, r.atom] == *d || [r.atom, r.bond, r.angle, r.dihedral] == *d)
            .unwrap_or_else(|| panic!("{d:?} places no row"));
        let index = z.dihedral_index_of(row.atom).expect("index");
        assert!((q[index] - want).abs() < 1e-12, "{d:?}: {} vs {want}", q[index]);
    }
    // Wrong definitions are named.
    let fails = |d: &[[usize; 4]]| builder::zmatrix_with_dihedrals(22, &bonds, d).unwrap_err().to_string();
    assert!(fails(&[[4, 6, 8, 22]]).contains("atom 22 does not exist"));
    assert!(fails(&[[4, 6, 4, 8]]).contains("repeats an atom"));
    assert!(fails(&[[4, 6, 14, 16]]).contains("not bonded in sequence"));
    assert!(fails(&[aldp::PHI_ATOMS, [14, 8, 6, 4]]).contains("given twice"));
}

#[test]
fn cg_definitions_by_residue_and_name_resolve_on_the_aldp_pdb() {
    use cgflow::coords::cg_definition::{resolve, AtomLabel};
    let models = cgflow::io::pdb::read_pdb(&aldp_file("min_energy.pdb")).expect("pdb");
    let atoms: Vec<AtomLabel> =
        models[0].atoms.iter().map(|a| AtomLabel { name: a.name.clone(), residue: a.residue_number }).collect();
    let expected = vec![aldp::PHI_ATOMS, aldp::PSI_ATOMS];
    assert_eq!(resolve("phi:2 psi:2", &atoms).unwrap(), expected);
    assert_eq!(resolve("backbone", &atoms).unwrap(), expected);
    assert_eq!(resolve("4,6,8,14;psi:2", &atoms).unwrap(), expected);
    let fails = |d: &str| resolve(d, &atoms).unwrap_err().to_string();
    assert!(fails("phi:1").contains("lack the atoms of phi"), "{}", fails("phi:1"));
    assert!(fails("psi:3").contains("lack the atoms of psi"));
    assert!(fails("chi:2").contains("unknown dihedral 'chi'"));
    // The peptide bonds: acetyl CH3 on one side, the N-methyl's C (no CA, no CH3) on the other.
    assert_eq!(resolve("omegas", &atoms).unwrap(), aldp::OMEGA_ATOMS.to_vec());
    assert_eq!(resolve("omega:3", &atoms).unwrap(), vec![aldp::OMEGA_ATOMS[1]]);
    assert!(fails("omega:1").contains("lack the atoms of omega"));
    assert!(fails("phi:x").contains("not a residue number"));
    assert!(fails("4,6,8").contains("four atom indices"));
    assert!(fails("4,6,8,22").contains("atom 22 does not exist"));
    assert!(fails("phi:2 14,8,6,4").contains("given twice"));
    assert!(fails(" ; ").contains("names no dihedral"));
}

#[test]
fn a_molecule_from_its_bond_graph_has_its_cg_circular_and_chiral_coordinates() {
    use cgflow::coords::molecule::Molecule;
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let (masses, bonds) = (system.masses().expect("masses"), system.bonds().expect("bonds"));
    let x = min_energy_positions();
    let molecule = Molecule::new(&masses, &bonds, &x, &[aldp::PHI_ATOMS, aldp::PSI_ATOMS]).expect("molecule");
    let z = molecule.zmatrix();
    let mut q = vec![0.0; z.n_internal()];
    z.to_internal(&x, &mut q).expect("internal");
    let phi_psi = aldp::phi_psi(&x).expect("phi psi")[0];
    for (&index, want) in molecule.cg_indices().iter().zip(phi_psi) {
        assert!((q[index] - want).abs() < 1e-12);
        assert!(molecule.circular_indices().contains(&index), "a CG dihedral is circular");
    }
    // One circular dihedral per rotatable bond: the three methyl rotors, both peptide bonds, phi
    // and psi.
    assert_eq!(molecule.circular_indices().len(), 7);
    let rows = z.rows();
    let circular_atoms: Vec<usize> = rows
        .iter()
        .filter(|r| molecule.circular_indices().contains(&z.dihedral_index_of(r.atom).unwrap()))
        .map(|r| r.atom)
        .collect();
    for atom in circular_atoms {
        let row = rows.iter().find(|r| r.atom == atom).unwrap();
        assert!(bonds.contains(&(row.dihedral, row.angle)) || bonds.contains(&(row.angle, row.dihedral)));
    }
    assert_eq!(molecule.chiral_centres().len(), 1);
    assert_eq!(molecule.chiral_centres()[0].atom, 8);
    assert!(Molecule::new(&masses, &bonds, &x, &[]).unwrap_err().to_string().contains("at least one CG dihedral"));
}

#[test]
fn zmatrix_from_the_bond_graph_round_trips() {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let bonds = system.bonds().expect("bonds");
    assert_eq!(bonds.len(), 21, "22 atoms in a tree");
    let z = builder::zmatrix_from_bonds(22, &bonds).expect("builder");
    assert_eq!(z.n_internal(), 60);
    for row in z.rows() {
        assert!(bonds.contains(&(row.atom, row.bond)) || bonds.contains(&(row.bond, row.atom)), "{row:?} is bonded");
    }
    let x = md_like(20, 12);
    let t = InternalCoordinates::around_structure(z, &min_energy_positions(), Default::default(), &[]).expect("t");
    let (zz, _) = t.forward(&x).expect("forward");
    let (back, _) = t.inverse(&zz).expect("inverse");
    for c in 0..20 {
        assert!(align::rmsd_after_alignment(&back[c * 66..(c + 1) * 66], &x[c * 66..(c + 1) * 66]).expect("r") < 1e-10);
    }
    let m = builder::zmatrix_from_bonds(5, &[(0, 1), (1, 2), (3, 4)]).expect_err("disconnected").to_string();
    assert!(m.contains("not connected"), "{m}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let t = transform();
    let mut x = min_energy_positions();
    x[10] = f64::NAN;
    let m = t.forward(&x).expect_err("NaN").to_string();
    assert!(m.contains("non-finite") && m.contains("atom 3"), "{m}");
    let m = t.forward(&min_energy_positions()[..63]).expect_err("21 atoms").to_string();
    assert!(m.contains("not a whole number"), "{m}");
    let m = t.inverse(&[f64::INFINITY; 60]).expect_err("inf").to_string();
    assert!(m.contains("non-finite"), "{m}");
    // Rows that reference each other's atoms: no order places either first.
    let rows = vec![ZRow::from_array([3, 0, 1, 4]), ZRow::from_array([4, 0, 1, 3])];
    let m = ZMatrix::new(5, [0, 1, 2], rows).expect_err("cycle").to_string();
    assert!(m.contains("row 0") && m.contains("atom 4") && m.contains("not placed before"), "{m}");
    // A reference placed by a later row is fine (the ALDP Z-matrix has them).
    let rows = vec![ZRow::from_array([3, 4, 1, 2]), ZRow::from_array([4, 0, 1, 2])];
    assert_eq!(ZMatrix::new(5, [0, 1, 2], rows).expect("valid").placement_order(), &[1, 0]);
    let m = ZMatrix::new(4, [0, 1, 2], vec![]).expect_err("missing").to_string();
    assert!(m.contains("atom 3"), "{m}");
    // Collinear anchors: N, CA and C on one line.
    let mut line = min_energy_positions();
    for (k, atom) in [6usize, 8, 14].iter().enumerate() {
        line[3 * atom..3 * atom + 3].copy_from_slice(&[0.15 * k as f64, 0.0, 0.0]);
    }
    let m = t.forward(&line).expect_err("collinear").to_string();
    assert!(m.contains("collinear"), "{m}");
}

/// The second peptide's System and minimum-energy structure (`tools/make_ace_ala2_nme.py`).
fn ace_ala2_nme() -> (System, cgflow::io::pdb::PdbModel) {
    let dir = crate::util::root().join("data/ace_ala2_nme");
    let system = System::from_xml_file(&dir.join("system_obc1.xml")).expect("system");
    let mut models = cgflow::io::pdb::read_pdb(&dir.join("min_energy.pdb")).expect("pdb");
    (system, models.remove(0))
}

#[test]
fn ace_ala2_nme_from_its_bond_graph_round_trips_and_finds_its_two_chiral_alphas() {
    use cgflow::coords::cg_definition::{resolve, AtomLabel};
    use cgflow::coords::molecule::Molecule;
    let (system, model) = ace_ala2_nme();
    let (masses, bonds) = (system.masses().expect("masses"), system.bonds().expect("bonds"));
    assert_eq!((masses.len(), bonds.len()), (32, 31), "32 atoms in a tree");
    let x0 = model.positions_nm();
    let atoms: Vec<AtomLabel> =
        model.atoms.iter().map(|a| AtomLabel { name: a.name.clone(), residue: a.residue_number }).collect();
    // ACE 1 (atoms 0-5), ALA 2 (6-15), ALA 3 (16-25), NME 4 (26-31).
    let cg = resolve("backbone", &atoms).expect("backbone");
    assert_eq!(cg, vec![[4, 6, 8, 14], [6, 8, 14, 16], [14, 16, 18, 24], [16, 18, 24, 26]]);
    assert_eq!(resolve("phi:2 psi:2 phi:3 psi:3", &atoms).expect("by residue"), cg);
    assert_eq!(resolve("omegas", &atoms).expect("omegas"), vec![[1, 4, 6, 8], [8, 14, 16, 18], [18, 24, 26, 28]]);
    assert_eq!(model.atom_labels(), atoms);
    let molecule = Molecule::new(&masses, &bonds, &x0, &cg).expect("molecule");
    // Exactly the two alanine CA are chiral (the methyls' hydrogens are alike, the caps have none).
    let centres: Vec<usize> = molecule.chiral_centres().iter().map(|c| c.atom).collect();
    assert_eq!(centres, vec![8, 18]);
    // One circular dihedral per rotatable bond: 4 methyl rotors, 3 peptide bonds, 2 phi, 2 psi.
    assert_eq!(molecule.circular_indices().len(), 11);
    let z = molecule.zmatrix().clone();
    assert_eq!(z.n_internal(), 3 * 32 - 6);
    let mut q = vec![0.0; z.n_internal()];
    z.to_internal(&x0, &mut q).expect("internal");
    for (&index, d) in molecule.cg_indices().iter().zip(&cg) {
        let p = d.map(|a| nalgebra::Point3::new(x0[3 * a], x0[3 * a + 1], x0[3 * a + 2]));
        let want = cgflow::coords::geometry::dihedral(&p[0], &p[1], &p[2], &p[3]);
        assert!((q[index] - want).abs() < 1e-12, "CG dihedral {d:?}");
    }
    let t = InternalCoordinates::around_structure(z, &x0, Default::default(), molecule.circular_indices())
        .expect("transform");
    // Round trip on perturbed structures.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let noise = Normal::new(0.0, 0.01).expect("sigma");
    let x: Vec<f64> = (0..10).flat_map(|_| x0.iter().map(|v| v + noise.sample(&mut rng)).collect::<Vec<_>>()).collect();
    let (zz, log_det_forward) = t.forward(&x).expect("forward");
    let (back, log_det_inverse) = t.inverse(&zz).expect("inverse");
    for c in 0..10 {
        let (a, b) = (&back[c * 96..(c + 1) * 96], &x[c * 96..(c + 1) * 96]);
        assert!(align::rmsd_after_alignment(a, b).expect("rmsd") < 1e-10, "structure {c}");
        assert!((log_det_forward[c] + log_det_inverse[c]).abs() < 1e-9);
    }
    // The log-determinant of the inverse against finite differences.
    let z0 = zz[..90].to_vec();
    assert_log_det_matches_finite_differences(&t, &z0, "Ace-(Ala)2-Nme");
    // The pull-back of OpenMM's gradient against finite differences of the energy.
    assert_pullback_matches_finite_differences(&t, &system, &z0);
}
